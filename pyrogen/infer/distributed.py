"""Data-parallel SVI with ``torch.distributed``: launching, sharding, gathering.

One process per device (``devices`` per node, ``num_nodes`` nodes) each holds the whole
model and data set and scores its share of every global batch; PyTorch's
:class:`~torch.nn.parallel.DistributedDataParallel` averages the gradients (as in Pyro's
Lightning example, whose ``ELBOModule`` DDP wraps the same way). The engine weights each
process's loss so that the average is exactly the global batch's ELBO -- see
:func:`shard_weight`.

Processes are started in one of three ways:

* ``pyrogen.fit(..., devices=N)`` from a plain Python process spawns N workers on this
  node (``torch.multiprocessing`` with the ``spawn`` method; model, data and callbacks must
  pickle). With ``num_nodes=M`` the same call runs on every node, which finds the others
  through the ``MASTER_ADDR``, ``MASTER_PORT`` and ``NODE_RANK`` environment variables.
* under ``torchrun`` (or any launcher that sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
  ``MASTER_ADDR`` and ``MASTER_PORT``), each process joins the group itself;
* in a process group the user has already initialised, the engine uses it as it is.

:func:`sample` and :func:`evaluate` split a draw, or the scoring of a data set, over
processes found or started the same way: each process takes its contiguous share of the
rows (:func:`shard`) and the results are gathered in rank order.
"""

from __future__ import annotations

import builtins
import copy
import os
import pickle
import random
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pyrogen.checks import check_choice, check_int, physical_memory

#: Accepted ``strategy`` values: ``"auto"`` is one process unless ``devices`` or
#: ``num_nodes`` ask for more; ``"ddp"`` is DistributedDataParallel.
STRATEGIES = ("auto", "ddp")

_LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class Cluster:
    """Where this process stands: global ``rank`` of ``world_size``, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this process writes files, shows progress and runs callbacks."""
        return self.rank == 0


def check_scale_out(strategy: Any, devices: Any, num_nodes: Any) -> tuple[str, int, int]:
    """Validate ``strategy``, ``devices`` and ``num_nodes``; ``"auto"`` becomes ``"ddp"``
    when more than one process is asked for."""
    check_choice("strategy", strategy, STRATEGIES)
    devices = check_int("devices", devices, 1)
    num_nodes = check_int("num_nodes", num_nodes, 1)
    if strategy == "auto" and devices * num_nodes > 1:
        strategy = "ddp"
    return strategy, devices, num_nodes


def cluster() -> Cluster:
    """The current process group's ranks, or a single process when there is none."""
    if not (dist.is_available() and dist.is_initialized()):
        return Cluster()
    local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    return Cluster(dist.get_rank(), dist.get_world_size(), local)


def launched_externally() -> bool:
    """Whether a launcher such as ``torchrun`` started this process as one rank of a group."""
    return all(name in os.environ for name in _LAUNCHER_VARIABLES)


def join_launched_group(device_type: str, world_size: int) -> None:
    """Initialise the process group from a launcher's environment variables.

    Raises:
        ValueError: ``WORLD_SIZE`` disagrees with ``devices * num_nodes``.
    """
    launched = int(os.environ["WORLD_SIZE"])
    if launched != world_size:
        raise ValueError(
            f"devices, num_nodes: ask for {world_size} processes, but the launcher started "
            f"WORLD_SIZE={launched}"
        )
    if device_type == "cuda":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(_backend(device_type))


def join(world_size: int, device_type: str, names: str = "devices, num_nodes") -> Cluster:
    """The processes to work in: the current process group, or a launcher's (joined now),
    or this process alone when there is neither (the caller may then spawn).

    Raises:
        ValueError: the group has another number of processes than ``world_size`` (> 1);
            ``names`` are the arguments the message names.
    """
    where = cluster()
    if where.world_size == 1 and world_size > 1 and launched_externally():
        join_launched_group(device_type, world_size)
        where = cluster()
    if where.world_size > 1 and world_size not in (1, where.world_size):
        raise ValueError(
            f"{names}: ask for {world_size} processes, but this process group has "
            f"{where.world_size}"
        )
    return where


