"""What every benchmark script shares: its options, the header of its results, JSON and
markdown output, timing in turns, and peak memory in a fresh process.

A script builds its options with :func:`parser`, starts with :func:`start` (threads, device,
clock) and ends with :meth:`Run.write`, which writes ``<out>/<name>.json`` and ``.md``::

    options = harness.parser(__doc__)
    options.add_argument("--steps", type=int, default=None)
    run = harness.start("my_benchmark", options, argv, full={"steps": 100}, quick={"steps": 5})
    rows = [...]
    run.write("Title", [harness.Table(rows, COLUMNS)], notes=["..."])

Nothing here imports torch at module level, so a memory-measuring subprocess pays only for the
libraries its own job imports.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import math
import os
import platform
import resource
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
# Real data sets (MNIST, ...) live beside the repository unless PYROGEN_DATA says otherwise.
DATA = Path(os.environ.get("PYROGEN_DATA", REPO.parent / "shared" / "data"))

# --- options and the run ----------------------------------------------------------------------


def parser(doc: str | None, *, threads: int = 1, device: str = "cpu") -> argparse.ArgumentParser:
    """The options every script takes; the script adds its own with ``add_argument``.

    Args:
        doc: the script's docstring; its first paragraph becomes the description.
        threads: default torch and BLAS threads (0 on the command line: library defaults).
        device: default device of the pyrogen side (and of the reference where it has one).
    """
    description = (doc or "").strip().split("\n\n")[0]
    options = argparse.ArgumentParser(description=description)
    options.add_argument("--quick", action="store_true", help="a tiny smoke run of the same code")
    options.add_argument("--out", type=Path, default=RESULTS, help="folder of the results")
    options.add_argument("--name", default=None, help="file stem of the results")
    options.add_argument("--threads", type=int, default=threads, help="torch and BLAS threads")
    options.add_argument("--device", default=device, help="e.g. cpu, cuda")
    options.add_argument("--seed", type=int, default=0)
    options.add_argument("--data-dir", type=Path, default=DATA, help="folder of mnist/, ...")
    return options


@dataclass
class Table:
    """Rows (dicts) shown as a markdown table; ``columns`` are ``(key, header[, format])``
    where format is a format spec or a callable of the value."""

    rows: list[dict[str, Any]]
    columns: Sequence[tuple]
    heading: str | None = None


@dataclass
class Run:
    """One benchmark run: its settings, clock, device, and where its results go."""

    name: str
    args: argparse.Namespace
    started: float = field(default_factory=time.perf_counter)
    load_before: list[float] | None = field(default_factory=lambda: load_average())
    limiter: Any = None

    @property
    def device(self) -> Any:
        import torch

        return torch.device(self.args.device)

    @property
    def sync(self) -> Callable[[], Any] | None:
        """``torch.cuda.synchronize`` on a GPU (call it before stopping a clock), else None."""
        import torch

        return torch.cuda.synchronize if self.device.type == "cuda" else None

    def header(self) -> dict[str, Any]:
        """The fields every result file starts with: what ran (the exact command), when, on
        which machine and device, with which versions, threads and settings."""
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(self.args).items()}
        return {
            "benchmark": self.name,
            "command": command(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "quick": self.args.quick,
            "device": self.args.device,
            "threads": thread_info(),
            "versions": versions(),
            "machine": machine_info(cuda=self.device.type == "cuda"),
            "git": git_revision(),
            "settings": settings,
            "load_average": {"before": self.load_before, "after": load_average()},
        }

    def write(
        self,
        title: str,
        tables: Sequence[Table],
        *,
        notes: Sequence[str] = (),
        data: dict[str, Any] | None = None,
    ) -> Path:
        """Write ``<out>/<name>.json`` (header, every table's rows, ``data``) and ``.md``
        (title, a header line, the tables, ``notes`` as paragraphs); print the tables.

        Returns the path of the JSON file.
        """
        head = self.header()
        head["total_s"] = time.perf_counter() - self.started
        payload = {
            **head,
            "tables": {t.heading or "rows": t.rows for t in tables},
            **(data or {}),
        }
        stem = Path(self.args.out) / self.args.name
        json_path = write_json_atomic(stem.with_suffix(".json"), payload)
        lines = [f"# {title}", "", header_line(head), ""]
        for table in tables:
            if table.heading:
                lines += [f"## {table.heading}", ""]
            lines += [markdown_table(table.rows, table.columns), ""]
            print(text_table(table.rows, table.columns), end="\n\n")
        lines += [note + "\n" for note in notes if note]
        if self.args.quick:
            lines.append("*Quick mode: a smoke run with tiny settings, not reference numbers.*\n")
        write_text_atomic(stem.with_suffix(".md"), "\n".join(lines).rstrip() + "\n")
        print(f"wrote {json_path} and .md in {head['total_s']:.1f} s")
        return json_path


def start(
    name: str | Callable[[argparse.Namespace], str],
    options: argparse.ArgumentParser,
    argv: Sequence[str] | None = None,
    *,
    full: dict[str, Any] | None = None,
    quick: dict[str, Any] | None = None,
) -> Run:
    """Parse the options, fill the ones left at None from ``quick`` or ``full``, set the
    threads (before torch loads its pools) and check the device.

    Args:
        name: the default file stem of the results: the script's name, or a function of the
            parsed options (for a mode that writes a result of its own).
        options: from :func:`parser`, with the script's own options added.
        full: defaults of options left at None in a full run.
        quick: defaults of options left at None with ``--quick``.
    """
    args = options.parse_args(argv)
    for key, value in ((quick if args.quick else full) or {}).items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.name = args.name or (name(args) if callable(name) else name)
    # Idle OpenMP threads that spin make a shared machine up to 20x slower; let them sleep.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    limiter = set_threads(args.threads or None)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: no CUDA device here")
    return Run(args.name, args, limiter=limiter)


def command() -> str:
    """The command line that ran this process, as ``python -m benchmarks.<script> ...``."""
    script = Path(sys.argv[0]).stem
    return " ".join(["python", "-m", f"benchmarks.{script}", *map(shlex.quote, sys.argv[1:])])


def header_line(head: dict[str, Any]) -> str:
    """One markdown paragraph: date, machine, device, threads, versions and the command."""
    machine, v = head["machine"], head["versions"]
    load = head["load_average"]
    busy = [x[0] for x in (load["before"], load["after"]) if x]
    return (
        f"Run {head['date']} on {machine['cpu_model']} ({machine['usable_cpus']} usable cores"
        + (f", 1-minute load {max(busy):.1f}" if busy else "")
        + f"), device `{head['device']}`, {head['threads'].get('torch_num_threads')} torch "
        f"thread(s); pyrogen {v['pyrogen']}, torch {v['torch']}, pyro {v['pyro']}. "
        f"Command: `{head['command']}`."
    )


# --- machine and versions ----------------------------------------------------------------------


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def _proc_field(path: str, name: str) -> int | None:
    """A ``name: <kB>`` field of a /proc file, in bytes."""
    for line in (_read(path) or "").splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) * 1024
    return None


def machine_info(*, cuda: bool = False) -> dict[str, Any]:
    """CPU model, logical and usable cores, RAM, platform (and the CUDA devices)."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in (_read("/proc/cpuinfo") or "").splitlines()
            if line.lower().startswith(("model name", "hardware", "cpu model"))
        ),
        platform.processor() or platform.machine(),
    )
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    ram = _proc_field("/proc/meminfo", "MemTotal")
    info: dict[str, Any] = {
        "cpu_model": cpu,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "ram_gib": None if ram is None else round(ram / 2**30, 1),
        "platform": platform.platform(),
    }
    if cuda:
        import torch

        info["cuda_devices"] = [
            torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())
        ]
        info["cuda_version"] = torch.version.cuda
    return info


