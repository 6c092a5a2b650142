"""Denoiser networks for diffusion models: (z_t, t[, y]) -> a tensor the shape of z_t.

What the output means (the noise, the clean data or a velocity) is the diffusion model's
choice; the networks only map a noisy batch z (B, ``*data_shape``), a time t (B,) in [0, 1] and
optionally integer class labels y (B,) to a batch of the same shape as z. A conditional network
(``num_classes`` given) reserves the label ``num_classes`` as the "null" label, the one that
``y=None`` stands for, so that one network learns both p(z | y) and p(z), as classifier-free
guidance needs. The last layer starts at zero, so an untrained network outputs 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pyrogen.checks import check_int, check_ints
from pyrogen.nn.conv import _image_shape
from pyrogen.nn.mlp import MLP

#: Factor applied to t in [0, 1] before the sinusoids, as if t counted 1000 discrete steps.
TIME_SCALE = 1000.0
#: Longest period of the sinusoids, in units of the scaled time (Vaswani et al., 2017).
MAX_PERIOD = 10_000.0


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of a time t in [0, 1] (Ho et al., 2020; Vaswani et al., 2017).

    The first half of the features is ``sin(1000 t w_k)``, the second half ``cos(1000 t w_k)``,
    with frequencies ``w_k`` from 1 down to ``1 / 10000`` geometrically.

    Args:
        t: times, a floating-point tensor (an integer one is taken as the default float dtype).
        dim: the number of features, even and >= 2.

    Shapes:
        t (B,) (or any shape (...)) -> (B, dim) (or (..., dim)), in t's dtype and on its device.

    Example:
        >>> emb = timestep_embedding(torch.tensor([0.0, 0.5, 1.0]), 8)
        >>> emb.shape, emb[0].tolist()
        (torch.Size([3, 8]), [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    """
    dim = _check_even("dim", dim)
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"t: expected a torch.Tensor, got {type(t).__name__}")
    dtype = t.dtype if t.is_floating_point() else torch.get_default_dtype()
    # Half-precision times would round 1000 t to coarse steps: compute in at least float32.
    work = torch.promote_types(dtype, torch.float32)
    half = dim // 2
    exponents = torch.arange(half, device=t.device, dtype=work) / half
    freqs = torch.exp(-math.log(MAX_PERIOD) * exponents)
    angles = TIME_SCALE * t.to(work).unsqueeze(-1) * freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1).to(dtype)


