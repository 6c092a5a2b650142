"""Checkpoints of a training run: the :class:`Checkpoint` callback that saves the whole
training state (model, optimizer, step, the loop's state and every process's random state)
atomically, resumes from it exactly, and turns Ctrl-C or SIGTERM into a saved state and a
:class:`TrainingInterrupted` instead of a lost run.
"""

from __future__ import annotations

import random
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pyrogen.infer import distributed
from pyrogen.infer.callbacks import Callback
from pyrogen.io import PathLike, load_checkpoint, save_checkpoint
from pyrogen.version import __version__

if TYPE_CHECKING:
    from pyrogen.infer.engine import TrainingLoop

__all__ = [
    "INTERRUPT_SIGNALS",
    "Checkpoint",
    "TrainingInterrupted",
    "get_rng_state",
    "set_rng_state",
]


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C (SIGINT) or SIGTERM after a step whose state was saved.

    A ``KeyboardInterrupt``, so code that handles Ctrl-C handles it too.

    Attributes:
        step: the steps taken, all saved in ``checkpoint``.
        checkpoint: the file holding the training state; ``resume=True`` continues from it.
        signal_name: ``"SIGINT"`` or ``"SIGTERM"``.
    """

    def __init__(self, step: int, checkpoint: Path, signal_name: str) -> None:
        self.step, self.checkpoint, self.signal_name = step, checkpoint, signal_name
        super().__init__(
            f"training interrupted ({signal_name}) after step {step}; its state is saved in "
            f"{str(checkpoint)!r} (resume=True continues from it)"
        )


#: The signals :class:`Checkpoint` defers to the end of a step, to save a state to resume from.
INTERRUPT_SIGNALS = ("SIGINT", "SIGTERM")


class Checkpoint(Callback):
    """Save the training state (atomically) every ``every`` steps, at the end and when
    interrupted; resume from it.

    The file holds the model (so it is also a model file for :func:`pyrogen.load`), the
    optimizer, the step, ``loop.state`` (losses, best state, this epoch's row order) and
    every process's random state, so that a resumed run continues exactly, and what the run
    depends on (``run``: rows, their shape and dtype, batch size, optimizer and its
    parameter groups, family, seed), so that a resume on anything else is refused
    (:meth:`check_run`) rather than continued wrongly.

    Ctrl-C (SIGINT) and SIGTERM, in a single training process on the main thread, end
    training cleanly: the current step completes, its state is saved, and
    :class:`TrainingInterrupted` is raised (a second signal interrupts at once). Under
    ``strategy="ddp"`` the processes keep the default handling; the last ``every``-step
    checkpoint is the one to resume from.

    Args:
        path: the checkpoint file.
        every: steps between checkpoints; None saves at the end (and when interrupted) only.
        resume: continue from ``path`` when it exists: the loop loads the model from
            :meth:`read`'s state as it sets the model up, and calls :meth:`restore` once
            the optimizer is made, before any ``on_fit_start``.
    """

    all_processes = True  # every process's random state is gathered into the file

    def __init__(self, path: PathLike, every: int | None = None, resume: bool = False) -> None:
        self.path, self.every, self.resume = Path(path), every, resume
        self._pending: str | None = None  # the deferred signal's name
        self._handlers: dict[int, Any] = {}  # the handlers replaced while training

    def read(self, family: str) -> dict[str, Any] | None:
        """The saved state to resume from, or None (no ``resume``, or no file yet).

        Raises:
            ValueError: the file holds another family than ``family``.
        """
        if not (self.resume and self.path.exists()):
            return None
        saved = load_checkpoint(self.path, required=("state_dict", "optimizer", "step", "rng"))
        if saved.get("family") != family:
            raise ValueError(
                f"checkpoint {str(self.path)!r}: expected family {family!r}, "
                f"got {saved.get('family')!r}"
            )
        return saved

    def check_run(self, saved: dict[str, Any], current: dict[str, Any]) -> None:
        """Refuse to resume a run that differs from the one that wrote ``saved``.

        ``current`` holds entries of :meth:`TrainingLoop.run_signature
        <pyrogen.infer.engine.TrainingLoop.run_signature>`; an entry the checkpoint lacks
        (an older file) is not compared.

        Raises:
            ValueError: naming every entry that differs, as saved and as now.
        """
        recorded = saved.get("run")
        if not isinstance(recorded, dict):
            return
        if isinstance(current.get("config"), dict):  # settings the data decide later: any
            config = {k: v for k, v in current["config"].items() if v is not None}
            current = {**current, "config": config}
            if isinstance(recorded.get("config"), dict):
                recorded = {**recorded, "config": {k: recorded["config"].get(k) for k in config}}
        differ = [
            key
            for key, value in current.items()
            if key in recorded and _comparable(recorded[key]) != _comparable(value)
        ]
        if differ:
            recorded, current = _only_differing_settings(recorded, current)
            was = ", ".join(_describe_run(key, recorded[key]) for key in differ)
            now = ", ".join(_describe_run(key, current[key]) for key in differ)
            raise ValueError(
                f"resume: the checkpoint {str(self.path)!r} was written for {was}, got {now}; "
                "resume with the same data and options, or start afresh (resume=False or "
                "another checkpoint path)"
            )

    def restore(self, loop: TrainingLoop, saved: dict[str, Any]) -> None:
        """Put the optimizer, the loop's state and the random streams back as saved (the
        model's parameters are loaded before the optimizer is made).

        Raises:
            ValueError: naming the file, when its training state is malformed.
        """
        try:
            loop.optimizer.load_state_dict(saved["optimizer"])
            state = type(loop.state).from_dict(saved)
            _check_saved_state(saved, state, loop.num_data)
            by_rank = saved.get("rng_by_rank") or [saved["rng"]]
            if len(by_rank) == loop.where.world_size:  # else: a new process count, new streams
                set_rng_state(by_rank[loop.where.rank])
            loop.order_rng.set_state(saved["order_rng"])
        except (TypeError, ValueError, KeyError, IndexError, RuntimeError, AttributeError) as error:
            raise ValueError(
                f"checkpoint {str(self.path)!r}: expected a training state pyrogen.fit wrote, "
                f"got one that cannot be restored ({type(error).__name__}: {error})"
            ) from error
        loop.state = state

    def on_fit_start(self, loop: TrainingLoop) -> None:
        if loop.where.world_size > 1 or threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set on the main thread of one process
        for name in INTERRUPT_SIGNALS:
            number = getattr(signal, name, None)
            if number is not None:
                self._handlers[number] = signal.signal(number, self._defer)

    def _defer(self, number: int, frame: Any) -> None:
        if self._pending is not None:  # asked twice: stop now, without saving
            raise KeyboardInterrupt
        self._pending = signal.Signals(number).name
        print(
            f"pyrogen: {self._pending}: stopping after this step and saving the training "
            "state (again to stop at once)",
            file=sys.stderr,
        )

    def _restore_handlers(self) -> None:
        for number, handler in self._handlers.items():
            signal.signal(number, handler)
        self._handlers.clear()

    def on_step_end(self, loop: TrainingLoop, loss: float) -> None:
        if self._pending is not None:
            self.save(loop)
            raise TrainingInterrupted(loop.state.step, self.path, self._pending)
        if self.every and loop.state.step % self.every == 0:
            self.save(loop)

    def on_fit_end(self, loop: TrainingLoop) -> None:
        self._restore_handlers()
        self.save(loop)
        if self._pending is not None:  # asked to stop as the last step ended: stop
            raise TrainingInterrupted(loop.state.step, self.path, self._pending)

    def on_exception(self, loop: TrainingLoop, error: BaseException) -> None:
        self._restore_handlers()

    def save(self, loop: TrainingLoop) -> None:
        """Write the file (in the first process, once every process's state is gathered)."""
        where, model = loop.where, loop.model
        # Every process's noise stream, so that a resume with as many processes is exact.
        by_rank = distributed.all_gather_objects(get_rng_state(), where)
        if not where.is_main:
            torch.distributed.barrier()
            return
        payload = {
            "pyrogen_version": __version__,
            "family": model.family,
            "config": model.config,
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            # On the CPU like the parameters, so that a machine without the GPU can read it.
            "optimizer": _on_cpu(loop.optimizer.state_dict()),
            "rng": by_rank[0],
            "rng_by_rank": by_rank,
            "order_rng": loop.order_rng.get_state(),
            "run": loop.run_signature(),
            **loop.state.to_dict(),
        }
        save_checkpoint(self.path, payload)
        if where.world_size > 1:  # no process reads the file before it is written
            torch.distributed.barrier()


#: How :meth:`Checkpoint.check_run` names each entry of a run's signature.
_RUN_ENTRIES = {
    "rows": "{} rows",
    "shape": "rows of shape {}",
    "dtype": "data of dtype {}",
    "batch_size": "batch_size {}",
    "optimizer": "optimizer {}",
    "param_groups": "parameter groups of {} parameters",
    "seed": "seed {}",
    "config": "the model's settings {}",
}


def _comparable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _comparable(v) for key, v in value.items()}
    return tuple(_comparable(v) for v in value) if isinstance(value, list | tuple) else value


def _only_differing_settings(
    recorded: dict[str, Any], current: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both signatures with their ``config`` cut to the settings that differ."""
    was, now = recorded.get("config"), current.get("config")
    if not (isinstance(was, dict) and isinstance(now, dict)):
        return recorded, current
    keys = [k for k in {**was, **now} if _comparable(was.get(k)) != _comparable(now.get(k))]
    cut = lambda config: {k: config.get(k) for k in keys}  # noqa: E731
    return {**recorded, "config": cut(was)}, {**current, "config": cut(now)}


def _describe_run(key: str, value: Any) -> str:
    if key == "batch_size" and value is None:
        return "the full batch"
    if key == "param_groups":
        value = list(_comparable(value))
    elif isinstance(value, list | tuple):
        value = _comparable(value)
    return _RUN_ENTRIES.get(key, key + " {}").format(value)


def _check_saved_state(saved: dict[str, Any], state: Any, num_data: int) -> None:
    """A TypeError or ValueError for a step or row order that a run cannot have written."""
    step = saved["step"]
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise TypeError(f"step: expected a non-negative int, got {step!r}")
    order = state.permutation
    if order is None:
        return
    if (
        not isinstance(order, torch.Tensor)
        or order.dim() != 1
        or order.dtype.is_floating_point
        or order.dtype == torch.bool
    ):
        raise TypeError(f"permutation: expected a 1-D tensor of row indices, got {order!r}")
    if len(order) and (int(order.min()) < 0 or int(order.max()) >= num_data):
        raise ValueError(f"permutation: expected row indices in 0..{num_data - 1}")


def get_rng_state() -> dict[str, Any]:
    """The global random states (torch, CUDA, numpy, random) in a form checkpoints store."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "random": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["random"]))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def _on_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {key: _on_cpu(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_on_cpu(item) for item in value)
    return value
