"""Training objectives beyond Pyro's built-in ELBOs.

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
from pyro.infer import ELBO

from pyrogen.data.validation import check_int

PARTICLE_PLATE = "iwae_particles"


class ImportanceWeightedELBO(ELBO):
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

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return self.differentiable_loss(model, guide, *args, **kwargs).item()

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return loss.item()
