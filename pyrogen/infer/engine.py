"""``pyrogen.fit``: stochastic variational inference for any family, with the chores done.

:func:`fit` checks its options once into a :class:`FitConfig` and runs a
:class:`TrainingLoop`: per epoch it orders the rows (``model.minibatch_order``) and applies
``epoch_transform``; per step it draws the batch, adds up the gradients of its pieces
(processes and micro-batches, each row with the noise one process would draw for it) and
steps the optimizer (unless ``gradient_tolerance`` finds the gradient flat: then it stops
with the parameters as they are). Everything else -- the NaN guard, held-out validation,
early stopping, the progress bar, checkpoints and the user's callbacks -- is a callback on
the loop's hooks (:mod:`pyrogen.infer.callbacks`).

The engine differentiates ``model.loss`` (a Pyro ELBO) of ``model.model`` / ``model.guide``
and steps a plain ``torch.optim`` optimizer over ``model.parameters()``. Using a torch
optimizer rather than ``pyro.optim`` keeps the optimizer state independent of Pyro's global
parameter names, which is what makes checkpoints resume exactly in a new process.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import pyro
import torch

from pyrogen.infer import distributed
from pyrogen.infer.callbacks import (
    Callback,
    EarlyStopping,
    HeldOutValidation,
    NanGuard,
    ProgressBar,
    StepFunction,
)
from pyrogen.infer.checkpointing import Checkpoint
from pyrogen.infer.compiled import ReplayedLoss
from pyrogen.infer.distributed import Cluster
from pyrogen.infer.fit_options import EpochTransform, FitConfig, TrainingData
from pyrogen.infer.noise import RowNoise, epoch_seed, seed_device, seed_globally, step_seed
from pyrogen.infer.players import PlayerOptimizers, take_turns
from pyrogen.infer.precision import mixed_precision
from pyrogen.models.base import GenerativeModel, unregistered_networks

__all__ = [
    "Callback",
    "EpochTransform",
    "FitConfig",
    "FitResult",
    "StepFunction",
    "TrainingLoop",
    "TrainingState",
    "fit",
]


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        model: the trained model (restored to its best state when ``restore_best``).
        losses: negative ELBO in nats per example, one entry per step (for minibatches, the
            scaled minibatch estimate). Which bound it is depends on ``model.loss``.
        steps: total optimisation steps taken, resumed ones included.
        time_s: wall time of this call, in seconds.
        device: device the model was trained on.
        best_loss: lowest monitored loss: the held-out loss when ``validation`` was given,
            else the training loss (per step full-batch, per-epoch mean otherwise).
        best_step: step at which ``best_loss`` was reached (0 = before the first update).
        stopped_early: whether early stopping or a callback ended training.
        validation_losses: (step, held-out negative ELBO in nats per example) after every
            epoch when ``validation`` was given; empty otherwise.
        world_size: processes that trained the model together (``devices * num_nodes``).
    """

    model: GenerativeModel
    losses: list[float] = field(default_factory=list)
    steps: int = 0
    time_s: float = 0.0
    device: str = "cpu"
    best_loss: float = math.inf
    best_step: int = 0
    stopped_early: bool = False
    validation_losses: list[tuple[int, float]] = field(default_factory=list)
    world_size: int = 1

    @property
    def final_loss(self) -> float:
        """Last recorded loss (nats per example)."""
        return self.losses[-1] if self.losses else math.nan


