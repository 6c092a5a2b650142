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

from pyrogen.checks import as_examples, as_labels, as_tensor, check_choice, check_int, check_ints
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
            (..., ``*data_shape``) unconstrained outputs.
        hidden: hidden layer widths of the MLP networks.
        beta: weight of the KL term (beta-VAE), applied with ``poutine.scale`` on z.
        objective: ``"mean_field"`` (ELBO, analytic KL), ``"elbo"`` (ELBO, Monte Carlo KL)
            or ``"iwae"`` (importance-weighted bound with ``num_particles`` samples).
            Default: ``"mean_field"``, or ``"elbo"`` for a flow posterior (no closed-form KL).
        num_particles: samples per example in the training objective.
        posterior: ``"gaussian"`` (the encoder's diagonal Normal), or ``"iaf"`` / ``"nsf"``:
            a conditional flow of ``flow_transforms`` affine or spline
            inverse-autoregressive steps on top of it.
        flow_transforms: number of flow steps of a flow posterior.

    Example:
        >>> vae = VAE((784,), latent_dim=8)
        >>> vae.sample(4).shape
        torch.Size([4, 784])
    """

    family = "vae"
    fit_defaults = {"steps": 5000, "lr": 1e-3, "batch_size": 128, "early_stopping": None}
    choices = {
        "likelihood": LIKELIHOODS, "encoder": KINDS, "decoder": KINDS, "objective": OBJECTIVES,
        "posterior": POSTERIORS,
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
    ) -> None:
        super().__init__()
        data_shape = check_data_shape(data_shape)
        check_choice("likelihood", likelihood, LIKELIHOODS)
        self._check_supported("posterior", posterior, self.posteriors, POSTERIORS)
        if objective is None:
            objective = self.objectives[0] if posterior == "gaussian" else "elbo"
        self._check_supported("objective", objective, self.objectives, OBJECTIVES)
        if objective == "mean_field" and posterior != "gaussian":
            raise ValueError(
                f"objective: 'mean_field' needs the analytic KL of a Gaussian posterior; use "
                f"'elbo' or 'iwae' with posterior={posterior!r}"
            )
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
        self.encoder_kind = encoder if isinstance(encoder, str) else "custom"
        self.decoder_kind = decoder if isinstance(decoder, str) else "custom"
        self.encoder = build_encoder(
            encoder, data_shape, latent_dim, context_dim=self.context_dim, hidden=self.hidden
        )
        self.decoder = build_decoder(
            decoder, latent_dim, data_shape, context_dim=self.context_dim, hidden=self.hidden
        )
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
        if likelihood == "gaussian":
            self.log_scale = nn.Parameter(torch.zeros(()))
        self.register_buffer("_prior_loc", torch.zeros(latent_dim))

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

    @classmethod
    def from_state(cls, config: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> VAE:
        if "custom" in (config.get("encoder"), config.get("decoder")):
            raise ValueError(
                f"this {cls.__name__} was saved with a custom encoder/decoder module: rebuild "
                f"it with {cls.__name__}(..., encoder=module, decoder=module) and call "
                "load_state_dict"
            )
        return super().from_state(config, state_dict)

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
        """p(x | z) from decoder outputs (..., ``*data_shape``); one event per example."""
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
        if self.likelihood != "bernoulli":
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
    def elbo(
        self, x: Any, y: Any = None, *, num_samples: int = 1, batch_size: int = 1024
    ) -> torch.Tensor:
        """Per-example ELBO log p(x | z) - KL(q(z | x) || p(z)) at beta = 1, in nats.

        The KL is analytic for a Normal prior; the reconstruction term averages
        ``num_samples`` draws.

        Args:
            x: examples (N, ``*data_shape``).
            y: labels (N,) for the variants that take them.
            num_samples: draws of z per example.
            batch_size: rows evaluated at once.

        Returns:
            Tensor of shape (N,); a lower bound on log p(x) for every example.
        """
        check_int("num_samples", num_samples)
        x = self._prepare(x)
        y = self._prepare_y(y, x.shape[0])
        rows = []
        for batch, labels in self._batches(x, y, check_int("batch_size", batch_size)):
            context = self._context(batch, labels)
            posterior = self._posterior(batch, context)
            z = posterior.rsample((num_samples,))
            reconstruction = self._log_likelihood(self._decode(z, context), batch)
            rows.append(reconstruction.mean(0) - self._kl(posterior, z, context))
        return torch.cat(rows)

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
        per_sample = math.prod(self.data_shape) * self._decodes_per_sample
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

    report_samples_name = "decoder means"

    def report_samples(self, n: int, y: torch.Tensor | None = None) -> torch.Tensor:
        """The decoder's means of n draws of z: binary pixels read better as means."""
        return self.sample(n, mean=True) if y is None else self.sample(n, y, mean=True)

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
        z = self._prior(torch.Size([n]), context).sample()
        likelihood = self._likelihood(self._decode(z, context))
        return likelihood.mean if mean else likelihood.sample()

    @torch.no_grad()
    def reconstruct(self, x: Any, y: Any = None) -> torch.Tensor:
        """Mean of p(x | z) at the posterior mean of q(z | x), shape (N, ``*data_shape``)."""
        x = self._prepare(x)
        context = self._context(x, self._prepare_y(y, x.shape[0]))
        loc, _ = self._encode(x, context)
        return self._likelihood(self._decode(loc, context)).mean

    @torch.no_grad()
    def decode(self, z: Any) -> torch.Tensor:
        """Mean of p(x | z) for codes z (N, L): (N, ``*data_shape``), for a model without
        conditions (latent diffusion decodes its draws with it)."""
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
        return self._likelihood(self._decode(z, None)).mean

    @torch.no_grad()
    def encode(self, x: Any, y: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and standard deviation of q(z | x), each (N, L)."""
        x = self._prepare(x)
        return self._encode(x, self._context(x, self._prepare_y(y, x.shape[0])))


def check_data_shape(data_shape: Sequence[int] | int) -> tuple[int, ...]:
    """``data_shape`` as a tuple of positive ints (an int D means (D,)), or a ValueError
    naming it."""
    if isinstance(data_shape, int) and not isinstance(data_shape, bool):
        data_shape = (data_shape,)
    try:
        data_shape = tuple(data_shape)
    except TypeError:
        raise ValueError(
            f"data_shape: expected a shape such as (784,), got {data_shape!r}"
        ) from None
    if not data_shape or any(
        isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in data_shape
    ):
        raise ValueError(f"data_shape: expected positive integers, got {data_shape!r}")
    return data_shape


def _draw_with_log_prob(
    posterior: torch.distributions.Distribution, num_samples: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """num_samples draws (K, B, L) and their log-densities (K, B), in one pass for flows."""
    if hasattr(posterior, "rsample_and_log_prob"):
        return posterior.rsample_and_log_prob((num_samples,))
    z = posterior.rsample((num_samples,))
    return z, posterior.log_prob(z)
