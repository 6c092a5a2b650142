"""``pyrogen.fit``: stochastic variational inference for any family, with the chores done.

:func:`fit` checks its options once into a :class:`FitConfig` and runs a
:class:`TrainingLoop`: per epoch it orders the rows (``model.minibatch_order``) and applies
``epoch_transform``; per step it draws the batch, adds up the gradients of its pieces
(processes and micro-batches, each row with the noise one process would draw for it) and
steps the optimizer. Everything else -- the NaN guard, held-out validation, early stopping,
the progress bar, checkpoints and the user's callbacks -- is a callback on the loop's hooks
(:mod:`pyrogen.infer.callbacks`).

The engine differentiates ``model.loss`` (a Pyro ELBO) of ``model.model`` / ``model.guide``
and steps a plain ``torch.optim`` optimizer over ``model.parameters()``. Using a torch
optimizer rather than ``pyro.optim`` keeps the optimizer state independent of Pyro's global
parameter names, which is what makes checkpoints resume exactly in a new process.
"""

from __future__ import annotations

import contextlib
import copy
import math
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyro
import torch

from pyrogen.checks import as_tensor, check_int, check_number, float_dtype_of, label_tensor
from pyrogen.infer import distributed
from pyrogen.infer.callbacks import (
    Callback,
    Checkpoint,
    EarlyStopping,
    HeldOutValidation,
    NanGuard,
    ProgressBar,
    StepFunction,
    as_callback,
)
from pyrogen.infer.compiled import ReplayedLoss
from pyrogen.infer.distributed import Cluster
from pyrogen.infer.noise import RowNoise, epoch_seed, seed_device, step_seed
from pyrogen.infer.players import PlayerOptimizers, take_turns
from pyrogen.infer.precision import check_precision, mixed_precision
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

OptimizerFactory = Callable[..., torch.optim.Optimizer]
#: ``epoch_transform(x, epoch, generator)``: the rows (N, ...) an epoch trains on, made from
#: the original training rows x (N, ...); ``generator`` is seeded from ``seed`` and ``epoch``.
EpochTransform = Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]


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


