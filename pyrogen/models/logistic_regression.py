"""Bayesian multinomial logistic regression: the discriminative partner of naive Bayes.

The model::

    tau ~ HalfCauchy(s)                         (hierarchical=True; else tau = s)
    W ~ Normal(0, tau),  W of shape (D, C)
    b ~ flat, or Normal(0, intercept_prior_scale), b of shape (C,)
    for n in 1..N:  y_n ~ Categorical(logits = x_n W + b)

It models p(y | x) only: there is no p(x) to score or draw from, so ``log_prob(x, y)`` is
the exact log p(y | x), ``log_prob(x)`` and ``sample`` raise and say so, and reports name
their number "log p(y | x)".

At the MAP, a Normal(0, s) prior on every weight is scikit-learn's L2 penalty with
``C = s**2`` for three classes or more (its objective ``C * sum(log loss) + ||W||**2 / 2``
is ``C`` times minus our log joint), and ``C = 2 s**2`` for two classes, where
scikit-learn fits one weight vector w = W_1 - W_0, whose prior is then Normal(0, sqrt(2) s);
the intercept is not penalized there, a flat prior here (``intercept_prior_scale=None``, for
MAP only: the posterior is improper along the shift of every intercept by one constant).

Inference: ``"map"`` (:meth:`LogisticRegression.setup` finds the mode by L-BFGS; the
engine's steps check it), ``"variational"`` (a mean-field Normal guide, what Pyro's
``AutoNormal`` builds, started at the mode), or NUTS on :meth:`LogisticRegression.model`
with Pyro's ``MCMC`` (see the docs page). ``pyro.infer.autoguide.AutoNormal(model.model)``
works on it too, as on any Pyro model.
"""

from __future__ import annotations

from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.infer import Trace_ELBO
from pyro.nn import pyro_method

from pyrogen.checks import (
    as_labels,
    as_tensor,
    check_choice,
    check_int,
    check_number,
    float_dtype_of,
)
from pyrogen.models.base import data_plate
from pyrogen.models.discriminative import DiscriminativeModel
from pyrogen.models.global_sites import (
    FlatPrior,
    GlobalSite,
    add_guide_parameters,
    point_values,
    sample_guide_site,
    set_point_values,
)

# Site names, shared by model and guide.
WEIGHTS = "weights"
BIAS = "bias"
WEIGHT_SCALE = "weight_scale"
LABEL = "y"
#: ArviZ dims of the weights and the bias.
FEATURE_DIM, CLASS_DIM = "feature", "class"

INFERENCE_METHODS = ("map", "variational")
# The MAP: Newton's method up to this many parameters (its Hessian is their square), else
# L-BFGS; most iterations of each, and the gradient (nats, largest entry) at which they stop.
_NEWTON_PARAMETERS = 2048
_NEWTON_ITERATIONS = 100
_LBFGS_ITERATIONS = 1000
_GRADIENT_TOLERANCE = 1e-9


