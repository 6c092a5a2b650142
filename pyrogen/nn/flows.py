"""Normalizing flows by name, built with zuko (pure PyTorch; bridged to Pyro by
``pyro.contrib.zuko``).

A flow here is a zuko ``LazyDistribution``: calling it with a context (or nothing) returns a
``torch.distributions.Distribution`` over vectors of ``features`` values with ``rsample``,
``log_prob`` and ``rsample_and_log_prob``. Masks, orders and base parameters are registered
buffers, so ``.to()`` moves all of it and ``state_dict`` saves all of it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import zuko
from pyro.contrib.zuko import ZukoToPyro
from pyro.distributions import constraints
from torch import nn

from pyrogen.checks import check_int, check_ints

#: Flows known by name: neural spline (autoregressive), masked autoregressive (affine),
#: RealNVP (affine coupling), inverse autoregressive (affine, fast to sample).
FLOWS = ("nsf", "maf", "realnvp", "iaf")


def build_flow(
    kind: str,
    features: int,
    context: int = 0,
    *,
    transforms: int = 3,
    hidden: Sequence[int] = (64, 64),
    activation: type[nn.Module] = nn.ReLU,
) -> zuko.flows.LazyDistribution:
    """A flow over vectors of ``features`` values, optionally conditioned on a context.

    Args:
        kind: ``"nsf"`` (rational-quadratic splines, autoregressive; Durkan et al. 2019),
            ``"maf"`` (affine, autoregressive; Papamakarios et al. 2017), ``"realnvp"``
            (affine coupling; Dinh et al. 2017; needs ``features >= 2``) or ``"iaf"`` (the
            inverse of a MAF: sampling and scoring its own samples take one pass, scoring
            other points takes ``features`` passes; Kingma et al. 2016).
        features: D, the size of the vectors.
        context: size of the context vector c of a conditional flow p(x | c); 0 for none.
        transforms: number of transformations stacked.
        hidden: widths of the hidden layers of each transformation's network.
        activation: activation class of those networks.

    Returns:
        a zuko ``LazyDistribution``; ``flow(c)`` (or ``flow()``) is the distribution, with
        event shape (D,) and batch shape that of c without its last dim.

    Example:
        >>> flow = build_flow("nsf", 3, transforms=2)
        >>> flow().rsample((5,)).shape
        torch.Size([5, 3])
    """
    if kind not in FLOWS:
        raise ValueError(f"flow: expected one of {FLOWS}, got {kind!r}")
    features = check_int("features", features)
    context = check_int("context", context, minimum=0)
    options = {
        "transforms": check_int("transforms", transforms),
        "hidden_features": check_ints("hidden", hidden),
        "activation": activation,
    }
    if kind == "realnvp":
        if features < 2:
            raise ValueError("flow: 'realnvp' couples halves of x, so it needs features >= 2")
        return zuko.flows.RealNVP(features, context, **options)
    if kind == "nsf":
        return zuko.flows.NSF(features, context, **options)
    maf = zuko.flows.MAF(features, context, **options)
    if kind == "maf":
        return maf
    # IAF: x -> z is the MAF's inverse, so z -> x (sampling) is its fast direction.
    return zuko.flows.Flow(zuko.flows.LazyInverse(maf.transform), maf.base)


class FlowDistribution(ZukoToPyro):
    """A zuko distribution as a Pyro distribution, with a support.

    ``pyro.contrib.zuko.ZukoToPyro`` has none, nor ``sample`` / ``rsample``, and Pyro uses
    them wherever it initializes a latent site (``Predictive(model, guide=...)``,
    ``init_to_sample``), which then fails with a bare ``NotImplementedError``. The support
    is real vectors unless given.

    Args:
        dist: a zuko (or any torch) distribution with event shape (D,).
        support: its support; default ``independent(real, 1)``.

    Shapes:
        as ``dist``: batch shape B, event shape (D,).
    """

    def __init__(
        self,
        dist: torch.distributions.Distribution,
        support: constraints.Constraint | None = None,
    ) -> None:
        super().__init__(dist)
        event_dims = len(dist.event_shape)
        self._support = support or constraints.independent(constraints.real, event_dims)

    @property
    def support(self) -> constraints.Constraint:
        return self._support

    def rsample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        return self.dist.rsample(sample_shape)

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        return self.dist.sample(sample_shape)

    def expand(self, *args, **kwargs) -> FlowDistribution:
        return FlowDistribution(self.dist.expand(*args, **kwargs), self._support)
