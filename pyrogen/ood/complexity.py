"""The input-complexity correction of Serra et al. (2020): a model's code length of an
input less a generic lossless compressor's, so that inputs likely only because they are
simple (blank, smooth) no longer look in-distribution."""

from __future__ import annotations

import io
import math
import zlib
from typing import Any

import numpy as np
import torch

from pyrogen.checks import check_choice
from pyrogen.diagnostics.scoring import as_float_tensor
from pyrogen.models.base import GenerativeModel
from pyrogen.ood.scores import negative_log_likelihood

__all__ = ["COMPRESSORS", "code_length", "complexity_score"]

#: Lossless compressors of :func:`code_length`: ``"zlib"`` (DEFLATE, stdlib) and ``"png"``
#: (Pillow, which matplotlib ships with).
COMPRESSORS = ("zlib", "png")
# 8-bit quantization of an example before it is compressed (Serra et al. 2020).
_LEVELS = 256


def code_length(
    x: Any, compressor: str = "zlib", *, low: float = 0.0, high: float = 1.0
) -> torch.Tensor:
    """L(x), the bits per value a lossless compressor writes for each example quantized to
    8 bits (256 levels over [``low``, ``high``]): the input complexity of Serra et al. (2020).

    ``"zlib"`` compresses the raw bytes (DEFLATE, level 9); ``"png"`` writes an image
    (C, H, W) with 1 or 3 channels, or (H, W), as a PNG (a flat example as one row), whose
    filters predict each pixel from its neighbours. Both count their headers, so even a
    constant example costs some bits.

    Args:
        x: examples (N, ...) with values in [low, high].
        compressor: one of :data:`COMPRESSORS`.
        low, high: the range quantized to 0 and 255.

    Returns:
        (N,) float tensor, bits per value (D = the values of one example).
    """
    check_choice("compressor", compressor, COMPRESSORS)
    x = as_float_tensor(x, "x").detach().cpu().double()
    if not high > low:
        raise ValueError(f"high: expected a value above low = {low}, got {high!r}")
    if len(x) and (x.min() < low or x.max() > high):
        raise ValueError(
            f"x: expected values in [{low}, {high}] to quantize to 8 bits, got "
            f"[{float(x.min()):.4g}, {float(x.max()):.4g}] (set low and high)"
        )
    levels = ((x - low) / (high - low) * (_LEVELS - 1)).round().to(torch.uint8).numpy()
    compress = _png_bytes if compressor == "png" else _zlib_bytes
    values = max(1, math.prod(x.shape[1:]))
    return torch.tensor([8.0 * compress(example) / values for example in levels])


def _zlib_bytes(example: np.ndarray) -> int:
    return len(zlib.compress(example.tobytes(), 9))


def _png_bytes(example: np.ndarray) -> int:
    from PIL import Image  # Pillow comes with matplotlib; imported only when asked for

    if example.ndim == 3 and example.shape[0] in (1, 3):
        example = np.moveaxis(example, 0, -1)  # (H, W, C): grey or RGB
        example = example[..., 0] if example.shape[-1] == 1 else example
    elif example.ndim != 2:
        example = example.reshape(1, -1)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(example)).save(buffer, format="PNG", compress_level=9)
    return buffer.tell()


def complexity_score(
    model: GenerativeModel,
    x: Any,
    y: Any = None,
    *,
    compressor: str = "zlib",
    low: float = 0.0,
    high: float = 1.0,
    num_samples: int | None = None,
    seed: int | None = 0,
    nll: torch.Tensor | None = None,
) -> torch.Tensor:
    """-log2 p(x) / D - L(x) / D per example, bits per value (Serra et al. 2020): the
    model's code length of x less a generic compressor's (:func:`code_length`), so that
    inputs likely only because they are simple no longer look in-distribution.

    It is a difference of two code lengths (a log-likelihood ratio against the compressor
    as a universal model) only where p is a probability of the 8-bit data (a discrete
    model: Bernoulli or categorical pixels, a discretized likelihood). For a density of
    8-bit data scaled to [0, 1], the probability of a value's bin is about p(x) / 256 per
    value, so the proper difference is this score plus 8 bits per value: the same shift for
    every example, which changes no ranking and no metric.

    Args:
        model, x, y, num_samples, seed: as :func:`negative_log_likelihood`.
        compressor, low, high: as :func:`code_length`.
        nll: x's :func:`negative_log_likelihood` (N,) where it is already computed (a bound's
            Monte Carlo estimate is costly); None computes it.

    Returns:
        (N,) float tensor, bits per value.
    """
    lengths = code_length(x, compressor, low=low, high=high)
    if nll is None:
        nll = negative_log_likelihood(model, x, y, num_samples=num_samples, seed=seed)
    return nll / math.log(2) - lengths