# --- fit -------------------------------------------------------------------------------------
def fit(model: GenerativeModel, data: Any, y: Any = None, **options: Any) -> FitResult:
    """Train ``model`` by SVI on ``data``.

    Args:
        model: any pyrogen family (see :mod:`pyrogen.models`).
        data: array-like of shape (N, ...); numpy arrays and torch tensors are accepted.
        y: optional labels of shape (N, ...), passed to ``model.model`` / ``model.guide``.
        **options: ``steps``, ``epochs``, ``batch_size``, ``optim``, ``lr``, ``clip_norm``,
            ``validation``, ``validation_y``, ``early_stopping``, ``min_delta``,
            ``restore_best``, ``device``, ``seed``, ``callbacks``, ``checkpoint``,
            ``checkpoint_every``, ``resume``, ``progress``, ``micro_batch_size``,
            ``strategy``, ``devices``, ``num_nodes``, ``precision``, ``compile``,
            ``gradient_tolerance`` (each explained in :class:`FitConfig`) and
            ``epoch_transform``:
        epoch_transform: ``epoch_transform(x, epoch, generator)`` is called at the start of
            every epoch (every step, full-batch), epochs counted from 0, with the original
            training rows ``x`` (N, ...) on the training device and a ``torch.Generator``
            on that device seeded from ``seed`` and ``epoch``; the epoch trains on the
            tensor it returns, of the same shape (N, ...). Draw from ``generator`` only:
            then a resumed run redraws the interrupted epoch's rows exactly, and every
            process of a data-parallel run draws the same rows for all N rows. E.g.
            :func:`pyrogen.data.dynamic_binarization`, a new binary draw of grey images,
            ``torch.bernoulli(x, generator=generator)``.

    Returns:
        a :class:`FitResult`.

    Raises:
        TypeError: ``model`` is no pyrogen model, or an unknown option.
        ValueError: bad options or data, naming the argument.
        FloatingPointError: the loss or a gradient became NaN/inf; the message names the
            step and the site or parameter responsible.

    Warns:
        RuntimeWarning: training diverged: the last loss rose above the first by more than
            100 times the first's size (at least 100 nats per example), or its size is over
            1e10 nats per example.

    Example:
        >>> import pyrogen
        >>> gmm = pyrogen.GaussianMixture(2)
        >>> result = pyrogen.fit(gmm, pyrogen.data.old_faithful(), steps=20, progress=False)
        >>> len(result.losses) <= 20
        True

        Dynamic binarization: each epoch trains on a new binary draw of grey images.

        >>> import torch
        >>> grey = torch.rand(64, 4)
        >>> vae = pyrogen.VAE((4,), latent_dim=2, hidden=(8,))
        >>> result = pyrogen.fit(vae, grey, epochs=2, batch_size=32, progress=False,
        ...                      epoch_transform=pyrogen.data.dynamic_binarization)
        >>> result.steps
        4
    """
    started = time.perf_counter()
    if not isinstance(model, GenerativeModel):
        raise TypeError(f"model: expected a pyrogen model, got {type(model).__name__}")
    training = TrainingData.from_arguments(
        data, y, options.get("validation"), options.get("validation_y")
    )
    if y is not None and not model.takes_labels:  # they would be silently ignored
        raise ValueError(
            f"y: expected no labels, since {type(model).__name__} does not train on them "
            "(build it with num_classes to condition on labels, where the family offers it)"
        )
    config = FitConfig.from_options(model, training, options)
    # Outside "ddp" a process trains alone, whatever group it may belong to.
    if config.strategy != "ddp":
        where = Cluster()
    else:
        where = distributed.join(config.world_size, config.device.type)
        if where.world_size == 1 and config.world_size > 1:
            return _fit_spawned(model, training, config, started)
    return TrainingLoop(model, training, config, where).run(started)


def _fit_spawned(
    model: GenerativeModel, data: TrainingData, config: FitConfig, started: float
) -> FitResult:
    """Train in ``config.devices`` new processes and load the result into ``model``."""
    # Checked data go to the processes as CPU tensors (CUDA tensors do not pickle simply).
    payload = distributed.spawn(
        _fit_process,
        (model, data.to("cpu"), config),
        devices=config.devices,
        num_nodes=config.num_nodes,
        device_type=config.device.type,
    )
    if not model.is_setup:
        labels = None if data.labels is None else data.labels[:4096]
        model.setup(data.x[:4096], labels)
    model.load_state_dict(payload.pop("state_dict"))
    for message in payload.pop("warnings"):  # the training process's (divergence), here
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    model.to(config.device)
    payload["validation_losses"] = [tuple(pair) for pair in payload["validation_losses"]]
    return FitResult(model=model, **payload, time_s=time.perf_counter() - started)


