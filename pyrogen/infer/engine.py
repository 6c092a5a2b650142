"""``pyrogen.fit``: stochastic variational inference for any family, with the chores done.

The engine differentiates ``model.loss`` (a Pyro ELBO) of ``model.model`` / ``model.guide``
and steps a plain ``torch.optim`` optimizer over ``model.parameters()``. Using a torch
optimizer rather than ``pyro.optim`` keeps the optimizer state independent of Pyro's global
parameter names, which is what makes checkpoints resume exactly in a new process.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
from pyro import poutine
from tqdm.auto import tqdm

from pyrogen import __version__
from pyrogen.data.validation import as_tensor, check_int, float_dtype_of
from pyrogen.infer import distributed
from pyrogen.infer.distributed import Cluster
from pyrogen.infer.noise import RowNoise, seed_device, step_seed
from pyrogen.infer.precision import check_precision, mixed_precision
from pyrogen.io import PathLike, load_checkpoint, save_checkpoint
from pyrogen.models.base import GenerativeModel

#: A callback gets (step, loss in nats per example, model); returning True stops training.
Callback = Callable[[int, float, GenerativeModel], Any]
OptimizerFactory = Callable[..., torch.optim.Optimizer]


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


_UNSET = object()
# Held-out rows scored at once.
_HELD_OUT_ROWS = 4096


def fit(
    model: GenerativeModel,
    data: Any,
    y: Any = None,
    *,
    steps: int | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    optim: OptimizerFactory | None = None,
    lr: float | None = None,
    clip_norm: float | None = None,
    validation: Any = None,
    validation_y: Any = None,
    early_stopping: int | None | object = _UNSET,
    min_delta: float | None = None,
    restore_best: bool | object = _UNSET,
    device: str | torch.device | None = None,
    seed: int = 0,
    callbacks: Sequence[Callback] = (),
    checkpoint: PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    progress: bool | None = None,
    micro_batch_size: int | None = None,
    strategy: str = "auto",
    devices: int = 1,
    num_nodes: int = 1,
    precision: str = "32",
) -> FitResult:
    """Train ``model`` by SVI on ``data``.

    Args:
        model: any pyrogen family (see :mod:`pyrogen.models`).
        data: array-like of shape (N, ...); numpy arrays and torch tensors are accepted.
        y: optional labels of shape (N, ...), passed to ``model.model`` / ``model.guide``.
        steps: optimisation steps in total (resumed ones included). Exclusive with ``epochs``.
        epochs: passes over the data; ``steps = epochs * ceil(N / batch_size)`` (a family
            may define its epoch otherwise: see ``GenerativeModel.minibatch_order``).
        batch_size: rows per step; default from ``model.fit_defaults``, else the full data
            set every step. Minibatches are scaled by the data plate to stand for all N rows,
            so the ELBO is unbiased.
        optim: optimizer factory ``optim(params, lr=lr)``; default ``torch.optim.Adam``.
        lr: learning rate; default from ``model.fit_defaults`` or 1e-3.
        clip_norm: clip the gradient norm to this value (``None``: no clipping).
        validation: held-out rows shaped like ``data`` (M, ...). After every epoch (every
            step, full-batch) their negative ELBO per row, ``model.loss`` on all M rows, is
            the monitored loss: early stopping and ``restore_best`` (then True by default)
            follow it instead of the training loss, which a flexible model can drive down
            while it overfits.
        validation_y: the validation rows' labels or contexts (M, ...), when ``y`` is given.
        early_stopping: stop after this many epochs (steps, full-batch) without the
            monitored loss improving by ``min_delta``; ``None`` never stops early.
        min_delta: smallest improvement (nats per example) that resets the patience;
            default from ``model.fit_defaults``, else 1e-4.
        restore_best: leave the model in the state with the lowest monitored loss. Safe for
            deterministic objectives (MAP) and held-out losses; with sampled training ELBOs
            the lowest value is partly luck, so the default (True with ``validation``, else
            from ``model.fit_defaults``, else False) keeps the last.
        device: ``"cpu"``, ``"cuda"``, ...; default the data's device.
        seed: seeds Pyro, torch, numpy, the minibatch order and the noise, and, for a
            model that still has the values its constructor gave it, its initial values
            (:meth:`~pyrogen.models.base.GenerativeModel.initialize`): the same call on a
            newly built model gives the same result. A trained, loaded, resumed or
            hand-set model keeps its values.
        callbacks: ``callback(step, loss, model)``; a callback returning True stops training.
        checkpoint: file to save training state to (atomically) every ``checkpoint_every``
            steps and at the end; it is also a model file for :func:`pyrogen.load`.
        checkpoint_every: steps between checkpoints (default: only at the end).
        resume: continue from ``checkpoint`` if it exists: parameters, optimizer, random
            state and step, so an interrupted run continues exactly.
        progress: show a progress bar; default only when stderr is a terminal.
        micro_batch_size: most rows scored at once (per process): a larger batch (or the
            full data set, full-batch) is scored in pieces of this many rows whose gradients
            add up to exactly the batch's (noise included), so memory stays bounded at any
            N; default from
            ``model.fit_defaults``, else the whole batch at once.
        strategy: ``"ddp"`` trains data-parallel in ``devices * num_nodes`` processes (see
            :mod:`pyrogen.infer.distributed`): each scores its share of every global batch of
            ``batch_size`` rows and DistributedDataParallel averages the gradients, weighted
            so that the steps are those of one process on the same global batches; each
            row's noise is the one that one process draws for it (see
            :mod:`pyrogen.infer.noise`), so this holds for stochastic objectives too.
            ``"auto"`` (default) is ``"ddp"`` when more than one process is asked for.
        devices: processes per node; with ``device="cuda"`` one per GPU (``cuda:0`` ...).
            Called from a plain process, fit spawns them, so model, data, ``optim`` and
            callbacks must pickle (module-level functions, not lambdas), and a script must
            guard its entry point with ``if __name__ == "__main__":``.
            Under ``torchrun`` the launched processes are used instead.
        num_nodes: machines; run the same call on each, with ``MASTER_ADDR``, ``MASTER_PORT``
            and ``NODE_RANK`` set.
        precision: ``"32"`` or ``"bf16-mixed"``: the model's linear and convolution layers
            run under bfloat16 autocast while every log-density and KL stays in full
            precision (see :func:`pyrogen.infer.precision.mixed_precision`).

    Returns:
        a :class:`FitResult`.

    Raises:
        ValueError: bad arguments or data.
        FloatingPointError: the loss or a gradient became NaN/inf; the message names the
            step and the site or parameter responsible.

    Example:
        >>> import pyrogen
        >>> gmm = pyrogen.GaussianMixture(2)
        >>> result = pyrogen.fit(gmm, pyrogen.data.old_faithful(), steps=20, progress=False)
        >>> len(result.losses) <= 20
        True
    """
    arguments = dict(locals())
    started = time.perf_counter()
    if not isinstance(model, GenerativeModel):
        raise TypeError(f"model: expected a pyrogen model, got {type(model).__name__}")
    defaults = model.fit_defaults
    x = as_tensor(data, name="data", ndim=None, dtype=float_dtype_of(data))
    labels = _as_labels(y, x.shape[0])
    num_data = x.shape[0]
    held_out = _validation_rows(validation, validation_y, x, labels)
    if batch_size is None:
        batch_size = defaults.get("batch_size")
    batch_size = _check_positive_int("batch_size", batch_size, allow_none=True)
    if batch_size is not None and batch_size >= num_data:
        batch_size = None
    steps_per_epoch = 1
    if batch_size is not None:
        # The family decides what an epoch is; its length fixes the steps per epoch.
        epoch = model.minibatch_order(
            num_data, batch_size, labels, torch.Generator().manual_seed(0)
        )
        steps_per_epoch = math.ceil(len(epoch) / batch_size)
    if steps is not None and epochs is not None:
        raise ValueError("steps, epochs: expected at most one of them, got both")
    if epochs is not None:
        total_steps = _check_positive_int("epochs", epochs) * steps_per_epoch
    else:
        total_steps = _check_positive_int(
            "steps", steps if steps is not None else defaults.get("steps", 1000)
        )
    lr = float(lr if lr is not None else defaults.get("lr", 1e-3))
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr: expected a positive number, got {lr!r}")
    if early_stopping is _UNSET:
        early_stopping = defaults.get("early_stopping")
    early_stopping = _check_positive_int("early_stopping", early_stopping, allow_none=True)
    min_delta = float(min_delta if min_delta is not None else defaults.get("min_delta", 1e-4))
    if not (math.isfinite(min_delta) and min_delta >= 0):
        raise ValueError(f"min_delta: expected a non-negative number, got {min_delta!r}")
    if restore_best is _UNSET:
        restore_best = held_out is not None or bool(defaults.get("restore_best", False))
    checkpoint_every = _check_positive_int("checkpoint_every", checkpoint_every, allow_none=True)
    if micro_batch_size is None:
        micro_batch_size = defaults.get("micro_batch_size")
    micro_batch_size = _check_positive_int("micro_batch_size", micro_batch_size, allow_none=True)
    if resume and checkpoint is None:
        raise ValueError("resume: expected a checkpoint path to resume from, got checkpoint=None")
    strategy, devices, num_nodes = distributed.check_scale_out(strategy, devices, num_nodes)
    precision = check_precision(precision)
    with mixed_precision(model, precision):  # a model without layers to speed up says so now
        pass

    device = torch.device(device) if device is not None else x.device
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: expected an available device, got {str(device)!r} (no CUDA)")
    # Outside "ddp" a process trains alone, whatever group it may belong to.
    where = distributed.join(devices * num_nodes, device.type) if strategy == "ddp" else Cluster()
    if strategy == "ddp" and where.world_size == 1 and devices * num_nodes > 1:
        return _fit_spawned(arguments, x, labels, held_out, devices, num_nodes, device, started)
    device = distributed.process_device(device, where)
    model.to(device)
    x = x.to(device)
    labels = None if labels is None else labels.to(device)
    if held_out is not None:
        held_out = tuple(None if t is None else t.to(device) for t in held_out)

    pyro.set_rng_seed(seed)
    # One order for all processes: they split the same global batches.
    order_rng = torch.Generator().manual_seed(seed)
    state = _TrainingState()
    saved = None
    if resume and checkpoint is not None and Path(checkpoint).exists():
        saved = load_checkpoint(checkpoint, required=("state_dict", "optimizer", "step", "rng"))
        if saved.get("family") != model.family:
            raise ValueError(
                f"checkpoint {str(checkpoint)!r}: expected family {model.family!r}, "
                f"got {saved.get('family')!r}"
            )
        if not model.is_setup:
            model.setup(x, labels, seed=seed)  # builds parameter shapes; values are replaced
        model.load_state_dict(saved["state_dict"])
        model.to(device)
    else:
        if model.is_as_built:  # its initial values come from the seed, not from torch's state
            model.initialize(seed)
        model.setup(x, labels, seed=seed)
    x = x.to(dtype=_model_dtype(model, x.dtype))
    if held_out is not None:
        held_out = (held_out[0].to(dtype=x.dtype), held_out[1])

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"model: {type(model).__name__} has no trainable parameters")
    optimizer = (optim or torch.optim.Adam)(params, lr=lr)
    if saved is not None:
        optimizer.load_state_dict(saved["optimizer"])
        state = _TrainingState.from_dict(saved)
        by_rank = saved.get("rng_by_rank") or [saved["rng"]]
        if len(by_rank) == where.world_size:  # else: a new process count, new noise streams
            _set_rng_state(by_rank[where.rank])
        order_rng.set_state(saved["order_rng"])

    elbo = model.loss
    trainer = _ELBOLoss(model, elbo)
    validate, first_step = pyro.poutine.util.is_validation_enabled(), state.step
    if progress is None:
        progress = sys.stderr.isatty()
    bar = tqdm(
        total=total_steps,
        initial=state.step,
        disable=not (progress and where.is_main),
        desc=model.family,
    )
    try:
        while state.step < total_steps and not state.stopped_early:
            position = state.step % steps_per_epoch
            if batch_size is None:
                index = range(num_data)  # rows by slices: views of the data, no copies
            else:
                if position == 0 or state.permutation is None:
                    state.permutation = model.minibatch_order(
                        num_data, batch_size, labels, order_rng
                    )
                index = state.permutation[position * batch_size : (position + 1) * batch_size]
                index = index.to(device)
            batch_rows = len(index)
            index, weight, offset = _share_of(index, where)
            if where.world_size > 1 and isinstance(trainer, _ELBOLoss):
                first = _select(index[:micro_batch_size])
                trainer = _data_parallel(trainer, x[first], _rows(labels, first), num_data, device)
            optimizer.zero_grad(set_to_none=True)
            size = micro_batch_size or len(index)
            pieces = [_select(index[start : start + size]) for start in range(0, len(index), size)]
            total = torch.zeros((), dtype=torch.float64, device=device)
            noise_seed = step_seed(seed, state.step)
            for number, rows in enumerate(pieces):
                # Each piece's loss g + (N / b_c) * sum_c, weighted by b_c / b, adds up to
                # the share's g + (N / b) * sum: the gradients accumulate to the batch's own.
                # Pyro's argument and support checks run on the first step of this call,
                # where a user's mistake shows up; later steps skip them (a third of a
                # small step's time). DDP exchanges gradients after the last piece only.
                # Every piece starts from the step's random state and draws its rows' noise
                # as one process scoring the whole batch would (pyrogen.infer.noise).
                seed_device(noise_seed, device)
                with (
                    pyro.validation_enabled(validate and state.step == first_step),
                    mixed_precision(model, precision),
                    _accumulating(trainer, last=number == len(pieces) - 1),
                    _row_noise(offset + number * size, _count(rows), batch_rows),
                ):
                    loss = _loss(trainer, model, x[rows], _rows(labels, rows), num_data, state.step)
                    loss = loss * (weight * _count(rows) / len(index))
                    loss.backward()
                total += loss.detach()
            # The global batch's loss: DDP averages the processes' gradients, so the mean.
            value = distributed.all_sum(total, where).item() / (where.world_size * num_data)
            if not math.isfinite(value):
                raise FloatingPointError(
                    _explain_nonfinite(model, x[rows], _rows(labels, rows), num_data, state.step)
                )
            if batch_size is None and held_out is None:
                state.monitor(value, model, min_delta)  # the pre-update parameters scored `value`
            if clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, clip_norm)
            optimizer.step()
            state.step += 1
            state.losses.append(value)
            if held_out is not None and state.step % steps_per_epoch == 0:
                held_out_loss = _held_out_loss(elbo, model, *held_out, state.step, where)
                state.validation_losses.append((state.step, held_out_loss))
                state.monitor(held_out_loss, model, min_delta)
            elif batch_size is not None and state.step % steps_per_epoch == 0:
                epoch_loss = float(np.mean(state.losses[-steps_per_epoch:]))
                state.monitor(epoch_loss, model, min_delta)
            if early_stopping is not None and state.bad_epochs >= early_stopping:
                state.stopped_early = True
            if where.is_main and any(
                callback(state.step, value, model) is True for callback in callbacks
            ):
                state.stopped_early = True
            if where.world_size > 1 and callbacks:  # a callback on the first process stops all
                state.stopped_early = distributed.any_process(state.stopped_early, device, where)
            bar.update(1)
            if state.step % 10 == 0:
                bar.set_postfix(loss=f"{value:.4f}")
            if checkpoint is not None and checkpoint_every and state.step % checkpoint_every == 0:
                _save(checkpoint, model, optimizer, state, order_rng, where)
    finally:
        bar.close()
    # A NaN/inf gradient makes the parameters NaN/inf at once, which the next step's loss
    # check reports by name; only the last step's update needs this look.
    bad = _nonfinite_parameters(model)
    if bad:
        raise FloatingPointError(
            f"step {state.step}: parameter(s) {bad} became NaN/inf in the last update (a "
            "NaN/inf gradient); lower lr, set clip_norm, or check the data scale"
        )
    if checkpoint is not None:
        _save(checkpoint, model, optimizer, state, order_rng, where)
    if restore_best and state.best_state is not None:
        model.load_state_dict(state.best_state)
    return FitResult(
        model=model,
        losses=list(state.losses),
        steps=state.step,
        time_s=time.perf_counter() - started,
        device=str(device),
        best_loss=state.best_loss,
        best_step=state.best_step,
        stopped_early=state.stopped_early,
        validation_losses=list(state.validation_losses),
        world_size=where.world_size,
    )


class _ELBOLoss(torch.nn.Module):
    """The model's differentiable negative ELBO as a module, which DDP can wrap."""

    def __init__(self, model: GenerativeModel, elbo) -> None:
        super().__init__()
        self.model, self.elbo = model, elbo

    def forward(self, x: torch.Tensor, y: torch.Tensor | None, num_data: int) -> torch.Tensor:
        return self.elbo.differentiable_loss(
            self.model.model, self.model.guide, x, y, num_data=num_data
        )


