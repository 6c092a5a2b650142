"""Training callbacks: the hooks of :class:`~pyrogen.infer.engine.TrainingLoop` and the
features of :func:`pyrogen.fit` built on them.

A callback is an object with any of the hook methods of :class:`Callback`; the loop calls
them in this order::

    on_fit_start
    for every step:
        on_epoch_start        (when the step begins an epoch)
        on_loss               (the batch's loss and gradients are in; before the update)
        on_epoch_end          (when the step ends an epoch; held-out validation runs here)
        on_validation_end     (when it did: its loss)
        on_step_end           (last: it sees the step's validation loss, if any)
    on_fit_end                (or on_exception when training fails)

A callback stops training with ``loop.request_stop()``; the loop ends after the current
step. Under ``strategy="ddp"`` a callback runs in the first process only unless its class
sets ``all_processes = True`` (the built-in ones that the processes must agree on do), and a
stop asked for by a first-process callback stops every process.

Built in, in the order :func:`pyrogen.fit` runs them: :class:`NanGuard`,
:class:`HeldOutValidation`, the user's callbacks (such as :class:`MetricsLogger`),
:class:`ProgressBar`, :class:`Checkpoint` and :class:`EarlyStopping` (whose ``restore_best``
comes after the last checkpoint, which keeps the last state to resume from).
"""

from __future__ import annotations

import csv
import math
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyro
import torch
from pyro import poutine
from tqdm.auto import tqdm

from pyrogen.infer import distributed
from pyrogen.io import PathLike, load_checkpoint, save_checkpoint
from pyrogen.models.base import GenerativeModel
from pyrogen.version import __version__

if TYPE_CHECKING:
    from pyrogen.infer.engine import TrainingLoop

#: A plain function callback: ``callback(step, loss, model)`` after every step (step counted
#: from 1, loss in nats per example); returning True stops training.
StepFunction = Callable[[int, float, GenerativeModel], Any]

# Held-out rows scored at once.
_HELD_OUT_ROWS = 4096


class Callback:
    """Base class of training callbacks: every hook does nothing; override those you need.

    ``loop`` is the running :class:`~pyrogen.infer.engine.TrainingLoop`: ``loop.model``,
    ``loop.optimizer``, ``loop.config`` (a :class:`~pyrogen.infer.fit_options.FitConfig`),
    ``loop.state`` (step, losses, validation losses, best loss, ...), ``loop.where`` (the
    process's rank) and ``loop.request_stop()``.
    """

    #: Run in every process of a data-parallel run (else in the first one only).
    all_processes: bool = False

    def on_fit_start(self, loop: TrainingLoop) -> None:
        """Before the first step (after a resumed run's state is restored)."""

    def on_epoch_start(self, loop: TrainingLoop, epoch: int) -> None:
        """At the first step of epoch ``epoch`` (0-based), its rows ordered and transformed."""

    def on_loss(self, loop: TrainingLoop, loss: float) -> None:
        """The global batch's loss (nats per example) and gradients, before the update."""

    def on_epoch_end(self, loop: TrainingLoop, epoch: int) -> None:
        """After the last step of epoch ``epoch`` (full-batch: after every step)."""

    def on_validation_end(self, loop: TrainingLoop, loss: float) -> None:
        """After held-out validation: ``loss`` is the held-out negative ELBO per row."""

    def on_step_end(self, loop: TrainingLoop, loss: float) -> None:
        """After every step: ``loop.state.step`` counts it (from 1), ``loss`` is its loss."""

    def on_fit_end(self, loop: TrainingLoop) -> None:
        """After the last step."""

    def on_exception(self, loop: TrainingLoop, error: BaseException) -> None:
        """When training fails; raising here replaces ``error`` with a clearer one."""


#: The hook methods, in the order a step calls them.
HOOKS = (
    "on_fit_start",
    "on_epoch_start",
    "on_loss",
    "on_epoch_end",
    "on_validation_end",
    "on_step_end",
    "on_fit_end",
    "on_exception",
)


