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

:func:`markov_chain` is a Markov chain of latent sites, z_T -> z_{T-1} -> ... -> z_0, as a
Pyro effect: run plainly it samples every site (the generative program), and under
:class:`SampledSteps` it stands for the same chain with one step per row, so that
:class:`SampledStepELBO` estimates the full chain's ELBO (Ho et al. 2020's estimator of a
diffusion model's bound) at the cost of one step.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pyro
import torch
from pyro import poutine
from pyro.distributions import Distribution
from pyro.distributions.util import scale_and_mask
from pyro.infer import ELBO, TraceMeanField_ELBO
from pyro.infer.util import is_validation_enabled
from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import effectful
from pyro.poutine.util import prune_subsample_sites

from pyrogen.checks import check_int

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
    return sum((term.sum() for term in analytic_kl_terms(model_trace, guide_trace).values()), 0.0)


def analytic_kl_terms(model_trace, guide_trace) -> dict[str, torch.Tensor]:
    """The ELBO's term of each model site, not summed: ``log p`` of an observed site,
    ``-KL(guide || model)`` of a latent one (as :func:`analytic_kl_elbo`), scaled and masked.

    Returns:
        {site name: tensor of the site's batch shape (e.g. (B,) in a data plate)}; their
        sums add up to :func:`analytic_kl_elbo`.
    """
    terms = {}
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample":
            continue
        if site["is_observed"]:
            log_p = site["fn"].log_prob(site["value"])
            terms[name] = scale_and_mask(log_p, site["scale"], site["mask"])
            continue
        guide_site = guide_trace.nodes[name]
        try:
            kl = torch.distributions.kl_divergence(guide_site["fn"], site["fn"])
        except NotImplementedError:
            value = guide_site["value"]
            kl = guide_site["fn"].log_prob(value) - site["fn"].log_prob(value)
        terms[name] = -scale_and_mask(kl, guide_site["scale"], guide_site["mask"])
    return terms


#: The message type of :func:`markov_chain`.
CHAIN = "markov_chain"
#: Suffix of the one scored step's site under :class:`SampledSteps`: ``f"{name}_step"``.
STEP_SITE = "step"

Step = Callable[[torch.Tensor, torch.Tensor], Distribution]


def markov_chain(
    name: str,
    timesteps: int,
    first: Distribution,
    step: Step,
    marginal: Callable[[torch.Tensor], Distribution] | None = None,
) -> torch.Tensor:
    """A Markov chain of latent sites ``{name}_T -> {name}_{T-1} -> ... -> {name}_0``.

    Run plainly, it samples ``{name}_T`` from ``first`` and then, for t = T..1 (inside
    ``pyro.markov``), ``{name}_{t-1}`` from ``step(z_t, t)``, and returns z_0: the program
    is the chain, whatever runs it (``Predictive``, ``render_model``, an ELBO of the full
    trace). Under :class:`SampledSteps` it becomes the chain's step-subsampled form, see
    there. A guide passes ``marginal``, its closed-form marginal q(z_t) at any levels t, so
    that the subsampled form can draw z_t without the steps before it; a model passes none.

    Args:
        name: the prefix of the sites.
        timesteps: T >= 1.
        first: the distribution of z_T, batch shape (B,) inside a data plate.
        step: ``step(z_t, t)``, the distribution of z_{t-1} given z_t (B, ...) at integer
            levels t (B,) (each row may be at its own level).
        marginal: ``marginal(t)``, the distribution of z_t at levels t (B,), or None.

    Returns:
        z_0, shaped like a draw of ``first``.
    """
    return _chain(name, timesteps, first, step, marginal)


@effectful(type=CHAIN)
def _chain(name, timesteps, first, step, marginal) -> torch.Tensor:
    z = pyro.sample(f"{name}_{timesteps}", first)
    for t in pyro.markov(range(timesteps, 0, -1)):
        level = torch.full(first.batch_shape, t, dtype=torch.long, device=z.device)
        z = pyro.sample(f"{name}_{t - 1}", step(z, level))
    return z


