"""Variational autoencoders: a decoder p(x | z) and an amortized guide q(z | x).

The model::

    for n in 1..N:  z_n ~ Normal(0, I_L)                 (scaled by beta)
                    x_n ~ p_theta(x | decoder(z_n))       (Bernoulli, Gaussian, ...)

and the guide ``z_n ~ Normal(encoder(x_n))``, reparameterized. The KL term, the
reparameterization gradient and minibatch scaling all come from Pyro: ``loss`` is
``TraceMeanField_ELBO`` (analytic KL; :class:`~pyrogen.models.objectives.AnalyticKLELBO`
is that estimator with less per-step work) by default, ``Trace_ELBO`` (Monte Carlo KL) with
``objective="elbo"``, or the importance-weighted bound with ``objective="iwae"``.

Evaluation uses the same networks directly, vectorized over importance samples and chunked
over rows, so that large test sets with thousands of samples fit in memory.

:class:`VAE` is also the base of the variants (conditional, semi-supervised, mixture prior).
They change it through a few small hooks rather than by rewriting it:

* ``context_dim`` / ``_context(x, y)``: a vector c every network sees (a one-hot label, the
  observed part of an image); ``None`` for the plain VAE;
* ``_prior_params(context)``: the Normal prior p(z | c); ``_log_prior`` and ``_sample_z``
  for priors that are not one Normal (the mixture prior);
* ``_observed_mask``: which values of x the likelihood scores (image completion).

``posterior="iaf"`` or ``"nsf"`` makes q(z | x) a conditional normalizing flow on top of
the encoder's Gaussian (Kingma et al., 2016): z = T(z0; c), z0 ~ Normal(encoder(x)), with
T an inverse-autoregressive zuko flow conditioned on c = (loc, log scale), so sampling and
scoring z take one pass each.

``decoder="pixelcnn"`` (images) or ``"made"`` (any shape) makes p(x | z) autoregressive,
prod_i p(x_i | x_<i, z), a gated PixelCNN or a MADE that sees z in every conditional (the
PixelVAE / VLAE shape: the decoder can model local detail, and z is left what the pixels
cannot say, or nothing: the KL term, reported by ``elbo_terms`` and ``score_examples``,
shows that collapse). ``prior="made"`` makes p(z) a MADE with Gaussian conditionals, an
autoregressive density over the codes learned with the rest. Both are
:class:`~pyrogen.models.autoregressive.ChainRule` sites, so the model stays a Pyro program
trained by the same ELBO.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import ELBO, Trace_ELBO
from pyro.nn import pyro_method
from torch import nn
from zuko.distributions import DiagNormal, NormalizingFlow
from zuko.flows import LazyInverse

from pyrogen.checks import (
    as_examples,
    as_labels,
    as_tensor,
    check_choice,
    check_data_shape,
    check_int,
    check_ints,
)
from pyrogen.models.autoregressive import AutoregressiveDensity, ChainRule, ConditionedDensity
from pyrogen.models.base import GenerativeModel, data_plate
from pyrogen.models.objectives import AnalyticKLELBO, ImportanceWeightedELBO
from pyrogen.nn import KINDS, FlowDistribution, build_decoder, build_encoder, build_flow

# Site names, shared by model and guide.
LATENT = "z"
OBS = "obs"

LIKELIHOODS = ("bernoulli", "gaussian", "continuous_bernoulli")
OBJECTIVES = ("mean_field", "elbo", "iwae")
#: q(z | x): the encoder's diagonal Gaussian, or a flow on top of it.
POSTERIORS = ("gaussian", "iaf", "nsf")
#: Decoders whose p(x | z) is autoregressive, prod_i p(x_i | x_<i, z).
AUTOREGRESSIVE_DECODERS = ("pixelcnn", "made")
#: p(x | z): factorized given z (KINDS), or autoregressive.
DECODERS = (*KINDS, *AUTOREGRESSIVE_DECODERS)
#: p(z): a standard (or conditional) Normal, a MADE over the codes, or a Gaussian mixture.
PRIORS = ("normal", "made", "mixture")
# The likelihoods of an autoregressive decoder, by the VAE's likelihood.
_CHAIN_LIKELIHOODS = {"bernoulli": "bernoulli", "gaussian": "gaussian"}
# Decoder outputs evaluated at once in log_likelihood: bounds its memory (float32: 64 MiB,
# a few times that with the likelihood's temporaries).
_EVAL_ELEMENTS = 2**24


class VAE(GenerativeModel):
    """Variational autoencoder with an amortized Gaussian guide.

    Args:
        data_shape: shape of one example, e.g. ``(784,)`` (or 784) or ``(1, 28, 28)``.
        latent_dim: dimension L of z.
        likelihood: ``"bernoulli"`` (logits; values in [0, 1], non-binary values give the
            usual binary cross-entropy), ``"continuous_bernoulli"`` (a normalized density on
            [0, 1]) or ``"gaussian"`` (mean from the decoder, one learned scale).
        encoder: ``"mlp"``, ``"conv"`` (for (C, H, W) data) or your own ``nn.Module``
            mapping x (B, ``*data_shape``) to (loc, scale), each (B, L).
        decoder: ``"mlp"``, ``"conv"`` or your own ``nn.Module`` mapping z (..., L) to
            (..., ``*data_shape``) unconstrained outputs: p(x | z) factorizes given z; or
            ``"pixelcnn"`` (images (C, H, W) or (H, W)) or ``"made"`` (any shape): an
            autoregressive p(x | z) = prod_i p(x_i | x_<i, z), a gated PixelCNN of
            ``decoder_layers`` layers of ``decoder_channels`` channels or a MADE of widths
            ``hidden``, z seen by every conditional (``"bernoulli"`` or ``"gaussian"``
            likelihood).
        hidden: hidden layer widths of the MLP networks (and of a MADE decoder or prior).
        beta: weight of the KL term (beta-VAE), applied with ``poutine.scale`` on z.
        objective: ``"mean_field"`` (ELBO, analytic KL), ``"elbo"`` (ELBO, Monte Carlo KL)
            or ``"iwae"`` (importance-weighted bound with ``num_particles`` samples).
            Default: ``"mean_field"``, or ``"elbo"`` for a flow posterior or a MADE prior
            (no closed-form KL).
        num_particles: samples per example in the training objective.
        posterior: ``"gaussian"`` (the encoder's diagonal Normal), or ``"iaf"`` / ``"nsf"``:
            a conditional flow of ``flow_transforms`` affine or spline
            inverse-autoregressive steps on top of it.
        flow_transforms: number of flow steps of a flow posterior.
        prior: p(z): ``"normal"`` (N(0, I); the default) or ``"made"``: a MADE over z with
            Gaussian conditionals and hidden widths ``hidden``, learned with the rest.
        decoder_channels: feature channels of a ``"pixelcnn"`` decoder.
        decoder_layers: gated layers of a ``"pixelcnn"`` decoder.

    Example:
        >>> vae = VAE((784,), latent_dim=8)
        >>> vae.sample(4).shape
        torch.Size([4, 784])
        >>> pixel_vae = VAE((1, 8, 8), latent_dim=2, decoder="pixelcnn", decoder_channels=8)
        >>> pixel_vae.sample(2).shape  # one PixelCNN pass per pixel
        torch.Size([2, 1, 8, 8])
    """

    family = "vae"
    fit_defaults = {"steps": 5000, "lr": 1e-3, "batch_size": 128, "early_stopping": None}
    choices = {
        "likelihood": LIKELIHOODS, "encoder": KINDS, "decoder": DECODERS, "objective": OBJECTIVES,
        "posterior": POSTERIORS, "prior": PRIORS[:2],
    }  # fmt: skip
    reads_images = True
    #: Objectives this class can train with (subclasses narrow it).
    objectives: tuple[str, ...] = OBJECTIVES
    #: Size of the context vector c the networks see (0: none); set by conditional variants.
    context_dim: int = 0
    # Decoder outputs per importance sample in log_weights (memory of evaluation chunks).
    _decodes_per_sample: int = 1
    #: Posteriors q(z | x) this class can use (subclasses narrow it).
    posteriors: tuple[str, ...] = POSTERIORS
    #: Decoders this class can use by name (subclasses narrow it).
    decoders: tuple[str, ...] = DECODERS
    #: Priors p(z) this class can use; the first is the default (subclasses narrow it).
    priors: tuple[str, ...] = PRIORS[:2]
    # Whether p(z | c) is one Normal (from _prior_params), so that KLs can be analytic.
    _normal_prior: bool = True

    def __init__(
        self,
        data_shape: Sequence[int] | int,
        latent_dim: int = 50,
        likelihood: str = "bernoulli",
        encoder: str | nn.Module = "mlp",
        decoder: str | nn.Module = "mlp",
        *,
        hidden: Sequence[int] = (400,),
        beta: float = 1.0,
        objective: str | None = None,
        num_particles: int = 1,
        posterior: str = "gaussian",
        flow_transforms: int = 2,
        prior: str | None = None,
        decoder_channels: int = 32,
        decoder_layers: int = 4,
    ) -> None:
        super().__init__()
        data_shape = check_data_shape(data_shape)
        check_choice("likelihood", likelihood, LIKELIHOODS)
        self._check_supported("posterior", posterior, self.posteriors, POSTERIORS)
        prior = self.priors[0] if prior is None else prior
        self._check_supported("prior", prior, self.priors, PRIORS)
        self._normal_prior = type(self)._normal_prior and prior == "normal"
        if objective is None:
            analytic = posterior == "gaussian" and self._normal_prior
            objective = self.objectives[0] if analytic else "elbo"
        self._check_objective(objective, posterior, prior)
        check_int("latent_dim", latent_dim)
        if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta > 0):
            raise ValueError(f"beta: expected a positive number, got {beta!r}")
        if objective == "iwae" and beta != 1:
            raise ValueError(
                f"beta: expected 1 with objective='iwae' (a bound on log p(x)), got {beta}"
            )
        check_int("num_particles", num_particles)
        self.data_shape = data_shape
        self.latent_dim = latent_dim
        self.likelihood = likelihood
        self.hidden = check_ints("hidden", hidden)
        self.beta = float(beta)
        self.objective = objective
        self.num_particles = num_particles
        self.posterior = posterior
        self.flow_transforms = check_int("flow_transforms", flow_transforms)
        self.prior = prior
        self.decoder_channels = check_int("decoder_channels", decoder_channels)
        self.decoder_layers = check_int("decoder_layers", decoder_layers)
        self.encoder_kind = encoder if isinstance(encoder, str) else "custom"
        self.decoder_kind = decoder if isinstance(decoder, str) else "custom"
        self.encoder = build_encoder(
            encoder, data_shape, latent_dim, context_dim=self.context_dim, hidden=self.hidden
        )
        self.decoder = self._build_decoder(decoder)
        if posterior != "gaussian":
            # Inverse of an autoregressive flow: z0 -> z in one pass, with its log-Jacobian.
            flow = build_flow(
                "maf" if posterior == "iaf" else "nsf",
                latent_dim,
                context=2 * latent_dim,
                transforms=self.flow_transforms,
                hidden=self.hidden,
            )
            self.posterior_flow = LazyInverse(flow.transform)
        if prior == "made":
            self.prior_density = AutoregressiveDensity(
                (latent_dim,), "made", "gaussian", hidden=self.hidden
            )
        if likelihood == "gaussian" and not self.autoregressive_decoder:
            self.log_scale = nn.Parameter(torch.zeros(()))
        self.register_buffer("_prior_loc", torch.zeros(latent_dim))

    def _check_objective(self, objective: str, posterior: str, prior: str) -> None:
        """A ValueError naming ``objective`` where this class or the model cannot use it."""
        self._check_supported("objective", objective, self.objectives, OBJECTIVES)
        if objective == "mean_field" and (posterior != "gaussian" or prior != "normal"):
            setting = f"prior={prior!r}" if prior != "normal" else f"posterior={posterior!r}"
            raise ValueError(
                f"objective: 'mean_field' needs the analytic KL of a Gaussian posterior and a "
                f"Normal prior; use 'elbo' or 'iwae' with {setting}"
            )

    @property
    def autoregressive_decoder(self) -> bool:
        """Whether p(x | z) is autoregressive (``decoder="pixelcnn"`` or ``"made"``)."""
        return self.decoder_kind in AUTOREGRESSIVE_DECODERS

    def _build_decoder(self, decoder: str | nn.Module) -> nn.Module:
        """The decoder network: outputs (..., ``*data_shape``) of z, or for an autoregressive
        decoder the conditioning vector of its density (:class:`AutoregressiveDecoder`)."""
        if isinstance(decoder, str):
            self._check_supported("decoder", decoder, self.decoders, DECODERS)
        if decoder not in AUTOREGRESSIVE_DECODERS:
            return build_decoder(
                decoder,
                self.latent_dim,
                self.data_shape,
                context_dim=self.context_dim,
                hidden=self.hidden,
            )
        if decoder == "pixelcnn" and len(self.data_shape) not in (2, 3):
            raise ValueError(
                f"decoder: expected data_shape (C, H, W) or (H, W) for 'pixelcnn', got "
                f"{self.data_shape} (use decoder='made' for vectors)"
            )
        if self.likelihood not in _CHAIN_LIKELIHOODS:
            raise ValueError(
                f"likelihood: expected one of {tuple(_CHAIN_LIKELIHOODS)} with "
                f"decoder={decoder!r}, got {self.likelihood!r}"
            )
        density = ConditionedDensity(
            self.data_shape,
            self.latent_dim + self.context_dim,
            network=decoder,
            likelihood=_CHAIN_LIKELIHOODS[self.likelihood],
            hidden=self.hidden,
            channels=self.decoder_channels,
            layers=self.decoder_layers,
        )
        return AutoregressiveDecoder(density)

    def _check_supported(
        self, name: str, value: Any, supported: tuple[str, ...], every: tuple[str, ...]
    ) -> None:
        """A ValueError naming ``name`` unless ``value`` is one of ``supported``, which says
        when the value is a VAE's that this variant cannot use."""
        if value in every and value not in supported:
            raise ValueError(
                f"{name}: {type(self).__name__} supports {', '.join(map(repr, supported))} "
                f"only, got {value!r} (see the {name} argument of {type(self).__name__})"
            )
        check_choice(name, value, supported)

    @property
    def loss(self) -> ELBO:
        """The training objective (see ``objective``); all are bounds on log p(x) at beta=1."""
        if self.objective == "iwae":
            return ImportanceWeightedELBO(self.num_particles, max_plate_nesting=1)
        elbo_class = AnalyticKLELBO if self.objective == "mean_field" else Trace_ELBO
        return elbo_class(**self._particle_options)

    @property
    def _particle_options(self) -> dict[str, Any]:
        """The options of Pyro's ELBOs every objective of a VAE shares: ``num_particles``
        samples per example, vectorized, one plate (the data) to the right."""
        return {
            "num_particles": self.num_particles,
            "vectorize_particles": self.num_particles > 1,
            "max_plate_nesting": 1,
        }

    # --- hooks for the variants -----------------------------------------------------------
    def _context(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor | None:
        """The context vector c (B, context_dim) of a batch; None for the plain VAE."""
        return None

    @property
    def _observed_mask(self) -> torch.Tensor | None:
        """Boolean mask of ``data_shape``: the values the likelihood scores (None: all)."""
        return None

    def _prior_params(self, context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """loc and scale of the Normal prior p(z | c), each broadcastable to (..., L)."""
        return self._prior_loc, torch.ones_like(self._prior_loc)

    def _prior(self, batch_shape: torch.Size, context: torch.Tensor | None) -> dist.Distribution:
        if self.prior == "made":
            return ChainRule(self.prior_density, None, 0, batch_shape)
        loc, scale = self._prior_params(context)
        shape = (*batch_shape, self.latent_dim)
        return dist.Normal(loc.expand(shape), scale.expand(shape)).to_event(1)

    def _log_prior(self, z: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """log p(z | c) for z (..., B, L), shape (..., B)."""
        return self._prior(z.shape[:-1], context).log_prob(z)

    def _sample_z(self, batch_shape: torch.Size, context: torch.Tensor | None) -> torch.Tensor:
        """The latent site(s) of ``model``; inside the data plate and the beta scale."""
        return pyro.sample(LATENT, self._prior(batch_shape, context))

    def _kl(
        self,
        posterior: torch.distributions.Distribution,
        z: torch.Tensor,
        context: torch.Tensor | None,
    ) -> torch.Tensor:
        """KL(q(z | x) || p(z | c)) per row, (B,), for draws z (S, B, L) from q.

        Analytic for a Gaussian posterior and a Normal prior; otherwise the average of
        log q(z) - log p(z) over the draws.
        """
        if self.posterior == "gaussian" and self._normal_prior:
            loc, scale = self._prior_params(context)
            prior = torch.distributions.Independent(torch.distributions.Normal(loc, scale), 1)
            return torch.distributions.kl_divergence(posterior, prior)
        return (posterior.log_prob(z) - self._log_prior(z, context)).mean(0)

    def _posterior(
        self, x: torch.Tensor, context: torch.Tensor | None
    ) -> torch.distributions.Distribution:
        """q(z | x, c): batch shape (B,), event shape (L,), reparameterized."""
        loc, scale = self._encode(x, context)
        if self.posterior == "gaussian":
            return torch.distributions.Independent(torch.distributions.Normal(loc, scale), 1)
        # c = (loc, log scale) conditions every flow step, as h does in Kingma et al.
        transform = self.posterior_flow(torch.cat([loc, scale.log()], dim=-1))
        return NormalizingFlow(transform, DiagNormal(loc, scale))

    # --- networks -------------------------------------------------------------------------
    def _encode(
        self, x: torch.Tensor, context: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x) if context is None else self.encoder(x, context)

    def _decode(self, z: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        return self.decoder(z) if context is None else self.decoder(z, context)

    def _likelihood(self, output: torch.Tensor) -> dist.Distribution:
        """p(x | z) from decoder outputs (..., ``*data_shape``), or for an autoregressive
        decoder from its conditioning vectors (..., H); one event per example."""
        if self.autoregressive_decoder:
            return ChainRule(self.decoder.density, output, 0, output.shape[:-1])
        if self.likelihood == "bernoulli":
            # validate_args=False: grey-level pixels in [0, 1] give the binary cross-entropy
            base = dist.Bernoulli(logits=output, validate_args=False)
        elif self.likelihood == "continuous_bernoulli":
            base = dist.ContinuousBernoulli(logits=output)
        else:
            base = dist.Normal(output, self.log_scale.exp())
        mask = self._observed_mask
        if mask is not None:
            base = base.mask(mask)
        return base.to_event(len(self.data_shape))

    def _log_likelihood(self, output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x | z) for decoder outputs (..., B, ``*data_shape``) and x (B, ...): (..., B).

        The same number as ``_likelihood(output).log_prob(x)``; for the Bernoulli it is
        written as sum(x * logits) - sum(softplus(logits)), which does not expand x to the
        samples' shape first (about half the time of evaluating with thousands of samples).
        """
        if self.likelihood != "bernoulli" or self.autoregressive_decoder:
            return self._likelihood(output).log_prob(x)
        terms = x * output - F.softplus(output)
        mask = self._observed_mask
        if mask is not None:
            terms = terms * mask
        return terms.flatten(-len(self.data_shape)).sum(-1)

    # --- Pyro programs ------------------------------------------------------------------
    @pyro_method
    def model(
        self, x: torch.Tensor, y: torch.Tensor | None = None, num_data: int | None = None
    ) -> None:
        """p(z | c) p_theta(x | z, c) for a (mini)batch x of shape (B, ``*data_shape``)."""
        context = self._context(x, y)
        with data_plate(x, num_data):
            with poutine.scale(scale=self.beta):
                z = self._sample_z(x.shape[:1], context)
            pyro.sample(OBS, self._likelihood(self._decode(z, context)), obs=x)

    @pyro_method
    def guide(
        self, x: torch.Tensor, y: torch.Tensor | None = None, num_data: int | None = None
    ) -> None:
        """q_phi(z | x, c) = Normal(encoder(x, c)), reparameterized."""
        context = self._context(x, y)
        with data_plate(x, num_data):
            if self.posterior == "gaussian":
                loc, scale = self._encode(x, context)
                posterior = dist.Normal(loc, scale).to_event(1)
            else:
                posterior = FlowDistribution(self._posterior(x, context))
            with poutine.scale(scale=self.beta):
                pyro.sample(LATENT, posterior)

    # --- data ---------------------------------------------------------------------------
    def setup(self, x: torch.Tensor, y: torch.Tensor | None = None, *, seed: int = 0) -> None:
        """Check the data against ``data_shape`` and the likelihood's support."""
        x = self._prepare(x)
        self._context(x, self._prepare_y(y, x.shape[0]))
        if self.autoregressive_decoder:  # a Gaussian one standardizes by the data
            self.decoder.density.setup(x, seed=seed)

    def _prepare(self, x: Any, name: str = "x") -> torch.Tensor:
        x = as_examples(
            x,
            self.data_shape,
            dtype=self._prior_loc.dtype,
            name=name,
            unit_interval=None
            if self.likelihood == "gaussian"
            else f"for a {self.likelihood} likelihood",
            hint=" (scale the data, or use likelihood='gaussian')",
        )
        return x.to(self._prior_loc.device)

    def _prepare_y(self, y: Any, rows: int) -> torch.Tensor | None:
        """Check labels y against ``rows`` examples; the plain VAE takes none."""
        if y is not None:
            raise ValueError(f"y: {type(self).__name__} takes no labels, got {type(y).__name__}")
        return None

    def _batches(
        self, x: torch.Tensor, y: torch.Tensor | None, size: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        for start in range(0, x.shape[0], size):
            yield x[start : start + size], None if y is None else y[start : start + size]

    # --- evaluation ---------------------------------------------------------------------
    @torch.no_grad()
    def log_weights(
        self, x: torch.Tensor, num_samples: int, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        """log p(x, z_k | c) - log q(z_k | x, c) for z_k ~ q(z | x, c), shape (num_samples, B).

        ``x`` and ``y`` must already be checked (see :meth:`log_likelihood`).
        """
        context = self._context(x, y)
        z, log_q = _draw_with_log_prob(self._posterior(x, context), num_samples)
        log_likelihood = self._log_likelihood(self._decode(z, context), x)
        return log_likelihood + self._log_prior(z, context) - log_q

    @torch.no_grad()
    def elbo_terms(
        self, x: Any, y: Any = None, *, num_samples: int = 1, batch_size: int = 1024
    ) -> dict[str, torch.Tensor]:
        """The per-example ELBO at beta = 1 and its two terms, in nats.

        ``reconstruction`` = E_q[log p(x | z)] (the mean over ``num_samples`` draws of z),
        ``kl`` = KL(q(z | x) || p(z)): analytic for a Gaussian posterior and a Normal prior,
        otherwise the mean of log q(z | x) - log p(z) over the same draws. A KL near 0 for
        every example is posterior collapse: the decoder ignores z.

        Args:
            x: examples (N, ``*data_shape``).
            y: labels (N,) for the variants that take them.
            num_samples: draws of z per example.
            batch_size: rows evaluated at once.

        Returns:
            ``elbo`` = reconstruction - kl (a lower bound on log p(x) for every example),
            ``reconstruction`` and ``kl``, each of shape (N,).
        """
        check_int("num_samples", num_samples)
        x = self._prepare(x)
        y = self._prepare_y(y, x.shape[0])
        reconstruction, kl = [], []
        for batch, labels in self._batches(x, y, check_int("batch_size", batch_size)):
            context = self._context(batch, labels)
            posterior = self._posterior(batch, context)
            z = posterior.rsample((num_samples,))
            log_likelihood = self._log_likelihood(self._decode(z, context), batch)
            reconstruction.append(log_likelihood.mean(0))
            kl.append(self._kl(posterior, z, context))
        terms = {"reconstruction": torch.cat(reconstruction), "kl": torch.cat(kl)}
        return {"elbo": terms["reconstruction"] - terms["kl"], **terms}

    def elbo(
        self, x: Any, y: Any = None, *, num_samples: int = 1, batch_size: int = 1024
    ) -> torch.Tensor:
        """Per-example ELBO log p(x | z) - KL(q(z | x) || p(z)) at beta = 1, in nats: the
        ``elbo`` of :meth:`elbo_terms`, shape (N,), a lower bound on log p(x)."""
        return self.elbo_terms(x, y, num_samples=num_samples, batch_size=batch_size)["elbo"]

    @torch.no_grad()
    def log_likelihood(self, x: Any, y: Any = None, *, num_samples: int = 1000) -> torch.Tensor:
        """Importance-weighted estimate of log p(x) with K = ``num_samples`` (nats).

        ``log (1/K) sum_k p(x, z_k) / q(z_k | x)``: the IWAE bound L_K, which is below
        log p(x) in expectation and approaches it as K grows. Rows and samples are both
        processed in chunks, so memory stays bounded for any N and K.

        Args:
            x: examples (N, ``*data_shape``).
            y: labels (N,) for the variants that take them (then log p(x | y) or
                log p(x, y): see the variant).
            num_samples: K.

        Returns:
            Tensor of shape (N,).
        """
        check_int("num_samples", num_samples)
        x = self._prepare(x)
        y = self._prepare_y(y, x.shape[0])
        per_sample = math.prod(self.data_shape) * self._decodes_per_sample * self._decoder_width
        rows_per_chunk = max(
            1, min(x.shape[0], _EVAL_ELEMENTS // (per_sample * min(num_samples, 256)))
        )
        samples_per_chunk = max(1, _EVAL_ELEMENTS // (per_sample * rows_per_chunk))
        results = []
        for batch, labels in self._batches(x, y, rows_per_chunk):
            total = torch.full((batch.shape[0],), -math.inf, dtype=x.dtype, device=x.device)
            for start in range(0, num_samples, samples_per_chunk):
                count = min(samples_per_chunk, num_samples - start)
                chunk = torch.logsumexp(self.log_weights(batch, count, labels), dim=0)
                total = torch.logaddexp(total, chunk)
            results.append(total - math.log(num_samples))
        return torch.cat(results)

    # --- reporting (the contract of GenerativeModel) ---------------------------------------
    @property
    def report_plots(self) -> tuple[str, ...]:
        """The loss, samples, reconstructions and the latent space; one row of samples per
        label where ``sample(n, y)`` takes labels."""
        return ("elbo", "samples", "reconstructions", "latent") + self.label_sample_plots

    @property
    def elbo_description(self) -> str:
        """The ELBO at beta = 1, its KL analytic for a Gaussian q(z | x)."""
        if self.posterior != "gaussian":
            return (
                "ELBO E_q[log p(x | z) + log p(z) - log q(z | x)] at beta = 1, q(z | x) a "
                f"{self.posterior} flow (Monte Carlo KL)"
            )
        return "ELBO E_q[log p(x | z)] - KL(q(z | x) || p(z)) at beta = 1 (analytic KL)"

    #: The named terms of the ELBO :meth:`score_examples` reports (see :meth:`elbo_terms`).
    elbo_terms_reported = ("reconstruction", "kl")

    def score_examples(
        self, x: torch.Tensor, y: torch.Tensor | None = None, *, num_samples: int | None = None
    ) -> dict[str, torch.Tensor]:
        """The ELBO with its reconstruction and KL terms (one draw of z each), the IWAE bound
        with K = ``num_samples`` and ``predicted`` where :attr:`predicts`, each (N,)."""
        if not self.elbo_terms_reported:
            return super().score_examples(x, y, num_samples=num_samples)
        samples = self.default_score_samples if num_samples is None else num_samples
        condition = (y,) if self.conditions_on_labels else ()
        terms = self.elbo_terms(x, *condition)
        scores = {
            "elbo": terms["elbo"],
            "log_likelihood": self.log_likelihood(x, *condition, num_samples=samples),
        } | {term: terms[term] for term in self.elbo_terms_reported}
        if self.predicts is not None:
            scores["predicted"] = self.predict(x)
        return scores

    def score_descriptions(self, num_samples: int, values: int) -> dict[str, str]:
        """The bounds (see the base class) and the ELBO's two terms."""
        analytic = self.posterior == "gaussian" and self._normal_prior
        how = "analytic" if analytic else "Monte Carlo, one draw of z"
        return super().score_descriptions(num_samples, values) | {
            "reconstruction": "E_q log p(x | z), one draw of z",
            "kl": f"KL(q(z | x) || p(z)), {how}; near 0: posterior collapse",
        }

    @property
    def report_samples_name(self) -> str:  # type: ignore[override]
        """``"decoder means"``, or ``"draws"`` for an autoregressive decoder (no mean)."""
        return "draws" if self.autoregressive_decoder else "decoder means"

    def report_samples(self, n: int, y: torch.Tensor | None = None) -> torch.Tensor:
        """The decoder's means of n draws of z: binary pixels read better as means (draws
        of x for an autoregressive decoder, whose mean has no closed form)."""
        mean = not self.autoregressive_decoder
        return self.sample(n, mean=mean) if y is None else self.sample(n, y, mean=mean)

    @property
    def _decoder_width(self) -> int:
        """Values a decoder holds per output value while it runs (bounds evaluation memory):
        the gated PixelCNN's 4 * channels, MADE's widest layer per value, else 1."""
        if self.decoder_kind == "pixelcnn":
            return 4 * self.decoder_channels
        if self.decoder_kind == "made":
            return max(1, max(self.hidden, default=1) // math.prod(self.data_shape))
        return 1

    @torch.no_grad()
    def sample(self, n: int, y: Any = None, *, mean: bool = False) -> torch.Tensor:
        """Draw n examples, z ~ p(z) then x ~ p(x | z) (or its mean): (n, ``*data_shape``)."""
        check_int("n", n)
        self._prepare_y(y, n)
        return self._draw(n, None, mean=mean)

    def _sample_labels(
        self, n: int, y: Any, count: int, logits: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Labels (n,) int64 on the model's device for ``sample``: ``y`` checked against
        ``count`` values, or, when None, drawn from Categorical(logits) (uniform: None)."""
        device = self._prior_loc.device
        if y is not None:
            return as_labels(y, n, count).to(device)
        if logits is None:
            logits = self._prior_loc.new_zeros(count)
        return torch.distributions.Categorical(logits=logits).sample((n,)).to(device)

    def _draw(self, n: int, context: torch.Tensor | None, *, mean: bool) -> torch.Tensor:
        if mean and self.autoregressive_decoder:
            raise ValueError(
                f"mean: expected False for decoder={self.decoder_kind!r} (an autoregressive "
                "p(x | z) has no closed-form mean), got True"
            )
        z = self._prior(torch.Size([n]), context).sample()
        likelihood = self._likelihood(self._decode(z, context))
        return likelihood.mean if mean else likelihood.sample()

    def _mean_or_draw(self, likelihood: dist.Distribution) -> torch.Tensor:
        """The mean of p(x | z), or a draw of x for an autoregressive decoder."""
        return likelihood.sample() if self.autoregressive_decoder else likelihood.mean

    @torch.no_grad()
    def reconstruct(self, x: Any, y: Any = None) -> torch.Tensor:
        """Mean of p(x | z) at the posterior mean of q(z | x), shape (N, ``*data_shape``) (a
        draw of x for an autoregressive decoder)."""
        x = self._prepare(x)
        context = self._context(x, self._prepare_y(y, x.shape[0]))
        loc, _ = self._encode(x, context)
        return self._mean_or_draw(self._likelihood(self._decode(loc, context)))

    @torch.no_grad()
    def decode(self, z: Any) -> torch.Tensor:
        """Mean of p(x | z) (a draw of x for an autoregressive decoder) for codes z (N, L):
        (N, ``*data_shape``), for a model without conditions (latent diffusion decodes its
        draws with it)."""
        if self.context_dim:
            raise ValueError(
                f"decode: this {type(self).__name__} needs its condition to decode; use sample"
            )
        weight = next(self.decoder.parameters())
        z = as_tensor(z, name="z", ndim=2, dtype=weight.dtype)
        if z.shape[1] != self.latent_dim:
            raise ValueError(
                f"z: expected codes of shape (N, {self.latent_dim}), got {tuple(z.shape)}"
            )
        z = z.to(weight.device)
        return self._mean_or_draw(self._likelihood(self._decode(z, None)))

    @torch.no_grad()
    def encode(self, x: Any, y: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and standard deviation of q(z | x), each (N, L)."""
        x = self._prepare(x)
        return self._encode(x, self._context(x, self._prepare_y(y, x.shape[0])))


class AutoregressiveDecoder(nn.Module):
    """The decoder of a VAE whose p(x | z) is autoregressive: it passes z (and the context c
    of a conditional variant) on as the vector h every conditional of ``density`` sees.

    Args:
        density: the autoregressive density p(x | h) (its ``context_dim`` is L + C).

    Shapes:
        z (..., L), context (..., C) or None -> h (..., L + C).
    """

    def __init__(self, density: ConditionedDensity) -> None:
        super().__init__()
        self.density = density

    def forward(self, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Args: z (..., L); context (..., C) or None. Returns: h (..., L + C)."""
        if context is None:
            return z
        return torch.cat([z, context.expand(*z.shape[:-1], context.shape[-1])], dim=-1)


def _draw_with_log_prob(
    posterior: torch.distributions.Distribution, num_samples: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """num_samples draws (K, B, L) and their log-densities (K, B), in one pass for flows."""
    if hasattr(posterior, "rsample_and_log_prob"):
        return posterior.rsample_and_log_prob((num_samples,))
    z = posterior.rsample((num_samples,))
    return z, posterior.log_prob(z)