class FunctionCallback(Callback):
    """A :data:`StepFunction` as a callback: called after every step; True stops training."""

    def __init__(self, function: StepFunction) -> None:
        self.function = function

    def on_step_end(self, loop: TrainingLoop, loss: float) -> None:
        if self.function(loop.state.step, loss, loop.model) is True:
            loop.request_stop()


def as_callback(callback: Callback | StepFunction) -> Callback:
    """``callback`` as a :class:`Callback`: plain functions are wrapped, and objects with
    hook methods of their own (no subclass of :class:`Callback`) are used as they are."""
    if isinstance(callback, Callback) or any(hasattr(callback, hook) for hook in HOOKS):
        return callback
    if not callable(callback):
        raise ValueError(
            f"callbacks: expected Callback objects or functions (step, loss, model), "
            f"got {type(callback).__name__}"
        )
    return FunctionCallback(callback)


# --- the NaN guard -------------------------------------------------------------------------
class NanGuard(Callback):
    """Stop at the first NaN/inf loss or parameter, naming the step and the site or parameter
    responsible."""

    all_processes = True

    def on_loss(self, loop: TrainingLoop, loss: float) -> None:
        if not math.isfinite(loss):
            batch_x, batch_y = loop.batch
            raise FloatingPointError(
                _explain_nonfinite(loop.model, batch_x, batch_y, loop.num_data, loop.state.step)
            )

    def on_exception(self, loop: TrainingLoop, error: BaseException) -> None:
        # Pyro's distributions refuse NaN parameters with a ValueError: say why they are NaN.
        bad = nonfinite_parameters(loop.model)
        if isinstance(error, ValueError) and bad:
            raise FloatingPointError(
                f"step {loop.state.step}: parameter(s) {bad} are NaN/inf, so the model could "
                "not be evaluated; lower lr or set clip_norm"
            ) from error

    def on_fit_end(self, loop: TrainingLoop) -> None:
        # A NaN/inf gradient makes the parameters NaN/inf at once, which the next step's loss
        # check reports by name; only the last step's update needs this look.
        bad = nonfinite_parameters(loop.model)
        if bad:
            raise FloatingPointError(
                f"step {loop.state.step}: parameter(s) {bad} became NaN/inf in the last update "
                "(a NaN/inf gradient); lower lr, set clip_norm, or check the data scale"
            )


def nonfinite_parameters(model: GenerativeModel) -> list[str]:
    """Names of ``model``'s parameters holding a NaN or an inf."""
    return [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]


def _explain_nonfinite(model, batch_x, batch_y, num_data: int, step: int) -> str:
    """Say which site (model or guide) and which parameters are NaN/inf."""
    bad = nonfinite_parameters(model)
    message = f"step {step}: the loss is NaN/inf" + (
        f"; parameter(s) {bad} are NaN/inf" if bad else ""
    )
    return message + _first_nonfinite_site(model, batch_x, batch_y, num_data)


def _first_nonfinite_site(model, batch_x, batch_y, num_data: int) -> str:
    kwargs = {"num_data": num_data}
    try:
        with torch.no_grad():
            guide_trace = poutine.trace(model.guide).get_trace(batch_x, batch_y, **kwargs)
            replayed = poutine.replay(model.model, trace=guide_trace)
            model_trace = poutine.trace(replayed).get_trace(batch_x, batch_y, **kwargs)
            for role, trace in (("model", model_trace), ("guide", guide_trace)):
                for name, site in trace.nodes.items():
                    if site["type"] != "sample":
                        continue
                    if not torch.isfinite(site["value"]).all():
                        return f"; {role} site {name!r} has a NaN/inf value"
                    if not torch.isfinite(site["fn"].log_prob(site["value"])).all():
                        return f"; {role} site {name!r} has a NaN/inf log-probability"
    except Exception as error:  # the diagnosis must never hide the original problem
        return f" (sites could not be inspected: {error})"
    return ""


