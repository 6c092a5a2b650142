"""Autoregressive networks: output i sees only the inputs before i in an ordering.

Each network maps x to the parameters of every conditional p(x_i | x_<i) in one pass:

* :class:`MADE` (Germain et al. 2015): a masked MLP over vectors of any length, with one
  or several masks (orderings of the inputs and connectivities of the hidden units) that
  share the weights, for order-agnostic training and an ensemble over orderings;
* :class:`GatedPixelCNN` (van den Oord et al. 2016): masked convolutions over images
  (C, H, W), type A in the first layer and type B after, in a vertical and a horizontal
  stack so that no pixel above or to the left is left out (no blind spot);
* :class:`CausalConvNet` (WaveNet-style): dilated causal 1-D convolutions over sequences
  (C, T).

The convolutional networks order values pixel by pixel (raster scan) or step by step, and
the C channels of one pixel or step one after another; the masks that enforce it are fixed
buffers built by :func:`channel_groups` and :func:`causal_kernel_mask`, so ``.to()`` moves
them. Nothing here knows about likelihoods: a network returns P numbers per value, and the
family reads them as a Bernoulli logit, L categorical logits, or a mixture's parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pyrogen.checks import check_int, check_ints, check_trailing_shape


def channel_groups(channels: int, groups: int) -> torch.Tensor:
    """The group (a data channel, 0..groups-1) of each of ``channels`` feature channels,
    in contiguous blocks: with ``channels >= groups`` every group has at least one.

    Example:
        >>> channel_groups(6, 3)
        tensor([0, 0, 1, 1, 2, 2])
    """
    return torch.arange(channels) * groups // channels


def causal_kernel_mask(
    kernel_size: Sequence[int],
    in_groups: torch.Tensor,
    out_groups: torch.Tensor,
    *,
    strict: bool,
) -> torch.Tensor:
    """The 0/1 mask (out, in, ``*kernel_size``) of a convolution whose last tap is the current
    position and whose other taps lie strictly before it.

    Earlier taps are open; at the current tap, output channel o sees input channel i only if
    its group comes after i's (``strict``: mask type A, the first layer, which must not see
    the value it predicts) or is not before it (type B, later layers).

    Args:
        kernel_size: the kernel's size per spatial dim, e.g. ``(1, 3)`` or ``(2,)``.
        in_groups: group of each input channel (in,).
        out_groups: group of each output channel (out,).
        strict: type A (True) or type B (False).
    """
    mask = torch.ones(len(out_groups), len(in_groups), *kernel_size)
    later = out_groups[:, None] > in_groups[None, :]
    allowed = later if strict else later | (out_groups[:, None] == in_groups[None, :])
    mask[(..., *[-1] * len(kernel_size))] = allowed.to(mask.dtype)
    return mask


def gate(pre: torch.Tensor) -> torch.Tensor:
    """The gated activation tanh(a) * sigmoid(b) of channels ``pre`` = [a, b] (B, 2n, ...)."""
    a, b = pre.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class MaskedConv(nn.Module):
    """A 1-D or 2-D convolution with a fixed 0/1 mask on its weight and its own padding.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: one size per spatial dim (its length, 1 or 2, sets the dims).
        padding: as :func:`torch.nn.functional.pad` takes it (last dim first; negative
            values crop), applied before the convolution.
        mask: (out, in, ``*kernel_size``) 0/1 values, or None for none.
        dilation: spacing of the kernel's taps.

    Shapes:
        input (B, in, ``*spatial``) -> output (B, out, ``*spatial'``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Sequence[int],
        padding: Sequence[int],
        mask: torch.Tensor | None = None,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        kernel_size = tuple(kernel_size)
        conv = nn.Conv1d if len(kernel_size) == 1 else nn.Conv2d
        self.conv = conv(in_channels, out_channels, kernel_size, dilation=dilation)
        self.padding = tuple(padding)
        if mask is not None:
            check_trailing_shape("mask", mask, tuple(self.conv.weight.shape))
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, in, ``*spatial``). Returns: (B, out, ``*spatial'``)."""
        weight = self.conv.weight if self.mask is None else self.conv.weight * self.mask
        convolve = F.conv1d if weight.ndim == 3 else F.conv2d
        return convolve(F.pad(x, self.padding), weight, self.conv.bias, dilation=self.conv.dilation)


def _pointwise(in_groups: torch.Tensor, out_groups: torch.Tensor, dims: int) -> MaskedConv:
    """A 1x1 convolution where output group g sees input groups up to g (type B)."""
    kernel = (1,) * dims
    mask = causal_kernel_mask(kernel, in_groups, out_groups, strict=False)
    return MaskedConv(len(in_groups), len(out_groups), kernel, (0,) * (2 * dims), mask)


class _OutputHead(nn.Module):
    """ReLU, a type-B 1x1 convolution, ReLU, and a type-B 1x1 convolution to C * P channels
    laid out (C, P), so the parameters of channel c see only hidden groups up to c."""

    def __init__(self, hidden_groups: torch.Tensor, groups: int, params: int, dims: int) -> None:
        super().__init__()
        out_groups = torch.arange(groups).repeat_interleave(params)
        self.hidden = _pointwise(hidden_groups, hidden_groups, dims)
        self.out = _pointwise(hidden_groups, out_groups, dims)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.hidden(F.relu(h))))


