"""Helpers shared by the benchmark scripts: machine and version info, timing, peak memory,
atomic JSON output and tables.

Nothing here imports torch, sklearn or pyrogen at module level, so a memory-measuring
subprocess only pays for the libraries its own job imports.

Peak memory
-----------
:func:`peak_rss_of` runs one job in a fresh ``spawn`` subprocess and reports how much that
process's peak resident set size grows while the job runs, over a baseline taken after the
imports and after an optional ``prepare`` step (e.g. building the data). RSS covers every
allocator (numpy, torch's CPU allocator, BLAS workspaces), which ``tracemalloc`` does not.

On Linux, ``getrusage(RUSAGE_SELF).ru_maxrss`` in a spawned child is *not* usable on its own:
the kernel carries the parent's peak RSS across ``exec`` into the child's ``ru_maxrss``
(verified: a parent holding 1.6 GB makes a fresh child report 1.6 GB before it allocates
anything). So on Linux the child resets its high-water mark with
``/proc/self/clear_refs`` (``5``) right before the job, and reads ``VmHWM`` from
``/proc/self/status`` after it; ``ru_maxrss`` before/after is recorded as well, for
reference. Elsewhere (macOS) the ``ru_maxrss`` growth is used, which is a lower bound.
"""

from __future__ import annotations

import gc
import importlib
import json
import math
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

