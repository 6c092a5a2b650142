"""CPU speed-up of data-parallel training: one process against two (``devices=2``).

Each family trains with ``pyrogen.fit`` on the same global batches of B rows three ways:
one process on one thread, one process on two threads (PyTorch's own intra-op parallelism,
the alternative to more processes), and two DDP processes on one thread each
(``strategy="ddp", devices=2``: each scores B / 2 rows, gloo averages the gradients). Data:
``scale_gpu``'s 60,000 synthetic 28 x 28 uniform images (throughput does not depend on the
pixel values).

* ``vae``: ``pyrogen.VAE()`` (MLP 784-400-50, Bernoulli), B = 256;
* ``flow``: ``pyrogen.FlowDensity((784,), "realnvp", transforms=5, hidden=(256, 256))``,
  B = 256;
* ``diffusion``: ``pyrogen.DiffusionVAE((1, 28, 28), 1000, likelihood="discretized")`` with
  its UNet (channels 16), B = 64.

Timing: a callback (it runs in the first process) stamps the clock after every step and
writes the stamps at the last one; the steady time per step is (last - first) / (S - 1), so
process start-up, set-up and the first step are left out. Images/s = B / steady step time,
the median of ``--repeats`` runs per layout (the layouts take turns).
The two-process runs pay one extra all-reduce per step for the callback's stop flag.

Usage::

    python benchmarks/scale_ddp.py            # about 10 minutes on 2 cores
    python benchmarks/scale_ddp.py --quick    # smoke test

Writes ``benchmarks/results/scale_ddp.json`` and ``.md`` (``--out`` to change the stem).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import pyrogen  # noqa: E402
from benchmarks import common  # noqa: E402
from benchmarks.scale_gpu import DATA_NOTE, synthetic_images  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
NAME = "scale_ddp"
#: family -> (batch size, steps per run, steps with --quick)
SETTINGS = {"vae": (256, 60, 8), "flow": (256, 40, 6), "diffusion": (64, 16, 4)}
#: (label, processes, threads per process)
LAYOUTS = (("1 process x 1 thread", 1, 1), ("1 process x 2 threads", 1, 2), ("2 processes", 2, 1))


class StepClock:
    """A picklable ``pyrogen.fit`` callback: stamps every step, writes the stamps at the end."""

    def __init__(self, path: str, steps: int) -> None:
        self.path, self.steps, self.stamps = path, steps, []

    def __call__(self, step: int, loss: float, model: Any) -> None:
        self.stamps.append(time.perf_counter())
        if step == self.steps:
            Path(self.path).write_text(json.dumps(self.stamps))


def build(family: str, seed: int) -> pyrogen.GenerativeModel:
    torch.manual_seed(seed)
    if family == "vae":
        return pyrogen.VAE()
    if family == "flow":
        return pyrogen.FlowDensity((784,), "realnvp", transforms=5, hidden=(256, 256))
    return pyrogen.DiffusionVAE((1, 28, 28), 1000, likelihood="discretized", channels=16)


def data_for(family: str, images: torch.Tensor) -> torch.Tensor:
    if family == "diffusion":
        return (images * 255).round().div(255).unsqueeze(1)
    return images.reshape(len(images), -1)


def time_run(family: str, x: torch.Tensor, processes: int, threads: int, args) -> dict[str, Any]:
    batch_size, steps, quick_steps = SETTINGS[family]
    steps = quick_steps if args.quick else steps
    torch.set_num_threads(threads * processes)  # spawn gives each process its share
    with tempfile.TemporaryDirectory() as folder:
        clock = StepClock(str(Path(folder) / "stamps.json"), steps)
        started = time.perf_counter()
        result = pyrogen.fit(
            build(family, args.seed),
            x,
            steps=steps,
            batch_size=batch_size,
            seed=args.seed,
            devices=processes,
            callbacks=[clock],
            progress=False,
        )
        wall = time.perf_counter() - started
        stamps = json.loads(Path(clock.path).read_text())
    step_s = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    return {
        "family": family,
        "processes": processes,
        "threads_per_process": threads,
        "batch_size": batch_size,
        "steps": steps,
        "steady_step_s": step_s,
        "images_per_s": batch_size / step_s,
        "wall_s": wall,
        "final_loss": result.final_loss,
    }


def markdown_report(payload: dict[str, Any]) -> str:
    machine = payload["machine"]
    lines = [
        "# Data-parallel speed-up on the CPU",
        "",
        f"Machine: {machine.get('cpu_model')}, {machine.get('usable_cpus')} usable cores; "
        f"{payload['data']}.",
        "",
        "| family | layout | batch | images/s | speed-up over 1 x 1 | steady step (s) |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for row in payload["rows"]:
        lines.append(
            f"| {row['family']} | {row['layout']} | {row['batch_size']} | "
            f"{row['images_per_s']:.1f} | {row['speed_up']:.2f} | {row['steady_step_s']:.4f} |"
        )
    effect = "the processes competed with other work for the cores, so speed-ups are low"
    lines += ["", *common.busy_machine_note(payload["summary"], machine, effect)]
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke test (a minute or two)")
    parser.add_argument("--families", default=",".join(SETTINGS), help="comma-separated")
    parser.add_argument("--repeats", type=int, default=3, help="runs per layout (median)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / NAME, help="output stem")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    started, load_before = time.perf_counter(), common.load_average()
    images = synthetic_images(args.seed)
    rows = []
    for family in args.families.split(","):
        x = data_for(family, images)
        runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in LAYOUTS}
        for round_ in range(args.repeats):
            # The layouts take turns, the order reversing every round, so that a change in
            # the machine's other load falls on all of them.
            for label, processes, threads in LAYOUTS[:: 1 if round_ % 2 == 0 else -1]:
                run = time_run(family, x, processes, threads, args)
                print(json.dumps({"layout": label, **run}), flush=True)
                runs[label].append(run)
        baseline = None
        for label, _, _ in LAYOUTS:
            ordered = sorted(runs[label], key=lambda run: run["steady_step_s"])
            row = {"layout": label, **ordered[len(ordered) // 2], "repeats": len(ordered)}
            baseline = baseline or row["images_per_s"]
            row["speed_up"] = row["images_per_s"] / baseline
            rows.append(row)
    payload = {
        **common.run_header(NAME, args),
        "data": DATA_NOTE,
        "rows": rows,
        "summary": common.run_summary(started, load_before),
    }
    written = common.write_results(args.out, payload, markdown_report(payload))
    print(written)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