# --- the options, checked once -----------------------------------------------------------------
@dataclass(frozen=True)
class FitConfig:
    """The options of :func:`fit`, checked and with every default applied.

    The keyword arguments of :func:`fit` and what they become here:

    * ``steps``: optimisation steps in total (resumed ones included); exclusive with
      ``epochs``, which gives ``steps = epochs * steps_per_epoch``. Default from
      ``model.fit_defaults``, else 1000.
    * ``batch_size``: rows per step; default from ``model.fit_defaults``, else (and for a
      batch of all N rows or more: None here) the full data set every step. Minibatches are
      scaled by the data plate to stand for all N rows, so the ELBO is unbiased.
      ``steps_per_epoch`` is ``ceil(len(model.minibatch_order(...)) / batch_size)``, 1
      full-batch (a family may define its epoch otherwise).
    * ``optim``: optimizer factory ``optim(params, lr=lr)``; default from
      ``model.fit_defaults``, else ``torch.optim.Adam``.
    * ``lr``: learning rate; default from ``model.fit_defaults`` or 1e-3.
    * ``clip_norm``: clip the gradient norm to this positive, finite value (None: no
      clipping).
    * ``validation`` / ``validation_y``: held-out rows shaped like ``data`` (M, ...) and
      their labels (M, ...), when ``y`` is given. After every epoch (every step,
      full-batch) their negative ELBO per row, ``model.loss`` on all M rows, is the
      monitored loss: early stopping and ``restore_best`` (then True by default) follow it
      instead of the training loss, which a flexible model can drive down while it overfits.
    * ``early_stopping``: stop after this many epochs (steps, full-batch) without the
      monitored loss improving by ``min_delta``; None never stops early. Default from
      ``model.fit_defaults``.
    * ``min_delta``: smallest improvement (nats per example) that resets the patience;
      default from ``model.fit_defaults``, else 1e-4.
    * ``restore_best``: leave the model in the state with the lowest monitored loss. Safe
      for deterministic objectives (MAP) and held-out losses; with sampled training ELBOs
      the lowest value is partly luck, so the default (True with ``validation``, else from
      ``model.fit_defaults``, else False) keeps the last.
    * ``device``: ``"cpu"``, ``"cuda"``, ...; default the data's device.
    * ``seed``: a non-negative integer; seeds Pyro, torch, numpy, the minibatch order, the noise and
      ``epoch_transform``'s generator, and, for a model that still has the values its
      constructor gave it, its initial values
      (:meth:`~pyrogen.models.base.GenerativeModel.initialize`): the same call on a newly
      built model gives the same result. A trained, loaded, resumed or hand-set model keeps
      its values.
    * ``callbacks``: :class:`~pyrogen.infer.callbacks.Callback` objects, or functions
      ``callback(step, loss, model)`` of which one returning True stops training.
    * ``checkpoint``: file to save training state to (atomically) every
      ``checkpoint_every`` steps and at the end; also a model file for
      :func:`pyrogen.load`. Its folder must exist and take files (checked before the
      first step). ``resume``: continue from it if it exists (parameters, optimizer,
      random state and step), so an interrupted run continues exactly; a checkpoint
      written for other data (rows, shape, dtype) or other settings (``batch_size``,
      ``seed``, optimizer) is refused, naming what differs.
    * ``progress``: show a progress bar; default only when stderr is a terminal.
    * ``micro_batch_size``: most rows scored at once (per process): a larger batch is scored
      in pieces whose gradients add up to exactly the batch's (noise included), so memory
      stays bounded at any N; default from ``model.fit_defaults``, else the whole batch.
    * ``strategy``: ``"ddp"`` trains data-parallel in ``devices * num_nodes`` processes
      (:mod:`pyrogen.infer.distributed`): each scores its share of every global batch and
      DistributedDataParallel averages the gradients, weighted so that the steps are those
      of one process on the same global batches; each row's noise is the one one process
      draws for it (:mod:`pyrogen.infer.noise`), so this holds for stochastic objectives
      too. ``"auto"`` (default) is ``"ddp"`` when more than one process is asked for.
    * ``devices``: processes per node; with ``device="cuda"`` one per GPU. Called from a
      plain process, fit spawns them, so model, data, ``optim``, callbacks and
      ``epoch_transform`` must pickle (module-level functions, not lambdas), and a script
      must guard its entry point with ``if __name__ == "__main__":``. Under ``torchrun``
      the launched processes are used instead. ``num_nodes``: machines; run the same call
      on each, with ``MASTER_ADDR``, ``MASTER_PORT`` and ``NODE_RANK`` set.
    * ``precision``: ``"32"`` or ``"bf16-mixed"``: the model's linear and convolution
      layers run under bfloat16 autocast while every log-density and KL stays in full
      precision (:func:`pyrogen.infer.precision.mixed_precision`).
    * ``epoch_transform``: see :func:`fit`.
    * ``compile``: record the training loss once per batch shape as a graph of tensor
      operations and replay it, without Pyro's per-step bookkeeping
      (:class:`~pyrogen.infer.compiled.ReplayedLoss`): the same losses as eager training,
      faster where Python dominates a step (small networks, GPUs). A family whose step
      reads values out of tensors (enumeration, masks by label) trains eagerly, with a
      warning. One process only, whole batches (no ``micro_batch_size`` below the batch).
    """

    steps: int
    steps_per_epoch: int
    batch_size: int | None
    lr: float
    optim: OptimizerFactory
    clip_norm: float | None
    early_stopping: int | None
    min_delta: float
    restore_best: bool
    device: torch.device
    seed: int
    callbacks: tuple[Callback, ...]
    checkpoint: Path | None
    checkpoint_every: int | None
    resume: bool
    progress: bool
    micro_batch_size: int | None
    strategy: str
    devices: int
    num_nodes: int
    precision: str
    epoch_transform: EpochTransform | None
    compile: bool = False

    @property
    def world_size(self) -> int:
        """Processes asked for: ``devices * num_nodes``."""
        return self.devices * self.num_nodes

    @classmethod
    def from_options(
        cls, model: GenerativeModel, data: TrainingData, options: dict[str, Any]
    ) -> FitConfig:
        """Check ``options`` (the keyword arguments of :func:`fit`) against ``model`` and
        ``data``, applying the defaults.

        Raises:
            TypeError: an option :func:`fit` does not have.
            ValueError: a bad option, naming it and what was expected.
        """
        unknown = sorted(set(options) - _OPTION_NAMES)
        if unknown:
            raise TypeError(f"fit() got an unexpected keyword argument {unknown[0]!r}")
        defaults, get = model.fit_defaults, options.get
        batch_size, steps_per_epoch, steps = _schedule(model, data, options)
        lr = check_number("lr", _given(options, "lr", defaults.get("lr", 1e-3)))
        clip_norm = get("clip_norm")
        clip_norm = None if clip_norm is None else check_number("clip_norm", clip_norm)
        early_stopping, min_delta, restore_best = _monitoring(defaults, data, options)
        checkpoint_every = _positive_int_or_none("checkpoint_every", get("checkpoint_every"))
        micro = _given(options, "micro_batch_size", defaults.get("micro_batch_size"))
        micro_batch_size = _positive_int_or_none("micro_batch_size", micro)
        if get("resume", False) and get("checkpoint") is None:
            raise ValueError(
                "resume: expected a checkpoint path to resume from, got checkpoint=None"
            )
        placement = _placement(model, data, options)
        pieces = micro_batch_size is not None and micro_batch_size < (batch_size or data.num_data)
        compiled = _checked_compile(get("compile", False), placement, pieces)
        _check_turns(model, placement, pieces, compiled, data.validation is not None)
        return cls(
            compile=compiled,
            steps=steps,
            steps_per_epoch=steps_per_epoch,
            batch_size=batch_size,
            lr=lr,
            optim=_checked_optim(_given(options, "optim", defaults.get("optim"))),
            clip_norm=clip_norm,
            early_stopping=early_stopping,
            min_delta=min_delta,
            restore_best=restore_best,
            checkpoint_every=checkpoint_every,
            micro_batch_size=micro_batch_size,
            **placement,
            seed=check_int("seed", get("seed", 0), 0),
            callbacks=tuple(as_callback(c) for c in get("callbacks") or ()),
            checkpoint=_checked_checkpoint(get("checkpoint")),
            resume=bool(get("resume", False)),
            progress=sys.stderr.isatty() if get("progress") is None else bool(get("progress")),
            epoch_transform=_checked_transform(get("epoch_transform")),
        )