def versions(
    packages: Sequence[str] = ("pyrogen", "torch", "pyro", "numpy", "sklearn", "zuko"),
) -> dict[str, str | None]:
    """``{"python": ..., package: version}``; None for a package that is not installed."""
    from importlib import metadata

    dist_names = {"pyro": "pyro-ppl", "sklearn": "scikit-learn"}
    result: dict[str, str | None] = {"python": platform.python_version()}
    for name in packages:
        try:
            result[name] = metadata.version(dist_names.get(name, name))
        except metadata.PackageNotFoundError:
            result[name] = None
    return result


def git_revision() -> dict[str, Any]:
    """The commit, and the tracked files modified since."""
    import subprocess

    def git(*words: str) -> str:
        return subprocess.run(
            ["git", *words], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout

    try:
        head = git("rev-parse", "HEAD").strip()
        modified = [line[3:] for line in git("status", "--porcelain", "-uno").splitlines()]
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "modified": []}
    return {"commit": head, "modified": modified}


def load_average() -> list[float] | None:
    """1, 5 and 15-minute load averages (other work on the machine skews timings)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


# --- threads ---------------------------------------------------------------------------------


def set_threads(n: int | None, preload: Sequence[str] = ("numpy", "scipy.linalg", "torch")) -> Any:
    """Use ``n`` threads in torch and in every BLAS/OpenMP pool (``None``: change nothing).

    Sets the thread variables (for libraries loaded later and for subprocesses), imports
    ``preload`` so their pools exist (``threadpoolctl`` limits only loaded libraries; scipy
    ships its own OpenBLAS), then limits them. Returns the limiter: keep a reference.
    """
    if n is None:
        return None
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(n)
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
    """Torch's intra-op threads and each BLAS/OpenMP pool's."""
    info: dict[str, Any] = {}
    if "torch" in sys.modules:
        info["torch_num_threads"] = sys.modules["torch"].get_num_threads()
    try:
        from threadpoolctl import threadpool_info

        info["threadpools"] = [
            {k: pool.get(k) for k in ("user_api", "internal_api", "num_threads")}
            for pool in threadpool_info()
        ]
    except ImportError:
        pass
    return info


# --- timing ----------------------------------------------------------------------------------


@dataclass
class Timing:
    """Wall and process CPU times of repeated runs; ``result``: what the last run returned.

    CPU time counts all threads; it is less inflated than wall time when other work shares
    the cores.
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
        return statistics.median(self.times)

    @property
    def median_cpu(self) -> float:
        return statistics.median(self.cpu_times)


