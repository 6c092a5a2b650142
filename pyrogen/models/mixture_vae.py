"""VAE with a Gaussian-mixture prior: the mixture component is an enumerated latent.

The model::

    c_n ~ Categorical(pi)                       (enumerated: summed out exactly)
    z_n ~ Normal(mu_{c_n}, diag(sigma_{c_n}^2))
    x_n ~ p_theta(x | z_n)

with the VAE's amortized guide q(z | x). The prior's weights, means and scales are learned
with the networks. ``TraceEnum_ELBO`` sums c out of the model, so the ELBO's prior term is
log sum_c pi_c N(z | mu_c, sigma_c); the component densities come from the mixture
family's (N, K) table (:class:`~pyrogen.models.mixture_em.GaussianComponents`), and
:meth:`GaussianMixtureVAE.init_components` starts the prior from a
:class:`~pyrogen.GaussianMixture` fitted to the encoded data. The component of an example,
p(c | z) at the posterior mean of z, clusters the data without labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import TraceEnum_ELBO
from torch import nn

from pyrogen.checks import check_int
from pyrogen.models.mixture_em import GaussianComponents, MixtureParameters, component_log_density
from pyrogen.models.vae import LATENT, VAE

#: Site of the mixture component.
COMPONENT = "component"


class GaussianMixtureVAE(VAE):
    """VAE whose prior p(z) is a learned mixture of K diagonal Gaussians.

    Args:
        data_shape: shape of one example, e.g. ``(784,)`` (or 784) or ``(1, 28, 28)``.
        n_components: K, the number of mixture components (clusters).
        latent_dim: dimension L of z (10 here: the clusters are read in a small space).
        **vae_options: every other argument of :class:`~pyrogen.VAE` (``likelihood``,
            ``encoder``, ``decoder``, ``hidden``, ``beta``, ``num_particles``,
            ``posterior``, ``flow_transforms``), passed to it as they are. ``objective`` can
            only be ``"elbo"``, the ELBO with the component summed out (``TraceEnum_ELBO``;
            the KL of z is a Monte Carlo estimate, as a mixture prior has no closed-form KL).

    Shapes:
        x (N, ``*data_shape``); component weights (K,), means and scales (K, L).

    Example:
        >>> gmvae = GaussianMixtureVAE((784,), latent_dim=8, n_components=10)
        >>> gmvae.predict(torch.rand(4, 784)).shape
        torch.Size([4])
    """

    family = "gmvae"
    #: Monte Carlo KL against the mixture prior.
    elbo_description = (
        "ELBO E_q[log p(x | z)] - KL(q(z | x) || p(z)) at beta = 1 (Monte Carlo KL against "
        "the mixture prior, its component summed out)"
    )
    objectives = ("elbo",)
    decoders = VAE.choices["encoder"]
    #: The prior is the mixture of Gaussians.
    priors = ("mixture",)
    choices = {**VAE.choices, "objective": objectives, "decoder": decoders, "prior": priors}
    _normal_prior = False

    def __init__(
        self,
        data_shape: Sequence[int] | int,
        n_components: int = 10,
        *,
        latent_dim: int = 10,
        **vae_options: Any,
    ) -> None:
        super().__init__(data_shape, latent_dim=latent_dim, **vae_options)
        self.n_components = check_int("n_components", n_components)
        # Means spread like draws from N(0, I) so that components start apart; unit scales.
        generator = torch.Generator().manual_seed(0)
        self.component_logits = nn.Parameter(torch.zeros(n_components))
        self.component_locs = nn.Parameter(
            torch.randn(n_components, latent_dim, generator=generator)
        )
        self.component_log_scales = nn.Parameter(torch.zeros(n_components, latent_dim))

    @property
    def loss(self) -> TraceEnum_ELBO:
        """``TraceEnum_ELBO``: the component of every example is summed out exactly."""
        return TraceEnum_ELBO(**self._particle_options)

    def mixture(self) -> MixtureParameters:
        """The prior as mixture parameters: weights (K,), locs (K, L), variances (K, L)."""
        return MixtureParameters(
            torch.softmax(self.component_logits, -1),
            self.component_locs,
            (2 * self.component_log_scales).exp(),
            "diag",
        )

    # --- the prior hooks ------------------------------------------------------------------
    def _sample_z(self, batch_shape: torch.Size, context: torch.Tensor | None) -> torch.Tensor:
        component = pyro.sample(
            COMPONENT,
            dist.Categorical(logits=self.component_logits),
            infer={"enumerate": "parallel"},
        )
        return pyro.sample(LATENT, GaussianComponents(self.mixture(), component))

    def _prior(self, batch_shape: torch.Size, context: torch.Tensor | None) -> dist.Distribution:
        components = dist.Normal(self.component_locs, self.component_log_scales.exp()).to_event(1)
        mixture = dist.MixtureSameFamily(dist.Categorical(logits=self.component_logits), components)
        return mixture.expand(batch_shape)

    def _log_prior(self, z: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        return self._joint_log_prior(z).logsumexp(-1)

    def _joint_log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log pi_c + log N(z | mu_c, sigma_c) for every component: (..., K)."""
        params = self.mixture()
        table = component_log_density(z.reshape(-1, self.latent_dim), params)
        return (table + params.weights.log()).reshape(*z.shape[:-1], self.n_components)

    # --- clustering -----------------------------------------------------------------------
    @torch.no_grad()
    def predict_proba(self, x: Any) -> torch.Tensor:
        """p(c | z) at the posterior mean of q(z | x): component probabilities, (N, K)."""
        loc, _ = self.encode(x)
        return torch.softmax(self._joint_log_prior(loc), dim=-1)

    @torch.no_grad()
    def predict(self, x: Any) -> torch.Tensor:
        """The most probable component of each example: (N,) int64."""
        return self.predict_proba(x).argmax(-1)

    @torch.no_grad()
    def init_components(self, x: Any, *, seed: int = 0) -> GaussianMixtureVAE:
        """Set the prior to a diagonal :class:`~pyrogen.GaussianMixture` fitted to the
        posterior means of x (k-means++ and EM), e.g. after a few epochs of training.

        Component variances are floored at the mean posterior variance of q(z | x).

        Returns:
            ``self``.
        """
        from pyrogen.models.gmm import GaussianMixture

        loc, scale = self.encode(x)
        gmm = GaussianMixture(self.n_components, covariance="diag")
        gmm.setup(loc.double().cpu(), seed=seed)
        # A cluster of near-identical codes would get a near-zero variance, and then a prior
        # density that no posterior draw can match: floor it at the posteriors' own spread.
        floor = scale.square().mean(0).to(self.component_locs)
        variances = gmm.covariances_.to(self.component_locs).maximum(floor)
        self.component_logits.copy_(gmm.weights_.log().to(self.component_logits))
        self.component_locs.copy_(gmm.means_.to(self.component_locs))
        self.component_log_scales.copy_(0.5 * variances.log())
        return self

    # --- reporting (the contract of GenerativeModel) ---------------------------------------
    @property
    def predicts(self) -> str | None:
        """``predict(x)`` is the most probable mixture component."""
        return "component"

    @property
    def label_count(self) -> int | None:
        """``n_components``: ``sample(n, y)`` draws from the components y."""
        return self.n_components

    @property
    def label_kind(self) -> str:
        return "component"

    @property
    def label_names(self) -> list[str]:
        """Each component with its weight, e.g. ``"3 (0.12)"``."""
        weights = self.mixture().weights.detach().cpu()
        return [f"{k} ({float(weights[k]):.2f})" for k in range(self.n_components)]

    @torch.no_grad()
    def sample(self, n: int, y: Any = None, *, mean: bool = False) -> torch.Tensor:
        """Draw n examples; y (n,) picks their components (drawn from pi when None).

        Returns:
            (n, ``*data_shape``).
        """
        component = self._sample_labels(
            check_int("n", n), y, self.n_components, self.component_logits
        )
        z = dist.Normal(
            self.component_locs[component], self.component_log_scales[component].exp()
        ).sample()
        likelihood = self._likelihood(self._decode(z, None))
        return likelihood.mean if mean else likelihood.sample()
