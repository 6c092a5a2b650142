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
:class:`ProgressBar`, :class:`~pyrogen.infer.checkpointing.Checkpoint` (in its own
module) and :class:`EarlyStopping` (whose ``restore_best`` comes after the last
checkpoint, which keeps the last state to resume from).
"""

from __future__ import annotations

import csv
import math
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
from pyrogen.io import PathLike
from pyrogen.models.base import GenerativeModel

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
