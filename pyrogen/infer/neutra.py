"""NeuTra: NUTS on a model preconditioned by a fitted :class:`~pyrogen.AutoFlow`.

A flow guide q(u) = T(N(0, I)) that is close to the posterior turns it, seen through
z = T^{-1}(u), into something close to a standard normal: a geometry that NUTS samples with
one step size everywhere (Hoffman et al. 2019). Pyro's ``NeuTraReparam`` rewrites the
model to sample z; NUTS then corrects whatever reverse-KL training left, because its draws
are of the exact posterior whatever the flow (the flow only changes how fast it mixes).
"""

from __future__ import annotations

import warnings
from typing import Any

import arviz
import numpy as np
import pyro
import torch
from pyro.infer import MCMC, NUTS
from pyro.infer.reparam import NeuTraReparam

from pyrogen.checks import check_int
from pyrogen.guides.autoflow import AutoFlow


def neutra(
    model,
    guide: AutoFlow,
    *args: Any,
    num_samples: int = 500,
    warmup: int = 500,
    num_chains: int = 2,
    seed: int = 0,
    progress: bool = False,
    target_accept_prob: float = 0.8,
    **kwargs: Any,
) -> arviz.InferenceData:
    """Sample the posterior of ``model`` with NUTS in the coordinates of a fitted flow guide.

    Args:
        model: a Pyro model with continuous latent sites (the guide's model).
        guide: an :class:`~pyrogen.AutoFlow` fitted to ``model`` with these arguments
            (``guide.fit(*args)``); it is left unchanged.
        *args: the model's arguments (the data it conditions on).
        num_samples: draws kept per chain.
        warmup: adaptation steps per chain (discarded).
        num_chains: chains, run one after another with seeds ``seed, seed + 1, ...``.
        seed: base random seed.
        progress: show Pyro's progress bar.
        target_accept_prob: NUTS's step-size target (raise it, to 0.9 say, where
            divergences remain).
        **kwargs: the model's keyword arguments.

    Returns:
        ``InferenceData`` with ``posterior`` (every latent site of the model, in its own
        parameterization: chain, draw, ``*site_shape``) and ``sample_stats``
        (``diverging``: chain, draw).

    Raises:
        TypeError: ``guide`` is not an ``AutoFlow``.
        ValueError: the guide has not been fitted, or a bad setting.

    Example:
        >>> # guide = pyrogen.AutoFlow(model); guide.fit(x, y)
        >>> # idata = pyrogen.neutra(model, guide, x, y); arviz.summary(idata)
    """
    _check_settings(guide, num_samples, warmup, num_chains, target_accept_prob)
    trainable = [p for p in guide.parameters() if p.requires_grad]
    chains: list[dict[str, np.ndarray]] = []
    diverging = np.zeros((num_chains, num_samples), dtype=bool)
    try:
        # NUTS differentiates the potential in z only; the flow is a fixed map.
        for p in trainable:
            p.requires_grad_(False)
        for chain in range(num_chains):
            pyro.set_rng_seed(seed + chain)
            # Pyro's JIT cannot trace the reparameterized model (its first site draws the
            # shared latent), so the potential runs eagerly.
            kernel = NUTS(
                NeuTraReparam(guide).reparam(model), target_accept_prob=target_accept_prob
            )
            sampler = MCMC(
                kernel,
                num_samples=num_samples,
                warmup_steps=warmup,
                num_chains=1,
                disable_progbar=not progress,
            )
            draws, divergent = _run_chain(sampler, guide, args, kwargs)
            chains.append(draws)
            diverging[chain, divergent] = True
    finally:
        for p in trainable:
            p.requires_grad_(True)
    posterior = {name: np.stack([c[name] for c in chains]) for name in chains[0]}
    return arviz.from_dict(posterior=posterior, sample_stats={"diverging": diverging})


def _run_chain(
    sampler: MCMC, guide: AutoFlow, args: tuple, kwargs: dict[str, Any]
) -> tuple[dict[str, np.ndarray], list[int]]:
    """Run one NeuTra chain: its draws mapped back through the flow to the model's sites
    (draw, *site_shape), and the indices of its divergent transitions."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*NeuTraReparam.*")
        sampler.run(*args, **kwargs)
    first_site = next(iter(guide._unconstrained_shapes))
    z = sampler.get_samples()[f"{first_site}_shared_latent"].detach()
    with torch.no_grad():
        draws = guide.unpack(guide.get_transform()(z))
    divergent = sampler.diagnostics().get("divergences", {}).get("chain 0", [])
    return {name: value.cpu().numpy() for name, value in draws.items()}, list(divergent)


def _check_settings(
    guide: Any, num_samples: int, warmup: int, num_chains: int, target_accept_prob: float
) -> None:
    """A TypeError or ValueError naming the first bad argument of :func:`neutra`."""
    if not isinstance(guide, AutoFlow):
        raise TypeError(f"guide: expected a pyrogen.AutoFlow, got {type(guide).__name__}")
    if guide.prototype_trace is None:
        raise ValueError("guide: expected a fitted guide, got one that has never run")
    check_int("num_samples", num_samples)
    check_int("num_chains", num_chains)
    check_int("warmup", warmup, minimum=0)
    if not 0 < target_accept_prob < 1:
        raise ValueError(
            f"target_accept_prob: expected a number in (0, 1), got {target_accept_prob!r}"
        )