_OPTION_NAMES = frozenset(
    (
        "steps epochs batch_size optim lr clip_norm validation validation_y early_stopping "
        "min_delta restore_best device seed callbacks checkpoint checkpoint_every resume "
        "progress micro_batch_size strategy devices num_nodes precision epoch_transform compile"
    ).split()
)


def _check_turns(
    model: GenerativeModel,
    placement: dict[str, Any],
    pieces: bool,
    compiled: bool,
    validation: bool,
) -> None:
    """Refuse what a model trained in turns does not support yet (one process, whole
    batches, eager steps)."""
    if not model.players():
        return
    name = type(model).__name__
    several = placement["strategy"] == "ddp" and placement["devices"] * placement["num_nodes"] > 1
    for refused, option in ((several, "strategy='ddp' with several processes"),
                            (pieces, "a micro_batch_size below the batch size"),
                            (compiled, "compile=True"),
                            (validation, "held-out validation (of an ELBO)")):  # fmt: skip
        if refused:
            raise ValueError(
                f"{name} is trained in turns (players), which {option} does not support yet"
            )


def _checked_compile(value: Any, placement: dict[str, Any], pieces: bool) -> bool:
    """``compile`` as a bool, refused where a recorded step cannot stand for every step
    (``pieces``: batches are scored in micro-batches)."""
    if not isinstance(value, bool):
        raise ValueError(f"compile: expected True or False, got {value!r}")
    several = placement["devices"] * placement["num_nodes"] > 1
    if value and placement["strategy"] == "ddp" and several:
        raise ValueError("compile: expected one training process, got strategy='ddp' with more")
    if value and pieces:
        raise ValueError(
            "compile: expected whole batches, got a micro_batch_size below the batch size "
            "(each piece draws its rows' noise in Python)"
        )
    return value