# --- held-out validation and early stopping ---------------------------------------------------
class HeldOutValidation(Callback):
    """After every epoch, the negative ELBO per row of held-out rows (``model.loss`` on all M
    rows, in chunks), recorded in ``loop.state.validation_losses``; the loop passes it to
    every callback's ``on_validation_end`` once the epoch's ``on_epoch_end`` hooks are done.

    Args:
        rows: held-out rows (M, ...) on the training device, in the model's dtype.
        labels: their labels (M, ...) or None.
    """

    all_processes = True

    def __init__(self, rows: torch.Tensor, labels: torch.Tensor | None) -> None:
        self.rows, self.labels = rows, labels

    def on_epoch_end(self, loop: TrainingLoop, epoch: int) -> None:
        loss = held_out_loss(
            loop.elbo, loop.model, self.rows, self.labels, loop.state.step, loop.where
        )
        loop.state.validation_losses.append((loop.state.step, loss))


@torch.no_grad()
def held_out_loss(
    elbo: pyro.infer.ELBO,
    model: GenerativeModel,
    rows: torch.Tensor,
    labels: torch.Tensor | None,
    step: int,
    where: distributed.Cluster,
) -> float:
    """Negative ``elbo`` per held-out row (M rows (M, ...), labels (M, ...) or None), in chunks
    each scored as itself (num_data = its rows); several processes score a share each.

    Raises:
        FloatingPointError: the loss is NaN/inf, naming ``step``.
    """
    total, share = 0.0, distributed.shard(rows.shape[0], where)
    mine, mine_y = rows[share], None if labels is None else labels[share]
    for start in range(0, mine.shape[0], _HELD_OUT_ROWS):
        chunk = mine[start : start + _HELD_OUT_ROWS]
        chunk_y = None if mine_y is None else mine_y[start : start + _HELD_OUT_ROWS]
        with pyro.validation_enabled(False):
            total += elbo.loss(model.model, model.guide, chunk, chunk_y, num_data=chunk.shape[0])
    total = distributed.all_sum(torch.tensor(total, dtype=torch.float64, device=rows.device), where)
    value = total.item() / rows.shape[0]
    if not math.isfinite(value):
        raise FloatingPointError(
            f"step {step}: the held-out loss is {value}; the model gives the validation "
            "rows no probability (are they from the training data's range?)"
        )
    return value


class EarlyStopping(Callback):
    """Keep the state with the lowest monitored loss; stop after ``patience`` epochs without
    an improvement of ``min_delta``.

    The monitored loss is the held-out loss when there is held-out validation; else, for
    full-batch training, each step's loss (scored by the parameters before the update, which
    are the ones kept); else the mean training loss of each epoch. Its best value and step
    are ``loop.state.best_loss`` / ``best_step``.

    Args:
        patience: epochs (steps, full-batch) without improvement before stopping; None
            never stops (the best state is still kept, for ``restore_best``).
        min_delta: smallest improvement (nats per example) that resets the patience.
        restore_best: load the best state into the model when training ends.
    """

    all_processes = True

    def __init__(self, patience: int | None, min_delta: float, restore_best: bool) -> None:
        self.patience, self.min_delta, self.restore_best = patience, min_delta, restore_best

    def on_loss(self, loop: TrainingLoop, loss: float) -> None:
        if loop.config.batch_size is None and not loop.has_validation:
            self._monitor(loop, loss)

    def on_epoch_end(self, loop: TrainingLoop, epoch: int) -> None:
        if loop.config.batch_size is not None and not loop.has_validation:
            self._monitor(loop, float(np.mean(loop.state.losses[-loop.config.steps_per_epoch :])))

    def on_validation_end(self, loop: TrainingLoop, loss: float) -> None:
        self._monitor(loop, loss)

    def on_fit_end(self, loop: TrainingLoop) -> None:
        if self.restore_best and loop.state.best_state is not None:
            loop.model.load_state_dict(loop.state.best_state)

    def _monitor(self, loop: TrainingLoop, loss: float) -> None:
        state = loop.state
        state.bad_epochs = 0 if loss < state.best_loss - self.min_delta else state.bad_epochs + 1
        if loss < state.best_loss:
            state.best_loss, state.best_step = loss, state.step
            state.best_state = {k: v.detach().clone() for k, v in loop.model.state_dict().items()}
        if self.patience is not None and state.bad_epochs >= self.patience:
            loop.request_stop()


