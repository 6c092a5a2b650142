"""A noise-conditional classifier p(y | z_t): the classifier of classifier guidance.

Classifier guidance (Dhariwal & Nichol 2021) steers a diffusion model towards a class y with
grad_z log p(y | z_t), so the classifier must read the diffusion model's own noisy latents
z_t at every level t. It is trained on draws of that model's forward process, written as a
Pyro model with y observed::

    model:  t ~ Uniform{0..T},  z_t ~ q(z_t | x) = N(alpha_t x, sigma_t^2),
            y ~ Categorical(softmax(f(z_t, t / T)))                      (y observed)
    guide:  t ~ Uniform{0..T},  z_t ~ q(z_t | x)

The level and the latent are sample sites of both programs, drawn from the same
distributions: the guide's draws are replayed into the model, their log-densities cancel
exactly in the ELBO, and what is left is E_{t, z_t} log p(y | z_t, t), the expected
log-likelihood of the labels under the forward-process augmentation, which ``Trace_ELBO``
estimates with one draw per row. As sites (not hidden torch draws) the augmentation shows
in traces, ``poutine.condition`` fixes a level, and the contract's checks (site names,
gradients) apply unchanged.

The schedule and the data's scaling must be the diffusion model's own, since guidance acts
on its z: :meth:`NoiseConditionalClassifier.for_model` copies its levels gamma_0..gamma_T
(a learned schedule too) and its standardization, and ``DiffusionVAE.sample(...,
classifier=...)`` checks them. Latent diffusion (a model of an autoencoder's codes) is not
supported: ``for_model`` refuses it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import Trace_ELBO
from pyro.nn import pyro_method
from torch import nn

from pyrogen.checks import as_examples, as_labels, check_choice, check_int, check_ints
from pyrogen.models.base import data_plate
from pyrogen.models.diffusion import LIKELIHOODS, DiffusionVAE, noise_levels, scale_data
from pyrogen.models.discriminative import DiscriminativeModel
from pyrogen.models.vae import check_data_shape
from pyrogen.nn import MLP, timestep_embedding
from pyrogen.nn.conv import conv_features
from pyrogen.nn.schedules import SCHEDULES, NoiseSchedule

# Site names, shared by model and guide.
LEVEL = "t"
LATENT = "z_t"
LABEL = "y"
NETWORKS = ("mlp", "conv")
# The size of the time embedding.
_TIME_DIM = 64
# Relative tolerance of the schedule and scaling checks against a diffusion model.
_MATCH_RTOL = 1e-5


class NoisyInputClassifier(nn.Module):
    """Logits of p(y | z_t) from a noisy example z_t and its time t / T.

    The features of z (flattened for ``"mlp"``; strided convolutions for ``"conv"``) are
    joined with a sinusoidal embedding of t (:func:`~pyrogen.nn.timestep_embedding`,
    Linear, SiLU) and mapped by an MLP to C logits.

    Args:
        data_shape: shape of one example; ``(C, H, W)`` or ``(H, W)`` for ``"conv"``.
        num_classes: C.
        kind: ``"mlp"`` or ``"conv"``.
        hidden: widths of the MLP's hidden layers.
        channels: base channels of ``"conv"`` (two convolutions, C and 2C channels).

    Shapes:
        z (B, ``*data_shape``), t (B,) in [0, 1] -> logits (B, C).

    Example:
        >>> net = NoisyInputClassifier((2,), 3, hidden=(16,))
        >>> net(torch.randn(5, 2), torch.rand(5)).shape
        torch.Size([5, 3])
    """

    def __init__(
        self,
        data_shape: Sequence[int],
        num_classes: int,
        kind: str = "mlp",
        *,
        hidden: Sequence[int] = (256, 256),
        channels: int = 32,
    ) -> None:
        super().__init__()
        self.data_shape = check_ints("data_shape", data_shape, allow_empty=False)
        self.kind = check_choice("network", kind, NETWORKS)
        if kind == "conv":
            if len(self.data_shape) not in (2, 3):
                raise ValueError(
                    f"network: 'conv' needs images, data_shape (H, W) or (C, H, W), got "
                    f"{self.data_shape}"
                )
            image = self.data_shape if len(self.data_shape) == 3 else (1, *self.data_shape)
            channels = check_int("channels", channels)
            self.features, size = conv_features(image, (channels, 2 * channels), nn.SiLU)
            self.image_shape = image
        else:
            self.features, size = nn.Flatten(), math.prod(self.data_shape)
        self.time = nn.Sequential(nn.Linear(_TIME_DIM, _TIME_DIM), nn.SiLU())
        self.head = MLP(size + _TIME_DIM, hidden, check_int("num_classes", num_classes, 2),
                        activation=nn.SiLU)  # fmt: skip

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Args: z (B, ``*data_shape``); t (B,). Returns: logits (B, C)."""
        if self.kind == "conv":
            z = z.reshape(-1, *self.image_shape)
        time = self.time(timestep_embedding(t.to(z.dtype), _TIME_DIM))
        return self.head(torch.cat([self.features(z), time], -1))