def time_interleaved(
    fns: dict[str, Callable[[], Any]],
    repeats: int = 3,
    *,
    warmup: int = 0,
    sync: Callable[[], Any] | dict[str, Callable[[], Any] | None] | None = None,
    alternate: bool = True,
) -> dict[str, Timing]:
    """Time competitors in turns (A B, B A, ...) so that load from elsewhere hits them alike.

    Args:
        fns: name -> work.
        repeats: timed rounds.
        warmup: untimed rounds first (lazy imports, first-call dispatch).
        sync: called before each clock stops (one for all, or per name), e.g. CUDA's.
        alternate: reverse the order every other round, so no competitor always follows the
            same other one (caches, allocator, CPU frequency).
    """
    syncs = sync if isinstance(sync, dict) else {name: sync for name in fns}
    for _ in range(warmup):
        for name, fn in fns.items():
            fn()
            if syncs.get(name) is not None:
                syncs[name]()
    timings = {name: Timing() for name in fns}
    for round_index in range(repeats):
        order = list(fns)[::-1] if alternate and round_index % 2 else list(fns)
        for name in order:
            gc.collect()
            wall, cpu = time.perf_counter(), time.process_time()
            result = fns[name]()
            if syncs.get(name) is not None:
                syncs[name]()
            timings[name].times.append(time.perf_counter() - wall)
            timings[name].cpu_times.append(time.process_time() - cpu)
            timings[name].result = result
    return timings


def time_steps(
    steps: dict[str, Callable[[], Any]],
    repeats: int,
    block_s: float,
    *,
    sync: Callable[[], Any] | None = None,
    max_block: int = 200,
) -> dict[str, dict[str, float]]:
    """Per-step time of training-step functions: blocks of k steps taking turns, k set from
    the slowest step so that a block lasts about ``block_s``; medians over ``repeats`` blocks.

    Returns name -> ``{"ms", "cpu_ms", "best_ms", "block_steps"}``.
    """
    probe = []
    for step in steps.values():
        step()  # warm-up
        started = time.perf_counter()
        step()
        if sync is not None:
            sync()
        probe.append(time.perf_counter() - started)
    k = max(1, min(max_block, round(block_s / max(max(probe), 1e-6))))

    def block(step: Callable[[], Any]) -> Callable[[], None]:
        def run() -> None:
            for _ in range(k):
                step()

        return run

    timings = time_interleaved({n: block(s) for n, s in steps.items()}, repeats, sync=sync)
    return {
        name: {
            "ms": 1e3 * t.median / k,
            "cpu_ms": 1e3 * t.median_cpu / k,
            "best_ms": 1e3 * t.best / k,
            "block_steps": k,
        }
        for name, t in timings.items()
    }


