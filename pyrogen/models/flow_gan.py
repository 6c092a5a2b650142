"""Flow-GAN (Grover, Dhar & Ermon, AAAI 2018): a GAN whose generator is a normalizing flow,
so that the adversarial objective can be mixed with maximum likelihood and the model's
exact log-likelihood can be measured.

The generator maps z ~ N(0, I_D) to x = f^{-1}(z) with an invertible flow f on the
(standardized) data, so p(x) = N(f(x); 0, I) |det df/dx| is exact. Training is in turns as
for :class:`~pyrogen.models.gan.GAN` (same discriminator, objectives and stabilizers); the
generator minimizes the hybrid objective of the paper::

    adversarial_weight * (the GAN generator's loss)  +  likelihood_weight * (-log p(x))

on each batch, both summed over rows and scaled to the data set. ``likelihood_weight=0`` is
the purely adversarial Flow-GAN, ``adversarial_weight=0`` is maximum likelihood (the flow's
own objective: :class:`~pyrogen.models.flow.FlowDensity` trains to the same numbers). The
Pyro model is the flow's density on one observed site, so ``loss`` (raw SVI) is maximum
likelihood, and ``log_prob`` / ``pyrogen evaluate`` report the exact log-likelihood of the
generator that ``sample`` draws from.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pyro
import torch
from pyro.nn import pyro_method
from torch import nn
from torch.distributions import transforms as T
from zuko.distributions import NormalizingFlow
from zuko.transforms import ComposedTransform

from pyrogen.checks import check_choice, check_data_shape, check_number
from pyrogen.models.base import Player, generative_plate
from pyrogen.models.gan import GAN, LOSSES, NETWORKS
from pyrogen.models.objectives import AnalyticKLELBO
from pyrogen.nn.flows import FLOWS, FlowDistribution, build_flow

#: The observed site: flattened examples (N, D).
OBS = "x"


class FlowGenerator(nn.Module):
    """A flow as a GAN's generator: z (B, D)[, context (B, C)] -> x = f^{-1}(z) reshaped to
    (B, ``*data_shape``), differentiable in the flow's parameters; :meth:`distribution`
    gives the density of those x.

    Args:
        flow: a (lazy, possibly conditional) flow of :func:`pyrogen.nn.flows.build_flow`
            over D = prod(data_shape) values.
        data_shape: shape of one example.
    """

    def __init__(self, flow: nn.Module, data_shape: Sequence[int]) -> None:
        super().__init__()
        self.flow = flow
        self.data_shape = tuple(data_shape)

    def distribution(self, context: torch.Tensor | None = None) -> NormalizingFlow:
        """The flow's distribution over flattened examples (D,), given a context (B, C)."""
        return self.flow() if context is None else self.flow(context)

    def forward(self, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.distribution(context).transform.inv(z).reshape(len(z), *self.data_shape)


class FlowGAN(GAN):
    """A GAN with a normalizing-flow generator, trained adversarially, optionally mixed with
    maximum likelihood, and with an exact log-likelihood.

    Args:
        data_shape: shape of one example; the flow acts on its D flattened values.
        generator: the flow, one of :data:`pyrogen.nn.flows.FLOWS` (``"realnvp"`` draws in
            one pass; the autoregressive ``"nsf"`` / ``"maf"`` in D passes).
        transforms: number of flow transformations.
        hidden: hidden widths of each flow transformation's network and of an MLP
            discriminator.
        num_classes: C, to condition both networks on labels; None for none.
        latent_dim: None or D: a flow's z has as many values as an example.
        likelihood_weight: lambda, the weight of -log p(x) in the generator's loss.
        adversarial_weight: the weight of the adversarial loss in it (0: maximum likelihood
            only, and the discriminator is not trained).
        **options: the :class:`~pyrogen.models.gan.GAN`'s discriminator and training
            settings (``discriminator``, ``objective``, ``r1``, ``ema``, ...) with its
            defaults (R1 on for the nonsaturating and hinge objectives); ``observation_sd``
            is unused (the flow's density is exact).

    Shapes:
        x (N, ``*data_shape``); y (N,) labels. The model's site ``x`` holds flattened rows
        (N, D).

    Example:
        >>> gan = FlowGAN((2,), "realnvp", transforms=2, hidden=(16,), likelihood_weight=0.1)
        >>> gan.sample(5).shape, gan.exact_likelihood, gan.log_prob(torch.zeros(5, 2)).shape
        (torch.Size([5, 2]), True, torch.Size([5]))
    """

    family = "flowgan"
    has_likelihood = True
    choices = {"objective": LOSSES, "generator": FLOWS, "discriminator": NETWORKS}

    def __init__(
        self,
        data_shape: Sequence[int] | int,
        generator: str = "realnvp",
        *,
        transforms: int = 5,
        hidden: Sequence[int] = (64, 64),
        num_classes: int | None = None,
        latent_dim: int | None = None,
        likelihood_weight: float = 0.0,
        adversarial_weight: float = 1.0,
        **options: Any,
    ) -> None:
        shape = check_data_shape(data_shape)
        features = math.prod(shape)
        if latent_dim not in (None, features):
            raise ValueError(
                f"latent_dim: expected None or {features} (a flow's z has as many values as "
                f"an example of shape {shape}), got {latent_dim!r}"
            )
        flow = build_flow(
            check_choice("generator", generator, FLOWS), features,
            context=num_classes or 0, transforms=transforms, hidden=hidden,
        )  # fmt: skip
        super().__init__(
            shape, features, generator=FlowGenerator(flow, shape), hidden=hidden,
            num_classes=num_classes, **options,
        )  # fmt: skip
        self.generator_kind = generator
        self.transforms = transforms
        self.likelihood_weight = check_number(
            "likelihood_weight", likelihood_weight, allow_zero=True
        )
        self.adversarial_weight = check_number(
            "adversarial_weight", adversarial_weight, allow_zero=True
        )
        if self.likelihood_weight == 0 and self.adversarial_weight == 0:
            raise ValueError(
                "likelihood_weight, adversarial_weight: expected at least one above 0, got both 0"
            )

    # --- what the contract asks ---------------------------------------------------------
    @property
    def exact_likelihood(self) -> bool:
        return True

    @property
    def loss(self) -> AnalyticKLELBO:
        """The exact log-likelihood of :meth:`model` as an ELBO (the guide is empty): raw
        ``SVI`` on it is maximum likelihood, the ``adversarial_weight=0`` objective;
        :func:`pyrogen.fit` trains in turns on :meth:`player_loss`."""
        return AnalyticKLELBO(max_plate_nesting=1)

    @property
    def training_objective(self) -> str:
        terms = []
        if self.adversarial_weight:
            terms.append(f"{self.adversarial_weight:g} x adversarial ({self.objective}) loss")
        if self.likelihood_weight:
            terms.append(f"{self.likelihood_weight:g} x (-log p(x))")
        generator = " + ".join(terms)
        if not self.adversarial_weight:
            return f"the generator's loss {generator} (maximum likelihood), nats per example"
        return (
            f"discriminator loss ({self.objective} Flow-GAN; the generator minimizes "
            f"{generator}), nats per example; not a bound on any likelihood"
        )

    def players(self) -> tuple[Player, ...]:
        """As the GAN's; only the generator where ``adversarial_weight`` is 0."""
        players = super().players()
        return players if self.adversarial_weight else players[1:]

    def player_loss(
        self, player: str, x: torch.Tensor, y: torch.Tensor | None, num_data: int
    ) -> torch.Tensor:
        """The GAN's losses, the generator's weighted and joined by ``likelihood_weight``
        times -log p(x) of the batch x (B, ...), summed and scaled to ``num_data`` rows."""
        if player != "generator":
            return super().player_loss(player, x, y, num_data)
        loss = torch.zeros((), dtype=self.data_shift.dtype, device=self.data_shift.device)
        if self.adversarial_weight:
            loss = self.adversarial_weight * super().player_loss(player, x, y, num_data)
        if self.likelihood_weight:
            # fit's batches were checked once: no value checks every step
            density = self.density(self._context(y, len(x)), averaged=False)
            log_p = density.log_prob(x.to(self.data_shift).flatten(1))
            loss = loss - self.likelihood_weight * log_p.sum() * (num_data / len(x))
        return loss

    # --- the density ----------------------------------------------------------------------
    def density(
        self, context: torch.Tensor | None = None, *, averaged: bool = True
    ) -> NormalizingFlow:
        """The generator's distribution over flattened examples (D,) in the data's units,
        given a context (B, C): the averaged generator's (the one ``sample`` draws from)
        unless ``averaged`` is False or there is no average."""
        network = self.average if averaged and self.average is not None else self.generator
        flow = network.distribution(context)
        standardize = T.AffineTransform(self.data_shift, self.data_scale).inv
        pre = T.IndependentTransform(standardize, 1)
        return NormalizingFlow(ComposedTransform(pre, flow.transform), flow.base)

    @torch.no_grad()
    def log_prob(self, x: Any, y: Any = None) -> torch.Tensor:
        """Exact log p(x) (or log p(x | y)) in nats, shape (N,), of the generator ``sample``
        draws from (the moving average where ``ema`` is set)."""
        x = self._prepare(x)
        return self.density(self._context(y, len(x))).log_prob(x.flatten(1))

    @pyro_method
    def model(
        self,
        x: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
        num_data: int | None = None,
    ) -> None:
        """x ~ p_flow(x[ | y]) (flattened, (N, D)), the trained generator's exact density;
        observed when given, else ``len(y)`` or ``num_data`` (default 1) rows are drawn."""
        plate, rows = generative_plate(x, y, num_data)
        context = self._context(y, rows)
        density = FlowDistribution(self.density(context, averaged=False))
        observed = None if x is None else self._prepare(x).flatten(1)
        with plate:
            pyro.sample(OBS, density, obs=observed)
