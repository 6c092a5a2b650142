"""Semi-supervised VAE (Kingma et al., 2014, "M2"): the label is a latent variable.

The model::

    y_n ~ Categorical(1/C, ..., 1/C)
    z_n ~ Normal(0, I)
    x_n ~ p_theta(x | z_n, y_n)

and the guide q(y | x) q(z | x, y): a classifier and an encoder that sees the label. For a
labelled example y is observed and the ELBO is L(x, y); for an unlabelled one the guide's
y site is enumerated (``infer={"enumerate": "parallel"}``), so ``TraceEnum_ELBO`` computes
U(x) = sum_y q(y | x) (L(x, y) - log q(y | x)) exactly rather than by sampling y. Labelled
examples also add ``classifier_weight * log q(y | x)`` (Kingma's auxiliary classification
term), since otherwise q(y | x) learns only from unlabelled data.

Minibatches mix both kinds in a fixed share (``labelled_share``; see
:meth:`SemiSupervisedVAE.minibatch_order`), so a handful of labels is seen at every step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO
from pyro.nn import pyro_method
from torch import nn

from pyrogen.checks import as_labels, check_int
from pyrogen.models.labels import InfersLabels
from pyrogen.models.vae import LATENT, OBS, VAE
from pyrogen.nn import MLP, one_hot

#: Site of the label; the labelled and unlabelled rows of a batch get one plate each.
LABEL = "y"
LABELLED, UNLABELLED = "labelled", "unlabelled"


class SemiSupervisedVAE(InfersLabels, VAE):
    """M2 semi-supervised VAE: labels where known, an enumerated latent label elsewhere.

    Args:
        data_shape: shape of one example, e.g. ``(784,)`` (or 784) or ``(1, 28, 28)``.
        num_classes: C; labels are 0..C-1, and -1 marks an unlabelled example.
        classifier: ``"mlp"`` (hidden layers ``hidden``) or your own ``nn.Module`` mapping
            x (..., ``*data_shape``) to logits (..., C).
        hidden: hidden layer widths of the MLP networks (wider than the VAE's default).
        classifier_weight: alpha, the weight of log q(y | x) per labelled example.
        labelled_share: fraction of each training minibatch drawn from the labelled
            examples (all of them when there are fewer).
        **vae_options: every other argument of :class:`~pyrogen.VAE` (``latent_dim``,
            ``likelihood``, ``encoder``, ``decoder``, ``beta``, ``num_particles``, ...),
            passed to it as they are; custom encoder and decoder modules take the one-hot
            label as a second argument, (..., C). ``beta`` weighs the KL of z. The label is
            summed out of the ELBO exactly, which needs the KL of z per label in closed
            form: ``objective`` can only be ``"elbo"`` and ``posterior`` only
            ``"gaussian"`` (a ValueError names them otherwise).

    Shapes:
        x (N, ``*data_shape``); y (N,) with -1 for unlabelled rows.

    Example:
        >>> ssvae = SemiSupervisedVAE((784,), num_classes=10, latent_dim=8)
        >>> x, y = torch.rand(4, 784), torch.tensor([3, -1, -1, 7])  # -1: unlabelled
        >>> ssvae.elbo(x, y).shape, ssvae.predict_proba(x).shape
        (torch.Size([4]), torch.Size([4, 10]))
    """

    family = "ssvae"
    #: U(x): the label summed out exactly.
    elbo_description = (
        "ELBO U(x) = E_q(y | x)[L(x, y) - log q(y | x)] at beta = 1, the label summed out "
        "exactly (analytic KL of z)"
    )
    objectives = ("elbo",)
    choices = {
        **VAE.choices,
        "objective": objectives,
        "classifier": VAE.choices["encoder"],
        "decoder": VAE.choices["encoder"],
        "prior": ("normal",),
    }
    posteriors = ("gaussian",)
    decoders = VAE.choices["encoder"]
    priors = ("normal",)
    # Its ELBO sums over the labels (see elbo): no reconstruction and KL terms reported.
    elbo_terms_reported = ()
    # Tuned on MNIST with 100 labels (benchmarks/vae_semisupervised.py): a small labelled
    # share with a large classifier weight beat half-labelled batches by 5-9 points.
    fit_defaults = {**VAE.fit_defaults, "batch_size": 100, "lr": 3e-3}

    def __init__(
        self,
        data_shape: Sequence[int] | int,
        num_classes: int = 10,
        classifier: str | nn.Module = "mlp",
        *,
        hidden: Sequence[int] = (500,),
        classifier_weight: float = 250.0,
        labelled_share: float = 0.1,
        **vae_options: Any,
    ) -> None:
        self.num_classes = check_int("num_classes", num_classes, minimum=2)
        self.context_dim = self.num_classes  # the one-hot label, set before VAE.__init__
        super().__init__(data_shape, hidden=hidden, **vae_options)
        for name, value, low in (("classifier_weight", classifier_weight, 0.0),):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= low):
                raise ValueError(f"{name}: expected a non-negative number, got {value!r}")
        if not (isinstance(labelled_share, (int, float)) and 0 < labelled_share < 1):
            raise ValueError(f"labelled_share: expected a number in (0, 1), got {labelled_share!r}")
        self.classifier_weight = float(classifier_weight)
        self.labelled_share = float(labelled_share)
        self.classifier_kind = classifier if isinstance(classifier, str) else "custom"
        if isinstance(classifier, nn.Module):
            self.classifier = classifier
        elif classifier == "mlp":
            self.classifier = nn.Sequential(
                nn.Flatten(-len(self.data_shape)),
                MLP(math.prod(self.data_shape), self.hidden, self.num_classes),
            )
        else:
            raise ValueError(f"classifier: expected 'mlp' or an nn.Module, got {classifier!r}")

    @property
    def loss(self) -> TraceEnum_ELBO:
        """``TraceEnum_ELBO``: enumerates the label of unlabelled rows exactly."""
        # A fully labelled batch has nothing to enumerate: no warning for it.
        return TraceEnum_ELBO(**self._particle_options, strict_enumeration_warning=False)

    # --- Pyro programs --------------------------------------------------------------------
    def _split(
        self, x: torch.Tensor, y: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_labelled, y_labelled, x_unlabelled) of a batch; y None means all unlabelled."""
        if y is None:
            return x[:0], torch.zeros(0, dtype=torch.long, device=x.device), x
        known = y >= 0
        return x[known], y[known].long(), x[~known]

    def _label_prior(self, x: torch.Tensor) -> dist.Categorical:
        return dist.Categorical(
            logits=torch.zeros(self.num_classes, dtype=x.dtype, device=x.device)
        )

    def _one_hot(self, y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return one_hot(y, self.num_classes, like.dtype)

    @pyro_method
    def model(
        self, x: torch.Tensor, y: torch.Tensor | None = None, num_data: int | None = None
    ) -> None:
        """p(y) p(z) p_theta(x | z, y); y observed where known (y >= 0), latent elsewhere."""
        x_known, y_known, x_unknown = self._split(x, y)
        prior = self._label_prior(x)
        # Both plates together stand for num_data rows, like the one data plate of the VAE.
        with poutine.scale(scale=1.0 if num_data is None else num_data / x.shape[0]):
            for plate, rows, labels in (
                (LABELLED, x_known, y_known),
                (UNLABELLED, x_unknown, None),
            ):
                if rows.shape[0] == 0:
                    continue
                with pyro.plate(plate, rows.shape[0], dim=-1):
                    label = pyro.sample(f"{LABEL}_{plate}", prior, obs=labels)
                    with poutine.scale(scale=self.beta):
                        z = pyro.sample(f"{LATENT}_{plate}", self._prior(rows.shape[:1], None))
                    output = self.decoder(z, self._one_hot(label, rows))
                    pyro.sample(f"{OBS}_{plate}", self._likelihood(output), obs=rows)
                    if labels is not None and self.classifier_weight > 0:
                        log_q = dist.Categorical(logits=self.classifier(rows)).log_prob(labels)
                        pyro.factor("classifier", self.classifier_weight * log_q)

    @pyro_method
    def guide(
        self, x: torch.Tensor, y: torch.Tensor | None = None, num_data: int | None = None
    ) -> None:
        """q(z | x, y) where y is known; q(y | x) q(z | x, y), y enumerated, elsewhere."""
        x_known, y_known, x_unknown = self._split(x, y)
        with poutine.scale(scale=1.0 if num_data is None else num_data / x.shape[0]):
            if x_known.shape[0]:
                with pyro.plate(LABELLED, x_known.shape[0], dim=-1):
                    loc, scale = self.encoder(x_known, self._one_hot(y_known, x_known))
                    self._sample_posterior(LABELLED, loc, scale)
            if x_unknown.shape[0]:
                with pyro.plate(UNLABELLED, x_unknown.shape[0], dim=-1):
                    label = pyro.sample(
                        f"{LABEL}_{UNLABELLED}",
                        dist.Categorical(logits=self.classifier(x_unknown)),
                        infer={"enumerate": "parallel"},
                    )
                    loc, scale = self.encoder(x_unknown, self._one_hot(label, x_unknown))
                    self._sample_posterior(UNLABELLED, loc, scale)

    def _sample_posterior(self, plate: str, loc: torch.Tensor, scale: torch.Tensor) -> None:
        """The guide's z site of ``plate``: q(z | x, y) = Normal(loc, scale), weighted by beta
        as the model's p(z) is."""
        with poutine.scale(scale=self.beta):
            pyro.sample(f"{LATENT}_{plate}", dist.Normal(loc, scale).to_event(1))

    def minibatch_order(
        self, num_rows: int, batch_size: int, y: torch.Tensor | None, generator: torch.Generator
    ) -> torch.Tensor:
        """One epoch: every unlabelled row once, each batch ``labelled_share`` labelled rows.

        Labelled rows are drawn in shuffled passes, repeated as often as the epoch needs;
        with no labels (or no unlabelled rows) this is a plain shuffle.
        """
        known = None if y is None else (y >= 0).cpu()
        if known is None or known.all() or not known.any():
            return super().minibatch_order(num_rows, batch_size, y, generator)
        labelled, unlabelled = known.nonzero()[:, 0], (~known).nonzero()[:, 0]
        per_batch = min(len(labelled), max(1, round(batch_size * self.labelled_share)))
        per_batch = min(per_batch, batch_size - 1)
        unlabelled = unlabelled[torch.randperm(len(unlabelled), generator=generator)]
        chunks = unlabelled.split(batch_size - per_batch)
        passes = math.ceil(len(chunks) * per_batch / len(labelled))
        cycled = torch.cat(
            [labelled[torch.randperm(len(labelled), generator=generator)] for _ in range(passes)]
        ).split(per_batch)
        return torch.cat([torch.cat([cycled[i], chunk]) for i, chunk in enumerate(chunks)])

    # --- data -----------------------------------------------------------------------------
    @property
    def _decodes_per_sample(self) -> int:
        return self.num_classes  # log_weights decodes every label

    def setup(self, x: torch.Tensor, y: torch.Tensor | None = None, *, seed: int = 0) -> None:
        """Check the data and labels (-1 marks an unlabelled row)."""
        self._prepare_y(y, self._prepare(x).shape[0])

    def _prepare_y(self, y: Any, rows: int) -> torch.Tensor | None:
        if y is None:
            return None
        return as_labels(y, rows, self.num_classes, unlabelled=True).to(self._prior_loc.device)

    def _context(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """The one-hot label; the classifier's guess where it is unknown."""
        guess = self.classifier(x).argmax(-1)
        label = guess if y is None else torch.where(y >= 0, y, guess)
        return self._one_hot(label, x)

    # --- classification and evaluation ----------------------------------------------------
    @torch.no_grad()
    def predict_proba(self, x: Any) -> torch.Tensor:
        """q(y | x), the classifier's probabilities: (N, C)."""
        return torch.softmax(self.classifier(self._prepare(x)), dim=-1)

    @torch.no_grad()
    def predict(self, x: Any) -> torch.Tensor:
        """The most probable label under q(y | x): (N,) int64."""
        return self.predict_proba(x).argmax(-1)

    def _standard_normal(self) -> torch.distributions.Normal:
        """p(z) = N(0, I) from the prior buffer: on the model's device and in its dtype (a
        ``Normal(0.0, 1.0)`` would be made of CPU float32 scalars)."""
        return torch.distributions.Normal(*self._prior_params(None))

    def _per_label(self, x: torch.Tensor, num_samples: int):
        """z ~ q(z | x, y) for every label y, with p and q log densities: (S, C, B) each."""
        labels = torch.eye(self.num_classes, dtype=x.dtype, device=x.device)[:, None, :]
        loc, scale = self.encoder(x, labels)  # (C, B, L)
        posterior = torch.distributions.Normal(loc, scale)
        z = posterior.rsample((num_samples,))
        log_likelihood = self._log_likelihood(self.decoder(z, labels), x)
        return posterior, z, log_likelihood - math.log(self.num_classes)

    def _combine(self, per_label: torch.Tensor, y: torch.Tensor | None, x: torch.Tensor):
        """Per row: the value at the known label, else log sum_y exp(per_label) (C first)."""
        summed = torch.logsumexp(per_label, dim=-2)
        if y is None:
            return summed
        known = y >= 0
        picked = per_label.gather(-2, y.clamp(min=0).expand(*per_label.shape[:-2], 1, -1))
        return torch.where(known, picked.squeeze(-2), summed)

    @torch.no_grad()
    def log_weights(
        self, x: torch.Tensor, num_samples: int, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        """log p(x, y, z_k) - log q(z_k | x, y), with y summed out where unknown: (K, B).

        For an unlabelled row each sample sums over all C labels exactly (with one z per
        label), so ``log_likelihood`` estimates log p(x); for a labelled row, log p(x, y).
        """
        posterior, z, log_joint = self._per_label(x, num_samples)
        log_prior = self._standard_normal().log_prob(z).sum(-1)
        return self._combine(log_joint + log_prior - posterior.log_prob(z).sum(-1), y, x)

    @torch.no_grad()
    def elbo(
        self, x: Any, y: Any = None, *, num_samples: int = 1, batch_size: int = 1024
    ) -> torch.Tensor:
        """Per-example ELBO: L(x, y) where the label is known, U(x) elsewhere (nats).

        U(x) = sum_y q(y | x) (L(x, y) - log q(y | x)) with the sum over labels exact; KLs
        of z are analytic. A lower bound on log p(x, y) or log p(x). Shape (N,).
        """
        check_int("num_samples", num_samples)
        x = self._prepare(x)
        y = self._prepare_y(y, x.shape[0])
        rows = []
        for batch, labels in self._batches(x, y, check_int("batch_size", batch_size)):
            posterior, _, log_joint = self._per_label(batch, num_samples)
            kl = torch.distributions.kl_divergence(posterior, self._standard_normal()).sum(-1)
            bound = log_joint.mean(0) - kl  # L(x, y) for every label: (C, B)
            log_q = torch.log_softmax(self.classifier(batch), dim=-1).T
            unlabelled = (log_q.exp() * (bound - log_q)).sum(0)
            if labels is None:
                rows.append(unlabelled)
            else:
                picked = bound.gather(0, labels.clamp(min=0)[None]).squeeze(0)
                rows.append(torch.where(labels >= 0, picked, unlabelled))
        return torch.cat(rows)

    # --- reporting: predicts, conditions_on_labels and takes_labels from InfersLabels ------
    @torch.no_grad()
    def sample(self, n: int, y: Any = None, *, mean: bool = False) -> torch.Tensor:
        """Draw n examples with labels y (n,), drawn from p(y) when None: (n, ``*data_shape``)."""
        y = self._sample_labels(check_int("n", n), y, self.num_classes)
        return self._draw(n, self._one_hot(y, self._prior_loc), mean=mean)