def time_fit_calls(
    calls: dict[str, Callable[[list], Any]],
    steps: int,
    repeats: int,
    *,
    sync: Callable[[], Any] | None = None,
) -> dict[str, dict[str, float]]:
    """Whole training calls taking turns, each split into per-step and per-call costs.

    ``calls[name](stamps)`` runs ``steps`` steps, appending ``time.perf_counter()`` after each.
    ``whole_ms`` = wall / steps; ``steady_ms`` = (last stamp - first) / (steps - 1), the step
    once running; ``per_call_ms`` = wall - steps x steady (checks, set-up, the first step's
    extra work). Medians over ``repeats`` calls.
    """
    values: dict[str, dict[str, list[float]]] = {n: {"whole": [], "steady": []} for n in calls}
    walls: dict[str, list[float]] = {n: [] for n in calls}
    for round_index in range(repeats):
        for name in list(calls)[::-1] if round_index % 2 else list(calls):
            stamps: list[float] = []
            gc.collect()
            wall = time.perf_counter()
            calls[name](stamps)
            if sync is not None:
                sync()
            walls[name].append(time.perf_counter() - wall)
            values[name]["whole"].append(walls[name][-1] / steps)
            values[name]["steady"].append((stamps[-1] - stamps[0]) / max(1, len(stamps) - 1))
    out = {}
    for name, v in values.items():
        whole, steady = statistics.median(v["whole"]), statistics.median(v["steady"])
        out[name] = {
            "whole_ms": 1e3 * whole,
            "steady_ms": 1e3 * steady,
            "per_call_ms": 1e3 * steps * (whole - steady),
            "calls": len(v["whole"]),
        }
    return out


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``, or None where either is missing or ``b`` is 0."""
    return None if a is None or not b else a / b


def mean_and_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and its standard error (NaN for a single value)."""
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return mean, se


# --- peak memory in a fresh process -----------------------------------------------------------


def _resolve(spec: str | Callable) -> Callable:
    if callable(spec):
        return spec
    module_name, _, qualname = spec.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


def reset_peak_rss() -> int | None:
    """Reset this process's RSS high-water mark (Linux); its RSS now, or None if impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return None
    return _proc_field("/proc/self/status", "VmRSS")


def peak_rss() -> int | None:
    """This process's RSS high-water mark (``VmHWM``) in bytes, where Linux keeps it."""
    return _proc_field("/proc/self/status", "VmHWM")


def _rss_child(conn, fn_spec, args, prepare_spec, prepare_args, threads, cuda) -> None:
    try:
        set_threads(threads, preload=())  # the environment, for the libraries still to load
        fn = _resolve(fn_spec)
        payload = _resolve(prepare_spec)(*prepare_args) if prepare_spec is not None else None
        limiter = set_threads(threads, preload=())  # noqa: F841  (now the loaded pools too)
        gc.collect()
        torch = sys.modules.get("torch") if cuda else None
        if torch is not None:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        # ru_maxrss of a spawned child inherits the parent's peak across exec on Linux, so
        # reset the high-water mark and read VmHWM; ru_maxrss growth is the fallback.
        ru_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        baseline = reset_peak_rss()
        started = time.perf_counter()
        result = fn(payload, *args) if prepare_spec is not None else fn(*args)
        if torch is not None:
            torch.cuda.synchronize()
        report: dict[str, Any] = {"ok": True, "wall_s": time.perf_counter() - started}
        if baseline is not None:
            report["growth_bytes"] = max(0, (peak_rss() or 0) - baseline)
        else:
            ru_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            report["growth_bytes"] = max(0, ru_after - ru_before)
        if torch is not None:
            report["cuda_peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
        report["result"] = result
        conn.send(report)
    except BaseException as error:  # report it, never hang the parent
        conn.send({"ok": False, "error": f"{type(error).__name__}: {error}"})
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
) -> dict[str, Any]:
    """Peak RSS growth of one call, in a fresh ``spawn`` subprocess.

    The child runs ``prepare(*prepare_args)`` first (data, model, a warm-up: excluded from
    the peak), then measures ``fn(prepared, *args)`` (``fn(*args)`` without ``prepare``).
    Functions are picklable top-level functions or ``"module:qualname"`` strings.

    Returns ``{"ok", "growth_bytes", "wall_s", "result"}`` (and
    ``"cuda_peak_allocated_bytes"`` with ``cuda``), or ``{"ok": False, "error"}``.
    """
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(
        target=_rss_child,
        args=(sender, fn_spec, args, prepare, tuple(prepare_args), threads, cuda),
    )
    process.start()
    sender.close()
    try:
        if not receiver.poll(timeout):
            process.kill()
            return {"ok": False, "error": f"timed out after {timeout} s"}
        report = receiver.recv()
    except EOFError:
        report = {"ok": False, "error": f"child exited with code {process.exitcode}"}
    finally:
        process.join(timeout=30)
        if process.is_alive():
            process.kill()
            process.join()
    return report


