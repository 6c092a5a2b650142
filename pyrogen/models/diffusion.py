"""Diffusion models as hierarchical VAEs: a fixed forward process as the guide, a learned
reverse process as the model, and the ELBO from Pyro.

Latents z_0, ..., z_T are ever noisier copies of the data x (scaled to [-1, 1], or
standardized), with the variance-preserving forward process of a noise schedule gamma_t
(:mod:`pyrogen.nn.schedules`): q(z_t | x) = N(alpha_t x, sigma_t^2). Written the way its ELBO
decomposes (Ho et al. 2020, Kingma et al. 2021)::

    guide:  z_T ~ q(z_T | x),  z_{t-1} ~ q(z_{t-1} | z_t, x)  for t = T..1   (Gaussian, closed form)
    model:  z_T ~ N(0, I),     z_{t-1} ~ p(z_{t-1} | z_t) = q(z_{t-1} | z_t, x_hat(z_t, t)),
            x ~ p(x | z_0)

where x_hat is the denoiser's estimate of x. With analytic KLs (``AnalyticKLELBO``) the ELBO
is exactly the usual sum of terms, each a closed-form Gaussian KL at the sampled z_t::

    ELBO = E log p(x | z_0)                                   (reconstruction)
           - KL(q(z_T | x) || N(0, I))                        (prior)
           - sum_t E KL(q(z_{t-1} | z_t, x) || p(z_{t-1} | z_t))  (diffusion)

The model program is that chain (:func:`~pyrogen.models.objectives.markov_chain`), so
``Predictive(model.model)`` draws new data and ``render_model`` shows z_T -> ... -> z_0 -> x.
``objective="full"`` trains with its full trace (T + 1 latent sites; exact, for small T and
for checking). ``objective="elbo"`` (training) traces the same programs under
:class:`~pyrogen.models.objectives.SampledSteps` (``SampledStepELBO``): an unbiased estimate
of the same ELBO with one network pass per example, each row scoring one uniformly drawn
step t with weight T, its input z_t and the chain's end z_0 drawn from the guide's marginals
q(z_t | x); the reconstruction and prior terms need no network and are always included.
``objective="simple"`` reweights each step's KL so that the loss is DDPM's
``||eps - eps_hat||^2 / 2`` (or its x / v analogue): the usual training loss, **not** an
ELBO. The observation model p(x | z_0) is a Gaussian in the data's units (continuous
data), a Bernoulli (binary data) or the discretized Gaussian of VDM over L levels
(8-bit images: ``likelihood="discretized"``), so ``elbo`` and ``bits_per_dim`` are bounds on
the data's own log-likelihood.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.nn import pyro_method
from torch import nn
from tqdm.auto import tqdm

from pyrogen.checks import as_examples, as_labels, check_choice, check_int, check_ints
from pyrogen.models.base import GenerativeModel, data_plate, generative_plate
from pyrogen.models.forward_process import (
    ForwardPosterior,
    LevelTables,
    level_tables,
    levels_at,
    step_levels,
)
from pyrogen.models.forward_process import noise_levels as noise_levels  # the classifier's
from pyrogen.models.objectives import (
    AnalyticKLELBO,
    SampledStepELBO,
    SampledSteps,
    analytic_kl_terms,
    markov_chain,
)
from pyrogen.models.vae import VAE, check_data_shape
from pyrogen.nn.denoisers import MLPDenoiser, UNetDenoiser
from pyrogen.nn.schedules import SCHEDULES, NoiseSchedule

PREDICTIONS = ("eps", "x0", "v")
LIKELIHOODS = ("gaussian", "bernoulli", "discretized")
OBJECTIVES = ("elbo", "full", "simple")
#: Random Fourier features of z the default MLP denoiser gets for vectors of at most
#: FOURIER_MAX_VALUES values (none for more, nor for images), and their frequencies' sd
#: for D = 2 (scaled by sqrt(2 / D)); see :class:`pyrogen.nn.MLPDenoiser`.
DEFAULT_FOURIER_FEATURES, FOURIER_MAX_VALUES, FOURIER_SCALE = 32, 8, 3.0
# Rows scored at once by the evaluation methods.
_EVAL_ROWS = 1024


class DiffusionVAE(GenerativeModel):
    """A denoising diffusion model written as a Pyro model / guide pair.

    Args:
        data_shape: shape of one example: (D,) (or D) for tables, (H, W) or (C, H, W) for
            images.
        timesteps: T, the number of diffusion steps.
        schedule: ``"linear"``, ``"cosine"`` or ``"learned"`` (the only one that makes the
            guide learnable; see :class:`pyrogen.nn.schedules.NoiseSchedule`).
        denoiser: ``"mlp"``, ``"unet"``, a module with ``forward(z, t, y)`` (z shaped like
            the data, t in [0, 1] of shape (B,), y labels or None) returning z's shape, or
            None: a UNet for images, an MLP otherwise.
        prediction: what the denoiser outputs: the noise ``"eps"``, the data ``"x0"``, or
            ``"v"`` = alpha_t eps - sigma_t x (Salimans & Ho 2022).
        likelihood: p(x | z_0): ``"gaussian"`` (real data, standardized inside the model),
            ``"bernoulli"`` (0/1 data) or ``"discretized"`` (``levels`` values k / (L - 1)
            in [0, 1]).
        levels: L for ``"discretized"`` (256 for 8-bit images).
        objective: ``"elbo"`` (sampled steps, for training), ``"full"`` (every step) or
            ``"simple"`` (DDPM's loss; not a bound).
        num_classes: C, for a class-conditional model (labels y in 0..C-1).
        label_dropout: share of training rows whose label is replaced by the null label,
            so one network is also the unconditional model (classifier-free guidance).
        hidden: hidden widths of the default MLP denoiser.
        channels: base channels of the default UNet denoiser.
        autoencoder: a trained :class:`pyrogen.VAE` whose codes to model (latent diffusion),
            or the ``{"family": ..., "config": ...}`` that ``config`` holds for it (a VAE
            built afresh, whose weights then come with ``load_state_dict``).
        fourier_features: random Fourier features of z for the MLP denoiser (see
            :class:`pyrogen.nn.MLPDenoiser`); None for 32 on vectors of at most 8 values
            (where the denoiser must resolve clusters much finer than the data's spread)
            and 0 otherwise.

    Shapes:
        x (N, ``*data_shape``); y (N,) labels.

    Example:
        >>> model = DiffusionVAE((2,), timesteps=10, hidden=(16,))
        >>> model.sample(3).shape
        torch.Size([3, 2])
    """

    family = "diffusion"
    fit_defaults = {"steps": 5000, "lr": 1e-3, "batch_size": 128, "early_stopping": None}
    choices = {
        "schedule": SCHEDULES, "prediction": PREDICTIONS, "likelihood": LIKELIHOODS,
        "objective": OBJECTIVES, "denoiser": ("mlp", "unet"),
    }  # fmt: skip
    reads_images = True

    def __init__(
        self,
        data_shape: Sequence[int] | int,
        timesteps: int = 1000,
        schedule: str = "linear",
        denoiser: str | nn.Module | None = None,
        prediction: str = "eps",
        likelihood: str = "gaussian",
        *,
        levels: int = 256,
        objective: str = "elbo",
        num_classes: int | None = None,
        label_dropout: float = 0.1,
        hidden: Sequence[int] = (256, 256, 256),
        channels: int = 32,
        autoencoder: VAE | dict[str, Any] | None = None,
        fourier_features: int | None = None,
    ) -> None:
        super().__init__()
        self.data_shape = check_data_shape(data_shape)
        self.autoencoder = _frozen_autoencoder(autoencoder, self.data_shape, likelihood)
        # The space the diffusion runs in: the data, or the autoencoder's codes.
        self.shape = self.data_shape if self.autoencoder is None else (self.autoencoder.latent_dim,)
        self.timesteps = check_int("timesteps", timesteps)
        check_choice("schedule", schedule, SCHEDULES)
        self.prediction = check_choice("prediction", prediction, PREDICTIONS)
        self.likelihood = check_choice("likelihood", likelihood, LIKELIHOODS)
        self.objective = check_choice("objective", objective, OBJECTIVES)
        if objective == "simple" and schedule == "learned":
            raise ValueError(
                "objective: 'simple' is not a bound, so it cannot train a learned schedule; "
                "use 'elbo'"
            )
        self.levels = check_int("levels", levels, minimum=2)
        if num_classes is not None:
            check_int("num_classes", num_classes, minimum=2)
        if not (isinstance(label_dropout, (int, float)) and 0 <= label_dropout < 1):
            raise ValueError(f"label_dropout: expected a number in [0, 1), got {label_dropout!r}")
        self.num_classes = num_classes
        self.label_dropout = float(label_dropout)
        self.hidden = check_ints("hidden", hidden)
        self.channels = channels
        if fourier_features is None:
            low = math.prod(self.shape) <= FOURIER_MAX_VALUES
            fourier_features = DEFAULT_FOURIER_FEATURES if low else 0
        self.fourier_features = check_int("fourier_features", fourier_features, minimum=0)
        self.schedule_kind = schedule  # config's; self.schedule is the module built from it
        self.schedule = NoiseSchedule(schedule, self.timesteps)
        self.denoiser_kind, self.denoiser = self._build_denoiser(denoiser)
        # Standardization of continuous data (set by setup); identity for bounded data.
        features = math.prod(self.shape)
        self.register_buffer("data_shift", torch.zeros(features))
        self.register_buffer("data_scale", torch.ones(features))
        # The box x_hat is clipped to while sampling standardized data: each value's range
        # in the training data (set by setup). E[x | z_t] is an average of data, so a good
        # estimate is never clipped, while x_hat from a predicted eps divides its error by
        # alpha_t, tiny near z_T, and DDIM's first steps follow x_hat far out without it.
        self.register_buffer("sample_low", torch.full((features,), -math.inf))
        self.register_buffer("sample_high", torch.full((features,), math.inf))

    def _build_denoiser(self, denoiser: str | nn.Module | None) -> tuple[str, nn.Module]:
        if isinstance(denoiser, nn.Module):
            return "custom", denoiser
        image = len(self.shape) in (2, 3)
        kind = denoiser if denoiser is not None else ("unet" if image else "mlp")
        check_choice("denoiser", kind, ("mlp", "unet"))
        if kind == "mlp":
            # Frequencies of sd 3 for 2 values (the clusters' scale of standardized data),
            # shrunk as sqrt(2 / D) so that the projections' spread is the same for any D.
            scale = FOURIER_SCALE * math.sqrt(2 / math.prod(self.shape))
            return kind, MLPDenoiser(
                self.shape,
                hidden=self.hidden,
                num_classes=self.num_classes,
                fourier_features=self.fourier_features,
                fourier_scale=scale,
            )
        if not image:
            raise ValueError(
                f"denoiser: 'unet' needs images, data_shape (H, W) or (C, H, W), got {self.shape}"
            )
        shape = self.shape if len(self.shape) == 3 else (1, *self.shape)
        return kind, UNetDenoiser(shape, channels=self.channels, num_classes=self.num_classes)

    @classmethod
    def from_state(cls, config: dict[str, Any], state_dict: dict[str, torch.Tensor]):
        config = dict(config)
        config.setdefault("fourier_features", 0)  # saved before they were a default
        if "sample_bound" in state_dict:  # saved before the range clip: keep its box
            state_dict = dict(state_dict)
            bound = state_dict.pop("sample_bound")
            features = state_dict["data_shift"].shape
            state_dict["sample_low"], state_dict["sample_high"] = (
                -bound.expand(features),
                bound.expand(features),
            )
        saved = config.pop("autoencoder", None)
        if saved is not None:
            from pyrogen.models import REGISTRY  # the registry imports this module

            prefix = "autoencoder."
            inner = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
            config["autoencoder"] = REGISTRY[saved["family"]].from_state(saved["config"], inner)
        return super().from_state(config, state_dict)

    @property
    def loss(self) -> AnalyticKLELBO:
        """The training objective, every term a closed-form Gaussian KL: ``AnalyticKLELBO``
        of the full chain (``objective="full"``), or ``SampledStepELBO``, one step per row
        with weight T (``"elbo"``) or DDPM's weights (``"simple"``)."""
        if self.objective == "full":
            return AnalyticKLELBO(max_plate_nesting=1)
        weight = self._step_weight if self.objective == "simple" else None
        return SampledStepELBO(weight, max_plate_nesting=1)

    # --- the forward process (all from gamma) --------------------------------------------
    def _tables(self, dtype: torch.dtype) -> LevelTables:
        """Every level's gamma, alpha, sigma and step coefficients, in ``dtype``. A fixed
        schedule's are computed once (again after ``.to()`` or loading new values); a
        learned one's, which depend on its parameters, at every call: the programs call
        this once per run and hand the tables on."""
        if self.schedule_kind == "learned":
            return level_tables(self.schedule(), dtype, self.schedule)
        gamma = self.schedule.fixed
        key = (gamma, gamma._version, dtype)
        memo = self.__dict__.get("_table_memo")
        if memo is None or memo[0][0] is not gamma or memo[0][1:] != key[1:]:
            with torch.no_grad():
                memo = (key, level_tables(gamma, dtype, self.schedule))
            self.__dict__["_table_memo"] = memo  # not a buffer: derived, and never saved
        return memo[1]

    def _levels(
        self, t: torch.Tensor | int, like: torch.Tensor, tables: LevelTables | None = None
    ) -> tuple[torch.Tensor, ...]:
        """gamma_t, alpha_t, sigma_t at integer levels t (B,) (or any batch shape, or one
        int), shaped to broadcast with x."""
        tables = self._tables(like.dtype) if tables is None else tables
        return levels_at(tables, t, len(self.shape))

    def _q_marginal(
        self, x: torch.Tensor, t: torch.Tensor | int, tables: LevelTables | None = None
    ) -> dist.Distribution:
        """q(z_t | x) = N(alpha_t x, sigma_t^2), event shape data_shape."""
        _, alpha, sigma = self._levels(t, x, tables)
        return _normal(alpha * x, sigma.expand_as(x), len(self.shape))

    def _q_posterior(
        self,
        z_t: torch.Tensor,
        x: torch.Tensor,
        t: torch.Tensor,
        tables: LevelTables | None = None,
    ) -> dist.Distribution:
        """q(z_{t-1} | z_t, x): the forward process run backwards, given x (Gaussian). Two
        of them at the same z_t and t have the closed-form KL of
        :class:`~pyrogen.models.forward_process.ForwardPosterior`."""
        tables = self._tables(x.dtype) if tables is None else tables
        levels = step_levels(tables, t, len(self.shape))
        return ForwardPosterior(z_t, x, levels).to_event(len(self.shape))

    # --- the reverse model ----------------------------------------------------------------
    def _x_hat(
        self,
        z: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor | None,
        tables: LevelTables | None = None,
    ) -> torch.Tensor:
        """The denoiser's estimate of (scaled) x from z_t, through its parameterization."""
        _, alpha, sigma = self._levels(t, z, tables)
        # The network takes one flat batch: batch shapes beyond (B,) (a vectorized
        # Predictive's sample dimension) are flattened, t and y broadcast to them.
        batch = z.shape[: z.dim() - len(self.shape)]
        flat = z.reshape(-1, *self.shape)
        if len(self.shape) == 2 and self.denoiser_kind == "unet":
            flat = flat.unsqueeze(-3)  # (H, W) images get a channel for the UNet
        time = t.to(z.dtype).expand(batch).reshape(-1) / self.timesteps
        labels = None if y is None else y.expand(batch).reshape(-1)
        out = self.denoiser(flat, time, labels).reshape(z.shape)
        if self.prediction == "eps":
            return (z - sigma * out) / alpha
        if self.prediction == "v":
            return alpha * z - sigma * out
        return out

    def _labels(self, y: torch.Tensor | None, rows: int, device) -> torch.Tensor | None:
        """Labels for the denoiser; in training, a share replaced by the null label C."""
        if self.num_classes is None:
            return None
        if y is None:
            return torch.full((rows,), self.num_classes, dtype=torch.long, device=device)
        y = y.long()
        if self.training and self.label_dropout > 0:
            drop = torch.rand(rows, device=device) < self.label_dropout
            y = torch.where(drop, torch.full_like(y, self.num_classes), y)
        return y

    def _observation(
        self, z_0: torch.Tensor, tables: LevelTables | None = None
    ) -> dist.Distribution:
        """p(x | z_0) in the data's own units (see the module docstring)."""
        gamma, alpha, sigma = self._levels(0, z_0, tables)
        event = len(self.shape)
        if self.likelihood == "gaussian":
            shift = self.data_shift.reshape(self.shape)
            scale = self.data_scale.reshape(self.shape)
            return _normal(
                shift + scale * z_0 / alpha, (scale * sigma / alpha).expand_as(z_0), event
            )
        if self.likelihood == "bernoulli":
            # N(z_0; alpha v, sigma^2) for v = -1, +1, normalized over v
            return dist.Bernoulli(logits=2 * alpha * z_0 / sigma**2).to_event(event)
        return _DiscretizedGaussian(z_0 / alpha, sigma / alpha, self.levels).to_event(event)

    # --- data scaling ---------------------------------------------------------------------
    def _codes(self, x: torch.Tensor) -> torch.Tensor:
        """What the diffusion models: x itself, or its posterior-mean code under the frozen
        autoencoder, (B, L)."""
        if self.autoencoder is None:
            return x
        with torch.no_grad():
            return self.autoencoder._encode(x, None)[0]

    def _scaled(self, x: torch.Tensor) -> torch.Tensor:
        """x as the diffusion sees it: in [-1, 1] for bounded data, standardized otherwise."""
        return scale_data(x, self.likelihood, self.data_shift, self.data_scale)

    def _observed(self, x: torch.Tensor) -> torch.Tensor:
        """x as p(x | z_0) scores it: values, or level indices for discretized data."""
        if self.likelihood == "discretized":
            return (x * (self.levels - 1)).round().long()
        return x

    # --- Pyro programs --------------------------------------------------------------------
    @pyro_method
    def model(
        self,
        x: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
        num_data: int | None = None,
    ):
        """The reverse process: z_T ~ N(0, I), z_{t-1} ~ p(z_{t-1} | z_t) for t = T..1, and
        x ~ p(x | z_0), observed when x is given.

        With ``x=None`` it draws new data (``pyro.infer.Predictive(model.model, ...)(None)``):
        ``len(y)`` rows for labels y, else ``num_data`` rows (default 1); the site ``x`` then
        holds values in the space the diffusion models (the codes, for latent diffusion;
        level indices k for discretized data).
        """
        plate, rows = generative_plate(x, y, num_data)
        if x is None:
            device, dtype = self.data_shift.device, self.data_shift.dtype
            observed = None
        else:
            x = self._codes(x)
            device, dtype, observed = x.device, x.dtype, self._observed(x)
        labels = self._labels(y, rows, device)
        zeros = torch.zeros(rows, *self.shape, device=device, dtype=dtype)
        tables = self._tables(dtype)
        with plate:
            z_0 = markov_chain(
                "z",
                self.timesteps,
                _normal(zeros, torch.ones_like(zeros), len(self.shape)),
                lambda z, t: self._q_posterior(z, self._x_hat(z, t, labels, tables), t, tables),
            )
            pyro.sample("x", self._observation(z_0, tables), obs=observed)

    @pyro_method
    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None, num_data: int | None = None):
        """The forward process q(z_{0:T} | x), run backwards: z_T ~ q(z_T | x), then
        z_{t-1} ~ q(z_{t-1} | z_t, x), with its marginals q(z_t | x) for the sampled-step
        estimator."""
        x = self._codes(x)
        scaled = self._scaled(x)
        tables = self._tables(x.dtype)
        with data_plate(x, num_data):
            markov_chain(
                "z",
                self.timesteps,
                self._q_marginal(scaled, self.timesteps, tables),
                lambda z, t: self._q_posterior(z, scaled, t, tables),
                marginal=lambda t: self._q_marginal(scaled, t, tables),
            )

    def _step_weight(self, t: torch.Tensor) -> torch.Tensor:
        """DDPM's reweighting of the step at levels t (B,) for ``"simple"`` (not a bound)."""
        tables = self._tables(self.data_shift.dtype)
        # KL_t = (SNR_{t-1} - SNR_t) / 2 * ||x - x_hat||^2 and x - x_hat = c_t (out_hat - out);
        # the SNR drop from the tables (no difference of nearby float32 numbers)
        gamma, snr_drop = tables.levels[t, 0], tables.steps[t, 3]
        c2 = {
            "eps": torch.exp(gamma),
            "x0": torch.ones_like(snr_drop),
            "v": torch.sigmoid(gamma),
        }
        return 1 / (snr_drop * c2[self.prediction])

    # --- data -----------------------------------------------------------------------------
    def setup(self, x: torch.Tensor, y: torch.Tensor | None = None, *, seed: int = 0) -> None:
        """Check the data (and labels); standardize continuous data from them."""
        x = self._prepare(x)
        self._prepare_y(y, x.shape[0])
        if self.likelihood == "gaussian":
            flat = self._codes(x).flatten(1)
            self.data_shift.copy_(flat.mean(0))
            self.data_scale.copy_(flat.std(0).clamp(min=1e-6) if len(flat) > 1 else 1.0)
            standardized = (flat - self.data_shift) / self.data_scale
            self.sample_low.copy_(standardized.min(0).values)
            self.sample_high.copy_(standardized.max(0).values)

    def _prepare(self, x: Any, name: str = "x") -> torch.Tensor:
        bounded = {
            "bernoulli": "for likelihood='bernoulli'",
            "discretized": "for likelihood='discretized' (levels k / (L - 1))",
        }
        if self.autoencoder is not None:  # its own checks, and its device
            return self.autoencoder._prepare(x)
        x = as_examples(
            x,
            self.data_shape,
            dtype=self.data_shift.dtype,
            name=name,
            unit_interval=bounded.get(self.likelihood),
        )
        if self.likelihood == "bernoulli" and not ((x == 0) | (x == 1)).all():
            raise ValueError(f"{name}: expected 0/1 values for likelihood='bernoulli'")
        return x.to(self.data_shift.device)

    def _prepare_y(self, y: Any, rows: int) -> torch.Tensor | None:
        if self.num_classes is None:
            if y is not None:
                raise ValueError("y: this diffusion model is not conditional, got labels")
            return None
        if y is None:
            return None  # unconditional use of a conditional model: the null label
        return as_labels(y, rows, self.num_classes).to(self.data_shift.device)

    # --- evaluation -----------------------------------------------------------------------
    @torch.no_grad()
    def elbo_terms(
        self, x: Any, y: Any = None, *, num_samples: int = 1, exact: bool = False
    ) -> dict[str, torch.Tensor]:
        """The ELBO per example and its three terms, in nats, each of shape (N,).

        Read site by site off the traces of the guide and the model under
        :class:`~pyrogen.models.objectives.SampledSteps`, the training estimator's handler.
        ``reconstruction`` = E log p(x | z_0) (``num_samples`` draws of z_0), ``prior`` =
        KL(q(z_T | x) || N(0, I)) (closed form), ``diffusion`` = sum over the T steps of
        E KL(q(z_{t-1} | z_t, x) || p(z_{t-1} | z_t)): with ``exact`` every step is scored
        (T network passes per draw), otherwise T times the KL at ``num_samples`` uniformly
        drawn steps per example (unbiased). ``elbo`` = reconstruction - prior - diffusion.
        """
        check_int("num_samples", num_samples)
        x = self._prepare(x)
        labels = self._prepare_y(y, x.shape[0])
        was_training = self.training
        self.eval()
        try:
            parts = [
                self._terms(
                    x[i : i + _EVAL_ROWS],
                    None if labels is None else labels[i : i + _EVAL_ROWS],
                    num_samples,
                    exact,
                )
                for i in range(0, x.shape[0], _EVAL_ROWS)
            ]
        finally:
            self.train(was_training)
        terms = {key: torch.cat([part[key] for part in parts]) for key in parts[0]}
        terms["elbo"] = terms["reconstruction"] - terms["prior"] - terms["diffusion"]
        return terms

    def _terms(self, x, y, num_samples: int, exact: bool) -> dict[str, torch.Tensor]:
        """The terms from the guide's and the model's traces under :class:`SampledSteps`:
        the training estimator's sites, each row's term kept apart."""
        T = self.timesteps
        rows = x.shape[0]
        totals = {key: x.new_zeros(rows) for key in ("reconstruction", "prior", "diffusion")}
        # exact: each level once for every row, unweighted; else one uniform level, weight T
        runs = [(step, lambda t: torch.ones_like(t, dtype=x.dtype)) for step in range(1, T + 1)]
        runs = runs if exact else [(None, None)]
        for _ in range(num_samples):
            for step, weight in runs:
                with SampledSteps(weight, step=step):
                    guide_trace = poutine.trace(self.guide).get_trace(x, y)
                    replayed = poutine.replay(self.model, trace=guide_trace)
                    terms = analytic_kl_terms(poutine.trace(replayed).get_trace(x, y), guide_trace)
                # reconstruction and prior averaged over every trace, the steps' KLs summed
                totals["reconstruction"] += terms["x"] / (len(runs) * num_samples)
                totals["prior"] -= terms[f"z_{T}"] / (len(runs) * num_samples)
                totals["diffusion"] -= terms["z_step"] / num_samples
        return totals

    def elbo(
        self, x: Any, y: Any = None, *, num_samples: int = 1, exact: bool = False
    ) -> torch.Tensor:
        """The ELBO per example (nats), shape (N,): see :meth:`elbo_terms`."""
        return self.elbo_terms(x, y, num_samples=num_samples, exact=exact)["elbo"]

    def log_likelihood(self, x: Any, y: Any = None, *, num_samples: int = 1) -> torch.Tensor:
        """A lower bound on log p(x) per example (the ELBO; diffusion has no tighter one here)."""
        return self.elbo(x, y, num_samples=num_samples)

    def bits_per_dim(
        self, x: Any, y: Any = None, *, num_samples: int = 1, exact: bool = False
    ) -> torch.Tensor:
        """-ELBO / (D log 2) per example, shape (N,): bits per value, as VDM reports it (D
        the values of what is modelled: the codes, for latent diffusion)."""
        elbo = self.elbo(x, y, num_samples=num_samples, exact=exact)
        return -elbo / (self.values_per_example(x) * math.log(2))

    # --- reporting (the contract of GenerativeModel) -------------------------------------
    elbo_terms_reported = ("reconstruction", "prior", "diffusion")
    score_samples_name = "step_samples"
    default_score_samples = 1

    report_samples_name = "DDIM"

    def report_samples(self, n: int, y: torch.Tensor | None = None) -> torch.Tensor:
        """Draws by DDIM (deterministic, 50 steps or T if fewer): fast enough for a report."""
        return self.sample(n, y, method="ddim")

    @property
    def report_plots(self) -> tuple[str, ...]:
        """The loss and samples, one row per class with labels."""
        return ("elbo", "samples") + self.label_sample_plots

    @property
    def elbo_description(self) -> str:
        return "ELBO = reconstruction - prior - diffusion"

    def values_per_example(self, x: torch.Tensor) -> int:
        """D, the values of what is modelled: of x, or of its codes for latent diffusion."""
        return math.prod(self.shape)

    def score_examples(
        self, x: torch.Tensor, y: torch.Tensor | None = None, *, num_samples: int | None = None
    ) -> dict[str, torch.Tensor]:
        """The ELBO (also ``log_likelihood``: no tighter bound is computed) and its three
        terms per example, each (N,), the diffusion term from ``num_samples`` drawn steps."""
        samples = self.default_score_samples if num_samples is None else num_samples
        terms = self.elbo_terms(x, y, num_samples=samples)
        return {"elbo": terms["elbo"], "log_likelihood": terms["elbo"]} | {
            term: terms[term] for term in self.elbo_terms_reported
        }

    def score_descriptions(self, num_samples: int, values: int) -> dict[str, str]:
        """The ELBO and what each of its terms is."""
        target = self.likelihood_target
        return {
            "elbo": f"{self.elbo_description}: a lower bound on {target}, its diffusion term "
            f"estimated from {num_samples} uniformly drawn step(s) per example (unbiased)",
            "log_likelihood": "the ELBO (no tighter bound is computed)",
            "reconstruction": "E_q log p(x | z_0)",
            "prior": "KL(q(z_T | x) || N(0, I)), closed form",
            "diffusion": "sum over the T steps of E_q KL(q(z_{t-1} | z_t, x) || p(z_{t-1} | z_t))",
            "bits_per_dim": f"-ELBO / (D ln 2), D = {values} values per example: an upper "
            "bound in expectation",
        }

    # --- the score -------------------------------------------------------------------------
    def score(self, z: Any, t: int | torch.Tensor, y: Any = None, *, guidance: float = 1.0):
        """The model's estimate of the score grad_z log q_t(z) of the noisy marginal q_t, the
        distribution of z_t = alpha_t x + sigma_t eps over the data, at level t.

        It is the denoiser read as a score (Vincent 2011; Song & Ermon 2019): with the
        estimates eps_hat of the noise and x_hat of x (unclipped),
        ``score = -eps_hat / sigma_t = (alpha_t x_hat - z) / sigma_t**2``, and conversely
        Tweedie's formula E[x | z_t] = (z_t + sigma_t**2 grad log q_t(z_t)) / alpha_t. The
        units are those the diffusion runs in: x scaled to [-1, 1] (bounded data) or
        standardized (Gaussian data), or the codes of latent diffusion; an energy model
        trained by denoising score matching at noise sigma on x / alpha_t estimates
        alpha_t times this score (see the docs' diffusion page).

        Args:
            z: latents (N, ``*shape``) (``shape``: ``data_shape``, or the codes').
            t: the level, an int in 0..T or int64 levels (N,).
            y: labels (N,) of a conditional model; None: its unconditional score.
            guidance: classifier-free guidance scale, as for :meth:`sample`.

        Returns:
            (N, ``*shape``), differentiable in z and in the parameters.

        Example:
            >>> model = DiffusionVAE((2,), timesteps=10, hidden=(16,))
            >>> model.score(torch.zeros(4, 2), 5).shape
            torch.Size([4, 2])
        """
        if not (isinstance(guidance, (int, float)) and math.isfinite(guidance)):
            raise ValueError(f"guidance: expected a number, got {guidance!r}")
        z = as_examples(z, self.shape, dtype=self.data_shift.dtype, name="z")
        z = z.to(self.data_shift.device)
        levels = self._level_tensor(t, z.shape[0])
        labels = self._prepare_y(y, z.shape[0])
        if labels is None and self.num_classes is not None:
            labels = torch.full_like(levels, self.num_classes)  # the null label
        _, alpha, sigma = self._levels(levels, z)
        x_hat = self._combined_x_hat(z, levels, labels, guidance)
        return (alpha * x_hat - z) / sigma**2

    def _level_tensor(self, t: int | torch.Tensor, rows: int) -> torch.Tensor:
        """Levels t as int64 (rows,), checked to lie in 0..T."""
        T = self.timesteps
        if isinstance(t, torch.Tensor) and not t.is_floating_point() and t.shape == (rows,):
            levels = t.long().to(self.data_shift.device)
        elif isinstance(t, int) and not isinstance(t, bool):
            levels = torch.full((rows,), t, dtype=torch.long, device=self.data_shift.device)
        else:
            got = f"shape {tuple(t.shape)}" if isinstance(t, torch.Tensor) else repr(t)
            raise ValueError(f"t: expected an int or int64 levels of shape ({rows},), got {got}")
        if not ((levels >= 0) & (levels <= T)).all():
            raise ValueError(f"t: expected levels in 0..{T}, got {levels.min()}..{levels.max()}")
        return levels

    # --- sampling -------------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self,
        n: int,
        y: Any = None,
        *,
        steps: int | None = None,
        method: str = "ancestral",
        guidance: float = 1.0,
        classifier: Any = None,
        classifier_scale: float = 1.0,
        progress: bool | None = False,
    ) -> torch.Tensor:
        """Draw n examples (n, ``*data_shape``), in the data's units.

        Args:
            n: number of examples.
            y: labels (n,) for a conditional model or for ``classifier``; None draws them
                uniformly.
            steps: reverse steps: all T for ``"ancestral"`` (DDPM's algorithm 2); for
                ``"ddim"`` (deterministic, Song et al. 2021) any number from 1 to T
                (default 50, or T if smaller), evenly spaced.
            method: ``"ancestral"`` or ``"ddim"``.
            guidance: classifier-free guidance scale s (conditional models; ``y=None``
                draws the labels, so for the unconditional model pass labels with
                ``guidance=0``): the estimate is
                x_hat(unconditional) + s (x_hat(y) - x_hat(unconditional)); 0 is the
                unconditional model, 1 the conditional one, above 1 sharper classes.
            classifier: a :class:`~pyrogen.NoiseConditionalClassifier` of this model's
                forward process (built by its ``for_model``): classifier guidance (Dhariwal
                & Nichol 2021) towards the labels y. Each ancestral step's Gaussian
                p(z_s | z_t), of mean mu and covariance Sigma, is drawn with mean
                mu + c Sigma grad_z log p(y | z_t) (their algorithm 1); each DDIM step uses
                the noise estimate eps_hat - c sigma_t grad_z log p(y | z_t) (algorithm 2),
                i.e. the score :meth:`score` plus c grad log p(y | z_t). With a conditional
                model it composes with classifier-free ``guidance``.
            classifier_scale: c, the classifier's scale: 1 draws from
                p(z) p(y | z) / p(y) up to the discretization, above 1 sharper classes.
            progress: show a progress bar.

        Returns:
            the mode of p(x | z_0): values for Gaussian data, 0/1 for Bernoulli data,
            levels k / (L - 1) for discretized data. At every step the estimate x_hat is
            clipped to [-1, 1] for bounded data (DDPM's clipping) and to each value's range
            in the training data for Gaussian data (``sample_low``, ``sample_high``): the
            true E[x | z_t] is an average of data, so it is never clipped, while x_hat from
            a predicted noise divides its error by alpha_t, tiny near z_T, which can
            otherwise send DDIM's first steps far away (the cosine schedule's alpha_T is
            about 5e-5). The default, ancestral, is the accurate sampler; DDIM trades
            accuracy for speed.
        """
        check_int("n", n)
        steps = self._sampling_steps(steps, method, guidance)
        device, dtype = self.data_shift.device, self.data_shift.dtype
        gradient = self._classifier_gradient(classifier, classifier_scale)
        labels = self._sample_labels(n, y, classifier)
        conditions = labels if self.num_classes is not None else None
        T = self.timesteps
        levels = torch.linspace(T, 0, steps + 1, dtype=torch.float64).round().long().tolist()
        was_training = self.training
        self.eval()
        try:
            z = torch.randn(n, *self.shape, device=device, dtype=dtype)
            for t, s in tqdm(
                list(zip(levels[:-1], levels[1:], strict=True)),
                disable=not progress,
                desc="sampling",
            ):
                t_ = torch.full((n,), t, dtype=torch.long, device=device)
                x_hat = self._guided_x_hat(z, t_, conditions, guidance)
                # c grad log p(y | z_t), or None without a classifier
                tilt = None if gradient is None else gradient(z, t_, labels)
                z = self._reverse_step(z, x_hat, t_, s, method, tilt)
        finally:
            self.train(was_training)
        if self.autoencoder is None:
            return self._mode(z)
        return self.autoencoder.decode(self._mode(z))

    def _sample_labels(self, n: int, y: Any, classifier: Any) -> torch.Tensor | None:
        """The labels (n,) of a draw, checked (drawn uniformly where None), for a
        conditional model or a classifier; None for neither."""
        classes = self.num_classes if classifier is None else classifier.num_classes
        if classes is None:
            if y is not None:
                raise ValueError("y: this diffusion model is not conditional, got labels")
            return None
        device = self.data_shift.device
        if y is None:
            return torch.randint(classes, (n,), device=device)
        return as_labels(y, n, classes).to(device)

    def _reverse_step(self, z, x_hat, t, s: int, method: str, tilt) -> torch.Tensor:
        """z_s from z_t (levels t (n,) to s) given x_hat: an ancestral draw, its mean moved
        by Sigma tilt, or a DDIM step with the noise estimate eps_hat - sigma_t tilt."""
        if method == "ancestral":
            step = self._q_posterior(z, x_hat, t)
            loc = step.mean if tilt is None else step.mean + step.variance * tilt
            return loc + step.stddev * torch.randn_like(z)
        _, alpha_t, sigma_t = self._levels(t, z)
        _, alpha_s, sigma_s = self._levels(t * 0 + s, z)
        if tilt is not None:  # eps_hat - sigma_t tilt, read through x_hat
            x_hat = self._clipped(x_hat + sigma_t**2 * tilt / alpha_t)
        eps_hat = (z - alpha_t * x_hat) / sigma_t
        return alpha_s * x_hat + sigma_s * eps_hat

    def _classifier_gradient(self, classifier: Any, scale: float):
        """``(z, t, y) -> scale * grad_z log p(y | z_t)`` of ``classifier``, checked against
        this model; None without a classifier."""
        if not (isinstance(scale, (int, float)) and math.isfinite(scale)):
            raise ValueError(f"classifier_scale: expected a number, got {scale!r}")
        if classifier is None:
            if scale != 1.0:
                raise ValueError(
                    f"classifier_scale: expected a classifier to scale, got classifier=None "
                    f"with classifier_scale={scale!r}"
                )
            return None
        from pyrogen.models.noise_classifier import NoiseConditionalClassifier  # imports this

        if not isinstance(classifier, NoiseConditionalClassifier):
            raise TypeError(
                "classifier: expected a NoiseConditionalClassifier (built by its for_model), "
                f"got {type(classifier).__name__}"
            )
        classifier.check_matches(self)
        return lambda z, t, y: scale * classifier.log_prob_gradient(z, t, y)

    def _sampling_steps(self, steps: int | None, method: str, guidance: float) -> int:
        """The reverse steps ``sample`` takes (``steps``, or the method's default), with
        ``method`` and ``guidance`` checked."""
        check_choice("method", method, ("ancestral", "ddim"))
        if not (isinstance(guidance, (int, float)) and math.isfinite(guidance)):
            raise ValueError(f"guidance: expected a number, got {guidance!r}")
        T = self.timesteps
        if steps is None:
            steps = T if method == "ancestral" else min(50, T)
        check_int("steps", steps)
        if method == "ancestral" and steps != T:
            raise ValueError(
                f"steps: ancestral sampling takes all {T} steps, got {steps}; use method='ddim'"
            )
        if steps > T:
            raise ValueError(f"steps: expected at most timesteps={T}, got {steps}")
        return steps

    def _combined_x_hat(self, z, t, labels, guidance: float) -> torch.Tensor:
        """x_hat with classifier-free guidance: unconditional + s (conditional -
        unconditional) (the conditional estimate alone for s = 1), unclipped."""
        if labels is None or guidance == 1:
            return self._x_hat(z, t, labels)
        null = torch.full_like(labels, self.num_classes)
        unconditional = self._x_hat(z, t, null)
        if guidance == 0:
            return unconditional
        return unconditional + guidance * (self._x_hat(z, t, labels) - unconditional)

    def _guided_x_hat(self, z, t, labels, guidance: float) -> torch.Tensor:
        return self._clipped(self._combined_x_hat(z, t, labels, guidance))

    def _clipped(self, x_hat: torch.Tensor) -> torch.Tensor:
        """x_hat within [-1, 1] (bounded data) or the training data's range (see sample)."""
        if self.likelihood != "gaussian":
            return x_hat.clamp(-1, 1)
        return x_hat.clamp(self.sample_low.view(self.shape), self.sample_high.view(self.shape))

    def _mode(self, z_0: torch.Tensor) -> torch.Tensor:
        if self.likelihood == "gaussian":
            return self._observation(z_0).mean
        if self.likelihood == "bernoulli":
            return (z_0 > 0).to(z_0.dtype)
        level = self._observation(z_0).base_dist.mode
        return level.to(z_0.dtype) / (self.levels - 1)


