"""The options and data of :func:`pyrogen.fit`, checked once before anything trains.

:class:`FitConfig` holds every option with its default applied (the family's
``fit_defaults`` first, then the engine's); :class:`TrainingData` holds the training and
held-out rows. Both refuse a bad value with a ValueError naming the argument and what was
expected, so a run never trains for an hour and then fails on its options.
"""

from __future__ import annotations

import math
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pyrogen.checks import as_tensor, check_int, check_number, float_dtype_of, label_tensor
from pyrogen.infer import distributed
from pyrogen.infer.callbacks import Callback, as_callback
from pyrogen.infer.compiled import COMPILE_MODES
from pyrogen.infer.precision import check_precision, mixed_precision
from pyrogen.models.base import GenerativeModel
from pyrogen.nn.optim import adam

__all__ = ["EpochTransform", "FitConfig", "OptimizerFactory", "TrainingData"]

OptimizerFactory = Callable[..., torch.optim.Optimizer]
#: ``epoch_transform(x, epoch, generator)``: the rows (N, ...) an epoch trains on, made from
#: the original training rows x (N, ...); ``generator`` is seeded from ``seed`` and ``epoch``.
EpochTransform = Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]


# --- the options, checked once -----------------------------------------------------------------
@dataclass(frozen=True)
class FitConfig:
    """The options of :func:`~pyrogen.infer.engine.fit`, checked and with every default applied.

    The keyword arguments of :func:`~pyrogen.infer.engine.fit` and what they become here:

    * ``steps``: optimisation steps in total (resumed ones included); exclusive with
      ``epochs``, which gives ``steps = epochs * steps_per_epoch``. Default from
      ``model.fit_defaults``, else 1000.
    * ``batch_size``: rows per step; default from ``model.fit_defaults``, else (and for a
      batch of all N rows or more: None here) the full data set every step. Minibatches are
      scaled by the data plate to stand for all N rows, so the ELBO is unbiased.
      ``steps_per_epoch`` is ``ceil(len(model.minibatch_order(...)) / batch_size)``, 1
      full-batch (a family may define its epoch otherwise).
    * ``optim``: optimizer factory ``optim(params, lr=lr)``; default from
      ``model.fit_defaults``, else :func:`pyrogen.nn.optim.adam` (``torch.optim.Adam``,
      fused where the parameters allow).
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
    * ``epoch_transform``: see :func:`~pyrogen.infer.engine.fit`.
    * ``compile``: record the training loss once per batch shape as a graph of tensor
      operations and replay it, without Pyro's per-step bookkeeping
      (:class:`~pyrogen.infer.compiled.ReplayedLoss`): the same losses as eager training,
      faster where Python dominates a step (small networks, GPUs). A family whose step
      reads values out of tensors (enumeration, masks by label) trains eagerly, with a
      warning. One process only, whole batches (no ``micro_batch_size`` below the batch).
      ``True`` is ``"replay"``; ``"inductor"`` also compiles the recording, its random
      draws made eagerly, with ``torch.compile`` (fused element-wise operations; losses
      equal to float tolerance; 10-40 s of compilation per batch shape on a CPU, which
      needs a C++ compiler). Here False or the mode's name.
    * ``gradient_tolerance``: stop before an update whose gradient (of the loss in nats per
      example) has an L1 norm over every trainable entry of at most this: no move of at most
      ``delta`` per entry can then gain more than ``delta * gradient_tolerance`` to first
      order, so a deterministic objective (MAP) is at a stationary point and the
      parameters are kept as they are. With Adam, whose first step moves each entry by
      about ``lr``, ``min_delta / lr`` stops exactly where one step's first-order gain is
      below ``min_delta``. Default from ``model.fit_defaults`` while ``early_stopping`` is
      on (with ``early_stopping=None`` only a given value stops), else None (never).
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
    compile: bool | str = False
    gradient_tolerance: float | None = None

    @property
    def world_size(self) -> int:
        """Processes asked for: ``devices * num_nodes``."""
        return self.devices * self.num_nodes

    @classmethod
    def from_options(
        cls, model: GenerativeModel, data: TrainingData, options: dict[str, Any]
    ) -> FitConfig:
        """Check ``options`` (the keyword arguments of :func:`~pyrogen.infer.engine.fit`)
        against ``model`` and ``data``, applying the defaults.

        Raises:
            TypeError: an option :func:`~pyrogen.infer.engine.fit` does not have.
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
        # A family's default is a way of stopping early: off with early_stopping=None.
        tolerance = options.get("gradient_tolerance")
        if tolerance is None and early_stopping is not None:
            tolerance = defaults.get("gradient_tolerance")
        if tolerance is not None:
            tolerance = check_number("gradient_tolerance", tolerance, allow_zero=True)
        return cls(
            compile=compiled,
            gradient_tolerance=tolerance,
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
        "progress micro_batch_size strategy devices num_nodes precision epoch_transform compile "
        "gradient_tolerance"
    ).split()
)


def _check_turns(
    model: GenerativeModel,
    placement: dict[str, Any],
    pieces: bool,
    compiled: bool | str,
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
                            (compiled, f"compile={compiled!r}"),
                            (validation, "held-out validation (of an ELBO)")):  # fmt: skip
        if refused:
            raise ValueError(
                f"{name} is trained in turns (players), which {option} does not support yet"
            )


def _checked_compile(value: Any, placement: dict[str, Any], pieces: bool) -> bool | str:
    """``compile`` as False or a mode of :data:`~pyrogen.infer.compiled.COMPILE_MODES`,
    refused where a recorded step cannot stand for every step (``pieces``: batches are
    scored in micro-batches)."""
    if value is True:
        value = "replay"
    if value is not False and value not in COMPILE_MODES:
        modes = ", ".join(repr(mode) for mode in COMPILE_MODES)
        raise ValueError(f"compile: expected True, False, {modes}, got {value!r}")
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
        return adam
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
    """The training rows and held-out rows of :func:`~pyrogen.infer.engine.fit`, checked.

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