# --- output ----------------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy / torch arrays and scalars
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
    """Write ``text`` through a temporary file and ``os.replace``: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.chmod(temporary, 0o644)  # mkstemp makes 0600
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented, strict JSON (NaN and inf become null)."""
    text = json.dumps(_finite_or_none(obj), indent=2, default=_json_default, allow_nan=False)
    return write_text_atomic(path, text + "\n")


def _cell(row: dict[str, Any], column: tuple) -> str:
    key, _header, *rest = column
    value = row.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    fmt = rest[0] if rest else None
    if callable(fmt):
        return fmt(value)
    if fmt is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, fmt)
    return str(value)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple]) -> str:
    """A GitHub-flavoured markdown table; numeric columns right-aligned, ``|`` escaped."""
    numeric = [
        all(isinstance(row.get(c[0]), (int, float, type(None))) for row in rows) for c in columns
    ]
    lines = [
        "| " + " | ".join(c[1] for c in columns) + " |",
        "|" + "|".join("---:" if num else ":---" for num in numeric) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row, c).replace("|", "\\|") for c in columns) + " |")
    return "\n".join(lines)


def text_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple]) -> str:
    """The table of :func:`markdown_table`, padded for a terminal."""
    cells = [[c[1] for c in columns]] + [[_cell(row, c) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join(
        "  ".join(
            v.rjust(w) if i else v.ljust(w)
            for i, (v, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in cells
    )


def format_bytes(value: float | None) -> str:
    """``1536`` -> ``"1.5 KiB"``; empty for None."""
    if value is None:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(value)


def plus_minus(value: float | None, se: float | None, digits: int = 2) -> str:
    """``"94.16 ± 0.26"`` (without the ± part where the error is unknown)."""
    if value is None:
        return ""
    text = f"{value:.{digits}f}"
    return text + (f" ± {se:.{digits}f}" if se is not None and math.isfinite(se) else "")


# --- data ------------------------------------------------------------------------------------


def mnist(
    args: argparse.Namespace,
    split: str = "train",
    rows: int | None = None,
    *,
    synthetic: bool = False,
) -> tuple[Any, Any, str]:
    """MNIST images (N, 28, 28) in [0, 1], labels and a description, from
    ``<--data-dir>/mnist``; the first ``rows`` only when given.

    With ``synthetic`` (timings, which do not depend on pixel values), uniform noise of that
    shape and zero labels stand in where MNIST is absent; otherwise its absence ends the run.
    """
    import torch

    import pyrogen

    root = Path(args.data_dir) / "mnist"
    if root.is_dir():
        images, labels = pyrogen.data.mnist(root, split)
        source = f"MNIST {split} ({root})"
    elif synthetic:
        count = rows or (60_000 if split == "train" else 10_000)
        images = torch.rand(count, 28, 28, generator=torch.Generator().manual_seed(args.seed))
        labels = torch.zeros(count, dtype=torch.long)
        source = "synthetic: uniform [0, 1] noise of MNIST's shape (MNIST not found)"
    else:
        raise SystemExit(f"MNIST not found in {root} (--data-dir, or PYROGEN_DATA)")
    if rows is not None:
        images, labels = images[:rows], labels[:rows]
    return images.contiguous(), labels, source
