"""Training objectives beyond Pyro's built-in ELBOs.

:class:`AnalyticKLELBO` is Pyro's ``TraceMeanField_ELBO`` (the same value and gradients)
without the per-step work the VAE does not need: log-densities that the analytic KL never
reads, and two host synchronisations (``.item()`` and a NaN warning) per step, which
:func:`pyrogen.fit` makes redundant by checking the loss itself.

:class:`ImportanceWeightedELBO` is the IWAE bound (Burda et al., 2016) for models whose
latent and observed sites all live in the data plate (amortized models such as the VAE):

    L_K = sum_n log (1/K) sum_k p(x_n, z_nk) / q(z_nk | x_n),   z_nk ~ q(z | x_n).

``L_1`` is the ELBO, ``L_K`` grows with K, and ``L_K -> log p(x)`` as K grows. Pyro's
``RenyiELBO(alpha=0)`` computes the same bound but offers no ``differentiable_loss``, which
the engine needs; this class does, and shares Pyro's tracing so any such model works.
"""

from __future__ import annotations

import math

import pyro
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.infer import ELBO, TraceMeanField_ELBO
from pyro.infer.util import is_validation_enabled
from pyro.poutine.util import prune_subsample_sites

from pyrogen.data.validation import check_int

PARTICLE_PLATE = "iwae_particles"


class _FromDifferentiableLoss:
    """``loss`` and ``loss_and_grads`` from the class's own ``differentiable_loss``."""

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return self.differentiable_loss(model, guide, *args, **kwargs).item()

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return loss.item()


class ImportanceWeightedELBO(_FromDifferentiableLoss, ELBO):
    """Negative IWAE bound with ``num_particles`` importance samples per data point.

    Args:
        num_particles: K, the number of importance samples per row (>= 1).
        max_plate_nesting: plates in the model (the particle plate goes left of them).

    Example:
        >>> loss = ImportanceWeightedELBO(num_particles=5)
        >>> # loss.differentiable_loss(model, guide, x, num_data=n)  # nats for n rows
    """

    def __init__(self, num_particles: int = 5, max_plate_nesting: int = 1) -> None:
        check_int("num_particles", num_particles)
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting)

    def _get_trace(self, model, guide, args, kwargs):
        """Model and guide traces with all K particles drawn at once (a leading plate)."""
        particles = pyro.plate(PARTICLE_PLATE, self.num_particles, dim=-self.max_plate_nesting - 1)
        with particles:
            guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
            replayed = poutine.replay(model, trace=guide_trace)
            model_trace = poutine.trace(replayed).get_trace(*args, **kwargs)
        return model_trace, guide_trace

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """-L_K for the rows passed, scaled like the data plate (nats for all rows)."""
        model_trace, guide_trace = self._get_trace(model, guide, args, kwargs)
        log_weights = 0.0
        scale = None
        for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
            for site in trace.nodes.values():
                if site["type"] != "sample" or type(site["fn"]).__name__ == "_Subsample":
                    continue
                log_prob = site["fn"].log_prob(site["value"])
                if log_prob.dim() < 2:
                    raise ValueError(
                        f"ImportanceWeightedELBO: site {site['name']!r} is outside the data "
                        "plate; expected every sample site inside it (an amortized model)"
                    )
                log_weights = log_weights + sign * log_prob
                scale = site["scale"] if scale is None else scale
        # log_weights: (K, batch); the plate's minibatch scale applies to the whole bound.
        bound = torch.logsumexp(log_weights, dim=0) - math.log(self.num_particles)
        return -(bound.sum() * scale)


class AnalyticKLELBO(_FromDifferentiableLoss, TraceMeanField_ELBO):
    """Negative ELBO with analytic KLs, as ``TraceMeanField_ELBO``, with less per-step work.

    For guides whose latent sites are reparameterized and have a closed-form KL against the
    model's (sites without one fall back to ``log p - log q`` at the sample, as in Pyro).
    With Pyro validation on, Pyro's own checks run; the loss is the same either way.

    Example:
        >>> loss = AnalyticKLELBO(max_plate_nesting=1)
        >>> # loss.differentiable_loss(vae.model, vae.guide, x, num_data=n)
    """

    def _get_trace(self, model, guide, args, kwargs):
        if is_validation_enabled():
            return super()._get_trace(model, guide, args, kwargs)
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        replayed = poutine.replay(model, trace=guide_trace)
        model_trace = poutine.trace(replayed).get_trace(*args, **kwargs)
        return prune_subsample_sites(model_trace), prune_subsample_sites(guide_trace)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """-ELBO for the rows passed, scaled like the data plate (nats for all rows)."""
        elbo = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            elbo = elbo + analytic_kl_elbo(model_trace, guide_trace) / self.num_particles
        return -elbo


def analytic_kl_elbo(model_trace, guide_trace) -> torch.Tensor:
    """The ELBO of one model trace replayed against one guide trace, with analytic KLs.

    Observed sites add ``log p``; each latent site subtracts KL(guide || model) where torch
    has it in closed form, else ``log q - log p`` at the sampled value; both scaled and
    masked like their sites (plates, minibatches). This is what :class:`AnalyticKLELBO`
    averages over particles.

    Args:
        model_trace: ``poutine.trace(poutine.replay(model, trace=guide_trace))``'s trace.
        guide_trace: the guide's trace.

    Returns:
        the ELBO, a scalar tensor (nats for the rows the plates stand for).
    """
    elbo = 0.0
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample":
            continue
        if site["is_observed"]:
            log_p = site["fn"].log_prob(site["value"])
            elbo = elbo + scale_and_mask(log_p, site["scale"], site["mask"]).sum()
            continue
        guide_site = guide_trace.nodes[name]
        try:
            kl = torch.distributions.kl_divergence(guide_site["fn"], site["fn"])
        except NotImplementedError:
            value = guide_site["value"]
            kl = guide_site["fn"].log_prob(value) - site["fn"].log_prob(value)
        elbo = elbo - scale_and_mask(kl, guide_site["scale"], guide_site["mask"]).sum()
    return elbo
