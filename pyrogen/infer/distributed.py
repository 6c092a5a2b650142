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
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pyrogen.data.validation import check_int

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
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy: expected one of {STRATEGIES}, got {strategy!r}")
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


def gather_rows(rows: torch.Tensor, where: Cluster) -> torch.Tensor:
    """Concatenate every process's ``rows`` (shapes (n_r, ...), n_r may differ) in rank order."""
    parts = all_gather_objects(rows.cpu(), where)
    return torch.cat(parts).to(rows.device)


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
        ValueError: more CUDA devices than this node has, or a multi-node run without
            ``MASTER_ADDR`` / ``MASTER_PORT`` / ``NODE_RANK``.
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
        mp.start_processes(
            _worker,
            args=(target, args, options, str(result)),
            nprocs=devices,
            join=True,
            start_method="spawn",
        )
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
    finally:
        dist.destroy_process_group()


def _backend(device_type: str) -> str:
    return "nccl" if device_type == "cuda" else "gloo"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