# --- progress ---------------------------------------------------------------------------------
class ProgressBar(Callback):
    """A tqdm bar of the steps, with the loss every 10 steps (first process only).

    Args:
        enabled: show it; with False the callback does nothing.
    """

    all_processes = True  # a disabled bar elsewhere: no process waits on the first one

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.bar = enabled, None

    def on_fit_start(self, loop: TrainingLoop) -> None:
        self.bar = tqdm(
            total=loop.config.steps,
            initial=loop.state.step,
            disable=not (self.enabled and loop.where.is_main),
            desc=loop.model.family,
        )

    def on_step_end(self, loop: TrainingLoop, loss: float) -> None:
        self.bar.update(1)
        if loop.state.step % 10 == 0:
            self.bar.set_postfix(loss=f"{loss:.4f}")

    def on_fit_end(self, loop: TrainingLoop) -> None:
        self.bar.close()

    def on_exception(self, loop: TrainingLoop, error: BaseException) -> None:
        if self.bar is not None:
            self.bar.close()


# --- checkpoints ------------------------------------------------------------------------------
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


# --- metrics --------------------------------------------------------------------------------
class MetricsLogger(Callback):
    """Write every step's metrics to ``directory/metrics.csv``, and to TensorBoard when
    ``torch.utils.tensorboard`` can be imported (the ``tensorboard`` package is installed;
    without it only the CSV file is written, silently).

    The CSV columns: ``step`` (counted from 1, as callbacks see it), ``epoch`` (0-based, as
    ``epoch_transform`` sees it), ``loss`` (the step's training loss, nats per example, as
    in ``FitResult.losses``), ``validation_loss`` (the held-out loss at the steps that end
    an epoch when ``validation`` is given, else empty), ``lr`` (the first parameter group's
    learning rate) and ``wall_time`` (seconds since the Unix epoch). TensorBoard gets the
    scalars ``loss``, ``validation_loss`` and ``lr`` at each step. A resumed run keeps the
    rows up to the step it resumes from and appends to them. Only the first process writes
    under ``strategy="ddp"``.

    Args:
        directory: folder for ``metrics.csv`` and the TensorBoard event files (made if
            missing).

    Example:
        >>> import tempfile, pyrogen
        >>> from pathlib import Path
        >>> from pyrogen.infer import MetricsLogger
        >>> folder = tempfile.mkdtemp()
        >>> result = pyrogen.fit(pyrogen.GaussianMixture(2), pyrogen.data.old_faithful(),
        ...                      steps=3, callbacks=[MetricsLogger(folder)], progress=False)
        >>> (Path(folder) / "metrics.csv").read_text().splitlines()[0]
        'step,epoch,loss,validation_loss,lr,wall_time'
    """

    COLUMNS = ("step", "epoch", "loss", "validation_loss", "lr", "wall_time")

    def __init__(self, directory: PathLike) -> None:
        self.directory = Path(directory)
        self._file: Any = None
        self._writer: Any = None
        self._tensorboard: Any = None

    def on_fit_start(self, loop: TrainingLoop) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / "metrics.csv"
        kept = _rows_up_to(path, loop.state.step) if loop.state.step > 0 else []
        self._file = path.open("w", newline="")
        self._writer = csv.writer(self._file)
        self._writer.writerow(self.COLUMNS)
        self._writer.writerows(kept)
        self._tensorboard = _tensorboard_writer(self.directory)

    def on_step_end(self, loop: TrainingLoop, loss: float) -> None:
        step = loop.state.step
        validations = loop.state.validation_losses
        validation = validations[-1][1] if validations and validations[-1][0] == step else None
        lr = loop.optimizer.param_groups[0]["lr"]
        epoch = (step - 1) // loop.config.steps_per_epoch
        row = (step, epoch, loss, "" if validation is None else validation, lr, time.time())
        self._writer.writerow(row)
        self._file.flush()
        if self._tensorboard is not None:
            self._tensorboard.add_scalar("loss", loss, step)
            self._tensorboard.add_scalar("lr", lr, step)
            if validation is not None:
                self._tensorboard.add_scalar("validation_loss", validation, step)

    def on_fit_end(self, loop: TrainingLoop) -> None:
        self._close()

    def on_exception(self, loop: TrainingLoop, error: BaseException) -> None:
        self._close()

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None

    def __getstate__(self) -> dict[str, Any]:
        # Sent to spawned processes before training: open files stay behind.
        return {"directory": self.directory, "_file": None, "_writer": None, "_tensorboard": None}