def scale_data(
    x: torch.Tensor, likelihood: str, shift: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """x (N, ...) as a diffusion model of ``likelihood`` noises it: 2 x - 1 (in [-1, 1]) for
    bounded data, (x - shift) / scale per value (shift and scale flat, (D,)) for Gaussian."""
    if likelihood == "gaussian":
        return ((x.flatten(1) - shift) / scale).reshape(x.shape)
    return 2 * x - 1


def _frozen_autoencoder(
    autoencoder: VAE | dict[str, Any] | None, data_shape, likelihood: str
) -> VAE | None:
    """A trained VAE whose codes a latent diffusion model models, with its weights frozen;
    a ``{"family": ..., "config": ...}`` of ``config`` is built afresh (its weights come
    with ``load_state_dict``)."""
    if autoencoder is None:
        return None
    if isinstance(autoencoder, dict) and {"family", "config"} <= set(autoencoder):
        from pyrogen.models import REGISTRY  # the registry imports this module

        autoencoder = REGISTRY[autoencoder["family"]](**autoencoder["config"])
    if not isinstance(autoencoder, VAE) or autoencoder.context_dim:
        raise ValueError(
            "autoencoder: expected a trained pyrogen VAE without conditions (its encoder gives "
            f"the codes to model), got {type(autoencoder).__name__}"
        )
    if tuple(autoencoder.data_shape) != tuple(data_shape):
        raise ValueError(
            f"autoencoder: its data_shape {tuple(autoencoder.data_shape)} differs from "
            f"data_shape {tuple(data_shape)}"
        )
    if likelihood != "gaussian":
        raise ValueError(
            f"likelihood: the codes of an autoencoder are real vectors, expected 'gaussian', "
            f"got {likelihood!r}"
        )
    autoencoder.eval()
    autoencoder.requires_grad_(False)
    return autoencoder


def _normal(loc: torch.Tensor, scale: torch.Tensor, event_dims: int) -> dist.Distribution:
    return dist.Normal(loc, scale).to_event(event_dims)


class _DiscretizedGaussian(dist.TorchDistribution):
    """p(k) proportional to N(loc; v_k, scale^2) over L levels v_k = -1 + 2k / (L - 1).

    The normalizer sums only the levels within 8 scales of ``loc`` (wider than any term
    above exp(-32) of the largest), so scoring costs a few levels per value, not L; with
    a scale of several levels it falls back to all L.
    """

    arg_constraints: dict = {}
    has_enumerate_support = False

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, levels: int) -> None:
        self.loc, self.scale, self.levels = loc, scale.expand_as(loc), levels
        super().__init__(loc.shape, validate_args=False)

    @property
    def support(self):
        return dist.constraints.integer_interval(0, self.levels - 1)

    def _value(self, k: torch.Tensor) -> torch.Tensor:
        return -1 + 2 * k.to(self.loc.dtype) / (self.levels - 1)

    def _log_normalizer(self) -> torch.Tensor:
        spacing = 2 / (self.levels - 1)
        width = math.ceil(8 * float(self.scale.detach().max()) / spacing) + 1
        if 2 * width + 1 >= self.levels:
            k = torch.arange(self.levels, device=self.loc.device)
        else:
            centre = self.mode.unsqueeze(-1)
            k = centre + torch.arange(-width, width + 1, device=self.loc.device)
        logits = -((self.loc.unsqueeze(-1) - self._value(k)) ** 2) / (
            2 * self.scale.unsqueeze(-1) ** 2
        )
        inside = (k >= 0) & (k < self.levels)
        return torch.where(inside, logits, -math.inf).logsumexp(-1)

    @property
    def mode(self) -> torch.Tensor:
        """The level nearest ``loc``, shape batch_shape."""
        k = ((self.loc + 1) * (self.levels - 1) / 2).round()
        return k.clamp(0, self.levels - 1).long()

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        logit = -((self.loc - self._value(value)) ** 2) / (2 * self.scale**2)
        return logit - self._log_normalizer()

    def sample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        k = torch.arange(self.levels, device=self.loc.device)
        logits = -((self.loc.unsqueeze(-1) - self._value(k)) ** 2) / (
            2 * self.scale.unsqueeze(-1) ** 2
        )
        return torch.distributions.Categorical(logits=logits).sample(sample_shape)

    def expand(self, batch_shape, _instance=None) -> _DiscretizedGaussian:
        shape = torch.Size(batch_shape)
        return _DiscretizedGaussian(self.loc.expand(shape), self.scale.expand(shape), self.levels)
