"""Workflows on Gaussian mixtures that sit above the model: choosing K and sampling NUTS.

:class:`~pyrogen.GaussianMixture` is a model and nothing more; training it is
:func:`pyrogen.fit`. What needs the engine or a sampler lives here:

* :func:`select_n_components` fits one mixture per candidate K and keeps the best by BIC
  (or AIC);
* :func:`mixture_nuts` runs collapsed NUTS (assignments enumerated out) from a fitted
  mixture and returns the relabelled posterior as ArviZ ``InferenceData``;
* :func:`fit_mixture` is the whole workflow of ``pyrogen fit gmm``: K chosen by BIC (or
  given), a MAP or variational fit, or NUTS from the MAP fit, and the posterior.

Example:
    >>> import pyrogen
    >>> x = pyrogen.data.old_faithful()
    >>> best, scores = select_n_components(x, [1, 2], steps=5, progress=False)
    >>> best.n_components, sorted(scores)
    (2, [1, 2])
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterable
from typing import Any, Literal, NamedTuple

import arviz

from pyrogen.checks import as_tensor, check_choice
from pyrogen.infer.engine import FitResult, fit
from pyrogen.infer.inference_data import to_inference_data
from pyrogen.infer.mcmc import run_nuts
from pyrogen.models.gmm import INFERENCE_METHODS, GaussianMixture

#: Default draws kept (and warm-up steps) per chain of :func:`mixture_nuts`: enough for
#: posterior means and intervals of a few parameters, at a quarter of 2 x (500 + 500).
MCMC_SAMPLES = 250
#: The criteria :func:`select_n_components` ranks by (lower is better).
CRITERIA = ("bic", "aic")
#: Largest K tried by :func:`fit_mixture` with ``n_components="auto"``.
MAX_AUTO_COMPONENTS = 8
#: Chains of :func:`fit_mixture` with ``inference="nuts"``: two, so that R-hat can compare.
NUTS_CHAINS = 2
#: The ``inference`` of :func:`fit_mixture`: the model's methods, and NUTS from the MAP fit.
MIXTURE_INFERENCE = (*INFERENCE_METHODS, "nuts")


def select_n_components(
    x: Any,
    candidates: Iterable[int] = range(1, 7),
    *,
    criterion: str = "bic",
    seed: int = 0,
    **options: Any,
) -> tuple[GaussianMixture, dict[int, float]]:
    """Fit one mixture per candidate K and keep the one with the lowest BIC (or AIC).

    Args:
        x: data of shape (N, D).
        candidates: numbers of components to try; those above N are skipped.
        criterion: ``"bic"`` or ``"aic"``.
        seed: passed to every fit.
        **options: :class:`~pyrogen.GaussianMixture` arguments (``covariance=...``) and
            :func:`pyrogen.fit` options (``steps=...``), told apart by their signatures.

    Returns:
        the best fitted model and ``{K: criterion value}`` for every candidate tried.

    Raises:
        ValueError: an unknown criterion, or no candidate K <= N.
    """
    check_choice("criterion", criterion, CRITERIA)
    x = as_tensor(x, name="x", ndim=2)
    candidates = sorted({int(k) for k in candidates if int(k) <= x.shape[0]})
    if not candidates:
        raise ValueError(f"candidates: expected at least one K <= n_samples={x.shape[0]}")
    model_options, fit_options = _split_options(options)
    scores: dict[int, float] = {}
    best: GaussianMixture | None = None
    for k in candidates:
        model = GaussianMixture(k, **model_options)
        fit(model, x, seed=seed, **fit_options)
        scores[k] = getattr(model, criterion)(x)
        if best is None or scores[k] < scores[best.n_components]:
            best = model
    return best, scores


def _split_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``options`` as (constructor arguments, :func:`pyrogen.fit` options): the names in
    :class:`~pyrogen.GaussianMixture`'s signature go to the constructor, the rest to the
    engine (which rejects what it does not know)."""
    constructor = set(inspect.signature(GaussianMixture).parameters)
    model_options = {k: v for k, v in options.items() if k in constructor}
    return model_options, {k: v for k, v in options.items() if k not in constructor}


