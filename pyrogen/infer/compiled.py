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

``compile="inductor"`` goes one step further: the recording's random draws are lifted out
of it (:func:`lift_random_draws`) and made eagerly, in the recorded order, by the same
operations on the same generators, so they are exactly the eager draws; the rest of the
graph, now deterministic, is compiled by ``torch.compile`` (inductor), which fuses its
element-wise operations. Inductor's fused arithmetic rounds differently, so the losses equal
the eager ones to float tolerance rather than bit for bit; the recording is checked
against the eager loss as before, and where that check or the compilation fails, the
plain recording is replayed instead, with a warning.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable

import pyro
import torch
import torch.fx
from torch.fx.experimental.proxy_tensor import make_fx
from torch.utils import _pytree as pytree

__all__ = ["COMPILE_MODES", "ReplayedLoss", "lift_random_draws"]

#: What ``fit(compile=...)`` takes besides False: True is ``"replay"``.
COMPILE_MODES = ("replay", "inductor")

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
        mode: ``"replay"`` (the recording replayed operation by operation) or
            ``"inductor"`` (its random draws made eagerly, the rest compiled by
            ``torch.compile``; see the module).

    Attributes:
        recordings: the replayed graphs by input shapes (tests and benchmarks read it).
        reason: why the loss runs eagerly (None while it does not).
        uncompiled: with ``mode="inductor"``, why a recording is replayed uncompiled
            (None while none is).
    """

    def __init__(self, trainer: torch.nn.Module, name: str, mode: str = "replay") -> None:
        super().__init__()
        if mode not in COMPILE_MODES:
            raise ValueError(f"mode: expected one of {COMPILE_MODES}, got {mode!r}")
        self.trainer, self.name, self.mode = trainer, name, mode
        self.recordings: dict[tuple, Callable[..., torch.Tensor]] = {}
        self.reason: str | None = None
        self.uncompiled: str | None = None
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
        _drop_unused(graph)
        with torch.no_grad():
            with _same_random_state(x.device):
                eager = float(self.trainer(x, y, num_data))
            with _same_random_state(x.device):
                replayed = float(graph(tensors, x, y))
        if not _close(eager, replayed):
            return self._give_up(f"a recording gave {replayed:.8g}, the eager loss {eager:.8g}")
        if self.mode == "inductor":
            graph = self._compiled(graph, tensors, x, y, eager)
        self.recordings[key] = graph
        return graph

    def _compiled(
        self,
        graph: torch.fx.GraphModule,
        tensors: list[torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor | None,
        eager: float,
    ) -> Callable[..., torch.Tensor]:
        """The recording with its draws lifted out and the rest compiled by inductor, or
        the recording itself (and a warning) where that fails or gives another loss."""
        try:
            run = lift_random_draws(graph, len([t for t in tensors if t.requires_grad]))
            with torch.no_grad(), _same_random_state(x.device):
                compiled = float(run(tensors, x, y))  # compiles here
        except Exception as error:  # noqa: BLE001 - any compiler failure falls back
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
            return self._uncompiled(graph, f"torch.compile failed: {reason}")
        if not _close(eager, compiled):
            return self._uncompiled(
                graph, f"the compiled step gave {compiled:.8g}, the eager loss {eager:.8g}"
            )
        return run

    def _uncompiled(self, graph: torch.fx.GraphModule, reason: str) -> torch.fx.GraphModule:
        self.uncompiled = reason
        self._warn(f"{self.name}'s recorded step is replayed uncompiled ({reason})")
        return graph

    def _give_up(self, reason: str) -> None:
        self.reason = reason
        self.recordings.clear()
        self._warn(
            f"{self.name}'s training step cannot be recorded ({reason}); it runs eagerly, as "
            "with compile=False"
        )
        return None

    def _warn(self, message: str) -> None:
        warnings.warn(f"compile: {message}", RuntimeWarning, stacklevel=3)


def lift_random_draws(
    graph: torch.fx.GraphModule, trained: int
) -> Callable[[list[torch.Tensor], torch.Tensor, torch.Tensor | None], torch.Tensor]:
    """Split a recorded loss ``graph(tensors, x, y)`` into its random draws, made eagerly,
    and the deterministic rest, compiled by ``torch.compile``.

    A draw is an operation tagged ``nondeterministic_seeded`` (``normal_``, ``randint``,
    ...); it and what it is computed from (shapes, constants) form a small graph run as
    recorded, so the draws come from the same generators, in the same order and by the same
    kernels as in eager training. Each draw then enters the compiled rest as an input.

    Args:
        graph: a ``make_fx`` recording of ``loss(tensors, x, y)``.
        trained: the first ``trained`` of ``tensors`` are trained: a draw computed from one
            (a reparameterized Gamma, say) would lose its gradient, and is refused.

    Returns:
        ``run(tensors, x, y)``, the loss.

    Raises:
        ValueError: a draw depends on a trained tensor.
    """
    nodes = list(graph.graph.nodes)
    inputs = [n for n in nodes if n.op == "placeholder"]
    draws = [n for n in nodes if n.op == "call_function" and _is_draw(n.target)]
    needed: set[torch.fx.Node] = set()
    stack = list(draws)
    while stack:
        node = stack.pop()
        if node not in needed:
            needed.add(node)
            stack.extend(node.all_input_nodes)
    if needed & set(inputs[:trained]):
        raise ValueError("a random draw depends on trained parameters")
    prelude, env = torch.fx.Graph(), {}
    for node in nodes:
        if node.op == "placeholder":
            env[node] = prelude.placeholder(node.name)
        elif node in needed:
            env[node] = prelude.node_copy(node, env.__getitem__)
    prelude.output(tuple(env[node] for node in draws))
    rest, env = torch.fx.Graph(), {}
    for node in inputs:
        env[node] = rest.placeholder(node.name)
    for i, node in enumerate(draws):
        env[node] = rest.placeholder(f"draw_{i}")
    for node in nodes:
        if node not in env:
            env[node] = rest.node_copy(node, env.__getitem__)
    rest.eliminate_dead_code()
    draw = torch.fx.GraphModule(graph, prelude)
    compiled = torch.compile(torch.fx.GraphModule(graph, rest), dynamic=False)
    in_spec, out_spec = graph._in_spec, graph._out_spec  # how make_fx flattened them

    def run(tensors: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor | None):
        flat = torch.fx._pytree.tree_flatten_spec((tensors, x, y), in_spec)
        return pytree.tree_unflatten(list(compiled(*flat, *draw(*flat))), out_spec)

    return run


def _drop_unused(graph: torch.fx.GraphModule) -> None:
    """Remove the recording's operations whose results nothing reads (index ``arange``s of
    Pyro's plates, constants copied for a check that does not run, ``detach``es): a replay
    pays for every operation in Python. Random draws stay, read or not, so the random
    streams advance exactly as in eager training."""

    def kept(node: torch.fx.Node) -> bool:
        return node.is_impure() or _is_draw(node.target)

    if graph.graph.eliminate_dead_code(is_impure_node=kept):
        graph.recompile()


def _is_draw(target: object) -> bool:
    return torch.Tag.nondeterministic_seeded in getattr(target, "tags", ())


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