def _params_last(out: torch.Tensor, groups: int, params: int) -> torch.Tensor:
    """(B, C * P, ``*spatial``) -> (B, C, ``*spatial``, P)."""
    out = out.reshape(out.shape[0], groups, params, *out.shape[2:])
    return out.movedim(2, -1)


def _condition(
    layer: nn.Linear | None, context: torch.Tensor | None, dims: int
) -> torch.Tensor | float:
    """A per-channel bias (B, channels, 1, ...) from a context (B, context_dim), or 0."""
    if layer is None:
        if context is not None:
            raise ValueError("context: expected None (built with context_dim=0), got a tensor")
        return 0.0
    if context is None:
        raise ValueError(f"context: expected a tensor (B, {layer.in_features}), got None")
    check_trailing_shape("context", context, (layer.in_features,))
    bias = layer(context.to(layer.weight.dtype))
    return bias.reshape(*bias.shape, *(1,) * dims)


def _check_widths(channels: int, params: int, hidden_channels: int, layers: int) -> tuple[int, int]:
    """Check a convolutional network's sizes (hidden channels at least the data's, so that
    every data channel has a group of features); returns (channels, params)."""
    check_int("channels", channels)
    check_int("layers", layers)
    if check_int("hidden_channels", hidden_channels) < channels:
        raise ValueError(
            f"hidden_channels: expected at least the data's {channels} channels, "
            f"got {hidden_channels}"
        )
    return channels, check_int("params", params)