def _schedule(
    model: GenerativeModel, data: TrainingData, options: dict[str, Any]
) -> tuple[int | None, int, int]:
    """``batch_size`` (None: full-batch), steps per epoch and steps in total."""
    defaults, num_data = model.fit_defaults, data.num_data
    batch_size = _given(options, "batch_size", defaults.get("batch_size"))
    batch_size = _positive_int_or_none("batch_size", batch_size)
    if batch_size is not None and batch_size >= num_data:
        batch_size = None
    steps_per_epoch = 1
    if batch_size is not None:
        # The family decides what an epoch is; its length fixes the steps per epoch.
        order = model.minibatch_order(
            num_data, batch_size, data.labels, torch.Generator().manual_seed(0)
        )
        steps_per_epoch = math.ceil(len(order) / batch_size)
    steps, epochs = options.get("steps"), options.get("epochs")
    if steps is not None and epochs is not None:
        raise ValueError("steps, epochs: expected at most one of them, got both")
    if epochs is not None:
        return batch_size, steps_per_epoch, check_int("epochs", epochs) * steps_per_epoch
    total = check_int("steps", steps if steps is not None else defaults.get("steps", 1000))
    return batch_size, steps_per_epoch, total


def _monitoring(
    defaults: dict[str, Any], data: TrainingData, options: dict[str, Any]
) -> tuple[int | None, float, bool]:
    """``early_stopping`` (patience), ``min_delta`` and ``restore_best``."""
    # Unlike the other options, an explicit None here is an answer: never stop early.
    patience = options.get("early_stopping", defaults.get("early_stopping"))
    patience = _positive_int_or_none("early_stopping", patience)
    min_delta = _given(options, "min_delta", defaults.get("min_delta", 1e-4))
    min_delta = check_number("min_delta", min_delta, allow_zero=True)
    restore_best = options.get("restore_best")
    if "restore_best" not in options:
        restore_best = data.validation is not None or defaults.get("restore_best", False)
    return patience, min_delta, bool(restore_best)