class SampledSteps(Messenger):
    """Runs each :func:`markov_chain` as one step per row: an unbiased estimate of the chain's
    analytic-KL ELBO, for a guide whose marginals are known.

    Inside this handler a chain keeps its first site ``{name}_T``; each row then draws its
    own level t (uniformly from 1..T, or the fixed ``step``), and the chain has one more
    site, ``{name}_step``: z_{t-1} drawn from ``step(z_t, t)`` with the weight ``weight(t)``
    (T by default) as its scale. The chain's value, z_0, and the step's input, z_t, are
    drawn from the guide's ``marginal`` by the program that runs first (the guide) and
    handed to the one that runs second (the model, replayed), so they are not sites.

    Why it is unbiased: under the guide, each z_t is distributed as its marginal, and the
    full chain's ELBO is log p(x | z_0) - KL(z_T) - sum_t E KL(q(z_{t-1} | z_t) || p(z_{t-1} |
    z_t)); one uniform t with weight T has the sum's expectation, and the first and last
    terms are kept whole.

    Args:
        weight: ``weight(t)`` (B,) for levels t (B,); None for T (the unbiased estimate).
            Another weighting is a different objective (e.g. DDPM's unweighted loss).
        step: score this level for every row (1..T) instead of a uniform draw per row.
    """

    def __init__(
        self,
        weight: Callable[[torch.Tensor], torch.Tensor] | None = None,
        step: int | None = None,
    ) -> None:
        super().__init__()
        self.weight, self.step = weight, step
        self._draws: dict[str, tuple[torch.Tensor, ...]] = {}

    def _pyro_markov_chain(self, msg) -> None:
        msg["fn"] = self._subsampled

    def _subsampled(self, name, timesteps, first, step, marginal) -> torch.Tensor:
        device = pyro.sample(f"{name}_{timesteps}", first).device
        if name not in self._draws:
            if marginal is None:
                raise ValueError(
                    f"markov_chain {name!r}: expected the marginal q(z_t) from the program run "
                    "first (the guide), got None"
                )
            shape = first.batch_shape
            if self.step is None:
                t = torch.randint(1, timesteps + 1, shape, device=device)
            else:
                if not 1 <= check_int("step", self.step) <= timesteps:
                    raise ValueError(f"step: expected a level in 1..{timesteps}, got {self.step}")
                t = torch.full(shape, self.step, device=device)
            self._draws[name] = (t, marginal(t).rsample(), marginal(t * 0).rsample())
        t, z_t, z_0 = self._draws[name]
        if self.weight is None:
            weight = torch.full(t.shape, float(timesteps), dtype=z_t.dtype, device=t.device)
        else:
            weight = self.weight(t)
        with poutine.scale(scale=weight):
            pyro.sample(f"{name}_{STEP_SITE}", step(z_t, t))
        return z_0


class SampledStepELBO(AnalyticKLELBO):
    """:class:`AnalyticKLELBO` of programs with a :func:`markov_chain`, each chain scored at
    one uniformly drawn step per row with weight T (see :class:`SampledSteps`): an unbiased
    estimate of the full chain's ELBO that costs one step, not T.

    Args:
        weight: per-row weight of the scored step, ``weight(t)`` for levels t (B,); None
            for T (the ELBO). Any other is a reweighted objective, not a bound.
        max_plate_nesting: plates in the model.

    Example:
        >>> loss = SampledStepELBO(max_plate_nesting=1)
        >>> # loss.differentiable_loss(diffusion.model, diffusion.guide, x, num_data=n)
    """

    def __init__(
        self,
        weight: Callable[[torch.Tensor], torch.Tensor] | None = None,
        max_plate_nesting: int = 1,
    ) -> None:
        super().__init__(max_plate_nesting=max_plate_nesting)
        self.weight = weight

    def _get_trace(self, model, guide, args, kwargs):
        with SampledSteps(self.weight):  # one handler per trace pair: the guide's draws
            return super()._get_trace(model, guide, args, kwargs)