def _fit_process(model: GenerativeModel, data: TrainingData, config: FitConfig) -> dict[str, Any]:
    """One process of a spawned run: train, and return what the parent needs."""
    # Spawned processes receive CPU tensors in memory shared with the others (the data stay
    # shared, read-only); the parameters must be this process's own, or every process's
    # optimizer would step the same numbers.
    model = copy.deepcopy(model)
    with warnings.catch_warnings(record=True) as caught:  # warned again by the caller
        warnings.simplefilter("always", RuntimeWarning)
        result = TrainingLoop(model, data, config, distributed.cluster()).run(time.perf_counter())
    return {
        "warnings": [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)],
        "state_dict": {k: v.detach().cpu() for k, v in result.model.state_dict().items()},
        "losses": result.losses,
        "steps": result.steps,
        "device": result.device,
        "best_loss": result.best_loss,
        "best_step": result.best_step,
        "stopped_early": result.stopped_early,
        "validation_losses": [list(pair) for pair in result.validation_losses],
        "world_size": result.world_size,
    }


# --- the loop ----------------------------------------------------------------------------------
@dataclass
class TrainingState:
    """What the loop and its callbacks record; saved in checkpoints (format unchanged).

    Attributes:
        step: steps taken, resumed ones included.
        losses: each step's loss (nats per example).
        best_loss, best_step, best_state, bad_epochs: :class:`EarlyStopping`'s record.
        stopped_early: a callback asked to stop.
        validation_losses: (step, held-out loss) after every epoch, with ``validation``.
        permutation: this epoch's row order (``model.minibatch_order``), so that a resume
            mid-epoch sees the same batches.
    """

    step: int = 0
    losses: list[float] = field(default_factory=list)
    best_loss: float = math.inf
    best_step: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs: int = 0
    stopped_early: bool = False
    validation_losses: list[tuple[int, float]] = field(default_factory=list)
    permutation: torch.Tensor | None = None

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint entries of this state (tensors on the CPU)."""
        best = None if self.best_state is None else {k: v.cpu() for k, v in self.best_state.items()}
        return {
            "step": self.step,
            "losses": list(self.losses),
            "best_loss": self.best_loss,
            "best_step": self.best_step,
            "best_state": best,
            "bad_epochs": self.bad_epochs,
            "validation_losses": [list(pair) for pair in self.validation_losses],
            "permutation": self.permutation,
        }

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> TrainingState:
        """The state of a checkpoint's entries (older checkpoints may lack some)."""
        return cls(
            step=int(saved["step"]),
            losses=[float(v) for v in saved.get("losses", [])],
            best_loss=float(saved.get("best_loss", math.inf)),
            best_step=int(saved.get("best_step", 0)),
            best_state=saved.get("best_state"),
            bad_epochs=int(saved.get("bad_epochs", 0)),
            validation_losses=[(int(k), float(v)) for k, v in saved.get("validation_losses", [])],
            permutation=saved.get("permutation"),
        )