def _placement(
    model: GenerativeModel, data: TrainingData, options: dict[str, Any]
) -> dict[str, Any]:
    """``strategy``, ``devices``, ``num_nodes``, ``precision`` and ``device``, checked."""
    strategy, devices, num_nodes = distributed.check_scale_out(
        options.get("strategy", "auto"), options.get("devices", 1), options.get("num_nodes", 1)
    )
    precision = check_precision(options.get("precision", "32"))
    with mixed_precision(model, precision):  # a model without layers to speed up says so now
        pass
    device = _checked_device(options.get("device"), data.x.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: expected an available device, got {str(device)!r} (no CUDA)")
    return {
        "strategy": strategy,
        "devices": devices,
        "num_nodes": num_nodes,
        "precision": precision,
        "device": device,
    }


def _checked_optim(optim: Any) -> OptimizerFactory:
    if optim is None:
        return torch.optim.Adam
    if not callable(optim):
        raise ValueError(
            "optim: expected an optimizer class or function optim(params, lr=lr), e.g. "
            f"torch.optim.Adam, got {optim!r}"
        )
    return optim


def _checked_device(device: Any, default: torch.device) -> torch.device:
    """``device`` as a torch.device (``default`` for None), or a ValueError naming it."""
    if device is None:
        return default
    try:
        return torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(
            f"device: expected a device such as 'cpu' or 'cuda', got {device!r}"
        ) from None


def _checked_checkpoint(checkpoint: Any) -> Path | None:
    """``checkpoint`` as a path whose folder exists and takes files (a probe file is made
    and removed beside it), so that a run does not train for an hour and then fail to save.
    """
    if checkpoint is None:
        return None
    if not isinstance(checkpoint, str | Path) or not str(checkpoint):
        raise ValueError(f"checkpoint: expected a file path, got {checkpoint!r}")
    path = Path(checkpoint)
    folder = path.parent
    if path.is_dir():
        raise ValueError(f"checkpoint: expected a file path, got the folder {str(path)!r}")
    if not folder.is_dir():
        raise ValueError(
            f"checkpoint: expected a file in an existing folder, got {str(path)!r} "
            f"(no folder {str(folder)!r}; create it first)"
        )
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{path.name}.", suffix=".probe"):
            pass
    except OSError as error:
        raise ValueError(
            f"checkpoint: expected a writable folder, got {str(folder)!r} "
            f"({error.strerror or error})"
        ) from None
    return path


def _checked_transform(transform: Any) -> EpochTransform | None:
    if transform is not None and not callable(transform):
        raise ValueError(
            "epoch_transform: expected a function (x, epoch, generator) -> rows shaped like "
            f"x, got {type(transform).__name__}"
        )
    return transform


def _given(options: dict[str, Any], name: str, default: Any) -> Any:
    """The option ``name``, or ``default`` where it is missing or None."""
    value = options.get(name)
    return default if value is None else value


def _positive_int_or_none(name: str, value: Any) -> int | None:
    return None if value is None else check_int(name, value)


# --- the data --------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)  # tensors: no element-wise == between two of these
class TrainingData:
    """The training rows and held-out rows of :func:`fit`, checked.

    Attributes:
        x: training rows (N, ...), floating point.
        labels: their labels (N, ...) or None.
        validation: held-out rows (M, ...) shaped like ``x``'s rows, or None.
        validation_labels: their labels (M, ...), given exactly when ``labels`` is.
    """

    x: torch.Tensor
    labels: torch.Tensor | None = None
    validation: torch.Tensor | None = None
    validation_labels: torch.Tensor | None = None

    @property
    def num_data(self) -> int:
        """N, the training rows."""
        return self.x.shape[0]

    @classmethod
    def from_arguments(cls, data: Any, y: Any, validation: Any, validation_y: Any) -> TrainingData:
        """Check ``fit``'s data arguments (array-likes accepted).

        Raises:
            ValueError: naming the argument whose shape or values are wrong.
        """
        x = as_tensor(data, name="data", ndim=None, dtype=float_dtype_of(data))
        labels = _as_labels(y, x.shape[0])
        if validation is None:
            if validation_y is not None:
                raise ValueError("validation_y: given without validation rows")
            return cls(x, labels)
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
        return cls(x, labels, rows, held_labels)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> TrainingData:
        """The same data on ``device``, rows (not labels) in ``dtype`` when given."""

        def move(rows: torch.Tensor | None, floating: bool) -> torch.Tensor | None:
            if rows is None:
                return None
            return rows.to(device, dtype=dtype if floating else None)

        return TrainingData(
            move(self.x, True),
            move(self.labels, False),
            move(self.validation, True),
            move(self.validation_labels, False),
        )


def _as_labels(y: Any, num_rows: int, name: str = "y") -> torch.Tensor | None:
    if y is None:
        return None
    labels = label_tensor(y, name)
    if labels.dim() == 0 or labels.shape[0] != num_rows:
        raise ValueError(
            f"{name}: expected {num_rows} rows like "
            f"{'data' if name == 'y' else 'validation'}, got shape {tuple(labels.shape)}"
        )
    return labels


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
            ``strategy``, ``devices``, ``num_nodes``, ``precision``, ``compile`` (each explained in
            :class:`FitConfig`) and ``epoch_transform``:
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
        pyro.set_rng_seed(config.seed)
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
            self.trainer = ReplayedLoss(self.trainer, type(model).__name__)
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
        if config.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, config.clip_norm)
        self.optimizer.step()
        return loss

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
