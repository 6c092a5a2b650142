"""Flow densities: exact maximum likelihood with a normalizing flow, trained by SVI.

For continuous data the model is one observed site, ``x_n ~ p_flow(x | c_n)``, and the guide
is empty, so the ELBO *is* the log-likelihood and :func:`pyrogen.fit` does maximum
likelihood. For quantized data (8-bit images: ``dequantize=256``) the flow models a
continuous y whose bin is the observed value, and uniform dequantization is written as
what it is, a guide::

    model:  y_n ~ p_flow(y | c_n)             (x_n = the bin of y_n; P(x_n | y_n) = 1 there)
    guide:  y_n ~ Uniform(bin(x_n))           (width 1/L per value)

so the ELBO, E_q[log p(y)] - D log L, is the usual lower bound on the discrete
log-likelihood, and bits/dim come from the same machinery. (The guide's box is narrower
than the bin by a relative 1e-4, centred, because float32 draws from the whole bin can
land on its edge; the bound stays a bound and is looser by about D * 1e-4 nats.)
``logit=alpha`` models logit(alpha + (1 - 2 alpha) y) instead of y (RealNVP's
preprocessing), and continuous data are standardized; both are fixed transforms inside the
density, so every number is in the data's own units.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import pyro_method
from torch.distributions import transforms as T
from zuko.distributions import NormalizingFlow
from zuko.transforms import ComposedTransform

from pyrogen.checks import as_examples, as_labels, as_tensor, check_int, check_ints
from pyrogen.models.base import GenerativeModel, data_plate
from pyrogen.models.objectives import AnalyticKLELBO
from pyrogen.models.vae import check_data_shape
from pyrogen.nn import one_hot
from pyrogen.nn.flows import FLOWS, FlowDistribution, build_flow

# Site names, shared by model and guide.
OBS = "obs"
DEQUANTIZED = "dequantized"
# Rows evaluated at once by the evaluation methods, and values drawn at once.
_EVAL_ROWS = 4096
_EVAL_ELEMENTS = 2**24
# The guide's box is this fraction narrower than the bin, centred in it, so that float32
# rounding never carries a draw into the next bin. Any q inside the bin gives a lower
# bound; this one is looser by -D log(1 - margin) nats.
_DEQUANTIZATION_MARGIN = 1e-4


class _Box(dist.Uniform):
    """Uniform on a box that its draws lie in by construction: log q is -log(width) with no
    support check, since ``low + width * u`` can round onto the upper edge in float32."""

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return -(self.high - self.low).log().expand(value.shape)


class FlowDensity(GenerativeModel):
    """A normalizing-flow density p(x) (or p(x | c)) over examples of any shape.

    Args:
        data_shape: shape of one example (an int D means (D,)); it is flattened to D values
            for the flow.
        flow: ``"nsf"``, ``"maf"``, ``"realnvp"`` or ``"iaf"`` (see
            :func:`pyrogen.nn.flows.build_flow`; autoregressive flows sample in D passes).
        transforms: number of flow transformations.
        hidden: hidden widths of each transformation's network.
        num_classes: C, to condition on integer labels y in 0..C-1.
        context_dim: size of a real context vector y (N, context_dim) to condition on.
        dequantize: L, the number of levels of quantized data (256 for 8-bit images, given
            as values k / (L - 1) in [0, 1]); None for continuous data.
        logit: alpha in (0, 0.5) to model logit(alpha + (1 - 2 alpha) y) for data in [0, 1];
            None for none.
        standardize: shift and scale continuous data by their training mean and standard
            deviation inside the density (default: when neither dequantize nor logit).

    Shapes:
        x (N, ``*data_shape``); y (N,) labels or (N, context_dim) contexts.

    Example:
        >>> flow = FlowDensity((2,), "nsf", transforms=2, hidden=(16,))
        >>> x = flow.sample(5)  # (5, 2)
        >>> flow.exact_likelihood, flow.log_prob(x).shape
        (True, torch.Size([5]))
    """

    family = "flow"
    fit_defaults = {"steps": 3000, "lr": 1e-3, "batch_size": 256, "early_stopping": None}
    choices = {"flow": FLOWS}

    def __init__(
        self,
        data_shape: Sequence[int] | int,
        flow: str = "nsf",
        *,
        transforms: int = 5,
        hidden: Sequence[int] = (128, 128),
        num_classes: int | None = None,
        context_dim: int = 0,
        dequantize: int | None = None,
        logit: float | None = None,
        standardize: bool | None = None,
    ) -> None:
        super().__init__()
        self.data_shape = check_data_shape(data_shape)
        if flow not in FLOWS:
            raise ValueError(f"flow: expected one of {FLOWS}, got {flow!r}")
        check_int("context_dim", context_dim, minimum=0)
        if num_classes is not None:
            check_int("num_classes", num_classes, minimum=2)
            if context_dim:
                raise ValueError("num_classes, context_dim: expected at most one, got both")
        if dequantize is not None:
            check_int("dequantize", dequantize, minimum=2)
        if logit is not None and not (isinstance(logit, (int, float)) and 0 < logit < 0.5):
            raise ValueError(f"logit: expected a number in (0, 0.5) or None, got {logit!r}")
        self.flow_kind = flow
        self.transforms = transforms
        self.hidden = check_ints("hidden", hidden)
        self.num_classes = num_classes
        self.context_dim = context_dim
        self.dequantize = dequantize
        self.logit = None if logit is None else float(logit)
        self.standardize = (
            dequantize is None and logit is None if standardize is None else bool(standardize)
        )
        features = math.prod(self.data_shape)
        self.flow = build_flow(
            flow,
            features,
            context=num_classes or context_dim,
            transforms=transforms,
            hidden=self.hidden,
        )
        # Set by setup from the training data when standardizing; identity otherwise.
        self.register_buffer("data_shift", torch.zeros(features))
        self.register_buffer("data_scale", torch.ones(features))

    @property
    def exact_likelihood(self) -> bool:
        """True for continuous data; quantized data get bounds (``elbo``, ``log_likelihood``)."""
        return self.dequantize is None

    # --- reporting (the contract of GenerativeModel) ---------------------------------------
    @property
    def report_plots(self) -> tuple[str, ...]:
        """The loss, and one row of samples per class with labels."""
        return ("elbo",) + self.label_sample_plots

    @property
    def elbo_description(self) -> str:
        """Uniform dequantization's bound."""
        return (
            "ELBO of uniform dequantization E_q[log p(y)] - D log L, y uniform in the bin of "
            "each value"
        )

    @property
    def loss(self) -> AnalyticKLELBO:
        """The exact log-likelihood, or the dequantization bound, as ``Trace_ELBO`` computes
        it (no latent site has a closed-form KL, so :class:`AnalyticKLELBO` gives the same
        numbers) without reading the value back to Python every step."""
        return AnalyticKLELBO(max_plate_nesting=1)

    # --- the density ----------------------------------------------------------------------
    def _context(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor | None:
        if self.num_classes is None and not self.context_dim:
            return None
        if y is None:
            raise ValueError(
                f"y: expected {'labels' if self.num_classes else 'contexts'} for "
                f"{x.shape[0]} rows of this conditional flow, got None"
            )
        if self.num_classes is not None:
            return one_hot(y, self.num_classes, x.dtype)
        return y.to(x.dtype)

    def density(self, y: torch.Tensor | None = None) -> NormalizingFlow:
        """The flow distribution over flattened examples (D,), given a context (B, ...)."""
        flow = self.flow() if y is None else self.flow(y)
        steps = []
        if self.logit is not None:
            squeeze = T.AffineTransform(self.logit, 1 - 2 * self.logit)
            steps += [squeeze, T.SigmoidTransform().inv]
        if self.standardize:  # after the logit, so that it standardizes the flow's input
            steps.append(T.AffineTransform(self.data_shift, self.data_scale).inv)
        if not steps:
            return flow
        # Element-wise steps, summed over the D values like the flow's own log-Jacobian.
        pre = T.IndependentTransform(T.ComposeTransform(steps), 1)
        return NormalizingFlow(ComposedTransform(pre, flow.transform), flow.base)

    def _bins(self, flat: torch.Tensor) -> torch.Tensor:
        """The integer level k of each quantized value k / (L - 1)."""
        return (flat * (self.dequantize - 1)).round()

    def _dequantization_box(self, flat: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Lower edges (B, D) and width of the box the guide draws y from, inside each bin."""
        width = (1 - _DEQUANTIZATION_MARGIN) / self.dequantize
        low = (self._bins(flat) + _DEQUANTIZATION_MARGIN / 2) / self.dequantize
        return low, width

    # --- Pyro programs ------------------------------------------------------------------
    @pyro_method
    def model(
        self, x: torch.Tensor, y: torch.Tensor | None = None, num_data: int | None = None
    ) -> None:
        """p_flow(x | c) for continuous data; p_flow(y | c) of the dequantized y otherwise."""
        # With the logit step the density lives on the unit cube, otherwise on R^D.
        support = dist.constraints.independent(
            dist.constraints.unit_interval if self.logit is not None else dist.constraints.real, 1
        )
        density = FlowDistribution(self.density(self._context(x, y)), support)
        with data_plate(x, num_data):
            if self.dequantize is None:
                pyro.sample(OBS, density, obs=x.flatten(1))
            else:
                pyro.sample(DEQUANTIZED, density)

    @pyro_method
    def guide(
        self, x: torch.Tensor, y: torch.Tensor | None = None, num_data: int | None = None
    ) -> None:
        """Empty for continuous data; uniform dequantization y ~ U(bin(x)) otherwise."""
        if self.dequantize is None:
            return
        low, width = self._dequantization_box(x.flatten(1))
        with data_plate(x, num_data):
            pyro.sample(DEQUANTIZED, _Box(low, low + width).to_event(1))

    # --- data -----------------------------------------------------------------------------
    def setup(self, x: torch.Tensor, y: torch.Tensor | None = None, *, seed: int = 0) -> None:
        """Check the data; set the standardization from it (when ``standardize``)."""
        x = self._prepare(x)
        self._context(x, self._prepare_y(y, x.shape[0]))
        if self.standardize:
            flat = x.flatten(1)
            if self.logit is not None:
                flat = torch.logit(self.logit + (1 - 2 * self.logit) * flat)
            self.data_shift.copy_(flat.mean(0))
            self.data_scale.copy_(flat.std(0).clamp(min=1e-6) if len(flat) > 1 else 1.0)

    def _prepare(self, x: Any, name: str = "x") -> torch.Tensor:
        bounded = self.dequantize is not None or self.logit is not None
        x = as_examples(
            x,
            self.data_shape,
            dtype=self.data_shift.dtype,
            name=name,
            unit_interval="(dequantize / logit)" if bounded else None,
        )
        return x.to(self.data_shift.device)

    def _prepare_y(self, y: Any, rows: int) -> torch.Tensor | None:
        if self.num_classes is not None:
            if y is None:
                raise ValueError(f"y: expected labels of shape ({rows},), got None")
            return as_labels(y, rows, self.num_classes).to(self.data_shift.device)
        if self.context_dim:
            y = as_tensor(y, name="y", ndim=2, dtype=self.data_shift.dtype)
            if tuple(y.shape) != (rows, self.context_dim):
                raise ValueError(
                    f"y: expected contexts of shape ({rows}, {self.context_dim}), "
                    f"got {tuple(y.shape)}"
                )
            return y.to(self.data_shift.device)
        if y is not None:
            raise ValueError("y: this flow is not conditional, got labels")
        return None

    def _rows(self, x: Any, y: Any):
        x = self._prepare(x)
        y = self._prepare_y(y, x.shape[0])
        for start in range(0, x.shape[0], _EVAL_ROWS):
            rows = x[start : start + _EVAL_ROWS]
            labels = None if y is None else y[start : start + _EVAL_ROWS]
            yield rows.flatten(1), self.density(self._context(rows, labels))

    # --- evaluation -----------------------------------------------------------------------
    @torch.no_grad()
    def log_prob(self, x: Any, y: Any = None) -> torch.Tensor:
        """Exact log-density of each example in nats, shape (N,) (continuous data only)."""
        if self.dequantize is not None:
            raise ValueError(
                "log_prob: quantized data have a probability, not a density: use "
                "log_likelihood(x, num_samples=K) or elbo(x)"
            )
        return torch.cat([density.log_prob(flat) for flat, density in self._rows(x, y)])

    @torch.no_grad()
    def log_likelihood(self, x: Any, y: Any = None, *, num_samples: int = 1) -> torch.Tensor:
        """log P(x) per example (nats), shape (N,).

        Continuous data: the exact log-density (``num_samples`` unused). Quantized data:
        the importance-weighted bound log (1/K) sum_k p(y_k) / q(y_k | x) with K =
        ``num_samples`` uniform dequantizations, below log P(x) in expectation; K = 1 is
        the ELBO.
        """
        check_int("num_samples", num_samples)
        if self.dequantize is None:
            return self.log_prob(x, y)
        results = []
        for flat, density in self._rows(x, y):
            low, width = self._dequantization_box(flat)
            log_q = -flat.shape[-1] * math.log(width)
            chunk = max(1, _EVAL_ELEMENTS // flat.numel())
            total = torch.full(flat.shape[:1], -math.inf, dtype=flat.dtype, device=flat.device)
            for start in range(0, num_samples, chunk):
                count = min(chunk, num_samples - start)
                uniform = torch.rand(count, *flat.shape, dtype=flat.dtype, device=flat.device)
                weights = density.log_prob(low + width * uniform) - log_q
                total = torch.logaddexp(total, torch.logsumexp(weights, 0))
            results.append(total - math.log(num_samples))
        return torch.cat(results)

    def elbo(self, x: Any, y: Any = None) -> torch.Tensor:
        """The training bound per example (nats), shape (N,): log_likelihood with K = 1."""
        return self.log_likelihood(x, y, num_samples=1)

    @torch.no_grad()
    def ood_score(
        self, x: Any, y: Any = None, *, reference: Any = None, reference_y: Any = None
    ) -> torch.Tensor:
        """Deprecated: use :func:`pyrogen.ood.negative_log_likelihood` and
        :func:`pyrogen.ood.typicality_score`, which score every family with a likelihood.

        Out-of-distribution score per example (higher = less typical), shape (N,): without
        ``reference``, -log p(x) / D, nats per value; with ``reference`` (held-out
        in-distribution examples, labels ``reference_y``), the distance of that number from
        its mean on the reference (Nalisnick et al. 2019).
        """
        warnings.warn(
            "FlowDensity.ood_score is deprecated: use pyrogen.ood.negative_log_likelihood, or "
            "pyrogen.ood.typicality_score with reference rows",
            DeprecationWarning,
            stacklevel=2,
        )
        dims = math.prod(self.data_shape)
        score = -self.log_likelihood(x, y) / dims
        if reference is None:
            return score
        typical = (-self.log_likelihood(reference, reference_y) / dims).mean()
        return (score - typical).abs()

    @torch.no_grad()
    def sample(self, n: int, y: Any = None) -> torch.Tensor:
        """Draw n examples (n, ``*data_shape``); labels drawn uniformly when y is None.

        Quantized data come back as levels k / (L - 1).
        """
        check_int("n", n)
        device = self.data_shift.device
        if self.num_classes is not None and y is None:
            y = torch.randint(self.num_classes, (n,), device=device)
        y = self._prepare_y(y, n)
        context = self._context(self.data_shift.expand(n, -1), y)
        density = self.density(context)
        draws = density.sample(() if context is not None else (n,))
        if self.dequantize is not None:
            draws = (draws * self.dequantize).floor().clamp(0, self.dequantize - 1)
            draws = draws / (self.dequantize - 1)
        return draws.reshape(n, *self.data_shape)
