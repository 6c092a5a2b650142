"""CPU speed-up of data-parallel training: one process against two (``devices=2``).

Each family trains with ``pyrogen.fit`` on the same global batches of B rows three ways: one
process on one thread, one process on two threads (PyTorch's own intra-op parallelism, the
alternative to more processes), and two DDP processes on one thread each (``devices=2``: each
scores B / 2 rows, gloo averages the gradients). Data: 60,000 synthetic 28 x 28 uniform images
(throughput does not depend on the pixel values).

* ``vae``: ``pyrogen.VAE(data_shape=(784,))`` (MLP 784-400-50, Bernoulli), B = 256;
* ``flow``: ``pyrogen.FlowDensity((784,), "realnvp", transforms=5, hidden=(256, 256))``, B = 256;
* ``diffusion``: ``pyrogen.DiffusionVAE((1, 28, 28), 1000, likelihood="discretized")`` with its
  UNet (channels 16), B = 64.

A callback (it runs in the first process) stamps the clock after every step and writes the
stamps at the last one; the steady time per step is (last - first) / (S - 1), so start-up,
set-up and the first step are left out. Images/s = B / steady step time, the median of
``--repeats`` runs per layout (the layouts take turns). The two-process runs pay one extra
all-reduce per step for the callback's stop flag.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import pyrogen
from benchmarks import harness

SETTINGS = {"vae": (256, 60), "flow": (256, 40), "diffusion": (64, 16)}  # batch, steps
LAYOUTS = (("1 process x 1 thread", 1, 1), ("1 process x 2 threads", 1, 2), ("2 processes", 2, 1))
COLUMNS = [
    ("family", "family"),
    ("layout", "layout"),
    ("batch_size", "batch"),
    ("images_per_s", "images/s", ".1f"),
    ("speed_up", "speed-up over 1 x 1", ".2f"),
    ("steady_step_s", "steady step (s)", ".4f"),
]


class StepClock:
    """A picklable ``pyrogen.fit`` callback: stamps every step, writes the stamps at the end."""

    def __init__(self, path: str, steps: int) -> None:
        self.path, self.steps, self.stamps = path, steps, []

    def __call__(self, step: int, loss: float, model: Any) -> None:
        self.stamps.append(time.perf_counter())
        if step == self.steps:
            Path(self.path).write_text(json.dumps(self.stamps))


def build(family: str, seed: int):
    torch.manual_seed(seed)
    if family == "vae":
        return pyrogen.VAE(data_shape=(784,))
    if family == "flow":
        return pyrogen.FlowDensity((784,), "realnvp", transforms=5, hidden=(256, 256))
    return pyrogen.DiffusionVAE((1, 28, 28), 1000, likelihood="discretized", channels=16)


def steady_step(family: str, x, steps: int, processes: int, threads: int, seed: int) -> float:
    """Seconds per step between the first and the last of one ``pyrogen.fit`` call."""
    torch.set_num_threads(threads * processes)  # spawn gives each process its share
    with tempfile.TemporaryDirectory() as folder:
        clock = StepClock(str(Path(folder) / "stamps.json"), steps)
        pyrogen.fit(
            build(family, seed),
            x,
            steps=steps,
            batch_size=SETTINGS[family][0],
            seed=seed,
            devices=processes,
            callbacks=[clock],
            progress=False,
        )
        stamps = json.loads(Path(clock.path).read_text())
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1)


def main(argv=None) -> int:
    options = harness.parser(__doc__)
    options.add_argument("--families", default=None, help="vae,flow,diffusion")
    options.add_argument("--steps", type=int, default=None, help="per run (60, 40, 16)")
    options.add_argument("--repeats", type=int, default=None, help="runs per layout (3)")
    run = harness.start(
        "scale_ddp",
        options,
        argv,
        full={"families": "vae,flow,diffusion", "repeats": 3},
        quick={"families": "vae", "repeats": 1, "steps": 3},
    )
    args = run.args
    images = torch.rand(60_000, 28, 28, generator=torch.Generator().manual_seed(args.seed))
    rows = []
    for family in args.families.split(","):
        batch, steps = SETTINGS[family][0], args.steps or SETTINGS[family][1]
        x = (
            (images * 255).round().div(255).unsqueeze(1)
            if family == "diffusion"
            else images.flatten(1)
        )
        times: dict[str, list[float]] = {label: [] for label, _, _ in LAYOUTS}
        for round_ in range(args.repeats):  # turns, the order reversing every round
            for label, processes, threads in LAYOUTS[:: -1 if round_ % 2 else 1]:
                times[label].append(steady_step(family, x, steps, processes, threads, args.seed))
        baseline = statistics.median(times[LAYOUTS[0][0]])
        for label, _, _ in LAYOUTS:
            step_s = statistics.median(times[label])
            rows.append(
                {
                    "family": family,
                    "layout": label,
                    "batch_size": batch,
                    "steps": steps,
                    "steady_step_s": step_s,
                    "images_per_s": batch / step_s,
                    "speed_up": baseline / step_s,
                }
            )
    run.write(
        "Data-parallel speed-up on the CPU",
        [harness.Table(rows, COLUMNS)],
        notes=[
            "Synthetic 28 x 28 uniform images; median of "
            f"{args.repeats} runs per layout; steady steps only."
        ],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
