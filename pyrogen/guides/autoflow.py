"""``AutoFlow``: a normalizing-flow guide for any Pyro model with continuous latents.

Like Pyro's autoguides it traces the model once, maps every latent site to the real line
with ``biject_to(support).inv`` and concatenates them into one vector u of size D. The
guide is then

    u = loc + scale * f(e),   e ~ N(0, I_D),   f a zuko flow (NSF, MAF, RealNVP or IAF),

and each site gets ``biject_to(support)(u_site)`` with its log-Jacobian, so the ELBO is the
usual one for constrained sites. ``loc`` starts at the model's initial values (the prior
median by default) and ``scale`` at ``init_scale`` (1: as wide as the standard normal base
of Pyro's flow guides; a guide that starts narrow is slow to find wide or heavy-tailed
posteriors, and the reverse KL rarely recovers them), and the flow learns the shape beyond it.

Training defaults live on the guide, so that the documented call is accurate:
``guide.fit(*model_args)`` runs Pyro's SVI with ``guide.loss`` (16 vectorized particles)
and ``guide.optimizer(steps)`` (ClippedAdam whose learning rate decays 100-fold), and the
guide scores its own draws with "sticking the landing" (Roeder et al. 2017): the log
density of a draw is taken with the flow's parameters detached, which drops the score
term of the gradient, a term with zero mean whose noise keeps a flow from settling.
``get_base_dist`` / ``get_transform`` make the guide usable by Pyro's ``NeuTraReparam``
(see :func:`pyrogen.infer.neutra`).

Two things Pyro's own flow guides get wrong are handled here: ``.to()`` moves everything,
including the supports used to constrain the samples (Pyro issues #2761, #3344), and the
flow's masks and orders are buffers in ``state_dict`` (Pyro issue #1839).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
import zuko
from pyro import poutine
from pyro.distributions.transforms import biject_to
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoContinuous
from pyro.infer.autoguide.initialization import init_to_median
from pyro.infer.importance import vectorized_importance_weights
from pyro.ops.stats import fit_generalized_pareto
from pyro.poutine.util import site_is_subsample
from torch import nn
from torch.distributions import AffineTransform, Transform, constraints
from tqdm.auto import tqdm
from zuko.distributions import NormalizingFlow
from zuko.transforms import ComposedTransform

from pyrogen.checks import check_int
from pyrogen.nn.flows import FLOWS, FlowDistribution, build_flow


class AutoFlow(AutoContinuous):
    """Normalizing-flow guide over all continuous latent sites of ``model``.

    Args:
        model: a Pyro model (any callable with ``pyro.sample`` sites). Discrete latent
            sites are refused (Pyro's message names the site): enumerate them in the
            model and hide them from the guide with ``poutine.block``.
        flow: ``"iaf"`` (default; the most accurate and fastest on the benchmarks'
            models), ``"nsf"`` (splines, here inverse-autoregressive too, so that sampling
            takes one pass), ``"realnvp"`` or ``"maf"`` (sampling takes D passes); see
            :func:`pyrogen.nn.flows.build_flow`.
        transforms: number of flow transformations.
        hidden: hidden widths of each transformation's network.
        init_loc_fn: per-site initial values, as for Pyro's autoguides.
        init_scale: initial posterior scale in the unconstrained space (lower it, to 0.1
            say, for a model whose log-density overflows a unit step from its initial values).
        sticking_the_landing: score the guide's own draws with its parameters detached
            while training (the path-derivative gradient of Roeder et al. 2017). The density
            is the same number; only its gradient changes. It costs one scoring pass in the
            flow's slow direction (``D`` passes for ``"iaf"``, one for ``"realnvp"``).

    Training:
        ``guide.fit(*model_args)`` uses :attr:`fit_defaults`; for raw Pyro, the same is
        ``SVI(model, guide, guide.optimizer(steps), guide.loss)``.

    Shapes:
        The flow is over the D unconstrained values of all latent sites together;
        ``sample_posterior(n)`` returns each site as (n, ``*site_shape``).

    Example:
        >>> def model():
        ...     pyro.sample("x", pyro.distributions.Normal(0.0, 1.0))
        >>> guide = AutoFlow(model, flow="maf", transforms=2, hidden=(8,))
        >>> guide.sample_posterior(4)["x"].shape
        torch.Size([4])
    """

    def __init__(
        self,
        model,
        flow: str = "iaf",
        *,
        transforms: int = 3,
        hidden: Sequence[int] = (64, 64),
        init_loc_fn=init_to_median,
        init_scale: float = 1.0,
        sticking_the_landing: bool = True,
    ) -> None:
        if flow not in FLOWS:
            raise ValueError(f"flow: expected one of {FLOWS}, got {flow!r}")
        if not (isinstance(init_scale, (int, float)) and math.isfinite(init_scale)):
            raise ValueError(f"init_scale: expected a positive number, got {init_scale!r}")
        if init_scale <= 0:
            raise ValueError(f"init_scale: expected a positive number, got {init_scale!r}")
        self.flow_kind = flow
        self.transforms = check_int("transforms", transforms)
        self.hidden = tuple(hidden)
        self.init_scale = float(init_scale)
        self.sticking_the_landing = bool(sticking_the_landing)
        self.flow: nn.Module | None = None
        self._stale = False
        super().__init__(model, init_loc_fn=init_loc_fn)

    #: What ``fit`` does unless told otherwise: ``steps`` of ClippedAdam whose learning
    #: rate decays exponentially from ``lr`` to ``final_lr``, ``particles`` draws per step.
    #: Measured on hierarchical regressions (benchmarks/flows_posterior.py): at a constant
    #: rate the flow's shifts wander around the optimum, and fewer particles or no decay
    #: leave posterior means several tenths of a posterior sd off.
    fit_defaults: dict[str, Any] = {
        "steps": 2000,
        "lr": 1e-2,
        "final_lr": 1e-4,
        "particles": 16,
    }

    # --- set-up -----------------------------------------------------------------------
    def setup(self, *args: Any, **kwargs: Any) -> AutoFlow:
        """Trace the model with these arguments and build the flow (done on first call).

        Needed before ``load_state_dict`` on a new guide, since the flow's size is the
        model's number of unconstrained latent values.
        """
        self._setup_prototype(*args, **kwargs)
        return self

    @property
    def loss(self) -> Trace_ELBO:
        """The ELBO ``fit`` uses: ``Trace_ELBO`` with ``fit_defaults["particles"]`` draws,
        vectorized (for a model that cannot run on a batch of draws, give
        ``Trace_ELBO(num_particles=1)`` to ``SVI`` instead, as ``fit`` does)."""
        return Trace_ELBO(num_particles=self.fit_defaults["particles"], vectorize_particles=True)

    def optimizer(
        self, steps: int | None = None, lr: float | None = None, final_lr: float | None = None
    ) -> pyro.optim.PyroOptim:
        """ClippedAdam whose learning rate decays exponentially from ``lr`` to ``final_lr``
        over ``steps`` steps (defaults from :attr:`fit_defaults`)."""
        steps = check_int("steps", steps if steps is not None else self.fit_defaults["steps"])
        lr = _positive("lr", lr if lr is not None else self.fit_defaults["lr"])
        final_lr = _positive(
            "final_lr", final_lr if final_lr is not None else self.fit_defaults["final_lr"]
        )
        return pyro.optim.ClippedAdam({"lr": lr, "lrd": (final_lr / lr) ** (1 / steps)})

    def fit(
        self,
        *args: Any,
        steps: int | None = None,
        lr: float | None = None,
        final_lr: float | None = None,
        particles: int | None = None,
        seed: int | None = 0,
        progress: bool = False,
        **kwargs: Any,
    ) -> list[float]:
        """Fit the guide to its model by SVI with the defaults of :attr:`fit_defaults`.

        Args:
            *args: the model's arguments (the data it conditions on).
            steps, lr, final_lr, particles: override :attr:`fit_defaults`.
            seed: seeds Pyro and torch first (``None``: leave the random state alone).
            progress: show a progress bar.
            **kwargs: the model's keyword arguments.

        Returns:
            the loss of every step (negative ELBO in nats, for the whole data).

        Warns:
            UserWarning: the model cannot be run on a batch of particle draws. It is checked
            once, at the start: the model's log density of a few particles drawn together
            must equal that of each draw alone, else the particles are run one after
            another, one per step unless ``particles`` is given (sticking the landing and the
            decaying rate keep one draw accurate, at the cost of a vectorized step). A model
            that raises fails the check, and so does one that broadcasts a draw's batch
            dimension against another (``einsum("...d,nd->...n", w, x)``), which Pyro would
            otherwise count, silently, once per particle.

        Raises:
            ValueError: a bad setting.
            FloatingPointError: the loss became NaN or infinite; the message names the step.
        """
        steps = check_int("steps", steps if steps is not None else self.fit_defaults["steps"])
        explicit_particles = particles is not None
        particles = check_int(
            "particles", particles if particles is not None else self.fit_defaults["particles"]
        )
        if seed is not None:
            pyro.set_rng_seed(seed)
        optim = self.optimizer(steps, lr, final_lr)
        if particles > 1 and not self._vectorizes(particles, args, kwargs):
            # One draw per step unless told otherwise: 16 draws one after another cost 16
            # times the time, and sticking the landing with the decaying rate keeps one
            # draw accurate. An explicit ``particles`` is kept.
            particles = particles if explicit_particles else 1
            elbo = Trace_ELBO(num_particles=particles)
        else:
            elbo = Trace_ELBO(num_particles=particles, vectorize_particles=particles > 1)
        svi = SVI(self.model, self, optim, elbo)
        losses = [svi.step(*args, **kwargs)]
        for step in tqdm(range(1, steps), disable=not progress, desc="AutoFlow"):
            if not math.isfinite(losses[-1]):
                raise FloatingPointError(f"AutoFlow.fit: the loss is {losses[-1]} at step {step}")
            losses.append(svi.step(*args, **kwargs))
        if not math.isfinite(losses[-1]):
            raise FloatingPointError(f"AutoFlow.fit: the loss is {losses[-1]} at step {steps}")
        return losses

    def _vectorizes(self, particles: int, args: tuple, kwargs: dict) -> bool:
        """Whether the model scores a batch of ``particles`` draws as it scores each alone.

        Run once per fit: the particles are drawn once, vectorized as ``Trace_ELBO`` does,
        and the model's log density of each of a few of them (the vectorized trace summed
        over all but the particle dimension) is compared with the model run on that
        particle's draw alone. A model that raises fails, and so does one that broadcasts
        a draw's batch dimension against another, which Pyro would count once per particle.
        """
        try:
            with torch.no_grad(), poutine.block():
                problem = self._vectorization_problem(particles, args, kwargs)
        except (ValueError, RuntimeError) as error:
            first_line = (str(error).strip().splitlines() or [""])[0]
            problem = f"it raised {type(error).__name__}: {first_line}"
        if problem is None:
            return True
        warnings.warn(
            f"AutoFlow.fit: the model cannot be run on a batch of {particles} particle draws "
            f"({problem}); the particles run one after another instead, one per step unless "
            "fit(particles=...) is given. For vectorized particles, write the model so that "
            "draws batched on the left broadcast against its plates: "
            "dist.Normal(0.0, tau.unsqueeze(-1)).expand(tau.shape + (3,)) for a vector site "
            "whose scale tau is a draw, (x * w).sum(-1) instead of x @ w, and no extra "
            "dimension (an einsum over '...', an unsqueeze) left of the plates.",
            stacklevel=3,
        )
        return False

    def _vectorization_problem(self, particles: int, args: tuple, kwargs: dict) -> str | None:
        # Plate depth as Pyro's ELBO guesses it, from one run without particles.
        guide_trace = poutine.trace(self).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(self.model, trace=guide_trace)).get_trace(
            *args, **kwargs
        )
        dims = [
            frame.dim
            for trace in (guide_trace, model_trace)
            for site in trace.nodes.values()
            if site["type"] == "sample"
            for frame in site["cond_indep_stack"]
            if frame.vectorized and frame.dim is not None
        ]
        particle_dim = min(dims, default=0) - 1

        def batched(fn):
            def wrapped(*a, **k):
                with pyro.plate("num_particles_vectorized", particles, dim=particle_dim):
                    return fn(*a, **k)

            return wrapped

        guide_trace = poutine.trace(batched(self)).get_trace(*args, **kwargs)
        model_trace = poutine.trace(
            poutine.replay(batched(self.model), trace=guide_trace)
        ).get_trace(*args, **kwargs)
        model_trace.compute_log_prob()
        # What Trace_ELBO adds up, split by particle: a term without the particle
        # dimension is counted once for all of them.
        together = torch.zeros(particles, dtype=self.loc.dtype, device=self.loc.device)
        for site in model_trace.nodes.values():
            if site["type"] == "sample":
                log_p = site["log_prob"]
                if log_p.dim() >= -particle_dim and log_p.shape[particle_dim] == particles:
                    per_particle = log_p.movedim(particle_dim, 0).reshape(particles, -1)
                    together = together + per_particle.sum(-1)
                else:
                    together = together + log_p.sum() / particles
        # Each of a few particles alone, on its draw and the batch's subsamples.
        latent = f"_{self._pyro_name}_latent"
        draws = guide_trace.nodes[latent]["value"].reshape(particles, -1)
        for i in range(min(particles, 4)):
            replayed = poutine.Trace()
            for name, site in guide_trace.nodes.items():
                if site["type"] == "sample" and site_is_subsample(site):
                    replayed.add_node(name, **site)
            replayed.add_node(latent, **{**guide_trace.nodes[latent], "value": draws[i]})
            alone_guide = poutine.trace(poutine.replay(self, trace=replayed)).get_trace(
                *args, **kwargs
            )
            for name, site in model_trace.nodes.items():  # the model's own subsamples
                if site["type"] == "sample" and site_is_subsample(site):
                    if name not in alone_guide.nodes:
                        alone_guide.add_node(name, **site)
            alone = poutine.trace(poutine.replay(self.model, trace=alone_guide)).get_trace(
                *args, **kwargs
            )
            alone.compute_log_prob()
            terms = [s["log_prob"] for s in alone.nodes.values() if s["type"] == "sample"]
            log_p = sum(float(t.sum()) for t in terms)
            size = sum(float(t.abs().sum()) for t in terms)
            if not abs(float(together[i]) - log_p) <= 1e-4 * size + 1e-3:
                return (
                    f"particle {i}'s log density is {float(together[i]):.6g} among the batch "
                    f"and {log_p:.6g} alone"
                )
        return None

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        init_loc = self._init_loc().detach()
        if self.flow is None:
            flow = build_flow(
                self.flow_kind, self.latent_dim, transforms=self.transforms, hidden=self.hidden
            )
            if self.flow_kind == "nsf":  # a guide samples: the one-pass direction, as IAF
                flow = zuko.flows.Flow(zuko.flows.LazyInverse(flow.transform), flow.base)
            self.flow = flow.to(init_loc)
            self.loc = nn.Parameter(init_loc.clone())
            self.log_scale = nn.Parameter(torch.full_like(init_loc, math.log(self.init_scale)))
        elif self.loc.shape[-1] != self.latent_dim:
            raise ValueError(
                f"AutoFlow: the model now has {self.latent_dim} unconstrained latent values, "
                f"but the guide was built for {self.loc.shape[-1]}"
            )
        # Pyro's NeuTraReparam reads the plates, which the guide otherwise makes when it runs.
        # Blocked: a plate records its subsample site when made, and on the guide's first
        # run (under SVI's trace) forward() makes them again, which would record it twice.
        with poutine.block():
            self._create_plates(*args, **kwargs)
        self._stale = False

    def _apply(self, fn, *args, **kwargs):
        # Tensors in the traced supports (bounds of an interval, say) are not module
        # buffers; after .to() the model is traced again, on its new device, at the next call.
        result = super()._apply(fn, *args, **kwargs)
        self._stale = self.prototype_trace is not None
        return result

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        if self.flow is None:
            raise RuntimeError(
                "AutoFlow: call guide.setup(*model_args) (or the guide once) before "
                "load_state_dict, so that the flow's size is known"
            )
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # --- the guide --------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        if self.prototype_trace is None or self._stale:
            self._setup_prototype(*args, **kwargs)
        return super().forward(*args, **kwargs)

    def get_posterior(self, *args: Any, **kwargs: Any) -> FlowDistribution:
        """The distribution of the unconstrained latent vector u, event shape (D,)."""
        return FlowDistribution(_flow_distribution(self.flow, self.loc, self.log_scale))

    def get_base_dist(self) -> dist.Distribution:
        """The flow's base distribution: N(0, I_D), event shape (D,)."""
        zeros = torch.zeros_like(self.loc)
        return dist.Normal(zeros, torch.ones_like(zeros)).to_event(1)

    def get_transform(self, *args: Any, **kwargs: Any) -> Transform:
        """The map from a base draw e (..., D) to the unconstrained latent u (..., D).

        ``TransformedDistribution(get_base_dist(), get_transform())`` is
        :meth:`get_posterior`, which is what Pyro's ``NeuTraReparam`` needs.
        """
        return _NoiseToSample(self.get_posterior().dist.transform)

    def sample_latent(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        posterior = self.get_posterior()
        if self.sticking_the_landing and torch.is_grad_enabled():
            score = _DetachedScore(self.flow, self.loc, self.log_scale)
            posterior = _StickingTheLanding(posterior.dist, score)
        return pyro.sample(f"_{self._pyro_name}_latent", posterior, infer={"is_auxiliary": True})

    # --- posterior draws ----------------------------------------------------------------
    @torch.no_grad()
    def sample_posterior(self, n: int, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """n draws of every latent site from the guide, constrained: site -> ``(n, *shape)``.

        Args:
            n: number of draws.
            *args: the model's arguments (needed only before the first call).
            **kwargs: the model's keyword arguments (likewise).
        """
        check_int("n", n)
        if self.prototype_trace is None or self._stale:
            self._setup_prototype(*args, **kwargs)
        return self.unpack(self.get_posterior().dist.rsample((n,)))

    def unpack(self, latent: torch.Tensor) -> dict[str, torch.Tensor]:
        """Constrained site values of unconstrained vectors: ``(n, D)`` -> ``{site: (n, *shape)}``.

        The inverse of the guide's packing: each site's slice of u, reshaped and mapped to
        its support with ``biject_to``. Draws of u from NUTS on the flow-preconditioned
        model (:func:`pyrogen.infer.neutra`) become the model's parameters this way.
        """
        if latent.dim() != 2 or latent.shape[-1] != self.latent_dim:
            raise ValueError(
                f"latent: expected shape (n, {self.latent_dim}), got {tuple(latent.shape)}"
            )
        n = latent.shape[0]
        # Singleton dims between the draws and the values, so that sites inside plates
        # unpack to (n, *site_shape) rather than broadcasting n against their plate.
        depth = max(len(shape) for shape in self._unconstrained_shapes.values())
        latent = latent.reshape(n, *([1] * depth), self.latent_dim)
        draws = {}
        for site, unconstrained in self._unpack_latent(latent):
            value = biject_to(site["fn"].support)(unconstrained)
            draws[site["name"]] = value.reshape(n, *site["value"].shape)
        return draws

    @torch.no_grad()
    def median(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Per-site median of 1,000 posterior draws (the flow has no closed-form median)."""
        draws = self.sample_posterior(1000, *args, **kwargs)
        return {name: value.median(0).values for name, value in draws.items()}


def _flow_distribution(flow, loc: torch.Tensor, log_scale: torch.Tensor) -> NormalizingFlow:
    """u = loc + exp(log_scale) * f(e): zuko's transforms map u to the noise e."""
    base = flow()
    standardize = AffineTransform(loc, log_scale.exp(), event_dim=1).inv
    return NormalizingFlow(ComposedTransform(standardize, base.transform), base.base)


class _DetachedScore(nn.Module):
    """log q(u) with the guide's parameters detached and u not: the path derivative."""

    def __init__(self, flow: nn.Module, loc: torch.Tensor, log_scale: torch.Tensor) -> None:
        super().__init__()
        self.flow = flow
        self.loc, self.log_scale = loc.detach(), log_scale.detach()

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return _flow_distribution(self.flow, self.loc, self.log_scale).log_prob(u)

    def score(self, u: torch.Tensor) -> torch.Tensor:
        """log q(u), (...,) for u of shape (..., D)."""
        # zuko's transforms call their networks lazily, when evaluated: the parameters are
        # swapped for detached copies for the whole evaluation, not only while building.
        detached = {f"flow.{name}": p.detach() for name, p in self.flow.named_parameters()}
        return torch.func.functional_call(self, detached, (u,))


class _StickingTheLanding(FlowDistribution):
    """Draws from the live flow; scores them with ``score`` (detached parameters)."""

    def __init__(self, flow: torch.distributions.Distribution, score: _DetachedScore) -> None:
        super().__init__(flow)
        self._score = score

    def __call__(self, shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        return self.dist.rsample(shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return self._score.score(value)

    def expand(self, *args, **kwargs) -> _StickingTheLanding:
        return _StickingTheLanding(self.dist.expand(*args, **kwargs), self._score)


class _NoiseToSample(Transform):
    """The inverse of a zuko flow's transform (u -> e): e -> u, with its log-Jacobian.

    zuko computes a value and its log-Jacobian in one pass (``call_and_ladj``); the last
    pair is kept so that ``log_abs_det_jacobian(e, u)`` after ``u = t(e)`` costs nothing,
    which for an IAF saves the D passes of its slow direction.
    """

    domain = constraints.independent(constraints.real, 1)
    codomain = constraints.independent(constraints.real, 1)
    bijective = True

    def __init__(self, transform: Transform) -> None:
        super().__init__(cache_size=0)
        self.transform = transform
        self._last: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def _call(self, e: torch.Tensor) -> torch.Tensor:
        u, ladj = self.transform.inv.call_and_ladj(e)
        self._last = (e, u, ladj)
        return u

    def _inverse(self, u: torch.Tensor) -> torch.Tensor:
        return self.transform(u)

    def log_abs_det_jacobian(self, e: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        if self._last is not None and self._last[0] is e and self._last[1] is u:
            return self._last[2]
        return -self.transform.log_abs_det_jacobian(u, e)


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name}: expected a positive number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a positive number, got {value!r}")
    return float(value)


def psis_khat(model, guide, *args: Any, num_samples: int = 1000, **kwargs: Any) -> float:
    """Pareto k-hat of the importance weights p(x, z) / q(z) for z ~ guide (Yao et al. 2018).

    k < 0.5: the guide is a good proposal; 0.5-0.7: usable with care; > 0.7: the guide
    misses mass the posterior has, and importance-sampling estimates are unreliable.

    The draws are vectorized as in Pyro's ``psis_diagnostic`` when the model allows it; a
    model written for one draw at a time (``X @ beta`` with a batched ``beta``, say) is run
    once per draw instead, with the same result and more time.

    Args:
        model, guide: a Pyro model and a guide for it.
        *args: their arguments.
        **kwargs: their keyword arguments.
        num_samples: draws of z.

    Returns:
        k-hat as a float (inf when too few draws reach the tail to fit it).
    """
    check_int("num_samples", num_samples)
    with poutine.block(), torch.no_grad():
        try:
            log_weights = vectorized_importance_weights(
                model, guide, *args, num_samples=num_samples, max_plate_nesting=7, **kwargs
            )[0]
        except (ValueError, RuntimeError):
            log_weights = torch.stack(
                [_log_weight(model, guide, args, kwargs) for _ in range(num_samples)]
            )
    return _pareto_khat(log_weights)


def _log_weight(model, guide, args, kwargs) -> torch.Tensor:
    """log p(x, z) - log q(z) for one draw z ~ guide, without vectorization."""
    guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    return model_trace.log_prob_sum() - guide_trace.log_prob_sum()


def _pareto_khat(log_weights: torch.Tensor) -> float:
    """The shape of a generalized Pareto fitted to the largest weights (PSIS's tail rule)."""
    n = log_weights.numel()
    log_weights = torch.sort(log_weights.detach().flatten() - log_weights.max()).values
    tail_size = int(math.ceil(min(0.2 * n, 3.0 * math.sqrt(n))))
    cutoff = max(math.log(1e-15), float(log_weights[-tail_size - 1]))
    tail = log_weights[log_weights > cutoff]
    if len(tail) < 10:
        return math.inf
    # On the CPU: Pyro's fit makes CPU tensors of its own, and the tail is a few numbers.
    k, _ = fit_generalized_pareto((tail.exp() - math.exp(cutoff)).cpu())
    return float(k)
