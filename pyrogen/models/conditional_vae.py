"""Conditional VAE: every network sees a context c, a label and/or the observed part of x.

The model (Sohn et al., 2015)::

    z_n ~ p(z | c_n)                        (N(0, I), or a learned Normal for completion)
    x_n ~ p_theta(x | z_n, c_n)             (only the values not given in c are scored)

with the amortized guide ``z_n ~ Normal(encoder(x_n, c_n))``. The context c is the one-hot
label (``num_classes``), the observed values of x (``observed``: e.g. the top half of an
image), or both. With ``observed`` the model is p(x_missing | x_observed, y): its ELBO and
log-likelihood are conditional on the given values, and :meth:`ConditionalVAE.complete`
fills in the rest (image completion).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from pyrogen.checks import as_labels, check_int
from pyrogen.models.vae import VAE, check_data_shape
from pyrogen.nn import build_encoder, one_hot

#: Shorthands for ``observed``: which half of each example is given.
HALVES = ("top", "bottom", "left", "right")


class ConditionalVAE(VAE):
    """VAE conditioned on class labels and/or on a partial observation of each example.

    Args:
        data_shape: shape of one example, e.g. ``(784,)`` (or 784) or ``(1, 28, 28)``.
        num_classes: C, to condition on integer labels y in 0..C-1 (passed as ``y``).
        observed: the values of each example that are given: ``"top"``, ``"bottom"``,
            ``"left"`` or ``"right"`` half (rows and columns of the last two dims; a flat
            ``(D,)`` example is read as a square image for left/right, top = first half), or
            a boolean mask of ``data_shape`` (True = given). None: x is generated whole.
        conditional_prior: learn p(z | c) with a network (needed to generate from a partial
            observation, so the default is True exactly when ``observed`` is given) instead
            of the fixed N(0, I).
        **vae_options: every other argument of :class:`~pyrogen.VAE` (``latent_dim``,
            ``likelihood``, ``encoder``, ``decoder``, ``hidden``, ``beta``, ``objective``,
            ``num_particles``, ``posterior``, ``flow_transforms``), passed to it as they are;
            custom encoder and decoder modules take the context as a second argument,
            shape (B, ``context_dim``), and a flow posterior is q(z | x, c).

    Shapes:
        x (N, ``*data_shape``); y (N,) integer labels; context (N, ``context_dim``) with
        ``context_dim = C + number of given values``.

    Example:
        >>> cvae = ConditionalVAE((784,), latent_dim=8, num_classes=10)
        >>> cvae.sample(3, y=[0, 1, 2]).shape
        torch.Size([3, 784])
    """

    family = "cvae"
    #: The factorized decoders only: an autoregressive one would score the given values too.
    decoders = VAE.choices["encoder"]
    priors = ("normal",)
    choices = {**VAE.choices, "observed": HALVES, "decoder": decoders, "prior": priors}

    def __init__(
        self,
        data_shape: Sequence[int] | int,
        num_classes: int | None = None,
        observed: str | Sequence[Any] | torch.Tensor | None = None,
        *,
        conditional_prior: bool | None = None,
        **vae_options: Any,
    ) -> None:
        data_shape = check_data_shape(data_shape)
        if num_classes is None and observed is None:
            raise ValueError(
                "num_classes, observed: expected at least one condition (labels or a partial "
                "observation), got neither; use pyrogen.VAE for an unconditional model"
            )
        given = None if observed is None else observed_mask(observed, data_shape)
        # Set before VAE.__init__, which sizes the networks by context_dim.
        self.num_classes = None if num_classes is None else check_int("num_classes", num_classes)
        # A mask is kept as the nested lists of bools that config writes.
        self.observed = observed if given is None or isinstance(observed, str) else given.tolist()
        self.context_dim = (self.num_classes or 0) + (0 if given is None else int(given.sum()))
        super().__init__(data_shape, **vae_options)
        if given is not None:
            # A float 0/1 buffer (not bool) so that .to(dtype) treats it like every other.
            self.register_buffer("_given", given.to(self._prior_loc.dtype))
        self.conditional_prior = (
            given is not None if conditional_prior is None else bool(conditional_prior)
        )
        if self.conditional_prior:
            self.prior_net = build_encoder(
                "mlp", (self.context_dim,), self.latent_dim, hidden=self.hidden
            )

    # --- the hooks ----------------------------------------------------------------------
    @property
    def _given_mask(self) -> torch.Tensor | None:
        return self._given.bool() if hasattr(self, "_given") else None

    @property
    def _observed_mask(self) -> torch.Tensor | None:
        given = self._given_mask
        return None if given is None else ~given

    def _context(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        parts = []
        if self.num_classes is not None:
            if y is None:
                raise ValueError(
                    f"y: expected labels of shape ({x.shape[0]},) for a ConditionalVAE with "
                    f"num_classes={self.num_classes}, got None"
                )
            parts.append(one_hot(y, self.num_classes, x.dtype))
        given = self._given_mask
        if given is not None:
            parts.append(x[..., given])
        return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]

    def _prior_params(self, context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.conditional_prior:
            return self.prior_net(context)
        return super()._prior_params(context)

    def _prepare_y(self, y: Any, rows: int) -> torch.Tensor | None:
        if self.num_classes is None:
            return super()._prepare_y(y, rows)
        if y is None:
            raise ValueError(
                f"y: expected labels of shape ({rows},) for a ConditionalVAE with "
                f"num_classes={self.num_classes}, got None"
            )
        return as_labels(y, rows, self.num_classes).to(self._prior_loc.device)

    # --- reporting (the contract of GenerativeModel) ---------------------------------------
    @property
    def given_mask(self) -> torch.Tensor | None:
        """The ``observed`` values of each example (True = given), shape ``data_shape``."""
        return self._given_mask

    @property
    def report_plots(self) -> tuple[str, ...]:
        """Completions of the missing values where some are given (and, with labels, the
        completions of the same given values under each label); otherwise as the VAE's."""
        if self.given_mask is not None:
            return ("elbo", "completions", "latent") + self.label_sample_plots
        return super().report_plots

    @property
    def elbo_description(self) -> str:
        """The conditional ELBO at beta = 1, its KL analytic."""
        return (
            "ELBO E_q[log p(x | z, c)] - KL(q(z | x, c) || p(z | c)) at beta = 1 (analytic KL), "
            "c the condition (the one-hot label and/or the given values)"
        )

    # --- generation ---------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self, n: int, y: Any = None, *, observed: Any = None, mean: bool = False
    ) -> torch.Tensor:
        """Draw n examples given labels and/or given values: (n, ``*data_shape``).

        Args:
            n: number of examples.
            y: labels (n,); None draws them uniformly (models with ``num_classes``).
            observed: examples (n, ``*data_shape``) whose given values condition the draw
                and are copied into it (required by models with ``observed``; the other
                values of these examples are ignored).
            mean: return the mean of p(x | z, c) instead of a draw.
        """
        check_int("n", n)
        if self.num_classes is not None and y is None:
            y = torch.randint(self.num_classes, (n,), device=self._prior_loc.device)
        y = self._prepare_y(y, n)
        given = self._given_mask
        if given is None:
            if observed is not None:
                raise ValueError("observed: this ConditionalVAE has no observed part, got data")
            x = self._prior_loc.new_zeros(n, *self.data_shape)
        else:
            if observed is None:
                raise ValueError(
                    "observed: expected examples whose given values condition the draw "
                    f"(shape ({n}, {', '.join(map(str, self.data_shape))})), got None; "
                    "complete(x) does the same for a batch"
                )
            x = self._prepare(observed, name="observed")
            if x.shape[0] != n:
                raise ValueError(f"observed: expected {n} rows, got {x.shape[0]}")
        draw = self._draw(n, self._context(x, y), mean=mean)
        return draw if given is None else torch.where(given, x, draw)

    @torch.no_grad()
    def reconstruct(self, x: Any, y: Any = None) -> torch.Tensor:
        """As :meth:`VAE.reconstruct`, with the given values of x kept as they are."""
        reconstruction = super().reconstruct(x, y)
        given = self._given_mask
        if given is None:
            return reconstruction
        return torch.where(given, self._prepare(x), reconstruction)

    def complete(self, x: Any, y: Any = None, *, mean: bool = True) -> torch.Tensor:
        """Fill in the values of x that are not given: (N, ``*data_shape``).

        The given values are kept; the rest are the mean of p(x | z, c) (or a draw with
        ``mean=False``) for z ~ p(z | c). Needs ``observed``.
        """
        if self._given_mask is None:
            raise ValueError("complete: this ConditionalVAE was built without observed=")
        x = self._prepare(x)
        return self.sample(x.shape[0], y, observed=x, mean=mean)