def mixture_nuts(
    model: GaussianMixture,
    x: Any,
    num_samples: int = MCMC_SAMPLES,
    warmup: int = MCMC_SAMPLES,
    num_chains: int = 2,
    *,
    seed: int = 0,
    progress: bool = False,
) -> arviz.InferenceData:
    """Collapsed NUTS on a mixture's ``model`` (assignments enumerated out), relabelled.

    Chains start at the model's point estimates (fit it first with :func:`pyrogen.fit` for
    a good start; an unfitted model is set up from ``x``); label switching is undone by
    :meth:`GaussianMixture.relabel`.

    Cost: every NUTS iteration scores all N rows many times (one gradient per leapfrog
    step); on Old Faithful (272 rows, K=2, full) an iteration takes about 0.15 s on one
    CPU thread, so the defaults (2 chains of 250 warm-up + 250 kept) take a few minutes.
    Raise ``num_samples`` for tail quantiles.

    Args:
        model: a :class:`~pyrogen.GaussianMixture`, fitted or not.
        x: data of shape (N, D).
        num_samples: draws kept per chain.
        warmup: adaptation steps per chain.
        num_chains: chains (run one after another).
        seed: random seed.
        progress: show a progress bar.

    Returns:
        ArviZ ``InferenceData`` with posterior (chain, draw, ...), log_likelihood
        (``obs``: chain, draw, N), observed_data and sample_stats (``diverging``).

    Example:
        >>> import pyrogen
        >>> x = pyrogen.data.old_faithful()
        >>> gmm = pyrogen.GaussianMixture(2)
        >>> result = pyrogen.fit(gmm, x, progress=False)
        >>> idata = mixture_nuts(gmm, x, num_samples=5, warmup=5, num_chains=1)
        >>> idata.posterior["weights"].shape
        (1, 5, 2)
    """
    if not isinstance(model, GaussianMixture):
        raise TypeError(f"model: expected a GaussianMixture, got {type(model).__name__}")
    if not model.has_prior_scale:
        model.setup(x, seed=seed)
    x = as_tensor(x, name="x", ndim=2, dtype=model.data_loc.dtype).to(model.device)
    if x.shape[1] != model.n_features:
        raise ValueError(f"x: expected {model.n_features} columns, got {x.shape[1]}")
    draws, stats = run_nuts(
        model,
        x,
        num_samples=num_samples,
        warmup=warmup,
        num_chains=num_chains,
        seed=seed,
        progress=progress,
        init_values=model.point_estimates(),
    )
    return to_inference_data(model.relabel(draws), model=model, data=x, sample_stats=stats)


#: :func:`pyrogen.fit` options that :func:`fit_mixture` gives the chosen K's fit only.
_CHECKPOINT_OPTIONS = ("checkpoint", "checkpoint_every", "resume")


class MixtureFit(NamedTuple):
    """What :func:`fit_mixture` returns."""

    model: GaussianMixture
    result: FitResult
    idata: arviz.InferenceData
    #: ``{K: BIC}`` of every K tried where K was chosen, else None.
    scores: dict[int, float] | None
    #: Entries of a run's summary.json: ``inference``, and ``selection`` (criterion and
    #: scores) where K was chosen, ``mcmc`` (chains, draws, warm-up, divergences) for NUTS.
    summary: dict[str, Any]


def fit_mixture(
    x: Any,
    n_components: int | Literal["auto"] = "auto",
    *,
    inference: str = "map",
    num_samples: int = 500,
    warmup: int = 500,
    seed: int = 0,
    **options: Any,
) -> MixtureFit:
    """Fit a Gaussian mixture and get its posterior: K chosen by BIC over MAP fits of
    K = 1..:data:`MAX_AUTO_COMPONENTS` (``"auto"``) or given, then a MAP or variational fit,
    or (``"nuts"``) collapsed NUTS with :data:`NUTS_CHAINS` chains from the MAP fit.

    The chosen K is fitted again with the same seed (a MAP refit reproduces the selected fit
    exactly) to get its :class:`~pyrogen.infer.engine.FitResult`.

    Args:
        x: data of shape (N, D).
        n_components: K, or ``"auto"``.
        inference: one of :data:`MIXTURE_INFERENCE`.
        num_samples: posterior draws (per chain for NUTS).
        warmup: NUTS warm-up steps per chain.
        seed: seed of every fit and of the draws.
        **options: :class:`~pyrogen.GaussianMixture` arguments and :func:`pyrogen.fit`
            options, as for :func:`select_n_components`; ``progress`` also shows (True) or
            hides (False) NUTS's bar, shown on a terminal by default.

    Returns:
        a :class:`MixtureFit`.

    Example:
        >>> import pyrogen
        >>> fitted = fit_mixture(pyrogen.data.old_faithful(), steps=5, num_samples=10)
        >>> fitted.model.n_components, fitted.summary["selection"]["criterion"]
        (2, 'bic')
    """
    check_choice("inference", inference, MIXTURE_INFERENCE)
    x = as_tensor(x, name="x", ndim=2)
    method = "map" if inference == "nuts" else inference  # NUTS starts from the MAP point
    model_options, fit_options = _split_options(options)
    summary: dict[str, Any] = {"inference": inference}
    scores = None
    if n_components == "auto":
        candidates = range(1, min(MAX_AUTO_COMPONENTS, x.shape[0]) + 1)
        # Checkpoints are the chosen K's: the candidates' fits are not resumed.
        kept = {k: v for k, v in options.items() if k not in _CHECKPOINT_OPTIONS}
        select = {**kept, "inference": "map"}
        best, scores = select_n_components(x, candidates, criterion="bic", seed=seed, **select)
        n_components = best.n_components
        summary["selection"] = {
            "criterion": "bic",
            "scores": {str(k): v for k, v in scores.items()},
        }
    model = GaussianMixture(n_components, **{**model_options, "inference": method})
    result = fit(model, x, seed=seed, **fit_options)
    if inference != "nuts":
        idata = to_inference_data(model, x, num_samples=num_samples, seed=seed)
        return MixtureFit(model, result, idata, scores, summary)
    progress = fit_options.get("progress")
    idata = mixture_nuts(
        model, x, num_samples=num_samples, warmup=warmup, num_chains=NUTS_CHAINS, seed=seed,
        progress=sys.stderr.isatty() if progress is None else bool(progress),
    )  # fmt: skip
    summary["mcmc"] = {
        "num_chains": NUTS_CHAINS,
        "num_samples": num_samples,
        "warmup": warmup,
        "divergences": int(idata.sample_stats["diverging"].sum()),
    }
    return MixtureFit(model, result, idata, scores, summary)
