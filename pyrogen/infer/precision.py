"""Mixed precision for the neural parts of a model, with every log-density kept in float32.

``torch.autocast`` around a whole Pyro program would also run the probability arithmetic
(log-densities, their sums over 784 pixels, KL terms) in bfloat16, whose 8-bit mantissa
turns a sum of a thousand terms into a number wrong in its third digit. So only the layers
that do the heavy arithmetic -- ``nn.Linear`` (zuko's masked layers included) and the
convolutions -- run under autocast, and each returns float32: the network computes a slightly
different function (its products rounded to bfloat16), and the ELBO of that function is
computed as exactly as in full precision.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
import zuko.nn
from torch import nn

from pyrogen.checks import check_choice

#: Accepted ``precision`` values (PyTorch Lightning's names).
PRECISIONS = ("32", "bf16-mixed")

# Layers whose matrix products autocast speeds up (zuko's own Linear is no nn.Linear; the
# lazy convolutions are subclasses of these).
_AUTOCAST_LAYERS = (
    nn.Linear,
    zuko.nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)


def check_precision(precision: Any) -> str:
    """``precision`` as one of :data:`PRECISIONS`, or a ValueError naming the argument."""
    # The integer 32 means "32" too.
    is_int = isinstance(precision, int) and not isinstance(precision, bool)
    return check_choice("precision", str(precision) if is_int else precision, PRECISIONS)


@contextlib.contextmanager
def mixed_precision(module: nn.Module, precision: str = "bf16-mixed") -> Iterator[int]:
    """Run ``module``'s linear and convolution layers in bfloat16 inside the block.

    Args:
        module: any module (a pyrogen model, a network); its parameters keep their dtype
            and each layer's output is cast back to it, so the code around the layers
            (activations, normalisations, every distribution) runs in full precision.
        precision: ``"bf16-mixed"``, or ``"32"`` for a block that changes nothing.

    Yields:
        the number of layers switched to bfloat16.

    Raises:
        ValueError: an unknown ``precision``, or ``"bf16-mixed"`` for a module without
            linear or convolution layers (a Gaussian mixture has nothing to speed up).

    Example:
        >>> import torch, pyrogen
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Tanh())
        >>> with mixed_precision(net) as layers:
        ...     out = net(torch.ones(4, 3))
        >>> layers, out.dtype
        (1, torch.float32)
    """
    if check_precision(precision) == "32":
        yield 0
        return
    layers = [m for m in module.modules() if isinstance(m, _AUTOCAST_LAYERS)]
    if not layers:
        raise ValueError(
            f"precision: {type(module).__name__} has no linear or convolution layers to run "
            "in bf16-mixed; use precision='32'"
        )
    device_type = _device_type(module)
    for layer in layers:
        # An instance attribute shadows the class's forward; deleting it restores the class's.
        layer.forward = _autocast_forward(layer.forward, device_type, _dtype(layer))
    try:
        yield len(layers)
    finally:
        for layer in layers:
            del layer.forward


def _autocast_forward(
    forward: Callable[..., Any], device_type: str, dtype: torch.dtype
) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast(device_type, dtype=torch.bfloat16):
            out = forward(*args, **kwargs)
        # Back to the layer's own precision, so the code after it sees what it always did.
        return out.to(dtype) if isinstance(out, torch.Tensor) and out.is_floating_point() else out

    return run


def _device_type(module: nn.Module) -> str:
    for tensor in module.parameters():
        return tensor.device.type
    return "cpu"


def _dtype(layer: nn.Module) -> torch.dtype:
    for tensor in layer.parameters():
        return tensor.dtype
    return torch.get_default_dtype()