class LogisticRegression(DiscriminativeModel):
    """Bayesian multinomial logistic regression p(y | x) = softmax(x W + b).

    Args:
        num_classes: C, the classes; labels are 0..C-1 (every row labelled).
        prior_scale: s, the prior standard deviation of every weight (the scale of the
            half-Cauchy prior on tau when ``hierarchical``). scikit-learn's ``C`` is s**2
            (2 s**2 with two classes).
        hierarchical: learn the weights' scale tau ~ HalfCauchy(s) (variational or NUTS;
            its MAP is degenerate at tau = 0, so ``inference="map"`` refuses it).
        inference: ``"map"`` (point estimates) or ``"variational"`` (mean-field Normal).
        n_features: D, if known in advance; otherwise set by :meth:`setup` from the data.
        intercept_prior_scale: prior standard deviation of the intercepts; None: a flat
            prior (unpenalized, as scikit-learn's intercept; MAP only, since the posterior
            is then improper).

    Shapes:
        x (N, D); y (N,) in 0..C-1.

    Example:
        >>> import pyrogen
        >>> from sklearn.datasets import load_iris
        >>> x, y = load_iris(return_X_y=True)
        >>> model = pyrogen.LogisticRegression(3, prior_scale=1.0)
        >>> result = pyrogen.fit(model, x, y, progress=False)
        >>> model.predict_proba(x).shape, model.log_prob(x, y).shape
        (torch.Size([150, 3]), torch.Size([150]))
    """

    family = "logistic_regression"
    choices = {"inference": INFERENCE_METHODS}

    def __init__(
        self,
        num_classes: int = 2,
        prior_scale: float = 1.0,
        hierarchical: bool = False,
        inference: str = "map",
        *,
        n_features: int | None = None,
        intercept_prior_scale: float | None = 10.0,
    ) -> None:
        super().__init__()
        self.num_classes = check_int("num_classes", num_classes, 2)
        self.prior_scale = check_number("prior_scale", prior_scale)
        if not isinstance(hierarchical, bool):
            raise TypeError(f"hierarchical: expected a bool, got {type(hierarchical).__name__}")
        self.inference = check_choice("inference", inference, INFERENCE_METHODS)
        if hierarchical and inference == "map":
            raise ValueError(
                "hierarchical: expected inference 'variational' (or NUTS on the model) with "
                "a learned prior scale, got inference 'map' (the joint mode is at scale 0)"
            )
        self.hierarchical = hierarchical
        if intercept_prior_scale is None and inference != "map":
            raise ValueError(
                f"intercept_prior_scale: expected a number for inference {inference!r} (a flat "
                "prior on the intercepts leaves the posterior improper: adding one constant "
                "to every class's intercept changes no probability), got None"
            )
        self.intercept_prior_scale = (
            None
            if intercept_prior_scale is None
            else check_number("intercept_prior_scale", intercept_prior_scale)
        )
        self.n_features: int | None = None
        if n_features is not None:
            self._build(check_int("n_features", n_features, 1))

    # --- structure ----------------------------------------------------------------------
    @property
    def is_setup(self) -> bool:
        return self.n_features is not None

    def _sites(self) -> list[GlobalSite]:
        sites = [
            GlobalSite(WEIGHTS, constraints.real, (self.n_features, self.num_classes)),
            GlobalSite(BIAS, constraints.real, (self.num_classes,)),
        ]
        if self.hierarchical:
            sites.insert(0, GlobalSite(WEIGHT_SCALE, constraints.positive, ()))
        return sites

    def _build(self, n_features: int) -> None:
        self.n_features = n_features
        add_guide_parameters(self, self._sites(), self.inference == "variational")
        self.register_buffer("zero", torch.zeros(()))  # the device and dtype of the priors

    def _require_setup(self) -> None:
        if self.n_features is None:
            raise RuntimeError(
                "LogisticRegression has no parameters yet: call pyrogen.fit(model, x, y) or "
                "setup(x, y) first (or pass n_features=...)"
            )

    @property
    def fit_defaults(self) -> dict[str, Any]:
        """MAP: :meth:`setup` has found the mode, the steps check it. Variational: SVI
        from the mode."""
        if self.inference == "map":
            return {"steps": 100, "lr": 0.001, "early_stopping": 1, "restore_best": True}
        return {"steps": 1500, "lr": 0.01, "early_stopping": 200}

    @property
    def loss(self) -> Trace_ELBO:
        """``Trace_ELBO()``: minus the log joint for MAP, the ELBO for the variational guide."""
        return Trace_ELBO()

    # --- Pyro programs ------------------------------------------------------------------
    def _prior(self, site: GlobalSite, scale: torch.Tensor | None = None) -> dist.Distribution:
        zero = self.zero
        if site.name == WEIGHT_SCALE:
            return dist.HalfCauchy(zero + self.prior_scale)
        if site.name == WEIGHTS:
            scale = zero + self.prior_scale if scale is None else scale
            return dist.Normal(zero, scale).expand(site.shape).to_event(2)
        if self.intercept_prior_scale is None:
            return FlatPrior(site.support, (), site.shape)
        return dist.Normal(zero, zero + self.intercept_prior_scale).expand(site.shape).to_event(1)

    def logits(self, x: torch.Tensor, values: dict[str, torch.Tensor] | None = None):
        """x W + b, shape (N, C), at ``values`` (default the point estimates)."""
        values = self.point_estimates() if values is None else values
        return x @ values[WEIGHTS] + values[BIAS]

    @pyro_method
    def model(
        self, x: torch.Tensor, y: torch.Tensor | None = None, num_data: int | None = None
    ) -> None:
        """p(tau) p(W | tau) p(b) prod_n Categorical(y_n | softmax(x_n W + b)).

        Args:
            x: data of shape (batch_size, D).
            y: labels (batch_size,); None: drawn from p(y | x) (predictive).
            num_data: rows in the full data set when ``x`` is a minibatch.
        """
        self._require_setup()
        values = {}
        for site in self._sites():
            scale = values.get(WEIGHT_SCALE)
            values[site.name] = pyro.sample(site.name, self._prior(site, scale))
        with data_plate(x, num_data):
            pyro.sample(LABEL, dist.Categorical(logits=self.logits(x, values)), obs=y)

    @pyro_method
    def guide(
        self, x: torch.Tensor, y: torch.Tensor | None = None, num_data: int | None = None
    ) -> None:
        """Delta (MAP) or mean-field Normal (variational) over the weights and bias."""
        self._require_setup()
        for site in self._sites():
            sample_guide_site(self, site, self.inference == "variational")

    # --- the fit: the mode by L-BFGS ----------------------------------------------------
    def setup(self, x: torch.Tensor, y: torch.Tensor | None = None, *, seed: int = 0) -> None:
        """Find the MAP (the mode of the posterior) by L-BFGS in float64 from zero weights,
        a convex problem with one optimum; a variational guide starts there. With
        ``hierarchical``, the mode given tau = s starts the guide.

        Args:
            x: data of shape (N, D).
            y: labels (N,) in 0..C-1 (required: the model is of p(y | x)).
            seed: unused (the fit is deterministic).
        """
        dtype = float_dtype_of(x) if self.n_features is None else self.zero.dtype
        x = as_tensor(x, name="x", ndim=2, dtype=dtype)
        if y is None:
            raise ValueError(
                "y: expected the labels (N,) of the rows, got None ("
                + self.discriminative_reason.strip()
                + " to learn from unlabelled rows)"
            )
        labels = as_labels(y, x.shape[0], self.num_classes)
        if self.n_features != x.shape[1]:
            self._build(x.shape[1])
            self.to(device=x.device, dtype=dtype)
        work, labels = x.to(self.device, torch.float64), labels.to(self.device)
        values = self._mode(work, labels)
        counts = labels.new_tensor(labels.shape[0]).to(work)
        if self.hierarchical:
            values[WEIGHT_SCALE] = work.new_tensor(self.prior_scale)
        variational = self.inference == "variational"
        spread = {name: counts.rsqrt() for name in values} if variational else None
        set_point_values(self, self._sites(), values, spread)

    def _mode(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """argmax of log p(y | x, W, b) + log p(W) + log p(b) (tau = s), float64: by
        Newton's method where the (D + 1) C parameters are few (a handful of steps of an
        exact Hessian), else by L-BFGS."""
        inputs = torch.cat([x, x.new_ones(x.shape[0], 1)], 1)  # the bias as a last feature
        precision = x.new_full(inputs.shape[1:], self.prior_scale**-2)
        if self.intercept_prior_scale is None:
            precision[-1] = 0.0
        else:
            precision[-1] = self.intercept_prior_scale**-2
        precision = precision[:, None].expand(-1, self.num_classes)
        objective = _penalized_loss(inputs, y, precision)
        if precision.numel() <= _NEWTON_PARAMETERS:
            theta = _newton(objective, inputs, precision)
        else:
            theta = _lbfgs(objective, precision)
        return {WEIGHTS: theta[:-1], BIAS: theta[-1]}

    # --- point estimates and scoring ----------------------------------------------------
    def point_estimates(self) -> dict[str, torch.Tensor]:
        """The MAP, or the variational posterior's median: ``weights`` (D, C), ``bias``
        (C,) (and ``weight_scale`` () when hierarchical)."""
        self._require_setup()
        return point_values(self, self._sites())

    def _prepare(self, x: Any) -> torch.Tensor:
        self._require_setup()
        x = as_tensor(x, name="x", ndim=2, dtype=self.zero.dtype)
        if x.shape[1] != self.n_features:
            raise ValueError(f"x: expected {self.n_features} columns, got {x.shape[1]}")
        return x.to(self.device)

    def log_prob(self, x: Any, y: Any = None) -> torch.Tensor:
        """Exact log p(y | x) per row (nats) at the point estimates.

        Args:
            x: data (N, D).
            y: labels (N,), required: the model has no p(x).

        Returns:
            Tensor of shape (N,).
        """
        if y is None:
            raise ValueError(
                "y: expected labels, got None ("
                + self.discriminative_reason
                + "to score; log_prob(x, y) "
                "is log p(y | x))"
            )
        x = self._prepare(x)
        labels = as_labels(y, x.shape[0], self.num_classes).to(x.device)
        log_probs = torch.log_softmax(self.logits(x), -1)
        return log_probs.gather(-1, labels[:, None])[:, 0]

    def predict_proba(self, x: Any) -> torch.Tensor:
        """p(y = k | x) at the point estimates, shape (N, C)."""
        return torch.softmax(self.logits(self._prepare(x)), -1)

    def predict(self, x: Any) -> torch.Tensor:
        """The most probable class of each row, shape (N,) (int64)."""
        return self.predict_proba(x).argmax(-1)

    def sample(self, n: int, y: torch.Tensor | None = None) -> torch.Tensor:
        """Not available: the model has no p(x) to draw from (see :meth:`sample_labels`).

        Raises:
            NotImplementedError: always, saying why.
        """
        raise NotImplementedError(
            self.discriminative_reason + "to draw x from; draw labels for given rows with "
            "sample_labels(x), or use NaiveBayes for a generative classifier"
        )

    @torch.no_grad()
    def sample_labels(self, x: Any) -> torch.Tensor:
        """Labels drawn from p(y | x) at the point estimates, shape (N,) (int64)."""
        return dist.Categorical(logits=self.logits(self._prepare(x))).sample()

    # --- reporting (the contract of GenerativeModel) ---------------------------------------
    def score_descriptions(self, num_samples: int, values: int) -> dict[str, str]:
        """The exact conditional log-likelihood, at the point estimates."""
        return {
            "log_likelihood": "exact log p(y | x) (the model is discriminative: it has no "
            "p(x)), at the point estimates"
        }

    @property
    def posterior_dims(self) -> dict[str, tuple[str, ...]]:
        """``feature``, ``class`` for the weights; ``class`` for the bias."""
        return {WEIGHTS: (FEATURE_DIM, CLASS_DIM), BIAS: (CLASS_DIM,)}

    def pointwise_log_likelihood(
        self, x: torch.Tensor, draws: dict[str, torch.Tensor], y: torch.Tensor | None = None
    ) -> torch.Tensor:
        """log p(y_n | x_n, W_s, b_s) of every row under S posterior draws (the labels are
        what the model observes), for ``arviz.loo`` and ``arviz.waic``.

        Args:
            x: data (N, D).
            draws: ``weights`` (S, D, C) and ``bias`` (S, C) (others ignored).
            y: labels (N,) in 0..C-1, required.

        Returns:
            Tensor of shape (S, N), nats.
        """
        if y is None:
            raise ValueError(
                "y: expected the labels (N,) of the rows, got None ("
                + self.discriminative_reason.strip()
                + ": its pointwise log-likelihood is of the labels)"
            )
        x = self._prepare(x)
        labels = as_labels(y, x.shape[0], self.num_classes).to(x.device)
        weights, bias = (draws[name].to(x) for name in (WEIGHTS, BIAS))
        logits = torch.einsum("nd,sdc->snc", x, weights) + bias[:, None, :]
        index = labels[None, :, None].expand(logits.shape[0], -1, 1)
        return torch.log_softmax(logits, -1).gather(-1, index)[..., 0]


def _penalized_loss(inputs: torch.Tensor, y: torch.Tensor, precision: torch.Tensor):
    """theta (D + 1, C) -> minus the log joint: the summed cross-entropy of softmax(inputs
    theta) plus theta**2 precision / 2 (the Normal priors' log density up to constants)."""

    def loss(theta: torch.Tensor) -> torch.Tensor:
        logits = inputs @ theta
        likelihood = torch.nn.functional.cross_entropy(logits, y, reduction="sum")
        return likelihood + (precision * theta.square()).sum() / 2

    return loss


def _newton(objective, inputs: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """The minimum of the convex ``objective`` by Newton steps with the exact Hessian of
    softmax regression, halved until the objective decreases."""
    theta = torch.zeros_like(precision)
    size = precision.numel()
    # A ridge of 1e-12 per row: a flat intercept leaves the softmax's shift invariant (a
    # null direction, along which the gradient is zero, so the step stays off it).
    ridge = 1e-12 * inputs.shape[0] * torch.eye(size, dtype=inputs.dtype, device=inputs.device)
    for _ in range(_NEWTON_ITERATIONS):
        theta.requires_grad_(True)
        value = objective(theta)
        (gradient,) = torch.autograd.grad(value, theta)
        theta = theta.detach()
        if float(gradient.abs().max()) < _GRADIENT_TOLERANCE:
            break
        probs = torch.softmax(inputs @ theta, -1)  # (N, C)
        weights = torch.diag_embed(probs) - probs[:, :, None] * probs[:, None, :]
        hessian = torch.einsum("nd,nck,ne->dcek", inputs, weights, inputs).reshape(size, size)
        hessian = hessian + torch.diag(precision.reshape(-1)) + ridge
        step = torch.linalg.solve(hessian, gradient.reshape(-1)).reshape(theta.shape)
        with torch.no_grad():
            for _ in range(40):
                if float(objective(theta - step)) <= float(value):
                    break
                step = step / 2
        theta = theta - step
    return theta.detach()


def _lbfgs(objective, precision: torch.Tensor) -> torch.Tensor:
    """The minimum of ``objective`` by L-BFGS with a strong-Wolfe line search."""
    theta = torch.zeros_like(precision, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [theta],
        max_iter=_LBFGS_ITERATIONS,
        tolerance_grad=_GRADIENT_TOLERANCE,
        tolerance_change=0,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        value = objective(theta)
        value.backward()
        return value

    optimizer.step(closure)
    return theta.detach()