def process_device(device: torch.device, where: Cluster) -> torch.device:
    """This process's device: ``cuda`` means the GPU of the process's local rank."""
    if device.type == "cuda" and where.world_size > 1:
        return torch.device("cuda", where.local_rank)
    return device


def shard(rows: int, where: Cluster) -> slice:
    """This process's contiguous share of ``rows`` (sizes differ by at most one)."""
    base, extra = divmod(rows, where.world_size)
    start = where.rank * base + min(where.rank, extra)
    return slice(start, start + base + (where.rank < extra))


def shard_weight(shard_rows: int, global_rows: int, where: Cluster) -> float:
    """Factor on this process's loss that makes DDP's gradient average exact.

    A family's loss on ``b_r`` of ``N`` rows is ``g + (N / b_r) * sum_r`` (``g``: terms
    outside the data plate, such as priors on global parameters). With weights
    ``w_r = R * b_r / B`` the average over the R processes is ``g + (N / B) * sum``, the
    loss of the whole global batch of B rows, also when B does not split evenly.
    """
    return where.world_size * shard_rows / global_rows


def all_sum(value: torch.Tensor, where: Cluster) -> torch.Tensor:
    """Sum of ``value`` over the processes of ``where`` (itself for a single process)."""
    if where.world_size > 1:
        value = value.clone()
        dist.all_reduce(value)
    return value


def any_process(flag: bool, device: torch.device, where: Cluster) -> bool:
    """Whether ``flag`` is True in any process, so that all of them stop together."""
    return bool(all_sum(torch.tensor(float(flag), device=device), where) > 0)


