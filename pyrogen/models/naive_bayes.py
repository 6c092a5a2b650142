"""Naive Bayes: a generative classifier whose class is observed where known, enumerated
where not.

The model::

    weights ~ Dirichlet(a_0 * 1_C)
    theta_k ~ p(theta)                        for k in 1..C (per feature, see below)
    for n in 1..N:  y_n ~ Categorical(weights)         # enumerated, never sampled
                    label_n ~ Delta(y_n)               # observed where row n has a label
                    x_n ~ prod_j p(x_nj | theta_{y_n, j})

The class ``y`` is enumerated in every row and a labelled row adds the observation that
``y_n`` is its label (a Delta, masked where the label is -1), so ``TraceEnum_ELBO`` scores
log p(x_n, y_n) for labelled rows and log p(x_n) = log sum_k p(x_n, k) for the others: the
same model trains supervised, semi-supervised (the EM of Nigam et al. 2000) and
unsupervised (a latent-class model), in one plate, without splitting a batch by its labels.

Likelihoods and priors (alpha = ``smoothing``); each prior is chosen so that the MAP is
scikit-learn's estimate (tested):

===========  =======================  ===========================  ========================
likelihood   p(x_j | theta_kj)        prior                        MAP (= scikit-learn)
===========  =======================  ===========================  ========================
gaussian     Normal(mu_kj, sigma_kj)  flat on mu and sigma         ``GaussianNB``: the MLE
bernoulli    Bernoulli(p_kj)          Beta(1 + alpha, 1 + alpha)   ``BernoulliNB(alpha)``
categorical  Categorical(p_kj)        Dirichlet((1 + alpha) 1_L)   ``CategoricalNB(alpha)``
multinomial  Multinomial(p_k), D      Dirichlet((1 + alpha) 1_D)   ``MultinomialNB(alpha)``
poisson      Poisson(lambda_kj)       Gamma(1 + alpha, alpha)      (S + alpha) / (n + alpha)
===========  =======================  ===========================  ========================

The Gaussian variances are kept above ``var_smoothing`` times the largest column variance,
a bound (the likelihood reads each scale as at least the floor's square root, and the MAP is
the mode subject to it) that plays the part of scikit-learn's ``var_smoothing``. With
``class_concentration`` a_0 = 1 the class weights are the class frequencies, as
scikit-learn's ``class_prior_``.

:meth:`NaiveBayes.setup` fits the MAP by EM in closed form (one M-step when every row is
labelled); :func:`pyrogen.fit`'s steps then check it, or fit the variational posterior
from there.
"""

from __future__ import annotations

import math
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.infer import TraceEnum_ELBO
from pyro.nn import pyro_method
from pyro.poutine.util import is_validation_enabled

from pyrogen.checks import (
    as_labels,
    as_tensor,
    check_choice,
    check_int,
    check_number,
    float_dtype_of,
)
from pyrogen.models.base import GenerativeModel, data_plate
from pyrogen.models.global_sites import (
    FlatPrior,
    GlobalSite,
    add_guide_parameters,
    point_values,
    sample_guide_site,
    set_point_values,
)
from pyrogen.models.labels import InfersLabels

# Site names, shared by model and guide.
WEIGHTS = "weights"
LOCS = "locs"
SCALES = "scales"
PROBS = "probs"
RATES = "rates"
CLASS = "y"
LABEL = "label"
OBS = "obs"
#: ArviZ dims of the per-class, per-feature (and per-level) sites.
CLASS_DIM, FEATURE_DIM, LEVEL_DIM = "class", "feature", "level"

LIKELIHOODS = ("gaussian", "bernoulli", "categorical", "multinomial", "poisson")
INFERENCE_METHODS = ("map", "variational")
# The features' sites of each likelihood: name and support.
# The MAP's check by SVI: Adam's step size, and the gain per row (nats) below which a
# step, or a gradient's first-order promise of one, says the mode is reached.
_CHECK_LR = 0.005
_CHECK_GAIN = 1e-4