def _rows_up_to(path: Path, step: int) -> list[list[str]]:
    """The rows of an earlier run's ``metrics.csv`` up to ``step`` (none without the file)."""
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    return [row for row in rows if row and int(row[0]) <= step]


def _tensorboard_writer(directory: Path) -> Any:
    """A TensorBoard ``SummaryWriter`` on ``directory``, or None without tensorboard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(directory))


class ComponentWarmup(Callback):
    """Starts a mixture prior's components from the codes of the training rows
    (``model.init_components(x, seed=seed)``, as
    :class:`~pyrogen.GaussianMixtureVAE` has) at the start of epoch ``warmup_epochs``: 0
    before training; None after one epoch where the run is longer than one, else never.
    Runs in every training process; :attr:`summary` says how the components started.

    Example:
        >>> import pyrogen, torch
        >>> x = torch.rand(64, 4).round()
        >>> model = pyrogen.GaussianMixtureVAE(4, n_components=2, latent_dim=2, hidden=(8,))
        >>> start = ComponentWarmup(1)
        >>> _ = pyrogen.fit(model, x, epochs=2, batch_size=32, callbacks=[start], progress=False)
        >>> start.summary["component_init"].endswith("after 1 warm-up epoch(s)")
        True
    """

    all_processes = True

    def __init__(self, warmup_epochs: int | None = None, seed: int = 0) -> None:
        self.warmup, self.seed, self.description = warmup_epochs, seed, ""

    def on_fit_start(self, loop: TrainingLoop) -> None:
        per_epoch, steps = loop.config.steps_per_epoch, loop.config.steps
        if self.warmup is not None and self.warmup * per_epoch >= steps:
            raise ValueError(
                f"warmup_epochs: expected fewer epochs than the run's {steps / per_epoch:g} "
                "(the components are initialised after the warm-up, then trained on), got "
                f"{self.warmup}"
            )
        if self.warmup is None and per_epoch < steps:
            self.warmup = 1
        if self.warmup is None:
            self.description = (
                "not initialised from the codes (no warm-up in a run of one epoch; "
                "--warmup-epochs 0 initialises them before training)"
            )

    @property
    def summary(self) -> dict[str, str]:
        """Its entry of a run's summary.json: how the components started."""
        return {"component_init": self.description}

    def on_epoch_start(self, loop: TrainingLoop, epoch: int) -> None:
        if epoch == self.warmup:
            loop.model.init_components(loop.x, seed=self.seed)
            when = f"after {epoch} warm-up epoch(s)" if epoch else "before training"
            self.description = (
                "initialised from a diagonal Gaussian mixture fitted to the codes of the "
                f"{loop.x.shape[0]} training rows {when}"
            )