def all_gather_objects(value: Any, where: Cluster) -> list[Any]:
    """Every process's ``value``, in rank order (``[value]`` for a single process)."""
    if where.world_size == 1:
        return [value]
    gathered: list[Any] = [None] * where.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def spawn(
    target: Callable[..., Any],
    args: tuple[Any, ...],
    *,
    devices: int,
    num_nodes: int,
    device_type: str,
) -> Any:
    """Run ``target(*args)`` in ``devices`` new processes on this node, as ranks of a group of
    ``devices * num_nodes``; return what this node's first process returned.

    ``target`` runs with the process group initialised; its return value must be writable by
    :func:`pyrogen.io.save_checkpoint` (tensors, numbers, lists, dicts).

    Raises:
        ValueError: more CUDA devices than this node has, a multi-node run without
            ``MASTER_ADDR`` / ``MASTER_PORT`` / ``NODE_RANK``, or arguments that do not pickle.
    """
    from pyrogen.io import load_checkpoint

    if device_type == "cuda" and devices > torch.cuda.device_count():
        raise ValueError(
            f"devices: expected at most the {torch.cuda.device_count()} CUDA device(s) of this "
            f"node, got {devices}"
        )
    if num_nodes > 1:
        missing = [v for v in ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK") if v not in os.environ]
        if missing:
            raise ValueError(
                f"num_nodes={num_nodes}: set {', '.join(missing)} on every node (the first "
                "node's address and a free port, and each node's index 0..num_nodes-1)"
            )
        address, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
        node_rank = check_int("NODE_RANK", int(os.environ["NODE_RANK"]), 0)
    else:
        address, port, node_rank = "127.0.0.1", _free_port(), 0
    # Processes share the cores: each gets its part, as torchrun does.
    threads = max(1, torch.get_num_threads() // devices)
    with tempfile.TemporaryDirectory(prefix="pyrogen-ddp-") as folder:
        result = Path(folder) / "result.pt"
        options = (devices, num_nodes, node_rank, address, port, device_type, threads)
        try:
            mp.start_processes(
                _worker,
                args=(target, args, options, str(result)),
                nprocs=devices,
                join=True,
                start_method="spawn",
            )
        except (AttributeError, TypeError, pickle.PicklingError) as error:
            if "pickle" not in str(error).lower():
                raise
            raise ValueError(
                "devices: each process gets its own copy of the model, data and options (an "
                f"optimizer factory, callbacks, an epoch_transform), and one does not pickle "
                f"({error}); use "
                "module-level functions, not lambdas or local functions"
            ) from error
        return load_checkpoint(result)


def _worker(
    local_rank: int,
    target: Callable[..., Any],
    args: tuple[Any, ...],
    options: tuple[int, int, int, str, int, str, int],
    result: str,
) -> None:
    from pyrogen.io import save_checkpoint

    devices, num_nodes, node_rank, address, port, device_type, threads = options
    torch.set_num_threads(threads)
    os.environ["LOCAL_RANK"] = str(local_rank)
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(
        _backend(device_type),
        init_method=f"tcp://{address}:{port}",
        rank=node_rank * devices + local_rank,
        world_size=devices * num_nodes,
    )
    try:
        value = target(*args)
        if local_rank == 0:
            save_checkpoint(result, value)
        # Leave together: the first process hosts the group's store, and one that exits
        # while another still talks to it makes that one abort.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _backend(device_type: str) -> str:
    return "nccl" if device_type == "cuda" else "gloo"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- sharded sampling and evaluation -------------------------------------------------------
#: Arguments of ``model.sample`` with one entry per drawn row, split like the rows.
_PER_ROW_SAMPLE_OPTIONS = ("y", "observed")


def sample(
    model: Any,
    n: int,
    *,
    devices: int = 1,
    num_nodes: int = 1,
    device: str | torch.device = "cpu",
    seed: int | None = 0,
    **options: Any,
) -> torch.Tensor:
    """Draw ``n`` examples with ``model.sample``, split over ``devices * num_nodes`` processes.

    Process ``r`` draws its contiguous share of the rows (``shard(n, cluster)``: sizes
    differ by at most one), ``model.sample(n_r, **options)`` on its device with the random
    state of ``pyro.set_rng_seed(seed + r)``; the draws are concatenated in rank order. So
    the result is what processes 0, 1, ... would draw one after the other in one process,
    each seeded with ``seed + r``, and it is the same for the same ``seed`` and process
    count (but not for another process count).

    Processes come from where :func:`pyrogen.fit` gets them: with ``devices * num_nodes``
    of 1 and no process group, the draw runs here (seeded with ``seed``); inside an
    initialised process group (or one that ``torchrun`` launched) the group's processes
    share the draw and every one of them returns all ``n`` rows; otherwise ``devices``
    processes are spawned on this node (the model and ``options`` must pickle, and a
    script must guard its entry point with ``if __name__ == "__main__":``).

    Args:
        model: a pyrogen model with ``sample(n, **options)`` returning (n, ...).
        n: rows to draw in all.
        devices: processes per node; with ``device="cuda"`` one per GPU.
        num_nodes: machines; run the same call on each, with ``MASTER_ADDR``,
            ``MASTER_PORT`` and ``NODE_RANK`` set.
        device: where each process draws (``"cuda"``: the GPU of its local rank); the model
            is moved there.
        seed: process ``r`` is seeded with ``seed + r`` (torch, numpy and random, as
            ``pyro.set_rng_seed``); None draws from the current random state here (and
            from a seed drawn from it for spawned processes).
        **options: keywords of ``model.sample``. Per-row ones, ``y`` (labels, (n, ...))
            and ``observed`` (examples to complete, (n, ...)), are split like the rows;
            the others go to every process as they are.

    Returns:
        the draws, shape (n, ...), on the CPU, in rank order.

    Raises:
        ValueError: a bad ``n``, ``devices``, ``num_nodes``, ``device`` or per-row option
            (named), or the model's own error from any process.

    Example:
        >>> import torch, pyrogen
        >>> from pyrogen.infer import distributed
        >>> gmm = pyrogen.GaussianMixture(2)
        >>> _ = pyrogen.fit(gmm, pyrogen.data.old_faithful(), steps=5, progress=False)
        >>> distributed.sample(gmm, 5, seed=1).shape
        torch.Size([5, 2])
    """
    n = check_int("n", n)
    _check_method(model, "sample", "model")
    per_row = {}
    for name in _PER_ROW_SAMPLE_OPTIONS:
        if options.get(name) is not None:
            per_row[name] = _as_rows(options.pop(name), name, rows=n)
    if n > _LARGE_DRAW:
        _check_draw_fits(model, n, per_row, options)
    job = _Job("sample", n, None, per_row, options)
    return _run_sharded(model, job, devices, num_nodes, device, seed)


#: Draws of more rows than this are sized first (one row drawn, random state put back).
_LARGE_DRAW = 1_000_000


def _check_draw_fits(
    model: Any, n: int, per_row: dict[str, torch.Tensor], options: dict[str, Any]
) -> None:
    """A ValueError naming ``n`` when ``n`` rows would take more than half this machine's
    memory (the draws are gathered on the CPU, and drawing needs room of its own)."""
    memory = physical_memory()
    if memory is None:
        return
    state = (np.random.get_state(), random.getstate())
    with torch.random.fork_rng(devices=[]):
        try:
            one = model.sample(1, **{k: v[:1] for k, v in per_row.items()}, **options)
        except Exception:  # the draw itself will report the model's error
            return
        finally:
            np.random.set_state(state[0])
            random.setstate(state[1])
    if not isinstance(one, torch.Tensor):
        return
    need = n * one.element_size() * max(one.numel(), 1)
    if need > memory / 2:
        raise ValueError(
            f"n: expected a number of rows whose draws fit in memory, got {n}: {n} rows of "
            f"shape {tuple(one.shape[1:])} ({one.dtype}) take about {need / 2**30:.3g} GiB, "
            f"more than half of this machine's {memory / 2**30:.3g} GiB; draw them in chunks"
        )


def evaluate(
    model: Any,
    x: Any,
    y: Any = None,
    *,
    num_samples: int | None = None,
    devices: int = 1,
    num_nodes: int = 1,
    device: str | torch.device | None = None,
    seed: int | None = 0,
) -> dict[str, torch.Tensor]:
    """Score every row of ``x`` with ``model.score_examples``, the rows split over
    ``devices * num_nodes`` processes; returns what one process's
    ``model.score_examples(x, y, num_samples=num_samples)`` returns.

    Process ``r`` calls ``model.score_examples(x_r, y_r, num_samples=num_samples)`` on its
    contiguous share of the rows (:func:`shard`), without gradients, seeded with
    ``seed + r``; each per-row score is concatenated over the processes in row order. So
    exact scores (a flow's or a mixture's log-likelihood, predictions) equal one process's
    up to float rounding, and Monte Carlo ones (bounds) are the same for the same ``seed``
    and process count. Processes are found or started as by :func:`sample`.

    Args:
        model: a pyrogen model (``score_examples(x, y, num_samples=...)`` returning a dict
            of per-row tensors, each (N_r, ...) for N_r rows).
        x: rows of shape (N, ...) (a tensor, numpy array or nested list).
        y: labels or contexts (N, ...) of the rows, split like them; None for none.
        num_samples: what ``score_examples`` draws per row (e.g. importance samples); None:
            the model's default.
        devices: processes per node; with ``device="cuda"`` one per GPU.
        num_nodes: machines; run the same call on each, with ``MASTER_ADDR``,
            ``MASTER_PORT`` and ``NODE_RANK`` set.
        device: where each process computes (``"cuda"``: the GPU of its local rank); the
            model is moved there. None: the model's device.
        seed: process ``r`` is seeded with ``seed + r`` (as ``pyro.set_rng_seed``); None
            draws from the current random state here (and from a seed drawn from it for
            spawned processes).

    Returns:
        score name -> per-row tensor (N, ...), on the CPU, in the rows' order.

    Raises:
        ValueError: a bad ``x``, ``y``, ``num_samples``, ``devices``, ``num_nodes`` or
            ``device`` (named); scores that are not one value per row; or the model's own
            error from any process.

    Example:
        >>> import torch, pyrogen
        >>> from pyrogen.infer import distributed
        >>> x = pyrogen.data.old_faithful()
        >>> gmm = pyrogen.GaussianMixture(2)
        >>> _ = pyrogen.fit(gmm, x, steps=5, progress=False)
        >>> scores = distributed.evaluate(gmm, x, num_samples=1)
        >>> scores["log_likelihood"].shape
        torch.Size([272])
    """
    rows = _as_rows(x, "x")
    if num_samples is not None:
        check_int("num_samples", num_samples)
    _check_method(model, "score_examples", "model")
    per_row = {} if y is None else {"y": _as_rows(y, "y", rows=rows.shape[0])}
    options = {"num_samples": num_samples}
    job = _Job("score", rows.shape[0], rows, per_row, options)
    return _run_sharded(model, job, devices, num_nodes, _device_of(model, device), seed)


def _device_of(model: Any, device: str | torch.device | None) -> str | torch.device:
    """``device``, or the device of the model's first parameter (the CPU without any)."""
    if device is not None:
        return device
    parameters = getattr(model, "parameters", None)
    first = next(iter(parameters()), None) if callable(parameters) else None
    return "cpu" if first is None else first.device


@dataclass(frozen=True)
class _Job:
    """What :func:`sample` or :func:`evaluate` asks every process to do (it must pickle)."""

    kind: str  # "sample" or "score" (score_examples)
    rows: int  # N, split by shard()
    data: torch.Tensor | None  # score: the rows (N, ...)
    per_row: dict[str, torch.Tensor]  # keyword -> (N, ...), split like the rows
    options: dict[str, Any]  # keywords for every process as they are


def _run_sharded(
    model: Any,
    job: _Job,
    devices: Any,
    num_nodes: Any,
    device: Any,
    seed: int | None,
) -> Any:
    """Run ``job`` here, in the current (or a launcher's) process group, or spawned."""
    devices = check_int("devices", devices)
    num_nodes = check_int("num_nodes", num_nodes)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"seed: expected an integer or None, got {seed!r}")
    try:
        place = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(
            f"device: expected a device such as 'cpu' or 'cuda', got {device!r}"
        ) from error
    if place.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: expected an available device, got {str(device)!r} (no CUDA)")
    world_size = devices * num_nodes
    where = join(world_size, place.type)
    if where.world_size > 1 or world_size == 1:
        return _run_job(model, job, place, seed, where)
    if seed is None:  # the spawned processes start from the same state: give them a seed
        seed = int(torch.randint(2**62, ()).item())
    job = _Job(
        job.kind,
        job.rows,
        None if job.data is None else job.data.cpu(),
        {name: value.cpu() for name, value in job.per_row.items()},
        job.options,
    )
    payload = spawn(
        _sharded_process,
        (model, job, str(place), seed),
        devices=devices,
        num_nodes=num_nodes,
        device_type=place.type,
    )
    if "error" in payload:
        raise _rebuilt_error(*payload["error"])
    return payload["values"]


def _sharded_process(model: Any, job: _Job, device: str, seed: int) -> dict[str, Any]:
    """One spawned process of :func:`sample` / :func:`evaluate`: its share, then all rows."""
    # Spawned processes receive CPU tensors in memory shared with the others: the model
    # must be this process's own before it is moved or used.
    model = copy.deepcopy(model)
    try:
        return {"values": _run_job(model, job, torch.device(device), seed, cluster())}
    except Exception as error:  # the parent re-raises it; a traceback from here says less
        return {"error": _error_record(error)}


def _run_job(model: Any, job: _Job, device: torch.device, seed: int | None, where: Cluster) -> Any:
    """This process's share of ``job``, then every process's rows in rank order (CPU)."""
    if where.world_size == 1:
        return _share_of_job(model, job, device, seed, where)
    try:
        value, failure = _share_of_job(model, job, device, seed, where), None
    except Exception as error:  # every process must reach the gather, or the others wait
        value, failure = None, _error_record(error)
    parts = all_gather_objects((value, failure), where)
    for rank, (_, record) in enumerate(parts):
        if record is not None:
            kind, message = record
            rows = shard(job.rows, Cluster(rank, where.world_size))
            place = (
                f"in process {rank} of {where.world_size}, on rows {rows.start}..{rows.stop - 1}"
            )
            raise _rebuilt_error(kind, f"{message} ({place} of {job.rows})")
    return _concatenated([part for part, _ in parts if part is not None])


def _share_of_job(
    model: Any, job: _Job, device: torch.device, seed: int | None, where: Cluster
) -> torch.Tensor | dict[str, torch.Tensor] | None:
    """This process's rows of ``job`` (None when it has none), on the CPU."""
    model.to(process_device(device, where))
    if seed is not None:
        pyro.set_rng_seed(seed + where.rank)
    part = shard(job.rows, where)
    count = part.stop - part.start
    if count == 0:  # fewer rows than processes
        return None
    keywords = {**job.options, **{name: v[part] for name, v in job.per_row.items()}}
    with torch.no_grad():
        if job.kind == "sample":
            return _per_row(model.sample(count, **keywords), count, model, "sample")
        scores = model.score_examples(job.data[part], **keywords)
    if not isinstance(scores, dict):
        raise ValueError(
            f"model: {type(model).__name__}.score_examples returned a {type(scores).__name__}; "
            "expected a dict of per-row tensors"
        )
    return {
        name: _per_row(value, count, model, f"score_examples[{name!r}]")
        for name, value in scores.items()
    }


def _per_row(value: Any, count: int, model: Any, what: str) -> torch.Tensor:
    """``value`` on the CPU, checked to be one value per row: a tensor (count, ...)."""
    if isinstance(value, torch.Tensor) and value.dim() >= 1 and len(value) == count:
        return value.detach().cpu()
    got = (
        f"shape {tuple(value.shape)}"
        if isinstance(value, torch.Tensor)
        else f"a {type(value).__name__}"
    )
    raise ValueError(
        f"model: {type(model).__name__}.{what} returned {got} for {count} rows; only one "
        f"value per row, a tensor of shape ({count}, ...), can be split over processes"
    )


def _concatenated(
    parts: list[torch.Tensor] | list[dict[str, torch.Tensor]],
) -> torch.Tensor | dict[str, torch.Tensor]:
    """The processes' per-row results in rank order: tensors, or dicts of them key by key."""
    if isinstance(parts[0], dict):
        return {name: torch.cat([part[name] for part in parts]) for name in parts[0]}
    return torch.cat(parts)


def _as_rows(value: Any, name: str, rows: int | None = None) -> torch.Tensor:
    """``value`` as a tensor of shape (N, ...), N >= 1 (or ``rows`` when given)."""
    if not isinstance(value, torch.Tensor):
        try:
            array = np.asarray(value)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{name}: expected an array of shape (N, ...), got {error}") from error
        if array.dtype == object or array.dtype.kind in "USV":
            raise ValueError(f"{name}: expected numbers, got an array of {array.dtype}")
        value = torch.as_tensor(array)
    expected = "(N, ...) with N >= 1" if rows is None else f"({rows}, ...)"
    if value.dim() == 0 or value.shape[0] == 0 or (rows is not None and value.shape[0] != rows):
        raise ValueError(f"{name}: expected shape {expected}, got {tuple(value.shape)}")
    return value


def _check_method(model: Any, method: str, name: str) -> None:
    if not callable(getattr(model, method, None)):
        raise ValueError(f"{name}: {type(model).__name__} has no method {method!r}")
    if not callable(getattr(model, "to", None)):
        raise ValueError(
            f"model: expected a pyrogen model (a torch module), got {type(model).__name__}"
        )


def _error_record(error: Exception) -> tuple[str, str]:
    """An exception as plain strings, which every process can unpickle."""
    kind = type(error)
    return f"{kind.__module__}.{kind.__qualname__}", str(error)


def _rebuilt_error(kind: str, message: str) -> Exception:
    """The exception of :func:`_error_record` again: built-in types as they were (a
    ValueError stays one), others as a RuntimeError naming the type."""
    module, _, name = kind.rpartition(".")
    builtin = getattr(builtins, name, None) if module == "builtins" else None
    if isinstance(builtin, type) and issubclass(builtin, Exception):
        try:
            return builtin(message)
        except TypeError:  # a built-in exception that takes other arguments
            pass
    return RuntimeError(f"{kind}: {message}")