class TrainingLoop:
    """One process's training: :meth:`run` sets the model up (or resumes it), then takes
    steps until ``config.steps`` or a stop, calling the callbacks' hooks (see
    :mod:`pyrogen.infer.callbacks` for their order).

    Args:
        model: the model to train (set up here).
        data: the checked training data (any device).
        config: the checked options.
        where: this process's place among the processes training together.

    Attributes:
        x: the rows of the current epoch (N, ...): ``data.x``, or ``epoch_transform``'s.
        batch: the last scored piece's rows and labels (for the NaN guard's diagnosis).
    """

    def __init__(
        self, model: GenerativeModel, data: TrainingData, config: FitConfig, where: Cluster
    ) -> None:
        self.model, self.data, self.config, self.where = model, data, config, where
        self.device = distributed.process_device(config.device, where)
        self.num_data = data.num_data
        self.data_dtype = str(data.x.dtype)  # as given (the model's dtype may differ)
        self.has_validation = data.validation is not None
        self.state = TrainingState()
        self.checkpoint = (
            None
            if config.checkpoint is None
            else Checkpoint(config.checkpoint, config.checkpoint_every, config.resume)
        )
        self.x: torch.Tensor | None = None
        self.batch: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)

    def run(self, started: float) -> FitResult:
        """Train; ``started`` is the ``time.perf_counter()`` that ``time_s`` counts from."""
        self._start()
        try:
            self.dispatch("on_fit_start")
            while self.state.step < self.config.steps and not self.state.stopped_early:
                self._step()
            self.dispatch("on_fit_end")
            if self.where.is_main:
                _warn_if_diverged(self.state.losses, self.config.lr)
        except BaseException as error:
            replacement = self._notify_failure(error)
            if replacement is not None:
                raise replacement from error
            raise
        return FitResult(
            model=self.model,
            losses=list(self.state.losses),
            steps=self.state.step,
            time_s=time.perf_counter() - started,
            device=str(self.device),
            best_loss=self.state.best_loss,
            best_step=self.state.best_step,
            stopped_early=self.state.stopped_early,
            validation_losses=list(self.state.validation_losses),
            world_size=self.where.world_size,
        )

    def run_signature(self) -> dict[str, Any]:
        """What a resumed run must share with the run that wrote its checkpoint: the rows
        (number, shape of one, dtype), ``batch_size``, the family and its ``config``,
        ``seed`` and, once it is made, the optimizer (class and parameter-group sizes)."""
        x, config = self.data.x, self.config
        signature: dict[str, Any] = {
            "rows": self.num_data,
            "shape": tuple(x.shape[1:]),
            "dtype": self.data_dtype,
            "batch_size": config.batch_size,
            "family": self.model.family,
            "config": self.model.config,
            "seed": config.seed,
        }
        optimizer = getattr(self, "optimizer", None)
        if optimizer is not None:
            kind = type(optimizer)
            signature["optimizer"] = f"{kind.__module__}.{kind.__qualname__}"
            signature["param_groups"] = [len(group["params"]) for group in optimizer.param_groups]
        return signature

    def request_stop(self) -> None:
        """End training after the current step (in every process, under DDP)."""
        self.state.stopped_early = True

    def dispatch(self, hook: str, *args: Any) -> None:
        """Call ``hook`` of every callback that runs in this process, in order."""
        for callback in self.callbacks:
            method = getattr(callback, hook, None)
            if method is not None and (self.where.is_main or _all_processes(callback)):
                method(self, *args)

    # --- setup ------------------------------------------------------------------------------
    def _start(self) -> None:
        """Set the model up (or load the checkpoint), make the optimizer and the callbacks."""
        model, config, device = self.model, self.config, self.device
        model.to(device)
        data = self.data.to(device)
        seed_globally(config.seed, device)
        # One order for all processes: they split the same global batches.
        self.order_rng = torch.Generator().manual_seed(config.seed)
        saved = None if self.checkpoint is None else self.checkpoint.read(model.family)
        if saved is not None:
            self.checkpoint.check_run(saved, self.run_signature())
            if not model.is_setup:  # builds parameter shapes; values are replaced
                model.setup(data.x, data.labels, seed=config.seed)
            model.load_state_dict(saved["state_dict"])
            model.to(device)
        else:
            if model.is_as_built:  # its initial values come from the seed, not torch's state
                model.initialize(config.seed)
            model.setup(data.x, data.labels, seed=config.seed)
        self.data = data.to(device, dtype=_model_dtype(model, data.x.dtype))
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError(f"model: {type(model).__name__} has no trainable parameters")
        self.players = model.players()
        if self.players:
            self.optimizer = PlayerOptimizers(self.players, config.optim, config.lr)
        else:
            self.optimizer = config.optim(self.params, lr=config.lr)
        if saved is not None:
            self.checkpoint.check_run(saved, self.run_signature())
            self.checkpoint.restore(self, saved)
        self.elbo = None if self.players else model.loss
        self.trainer: torch.nn.Module = _ELBOLoss(model, self.elbo)
        if config.compile:
            self.trainer = ReplayedLoss(self.trainer, type(model).__name__, config.compile)
        self.validate, self.first_step = pyro.poutine.util.is_validation_enabled(), self.state.step
        self.callbacks = self._callbacks()
        self.stop_is_shared = any(not _all_processes(c) for c in self.callbacks)

    def _callbacks(self) -> list[Callback]:
        """Built-in and user callbacks in the order their hooks run (see the module
        :mod:`pyrogen.infer.callbacks`)."""
        config, data = self.config, self.data
        callbacks: list[Callback] = [NanGuard()]
        if data.validation is not None:
            callbacks.append(HeldOutValidation(data.validation, data.validation_labels))
        callbacks += [*config.callbacks, ProgressBar(config.progress)]
        if self.checkpoint is not None:
            callbacks.append(self.checkpoint)
        callbacks.append(
            EarlyStopping(config.early_stopping, config.min_delta, config.restore_best)
        )
        return callbacks

    def _notify_failure(self, error: BaseException) -> Exception | None:
        """Tell every callback; the first exception one raises replaces ``error``."""
        replacement = None
        for callback in self.callbacks:
            method = getattr(callback, "on_exception", None)
            if method is None or not (self.where.is_main or _all_processes(callback)):
                continue
            try:
                method(self, error)
            except Exception as raised:
                replacement = replacement or raised
        return replacement

    # --- a step -------------------------------------------------------------------------------
    def _step(self) -> None:
        index = self._next_batch()
        loss = self._train_on(index)
        state, per_epoch = self.state, self.config.steps_per_epoch
        state.step += 1
        state.losses.append(loss)
        if state.step % per_epoch == 0:
            self.dispatch("on_epoch_end", (state.step - 1) // per_epoch)
            validated = state.validation_losses and state.validation_losses[-1][0] == state.step
            if validated:  # held-out validation ran at this epoch's end
                self.dispatch("on_validation_end", state.validation_losses[-1][1])
        self.dispatch("on_step_end", loss)
        if self.where.world_size > 1 and self.stop_is_shared:  # a first-process stop stops all
            state.stopped_early = distributed.any_process(
                state.stopped_early, self.device, self.where
            )

    def _next_batch(self) -> torch.Tensor | range:
        """The global batch's row indices; at an epoch's start, its rows and their order."""
        config, state = self.config, self.state
        epoch, position = divmod(state.step, config.steps_per_epoch)
        if position == 0 or self.x is None:  # a resumed run redraws its epoch's rows
            self.x = self._epoch_rows(epoch)
        if config.batch_size is None:
            index = range(self.num_data)  # rows by slices: views of the data, no copies
        else:
            if position == 0 or state.permutation is None:
                state.permutation = self.model.minibatch_order(
                    self.num_data, config.batch_size, self.data.labels, self.order_rng
                )
            size = config.batch_size
            index = state.permutation[position * size : (position + 1) * size].to(self.device)
        if position == 0:
            self.dispatch("on_epoch_start", epoch)
        return index

    def _epoch_rows(self, epoch: int) -> torch.Tensor:
        """The rows epoch ``epoch`` trains on: ``epoch_transform``'s, or the data."""
        transform, x = self.config.epoch_transform, self.data.x
        if transform is None:
            return x
        generator = torch.Generator(device=x.device).manual_seed(
            epoch_seed(self.config.seed, epoch)
        )
        with torch.no_grad():
            rows = transform(x, epoch, generator)
        if not isinstance(rows, torch.Tensor) or rows.shape != x.shape:
            got = f"shape {tuple(rows.shape)}" if isinstance(rows, torch.Tensor) else type(rows)
            raise ValueError(
                f"epoch_transform: expected a tensor of the data's shape {tuple(x.shape)} "
                f"(epoch {epoch}), got {got}"
            )
        return rows.to(device=x.device, dtype=x.dtype)

    def _train_on(self, index: torch.Tensor | range) -> float:
        """One optimisation step on the global batch ``index``; returns its loss."""
        if self.players:
            return self._take_turns(index)
        config, where = self.config, self.where
        batch_rows = len(index)
        index, weight, offset = _share_of(index, where)
        if where.world_size > 1 and isinstance(self.trainer, _ELBOLoss):
            first = _select(index[: config.micro_batch_size])
            first_y = _rows(self.data.labels, first)
            self.trainer = _data_parallel(
                self.trainer, self.x[first], first_y, self.num_data, self.device
            )
        self.optimizer.zero_grad(set_to_none=True)
        total = self._accumulate(index, weight, offset, batch_rows)
        # The global batch's loss: DDP averages the processes' gradients, so the mean.
        loss = distributed.all_sum(total, where).item() / (where.world_size * self.num_data)
        self.dispatch("on_loss", loss)
        if config.gradient_tolerance is not None and self._stationary(config.gradient_tolerance):
            self.request_stop()  # a stationary point: the parameters stay as they are
            return loss
        if config.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, config.clip_norm)
        self.optimizer.step()
        return loss

    def _stationary(self, tolerance: float) -> bool:
        """Whether the gradient's L1 norm, in nats per example, is at most ``tolerance``
        (``FitConfig.gradient_tolerance``); every process reads the same averaged gradient."""
        grads = [p.grad for p in self.params if p.grad is not None]
        if not grads:
            return False
        norm = torch.stack([g.abs().sum(dtype=torch.float64) for g in grads]).sum()
        return norm.item() <= tolerance * self.num_data

    def _take_turns(self, index: torch.Tensor | range) -> float:
        """One step of a model trained in turns (:func:`~pyrogen.infer.players.take_turns`);
        returns the first player's loss (``player_losses`` holds every player's)."""
        rows = _select(index)
        seed_device(step_seed(self.config.seed, self.state.step), self.device)
        self.batch = (self.x[rows], _rows(self.data.labels, rows))
        with (
            pyro.validation_enabled(self.validate and self.state.step == self.first_step),
            mixed_precision(self.model, self.config.precision),
        ):
            self.player_losses = take_turns(
                self.model,
                self.players,
                self.optimizer,
                *self.batch,
                self.num_data,
                self.config.clip_norm,
            )
        loss = next(iter(self.player_losses.values()))
        self.dispatch("on_loss", loss)  # after the turns: each player stepped in its own
        return loss

    def _accumulate(
        self, index: torch.Tensor | range, weight: float, offset: int, batch_rows: int
    ) -> torch.Tensor:
        """Backpropagate this process's share ``index`` of the batch in micro-batches;
        returns the share's weighted loss (float64)."""
        size = self.config.micro_batch_size or len(index)
        pieces = [_select(index[start : start + size]) for start in range(0, len(index), size)]
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        noise_seed = step_seed(self.config.seed, self.state.step)
        for number, rows in enumerate(pieces):
            # Each piece's loss g + (N / b_c) * sum_c, weighted by b_c / b, adds up to the
            # share's g + (N / b) * sum: the gradients accumulate to the batch's own. Pyro's
            # argument and support checks run on the first step of this call, where a user's
            # mistake shows up; later steps skip them (a third of a small step's time). DDP
            # exchanges gradients after the last piece only. Every piece starts from the
            # step's random state and draws its rows' noise as one process scoring the whole
            # batch would (pyrogen.infer.noise).
            seed_device(noise_seed, self.device)
            self.batch = (self.x[rows], _rows(self.data.labels, rows))
            with (
                pyro.validation_enabled(self.validate and self.state.step == self.first_step),
                mixed_precision(self.model, self.config.precision),
                _accumulating(self.trainer, last=number == len(pieces) - 1),
                _row_noise(offset + number * size, _count(rows), batch_rows),
            ):
                loss = self.trainer(*self.batch, self.num_data)
                loss = loss * (weight * _count(rows) / len(index))
                loss.backward()
            total += loss.detach()
        return total


