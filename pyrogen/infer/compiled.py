"""``pyrogen.fit(..., compile=True)``: the training loss recorded once, replayed every step.

Pyro builds the ELBO by running the model and the guide under effect handlers: every step
pays for its messages, traces and parameter registrations in Python, which on a small
network costs more than the arithmetic. The arithmetic itself is the same every step, so
:class:`ReplayedLoss` records it once per input shape -- running the loss under
``torch.fx``'s ``make_fx``, which keeps every tensor operation (random draws included, as
operations that draw afresh) and none of the Python around them -- and replays that graph
in later steps. Gradients flow to the model's own parameters, which are the graph's
inputs, so the optimizer, checkpoints and callbacks see nothing different.

A recording is used only when it is provably the same computation: it is refused when the
loss reads a value out of a tensor (data-dependent control flow such as a check, a
``.item()`` or an enumeration that depends on values), and it is checked once against the
eager loss on the same batch and the same random state. Either failure means the family's
step is not a fixed graph; training then continues eagerly, with a ``RuntimeWarning``
saying why. The random streams are left exactly as eager training leaves them, so a
compiled fit gives the eager fit's losses.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable

import pyro
import torch
from torch.fx.experimental.proxy_tensor import make_fx

__all__ = ["ReplayedLoss"]

#: Largest relative difference between a recording and the eager loss it must equal.
REPLAY_TOLERANCE = 1e-5
#: Input shapes recorded at most (a family whose batches take many shapes gains little).
MAX_RECORDINGS = 8


class ReplayedLoss(torch.nn.Module):
    """``trainer(x, y, num_data)`` -- the differentiable loss of a training step -- recorded
    once per shape of x (B, ...) and y and replayed; eager where it cannot be recorded.

    Steps with Pyro's validation on (the first of a fit, which checks arguments and
    supports) always run eagerly.

    Args:
        trainer: the loss module; its parameters and buffers are the graph's inputs.
        name: how a warning names the model.

    Attributes:
        recordings: the replayed graphs by input shapes (tests and benchmarks read it).
        reason: why the loss runs eagerly (None while it does not).
    """

    def __init__(self, trainer: torch.nn.Module, name: str) -> None:
        super().__init__()
        self.trainer, self.name = trainer, name
        self.recordings: dict[tuple, Callable[..., torch.Tensor]] = {}
        self.reason: str | None = None
        self.tensors: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, y: torch.Tensor | None, num_data: int) -> torch.Tensor:
        if self.reason is not None or pyro.poutine.util.is_validation_enabled():
            return self.trainer(x, y, num_data)
        key = (tuple(x.shape), x.dtype, None if y is None else (tuple(y.shape), y.dtype))
        key += (num_data, torch.is_autocast_enabled(x.device.type))
        graph = self.recordings.get(key)
        if graph is None:
            graph = self._record(key, x, y, num_data)
            if graph is None:
                return self.trainer(x, y, num_data)
        return graph(self.tensors, x, y)

    def _tensors(self) -> list[torch.Tensor]:
        # Kept for the replays: listing a module's tensors walks its modules (0.1 ms a step
        # on a small VAE); optimizers, .to() and load_state_dict keep the same tensors.
        self.tensors = [*self.trainer.parameters(), *self.trainer.buffers()]
        return self.tensors

    def _record(
        self, key: tuple, x: torch.Tensor, y: torch.Tensor | None, num_data: int
    ) -> Callable[..., torch.Tensor] | None:
        """Record the loss at ``x``, ``y``; None (and a warning) where it cannot be."""
        if len(self.recordings) >= MAX_RECORDINGS:
            return self._give_up(f"its batches took more than {MAX_RECORDINGS} shapes")

        def loss(tensors: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor | None):
            return self.trainer(x, y, num_data)  # the tensors are the module's own

        tensors = self._tensors()
        try:
            with _same_random_state(x.device):
                graph = make_fx(loss, tracing_mode="real")(tensors, x, y)
        except RuntimeError as error:  # make_fx refuses to read values out of tensors
            what = "reads values out of tensors" if "tracing tensor" in str(error) else error
            return self._give_up(f"its loss {what}: data-dependent control flow")
        with torch.no_grad():
            with _same_random_state(x.device):
                eager = float(self.trainer(x, y, num_data))
            with _same_random_state(x.device):
                replayed = float(graph(tensors, x, y))
        if not _close(eager, replayed):
            return self._give_up(f"a recording gave {replayed:.8g}, the eager loss {eager:.8g}")
        self.recordings[key] = graph
        return graph

    def _give_up(self, reason: str) -> None:
        self.reason = reason
        self.recordings.clear()
        warnings.warn(
            f"compile: {self.name}'s training step cannot be recorded ({reason}); it runs "
            "eagerly, as with compile=False",
            RuntimeWarning,
            stacklevel=2,
        )
        return None


def _close(a: float, b: float) -> bool:
    if not (math.isfinite(a) and math.isfinite(b)):
        return a == b or (math.isnan(a) and math.isnan(b))
    return abs(a - b) <= REPLAY_TOLERANCE * max(1.0, abs(a))


@contextlib.contextmanager
def _same_random_state(device: torch.device):
    """Run a block and put every random stream back as it was (Python, numpy and torch's,
    on the CPU and the block's GPU)."""
    state = pyro.util.get_rng_state()
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        pyro.util.set_rng_state(state)
