"""One maximum-likelihood training step of ``pyrogen.FlowDensity`` against zuko used directly
on a deep copy of the same flow, in the same run.

``FlowDensity`` is built with ``standardize=False`` and both sides get the same standardized
data, so the density is the flow itself on both sides; both train with
``torch.optim.Adam(lr=1e-3)`` on -(N / B) sum log p(x_b) (``references.flow_loss``).
Settings: NSF on 2-D and 8-D data, MAF on 8-D, RealNVP on 784-D, batch 256, N = 10,000 rows
of a seeded Gaussian mixture.

* **raw step**: ``zero_grad``, loss, ``backward``, ``Adam.step`` on a fixed batch with Pyro
  validation off; median per-step time over alternating blocks.
* **fit / loop**: whole ``pyrogen.fit(model, x, steps=S, batch_size=256)`` calls against
  ``references.train_loop``; wall time per step, per-call work included.
* **same loss**: both losses and gradients on one batch from identical weights.

Target: pyrogen / reference <= 1.05 per raw step.
"""

from __future__ import annotations

import copy

import pyro
import torch

import pyrogen
from benchmarks import harness, references

SETTINGS = "nsf:2,nsf:8,maf:8,realnvp:784"
COLUMNS = [
    ("setting", "setting"),
    ("parameters", "params"),
    ("raw_pyrogen_ms", "pyrogen step ms", ".2f"),
    ("raw_reference_ms", "zuko step ms", ".2f"),
    ("raw_ratio", "ratio", ".3f"),
    ("raw_cpu_ratio", "CPU-time ratio", ".3f"),
    ("fit_pyrogen_ms", "fit ms/step", ".2f"),
    ("fit_reference_ms", "loop ms/step", ".2f"),
    ("fit_ratio", "fit ratio", ".3f"),
    ("loss_rel_diff", "loss rel. diff", ".1e"),
    ("grad_rel_diff", "grad rel. diff", ".1e"),
]


def mixture_data(features: int, rows: int, seed: int) -> torch.Tensor:
    """A standardized 4-component Gaussian mixture with random correlations."""
    gen = torch.Generator().manual_seed(seed)
    means = 3 * torch.randn(4, features, generator=gen)
    mixing = torch.randn(4, features, features, generator=gen) / features**0.5
    labels = torch.randint(4, (rows,), generator=gen)
    noise = torch.randn(rows, features, 1, generator=gen)
    x = means[labels] + (mixing[labels] @ noise).squeeze(-1)
    return (x - x.mean(0)) / x.std(0)


def run_setting(kind: str, features: int, run: harness.Run) -> dict:
    args = run.args
    hidden = tuple(int(h) for h in args.hidden.split(","))
    x = mixture_data(features, args.rows, args.seed).to(run.device)
    n, b = x.shape[0], args.batch_size
    torch.manual_seed(args.seed)
    model = pyrogen.FlowDensity(
        (features,), kind, transforms=args.transforms, hidden=hidden, standardize=False
    ).to(run.device)
    model.setup(x)
    flow = copy.deepcopy(model.flow)
    batch = x[:b]

    def pyrogen_loss():
        return references.pyro_loss(model, batch, n)

    def reference_loss():
        return references.flow_loss(flow, batch, n)

    with pyro.validation_enabled(False):
        same = references.same_loss(
            pyrogen_loss, reference_loss, model.flow.parameters(), flow.parameters()
        )
        raw = harness.time_steps(
            {
                "pyrogen": references.step_fn(model.parameters(), pyrogen_loss),
                "reference": references.step_fn(flow.parameters(), reference_loss),
            },
            args.repeats,
            args.block_s,
            sync=run.sync,
        )
    options = {"steps": args.fit_steps, "batch_size": b, "seed": args.seed}
    fits = harness.time_fit_calls(
        {
            "pyrogen": lambda stamps: references.pyrogen_fit(model, x, stamps=stamps, **options),
            "reference": lambda stamps: references.train_loop(
                flow, references.flow_loss, x, stamps=stamps, **options
            ),
        },
        args.fit_steps,
        args.fit_repeats,
        sync=run.sync,
    )
    p, r = raw["pyrogen"], raw["reference"]
    fp, fr = fits["pyrogen"]["whole_ms"], fits["reference"]["whole_ms"]
    return {
        "setting": f"{kind} D={features}",
        "parameters": sum(q.numel() for q in flow.parameters()),
        "raw_pyrogen_ms": p["ms"],
        "raw_reference_ms": r["ms"],
        "raw_ratio": p["ms"] / r["ms"],
        "raw_cpu_ratio": p["cpu_ms"] / r["cpu_ms"],
        "fit_pyrogen_ms": fp,
        "fit_reference_ms": fr,
        "fit_ratio": fp / fr,
        **same,
    }


def main(argv=None) -> int:
    options = harness.parser(__doc__)
    options.add_argument("--settings", default=None, help=f"flow:D,... ({SETTINGS})")
    options.add_argument("--batch-size", type=int, default=256)
    options.add_argument("--rows", type=int, default=None, help="10,000")
    options.add_argument("--transforms", type=int, default=None, help="5")
    options.add_argument("--hidden", default="128,128")
    options.add_argument("--repeats", type=int, default=None, help="timed blocks (15)")
    options.add_argument("--block-s", type=float, default=None, help="seconds per block (0.3)")
    options.add_argument("--fit-steps", type=int, default=None, help="50")
    options.add_argument("--fit-repeats", type=int, default=None, help="3")
    run = harness.start(
        "flows_overhead",
        options,
        argv,
        full={"settings": SETTINGS, "rows": 10_000, "transforms": 5, "repeats": 15}
        | {"block_s": 0.3, "fit_steps": 50, "fit_repeats": 3},
        quick={"settings": "nsf:2", "rows": 1024, "transforms": 2, "repeats": 3}
        | {"block_s": 0.02, "fit_steps": 3, "fit_repeats": 1},
    )
    rows = []
    for setting in run.args.settings.split(","):
        kind, features = setting.split(":")
        rows.append(run_setting(kind, int(features), run))
    run.write(
        "FlowDensity training step vs zuko used directly",
        [harness.Table(rows, COLUMNS)],
        notes=[
            f"Batch {run.args.batch_size}, {run.args.transforms} transforms of hidden "
            f"({run.args.hidden}); raw step: median of {run.args.repeats} alternating blocks; "
            f"fit: {run.args.fit_steps}-step calls, median of {run.args.fit_repeats}."
        ],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