_FEATURE_SITES = {
    "gaussian": ((LOCS, constraints.real), (SCALES, constraints.positive)),
    "bernoulli": ((PROBS, constraints.unit_interval),),
    "categorical": ((PROBS, constraints.simplex),),
    "multinomial": ((PROBS, constraints.simplex),),
    "poisson": ((RATES, constraints.positive),),
}


class NaiveBayes(InfersLabels, GenerativeModel):
    """Naive Bayes: p(y) prod_j p(x_j | y), the class enumerated where it is not given.

    Args:
        num_classes: C, the classes; labels are 0..C-1 and -1 marks an unlabelled row.
        likelihood: of each feature given the class: ``"gaussian"`` (real values),
            ``"bernoulli"`` (0/1), ``"categorical"`` (integers 0..L-1), ``"multinomial"``
            (counts, a row a multinomial draw over the D features) or ``"poisson"`` (counts).
        inference: ``"map"`` (point estimates; the loss is minus the log joint) or
            ``"variational"`` (a mean-field posterior over every parameter).
        n_features: D, if known in advance; otherwise set by :meth:`setup` from the data.
        levels: L, the values of a categorical feature (shared by every feature); None: the
            data's largest value plus one, set by :meth:`setup`.
        smoothing: alpha, the additive smoothing of the discrete likelihoods (see the
            module's table of priors): scikit-learn's ``alpha``.
        var_smoothing: the Gaussian variances are at least this times the data's largest
            column variance (scikit-learn's ``var_smoothing``).
        class_concentration: a_0, the Dirichlet concentration of the class weights' prior.
        em_iterations: most EM iterations of :meth:`setup` where rows are unlabelled.
        tol: EM stops when the log joint per row gains less (nats).

    Shapes:
        x (N, D); y (N,) with -1 for unlabelled rows.

    Example:
        >>> import pyrogen
        >>> from sklearn.datasets import load_iris
        >>> x, y = load_iris(return_X_y=True)
        >>> nb = pyrogen.NaiveBayes(3)
        >>> result = pyrogen.fit(nb, x, y, progress=False)
        >>> nb.predict_proba(x).shape, nb.log_prob(x).shape
        (torch.Size([150, 3]), torch.Size([150]))
        >>> x_new, y_new = nb.sample(5, return_labels=True)
        >>> x_new.shape, y_new.shape
        (torch.Size([5, 4]), torch.Size([5]))
    """

    family = "naive_bayes"
    choices = {"likelihood": LIKELIHOODS, "inference": INFERENCE_METHODS}

    def __init__(
        self,
        num_classes: int = 2,
        likelihood: str = "gaussian",
        inference: str = "map",
        *,
        n_features: int | None = None,
        levels: int | None = None,
        smoothing: float = 1.0,
        var_smoothing: float = 1e-9,
        class_concentration: float = 1.0,
        em_iterations: int = 100,
        tol: float = 1e-6,
    ) -> None:
        super().__init__()
        self.num_classes = check_int("num_classes", num_classes, 2)
        self.likelihood = check_choice("likelihood", likelihood, LIKELIHOODS)
        self.inference = check_choice("inference", inference, INFERENCE_METHODS)
        self.em_iterations = check_int("em_iterations", em_iterations, 0)
        self.smoothing = check_number("smoothing", smoothing, allow_zero=True)
        self.var_smoothing = check_number("var_smoothing", var_smoothing, allow_zero=True)
        self.class_concentration = check_number("class_concentration", class_concentration)
        self.tol = check_number("tol", tol)
        if levels is not None:
            check_int("levels", levels, 2)
            if likelihood != "categorical":
                raise ValueError(
                    f"levels: expected None for likelihood {likelihood!r} (only categorical "
                    f"features have levels), got {levels!r}"
                )
        self.levels: int | None = levels
        self.n_features: int | None = None
        if n_features is not None:
            self._build(check_int("n_features", n_features, 1))

    # --- structure ----------------------------------------------------------------------
    @property
    def is_setup(self) -> bool:
        return self.n_features is not None

    def _sites(self) -> list[GlobalSite]:
        c, d = self.num_classes, self.n_features
        shape = (c, d, self.levels) if self.likelihood == "categorical" else (c, d)
        return [GlobalSite(WEIGHTS, constraints.simplex, (c,))] + [
            GlobalSite(name, support, shape) for name, support in _FEATURE_SITES[self.likelihood]
        ]

    def _build(self, n_features: int) -> None:
        if self.likelihood == "categorical" and self.levels is None:
            raise ValueError(
                "levels: expected the levels L of the categorical features with n_features, "
                "got None"
            )
        self.n_features = n_features
        add_guide_parameters(self, self._sites(), self.inference == "variational")
        # Set by setup: the Gaussian variances' floor, and a multinomial row's total count
        # (the count sample draws; log_prob reads each row's own).
        self.register_buffer("variance_floor", torch.zeros(()))
        self.register_buffer("total_count", torch.ones(()))

    def _require_setup(self) -> None:
        if self.n_features is None:
            raise RuntimeError(
                "NaiveBayes has no parameters yet: call pyrogen.fit(model, x, y) or setup(x, y) "
                "first (or pass n_features=...)"
            )

    @property
    def fit_defaults(self) -> dict[str, Any]:
        """MAP: :meth:`setup` has reached the mode by EM, so the steps only check it: the
        first step's loss and gradient (of the TraceEnum_ELBO, through the Pyro model and
        guide) stop the fit before any update when the gradient's L1 norm per row is at
        most ``min_delta / lr`` (no Adam step can gain ``min_delta``, 1e-4 nats per row, to
        first order); else SVI climbs until a step gains less than ``min_delta`` and the
        best state is kept. Variational: the spreads are fitted by SVI from the MAP."""
        if self.inference == "map":
            return {
                "steps": 100,
                "lr": _CHECK_LR,
                "early_stopping": 1,
                "min_delta": _CHECK_GAIN,
                "restore_best": True,
                "gradient_tolerance": _CHECK_GAIN / _CHECK_LR,
            }
        return {"steps": 1000, "lr": 0.02, "early_stopping": 100}

    @property
    def loss(self) -> TraceEnum_ELBO:
        """``TraceEnum_ELBO(max_plate_nesting=1)``: the class is enumerated in every row."""
        return TraceEnum_ELBO(max_plate_nesting=1)

    # --- Pyro programs ------------------------------------------------------------------
    def _prior(self, site: GlobalSite) -> dist.Distribution:
        like = self.variance_floor
        events = len(site.shape)
        if site.name == WEIGHTS:
            return dist.Dirichlet(like.new_full(site.shape, self.class_concentration))
        if self.likelihood == "gaussian":
            return FlatPrior(site.support, (), site.shape)
        concentration = like.new_full(site.shape, 1.0 + self.smoothing)
        if self.likelihood == "bernoulli":
            return dist.Beta(concentration, concentration).to_event(events)
        if self.likelihood == "poisson":
            rate = like.new_full(site.shape, self.smoothing)
            return dist.Gamma(concentration, rate).to_event(events)
        return dist.Dirichlet(concentration).to_event(events - 1)

    def feature_distribution(
        self, values: dict[str, torch.Tensor], y: torch.Tensor
    ) -> dist.Distribution:
        """p(x | y) of rows whose classes are ``y`` (any shape S, e.g. (N,) or the
        enumerated (C, 1)), at the site values ``values``.

        Returns:
            a distribution with batch shape S and event shape (D,).
        """
        if self.likelihood == "gaussian":
            # The floor is part of the likelihood, so that no step of SVI gains by going under
            # it (a class's constant feature would otherwise shrink its scale without end).
            scales = torch.maximum(values[SCALES], self.variance_floor.sqrt())
            return dist.Normal(values[LOCS][y], scales[y]).to_event(1)
        if self.likelihood == "bernoulli":
            return dist.Bernoulli(values[PROBS][y]).to_event(1)
        if self.likelihood == "poisson":
            return dist.Poisson(values[RATES][y]).to_event(1)
        if self.likelihood == "categorical":
            return dist.Categorical(values[PROBS][y]).to_event(1)
        # Its log_prob reads each row's own total count; this one is what sample draws.
        total = int(self.total_count)
        return dist.Multinomial(total, values[PROBS][y], validate_args=False)

    def _observed(self, x: torch.Tensor) -> torch.Tensor:
        return x.long() if self.likelihood == "categorical" else x

    @pyro_method
    def model(
        self, x: torch.Tensor, y: torch.Tensor | None = None, num_data: int | None = None
    ) -> None:
        """p(theta) prod_n p(y_n) [y_n = label_n] p(x_n | y_n), y_n enumerated.

        Args:
            x: data of shape (batch_size, D).
            y: labels (batch_size,), -1 where unknown; None: every row unlabelled.
            num_data: rows in the full data set when ``x`` is a minibatch.
        """
        self._require_setup()
        if is_validation_enabled():  # reads values: with Pyro's other checks only
            self.check_data(x)
        values = {site.name: pyro.sample(site.name, self._prior(site)) for site in self._sites()}
        with data_plate(x, num_data):
            classes = pyro.sample(
                CLASS, dist.Categorical(values[WEIGHTS]), infer={"enumerate": "parallel"}
            )
            if y is not None:
                labelled = y >= 0
                label = dist.Delta(classes.to(x.dtype)).mask(labelled)
                pyro.sample(LABEL, label, obs=y.clamp(min=0).to(x.dtype))
            pyro.sample(OBS, self.feature_distribution(values, classes), obs=self._observed(x))

    @pyro_method
    def guide(
        self, x: torch.Tensor, y: torch.Tensor | None = None, num_data: int | None = None
    ) -> None:
        """Delta (MAP) or mean-field (variational) posterior over the weights and the
        features' parameters."""
        self._require_setup()
        for site in self._sites():
            sample_guide_site(self, site, self.inference == "variational")

    # --- data ---------------------------------------------------------------------------
    def check_data(self, x: torch.Tensor) -> None:
        """Raise a ValueError naming the first row that the likelihood cannot score:
        non-binary values for Bernoulli, negative or non-integer counts for multinomial and
        Poisson, values outside 0..L-1 for categorical features."""
        if self.likelihood == "gaussian":
            return
        bad = (x < 0) | (x != x.round())
        expected = "non-negative integer counts"
        if self.likelihood == "bernoulli":
            bad, expected = (x != 0) & (x != 1), "binary values (0 or 1)"
        elif self.likelihood == "categorical" and self.levels is not None:
            bad = bad | (x >= self.levels)
            expected = f"integer levels 0..{self.levels - 1}"
        if bad.any():
            row, column = (int(i) for i in bad.nonzero()[0])
            raise ValueError(
                f"x: expected {expected} for likelihood {self.likelihood!r}, got "
                f"{x[row, column].item()!r} at row {row}, column {column}"
            )

    def _prepare(self, x: Any) -> torch.Tensor:
        self._require_setup()
        x = as_tensor(x, name="x", ndim=2, dtype=self.variance_floor.dtype)
        if x.shape[1] != self.n_features:
            raise ValueError(f"x: expected {self.n_features} columns, got {x.shape[1]}")
        x = x.to(self.device)
        self.check_data(x)
        return x

    # --- the fit: closed-form EM --------------------------------------------------------
    def setup(self, x: torch.Tensor, y: torch.Tensor | None = None, *, seed: int = 0) -> None:
        """Fit the MAP by EM with closed-form steps (Nigam et al. 2000): labelled rows count
        for their class, unlabelled rows for each class by their responsibility p(y | x);
        one M-step when every row is labelled. Without labelled rows (a latent-class model)
        EM starts from responsibilities drawn with ``seed``.

        Args:
            x: data of shape (N, D).
            y: labels (N,), -1 for unlabelled rows; None: no row is labelled.
            seed: seeds the starting responsibilities where no row is labelled.

        Raises:
            ValueError: data the likelihood cannot score, labels out of range, or a class
                with no row when every row is labelled.
        """
        dtype = float_dtype_of(x) if self.n_features is None else self.variance_floor.dtype
        x = as_tensor(x, name="x", ndim=2, dtype=dtype)
        labels = None if y is None else as_labels(y, x.shape[0], self.num_classes, unlabelled=True)
        if self.likelihood == "categorical" and self.levels is None:
            self.check_data(x)
            self.levels = max(int(x.max()) + 1, 2)
        if self.n_features != x.shape[1]:
            self._build(x.shape[1])
            self.to(device=x.device, dtype=dtype)
        x = x.to(device=self.device, dtype=self.variance_floor.dtype)
        self.check_data(x)
        with torch.no_grad():
            work = x.double()
            self.variance_floor.fill_(self.var_smoothing * float(work.var(0, False).max()))
            self.total_count.fill_(max(round(float(work.sum(1).mean())), 1))
        known = _known_responsibilities(labels, x.shape[0], self.num_classes, work)
        values = self._expectation_maximization(work, known, seed)
        self._assign(values, values[WEIGHTS] * x.shape[0])

    def _expectation_maximization(
        self, x: torch.Tensor, known: tuple[torch.Tensor, torch.Tensor], seed: int
    ) -> dict[str, torch.Tensor]:
        """The MAP of float64 ``x`` (N, D) given ``known`` = (one-hot labels (N, C), which
        rows are labelled (N,)), by EM."""
        onehot, labelled = known
        if bool(labelled.all()):
            counts = onehot.sum(0)
            if bool((counts == 0).any()):
                missing = int((counts == 0).nonzero()[0])
                raise ValueError(
                    f"y: expected at least one row of every class 0..{self.num_classes - 1}, "
                    f"got none of class {missing}"
                )
            return self._maximize(x, onehot)
        if bool(labelled.any()):
            responsibilities = self._expectation(x, self._maximize(x, onehot), known)[0]
        else:
            generator = torch.Generator(device=x.device).manual_seed(seed)
            draws = torch.rand(onehot.shape, generator=generator, device=x.device, dtype=x.dtype)
            responsibilities = draws / draws.sum(1, keepdim=True)
        best = -math.inf
        values = self._maximize(x, responsibilities)
        for _ in range(self.em_iterations):
            responsibilities, log_joint = self._expectation(x, values, known)
            if float(log_joint) / x.shape[0] - best < self.tol:
                break
            best = float(log_joint) / x.shape[0]
            values = self._maximize(x, responsibilities)
        return values

    def _expectation(
        self,
        x: torch.Tensor,
        values: dict[str, torch.Tensor],
        known: tuple[torch.Tensor, torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The E-step: responsibilities (N, C), one-hot where labelled, p(y | x) elsewhere;
        and the log joint log p(theta) + sum over rows of log p(x, y) (labelled) or log p(x)
        (unlabelled), of the values it was computed at."""
        onehot, labelled = known
        joint = self.joint_log_density(x, values)
        given = torch.where(onehot > 0, joint, torch.zeros_like(joint)).sum(-1)
        rows = torch.where(labelled, given, joint.logsumexp(-1))
        prior = sum(self._prior(site).log_prob(values[site.name]).sum() for site in self._sites())
        responsibilities = torch.where(labelled[:, None], onehot, torch.softmax(joint, -1))
        return responsibilities, rows.sum() + prior

    def _maximize(self, x: torch.Tensor, responsibilities: torch.Tensor) -> dict[str, torch.Tensor]:
        """The M-step: the sites' MAP given soft class counts ``responsibilities`` (N, C)."""
        counts = responsibilities.sum(0)  # (C,)
        weights = counts + self.class_concentration - 1
        values = {WEIGHTS: (weights.clamp(min=0) + 1e-12) / (weights.clamp(min=0) + 1e-12).sum()}
        alpha = self.smoothing
        if self.likelihood == "categorical":
            levels = torch.arange(self.levels, device=x.device, dtype=x.dtype)
            indicators = (x[..., None] == levels).to(x.dtype)  # (N, D, L)
            totals = torch.einsum("nc,ndl->cdl", responsibilities, indicators) + alpha
            values[PROBS] = totals / totals.sum(-1, keepdim=True)
            return values
        sums = responsibilities.T @ x  # (C, D)
        per_class = counts[:, None].clamp(min=1e-12)
        if self.likelihood == "gaussian":
            locs = sums / per_class
            squares = responsibilities.T @ x.square() / per_class - locs.square()
            values[LOCS] = locs
            values[SCALES] = squares.clamp(min=float(self.variance_floor)).clamp(min=1e-300).sqrt()
        elif self.likelihood == "bernoulli":
            values[PROBS] = (sums + alpha) / (counts[:, None] + 2 * alpha)
        elif self.likelihood == "multinomial":
            values[PROBS] = (sums + alpha) / (sums + alpha).sum(-1, keepdim=True)
        else:
            values[RATES] = (sums + alpha) / (counts[:, None] + alpha)
        return _interior(values, self.likelihood)

    def _assign(self, values: dict[str, torch.Tensor], counts: torch.Tensor) -> None:
        """Write the fit into the guide; a variational guide's spreads start near a Laplace
        approximation's, 1 / sqrt(rows that inform each parameter); ``counts`` (C,) are the
        rows of each class."""
        spreads = None
        if self.inference == "variational":
            informed = counts.clamp(min=1).rsqrt()
            spreads = {
                site.name: informed.reshape(-1, *([1] * (len(site.shape) - 1)))
                for site in self._sites()[1:]
            }
            spreads[WEIGHTS] = counts.sum().clamp(min=1).rsqrt()
        set_point_values(self, self._sites(), values, spreads)

    # --- point estimates and scoring ----------------------------------------------------
    def point_estimates(self) -> dict[str, torch.Tensor]:
        """Values of the sites: the MAP, or the variational posterior's median.

        Returns:
            ``{"weights": (C,), ...}``: ``locs``, ``scales`` (C, D) (gaussian), ``probs``
            (C, D) (bernoulli, multinomial) or (C, D, L) (categorical), ``rates`` (C, D).
        """
        self._require_setup()
        return point_values(self, self._sites())

    def joint_log_density(
        self, x: torch.Tensor, values: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """log p(x_n, y = k) of every row and class, shape (N, C), in nats.

        Args:
            x: data (N, D), checked.
            values: site values (default the point estimates).
        """
        values = self.point_estimates() if values is None else values
        classes = torch.arange(self.num_classes, device=x.device)[:, None]  # (C, 1)
        with pyro.validation_enabled(False):
            table = self.feature_distribution(values, classes).log_prob(self._observed(x))
        return table.T + values[WEIGHTS].log()

    def log_prob(self, x: Any, y: Any = None) -> torch.Tensor:
        """Exact log p(x) = log sum_k p(y = k) p(x | y = k) per row, in nats, at the point
        estimates; with classes ``y``, the class-conditional log p(x | y) (log p(x) where a
        row's class is -1). For multinomial features, of the counts given the row's total.

        Args:
            x: data (N, D).
            y: classes (N,), -1 where unknown; None: every row's class summed out.

        Returns:
            Tensor of shape (N,).
        """
        x = self._prepare(x)
        joint = self.joint_log_density(x)
        marginal = joint.logsumexp(-1)
        if y is None:
            return marginal
        y = as_labels(y, x.shape[0], self.num_classes, unlabelled=True).to(x.device)
        log_weights = self.point_estimates()[WEIGHTS].log()
        given = (joint - log_weights).gather(-1, y.clamp(min=0)[:, None])[:, 0]
        return torch.where(y >= 0, given, marginal)

    def predict_proba(self, x: Any) -> torch.Tensor:
        """p(y = k | x) for every row, by enumerating the class: shape (N, C)."""
        x = self._prepare(x)
        return torch.softmax(self.joint_log_density(x), -1)

    def predict(self, x: Any) -> torch.Tensor:
        """The most probable class of each row, shape (N,) (int64)."""
        return self.predict_proba(x).argmax(-1)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        y: Any = None,
        *,
        params: dict[str, torch.Tensor] | None = None,
        return_labels: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Draw ``n`` rows from p(x, y), or from p(x | y) given the classes ``y``.

        Args:
            n: rows to draw.
            y: classes (n,) to draw x for; None: drawn from the class weights.
            params: one posterior draw (site name -> value); default the point estimates.
            return_labels: also return the classes.

        Returns:
            x (n, D) in the parameters' dtype; with ``return_labels``, ``(x, y)``, y (n,).
        """
        check_int("n", n, 1)
        values = self.point_estimates() if params is None else params
        if y is None:
            classes = dist.Categorical(values[WEIGHTS]).sample((n,))
        else:
            classes = as_labels(y, n, self.num_classes).to(values[WEIGHTS].device)
        x = self.feature_distribution(values, classes).sample().to(values[WEIGHTS].dtype)
        return (x, classes) if return_labels else x

    # --- reporting (the contract of GenerativeModel) ---------------------------------------
    @property
    def exact_likelihood(self) -> bool:
        """True: ``log_prob`` sums the class out exactly (at the point estimates)."""
        return True

    @property
    def report_plots(self) -> tuple[str, ...]:
        """The loss, and draws by class."""
        return ("elbo", "class_samples")

    def score_descriptions(self, num_samples: int, values: int) -> dict[str, str]:
        """The exact log-likelihood, class summed out, at the point estimates."""
        return {
            "log_likelihood": f"exact {self.likelihood_target}, the class summed out, at the "
            "point estimates"
        }

    def fit_statistics(
        self, x: torch.Tensor, log_likelihood: torch.Tensor | None = None
    ) -> dict[str, Any]:
        """``class_weights`` (C,)."""
        return {"class_weights": self.point_estimates()[WEIGHTS].cpu().tolist()}

    # --- posteriors over global sites -----------------------------------------------------
    @property
    def posterior_dims(self) -> dict[str, tuple[str, ...]]:
        """``class`` for the weights; ``class``, ``feature`` (and ``level``) for the rest."""
        self._require_setup()
        dims = {WEIGHTS: (CLASS_DIM,)}
        for site in self._sites()[1:]:
            dims[site.name] = (CLASS_DIM, FEATURE_DIM, LEVEL_DIM)[: len(site.shape)]
        return dims

    def pointwise_log_likelihood(
        self, x: torch.Tensor, draws: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """log p(x_n | theta_s), the class summed out, for S posterior draws.

        Args:
            x: data (N, D).
            draws: site name -> tensor (S, ``*site_shape``).

        Returns:
            Tensor of shape (S, N).
        """
        x = self._prepare(x)
        count = next(iter(draws.values())).shape[0]
        return torch.stack(
            [
                self.joint_log_density(
                    x, {name: value[s].to(x) for name, value in draws.items()}
                ).logsumexp(-1)
                for s in range(count)
            ]
        )


def _known_responsibilities(
    labels: torch.Tensor | None, rows: int, num_classes: int, like: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(one-hot labels (N, C), zero rows where unlabelled; which rows are labelled (N,))."""
    if labels is None:
        labels = torch.full((rows,), -1, dtype=torch.long)
    labels = labels.to(like.device)
    labelled = labels >= 0
    onehot = (labels[:, None] == torch.arange(num_classes, device=like.device)).to(like.dtype)
    return onehot, labelled


def _interior(values: dict[str, torch.Tensor], likelihood: str) -> dict[str, torch.Tensor]:
    """Probabilities and rates kept off the boundary (smoothing 0 on a feature a class never
    shows), so that their unconstrained values stay finite."""
    tiny = 1e-12
    if likelihood == "bernoulli":
        values[PROBS] = values[PROBS].clamp(tiny, 1 - tiny)
    elif likelihood == "multinomial":
        probs = values[PROBS].clamp(min=tiny)
        values[PROBS] = probs / probs.sum(-1, keepdim=True)
    elif likelihood == "poisson":
        values[RATES] = values[RATES].clamp(min=tiny)
    return values
