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

Two things Pyro's own flow guides get wrong are handled here: ``.to()`` moves everything,
including the supports used to constrain the samples (Pyro issues #2761, #3344), and the
flow's masks and orders are buffers in ``state_dict`` (Pyro issue #1839).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import zuko
from pyro import poutine
from pyro.distributions.transforms import biject_to
from pyro.infer.autoguide import AutoContinuous
from pyro.infer.autoguide.initialization import init_to_median
from pyro.infer.importance import vectorized_importance_weights
from pyro.ops.stats import fit_generalized_pareto
from torch import nn
from torch.distributions import AffineTransform
from zuko.distributions import NormalizingFlow
from zuko.transforms import ComposedTransform

from pyrogen.data.validation import check_int
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
        self.flow: nn.Module | None = None
        self._stale = False
        super().__init__(model, init_loc_fn=init_loc_fn)

    # --- set-up -----------------------------------------------------------------------
    def setup(self, *args: Any, **kwargs: Any) -> AutoFlow:
        """Trace the model with these arguments and build the flow (done on first call).

        Needed before ``load_state_dict`` on a new guide, since the flow's size is the
        model's number of unconstrained latent values.
        """
        self._setup_prototype(*args, **kwargs)
        return self

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
        flow = self.flow()
        # zuko's transforms map samples to noise: u -> (u - loc) / scale -> flow -> e.
        standardize = AffineTransform(self.loc, self.log_scale.exp(), event_dim=1).inv
        transform = ComposedTransform(standardize, flow.transform)
        return FlowDistribution(NormalizingFlow(transform, flow.base))

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
        latent = self.get_posterior().dist.rsample((n,))
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
