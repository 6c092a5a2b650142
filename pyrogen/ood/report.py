"""The out-of-distribution metrics of several scores at once, and as a table: what
``pyrogen evaluate RUN --ood-data PATH`` prints."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from pyrogen.checks import check_choice
from pyrogen.diagnostics.scoring import as_float_tensor
from pyrogen.models.base import GenerativeModel
from pyrogen.ood.complexity import complexity_score
from pyrogen.ood.metrics import ood_metrics
from pyrogen.ood.scores import check_likelihood, describe_score, negative_log_likelihood

__all__ = ["SCORES", "format_report", "ood_report"]

#: The scores :func:`ood_report` computes from the model alone (the likelihood ratio needs a
#: background model, :func:`~pyrogen.ood.likelihood_ratio`).
SCORES = ("nll", "typicality", "complexity")


def ood_report(
    model: GenerativeModel,
    x_in: Any,
    x_out: Any,
    *,
    scores: Sequence[str] = ("nll", "typicality"),
    reference: Any = None,
    compressor: str = "zlib",
    num_samples: int | None = None,
    seed: int | None = 0,
) -> dict[str, dict[str, Any]]:
    """:func:`~pyrogen.ood.ood_metrics` of each score on in-distribution rows ``x_in``
    against out-of-distribution rows ``x_out`` (each scored once by the model).

    Args:
        model: a fitted model of p(x) (not conditioned on labels: the OOD rows have none).
        x_in: in-distribution rows (N, ``*data_shape``), held out from training.
        x_out: out-of-distribution rows (M, ``*data_shape``).
        scores: names from :data:`SCORES`.
        reference: in-distribution rows whose mean nll is the typical value of
            ``"typicality"``; default ``x_in`` (the rows tested, so slightly optimistic).
        compressor: of ``"complexity"`` (:func:`~pyrogen.ood.code_length`; the rows must
            lie in [0, 1], as pyrogen's images do).
        num_samples, seed: as :func:`~pyrogen.ood.negative_log_likelihood`.

    Returns:
        score name -> its metrics (``auroc``, ``aupr_in``, ``aupr_out``, ``fpr_at_95_tpr``,
        ``n_in``, ``n_out``) and ``description`` (:func:`~pyrogen.ood.describe_score`).

    Raises:
        ValueError: the model has no likelihood of x or is conditioned on labels, an unknown
            score, or ``x_out``'s rows are not shaped like ``x_in``'s.
    """
    check_likelihood(model)
    if model.conditions_on_labels:
        raise ValueError(
            f"model: expected a model of p(x), got a {model.family} of "
            f"{model.likelihood_target} (out-of-distribution rows have no labels)"
        )
    for name in scores:
        check_choice("scores", name, SCORES)
    x_in, x_out = as_float_tensor(x_in, "x_in"), as_float_tensor(x_out, "x_out")
    if x_out.shape[1:] != x_in.shape[1:]:
        raise ValueError(
            f"x_out: expected rows of shape {tuple(x_in.shape[1:])}, as the model's data, "
            f"got {tuple(x_out.shape[1:])}"
        )
    options = {"num_samples": num_samples, "seed": seed}
    nll_in, nll_out = (negative_log_likelihood(model, x, **options) for x in (x_in, x_out))
    per_score: dict[str, tuple[torch.Tensor, torch.Tensor]] = {"nll": (nll_in, nll_out)}
    if "typicality" in scores:
        typical = (
            nll_in if reference is None else negative_log_likelihood(model, reference, **options)
        ).mean()
        per_score["typicality"] = ((nll_in - typical).abs(), (nll_out - typical).abs())
    if "complexity" in scores:
        per_score["complexity"] = tuple(
            complexity_score(model, x, compressor=compressor, nll=nll)
            for x, nll in ((x_in, nll_in), (x_out, nll_out))
        )
    return {
        name: {
            **ood_metrics(*per_score[name]),
            "description": describe_score(model, name, num_samples=num_samples),
        }
        for name in scores
    }


def format_report(report: dict[str, dict[str, Any]]) -> str:
    """:func:`ood_report`'s metrics as a text table, a row per score, with what each is."""
    lines = [f"{'score':<12} {'AUROC':>7} {'AUPR-in':>8} {'AUPR-out':>9} {'FPR@95TPR':>10}"]
    for name, metrics in report.items():
        fpr = next(value for key, value in metrics.items() if key.startswith("fpr_at_"))
        lines.append(
            f"{name:<12} {metrics['auroc']:>7.4f} {metrics['aupr_in']:>8.4f} "
            f"{metrics['aupr_out']:>9.4f} {fpr:>10.4f}"
        )
    lines += [f"  {name}: {metrics['description']}" for name, metrics in report.items()]
    return "\n".join(lines)