# --- MADE --------------------------------------------------------------------------------------
class MADE(nn.Module):
    """A masked autoencoder for distribution estimation: a masked MLP whose outputs for value
    i depend only on the values before i in an ordering.

    With ``num_masks = K > 1`` the network holds K masks that share its weights: mask 0 takes
    the values in their natural order with evenly spread hidden connectivity, the others a
    random ordering and random connectivity, drawn at construction from torch's random state
    and kept as buffers (so a saved model holds them). Training on a mask drawn per batch is
    order-agnostic and connectivity-agnostic training; each mask is a normalized density,
    and so is the mean of their densities (see ``AutoregressiveDensity``).

    Args:
        features: D, the values of one example.
        params: P, the numbers returned per value.
        hidden: widths of the hidden layers; ``()`` gives the direct connections alone (a
            fully visible model, one regression per value).
        num_masks: K, the masks (orderings and connectivities).
        context_dim: size of a context vector (a one-hot label) every hidden unit and output
            sees; 0 for none.

    Shapes:
        x (B, D), context (B, context_dim) -> (B, D, P).

    Example:
        >>> made = MADE(5, params=1, hidden=(16,), num_masks=2)
        >>> made(torch.rand(3, 5), mask=1).shape
        torch.Size([3, 5, 1])
    """

    def __init__(
        self,
        features: int,
        params: int,
        hidden: Sequence[int] = (256,),
        *,
        num_masks: int = 1,
        context_dim: int = 0,
    ) -> None:
        super().__init__()
        self.features = check_int("features", features)
        self.params = check_int("params", params)
        self.hidden = check_ints("hidden", hidden)
        self.num_masks = check_int("num_masks", num_masks)
        self.context_dim = check_int("context_dim", context_dim, minimum=0)
        widths = (self.features, *self.hidden)
        pairs = zip(widths[:-1], widths[1:], strict=True)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in pairs)
        outputs = self.features * self.params
        self.output = nn.Linear(widths[-1], outputs) if self.hidden else None
        self.direct = nn.Linear(self.features, outputs)
        first = self.hidden[0] if self.hidden else outputs
        self.context = nn.Linear(context_dim, first, bias=False) if context_dim else None
        self.register_buffer("degrees", self._draw_degrees())

    def _draw_degrees(self) -> torch.Tensor:
        """(K, D + sum(hidden)): each mask's input degrees (the position, 1..D, of each value in
        its ordering) then each hidden unit's (it sees inputs of degree up to its own)."""
        d = self.features
        top = max(d - 1, 0)  # hidden degrees lie in 1..D-1 (all 0 when D = 1: no inputs)
        masks = []
        for index in range(self.num_masks):
            if index == 0:
                inputs = torch.arange(1, d + 1)
                units = [torch.arange(width) % max(top, 1) + min(1, top) for width in self.hidden]
            else:
                inputs = torch.randperm(d) + 1
                units = [torch.randint(min(1, top), top + 1, (width,)) for width in self.hidden]
            masks.append(torch.cat([inputs, *units]))
        return torch.stack(masks)

    def ordering(self, mask: int = 0) -> torch.Tensor:
        """The values in the order mask ``mask`` generates them: (D,) indices, first to last."""
        return self.degrees[mask, : self.features].argsort()

    def masks(self, mask: int = 0) -> list[torch.Tensor]:
        """The 0/1 weight masks of mask ``mask``: hidden layers, output, direct connections."""
        degrees = self.degrees[mask].split([self.features, *self.hidden])
        dtype = self.direct.weight.dtype
        out = degrees[0].repeat_interleave(self.params)  # each value's P outputs
        pairs = zip(degrees[:-1], degrees[1:], strict=True)
        found = [(b[:, None] >= a[None, :]).to(dtype) for a, b in pairs]
        if self.hidden:
            found.append((out[:, None] > degrees[-1][None, :]).to(dtype))
        found.append((out[:, None] > degrees[0][None, :]).to(dtype))
        return found

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        mask: int = 0,
        weights: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Args: x (B, D); context (B, context_dim) or None; mask: which of the K masks;
        weights: ``masks(mask)`` computed once by a caller making many passes (sampling).
        Returns: (B, D, P), the parameters of each p(x_i | x_<i)."""
        check_trailing_shape("x", x, (self.features,))
        weights = self.masks(mask) if weights is None else weights
        h = x
        for index, layer in enumerate(self.layers):
            h = F.linear(h, layer.weight * weights[index], layer.bias)
            if index == 0 and self.context is not None:
                h = h + _condition(self.context, context, 0)
            h = F.relu(h)
        out = F.linear(x, self.direct.weight * weights[-1], self.direct.bias)
        if self.output is not None:
            out = out + F.linear(h, self.output.weight * weights[-2], self.output.bias)
        elif self.context is not None:
            out = out + _condition(self.context, context, 0)
        return out.reshape(*x.shape[:-1], self.features, self.params)


# --- PixelCNN ------------------------------------------------------------------------------------
class _GatedLayer(nn.Module):
    """One gated layer of both stacks. The vertical stack sees the rows above (the first
    layer strictly above, by a one-row shift); the horizontal stack the pixels to the left
    in the row and, through a type-A or type-B current tap, the current pixel's earlier
    channels; it also reads the vertical stack at the same position."""

    def __init__(self, first: bool, groups: int, channels: int, kernel: int, context: int) -> None:
        super().__init__()
        hidden_groups = channel_groups(channels, groups)
        in_groups = torch.arange(groups) if first else hidden_groups
        gate_groups = hidden_groups.repeat(2)
        half = kernel // 2
        rows = (half, half, half + first, -int(first))  # first layer: one row up
        self.vertical = MaskedConv(len(in_groups), 2 * channels, (half + 1, kernel), rows)
        mask = causal_kernel_mask((1, half + 1), in_groups, gate_groups, strict=first)
        self.horizontal = MaskedConv(len(in_groups), 2 * channels, (1, half + 1), (half, 0), mask)
        self.vertical_to_horizontal = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.residual = None if first else _pointwise(hidden_groups, hidden_groups, 2)
        self.context = nn.Linear(context, 4 * channels, bias=False) if context else None

    def forward(
        self, v: torch.Tensor, h: torch.Tensor, context: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        v_pre = self.vertical(v)
        h_pre = self.horizontal(h) + self.vertical_to_horizontal(v_pre)
        bias = _condition(self.context, context, 2)
        if torch.is_tensor(bias):
            v_bias, h_bias = bias.chunk(2, dim=1)
            v_pre, h_pre = v_pre + v_bias, h_pre + h_bias
        h_out = gate(h_pre)
        return gate(v_pre), h_out if self.residual is None else h + self.residual(h_out)


class GatedPixelCNN(nn.Module):
    """A gated PixelCNN: p(x) = prod over pixels (raster order) and their channels of
    p(x_value | the values before it).

    Args:
        channels: C, the image's channels (their values are generated in order, channel 0
            first, at each pixel).
        params: P, the numbers returned per value.
        hidden_channels: feature channels of each layer (at least C).
        layers: gated layers (the first has mask type A, the rest type B).
        kernel_size: odd width of the kernels (the vertical stack's are kernel_size // 2 + 1
            rows high, the horizontal stack's kernel_size // 2 + 1 wide).
        context_dim: size of a context vector (a one-hot class) added to every layer's
            gates; 0 for none.

    Shapes:
        x (B, C, H, W), context (B, context_dim) -> (B, C, H, W, P).

    Example:
        >>> net = GatedPixelCNN(1, params=1, hidden_channels=8, layers=2)
        >>> net(torch.rand(2, 1, 5, 5)).shape
        torch.Size([2, 1, 5, 5, 1])
    """

    def __init__(
        self,
        channels: int,
        params: int,
        hidden_channels: int = 64,
        layers: int = 6,
        kernel_size: int = 5,
        context_dim: int = 0,
    ) -> None:
        super().__init__()
        self.channels, self.params = _check_widths(channels, params, hidden_channels, layers)
        if check_int("kernel_size", kernel_size, minimum=3) % 2 == 0:
            raise ValueError(f"kernel_size: expected an odd integer >= 3, got {kernel_size}")
        hidden_groups = channel_groups(hidden_channels, channels)
        self.layers = nn.ModuleList(
            _GatedLayer(
                index == 0,
                channels,
                hidden_channels,
                kernel_size,
                context_dim,
            )
            for index in range(layers)
        )
        self.head = _OutputHead(hidden_groups, channels, self.params, dims=2)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Args: x (B, C, H, W); context (B, context_dim) or None.
        Returns: (B, C, H, W, P), the parameters of each value's conditional."""
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"x: expected shape (B, {self.channels}, H, W), got {tuple(x.shape)}")
        v = h = x
        for layer in self.layers:
            v, h = layer(v, h, context)
        return _params_last(self.head(h), self.channels, self.params)


