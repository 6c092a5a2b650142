"""Global latent sites with a point (MAP) or mean-field guide, for families whose
parameters are a few named tensors rather than networks (naive Bayes, logistic regression).

Each site's guide is stored in the unconstrained space of its support: a parameter
``<name>_loc`` and, for a variational guide, a positive ``<name>_scale``. The MAP guide puts
a ``Delta`` at ``biject_to(support)(loc)``; the variational guide is a Normal around ``loc``
pushed through the same bijection (what Pyro's ``AutoNormal`` builds, written out so that the
parameters exist from the constructor on and a saved model loads without tracing the model).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.nn import PyroModule, PyroParam
from torch.distributions import biject_to

#: The spread of a variational guide before it is fitted (unconstrained units).
INITIAL_SPREAD = 0.1


@dataclass(frozen=True)
class GlobalSite:
    """A global latent site: its name, support and (constrained) shape.

    The whole tensor is one sample site (every dim an event dim), outside any plate.
    """

    name: str
    support: constraints.Constraint
    shape: tuple[int, ...]


class FlatPrior(dist.ImproperUniform):
    """A flat (improper) prior on a support: log density 0 everywhere, so that the MAP is
    the maximum-likelihood estimate.

    It has no draws; :meth:`sample` returns a fixed point of the support (0 on the reals,
    1 on the positive numbers), so that the model can be run without a guide to find its
    sites' shapes (as :func:`pyrogen.to_inference_data` does). No posterior is ever drawn
    from it.
    """

    def sample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        shape = self.shape(torch.Size(sample_shape))
        return biject_to(self.support)(torch.zeros(shape))


def neutral_value(site: GlobalSite) -> torch.Tensor:
    """A value in the site's support before any fit: 0 (real), 1 (positive), 1/2 (unit
    interval), uniform probabilities (simplex); shape ``site.shape``."""
    if site.support is constraints.simplex:
        return torch.full(site.shape, 1.0 / site.shape[-1])
    if site.support is constraints.unit_interval:
        return torch.full(site.shape, 0.5)
    if site.support is constraints.positive:
        return torch.ones(site.shape)
    return torch.zeros(site.shape)


def add_guide_parameters(
    module: PyroModule, sites: Iterable[GlobalSite], variational: bool
) -> None:
    """Register ``<name>_loc`` (and ``<name>_scale`` when ``variational``) on ``module`` for
    every site, at the unconstrained image of :func:`neutral_value`."""
    for site in sites:
        unconstrained = biject_to(site.support).inv(neutral_value(site))
        setattr(module, f"{site.name}_loc", torch.nn.Parameter(unconstrained))
        if variational:
            spread = torch.full_like(unconstrained, INITIAL_SPREAD)
            setattr(module, f"{site.name}_scale", PyroParam(spread, constraints.positive))


def sample_guide_site(module: PyroModule, site: GlobalSite, variational: bool) -> torch.Tensor:
    """Sample ``site`` from the guide whose parameters :func:`add_guide_parameters` made.

    Returns:
        the value, shape ``site.shape``.
    """
    transform = biject_to(site.support)
    loc = getattr(module, f"{site.name}_loc")
    if not variational:
        return pyro.sample(site.name, dist.Delta(transform(loc), event_dim=len(site.shape)))
    base = dist.Normal(loc, getattr(module, f"{site.name}_scale")).to_event(loc.dim())
    return pyro.sample(site.name, dist.TransformedDistribution(base, transform))


def point_values(module: PyroModule, sites: Iterable[GlobalSite]) -> dict[str, torch.Tensor]:
    """The guide's point values: the MAP, or the variational posterior's median.

    Returns:
        site name -> tensor of shape ``site.shape`` (detached).
    """
    return {
        site.name: biject_to(site.support)(getattr(module, f"{site.name}_loc")).detach()
        for site in sites
    }


def set_point_values(
    module: PyroModule,
    sites: Iterable[GlobalSite],
    values: dict[str, torch.Tensor],
    spreads: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write constrained ``values`` (site name -> ``site.shape``) into the guide's locations
    and, where given, ``spreads`` (unconstrained standard deviations, broadcastable to the
    location) into a variational guide's scales."""
    with torch.no_grad():
        for site in sites:
            loc = getattr(module, f"{site.name}_loc")
            value = values[site.name].to(loc)
            loc.copy_(biject_to(site.support).inv(value).reshape(loc.shape))
            if spreads is not None and site.name in spreads:
                scale = getattr(module, f"{site.name}_scale_unconstrained")
                scale.copy_(spreads[site.name].to(scale).expand_as(scale).log())