def _data_parallel(
    trainer: _ELBOLoss, batch_x, batch_y, num_data: int, device: torch.device
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


def _fit_spawned(
    arguments: dict[str, Any],
    x: torch.Tensor,
    labels: torch.Tensor | None,
    held_out: tuple[torch.Tensor, torch.Tensor | None] | None,
    devices: int,
    num_nodes: int,
    device: torch.device,
    started: float,
) -> FitResult:
    """Train in ``devices`` new processes and load the result into ``arguments["model"]``."""
    model = arguments.pop("model")
    # The "not given" marker does not survive pickling; the processes apply the defaults.
    arguments = {name: value for name, value in arguments.items() if value is not _UNSET}
    # Checked data go to the processes, as CPU tensors (CUDA tensors do not pickle simply).
    arguments.pop("data"), arguments.pop("y")
    arguments["validation"] = None if held_out is None else held_out[0].cpu()
    arguments["validation_y"] = (
        None if held_out is None or held_out[1] is None else held_out[1].cpu()
    )
    arguments["device"] = str(device)
    cpu_labels = None if labels is None else labels.cpu()
    payload = distributed.spawn(
        _fit_process,
        (model, x.cpu(), cpu_labels, arguments),
        devices=devices,
        num_nodes=num_nodes,
        device_type=device.type,
    )
    if not model.is_setup:
        model.setup(x[: min(len(x), 4096)], None if labels is None else labels[:4096])
    model.load_state_dict(payload.pop("state_dict"))
    model.to(device)
    payload["validation_losses"] = [tuple(pair) for pair in payload["validation_losses"]]
    return FitResult(model=model, **payload, time_s=time.perf_counter() - started)


def _fit_process(
    model: GenerativeModel, x: torch.Tensor, labels: torch.Tensor | None, options: dict[str, Any]
) -> dict[str, Any]:
    """One process of a spawned run: train, and return what the parent needs."""
    # Spawned processes receive CPU tensors in memory shared with the others (the data stay
    # shared, read-only); the parameters must be this process's own, or every process's
    # optimizer would step the same numbers.
    model = copy.deepcopy(model)
    result = fit(model, x, labels, **options)
    return {
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


@dataclass
class _TrainingState:
    step: int = 0
    losses: list[float] = field(default_factory=list)
    best_loss: float = math.inf
    best_step: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs: int = 0
    stopped_early: bool = False
    validation_losses: list[tuple[int, float]] = field(default_factory=list)
    # This epoch's row order (model.minibatch_order): kept in checkpoints so that a resume
    # mid-epoch sees the same batches.
    permutation: torch.Tensor | None = None

    def monitor(self, loss: float, model: GenerativeModel, min_delta: float) -> None:
        if loss < self.best_loss - min_delta:
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
        if loss < self.best_loss:
            self.best_loss, self.best_step = loss, self.step
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def to_dict(self) -> dict[str, Any]:
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
    def from_dict(cls, saved: dict[str, Any]) -> _TrainingState:
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


def _loss(trainer, model, batch_x, batch_y, num_data: int, step: int) -> torch.Tensor:
    try:
        return trainer(batch_x, batch_y, num_data)
    except ValueError as error:
        bad = _nonfinite_parameters(model)
        if bad:
            raise FloatingPointError(
                f"step {step}: parameter(s) {bad} are NaN/inf, so the model could not be "
                f"evaluated; lower lr or set clip_norm"
            ) from error
        raise


def _nonfinite_parameters(model: GenerativeModel) -> list[str]:
    return [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]


def _explain_nonfinite(model, batch_x, batch_y, num_data: int, step: int) -> str:
    """Say which site (model or guide) and which parameters are NaN/inf."""
    bad = _nonfinite_parameters(model)
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


def _as_labels(y: Any, num_rows: int, name: str = "y") -> torch.Tensor | None:
    if y is None:
        return None
    labels = y if isinstance(y, torch.Tensor) else torch.as_tensor(np.asarray(y))
    if labels.dim() == 0 or labels.shape[0] != num_rows:
        raise ValueError(
            f"{name}: expected {num_rows} rows like "
            f"{'data' if name == 'y' else 'validation'}, got shape {tuple(labels.shape)}"
        )
    return labels


def _validation_rows(
    validation: Any, validation_y: Any, x: torch.Tensor, labels: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """The held-out rows (and labels), checked against the training data's shapes."""
    if validation is None:
        if validation_y is not None:
            raise ValueError("validation_y: given without validation rows")
        return None
    rows = as_tensor(validation, name="validation", ndim=None, dtype=float_dtype_of(validation))
    if rows.dim() == 0 or rows.shape[0] == 0 or rows.shape[1:] != x.shape[1:]:
        expected = ", ".join(map(str, x.shape[1:])) if x.dim() > 1 else ""
        raise ValueError(
            f"validation: expected rows shaped like data, (M, {expected}), "
            f"got shape {tuple(rows.shape)}"
        )
    if (labels is None) != (validation_y is None):
        raise ValueError(
            "validation_y: expected labels for the validation rows, since y was given"
            if labels is not None
            else "validation_y: given, but the training data have no y"
        )
    held_labels = None
    if validation_y is not None:
        held_labels = _as_labels(validation_y, rows.shape[0], name="validation_y")
        if held_labels.shape[1:] != labels.shape[1:]:
            raise ValueError(
                f"validation_y: expected shape (M, *{tuple(labels.shape[1:])}) like y, "
                f"got {tuple(held_labels.shape)}"
            )
    return rows, held_labels


@torch.no_grad()
def _held_out_loss(elbo, model, rows, labels, step: int, where: Cluster) -> float:
    """Negative ELBO per held-out row, in chunks (each scored as itself: num_data = its rows);
    several processes score one share of the rows each."""
    total, share = 0.0, distributed.shard(rows.shape[0], where)
    mine = rows[share], None if labels is None else labels[share]
    for start in range(0, mine[0].shape[0], _HELD_OUT_ROWS):
        chunk = mine[0][start : start + _HELD_OUT_ROWS]
        chunk_y = None if labels is None else mine[1][start : start + _HELD_OUT_ROWS]
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


def _check_positive_int(name: str, value: Any, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    return check_int(name, value)


def _model_dtype(model: GenerativeModel, default: torch.dtype) -> torch.dtype:
    for tensor in model.parameters():
        if tensor.is_floating_point():
            return tensor.dtype
    return default


def _get_rng_state() -> dict[str, Any]:
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "random": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
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


def _save(path: PathLike, model, optimizer, state: _TrainingState, order_rng, where) -> None:
    # Every process's noise stream, so that a resume with as many processes is exact.
    by_rank = distributed.all_gather_objects(_get_rng_state(), where)
    if not where.is_main:
        torch.distributed.barrier()
        return
    payload = {
        "pyrogen_version": __version__,
        "family": model.family,
        "config": model.config,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        # On the CPU like the parameters, so that a machine without the GPU can read it.
        "optimizer": _on_cpu(optimizer.state_dict()),
        "rng": by_rank[0],
        "rng_by_rank": by_rank,
        "order_rng": order_rng.get_state(),
        **state.to_dict(),
    }
    save_checkpoint(path, payload)
    if where.world_size > 1:  # no process reads the file before it is written
        torch.distributed.barrier()
