"""Generative adversarial networks whose generator is a Pyro model.

The generator is the generative program z ~ N(0, I), x ~ N(G(z[, y]), s^2) with a small
observation noise s, so ``pyro.infer.Predictive(gan.model)`` draws data like any family's
model; the discriminator (or critic) is a plain network. Training is **not** an ELBO: there
is no likelihood to bound. The two players take turns at every step of ``pyrogen.fit``
(:mod:`pyrogen.infer.players`) on the adversarial objective chosen by ``objective``:

* ``"nonsaturating"`` (Goodfellow et al. 2014): D minimizes softplus(-D(x)) + softplus(D(G(z))),
  G minimizes softplus(-D(G(z)));
* ``"hinge"`` (Lim & Ye 2017; Miyato et al. 2018): D minimizes relu(1 - D(x)) + relu(1 + D(G(z))),
  G minimizes -D(G(z));
* ``"wgan-gp"`` (Gulrajani et al. 2017): the critic minimizes D(G(z)) - D(x) plus the
  gradient penalty ``lambda (|grad D(x_hat)| - 1)^2`` on random interpolates, G minimizes
  -D(G(z)); the critic takes 5 turns per generator turn by default.

Stabilizers: two time scales (``discriminator_lr_scale``), an R1 penalty on real data
(``r1``, Mescheder et al. 2018; on by default for the nonsaturating and hinge objectives),
and an exponential moving average of the generator's weights (``ema``) that ``sample``
draws from. Data are standardized inside the model, as the flow does (``standardize``).
Judge samples with :mod:`pyrogen.diagnostics.sample_tests` (two-sample tests, mode
coverage): a GAN has no likelihood to report.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn import pyro_method

from pyrogen.checks import (
    as_examples,
    as_labels,
    check_choice,
    check_data_shape,
    check_int,
    check_ints,
    check_number,
)
from pyrogen.models.base import GenerativeModel, Player, generative_plate
from pyrogen.nn import build_decoder, one_hot
from pyrogen.nn.critic import Critic
from pyrogen.nn.optim import adam

#: The adversarial objectives ``GAN(loss=...)`` knows.
LOSSES = ("nonsaturating", "hinge", "wgan-gp")
#: The networks by name (``generator=``, ``discriminator=``).
NETWORKS = ("mlp", "conv")
#: gamma of the R1 penalty with ``r1=None`` for the objectives it stabilizes (Mescheder et
#: al. 2018: it makes non-saturating training converge locally; StyleGAN's default).
R1_DEFAULT = 1.0


class GAN(GenerativeModel):
    """A GAN: the generator a Pyro model, the discriminator a network, trained in turns.

    Args:
        data_shape: shape of one example, e.g. ``(2,)`` or ``(1, 28, 28)``.
        latent_dim: size of z.
        generator: ``"mlp"``, ``"conv"`` (images (C, H, W), transposed convolutions) or
            an ``nn.Module`` z (..., L)[, c] -> (..., ``*data_shape``).
        discriminator: ``"mlp"`` or ``"conv"`` (DCGAN-style) for :class:`~pyrogen.nn.critic.Critic`,
            or an ``nn.Module`` x (..., ``*data_shape``)[, c] -> scores (...,).
        hidden: hidden widths of the MLP networks.
        objective: the adversarial loss, one of :data:`LOSSES` (``loss`` is every family's
            training objective in the contract).
        num_classes: C for a conditional GAN (labels into both networks); None for none.
        gradient_penalty: lambda of ``"wgan-gp"``.
        r1: gamma of the R1 penalty ``gamma / 2 |grad D(x)|^2`` on real rows x as the
            discriminator sees them (standardized unless ``standardize=False``, so gamma is
            free of the data's units); 0: none; None (default): 1 for ``"nonsaturating"``
            and ``"hinge"``, 0 for ``"wgan-gp"`` (whose gradient penalty plays that role).
        discriminator_lr_scale: the discriminator's learning rate as a multiple of ``lr``
            (two time scales, Heusel et al. 2017: the discriminator learns faster).
        discriminator_updates: the discriminator's turns per generator turn (default 5 for
            ``"wgan-gp"``, else 1).
        ema: decay of the moving average of the generator's weights that ``sample`` uses
            (None: the trained weights themselves).
        observation_sd: s, the model's observation noise around G(z) (standardized units).
        standardize: shift and scale each value by its training mean and standard deviation
            inside the model (False: model the data as given, e.g. pixels in [0, 1], where
            a nearly constant pixel would otherwise be scaled up by its tiny deviation).

    Shapes:
        x (N, ``*data_shape``); y (N,) labels of a conditional GAN.
    """

    family = "gan"
    has_likelihood = False
    #: Adam with beta_1 = 0.5, as GANs are usually trained (DCGAN, Radford et al. 2016).
    fit_defaults = {
        "steps": 5000,
        "batch_size": 128,
        "lr": 2e-4,
        "optim": functools.partial(adam, betas=(0.5, 0.999)),
    }
    choices = {"objective": LOSSES, "generator": NETWORKS, "discriminator": NETWORKS}

    def __init__(
        self,
        data_shape: Sequence[int] | int,
        latent_dim: int = 8,
        *,
        generator: str | torch.nn.Module = "mlp",
        discriminator: str | torch.nn.Module = "mlp",
        hidden: Sequence[int] = (128, 128),
        objective: str = "nonsaturating",
        num_classes: int | None = None,
        gradient_penalty: float = 10.0,
        r1: float | None = None,
        discriminator_lr_scale: float = 2.0,
        discriminator_updates: int | None = None,
        ema: float | None = 0.999,
        observation_sd: float = 0.01,
        standardize: bool = True,
    ) -> None:
        super().__init__()
        self.data_shape = check_data_shape(data_shape)
        self.latent_dim = check_int("latent_dim", latent_dim)
        self.objective = check_choice("objective", objective, LOSSES)
        self.hidden = check_ints("hidden", hidden)
        self.num_classes = None if num_classes is None else check_int("num_classes", num_classes, 2)
        self.gradient_penalty = check_number("gradient_penalty", gradient_penalty, allow_zero=True)
        self.r1 = None if r1 is None else check_number("r1", r1, allow_zero=True)
        #: the gamma used: ``r1``, or its default for the objective
        self.r1_gamma = (
            self.r1 if r1 is not None else 0.0 if self.objective == "wgan-gp" else R1_DEFAULT
        )
        self.discriminator_lr_scale = check_number("discriminator_lr_scale", discriminator_lr_scale)
        default_updates = 5 if objective == "wgan-gp" else 1
        updates = default_updates if discriminator_updates is None else discriminator_updates
        self.discriminator_updates = check_int("discriminator_updates", updates)
        if ema is not None and not (isinstance(ema, int | float) and 0 <= ema < 1):
            raise ValueError(f"ema: expected a decay in [0, 1) or None, got {ema!r}")
        self.ema = None if ema is None else float(ema)
        self.observation_sd = check_number("observation_sd", observation_sd)
        if not isinstance(standardize, bool):
            raise ValueError(f"standardize: expected True or False, got {standardize!r}")
        self.standardize = standardize
        context = num_classes or 0
        self.generator_kind = generator if isinstance(generator, str) else "custom"
        self.discriminator_kind = discriminator if isinstance(discriminator, str) else "custom"
        self.generator = build_decoder(
            _checked_network("generator", generator), self.latent_dim, self.data_shape,
            context_dim=context, hidden=self.hidden if generator == "mlp" else None,
        )  # fmt: skip
        self.discriminator = (
            discriminator
            if isinstance(discriminator, torch.nn.Module)
            else Critic(
                self.data_shape,
                _checked_network("discriminator", discriminator),
                hidden=self.hidden,
                context_dim=context,
            )  # fmt: skip
        )
        self.average = None if self.ema is None else copy.deepcopy(self.generator)
        if self.average is not None:
            self.average.requires_grad_(False)
        features = math.prod(self.data_shape)
        self.register_buffer("data_shift", torch.zeros(features))
        self.register_buffer("data_scale", torch.ones(features))
        self.register_buffer("averaged_steps", torch.zeros((), dtype=torch.long))

    # --- what the contract asks ---------------------------------------------------------
    @property
    def loss(self) -> Any:
        """None of Pyro's ELBOs: a GAN has no likelihood; see :meth:`player_loss`."""
        raise NotImplementedError(
            "GAN: no ELBO to train with -- the players take turns on the adversarial loss "
            "(pyrogen.fit does this; see player_loss)"
        )

    @property
    def training_objective(self) -> str:
        return (
            f"discriminator loss ({self.objective} GAN), nats per example; not a bound on "
            "any likelihood"
        )

    @property
    def report_plots(self) -> tuple[str, ...]:
        return ("elbo", "sample_scatter") + self.label_sample_plots

    def players(self) -> tuple[Player, ...]:
        """The discriminator (``discriminator_updates`` turns at ``discriminator_lr_scale``
        times the learning rate), then the generator (whose moving average follows it)."""
        return (
            Player("discriminator", list(self.discriminator.parameters()),
                   self.discriminator_lr_scale, self.discriminator_updates),
            Player("generator", list(self.generator.parameters()),
                   after_step=None if self.average is None else self.update_average),
        )  # fmt: skip

    def player_loss(
        self, player: str, x: torch.Tensor, y: torch.Tensor | None, num_data: int
    ) -> torch.Tensor:
        """The ``"discriminator"``'s or the ``"generator"``'s loss on a batch x (B, ...)
        and fresh draws z, summed over the batch and scaled to ``num_data`` rows."""
        real = self._standardized(x)
        context = self._context(y, len(x))
        fake = self._generate(torch.randn(len(x), self.latent_dim, device=real.device,
                                          dtype=real.dtype), context)  # fmt: skip
        if player == "generator":
            score = self.discriminator(fake, context)
            per_row = F.softplus(-score) if self.objective == "nonsaturating" else -score
        elif player == "discriminator":
            per_row = self._discriminator_rows(real, fake.detach(), context)
        else:
            raise ValueError(f"player: expected 'discriminator' or 'generator', got {player!r}")
        return per_row.sum() * (num_data / len(x))

    def _discriminator_rows(
        self, real: torch.Tensor, fake: torch.Tensor, context: torch.Tensor | None
    ) -> torch.Tensor:
        if self.r1_gamma > 0 or self.objective == "wgan-gp":
            real = real.requires_grad_(True)
        real_score, fake_score = (
            self.discriminator(real, context),
            self.discriminator(fake, context),
        )
        if self.objective == "nonsaturating":
            rows = F.softplus(-real_score) + F.softplus(fake_score)
        elif self.objective == "hinge":
            rows = F.relu(1 - real_score) + F.relu(1 + fake_score)
        else:
            ones = [1] * len(self.data_shape)
            share = torch.rand(len(real), *ones, device=real.device, dtype=real.dtype)
            between = (share * real + (1 - share) * fake).requires_grad_(True)
            slope = _input_gradient(self.discriminator(between, context), between)
            rows = fake_score - real_score + self.gradient_penalty * (slope.norm(dim=1) - 1) ** 2
        if self.r1_gamma > 0:
            rows = rows + self.r1_gamma / 2 * _input_gradient(real_score, real).square().sum(1)
        return rows

    @torch.no_grad()
    def update_average(self) -> None:
        """Move the averaged generator towards the trained one (decay ``ema``, warmed up as
        min(ema, (1 + n) / (10 + n)) after n updates, so early weights fade fast)."""
        n = int(self.averaged_steps)
        decay = min(self.ema, (1 + n) / (10 + n))
        for average, current in zip(
            self.average.parameters(), self.generator.parameters(), strict=True
        ):
            average.lerp_(current, 1 - decay)
        self.averaged_steps += 1

    # --- the generative program -----------------------------------------------------------
    @pyro_method
    def model(
        self,
        x: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
        num_data: int | None = None,
    ) -> None:
        """z ~ N(0, I), x ~ N(G(z[, y]), s^2) in the data's units; x observed when given,
        else ``len(y)`` or ``num_data`` (default 1) rows are drawn."""
        plate, rows = generative_plate(x, y, num_data)
        context = self._context(y, rows)
        shift, scale = self.data_shift, self.data_scale
        with plate:
            zeros = shift.new_zeros(rows, self.latent_dim)
            z = pyro.sample("z", dist.Normal(zeros, 1.0).to_event(1))
            mean = (self._generate(z, context).flatten(1) * scale + shift).reshape(
                rows, *self.data_shape
            )
            noise = (self.observation_sd * scale).reshape(self.data_shape)
            observed = None if x is None else self._prepare(x)
            pyro.sample("x", dist.Normal(mean, noise).to_event(len(self.data_shape)), obs=observed)

    @pyro_method
    def guide(
        self, x: torch.Tensor, y: torch.Tensor | None = None, num_data: int | None = None
    ) -> None:
        """Empty: a GAN infers nothing about z (it has no encoder)."""

    @torch.no_grad()
    def sample(self, n: int, y: Any = None) -> torch.Tensor:
        """Draw n examples (n, ``*data_shape``) from the averaged generator (or the trained
        one with ``ema=None``); labels drawn uniformly for a conditional GAN when y is None."""
        n = check_int("n", n)
        if self.num_classes is not None and y is None:
            y = torch.randint(self.num_classes, (n,), device=self.data_shift.device)
        context = self._context(y, n)
        z = torch.randn(
            n, self.latent_dim, device=self.data_shift.device, dtype=self.data_shift.dtype
        )
        network = self.generator if self.average is None else self.average
        flat = network(z, context) if context is not None else network(z)
        return (flat.flatten(1) * self.data_scale + self.data_shift).reshape(n, *self.data_shape)

    # --- data -----------------------------------------------------------------------------
    def setup(self, x: torch.Tensor, y: torch.Tensor | None = None, *, seed: int = 0) -> None:
        """Check the data (and labels); standardize from them (``standardize``); start the
        average."""
        x = self._prepare(x)
        self._context(y, len(x))
        if self.standardize:
            flat = x.flatten(1)
            self.data_shift.copy_(flat.mean(0))
            self.data_scale.copy_(flat.std(0).clamp(min=1e-6) if len(flat) > 1 else 1.0)
        if self.average is not None and int(self.averaged_steps) == 0:
            self.average.load_state_dict(self.generator.state_dict())

    def _prepare(self, x: Any) -> torch.Tensor:
        x = as_examples(x, self.data_shape, dtype=self.data_shift.dtype)
        return x.to(self.data_shift.device)

    def _standardized(self, x: torch.Tensor) -> torch.Tensor:
        # Batches of fit, checked once when fit was called: no value check every step.
        flat = (x.to(self.data_shift).flatten(1) - self.data_shift) / self.data_scale
        return flat.reshape(len(x), *self.data_shape)

    def _context(self, y: Any, rows: int) -> torch.Tensor | None:
        if self.num_classes is None:
            if y is not None:
                raise ValueError("y: this GAN is not conditional (num_classes=None), got labels")
            return None
        if y is None:
            raise ValueError(
                f"y: expected labels of shape ({rows},) for a conditional GAN, got None"
            )
        labels = as_labels(y, rows, self.num_classes).to(self.data_shift.device)
        return one_hot(labels, self.num_classes, self.data_shift.dtype)

    def _generate(self, z: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """Standardized examples (B, ``*data_shape``) from z (B, L)."""
        return self.generator(z, context) if context is not None else self.generator(z)

    @property
    def label_count(self) -> int | None:
        return self.num_classes

    @property
    def takes_labels(self) -> bool:
        return self.num_classes is not None


def _checked_network(name: str, network: str | torch.nn.Module) -> str | torch.nn.Module:
    if isinstance(network, torch.nn.Module):
        return network
    return check_choice(name, network, NETWORKS)


def _input_gradient(scores: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """d sum(scores) / d inputs, flattened per row (B, F), kept in the graph (penalties)."""
    (gradient,) = torch.autograd.grad(scores.sum(), inputs, create_graph=True)
    return gradient.flatten(1)