# --- causal convolutions -------------------------------------------------------------------------
class _CausalLayer(nn.Module):
    """A gated residual layer of dilated causal convolutions (the first has mask type A)."""

    def __init__(
        self,
        first: bool,
        groups: int,
        channels: int,
        kernel: int,
        dilation: int,
        context: int,
    ) -> None:
        super().__init__()
        hidden_groups = channel_groups(channels, groups)
        in_groups = torch.arange(groups) if first else hidden_groups
        mask = causal_kernel_mask((kernel,), in_groups, hidden_groups.repeat(2), strict=first)
        padding = (dilation * (kernel - 1), 0)
        self.conv = MaskedConv(len(in_groups), 2 * channels, (kernel,), padding, mask, dilation)
        self.residual = None if first else _pointwise(hidden_groups, hidden_groups, 1)
        self.context = nn.Linear(context, 2 * channels, bias=False) if context else None

    def forward(self, h: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        out = gate(self.conv(h) + _condition(self.context, context, 1))
        return out if self.residual is None else h + self.residual(out)


class CausalConvNet(nn.Module):
    """Dilated causal 1-D convolutions (WaveNet-style): p(x) = prod over steps and their
    channels of p(x_value | the values before it).

    Args:
        channels: C, the sequence's channels (generated in order at each step).
        params: P, the numbers returned per value.
        hidden_channels: feature channels of each layer (at least C).
        layers: gated residual layers; layer l has dilation 2^l (the first has mask type A),
            so the receptive field is about kernel_size * 2^layers steps.
        kernel_size: taps of each convolution (at least 2).
        context_dim: size of a context vector (a one-hot class) added to every layer's
            gates; 0 for none.

    Shapes:
        x (B, C, T), context (B, context_dim) -> (B, C, T, P).

    Example:
        >>> net = CausalConvNet(1, params=2, hidden_channels=8, layers=3)
        >>> net(torch.randn(4, 1, 10)).shape
        torch.Size([4, 1, 10, 2])
    """

    def __init__(
        self,
        channels: int,
        params: int,
        hidden_channels: int = 64,
        layers: int = 6,
        kernel_size: int = 2,
        context_dim: int = 0,
    ) -> None:
        super().__init__()
        self.channels, self.params = _check_widths(channels, params, hidden_channels, layers)
        check_int("kernel_size", kernel_size, minimum=2)
        hidden_groups = channel_groups(hidden_channels, channels)
        self.layers = nn.ModuleList(
            _CausalLayer(
                index == 0,
                channels,
                hidden_channels,
                kernel_size,
                2**index,
                context_dim,
            )
            for index in range(layers)
        )
        self.head = _OutputHead(hidden_groups, channels, self.params, dims=1)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Args: x (B, C, T); context (B, context_dim) or None.
        Returns: (B, C, T, P), the parameters of each value's conditional."""
        if x.ndim != 3 or x.shape[1] != self.channels:
            raise ValueError(f"x: expected shape (B, {self.channels}, T), got {tuple(x.shape)}")
        h = x
        for layer in self.layers:
            h = layer(h, context)
        return _params_last(self.head(h), self.channels, self.params)
