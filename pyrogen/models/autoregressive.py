"""Autoregressive densities: an exact likelihood by the chain rule, trained by SVI.

p(x) = p(x_1) prod_i p(x_i | x_<i), each conditional read off one pass of a masked or
causal network (:mod:`pyrogen.nn.autoregressive`). The model is one observed site whose
distribution is that product, and the guide is empty, so the ELBO *is* the log-likelihood
and :func:`pyrogen.fit` does maximum likelihood::

    model:  x_n ~ prod_i p(x_ni | x_n,<i ; network)     (observed)
    guide:  (empty)

With MADE and K > 1 masks the density is the mixture over the K orderings,
p(x) = (1/K) sum_k p_k(x), which stays normalized (averaging the networks' logits would
not). Training draws one mask per batch, so its loss is E_k[-log p_k(x)], the order-agnostic
objective of Germain et al. (2015), an upper bound on -log p(x) by Jensen's inequality;
``log_prob`` is the mixture's exact value.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.infer.util import is_validation_enabled
from pyro.nn import pyro_method
from torch.distributions import constraints
from tqdm.auto import tqdm

from pyrogen.checks import (
    as_examples,
    as_labels,
    check_choice,
    check_data_shape,
    check_int,
    check_ints,
)
from pyrogen.models.base import GenerativeModel, data_plate
from pyrogen.models.objectives import AnalyticKLELBO
from pyrogen.nn import one_hot
from pyrogen.nn.autoregressive import MADE, CausalConvNet, GatedPixelCNN

#: The networks, by name.
NETWORKS = ("made", "pixelcnn", "causal_conv")
#: The likelihoods of one value given the values before it, by name.
LIKELIHOODS = ("bernoulli", "categorical", "gaussian", "logistic_mixture")
#: The observed site of the model.
OBS = "obs"
# Rows evaluated at once by log_prob.
_EVAL_ROWS = 1024
# Floor of the continuous likelihoods' scales, in standardized units.
_MIN_SCALE = 1e-3
# Default kernel widths of the convolutional networks.
_KERNELS = {"pixelcnn": 5, "causal_conv": 2}


# --- likelihoods of one value: P network outputs -> a distribution ------------------------------
def _scale(raw: torch.Tensor) -> torch.Tensor:
    return F.softplus(raw) + _MIN_SCALE


def _logistic_log_density(x: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    z = (x - loc) / scale
    return -z - scale.log() - 2 * F.softplus(-z)


def _value_log_prob(kind: str, params: torch.Tensor, x: torch.Tensor, levels: int) -> torch.Tensor:
    """log p(x_i | x_<i) of every value x (...) from its parameters (..., P)."""
    if kind == "bernoulli":
        return -F.binary_cross_entropy_with_logits(params[..., 0], x, reduction="none")
    if kind == "categorical":
        index = (x * (levels - 1)).round().long()
        return params.log_softmax(-1).gather(-1, index.unsqueeze(-1)).squeeze(-1)
    if kind == "gaussian":
        return dist.Normal(params[..., 0], _scale(params[..., 1])).log_prob(x)
    logits, locs, raw_scales = params.chunk(3, dim=-1)
    densities = _logistic_log_density(x.unsqueeze(-1), locs, _scale(raw_scales))
    return torch.logsumexp(logits.log_softmax(-1) + densities, dim=-1)


def _value_sample(kind: str, params: torch.Tensor, levels: int) -> torch.Tensor:
    """One draw of every value (...) from its parameters (..., P)."""
    if kind == "bernoulli":
        return torch.bernoulli(torch.sigmoid(params[..., 0]))
    if kind == "categorical":
        return dist.Categorical(logits=params).sample().to(params.dtype) / (levels - 1)
    if kind == "gaussian":
        return params[..., 0] + _scale(params[..., 1]) * torch.randn_like(params[..., 0])
    logits, locs, raw_scales = params.chunk(3, dim=-1)
    component = dist.Categorical(logits=logits).sample().unsqueeze(-1)
    loc = locs.gather(-1, component).squeeze(-1)
    scale = _scale(raw_scales).gather(-1, component).squeeze(-1)
    u = torch.rand_like(loc).clamp(1e-6, 1 - 1e-6)
    return loc + scale * (u.log() - (-u).log1p())


class ChainRule(dist.TorchDistribution):
    """The distribution of the observed site: p(x) = prod_i p(x_i | x_<i) of an
    :class:`AutoregressiveDensity`, with one mask of its MADE (or its only network).

    Args:
        density: the model whose network gives the conditionals.
        context: the vectors (``*batch_shape``, C) every conditional sees (one-hot labels of
            a class-conditional model, a VAE's codes z), or None.
        mask: which of the MADE's masks (orderings) to use.
        batch_shape: the rows, e.g. (B,), or (S, B) for S draws of a VAE's codes.

    Shapes:
        values (..., ``*data_shape``), broadcast against ``batch_shape`` -> log_prob
        (the broadcast batch shape).
    """

    arg_constraints: dict[str, constraints.Constraint] = {}

    def __init__(
        self,
        density: AutoregressiveDensity,
        context: torch.Tensor | None,
        mask: int,
        batch_shape: torch.Size,
    ) -> None:
        self.density, self.context, self.mask = density, context, mask
        super().__init__(batch_shape, torch.Size(density.data_shape), validate_args=False)

    @constraints.dependent_property
    def support(self) -> constraints.Constraint:
        ndims = len(self.density.data_shape)
        if self.density.likelihood == "bernoulli":
            return constraints.independent(constraints.boolean, ndims)
        if self.density.likelihood == "categorical":
            return constraints.independent(constraints.unit_interval, ndims)
        return constraints.independent(constraints.real, ndims)

    def _rows_context(self, shape: torch.Size) -> torch.Tensor | None:
        """The context broadcast to ``shape`` and flattened to rows (prod(shape), C)."""
        if self.context is None:
            return None
        size = self.context.shape[-1]
        return self.context.expand(*shape, size).reshape(-1, size)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        event = self.event_shape
        shape = torch.broadcast_shapes(value.shape[: value.dim() - len(event)], self.batch_shape)
        rows = value.expand(*shape, *event).reshape(-1, *event)
        log_prob = self.density.chain_log_prob(rows, self._rows_context(shape), self.mask)
        return log_prob.reshape(shape)

    def sample(self, sample_shape: Sequence[int] = ()) -> torch.Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape
        draws = self.density.draw(shape.numel(), self._rows_context(shape))
        return draws.reshape(*shape, *self.event_shape)


class AutoregressiveDensity(GenerativeModel):
    """An autoregressive density p(x) = prod_i p(x_i | x_<i) (or p(x | y)), exact.

    Args:
        data_shape: shape of one example (an int D means (D,)).
        network: ``"made"`` (a masked MLP; any shape, flattened), ``"pixelcnn"`` (a gated
            PixelCNN; images (H, W) or (C, H, W)) or ``"causal_conv"`` (dilated causal
            convolutions; sequences (T,) or (C, T)). Default: ``"made"`` for vectors,
            ``"pixelcnn"`` for 2-D and 3-D shapes.
        likelihood: p(x_i | x_<i): ``"bernoulli"`` (values 0 or 1), ``"categorical"``
            (values k / (levels - 1), k = 0..levels-1, as 8-bit images scaled to [0, 1]),
            ``"gaussian"`` or ``"logistic_mixture"`` (real values, standardized inside the
            density by the training data's mean and standard deviation).
        hidden: MADE's hidden widths (``()``: direct connections alone, a fully visible
            model).
        num_masks: MADE's masks K: orderings and connectivities sharing the weights, one drawn
            per training batch; the density is the mean of the K orderings' densities.
        channels: feature channels of the convolutional networks.
        layers: gated layers of the convolutional networks.
        kernel_size: kernel width of the convolutional networks (default 5 for pixelcnn, 2
            for causal_conv; None for made).
        levels: L, the values of the categorical likelihood.
        mixture_components: M, the logistics of the logistic_mixture likelihood.
        num_classes: C, to condition on integer labels y in 0..C-1 (p(x | y)).

    Shapes:
        x (N, ``*data_shape``); y (N,) labels.

    Example:
        >>> model = AutoregressiveDensity((6,), "made", hidden=(16,), num_masks=2)
        >>> x = model.sample(4)  # (4, 6) binary vectors
        >>> model.exact_likelihood, model.log_prob(x).shape
        (True, torch.Size([4]))
    """

    family = "autoregressive"
    reads_images = True
    #: Size of a real context vector every conditional sees besides the labels' one-hot
    #: vector: 0 here, set by :class:`ConditionedDensity`.
    context_dim: int = 0
    fit_defaults = {"steps": 2000, "lr": 1e-3, "batch_size": 128, "early_stopping": None}
    choices = {"network": NETWORKS, "likelihood": LIKELIHOODS}

    def __init__(
        self,
        data_shape: Sequence[int] | int,
        network: str | None = None,
        likelihood: str = "bernoulli",
        *,
        hidden: Sequence[int] = (256,),
        num_masks: int = 1,
        channels: int = 64,
        layers: int = 6,
        kernel_size: int | None = None,
        levels: int = 256,
        mixture_components: int = 5,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        self.data_shape = check_data_shape(data_shape)
        if network is None:
            network = "made" if len(self.data_shape) == 1 else "pixelcnn"
        self.network_kind = check_choice("network", network, NETWORKS)
        self.likelihood = check_choice("likelihood", likelihood, LIKELIHOODS)
        self.hidden = check_ints("hidden", hidden)
        self.num_masks = check_int("num_masks", num_masks)
        self.channels = check_int("channels", channels)
        self.layers = check_int("layers", layers)
        self.kernel_size = (
            _KERNELS.get(network) if kernel_size is None else check_int("kernel_size", kernel_size)
        )
        self.levels = check_int("levels", levels, minimum=2)
        self.mixture_components = check_int("mixture_components", mixture_components)
        self.num_classes = num_classes
        if num_classes is not None:
            check_int("num_classes", num_classes, minimum=2)
        if network != "made" and num_masks != 1:
            raise ValueError(f"num_masks: expected 1 for network={network!r}, got {num_masks}")
        self.network_shape = _network_shape(network, self.data_shape)
        self.network = self._build_network()
        # Standardization of continuous values, set by setup; identity otherwise.
        self.register_buffer("data_shift", torch.zeros(self.data_shape))
        self.register_buffer("data_scale", torch.ones(self.data_shape))

    @property
    def params_per_value(self) -> int:
        """P, the network's outputs per value: 1, L, 2 or 3 M by likelihood."""
        return {
            "bernoulli": 1,
            "categorical": self.levels,
            "gaussian": 2,
            "logistic_mixture": 3 * self.mixture_components,
        }[self.likelihood]

    def _build_network(self) -> torch.nn.Module:
        params, context = self.params_per_value, (self.num_classes or 0) + self.context_dim
        if self.network_kind == "made":
            features = self.network_shape[0]
            return MADE(
                features, params, self.hidden, num_masks=self.num_masks, context_dim=context
            )
        network = GatedPixelCNN if self.network_kind == "pixelcnn" else CausalConvNet
        return network(
            self.network_shape[0],
            params,
            hidden_channels=self.channels,
            layers=self.layers,
            kernel_size=self.kernel_size,
            context_dim=context,
        )

    # --- reporting (the contract of GenerativeModel) ---------------------------------------
    @property
    def exact_likelihood(self) -> bool:
        """Always: the chain rule gives log p(x) exactly."""
        return True

    @property
    def report_plots(self) -> tuple[str, ...]:
        """The loss and samples, one row of samples per class with labels."""
        return ("elbo", "samples") + self.label_sample_plots

    def score_descriptions(self, num_samples: int, values: int) -> dict[str, str]:
        """The log-likelihood is exact: a probability for discrete values, a density for
        real ones, the mean over the orderings for MADE with several masks; so is bits/dim."""
        kind = "density" if self.likelihood in ("gaussian", "logistic_mixture") else "probability"
        text = f"exact {self.likelihood_target} (the chain rule; a log {kind})"
        if self.network_kind == "made" and self.num_masks > 1:
            text += f", of the mean of the densities of K = {self.num_masks} orderings"
        bits = f"-log_likelihood_per_example / (D ln 2), D = {values} values per example: exact"
        return {"log_likelihood": text, "bits_per_dim": bits}

    @property
    def loss(self) -> AnalyticKLELBO:
        """The negative log-likelihood of a model with no latent site, as ``Trace_ELBO``
        computes it, without reading the value back to Python every step."""
        return AnalyticKLELBO(max_plate_nesting=1)

    # --- the density ----------------------------------------------------------------------
    def _context(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor | None:
        if self.num_classes is None:
            return None
        if y is None:
            raise ValueError(f"y: expected labels for {x.shape[0]} rows of this model, got None")
        return one_hot(y, self.num_classes, x.dtype)

    @property
    def _continuous(self) -> bool:
        return self.likelihood in ("gaussian", "logistic_mixture")

    def _standardize(self, x: torch.Tensor) -> torch.Tensor:
        """Values (B, ``*data_shape``) -> the values the network models (B,
        ``*network_shape``): discrete values as they are, real values standardized."""
        if self._continuous:
            x = (x - self.data_shift) / self.data_scale
        return x.reshape(x.shape[0], *self.network_shape)

    def _destandardize(self, values: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`_standardize`."""
        x = values.reshape(values.shape[0], *self.data_shape)
        return x * self.data_scale + self.data_shift if self._continuous else x

    def _conditionals(
        self,
        values: torch.Tensor,
        context: torch.Tensor | None,
        mask: int = 0,
        weights: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The parameters (B, ..., P) of every conditional from the modelled values (B,
        ``*network_shape``) (discrete ones centred on 0 for the network)."""
        inputs = values if self._continuous else 2 * values - 1
        if self.network_kind == "made":
            return self.network(inputs, context, mask=mask, weights=weights)
        return self.network(inputs, context)

    def chain_log_prob(
        self, x: torch.Tensor, context: torch.Tensor | None = None, mask: int = 0
    ) -> torch.Tensor:
        """log p_mask(x) = sum_i log p(x_i | x_<i) per row (nats), shape (B,), for values x
        (B, ``*data_shape``) already checked; ``context``: one-hot labels (B, C) or None."""
        values = self._standardize(x)
        params = self._conditionals(values, context, mask)
        log_probs = _value_log_prob(self.likelihood, params, values, self.levels)
        total = log_probs.flatten(1).sum(-1)
        if self._continuous:
            total = total - self.data_scale.log().sum()  # the standardization's Jacobian
        return total

    # --- Pyro programs ------------------------------------------------------------------
    @pyro_method
    def model(
        self, x: torch.Tensor, y: torch.Tensor | None = None, num_data: int | None = None
    ) -> None:
        """x_n ~ prod_i p(x_ni | x_n,<i), observed; one of MADE's masks per batch."""
        if is_validation_enabled():  # the engine's first step: a user's data
            self._check_values(x, rows="row of the batch")
        mask = 0
        if self.network_kind == "made" and self.num_masks > 1:
            mask = int(torch.randint(self.num_masks, (), device=x.device))
        density = ChainRule(self, self._context(x, y), mask, x.shape[:1])
        with data_plate(x, num_data):
            pyro.sample(OBS, density, obs=x)

    @pyro_method
    def guide(
        self, x: torch.Tensor, y: torch.Tensor | None = None, num_data: int | None = None
    ) -> None:
        """Empty: the model has no latent site."""

    # --- data -----------------------------------------------------------------------------
    def setup(self, x: torch.Tensor, y: torch.Tensor | None = None, *, seed: int = 0) -> None:
        """Check the data; set the standardization of real values from them.

        Binary data may arrive as grey values in [0, 1] that an ``epoch_transform``
        (dynamic binarization) turns into 0/1 each epoch: those are checked on the first
        training batch instead."""
        x = self._prepare(x, binary_from_grey=True)
        self._context(x, self._prepare_y(y, x.shape[0]))
        if self._continuous:
            self.data_shift.copy_(x.mean(0))
            self.data_scale.copy_(x.std(0).clamp(min=1e-6) if len(x) > 1 else 1.0)

    def _check_values(self, x: torch.Tensor, name: str = "x", rows: str = "row") -> None:
        """A ValueError naming ``name`` and the first bad row for values the likelihood
        cannot score."""
        if self.likelihood == "bernoulli":
            bad = (x != 0) & (x != 1)
            expected = "binary values 0 or 1 for likelihood='bernoulli' (binarize the data, "
            expected += "or use likelihood='categorical', 'gaussian' or 'logistic_mixture')"
        elif self.likelihood == "categorical":
            scaled = x * (self.levels - 1)
            bad = ((scaled - scaled.round()).abs() > 1e-3) | (x < 0) | (x > 1)
            expected = (
                f"values k / {self.levels - 1} for k in 0..{self.levels - 1} for "
                f"likelihood='categorical' with levels={self.levels}"
            )
        else:
            return
        if bad.any():
            where = bad.nonzero()[0]
            value = x[tuple(where)].item()
            raise ValueError(
                f"{name}: expected {expected}, got {value:g} at {rows} {int(where[0])}"
            )

    def _prepare(self, x: Any, name: str = "x", *, binary_from_grey: bool = False) -> torch.Tensor:
        grey = binary_from_grey and self.likelihood == "bernoulli"
        unit = "for likelihood='bernoulli' (0/1, or grey values binarized each epoch)"
        x = as_examples(
            x,
            self.data_shape,
            dtype=self.data_shift.dtype,
            name=name,
            unit_interval=unit if grey else None,
        )
        x = x.to(self.data_shift.device)
        if not grey:
            self._check_values(x, name)
        return x

    def _prepare_y(self, y: Any, rows: int) -> torch.Tensor | None:
        if self.num_classes is not None:
            if y is None:
                raise ValueError(f"y: expected labels of shape ({rows},), got None")
            return as_labels(y, rows, self.num_classes).to(self.data_shift.device)
        if y is not None:
            raise ValueError("y: this model is not conditional (num_classes is None), got labels")
        return None

    # --- evaluation -----------------------------------------------------------------------
    @torch.no_grad()
    def log_prob(self, x: Any, y: Any = None) -> torch.Tensor:
        """Exact log p(x) (or log p(x | y)) of each example in nats, shape (N,): a log
        probability for discrete values, a log density for real ones; for MADE with K masks
        log (1/K) sum_k p_k(x), the mixture over its orderings."""
        x = self._prepare(x)
        y = self._prepare_y(y, x.shape[0])
        results = []
        for start in range(0, x.shape[0], _EVAL_ROWS):
            rows = x[start : start + _EVAL_ROWS]
            context = self._context(rows, None if y is None else y[start : start + _EVAL_ROWS])
            results.append(self.ordering_log_probs(rows, context).logsumexp(0))
        return torch.cat(results) - math.log(self._masks_in_use)

    @torch.no_grad()
    def log_likelihood(self, x: Any, y: Any = None, *, num_samples: int = 1) -> torch.Tensor:
        """log p(x) per example (nats), shape (N,): :meth:`log_prob`, exact.

        One case is not exact: grey values in [0, 1] under the Bernoulli likelihood, the
        probabilities of data binarized afresh each epoch (dynamic binarization). Their
        score is the mean of log p(b) over ``num_samples`` binarizations b ~ Bernoulli(x),
        an unbiased estimate of E_b[log p(b)], the expected log-likelihood of the binary
        data the model was trained on.
        """
        check_int("num_samples", num_samples)
        if self.likelihood != "bernoulli":
            return self.log_prob(x, y)
        grey = self._prepare(x, binary_from_grey=True)
        if bool(((grey == 0) | (grey == 1)).all()):
            return self.log_prob(grey, y)
        draws = [self.log_prob(torch.bernoulli(grey), y) for _ in range(num_samples)]
        return torch.stack(draws).mean(0)

    @property
    def _masks_in_use(self) -> int:
        return self.num_masks if self.network_kind == "made" else 1

    def ordering_log_probs(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        """log p_k(x) under each of the K orderings (MADE's masks; K = 1 otherwise), shape
        (K, B), for checked values x (B, ``*data_shape``)."""
        masks = range(self._masks_in_use)
        return torch.stack([self.chain_log_prob(x, context, mask) for mask in masks])

    @torch.no_grad()
    def sample(self, n: int, y: Any = None, *, progress: bool | None = None) -> torch.Tensor:
        """Draw n examples (n, ``*data_shape``), one network pass per value.

        Args:
            n: how many.
            y: labels (n,) of a class-conditional model; drawn uniformly when None.
            progress: a progress bar over the passes; None: on a terminal, for long draws.

        With MADE and K masks each row draws its ordering uniformly (the mixture). The
        convolutional networks are run on the rows (pixels) or steps up to the current one
        only, since nothing after it changes the current value's conditional.
        """
        check_int("n", n)
        if self.num_classes is not None and y is None:
            y = torch.randint(self.num_classes, (n,), device=self.data_shift.device)
        y = self._prepare_y(y, n)
        context = self._context(self.data_shift.expand(n, *self.data_shape), y)
        return self.draw(n, context, progress=progress)

    def draw(
        self, n: int, context: torch.Tensor | None, *, progress: bool | None = False
    ) -> torch.Tensor:
        """n draws (n, ``*data_shape``) given one-hot labels (n, C) or None (no checks)."""
        values = self.data_shift.new_zeros(n, *self.network_shape)
        masks = torch.randint(self._masks_in_use, (n,), device=values.device)
        per_ordering = math.prod(self.network_shape)
        disable = None if progress is None else not progress  # None: on a terminal
        with tqdm(total=per_ordering * self._masks_in_use, desc="sampling", disable=disable) as bar:
            for mask in range(self._masks_in_use):
                rows = (masks == mask).nonzero().flatten()
                if len(rows):
                    part = None if context is None else context[rows]
                    values[rows] = self._draw_ordering(values[rows], part, mask, bar)
                else:
                    bar.update(per_ordering)
        return self._destandardize(values)

    def _draw_ordering(
        self, values: torch.Tensor, context: torch.Tensor | None, mask: int, bar: Any
    ) -> torch.Tensor:
        """Fill values (B, ``*network_shape``) one by one in the network's order."""
        weights = self.network.masks(mask) if self.network_kind == "made" else None
        for index in self._order(mask):
            if self.network_kind == "made":
                params = self._conditionals(values, context, mask, weights)
            else:  # nothing after the current row (step) reaches it: run up to there only
                time = index[1] if self.network_kind == "pixelcnn" else index[-1]
                params = self._conditionals(values.narrow(2, 0, time + 1), context)
            draw = _value_sample(self.likelihood, params[(slice(None), *index)], self.levels)
            values[(slice(None), *index)] = draw
            bar.update(1)
        return values

    def _order(self, mask: int) -> Iterator[tuple[int, ...]]:
        """The positions in the network's shape, in the order they are generated."""
        if self.network_kind == "made":
            for index in self.network.ordering(mask).tolist():
                yield (index,)
            return
        channels, *spatial = self.network_shape
        for position in torch.cartesian_prod(*[torch.arange(s) for s in spatial]).reshape(
            -1, len(spatial)
        ):
            for channel in range(channels):
                yield (channel, *position.tolist())


class ConditionedDensity(AutoregressiveDensity):
    """p(x | h) = prod_i p(x_i | x_<i, h) for a real vector h (B, ``context_dim``) that every
    conditional sees: the autoregressive part of a VAE's decoder (h = z) or prior. A building
    block, not a family of its own: it is used through :class:`ChainRule` (``log_prob`` of
    values (..., ``*data_shape``) given h (..., ``context_dim``), ``sample`` given h), not
    trained by itself.

    Args:
        data_shape: shape of one example.
        context_dim: size of h.
        **options: the arguments of :class:`AutoregressiveDensity` (``network``,
            ``likelihood``, ``hidden``, ``channels``, ``layers``, ...).

    Example:
        >>> density = ConditionedDensity((6,), 2, network="made", hidden=(8,))
        >>> h = torch.randn(3, 2)
        >>> ChainRule(density, h, 0, h.shape[:1]).sample().shape
        torch.Size([3, 6])
    """

    def __init__(self, data_shape: Sequence[int] | int, context_dim: int, **options: Any) -> None:
        # Set before AutoregressiveDensity.__init__, which sizes the network by context_dim.
        self.context_dim = check_int("context_dim", context_dim)
        super().__init__(data_shape, **options)


def _network_shape(network: str, data_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape the network reads one example in: (D,), (C, H, W) or (C, T)."""
    if network == "made":
        return (math.prod(data_shape),)
    if network == "pixelcnn":
        if len(data_shape) not in (2, 3):
            raise ValueError(
                f"data_shape: expected (H, W) or (C, H, W) for network='pixelcnn', got "
                f"{data_shape} (use network='made' or 'causal_conv' for vectors)"
            )
        return data_shape if len(data_shape) == 3 else (1, *data_shape)
    if len(data_shape) not in (1, 2):
        raise ValueError(
            f"data_shape: expected (T,) or (C, T) for network='causal_conv', got {data_shape} "
            "(use network='pixelcnn' for images or 'made' for any shape)"
        )
    return data_shape if len(data_shape) == 2 else (1, *data_shape)