class MLPDenoiser(nn.Module):
    """A fully connected denoiser for flat or small tabular data (e.g. 2-D toy densities).

    The flattened z is concatenated with a time embedding (:func:`timestep_embedding`, then
    Linear + activation) and, for a conditional network, a learned class embedding, and fed to
    an :class:`~pyrogen.nn.mlp.MLP` whose last layer starts at zero. With
    ``fourier_features=F`` the input also has random Fourier features of z (Tancik et al.,
    2020), sin(z B) and cos(z B) for a fixed B (D, F) with N(0, ``fourier_scale ** 2``)
    entries: a small MLP on z alone resolves structure much finer than z's spread only
    slowly (its spectral bias), and the denoiser of clustered low-dimensional data needs it
    at the clusters' scale.

    Args:
        data_shape: shape of one example, e.g. ``(2,)`` or ``(3, 4)``.
        hidden: widths of the MLP's hidden layers.
        time_dim: size of the time embedding and of the class embedding; even.
        num_classes: number of classes for a conditional network (labels ``0..num_classes-1``,
            plus the null label ``num_classes``); None for an unconditional one.
        activation: the activation class, one instance per hidden layer and one after the
            time embedding's Linear.
        fourier_features: F, the random frequencies (0 for none).
        fourier_scale: the standard deviation of their entries, in units of z (a length
            scale of about 1 / ``fourier_scale``).

    Shapes:
        z (B, ``*data_shape``), t (B,) or () in [0, 1], y (B,) integer labels or None
        -> (B, ``*data_shape``); the frequencies ``fourier`` (D, F), or None for F = 0.

    Example:
        >>> net = MLPDenoiser((2,), hidden=(64, 64), num_classes=3)
        >>> z, t = torch.randn(5, 2), torch.rand(5)
        >>> out = net(z, t, torch.tensor([0, 1, 2, 3, 0]))
        >>> out.shape, bool((out == 0).all())
        (torch.Size([5, 2]), True)
    """

    def __init__(
        self,
        data_shape: Sequence[int],
        *,
        hidden: Sequence[int] = (256, 256, 256),
        time_dim: int = 64,
        num_classes: int | None = None,
        activation: type[nn.Module] = nn.SiLU,
        fourier_features: int = 0,
        fourier_scale: float = 3.0,
    ) -> None:
        super().__init__()
        self.data_shape = check_ints("data_shape", data_shape, allow_empty=False)
        self.embed = _Embedding(time_dim, num_classes, activation)
        self.num_classes = self.embed.num_classes
        size = math.prod(self.data_shape)
        features = check_int("fourier_features", fourier_features, minimum=0)
        if isinstance(fourier_scale, bool) or not (
            isinstance(fourier_scale, int | float) and 0 < fourier_scale < math.inf
        ):
            raise ValueError(f"fourier_scale: expected a positive number, got {fourier_scale!r}")
        # A buffer: fixed frequencies, saved with the weights (none without features).
        frequencies = torch.randn(size, features) * float(fourier_scale) if features else None
        self.register_buffer("fourier", frequencies)
        self.net = MLP(size + 2 * features + self.embed.dim, hidden, size, activation=activation)
        _zero(self.net[-1])

    def forward(
        self, z: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Args: z (B, ``*data_shape``); t (B,) or (); y (B,) or None.
        Returns: (B, ``*data_shape``)."""
        _check_batch(z, self.data_shape)
        parts = [z.flatten(start_dim=1)]
        if self.fourier is not None:
            projected = parts[0] @ self.fourier.to(z.dtype)
            parts += [projected.sin(), projected.cos()]
        features = torch.cat([*parts, self.embed(z, t, y)], dim=-1)
        return self.net(features).view_as(z)

    def extra_repr(self) -> str:
        return (
            f"data_shape={self.data_shape}, num_classes={self.num_classes}, "
            f"fourier_features={0 if self.fourier is None else self.fourier.shape[1]}"
        )


class UNetDenoiser(nn.Module):
    """A small UNet denoiser for images (C, H, W) of any height and width.

    Each of the ``len(multipliers)`` levels has ``blocks`` residual blocks with
    ``channels * multiplier`` channels; a stride-2 convolution goes down a level, nearest
    upsampling and a convolution go up, and each level's output on the way down is
    concatenated to the input of the same level on the way up. The time (and class) embedding
    enters every residual block. The input is zero-padded so that H and W are multiples of
    ``2 ** (len(multipliers) - 1)``, and the output cropped back.

    Args:
        data_shape: ``(C, H, W)``.
        channels: channels of the first level.
        multipliers: channel multiplier of each level, from the full resolution down.
        blocks: residual blocks per level on each side.
        time_dim: size of the time embedding and of the class embedding; even; None for
            ``4 * channels``.
        num_classes: number of classes for a conditional network (labels ``0..num_classes-1``,
            plus the null label ``num_classes``); None for an unconditional one.
        groups: GroupNorm groups, reduced to ``gcd(groups, c)`` for c channels so that any
            ``channels`` works.
        dropout: dropout probability in the residual blocks, in [0, 1).

    Shapes:
        z (B, C, H, W), t (B,) or () in [0, 1], y (B,) integer labels or None -> (B, C, H, W).

    Example:
        >>> net = UNetDenoiser((1, 28, 28), channels=8, num_classes=10)
        >>> z, t, y = torch.randn(4, 1, 28, 28), torch.rand(4), torch.tensor([0, 3, 9, 10])
        >>> out = net(z, t, y)
        >>> out.shape, bool((out == 0).all())
        (torch.Size([4, 1, 28, 28]), True)
    """

    def __init__(
        self,
        data_shape: Sequence[int],
        *,
        channels: int = 32,
        multipliers: Sequence[int] = (1, 2, 2),
        blocks: int = 1,
        time_dim: int | None = None,
        num_classes: int | None = None,
        groups: int = 8,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.data_shape = _image_shape(data_shape)
        channels = check_int("channels", channels)
        widths = [channels * m for m in check_ints("multipliers", multipliers, allow_empty=False)]
        blocks = check_int("blocks", blocks)
        groups = check_int("groups", groups)
        if (
            isinstance(dropout, bool)
            or not isinstance(dropout, int | float)
            or not 0 <= dropout < 1
        ):
            raise ValueError(f"dropout: expected a float in [0, 1), got {dropout!r}")
        self.embed = _Embedding(4 * channels if time_dim is None else time_dim, num_classes)
        self.num_classes = self.embed.num_classes
        self._multiple = 2 ** (len(widths) - 1)

        def block(c_in: int, c_out: int) -> _ResBlock:
            return _ResBlock(c_in, c_out, self.embed.dim, groups, dropout)

        def stack(c_in: int, c_out: int) -> nn.ModuleList:
            return nn.ModuleList([block(c_in if i == 0 else c_out, c_out) for i in range(blocks)])

        self.stem = nn.Conv2d(self.data_shape[0], widths[0], 3, padding=1)
        self.down = nn.ModuleList(
            stack(c_in, c_out) for c_in, c_out in zip(widths[:1] + widths[:-1], widths, strict=True)
        )
        self.downsample = nn.ModuleList(
            nn.Conv2d(c, c, 3, stride=2, padding=1) for c in widths[:-1]
        )
        self.middle = nn.ModuleList([block(widths[-1], widths[-1]) for _ in range(2)])
        # Up level i takes the level above (i + 1, or the middle for the last) plus skip i.
        self.up = nn.ModuleList(
            stack(c_in + c, c) for c_in, c in zip(widths[1:] + widths[-1:], widths, strict=True)
        )
        self.upsample = nn.ModuleList(
            nn.Sequential(
                nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(c, c, 3, padding=1)
            )
            for c in widths[1:]
        )
        self.head = nn.Sequential(
            _group_norm(groups, widths[0]),
            nn.SiLU(),
            nn.Conv2d(widths[0], self.data_shape[0], 3, padding=1),
        )
        _zero(self.head[-1])

    def forward(
        self, z: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Args: z (B, C, H, W); t (B,) or (); y (B,) or None. Returns: (B, C, H, W)."""
        _check_batch(z, self.data_shape)
        emb = self.embed(z, t, y)
        _, height, width = self.data_shape
        h = self.stem(F.pad(z, (0, -width % self._multiple, 0, -height % self._multiple)))
        skips = []
        for level, stack in enumerate(self.down):
            h = _apply(stack, h, emb)
            skips.append(h)
            if level < len(self.downsample):
                h = self.downsample[level](h)
        h = _apply(self.middle, h, emb)
        for level in reversed(range(len(self.up))):
            h = _apply(self.up[level], torch.cat([h, skips[level]], dim=1), emb)
            if level > 0:
                h = self.upsample[level - 1](h)
        return self.head(h)[..., :height, :width]

    def extra_repr(self) -> str:
        return f"data_shape={self.data_shape}, num_classes={self.num_classes}"


class _Embedding(nn.Module):
    """The conditioning vector of both denoisers: a time embedding, joined with a class
    embedding for a conditional network; also checks t and y against the batch z."""

    def __init__(
        self, time_dim: int, num_classes: int | None, activation: type[nn.Module] = nn.SiLU
    ) -> None:
        super().__init__()
        self.time_dim = _check_even("time_dim", time_dim)
        self.num_classes = None if num_classes is None else check_int("num_classes", num_classes)
        # A one-layer MLP is one Linear that also checks ``activation``.
        self.time = nn.Sequential(
            MLP(self.time_dim, (), self.time_dim, activation=activation), activation()
        )
        if self.num_classes is None:
            self.label = None
            self.dim = self.time_dim
        else:
            self.label = nn.Embedding(self.num_classes + 1, self.time_dim)
            self.dim = 2 * self.time_dim

    def forward(self, z: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        batch = z.shape[0]
        if not isinstance(t, torch.Tensor) or t.shape not in ((), (batch,)):
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"t: expected a tensor of shape ({batch},) or (), got {shape}")
        # t in the network's dtype (that of z): a float32 t must not break a float64 network.
        emb = self.time(timestep_embedding(t.to(z.dtype).expand(batch), self.time_dim))
        if self.label is None:
            if y is not None:
                raise ValueError(
                    "y: expected None (the network was built with num_classes=None), got "
                    f"{type(y).__name__}"
                )
            return emb
        if y is None:
            y = torch.full((batch,), self.num_classes, dtype=torch.long, device=z.device)
        elif not isinstance(y, torch.Tensor) or y.shape != (batch,) or y.is_floating_point():
            what = (
                f"shape {tuple(y.shape)}, dtype {y.dtype}"
                if isinstance(y, torch.Tensor)
                else repr(y)
            )
            raise ValueError(f"y: expected integer labels of shape ({batch},), got {what}")
        elif ((y < 0) | (y > self.num_classes)).any():
            raise ValueError(
                f"y: expected labels in 0..{self.num_classes} ({self.num_classes} is the null "
                f"label), got values in [{int(y.min())}, {int(y.max())}]"
            )
        return torch.cat([emb, self.label(y)], dim=-1)


class _ResBlock(nn.Module):
    """GroupNorm-SiLU-Conv, plus the projected embedding, GroupNorm-SiLU-Dropout-Conv, plus a
    (1x1 where the channels change) skip."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.first = nn.Sequential(
            _group_norm(groups, c_in), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1)
        )
        self.emb = nn.Linear(emb_dim, c_out)
        self.second = nn.Sequential(
            _group_norm(groups, c_out),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Conv2d(c_out, c_out, 3, padding=1),
        )
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.first(x) + self.emb(emb)[:, :, None, None]
        return self.second(h) + self.skip(x)


def _apply(stack: nn.ModuleList, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    for block in stack:
        h = block(h, emb)
    return h


def _group_norm(groups: int, channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(groups, channels), channels)


def _zero(layer: nn.Module) -> None:
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)


def _check_even(name: str, value: object) -> int:
    value = check_int(name, value, minimum=2)
    if value % 2:
        raise ValueError(f"{name}: expected an even int >= 2, got {value!r}")
    return value


def _check_batch(z: torch.Tensor, data_shape: tuple[int, ...]) -> None:
    """A ValueError unless z is one batch (B, ``*data_shape``)."""
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"z: expected a torch.Tensor, got {type(z).__name__}")
    if tuple(z.shape[1:]) != data_shape or z.ndim != len(data_shape) + 1:
        raise ValueError(f"z: expected shape (B, *{data_shape}), got {tuple(z.shape)}")
