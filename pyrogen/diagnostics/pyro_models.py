"""ArviZ ``InferenceData`` for any Pyro model and guide (an AutoFlow, an autoguide, ...).

:func:`~pyrogen.diagnostics.to_inference_data` knows pyrogen's families; this converter asks
nothing of the model but its sample sites. The guide is run ``num_samples`` times for the
latent sites, and the model is replayed against each draw for the log-likelihood of every
observed site, so ``arviz.loo`` and ``arviz.summary`` work on hand-written models too.
"""

from __future__ import annotations

from typing import Any

import arviz
import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from pyrogen.checks import check_int


def from_pyro(
    model, guide, *args: Any, num_samples: int = 500, seed: int = 0, **kwargs: Any
) -> arviz.InferenceData:
    """Posterior draws from ``guide`` and pointwise log-likelihoods under ``model``.

    Args:
        model: a Pyro model.
        guide: a guide for it (e.g. :class:`pyrogen.AutoFlow`).
        *args: the model's arguments (the data it conditions on).
        **kwargs: the model's keyword arguments.
        num_samples: draws from the guide (one chain).
        seed: seeds the draws.

    Returns:
        ``InferenceData`` with ``posterior`` (each latent site: chain, draw, ...),
        ``log_likelihood`` (each observed site's log-density per element of its plates, in
        nats) and ``observed_data``.

    Example:
        >>> # idata = from_pyro(model, guide, x); arviz.summary(idata); arviz.loo(idata)
    """
    check_int("num_samples", num_samples)
    pyro.set_rng_seed(seed)
    draws: dict[str, list[torch.Tensor]] = {}
    log_likelihood: dict[str, list[torch.Tensor]] = {}
    observed: dict[str, torch.Tensor] = {}
    with torch.no_grad(), poutine.block():
        for _ in range(num_samples):
            guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
            replayed = poutine.replay(model, trace=guide_trace)
            model_trace = poutine.trace(replayed).get_trace(*args, **kwargs)
            for name, site in model_trace.nodes.items():
                if site["type"] != "sample" or site_is_subsample(site):
                    continue
                if site["is_observed"]:
                    log_likelihood.setdefault(name, []).append(site["fn"].log_prob(site["value"]))
                    observed[name] = site["value"]
                else:
                    draws.setdefault(name, []).append(site["value"])
    if not draws:
        raise ValueError("model: expected at least one latent sample site, found none")
    return arviz.from_dict(
        posterior={name: _chain(values) for name, values in draws.items()},
        log_likelihood={name: _chain(values) for name, values in log_likelihood.items()},
        observed_data={name: value.cpu().numpy() for name, value in observed.items()},
    )


def _chain(values: list[torch.Tensor]) -> np.ndarray:
    """Draws stacked as one chain: (1, draws, ...)."""
    return torch.stack(values).unsqueeze(0).cpu().numpy()
