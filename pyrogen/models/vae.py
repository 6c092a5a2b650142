"""Variational autoencoders: a decoder p(x | z) and an amortized guide q(z | x).

The model::

    for n in 1..N:  z_n ~ Normal(0, I_L)                 (scaled by beta)
                    x_n ~ p_theta(x | decoder(z_n))       (Bernoulli, Gaussian, ...)

and the guide ``z_n ~ Normal(encoder(x_n))``, reparameterized. The KL term, the
reparameterization gradient and minibatch scaling all come from Pyro: ``loss`` is
``TraceMeanField_ELBO`` (analytic KL) by default, ``Trace_ELBO`` (Monte Carlo KL) with
``objective="elbo"``, or the importance-weighted bound with ``objective="iwae"``.

Evaluation uses the same networks directly, vectorized over importance samples and chunked
over rows, so that large test sets with thousands of samples fit in memory.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import ELBO, Trace_ELBO, TraceMeanField_ELBO
from pyro.nn import pyro_method
from torch import nn

from pyrogen.data.validation import as_tensor, check_int
from pyrogen.models.base import GenerativeModel, data_plate
from pyrogen.models.objectives import ImportanceWeightedELBO
from pyrogen.nn import build_decoder, build_encoder

# Site names, shared by model and guide.
LATENT = "z"
OBS = "obs"

LIKELIHOODS = ("bernoulli", "gaussian", "continuous_bernoulli")
OBJECTIVES = ("mean_field", "elbo", "iwae")
# Decoder outputs evaluated at once in log_likelihood: bounds its memory (float32: 64 MiB,
# a few times that with the likelihood's temporaries).
_EVAL_ELEMENTS = 2**24


class VAE(GenerativeModel):
    """Variational autoencoder with an amortized Gaussian guide.

    Args:
        data_shape: shape of one example, e.g. ``(784,)`` or ``(1, 28, 28)``.
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
        num_particles: samples per example in the training objective.

    Example:
        >>> vae = VAE((784,), latent_dim=8)
        >>> vae.sample(4).shape
        torch.Size([4, 784])
    """

    family = "vae"
    fit_defaults = {"steps": 5000, "lr": 1e-3, "batch_size": 128, "early_stopping": None}

    def __init__(
        self,
        data_shape: Sequence[int] = (784,),
        latent_dim: int = 50,
        likelihood: str = "bernoulli",
        encoder: str | nn.Module = "mlp",
        decoder: str | nn.Module = "mlp",
        *,
        hidden: Sequence[int] = (400,),
        beta: float = 1.0,
        objective: str = "mean_field",
        num_particles: int = 1,
    ) -> None:
        super().__init__()
        data_shape = tuple(data_shape)
        if not data_shape or any(
            isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in data_shape
        ):
            raise ValueError(f"data_shape: expected positive integers, got {data_shape!r}")
        _check_choice("likelihood", likelihood, LIKELIHOODS)
        _check_choice("objective", objective, OBJECTIVES)
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
        self.hidden = tuple(hidden)
        self.beta = float(beta)
        self.objective = objective
        self.num_particles = num_particles
        self.encoder_kind = encoder if isinstance(encoder, str) else "custom"
        self.decoder_kind = decoder if isinstance(decoder, str) else "custom"
        self.encoder = build_encoder(encoder, data_shape, latent_dim, hidden=self.hidden)
        self.decoder = build_decoder(decoder, latent_dim, data_shape, hidden=self.hidden)
        if likelihood == "gaussian":
            self.log_scale = nn.Parameter(torch.zeros(()))
        self.register_buffer("_prior_loc", torch.zeros(latent_dim))

    @property
    def config(self) -> dict[str, Any]:
        return {
            "data_shape": list(self.data_shape),
            "latent_dim": self.latent_dim,
            "likelihood": self.likelihood,
            "encoder": self.encoder_kind,
            "decoder": self.decoder_kind,
            "hidden": list(self.hidden),
            "beta": self.beta,
            "objective": self.objective,
            "num_particles": self.num_particles,
        }

    @classmethod
    def from_state(cls, config: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> VAE:
        if "custom" in (config.get("encoder"), config.get("decoder")):
            raise ValueError(
                "this VAE was saved with a custom encoder/decoder module: rebuild it with "
                "VAE(..., encoder=module, decoder=module) and call load_state_dict"
            )
        return super().from_state(config, state_dict)

    @property
    def loss(self) -> ELBO:
        """The training objective (see ``objective``); all are bounds on log p(x) at beta=1."""
        if self.objective == "iwae":
            return ImportanceWeightedELBO(self.num_particles, max_plate_nesting=1)
        elbo_class = TraceMeanField_ELBO if self.objective == "mean_field" else Trace_ELBO
        return elbo_class(
            num_particles=self.num_particles,
            vectorize_particles=self.num_particles > 1,
            max_plate_nesting=1,
        )

    # --- Pyro programs ------------------------------------------------------------------
    def _likelihood(self, output: torch.Tensor) -> dist.Distribution:
        event_dims = len(self.data_shape)
        if self.likelihood == "bernoulli":
            # validate_args=False: grey-level pixels in [0, 1] give the binary cross-entropy
            base = dist.Bernoulli(logits=output, validate_args=False)
        elif self.likelihood == "continuous_bernoulli":
            base = dist.ContinuousBernoulli(logits=output)
        else:
            base = dist.Normal(output, self.log_scale.exp())
        return base.to_event(event_dims)

    def _prior(self, batch_shape: torch.Size) -> dist.Distribution:
        loc = self._prior_loc.expand(*batch_shape, self.latent_dim)
        return dist.Normal(loc, torch.ones_like(loc)).to_event(1)

    @pyro_method
    def model(
        self, x: torch.Tensor, y: torch.Tensor | None = None, num_data: int | None = None
    ) -> None:
        """p(z) p_theta(x | z) for a (mini)batch x of shape (B, ``*data_shape``)."""
        with data_plate(x, num_data):
            with poutine.scale(scale=self.beta):
                z = pyro.sample(LATENT, self._prior(x.shape[:1]))
            pyro.sample(OBS, self._likelihood(self.decoder(z)), obs=x)

    @pyro_method
    def guide(
        self, x: torch.Tensor, y: torch.Tensor | None = None, num_data: int | None = None
    ) -> None:
        """q_phi(z | x) = Normal(encoder(x)), reparameterized."""
        with data_plate(x, num_data):
            loc, scale = self.encoder(x)
            with poutine.scale(scale=self.beta):
                pyro.sample(LATENT, dist.Normal(loc, scale).to_event(1))

    # --- data ---------------------------------------------------------------------------
    def setup(self, x: torch.Tensor, y: torch.Tensor | None = None, *, seed: int = 0) -> None:
        """Check the data against ``data_shape`` and the likelihood's support."""
        self._prepare(x)

    def _prepare(self, x: Any, name: str = "x") -> torch.Tensor:
        dtype = self._prior_loc.dtype
        x = as_tensor(x, name=name, ndim=None, dtype=dtype)
        if tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(
                f"{name}: expected shape (n, {', '.join(map(str, self.data_shape))}), "
                f"got {tuple(x.shape)}"
            )
        if self.likelihood != "gaussian" and (x.min() < 0 or x.max() > 1):
            raise ValueError(
                f"{name}: expected values in [0, 1] for a {self.likelihood} likelihood, got "
                f"values in [{x.min().item():g}, {x.max().item():g}] (scale the data, or use "
                f"likelihood='gaussian')"
            )
        return x.to(self._prior_loc.device)

    # --- evaluation ---------------------------------------------------------------------
    @torch.no_grad()
    def log_weights(self, x: torch.Tensor, num_samples: int) -> torch.Tensor:
        """log p(x, z_k) - log q(z_k | x) for z_k ~ q(z | x), shape (num_samples, B)."""
        loc, scale = self.encoder(x)
        guide = torch.distributions.Normal(loc, scale)
        z = guide.rsample((num_samples,))
        log_prior = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
        log_likelihood = self._likelihood(self.decoder(z)).log_prob(x)
        return log_likelihood + log_prior - guide.log_prob(z).sum(-1)

    @torch.no_grad()
    def elbo(self, x: Any, num_samples: int = 1, batch_size: int = 1024) -> torch.Tensor:
        """Per-example ELBO log p(x | z) - KL(q(z | x) || p(z)) at beta = 1, in nats.

        The KL is analytic; the reconstruction term averages ``num_samples`` draws.

        Returns:
            Tensor of shape (N,); a lower bound on log p(x) for every example.
        """
        x = self._prepare(x)
        rows = []
        for batch in x.split(batch_size):
            loc, scale = self.encoder(batch)
            posterior = torch.distributions.Normal(loc, scale)
            kl = torch.distributions.kl_divergence(
                posterior, torch.distributions.Normal(torch.zeros_like(loc), 1.0)
            ).sum(-1)
            z = posterior.rsample((num_samples,))
            reconstruction = self._likelihood(self.decoder(z)).log_prob(batch).mean(0)
            rows.append(reconstruction - kl)
        return torch.cat(rows)

    @torch.no_grad()
    def log_likelihood(self, x: Any, num_samples: int = 1000) -> torch.Tensor:
        """Importance-weighted estimate of log p(x) with K = ``num_samples`` (nats).

        ``log (1/K) sum_k p(x, z_k) / q(z_k | x)``: the IWAE bound L_K, which is below
        log p(x) in expectation and approaches it as K grows. Rows and samples are both
        processed in chunks, so memory stays bounded for any N and K.

        Returns:
            Tensor of shape (N,).
        """
        check_int("num_samples", num_samples)
        x = self._prepare(x)
        per_sample = math.prod(self.data_shape)
        rows_per_chunk = max(
            1, min(x.shape[0], _EVAL_ELEMENTS // (per_sample * min(num_samples, 256)))
        )
        samples_per_chunk = max(1, _EVAL_ELEMENTS // (per_sample * rows_per_chunk))
        results = []
        for batch in x.split(rows_per_chunk):
            total = torch.full((batch.shape[0],), -math.inf, dtype=x.dtype, device=x.device)
            for start in range(0, num_samples, samples_per_chunk):
                count = min(samples_per_chunk, num_samples - start)
                chunk = torch.logsumexp(self.log_weights(batch, count), dim=0)
                total = torch.logaddexp(total, chunk)
            results.append(total - math.log(num_samples))
        return torch.cat(results)

    def bits_per_dim(self, x: Any, num_samples: int = 1000) -> torch.Tensor:
        """-log_likelihood(x) / (D log 2): bits per dimension of each example, shape (N,)."""
        dims = math.prod(self.data_shape)
        return -self.log_likelihood(x, num_samples) / (dims * math.log(2))

    @torch.no_grad()
    def sample(self, n: int, y: torch.Tensor | None = None, *, mean: bool = False) -> torch.Tensor:
        """Draw n examples, z ~ p(z) then x ~ p(x | z) (or its mean): (n, ``*data_shape``)."""
        check_int("n", n)
        z = self._prior(torch.Size([n])).sample()
        likelihood = self._likelihood(self.decoder(z))
        return likelihood.mean if mean else likelihood.sample()

    @torch.no_grad()
    def reconstruct(self, x: Any) -> torch.Tensor:
        """Mean of p(x | z) at the posterior mean of q(z | x), shape (N, ``*data_shape``)."""
        loc, _ = self.encoder(self._prepare(x))
        return self._likelihood(self.decoder(loc)).mean

    @torch.no_grad()
    def encode(self, x: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and standard deviation of q(z | x), each (N, L)."""
        return self.encoder(self._prepare(x))


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {choices}, got {value!r}")