def observed_mask(observed: str | Sequence[Any] | torch.Tensor, data_shape: tuple[int, ...]):
    """Boolean mask of ``data_shape``, True where the value is given."""
    if isinstance(observed, str):
        if observed not in HALVES:
            raise ValueError(
                f"observed: expected one of {HALVES} or a boolean mask, got {observed!r}"
            )
        if len(data_shape) >= 2:
            height, width = data_shape[-2:]
        else:
            side = math.isqrt(data_shape[0])
            height, width = (side, side) if side * side == data_shape[0] else (data_shape[0], 1)
        if observed in ("left", "right") and width == 1:
            raise ValueError(
                f"observed: {observed!r} needs image-shaped examples, got data_shape {data_shape}"
            )
        rows = torch.arange(height)[:, None].expand(height, width)
        cols = torch.arange(width)[None, :].expand(height, width)
        half = {
            "top": rows < height // 2,
            "bottom": rows >= height - height // 2,
            "left": cols < width // 2,
            "right": cols >= width - width // 2,
        }[observed]
        mask = half.expand(*data_shape[:-2], height, width) if len(data_shape) >= 2 else half
        return mask.reshape(data_shape).clone()
    mask = torch.as_tensor(observed)
    if mask.dtype != torch.bool:
        if mask.is_floating_point() or not ((mask == 0) | (mask == 1)).all():
            raise ValueError("observed: expected a boolean mask (True = given), got other values")
        mask = mask.bool()
    if tuple(mask.shape) != data_shape:
        raise ValueError(
            f"observed: expected a mask of shape {data_shape}, got {tuple(mask.shape)}"
        )
    if mask.all() or not mask.any():
        raise ValueError("observed: expected some values given and some missing, got all or none")
    return mask.clone()