#: A final loss this far above the first (nats per example, or this many times its size)
#: or this large in size is training that ran away, not a fit.
DIVERGED_RISE = 100.0
DIVERGED_SIZE = 1e10


def _warn_if_diverged(losses: list[float], lr: float) -> None:
    """Warn (``RuntimeWarning``) when the last loss is far above the first or enormous."""
    if len(losses) < 2 or not all(math.isfinite(v) for v in (losses[0], losses[-1])):
        return
    first, last = losses[0], losses[-1]
    if abs(last) <= DIVERGED_SIZE and last - first <= DIVERGED_RISE * max(1.0, abs(first)):
        return
    warnings.warn(
        f"fit: training diverged: the loss went from {first:.4g} to {last:.4g} nats per "
        f"example over {len(losses)} steps; try a smaller lr (it was {lr:g}) or clip_norm",
        RuntimeWarning,
        stacklevel=4,
    )


def _all_processes(callback: Any) -> bool:
    return bool(getattr(callback, "all_processes", False))


class _ELBOLoss(torch.nn.Module):
    """The model's differentiable negative ELBO as a module, which DDP can wrap."""

    def __init__(self, model: GenerativeModel, elbo: pyro.infer.ELBO) -> None:
        super().__init__()
        self.model, self.elbo = model, elbo

    def forward(self, x: torch.Tensor, y: torch.Tensor | None, num_data: int) -> torch.Tensor:
        with unregistered_networks():  # a torch optimizer needs no param sites
            return self.elbo.differentiable_loss(
                self.model.model, self.model.guide, x, y, num_data=num_data
            )


