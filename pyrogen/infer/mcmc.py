"""NUTS for pyrogen models, with discrete sites enumerated out by Pyro.

Chains run one after another in this process (each with its own seed), which keeps runs
reproducible and avoids multiprocessing start-up costs on small problems.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pyro
import torch
from pyro.infer import MCMC, NUTS
from pyro.infer.autoguide.initialization import init_to_value

from pyrogen.checks import check_int
from pyrogen.models.base import GenerativeModel


def run_nuts(
    model: GenerativeModel,
    x: torch.Tensor,
    *,
    num_samples: int = 500,
    warmup: int = 500,
    num_chains: int = 2,
    seed: int = 0,
    progress: bool = False,
    init_values: dict[str, torch.Tensor] | None = None,
    max_plate_nesting: int = 1,
    jit: bool = True,
) -> tuple[dict[str, torch.Tensor], dict[str, np.ndarray]]:
    """Sample the posterior of ``model.model`` given ``x`` with NUTS.

    Args:
        model: a pyrogen model; its enumerated sites are summed out by Pyro.
        x: data of shape (N, ...).
        num_samples: draws kept per chain.
        warmup: adaptation steps per chain (discarded).
        num_chains: chains, run sequentially with seeds ``seed, seed + 1, ...``.
        seed: base random seed.
        progress: show Pyro's progress bar.
        init_values: starting values of the latent sites (default: Pyro's init).
        max_plate_nesting: plates in the model (the enumeration dimension goes left of them).
        jit: compile the potential energy with the PyTorch JIT (several times faster on
            small models; set False to debug a model).

    Returns:
        ``(draws, stats)``: draws maps each latent site to a tensor of shape
        ``(num_chains, num_samples, *site_shape)``; stats holds ``diverging``, a bool array of
        shape (num_chains, num_samples).
    """
    check_int("num_samples", num_samples)
    check_int("num_chains", num_chains)
    check_int("warmup", warmup, minimum=0)
    chains: list[dict[str, torch.Tensor]] = []
    diverging = np.zeros((num_chains, num_samples), dtype=bool)
    for chain in range(num_chains):
        pyro.set_rng_seed(seed + chain)
        kwargs: dict[str, Any] = {
            "max_plate_nesting": max_plate_nesting,
            "jit_compile": jit,
            "ignore_jit_warnings": True,
        }
        if init_values is not None:
            kwargs["init_strategy"] = init_to_value(values=init_values)
        sampler = MCMC(
            NUTS(model.model, **kwargs),
            num_samples=num_samples,
            warmup_steps=warmup,
            num_chains=1,
            disable_progbar=not progress,
        )
        with warnings.catch_warnings():
            # Pyro's NUTS compiles with torch.jit.trace, which recent torch marks deprecated.
            warnings.filterwarnings(
                "ignore", message=".*torch.jit.trace.*", category=DeprecationWarning
            )
            sampler.run(x)
        chains.append({name: value.detach() for name, value in sampler.get_samples().items()})
        divergent = sampler.diagnostics().get("divergences", {}).get("chain 0", [])
        diverging[chain, list(divergent)] = True
    draws = {name: torch.stack([c[name] for c in chains]) for name in chains[0]}
    return draws, {"diverging": diverging}