class NoiseConditionalClassifier(DiscriminativeModel):
    """p(y | z_t, t): a classifier of a diffusion model's noisy latents, for guidance.

    Build it with :meth:`for_model` from the diffusion model it will guide (the same
    schedule, levels and data scaling); the constructor builds one for a named fixed
    schedule, standardizing Gaussian data itself in :meth:`setup`.

    Args:
        data_shape: shape of one example (as the diffusion model's).
        num_classes: C; labels are 0..C-1 (every row labelled).
        timesteps: T, the diffusion steps.
        schedule: the noise schedule's name (``"linear"``, ``"cosine"``, ``"learned"``: its
            levels at construction; :meth:`for_model` copies the trained ones).
        likelihood: the diffusion model's, which says how x is scaled before noising:
            ``"gaussian"`` (standardized), ``"bernoulli"`` or ``"discretized"`` (2 x - 1).
        network: ``"mlp"``, ``"conv"`` (images), or a module ``f(z, t)`` mapping z (B,
            ``*data_shape``) and t / T (B,) in [0, 1] to logits (B, C); None: ``"conv"``
            for images, else ``"mlp"``.
        hidden: hidden widths of the network's MLP.
        channels: base channels of ``"conv"``.

    Shapes:
        x (N, ``*data_shape``) in the data's units; y (N,); z (N, ``*data_shape``) in the
        diffusion's units (x scaled, then noised).

    Example:
        >>> import pyrogen
        >>> diffusion = pyrogen.DiffusionVAE((2,), timesteps=10, hidden=(16,))
        >>> classifier = NoiseConditionalClassifier.for_model(diffusion, 3, hidden=(16,))
        >>> x, y = torch.randn(30, 2), torch.arange(30) % 3
        >>> _ = pyrogen.fit(classifier, x, y, steps=5, progress=False)
        >>> diffusion.sample(4, [0, 1, 2, 0], classifier=classifier, classifier_scale=2.0).shape
        torch.Size([4, 2])
    """

    family = "noise_classifier"
    fit_defaults = {"steps": 3000, "lr": 1e-3, "batch_size": 128, "early_stopping": None}
    choices = {"schedule": SCHEDULES, "likelihood": LIKELIHOODS, "network": NETWORKS}
    reads_images = True
    conditioned_on = "z_t"

    def __init__(
        self,
        data_shape: Sequence[int] | int,
        num_classes: int = 2,
        timesteps: int = 1000,
        schedule: str = "linear",
        likelihood: str = "gaussian",
        *,
        network: str | nn.Module | None = None,
        hidden: Sequence[int] = (256, 256),
        channels: int = 32,
    ) -> None:
        super().__init__()
        self.data_shape = check_data_shape(data_shape)
        self.num_classes = check_int("num_classes", num_classes, 2)
        self.timesteps = check_int("timesteps", timesteps)
        self.schedule = check_choice("schedule", schedule, SCHEDULES)
        self.likelihood = check_choice("likelihood", likelihood, LIKELIHOODS)
        self.hidden = check_ints("hidden", hidden)
        self.channels = check_int("channels", channels)
        if isinstance(network, nn.Module):
            self.network_kind, self.network = "custom", network
        else:
            image = len(self.data_shape) in (2, 3)
            kind = network if network is not None else ("conv" if image else "mlp")
            self.network_kind = check_choice("network", kind, NETWORKS)
            self.network = NoisyInputClassifier(
                self.data_shape, self.num_classes, kind, hidden=self.hidden, channels=channels
            )
        # The levels gamma_0..gamma_T and the scaling of x: the diffusion model's, once
        # for_model has copied them (then setup keeps them).
        self.register_buffer("gamma", NoiseSchedule(schedule, self.timesteps)().detach().clone())
        features = math.prod(self.data_shape)
        self.register_buffer("data_shift", torch.zeros(features))
        self.register_buffer("data_scale", torch.ones(features))
        self.register_buffer("scaling_given", torch.tensor(False))

    @classmethod
    def for_model(
        cls, diffusion: DiffusionVAE, num_classes: int | None = None, **options: Any
    ) -> NoiseConditionalClassifier:
        """A classifier of ``diffusion``'s latents: its data shape, T, schedule (the levels
        copied, a learned schedule's trained ones too), likelihood and data scaling.

        Args:
            diffusion: a fitted :class:`~pyrogen.DiffusionVAE` (not a latent one).
            num_classes: C; default the diffusion model's classes, if conditional.
            options: ``network``, ``hidden``, ``channels``.

        Returns:
            a new classifier on ``diffusion``'s device and in its dtype. Its network is
            drawn from torch's random state as this runs (seed torch first for a
            reproducible fit): with the diffusion model's levels copied in, it is no
            longer as its constructor built it, so :func:`pyrogen.fit`'s ``seed`` keeps
            its values rather than drawing them again.
        """
        if not isinstance(diffusion, DiffusionVAE):
            raise TypeError(f"diffusion: expected a DiffusionVAE, got {type(diffusion).__name__}")
        if diffusion.autoencoder is not None:
            raise ValueError(
                "diffusion: expected a diffusion model of the data, got a latent diffusion "
                "model (of an autoencoder's codes), which classifier guidance does not support"
            )
        classes = diffusion.num_classes if num_classes is None else num_classes
        if classes is None:
            raise ValueError(
                "num_classes: expected the number of classes (the diffusion model is not "
                "conditional, so it has none to copy), got None"
            )
        classifier = cls(
            diffusion.data_shape, classes, diffusion.timesteps, diffusion.schedule_kind,
            diffusion.likelihood, **options,
        )  # fmt: skip
        classifier.to(device=diffusion.data_shift.device, dtype=diffusion.data_shift.dtype)
        with torch.no_grad():
            classifier.gamma.copy_(diffusion.schedule())
            classifier.data_shift.copy_(diffusion.data_shift)
            classifier.data_scale.copy_(diffusion.data_scale)
            classifier.scaling_given.fill_(True)
        return classifier

    def check_matches(self, diffusion: DiffusionVAE) -> None:
        """Raise a ValueError naming what differs if this classifier was not built for
        ``diffusion``'s latents (shape, T, levels, scaling, classes, device)."""
        if diffusion.autoencoder is not None:
            raise ValueError(
                "classifier: a latent diffusion model's z are an autoencoder's codes, which "
                "a classifier of data does not read; classifier guidance needs a diffusion "
                "model of the data"
            )
        checks = [
            ("data_shape", tuple(self.data_shape), tuple(diffusion.data_shape)),
            ("timesteps", self.timesteps, diffusion.timesteps),
            ("likelihood", self.likelihood, diffusion.likelihood),
        ]
        if diffusion.num_classes is not None:
            checks.append(("num_classes", self.num_classes, diffusion.num_classes))
        for name, own, theirs in checks:
            if own != theirs:
                raise ValueError(
                    f"classifier: expected one of the diffusion model's latents, with its "
                    f"{name} {theirs!r}, got {name} {own!r}"
                )
        if self.gamma.device != diffusion.data_shift.device:
            raise ValueError(
                f"classifier: expected it on the diffusion model's device "
                f"{diffusion.data_shift.device}, got {self.gamma.device}"
            )
        gamma = diffusion.schedule().detach()
        scaled = self.likelihood == "gaussian"
        for name, own, theirs in [
            ("noise levels (schedule)", self.gamma, gamma),
            ("data shift", self.data_shift, diffusion.data_shift if scaled else self.data_shift),
            ("data scale", self.data_scale, diffusion.data_scale if scaled else self.data_scale),
        ]:
            if not torch.allclose(own.to(theirs.dtype), theirs, rtol=_MATCH_RTOL, atol=1e-6):
                raise ValueError(
                    f"classifier: expected the diffusion model's {name}, got different ones "
                    "(build the classifier with NoiseConditionalClassifier.for_model(diffusion))"
                )

    # --- structure and training -----------------------------------------------------------
    @property
    def loss(self) -> Trace_ELBO:
        """``Trace_ELBO()``: the level and latent sites cancel, leaving minus E log p(y | z_t)."""
        return Trace_ELBO()

    def _levels(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return noise_levels(self.gamma, t, like, len(self.data_shape))

    def _scaled(self, x: torch.Tensor) -> torch.Tensor:
        return scale_data(x, self.likelihood, self.data_shift, self.data_scale)

    def _augmentation(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw the sites t ~ Uniform{0..T} and z_t ~ q(z_t | x) (in a plate); returns both."""
        uniform = x.new_zeros(x.shape[0], self.timesteps + 1)
        t = pyro.sample(LEVEL, dist.Categorical(logits=uniform))
        _, alpha, sigma = self._levels(t, x)
        scaled = self._scaled(x)
        loc, scale = alpha * scaled, sigma.expand_as(scaled)
        return t, pyro.sample(LATENT, dist.Normal(loc, scale).to_event(len(self.data_shape)))

    @pyro_method
    def model(
        self, x: torch.Tensor, y: torch.Tensor | None = None, num_data: int | None = None
    ) -> None:
        """t ~ Uniform{0..T}, z_t ~ q(z_t | x), y ~ Categorical(softmax(f(z_t, t / T))).

        Args:
            x: data (batch_size, ``*data_shape``) in the data's units.
            y: labels (batch_size,); None: drawn (predictive).
            num_data: rows in the full data set when ``x`` is a minibatch.
        """
        with data_plate(x, num_data):
            t, z = self._augmentation(x)
            pyro.sample(LABEL, dist.Categorical(logits=self.logits(z, t)), obs=y)

    @pyro_method
    def guide(
        self, x: torch.Tensor, y: torch.Tensor | None = None, num_data: int | None = None
    ) -> None:
        """The forward process's draws t and z_t, as in the model (they cancel)."""
        with data_plate(x, num_data):
            self._augmentation(x)

    def setup(self, x: torch.Tensor, y: torch.Tensor | None = None, *, seed: int = 0) -> None:
        """Check the data and labels; standardize Gaussian data from them unless the
        scaling is a diffusion model's (:meth:`for_model`)."""
        x = self._prepare(x)
        if y is None:
            raise ValueError(
                f"y: expected the labels (N,) of the rows, got None "
                f"({self.discriminative_reason.strip()})"
            )
        as_labels(y, x.shape[0], self.num_classes)
        if self.likelihood == "gaussian" and not bool(self.scaling_given):
            flat = x.flatten(1)
            self.data_shift.copy_(flat.mean(0))
            self.data_scale.copy_(flat.std(0).clamp(min=1e-6) if len(flat) > 1 else 1.0)

    def _prepare(self, x: Any, name: str = "x") -> torch.Tensor:
        bounded = None if self.likelihood == "gaussian" else f"for likelihood={self.likelihood!r}"
        x = as_examples(
            x, self.data_shape, dtype=self.gamma.dtype, name=name, unit_interval=bounded
        )
        return x.to(self.gamma.device)

    # --- the classifier -------------------------------------------------------------------
    def logits(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The logits of p(y | z_t) (N, C), for latents z (N, ``*data_shape``) in the
        diffusion's units at integer levels t (N,)."""
        return self.network(z, t.to(z.dtype) / self.timesteps)

    def log_prob_gradient(self, z: torch.Tensor, t: torch.Tensor, y: torch.Tensor):
        """grad_z log p(y | z_t = z), shape of z (N, ``*data_shape``), for levels t (N,)
        and labels y (N,): what guidance adds to the score. Computed with gradients on,
        also inside ``torch.no_grad()``; no parameter's ``.grad`` changes."""
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            log_p = torch.log_softmax(self.logits(z, t), -1).gather(-1, y[:, None])
            (gradient,) = torch.autograd.grad(log_p.sum(), z)
        return gradient

    def _log_probs(self, x: Any, level: int) -> torch.Tensor:
        """log p(y = k | z_t) at z_t = alpha_t x, (N, C), without gradients."""
        x = self._prepare(x)
        if check_int("level", level, 0) > self.timesteps:
            raise ValueError(f"level: expected at most timesteps={self.timesteps}, got {level}")
        t = torch.full((x.shape[0],), level, device=x.device)
        _, alpha, _ = self._levels(t, x)
        with torch.no_grad():
            return torch.log_softmax(self.logits(alpha * self._scaled(x), t), -1)

    def predict_proba(self, x: Any, *, level: int = 0) -> torch.Tensor:
        """p(y = k | z_t) at z_t = alpha_t x (the noise-free latent of x at ``level``; at
        level 0, sigma_0 ~ 1e-3, a classifier of x itself), shape (N, C)."""
        return self._log_probs(x, level).exp()

    def predict(self, x: Any, *, level: int = 0) -> torch.Tensor:
        """The most probable class of each row at ``level`` (see :meth:`predict_proba`),
        shape (N,) (int64)."""
        return self._log_probs(x, level).argmax(-1)

    def log_prob(self, x: Any, y: Any = None) -> torch.Tensor:
        """log p(y | z_0) per row (nats) at z_0 = alpha_0 x, shape (N,): the classifier at
        the nearly noiseless level 0, read as a classifier of x."""
        if y is None:
            raise ValueError(
                "y: expected labels, got None ("
                + self.discriminative_reason
                + "to score; log_prob(x, y) "
                "is log p(y | z_0))"
            )
        log_probs = self._log_probs(x, 0)
        labels = as_labels(y, log_probs.shape[0], self.num_classes).to(log_probs.device)
        return log_probs.gather(-1, labels[:, None])[:, 0]

    def sample(self, n: int, y: torch.Tensor | None = None) -> torch.Tensor:
        """Not available: the classifier has no p(x) to draw from; it guides
        ``DiffusionVAE.sample(n, y, classifier=...)``.

        Raises:
            NotImplementedError: always, saying why.
        """
        raise NotImplementedError(
            self.discriminative_reason + "to draw x from; draw with DiffusionVAE.sample(n, y, "
            "classifier=this classifier)"
        )

    # --- reporting (the contract of GenerativeModel) --------------------------------------
    @property
    def likelihood_target(self) -> str:
        """``"log p(y | z_0)"``: scored at the nearly noiseless level; no p(x)."""
        return "log p(y | z_0)"

    def score_descriptions(self, num_samples: int, values: int) -> dict[str, str]:
        """The exact conditional log-likelihood at the noise-free level 0."""
        return {
            "log_likelihood": "exact log p(y | z_0) at z_0 = alpha_0 x, the nearly noiseless "
            "level (the model is discriminative: it has no p(x))"
        }