# --- machine and versions ----------------------------------------------------------------


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (Linux), else ``platform.processor()``."""
    text = _read("/proc/cpuinfo")
    if text:
        for line in text.splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _cgroup_cpu_limit() -> float | None:
    text = _read("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota> <period>" or "max <period>"
    if text:
        quota, period = text.split()[:2]
        if quota != "max":
            return int(quota) / int(period)
    return None


def total_ram_bytes() -> int | None:
    text = _read("/proc/meminfo")
    if text:
        for line in text.splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def machine_info(*, cuda: bool = False) -> dict[str, Any]:
    """CPU model, core counts (logical, usable by this process, cgroup quota), RAM, OS.

    Args:
        cuda: also describe the CUDA devices (imports torch).
    """
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    ram = total_ram_bytes()
    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "cgroup_cpu_limit": _cgroup_cpu_limit(),
        "ram_bytes": ram,
        "ram_gib": None if ram is None else round(ram / 2**30, 1),
        "platform": platform.platform(),
        "machine": platform.machine(),
    }
    if cuda:
        import torch

        info["cuda_devices"] = (
            [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            if torch.cuda.is_available()
            else []
        )
        info["cuda_version"] = torch.version.cuda
    return info


def versions(
    packages: Sequence[str] = ("torch", "pyro", "sklearn", "numpy", "scipy", "pyrogen"),
) -> dict[str, str | None]:
    """``{"python": ..., package: version}``; a package that is not installed maps to None."""
    from importlib import metadata

    dist_names = {"pyro": "pyro-ppl", "sklearn": "scikit-learn"}
    result: dict[str, str | None] = {"python": platform.python_version()}
    for name in packages:
        try:
            module = importlib.import_module(name)
            version = getattr(module, "__version__", None)
        except ImportError:
            module, version = None, None
        if version is None:
            try:
                version = metadata.version(dist_names.get(name, name))
            except metadata.PackageNotFoundError:
                version = None
        result[name] = version
    return result


def git_revision(repo: str | os.PathLike | None = None) -> dict[str, Any]:
    """Commit hash and the tracked files modified since (untracked files are ignored)."""
    import subprocess

    cwd = str(repo or Path(__file__).resolve().parent.parent)
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None, "modified": []}
    modified = [line[3:] for line in dirty if line.strip()]
    return {"commit": head, "dirty": bool(modified), "modified": modified}


# --- threads -------------------------------------------------------------------------------


_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def set_threads(n: int | None, preload: Sequence[str] = ("numpy", "scipy.linalg", "torch")) -> Any:
    """Use ``n`` threads in torch and in every BLAS/OpenMP pool.

    Sets ``OMP_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` / ``MKL_NUM_THREADS`` (for libraries
    loaded later and for subprocesses), imports ``preload`` so that their thread pools exist
    (``threadpoolctl`` only limits libraries already loaded: scipy ships its own OpenBLAS, and
    limiting before ``import scipy`` leaves it at the machine's core count), then limits them.

    Returns the ``threadpoolctl`` limiter (keep a reference for the limit to hold), or None.
    ``n=None`` changes nothing.
    """
    if n is None:
        return None
    for name in _THREAD_ENV:
        os.environ[name] = str(n)
    for module in preload:
        try:
            importlib.import_module(module)
        except ImportError:
            pass
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits

        return threadpool_limits(limits=n)
    except ImportError:
        return None


def thread_info() -> dict[str, Any]:
    """Thread counts in use: torch intra-op threads and each BLAS/OpenMP pool."""
    info: dict[str, Any] = {}
    if "torch" in sys.modules:
        import torch

        info["torch_num_threads"] = torch.get_num_threads()
        info["torch_num_interop_threads"] = torch.get_num_interop_threads()
    try:
        from threadpoolctl import threadpool_info

        info["threadpools"] = [
            {k: pool.get(k) for k in ("user_api", "internal_api", "num_threads", "filepath")}
            for pool in threadpool_info()
        ]
    except ImportError:
        pass
    return info


# --- timing -------------------------------------------------------------------------------


@dataclass
class Timing:
    """Wall (and process CPU) times of repeated runs; ``result`` is what the last run returned.

    CPU time is this process's, all threads together: with 2 busy threads it approaches twice
    the wall time, and it is less inflated than wall time when other work shares the cores.
    """

    times: list[float] = field(default_factory=list)
    cpu_times: list[float] = field(default_factory=list)
    result: Any = None

    @property
    def best(self) -> float:
        return min(self.times)

    @property
    def best_cpu(self) -> float:
        return min(self.cpu_times)

    @property
    def median(self) -> float:
        ordered = sorted(self.times)
        mid = len(ordered) // 2
        return ordered[mid] if len(ordered) % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])

    def as_dict(self) -> dict[str, Any]:
        return {
            "best_s": self.best,
            "median_s": self.median,
            "times_s": list(self.times),
            "cpu_times_s": list(self.cpu_times),
        }


def _timed(fn: Callable[[], Any], sync: Callable[[], Any] | None, timing: Timing) -> None:
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    if sync is not None:
        sync()
    timing.times.append(time.perf_counter() - wall)
    timing.cpu_times.append(time.process_time() - cpu)
    timing.result = result


def time_best_of(
    fn: Callable[[], Any],
    repeats: int = 3,
    *,
    warmup: int = 0,
    sync: Callable[[], Any] | None = None,
) -> Timing:
    """Run ``fn()`` ``warmup`` + ``repeats`` times; time each of the last ``repeats``.

    Args:
        fn: the work to time (build and fit a model, ...).
        repeats: timed runs; report ``Timing.best`` (least disturbed by other load).
        warmup: untimed runs first (one-off costs such as lazy imports).
        sync: called before stopping the clock, e.g. ``torch.cuda.synchronize``.
    """
    return time_interleaved({"fn": fn}, repeats, warmup=warmup, sync=sync)["fn"]


def time_interleaved(
    fns: dict[str, Callable[[], Any]],
    repeats: int = 3,
    *,
    warmup: int = 0,
    sync: Callable[[], Any] | dict[str, Callable[[], Any] | None] | None = None,
    alternate: bool = False,
) -> dict[str, Timing]:
    """Time several competitors in turns (A B A B ...), so a burst of load from elsewhere
    on the machine hits them alike rather than all runs of one; best of ``repeats`` each.

    Args:
        fns: name -> work.
        repeats: timed rounds.
        warmup: untimed rounds first.
        sync: one callable for all, or name -> callable (``None``: no sync).
        alternate: reverse the order every other round (A B, B A, A B, ...), so that no
            competitor always runs right after the same other one (cache and allocator
            state, CPU frequency after a heavy run).
    """
    if repeats < 1:
        raise ValueError(f"repeats: expected a positive integer, got {repeats!r}")
    syncs = sync if isinstance(sync, dict) else {name: sync for name in fns}
    for _ in range(warmup):
        for name, fn in fns.items():
            fn()
            if syncs.get(name) is not None:
                syncs[name]()
    timings = {name: Timing() for name in fns}
    names = list(fns)
    for round_index in range(repeats):
        order = names[::-1] if alternate and round_index % 2 else names
        for name in order:
            _timed(fns[name], syncs.get(name), timings[name])
    return timings


# --- peak memory in a fresh process ----------------------------------------------------------


def _resolve(spec: str | Callable) -> Callable:
    if callable(spec):
        return spec
    module_name, _, qualname = spec.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


def _ru_maxrss_bytes() -> int:
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value if sys.platform == "darwin" else value * 1024  # bytes on macOS, KiB on Linux


def _proc_status_bytes(field_name: str) -> int | None:
    text = _read("/proc/self/status")
    if text:
        for line in text.splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    return None


def _reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark (Linux >= 4.0); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _rss_child(conn, fn_spec, args, kwargs, prepare_spec, prepare_args, threads, cuda) -> None:
    try:
        set_threads(threads, preload=())  # environment first, for the libraries still to load
        fn = _resolve(fn_spec)
        payload = _resolve(prepare_spec)(*prepare_args) if prepare_spec is not None else None
        limiter = set_threads(threads, preload=())  # noqa: F841  (now the loaded pools too)
        gc.collect()
        torch = sys.modules.get("torch") if cuda else None
        if torch is not None and torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        ru_before = _ru_maxrss_bytes()
        reset = _reset_peak_rss()
        baseline = _proc_status_bytes("VmRSS") if reset else None
        started = time.perf_counter()
        result = fn(payload, *args, **kwargs) if prepare_spec is not None else fn(*args, **kwargs)
        if torch is not None and torch.cuda.is_available():
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - started
        ru_after = _ru_maxrss_bytes()
        peak = _proc_status_bytes("VmHWM") if reset else None
        report: dict[str, Any] = {
            "ok": True,
            "method": "VmHWM after clear_refs" if peak is not None else "ru_maxrss growth",
            "baseline_rss_bytes": baseline if baseline is not None else ru_before,
            "peak_rss_bytes": peak if peak is not None else ru_after,
            "ru_maxrss_before_bytes": ru_before,
            "ru_maxrss_after_bytes": ru_after,
            "wall_s": elapsed,
            "result": result,
        }
        report["growth_bytes"] = max(0, report["peak_rss_bytes"] - report["baseline_rss_bytes"])
        if torch is not None and torch.cuda.is_available():
            report["cuda_peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
        conn.send(report)
    except BaseException as error:  # report, never hang the parent
        import traceback

        conn.send(
            {
                "ok": False,
                "error": f"{type(error).__name__}: {error}",
                "traceback": traceback.format_exc(),
            }
        )
    finally:
        conn.close()


def peak_rss_of(
    fn_spec: str | Callable,
    *args: Any,
    prepare: str | Callable | None = None,
    prepare_args: Sequence[Any] = (),
    threads: int | None = None,
    cuda: bool = False,
    timeout: float | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Peak RSS growth of one call, measured in a fresh ``spawn`` subprocess.

    The child imports ``fn_spec`` ("module:qualname", or a picklable top-level function),
    runs ``prepare(*prepare_args)`` if given (its cost is excluded), then measures
    ``fn(prepared, *args, **kwargs)`` (or ``fn(*args, **kwargs)`` without ``prepare``).

    Args:
        fn_spec: the job.
        prepare: builds the job's input in the child (data, model), excluded from the peak.
        threads: thread limit for torch and BLAS in the child (``None``: library defaults).
        cuda: also report ``torch.cuda.max_memory_allocated`` over the job.
        timeout: seconds to wait for the child.

    Returns:
        ``{"ok", "growth_bytes", "peak_rss_bytes", "baseline_rss_bytes", "method",
        "ru_maxrss_before_bytes", "ru_maxrss_after_bytes", "wall_s", "result"}`` where
        ``result`` is the job's (picklable) return value; or ``{"ok": False, "error"}``.
    """
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(
        target=_rss_child,
        args=(sender, fn_spec, args, kwargs, prepare, tuple(prepare_args), threads, cuda),
    )
    process.start()
    sender.close()
    try:
        if not receiver.poll(timeout):
            process.kill()
            return {"ok": False, "error": f"timed out after {timeout} s"}
        report = receiver.recv()
    except EOFError:
        report = {
            "ok": False,
            "error": f"child exited with code {process.exitcode} without a report",
        }
    finally:
        process.join(timeout=30)
        if process.is_alive():
            process.kill()
            process.join()
    return report


# --- output -------------------------------------------------------------------------------


def run_header(
    name: str,
    args: Any,
    *,
    packages: Sequence[str] = ("torch", "pyro", "pyrogen"),
    cuda: bool = False,
) -> dict[str, Any]:
    """The fields every result JSON starts with: what ran, when, with which settings (paths
    as text), on which machine, package versions, threads and git revision."""
    settings = {k: str(v) if isinstance(v, os.PathLike) else v for k, v in vars(args).items()}
    return {
        "benchmark": name,
        "timestamp": utc_timestamp(),
        "quick": getattr(args, "quick", False),
        "settings": settings,
        "machine": machine_info(cuda=cuda),
        "versions": versions(tuple(packages)),
        "threads": thread_info(),
        "git": git_revision(),
    }


def utc_timestamp() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _json_default(value: Any) -> Any:
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    return value


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    return path


def run_summary(started: float, load_before: list[float] | None) -> dict[str, Any]:
    """A result's ``summary``: load averages around the run and its wall time (``started``:
    ``time.perf_counter()`` at the start)."""
    return {
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "total_s": time.perf_counter() - started,
    }


def write_results(out: str | os.PathLike, payload: dict[str, Any], markdown: str) -> str:
    """Write ``out``.json (``payload``) and ``out``.md (``markdown``); say where, and how long
    the run took (``payload["summary"]["total_s"]``)."""
    stem = Path(out)
    json_path = write_json_atomic(stem.with_suffix(".json"), payload)
    md_path = write_text_atomic(stem.with_suffix(".md"), markdown)
    return f"wrote {json_path} and {md_path} in {payload['summary']['total_s']:.1f} s"


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically (NaN/inf become null, so it is strict JSON)."""
    text = json.dumps(_finite_or_none(obj), indent=2, default=_json_default, allow_nan=False)
    return write_text_atomic(path, text + "\n")


Column = tuple  # (key, header) or (key, header, format spec or callable)


def _cell(row: dict[str, Any], column: Column) -> str:
    key, _header, *rest = column
    value = row.get(key)
    if value is None:
        return ""
    fmt = rest[0] if rest else None
    if callable(fmt):
        return fmt(value)
    if fmt is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, fmt)
    return str(value)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    """A GitHub-flavoured markdown table; numbers right-aligned, ``|`` escaped."""
    cells = [[_cell(row, column).replace("|", "\\|") for column in columns] for row in rows]
    numeric = [
        all(isinstance(row.get(col[0]), (int, float)) or row.get(col[0]) is None for row in rows)
        for col in columns
    ]
    lines = [
        "| " + " | ".join(col[1] for col in columns) + " |",
        "|" + "|".join("---:" if num else ":---" for num in numeric) + "|",
    ]
    lines += ["| " + " | ".join(line) + " |" for line in cells]
    return "\n".join(lines)


def text_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    """The same table as :func:`markdown_table`, padded for a terminal."""
    cells = [[_cell(row, column) for column in columns] for row in rows]
    headers = [col[1] for col in columns]
    widths = [max([len(h)] + [len(line[i]) for line in cells]) for i, h in enumerate(headers)]

    def fmt(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if i else v.ljust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        )

    return "\n".join(
        [fmt(headers), "  ".join("-" * w for w in widths)] + [fmt(line) for line in cells]
    )


def format_bytes(value: float | None) -> str:
    if value is None:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(value)


def load_averages(summary: dict[str, Any]) -> list[list[float]]:
    """The load averages recorded before and after a run (those that were read)."""
    readings = (summary.get("load_average_before"), summary.get("load_average_after"))
    return [v for v in readings if v]


def machine_was_busy(loads: list[list[float]], machine: dict[str, Any]) -> bool:
    """Whether the 1-minute load exceeded the usable cores around the run."""
    return bool(loads) and max(v[0] for v in loads) > (machine.get("usable_cpus") or 1)


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (other work on the machine skews timings); None
    where the platform has none."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def busy_machine_note(summary: dict[str, Any], machine: dict[str, Any], effect: str) -> list[str]:
    """A report's footnote when the machine was shared during the run, saying ``effect``
    (what that did to the numbers); no lines otherwise."""
    loads = load_averages(summary)
    if not machine_was_busy(loads, machine):
        return []
    return [
        f"*The machine was shared: 1-minute load average {loads[0][0]} before and "
        f"{loads[-1][0]} after the run on {machine['usable_cpus']} cores; {effect}*",
        "",
    ]