def _data_parallel(
    trainer: _ELBOLoss,
    batch_x: torch.Tensor,
    batch_y: torch.Tensor | None,
    num_data: int,
    device: torch.device,
) -> torch.nn.parallel.DistributedDataParallel:
    """``trainer`` wrapped in DDP, told whether some parameter gets no gradient (a user's
    network may have such a layer); looked for once, on a first batch, with the noise
    stream put back, since DDP's own search costs a graph traversal every step."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        trainer(batch_x, batch_y, num_data).backward()
    params = [p for p in trainer.parameters() if p.requires_grad]
    unused = any(p.grad is None for p in params)
    for p in params:
        p.grad = None
    return torch.nn.parallel.DistributedDataParallel(
        trainer,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=unused,
        gradient_as_bucket_view=True,
    )


def _rows(labels: torch.Tensor | None, index: torch.Tensor | slice) -> torch.Tensor | None:
    return None if labels is None else labels[index]


def _select(index: torch.Tensor | range) -> torch.Tensor | slice:
    """Row indices, or for a range of rows the slice that views them."""
    return slice(index.start, index.stop) if isinstance(index, range) else index


def _count(rows: torch.Tensor | slice) -> int:
    return rows.stop - rows.start if isinstance(rows, slice) else len(rows)


def _accumulating(trainer: torch.nn.Module, last: bool) -> Any:
    """DDP's ``no_sync`` for all but the last piece of a batch (nothing to do otherwise)."""
    if last or not isinstance(trainer, torch.nn.parallel.DistributedDataParallel):
        return contextlib.nullcontext()
    return trainer.no_sync()


def _share_of(
    index: torch.Tensor | range, where: Cluster
) -> tuple[torch.Tensor | range, float, int]:
    """This process's rows of a global batch (indices, or a range for full-batch steps), the
    weight of its loss (:func:`pyrogen.infer.distributed.shard_weight`) and the position of
    its first row in the batch."""
    if where.world_size == 1:
        return index, 1.0, 0
    share = distributed.shard(len(index), where)
    rows = index[share]
    if len(rows) == 0:  # fewer rows than processes: score one row at weight 0, as DDP needs
        return index[:1], 0.0, 0
    return rows, distributed.shard_weight(len(rows), len(index), where), share.start


def _row_noise(offset: int, count: int, total: int) -> Any:
    """:class:`~pyrogen.infer.noise.RowNoise` for a piece of a batch (nothing to do for the
    whole batch at once)."""
    return contextlib.nullcontext() if count == total else RowNoise(offset, count, total)


def _model_dtype(model: GenerativeModel, default: torch.dtype) -> torch.dtype:
    for tensor in model.parameters():
        if tensor.is_floating_point():
            return tensor.dtype
    return default
