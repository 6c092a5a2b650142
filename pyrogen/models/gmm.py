"""Gaussian mixtures with the component assignment enumerated out.

The model::

    weights ~ Dirichlet(alpha * 1_K)
    for k in 1..K:  locs_k ~ Normal(m, s_loc * sd),  scales_k ~ LogNormal(log sd, s_scale),
                    corr_k ~ LKJCholesky(D, eta)                      (full covariance only)
    for n in 1..N:  z_n ~ Categorical(weights)       # enumerated, never sampled
                    x_n ~ Normal(locs_{z_n}, diag(scales_{z_n}) corr_{z_n} ...)

``m`` and ``sd`` are the data's mean and standard deviation per feature (an empirical-Bayes
choice that makes the priors weak on any scale of data). Marginalising ``z`` by enumeration
makes ``TraceEnum_ELBO`` the exact log-likelihood plus log-prior for MAP, and a tight ELBO
for the variational guide; ``infer_discrete`` recovers the assignments afterwards.

Guides: ``inference="map"`` puts a Delta on every global site; ``inference="variational"``
is mean-field, a Normal in each site's unconstrained space pushed through ``biject_to``
(stick-breaking for weights, exp for scales, the LKJ Cholesky bijection for correlations).
:func:`pyrogen.infer.mixture_nuts` runs collapsed NUTS on the same model, and
:func:`pyrogen.select_n_components` picks K by BIC; both sit above the models, in
:mod:`pyrogen.infer.mixtures`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.infer import TraceEnum_ELBO, infer_discrete
from pyro.nn import PyroParam, pyro_method
from pyro.poutine.util import is_validation_enabled
from torch.distributions import biject_to

from pyrogen.checks import as_tensor, check_choice, check_int, float_dtype_of, physical_memory
from pyrogen.models.base import GenerativeModel, data_plate
from pyrogen.models.mixture_em import (
    COVARIANCE_TYPES,
    GaussianComponents,
    MixtureParameters,
    batched_starts,
    component_log_density,
    expectation_maximization,
    kmeans_plusplus,
    mixture_log_prob,
)
from pyrogen.models.mixture_map import REG_COVAR, MapMStep

# Site names, shared by model and guide.
WEIGHTS = "weights"
LOCS = "locs"
SCALES = "scales"
CORRELATION = "corr_cholesky"
ASSIGNMENT = "assignment"
OBS = "obs"
COMPONENT_PLATE = "components"
#: ArviZ dim of per-component posterior quantities, and the name of the derived covariances.
COMPONENT_DIM = "component"
COVARIANCE = "covariance"

INFERENCE_METHODS = ("map", "variational")
#: Rows scored at once in a training step (pyrogen.fit's ``micro_batch_size``).
MICRO_BATCH_ROWS = 2**17
# Starts: Lloyd iterations of k-means and EM iterations (at most) before they are ranked;
# the best start's likelihood EM then runs to a tolerance of tol * _FINAL_TOL.
_KMEANS_ITERATIONS = 10
# Rows (a random subsample of larger data) that the starts see: k-means++, k-means and the
# EM iterations that rank them.
_SEED_ROWS = 2**14
_START_ITERATIONS = 5
_FINAL_TOL = 0.1
# Adam's step size when SVI checks (and, where needed, polishes) the MAP-EM mode.
_CHECK_LR = 0.005
# The fields of MixtureParameters that the starts are stacked by, to be scored at once.
_STACKED = ("weights", "locs", "covariances")


@dataclass(frozen=True)
class _GlobalSite:
    """A global latent site: its support, constrained shape and whether it is per component."""

    name: str
    support: constraints.Constraint
    shape: tuple[int, ...]
    event_dim: int
    per_component: bool


class GaussianMixture(GenerativeModel):
    """A Gaussian mixture whose assignments are enumerated; MAP by MAP-EM, or SVI.

    Args:
        n_components: number of components K (>= 1).
        covariance: ``"full"`` (K, D, D), ``"diag"`` (K, D), ``"spherical"`` (K,) or
            ``"tied"`` (one (D, D) shared by all components).
        inference: ``"map"`` (point estimates; the ELBO is the log joint) or
            ``"variational"`` (mean-field posterior over weights, locs and covariances).
        n_features: D, if known in advance; otherwise set by :meth:`setup` from the data.
        n_init: k-means++ starts in :meth:`setup`, run side by side through k-means and a
            few likelihood EM iterations; the one with the highest log joint (the MAP
            objective) is kept and run to convergence, which on overlapping clusters avoids
            most poor local optima of a single start.
        em_iterations: most EM iterations per phase (0: no EM, SVI climbs from k-means).
        tol: EM stops when the mean log joint per row improves by less (nats).
        weight_concentration: Dirichlet concentration alpha of the weights prior.
        loc_prior_scale: prior sd of the component means, in data standard deviations.
        scale_prior_width: sd of the log-normal prior on the component scales.
        correlation_concentration: LKJ concentration eta (1 is uniform on correlations).

    Example:
        >>> import pyrogen
        >>> x = pyrogen.data.old_faithful()
        >>> gmm = pyrogen.GaussianMixture(2)
        >>> result = pyrogen.fit(gmm, x, progress=False)
        >>> gmm.log_prob(x).shape
        torch.Size([272])
    """

    family = "gmm"
    choices = {"covariance": COVARIANCE_TYPES, "inference": INFERENCE_METHODS}

    def __init__(
        self,
        n_components: int = 2,
        covariance: str = "full",
        inference: str = "map",
        *,
        n_features: int | None = None,
        n_init: int = 4,
        em_iterations: int = 100,
        tol: float = 1e-3,
        weight_concentration: float = 1.0,
        loc_prior_scale: float = 10.0,
        scale_prior_width: float = 2.0,
        correlation_concentration: float = 1.0,
    ) -> None:
        super().__init__()
        check_int("n_components", n_components, 1)
        check_choice("covariance", covariance, COVARIANCE_TYPES)
        check_choice("inference", inference, INFERENCE_METHODS)
        if n_features is not None:
            check_int("n_features", n_features, 1)
        check_int("n_init", n_init, 1)
        check_int("em_iterations", em_iterations, 0)
        for name, value in (
            ("tol", tol),
            ("weight_concentration", weight_concentration),
            ("loc_prior_scale", loc_prior_scale),
            ("scale_prior_width", scale_prior_width),
            ("correlation_concentration", correlation_concentration),
        ):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name}: expected a positive finite number, got {value!r}")
        self.n_components = n_components
        self.covariance = covariance
        self.inference = inference
        self.n_init = n_init
        self.em_iterations = em_iterations
        self.tol = float(tol)
        self.weight_concentration = float(weight_concentration)
        self.loc_prior_scale = float(loc_prior_scale)
        self.scale_prior_width = float(scale_prior_width)
        self.correlation_concentration = float(correlation_concentration)
        self.n_features: int | None = None
        if n_features is not None:
            self._build(n_features)

    # --- structure ----------------------------------------------------------------------
    @property
    def config(self) -> dict[str, Any]:
        return {
            "n_components": self.n_components,
            "covariance": self.covariance,
            "inference": self.inference,
            "n_features": self.n_features,
            "n_init": self.n_init,
            "em_iterations": self.em_iterations,
            "tol": self.tol,
            "weight_concentration": self.weight_concentration,
            "loc_prior_scale": self.loc_prior_scale,
            "scale_prior_width": self.scale_prior_width,
            "correlation_concentration": self.correlation_concentration,
        }

    @property
    def fit_defaults(self) -> dict[str, Any]:
        """MAP with EM (the default): :meth:`setup` has climbed the model's log joint to a
        mode by MAP-EM, so the SVI steps only check it. The first step's loss and gradient
        (of the TraceEnum_ELBO, through the Pyro model and guide) test the mode: when the
        gradient's L1 norm per row is at most ``tol / lr`` (``gradient_tolerance``), no
        Adam step can gain ``tol`` to first order, and the fit stops there with the
        parameters untouched (one step). Else SVI climbs on, stopping at the first step
        that gains less than ``tol``, and the best state is kept (the result's
        ``best_step`` 0 says SVI found nothing better). MAP without EM
        (``em_iterations=0``): SVI climbs from the k-means start itself, at a larger step
        with a patience that lets it converge. Variational needs longer to fit its spreads,
        with a patience that tolerates sampled ELBOs. Full-batch steps score the rows in
        pieces of ``MICRO_BATCH_ROWS`` (exactly the same gradient), so that the (K, N, D)
        intermediates of the gradient stay bounded at any N."""
        if self.inference == "map" and self.em_iterations > 0:
            return {
                "steps": 200,
                "lr": _CHECK_LR,
                "early_stopping": 1,
                "min_delta": self.tol,
                "restore_best": True,
                "gradient_tolerance": self.tol / _CHECK_LR,
                "micro_batch_size": MICRO_BATCH_ROWS,
            }
        if self.inference == "map":
            return {
                "steps": 2000,
                "lr": 0.05,
                "early_stopping": 50,
                "min_delta": 1e-6,
                "restore_best": True,
                "micro_batch_size": MICRO_BATCH_ROWS,
            }
        return {
            "steps": 2000,
            "lr": 0.01,
            "early_stopping": 200,
            "micro_batch_size": MICRO_BATCH_ROWS,
        }

    @property
    def loss(self) -> TraceEnum_ELBO:
        """``TraceEnum_ELBO(max_plate_nesting=1)``: the assignment site is enumerated."""
        return TraceEnum_ELBO(max_plate_nesting=1)

    @property
    def exact_likelihood(self) -> bool:
        """True: ``log_prob`` sums the assignment out exactly (at the point estimates)."""
        return True

    @property
    def is_setup(self) -> bool:
        return self.n_features is not None

    def _global_sites(self) -> list[_GlobalSite]:
        k, d = self.n_components, self.n_features
        tied = self.covariance == "tied"
        scale_shape = {"full": (k, d), "diag": (k, d), "spherical": (k, 1), "tied": (d,)}
        sites = [
            _GlobalSite(WEIGHTS, constraints.simplex, (k,), 1, False),
            _GlobalSite(LOCS, constraints.real, (k, d), 1, True),
            _GlobalSite(SCALES, constraints.positive, scale_shape[self.covariance], 1, not tied),
        ]
        if self.covariance in ("full", "tied") and d > 1:
            shape = (d, d) if tied else (k, d, d)
            sites.append(_GlobalSite(CORRELATION, constraints.corr_cholesky, shape, 2, not tied))
        return sites

    def _build(self, n_features: int) -> None:
        """Create parameters and prior buffers for D = ``n_features`` (values set later)."""
        _check_size(self.n_components, n_features, self.covariance)
        self.n_features = n_features
        self.register_buffer("data_loc", torch.zeros(n_features))
        # NaN until setup (or set_parameters) sets it: the priors are scaled to the data, and
        # a model run without that scale must fail loudly, not use a unit-scale prior.
        self.register_buffer("data_scale", torch.full((n_features,), math.nan))
        for site in self._global_sites():
            neutral = _neutral_value(site)
            unconstrained = biject_to(site.support).inv(neutral)
            setattr(self, f"{site.name}_loc", torch.nn.Parameter(unconstrained))
            if self.inference == "variational":
                spread = torch.full_like(unconstrained, 0.1)
                setattr(self, f"{site.name}_scale", PyroParam(spread, constraints.positive))

    def _require_setup(self) -> None:
        if self.n_features is None:
            raise RuntimeError(
                "GaussianMixture has no parameters yet: call pyrogen.fit(model, x) or setup(x) "
                "first "
                "(or pass n_features=...)"
            )

    @property
    def has_prior_scale(self) -> bool:
        """Whether the priors' data mean and scale are set (by :meth:`setup`, a fit,
        :meth:`set_parameters` or a loaded state)."""
        return self.n_features is not None and bool(torch.isfinite(self.data_scale).all())

    def _require_prior_scale(self) -> None:
        if not self.has_prior_scale:
            raise RuntimeError(
                "GaussianMixture: the priors are scaled to the data, whose mean and standard "
                "deviation are not set yet: call setup(x) (or pyrogen.fit(model, x)) before "
                "running model() "
                "or guide() with Pyro"
            )

    # --- Pyro programs ------------------------------------------------------------------
    def _prior(
        self,
        site: _GlobalSite,
        data_loc: torch.Tensor | None = None,
        data_scale: torch.Tensor | None = None,
    ) -> dist.Distribution:
        """The prior of a global site; ``data_loc``/``data_scale`` (D,) replace the buffers
        (the fit evaluates it in float64 on data centred by ``data_loc``)."""
        data_loc = self.data_loc if data_loc is None else data_loc
        data_scale = self.data_scale if data_scale is None else data_scale
        if site.name == WEIGHTS:
            concentration = data_loc.new_full((self.n_components,), self.weight_concentration)
            return dist.Dirichlet(concentration)
        if site.name == LOCS:
            return dist.Normal(data_loc, self.loc_prior_scale * data_scale).to_event(1)
        if site.name == SCALES:
            log_scale = data_scale.log()
            if self.covariance == "spherical":
                log_scale = log_scale.mean().reshape(1)
            return dist.LogNormal(log_scale, self.scale_prior_width).to_event(1)
        # A tensor on the model's device: from a float, LKJCholesky builds CPU tensors that
        # its log_prob then multiplies with the (CUDA) value.
        concentration = data_loc.new_tensor(self.correlation_concentration)
        return dist.LKJCholesky(self.n_features, concentration)

    def _sample_globals(self, sample_site) -> dict[str, torch.Tensor]:
        values = {}
        sites = self._global_sites()
        with pyro.plate(COMPONENT_PLATE, self.n_components, dim=-1):
            for site in sites:
                if site.per_component:
                    values[site.name] = sample_site(site)
        for site in sites:
            if not site.per_component:
                values[site.name] = sample_site(site)
        return values

    @pyro_method
    def model(
        self, x: torch.Tensor, y: torch.Tensor | None = None, num_data: int | None = None
    ) -> None:
        """p(weights, locs, scales, corr) prod_n sum_k p(z_n = k) N(x_n | component k).

        Args:
            x: data of shape (batch_size, D).
            y: unused (mixtures are unsupervised); accepted for the shared contract.
            num_data: rows in the full data set when ``x`` is a minibatch.
        """
        self._require_setup()
        if is_validation_enabled():  # reads a value back: with Pyro's other checks only
            self._require_prior_scale()
        values = self._sample_globals(lambda site: pyro.sample(site.name, self._prior(site)))
        with data_plate(x, num_data):
            assignment = pyro.sample(
                ASSIGNMENT, dist.Categorical(values[WEIGHTS]), infer={"enumerate": "parallel"}
            )
            pyro.sample(OBS, self._component_distribution(values, assignment), obs=x)

    @pyro_method
    def guide(
        self, x: torch.Tensor, y: torch.Tensor | None = None, num_data: int | None = None
    ) -> None:
        """Delta (MAP) or mean-field (variational) posterior over the global sites."""
        self._require_setup()
        self._sample_globals(self._guide_site)

    def _guide_site(self, site: _GlobalSite) -> torch.Tensor:
        transform = biject_to(site.support)
        loc = getattr(self, f"{site.name}_loc")
        if self.inference == "map":
            return pyro.sample(site.name, dist.Delta(transform(loc), event_dim=site.event_dim))
        base = dist.Normal(loc, getattr(self, f"{site.name}_scale"))
        batch_dims = 1 if site.per_component else 0
        base = base.to_event(loc.dim() - batch_dims)
        return pyro.sample(site.name, dist.TransformedDistribution(base, transform))

    def _scale_tril(self, values: dict[str, torch.Tensor]) -> torch.Tensor:
        scales = values[SCALES]
        if CORRELATION in values:
            return scales.unsqueeze(-1) * values[CORRELATION]
        return torch.diag_embed(scales)

    def _component_distribution(
        self, values: dict[str, torch.Tensor], assignment: torch.Tensor
    ) -> GaussianComponents:
        return GaussianComponents(self.mixture_parameters(values), assignment)

    # --- point estimates ----------------------------------------------------------------
    def point_estimates(self) -> dict[str, torch.Tensor]:
        """Values of the global sites: the MAP point, or the variational posterior median.

        Returns:
            ``{"weights": (K,), "locs": (K, D), "scales": ..., "corr_cholesky": ...}``.
        """
        self._require_setup()
        return {
            site.name: biject_to(site.support)(getattr(self, f"{site.name}_loc")).detach()
            for site in self._global_sites()
        }

    def mixture_parameters(
        self, values: dict[str, torch.Tensor] | None = None
    ) -> MixtureParameters:
        """Weights, locs and covariances (shapes as for the covariance type) of a draw."""
        values = self.point_estimates() if values is None else values
        tril = None
        if self.covariance in ("full", "tied"):
            tril = self._scale_tril(values)
            covariances = tril @ tril.transpose(-1, -2)
        else:
            covariances = values[SCALES].square()
            if self.covariance == "spherical":
                covariances = covariances.squeeze(-1)
        return MixtureParameters(
            values[WEIGHTS], values[LOCS], covariances, self.covariance, scale_tril=tril
        )

    @property
    def weights_(self) -> torch.Tensor:
        """Mixing weights, shape (K,)."""
        return self.mixture_parameters().weights

    @property
    def means_(self) -> torch.Tensor:
        """Component means, shape (K, D)."""
        return self.mixture_parameters().locs

    @property
    def covariances_(self) -> torch.Tensor:
        """Covariances: (K, D, D) full, (D, D) tied, (K, D) diag, (K,) spherical."""
        return self.mixture_parameters().covariances

    def set_parameters(
        self, weights: torch.Tensor, means: torch.Tensor, covariances: torch.Tensor
    ) -> GaussianMixture:
        """Set the point estimates from mixture parameters (e.g. another library's fit).

        Args:
            weights: (K,) on the simplex.
            means: (K, D).
            covariances: as :attr:`covariances_` for this covariance type.

        Returns:
            ``self``.
        """
        means = as_tensor(means, name="means", ndim=2, dtype=torch.float64)
        if means.shape[0] != self.n_components:
            raise ValueError(f"means: expected {self.n_components} rows, got {means.shape[0]}")
        if self.n_features is None:
            self._build(means.shape[1])
        dtype, device = self.data_loc.dtype, self.data_loc.device
        params = MixtureParameters(
            torch.as_tensor(weights, dtype=dtype, device=device),
            means.to(dtype=dtype, device=device),
            torch.as_tensor(covariances, dtype=dtype, device=device),
            self.covariance,
        )
        if not self.has_prior_scale:
            # The moments of the mixture stand in for the data's, which were not seen.
            mean = params.weights @ params.locs
            second = params.weights @ (_variances(params) + params.locs.square())
            with torch.no_grad():
                self.data_loc.copy_(mean)
                self.data_scale.copy_((second - mean.square()).clamp(min=0).sqrt())
        self._assign(params, counts=None)
        return self

    def _site_values(self, params: MixtureParameters) -> dict[str, torch.Tensor]:
        """The global sites' values (see :meth:`point_estimates`) of a mixture."""
        values = {WEIGHTS: params.weights, LOCS: params.locs}
        if self.covariance in ("full", "tied"):
            tril = torch.linalg.cholesky(params.covariances)
            # diag(scales) @ corr_cholesky = tril, with unit-norm rows of corr_cholesky
            scales = params.covariances.diagonal(dim1=-2, dim2=-1).sqrt()
            values[SCALES] = scales
            if self.n_features > 1:
                values[CORRELATION] = tril / scales.unsqueeze(-1)
        else:
            scales = params.covariances.sqrt()
            values[SCALES] = scales.unsqueeze(-1) if self.covariance == "spherical" else scales
        return values

    def _assign(self, params: MixtureParameters, counts: torch.Tensor | None) -> None:
        """Write mixture parameters into the guide (and set its spreads when variational)."""
        values = self._site_values(params)
        total = None if counts is None else counts.sum()
        with torch.no_grad():
            for site in self._global_sites():
                value = values[site.name].to(self.data_loc)
                loc = getattr(self, f"{site.name}_loc")
                loc.copy_(biject_to(site.support).inv(value).reshape(loc.shape))
                if self.inference == "variational" and counts is not None:
                    # Start each posterior about as wide as a Laplace approximation would be:
                    # 1/sqrt(rows that inform it), times the data scale for the means.
                    scale = getattr(self, f"{site.name}_scale_unconstrained")
                    informed = counts if site.per_component else total
                    spread = informed.clamp(min=1).rsqrt().to(scale)
                    spread = (
                        spread.reshape(-1, *([1] * (scale.dim() - 1)))
                        if site.per_component
                        else spread
                    )
                    if site.name == LOCS:
                        spread = spread * self.data_scale
                    scale.copy_(spread.expand_as(scale).log())

    # --- the fit: MAP-EM ----------------------------------------------------------------
    def _log_prior(self, data_scale: torch.Tensor) -> Callable[..., torch.Tensor]:
        """log p(weights, locs, scales, corr) of site values on data centred at 0 (the locs'
        prior is then centred at 0: the model's prior, translated with the data); with
        ``batch_dims``, one value per index of that many leading dims of the values (the
        starts). The priors are built once, for the many evaluations of an M-step, and score
        without Pyro's validation (the values are the fit's own, in the supports by
        construction; a distribution reads the flag when it scores, not when it is built)."""
        centre = torch.zeros_like(data_scale)
        priors = {site.name: self._prior(site, centre, data_scale) for site in self._global_sites()}

        def log_prior(values: dict[str, torch.Tensor], batch_dims: int = 0) -> torch.Tensor:
            with pyro.validation_enabled(False):
                terms = [prior.log_prob(values[name]) for name, prior in priors.items()]
            return sum(term.reshape(*term.shape[:batch_dims], -1).sum(-1) for term in terms)

        return log_prior

    # --- data-dependent initialisation ----------------------------------------------------
    def setup(self, x: torch.Tensor, y: torch.Tensor | None = None, *, seed: int = 0) -> None:
        """Fit the MAP: ``n_init`` k-means++ starts, each followed by k-means and a few
        likelihood EM iterations; the one with the highest log joint continues by
        likelihood EM to convergence, then MAP-EM, whose M-step maximises the
        expected log-likelihood plus the model's log-prior, until the mean log joint per row
        gains less than ``tol``. A fixed point of MAP-EM is a stationary point of the model's
        log joint (the gradient of the TraceEnum_ELBO loss is zero there). With
        ``em_iterations=0``, only the best k-means start is set.

        Also sets the empirical-Bayes prior buffers (data mean and standard deviation).

        Args:
            x: data of shape (N, D).
            y: unused.
            seed: seeds the k-means++ draws.
        """
        dtype = float_dtype_of(x) if self.n_features is None else self.data_loc.dtype
        x = as_tensor(x, name="x", ndim=2, dtype=dtype)
        n_rows, n_features = x.shape
        if n_rows < self.n_components:
            raise ValueError(
                f"n_components: expected at most n_samples={n_rows} components, "
                f"got {self.n_components}"
            )
        if self.n_features != n_features:
            self._build(n_features)
            self.to(device=x.device, dtype=dtype)
        x = x.to(device=self.device, dtype=self.data_loc.dtype)
        work = x.to(torch.float64)
        mean = work.mean(0)
        # Spreads taken in units of each column's largest deviation, so that squaring
        # values near the float range's end (1e200) cannot overflow to inf.
        size = (work - mean).abs().amax(0).clamp(min=torch.finfo(work.dtype).tiny)
        sd = ((work - mean) / size).std(0, unbiased=False) * size
        sd = sd if n_rows > 1 else torch.ones_like(mean)
        sd = torch.where(sd > 0, sd, torch.ones_like(sd))
        _check_representable(sd, self.data_loc.dtype)
        with torch.no_grad():
            self.data_loc.copy_(mean)
            self.data_scale.copy_(sd)
        # The fit runs on standardised data (one common scale for spherical components,
        # which must stay spherical): its MAP maps back exactly, since the likelihood and
        # the priors (evaluated at data_scale / unit) change by constants only, and the
        # optimisation is well conditioned whatever the units.
        unit = sd if self.covariance != "spherical" else sd.log().mean().exp().expand_as(sd)
        work = (work - mean) / unit
        prior_scale = sd / unit
        generator = torch.Generator(device=x.device).manual_seed(seed)
        params = self._map_em(work, prior_scale, generator)
        self._assign(_rescaled(params, mean, unit), params.weights * n_rows)

    def _map_em(
        self, work: torch.Tensor, prior_scale: torch.Tensor, generator: torch.Generator
    ) -> MixtureParameters:
        """The MAP of standardised float64 data ``work`` (N, D) by the starts and EM of
        :meth:`setup`; ``prior_scale`` (D,) is the data's scale in these units."""
        n_rows = work.shape[0]
        log_prior = self._log_prior(prior_scale)
        # n_init starts at once (k-means++, k-means, a few EM iterations), ranked by the
        # log joint (the model's objective); only the best runs on to convergence: short
        # runs of EM already rank starts by where they end (Biernacki et al. 2003).
        # The starts see a random subsample of many rows: only the best one goes on, by EM
        # on every row.
        seeding = work
        if n_rows > _SEED_ROWS:
            seeding = work[
                torch.randperm(n_rows, generator=generator, device=work.device)[:_SEED_ROWS]
            ]
        centres = kmeans_plusplus(seeding, self.n_components, generator, n_starts=self.n_init)
        reg = work.new_full((work.shape[1],), REG_COVAR)
        starts, mean_ll = batched_starts(
            seeding,
            centres,
            self.covariance,
            kmeans_iterations=_KMEANS_ITERATIONS,
            em_iterations=min(self.em_iterations, _START_ITERATIONS),
            reg=reg,
        )
        stacked = MixtureParameters(
            *(torch.stack([getattr(p, name) for p in starts]) for name in _STACKED),
            self.covariance,
        )
        scores = (mean_ll + log_prior(self._site_values(stacked), batch_dims=1) / n_rows).tolist()
        params = starts[max(range(self.n_init), key=scores.__getitem__)]
        if self.em_iterations > 0:
            # The best start's likelihood EM continued to convergence (cheap closed-form
            # steps), then MAP-EM, whose first steps are then small moves to the mode.
            params = expectation_maximization(
                work, params, max_iter=self.em_iterations, tol=self.tol * _FINAL_TOL, reg=reg
            ).params
            params = expectation_maximization(
                work,
                params,
                max_iter=self.em_iterations,
                tol=self.tol,
                reg=reg,
                maximize=MapMStep(self, prior_scale, log_prior),
                log_prior=lambda p: log_prior(self._site_values(p)).item(),
            ).params
        return params

    def _prepare(self, x: Any) -> torch.Tensor:
        self._require_setup()
        x = as_tensor(x, name="x", ndim=2, dtype=self.data_loc.dtype)
        if x.shape[1] != self.n_features:
            raise ValueError(f"x: expected {self.n_features} columns, got {x.shape[1]}")
        return x.to(self.device)

    # --- scoring ------------------------------------------------------------------------
    def log_prob(self, x: Any) -> torch.Tensor:
        """Exact marginal log density log sum_k w_k N(x_n | mu_k, Sigma_k), in nats.

        Args:
            x: data of shape (N, D).

        Returns:
            Tensor of shape (N,), at the point estimates.
        """
        x = self._prepare(x)
        return mixture_log_prob(x, self.mixture_parameters())

    def predict_proba(self, x: Any) -> torch.Tensor:
        """Responsibilities p(z_n = k | x_n) at the point estimates, shape (N, K)."""
        x = self._prepare(x)
        params = self.mixture_parameters()
        joint = component_log_density(x, params) + params.weights.log()
        return torch.softmax(joint, -1)

    def predict(self, x: Any) -> torch.Tensor:
        """MAP assignment of each row by ``infer_discrete`` (temperature 0), shape (N,)."""
        x = self._prepare(x)
        if self.n_components == 1:  # nothing to enumerate: Pyro would skip the site
            return torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        conditioned = poutine.condition(self.model, data=self.point_estimates())
        decoder = infer_discrete(conditioned, first_available_dim=-2, temperature=0)
        with torch.no_grad():
            trace = poutine.trace(decoder).get_trace(x)
        return trace.nodes[ASSIGNMENT]["value"]

    def sample(
        self,
        n: int,
        y: torch.Tensor | None = None,
        *,
        params: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Draw ``n`` new rows from the mixture, shape (n, D).

        Args:
            n: number of rows.
            y: unused.
            params: one posterior draw (site name -> value); default the point estimates.
        """
        check_int("n", n, 1)
        values = self.point_estimates() if params is None else params
        assignment = dist.Categorical(values[WEIGHTS]).sample((n,))
        return self._component_distribution(values, assignment).sample()

    # --- reporting (the contract of GenerativeModel) ---------------------------------------
    @property
    def predicts(self) -> str | None:
        """``predict(x)`` is the most probable component."""
        return "component"

    @property
    def report_plots(self) -> tuple[str, ...]:
        """The loss, the clusters, and the weights' posterior where MCMC drew one."""
        return ("elbo", "clusters", "weights_posterior")

    def score_descriptions(self, num_samples: int, values: int) -> dict[str, str]:
        """The exact log-likelihood, at the point estimates."""
        return {"log_likelihood": f"exact {self.likelihood_target}, at the point estimates"}

    def fit_statistics(
        self, x: torch.Tensor, log_likelihood: torch.Tensor | None = None
    ) -> dict[str, Any]:
        """``n_components``; ``bic`` and ``aic``; ``weights`` (K,) and ``means`` (K, D)."""
        x = self._prepare(x)
        total = (self.log_prob(x) if log_likelihood is None else log_likelihood).sum()
        params = self.mixture_parameters()
        return {
            "n_components": int(self.n_components),
            "bic": float(-2 * total + self.n_parameters() * math.log(x.shape[0])),
            "aic": float(-2 * total + 2 * self.n_parameters()),
            "weights": params.weights.detach().cpu().tolist(),
            "means": params.locs.detach().cpu().tolist(),
        }

    def n_parameters(self) -> int:
        """Free parameters of the mixture (as counted for BIC/AIC)."""
        self._require_setup()
        k, d = self.n_components, self.n_features
        covariance = {
            "full": k * d * (d + 1) // 2,
            "diag": k * d,
            "spherical": k,
            "tied": d * (d + 1) // 2,
        }[self.covariance]
        return covariance + k * d + k - 1

    def bic(self, x: Any) -> float:
        """Bayesian information criterion -2 log L + p log N (lower is better)."""
        x = self._prepare(x)
        return float(-2 * self.log_prob(x).sum() + self.n_parameters() * math.log(x.shape[0]))

    def aic(self, x: Any) -> float:
        """Akaike information criterion -2 log L + 2 p (lower is better)."""
        return float(-2 * self.log_prob(x).sum() + 2 * self.n_parameters())

    # --- posteriors over global sites (the contract of GenerativeModel) -------------------
    @property
    def posterior_dims(self) -> dict[str, tuple[str, ...]]:
        """``("component",)`` for the weights and every per-component site (a tied
        covariance is shared, so its sites have none)."""
        self._require_setup()
        return {
            site.name: (COMPONENT_DIM,)
            for site in self._global_sites()
            if site.per_component or site.name == WEIGHTS
        }

    def derived_posterior(
        self, draws: dict[str, torch.Tensor]
    ) -> dict[str, tuple[torch.Tensor, tuple[str, ...]]]:
        """``covariance`` of every draw: (S, K, D, D) full, (S, K, D) diag, (S, K)
        spherical, or (S, D, D) tied (shared: no component dim)."""
        with torch.no_grad():
            covariances = torch.stack([p.covariances for p in self._draw_parameters(draws)])
        dims = () if self.covariance == "tied" else (COMPONENT_DIM,)
        return {COVARIANCE: (covariances, dims)}

    def pointwise_log_likelihood(
        self, x: torch.Tensor, draws: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """log p(x_n | theta_s) for posterior draws ``theta_s``, assignments summed out.

        Args:
            x: data of shape (N, D).
            draws: site name -> tensor of shape ``(S, *site_shape)``.

        Returns:
            Tensor of shape (S, N).
        """
        x = self._prepare(x)
        draws = {name: value.to(x) for name, value in draws.items()}
        return torch.stack([mixture_log_prob(x, p) for p in self._draw_parameters(draws)])

    def _draw_parameters(self, draws: dict[str, torch.Tensor]) -> list[MixtureParameters]:
        """The mixture of each of S draws (site name -> (S, *site_shape))."""
        count = next(iter(draws.values())).shape[0]
        return [
            self.mixture_parameters({name: value[s] for name, value in draws.items()})
            for s in range(count)
        ]

    def relabel(self, draws: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Undo label switching in posterior draws.

        The likelihood is invariant to permuting components, so a sampler may visit the
        K! copies of each mode. For every draw we pick the permutation of its components
        whose means (in data standard deviations) are closest to the point estimates',
        solved exactly as an assignment problem (Hungarian algorithm), and apply it to
        every per-component site.

        Args:
            draws: site name -> tensor of shape ``(*sample_shape, *site_shape)``.

        Returns:
            the same dict with per-component sites permuted draw by draw.
        """
        from scipy.optimize import linear_sum_assignment

        k = self.n_components
        locs = draws[LOCS]
        sample_shape = locs.shape[:-2]
        reference = (self.point_estimates()[LOCS] / self.data_scale).to(locs)
        flat = (locs / self.data_scale.to(locs)).reshape(-1, k, self.n_features)
        costs = torch.cdist(flat, reference.expand(flat.shape[0], k, -1)).cpu().numpy()
        permutation = torch.empty(flat.shape[0], k, dtype=torch.long)
        for s, cost in enumerate(costs):
            rows, cols = linear_sum_assignment(cost)
            permutation[s, cols] = torch.as_tensor(rows)
        index = torch.arange(flat.shape[0], device=locs.device)[:, None]
        permutation = permutation.to(locs.device)
        relabelled = dict(draws)
        for site in self._global_sites():
            if site.name in draws and (site.per_component or site.name == WEIGHTS):
                value = draws[site.name]
                event_shape = value.shape[len(sample_shape) + 1 :]
                permuted = value.reshape(-1, k, *event_shape)[index, permutation]
                relabelled[site.name] = permuted.reshape(value.shape)
        return relabelled


def _rescaled(
    params: MixtureParameters, mean: torch.Tensor, unit: torch.Tensor
) -> MixtureParameters:
    """A mixture fitted to (x - mean) / unit, in the units of x."""
    if params.covariance_type in ("full", "tied"):
        covariances = params.covariances * unit[:, None] * unit[None, :]
    else:  # variances: per feature (diag), or one for all features (spherical)
        factor = unit if params.covariance_type == "diag" else unit[0]
        covariances = params.covariances * factor.square()
    return MixtureParameters(
        params.weights, params.locs * unit + mean, covariances, params.covariance_type
    )


#: Copies of the largest (K, D, D) or (D, D) table that fitting holds at once (parameters,
#: EM statistics, Cholesky factors, gradients), in float64: a bound for the memory check.
_WORKING_COPIES = 8


def _check_size(n_components: int, n_features: int, covariance: str) -> None:
    """Refuse a mixture whose covariance tables cannot fit in this machine's memory, with
    the estimate, before anything is allocated (D = 200,000 full covariances: 2.6 TB)."""
    tables = {"full": n_components, "tied": 1}.get(covariance, 0)
    needed = _WORKING_COPIES * 8 * max(tables * n_features**2, n_components * n_features)
    available = physical_memory()
    if available is not None and needed > available:
        raise ValueError(
            f"x: {n_features} features with covariance={covariance!r} and {n_components} "
            f"components need about {needed / 2**30:.0f} GiB to fit, more than this machine's "
            f"{available / 2**30:.0f} GiB; use covariance='diag' or fewer features"
        )


def _check_representable(sd: torch.Tensor, dtype: torch.dtype) -> None:
    """Refuse data whose variances (sd squared, with room for sums of them) do not fit in
    ``dtype``: covariances of values near 1e200 are beyond float64's range (1.8e308)."""
    limit = torch.finfo(dtype).max ** 0.5 / 1e3
    if not bool((sd < limit).all()):
        raise ValueError(
            f"x: expected spreads below {limit:.1e} per column so that their variances fit in "
            f"{dtype}, got a standard deviation of {float(sd.max()):.1e}; rescale the data "
            "(e.g. divide by a power of ten)"
        )


def _variances(params: MixtureParameters) -> torch.Tensor:
    """Each component's per-feature variances, shape (K, D)."""
    kind, covariances = params.covariance_type, params.covariances
    shape = params.locs.shape
    if kind == "full":
        return covariances.diagonal(dim1=-2, dim2=-1)
    if kind == "tied":
        return covariances.diagonal().expand(shape)
    if kind == "spherical":
        return covariances[:, None].expand(shape)
    return covariances


def _neutral_value(site: _GlobalSite) -> torch.Tensor:
    """A valid placeholder in the site's support, replaced by :meth:`setup`."""
    if site.support is constraints.simplex:
        return torch.full(site.shape, 1.0 / site.shape[-1])
    if site.support is constraints.corr_cholesky:
        return torch.eye(site.shape[-1]).expand(site.shape).clone()
    if site.support is constraints.positive:
        return torch.ones(site.shape)
    return torch.zeros(site.shape)
