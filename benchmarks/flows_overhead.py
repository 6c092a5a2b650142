"""One maximum-likelihood training step of ``pyrogen.FlowDensity`` against zuko used directly.

The reference is a deep copy of ``FlowDensity.flow`` (the same zuko flow, same weights),
trained on the same batches with the same ``torch.optim.Adam(lr=1e-3)`` and the same
objective, the negative log-likelihood of the batch scaled by N / B. ``FlowDensity`` is built
with ``standardize=False`` and both sides get the same pre-standardized data, so the
density is the flow itself on both sides.

Settings: NSF on 2-D and 8-D data, MAF on 8-D, RealNVP on 784-D, batch 256; synthetic data
(a seeded Gaussian mixture, standardized) with N = 10,000 rows.

* **raw step**: ``zero_grad``, ``model.loss.differentiable_loss(model.model, model.guide,
  xb, None, num_data=N)``, ``backward``, ``Adam.step`` on a fixed batch with Pyro validation
  off, against ``-(N / B) * flow().log_prob(xb).sum()`` on the copy. Median per-step time
  over alternating blocks of k steps (the order reverses every round), k set so a block
  lasts about ``--block-s``.
* **fit / loop**: whole ``pyrogen.fit(model, x, steps=S, batch_size=256)`` calls against a
  hand-written loop with a new Adam, a seeded ``randperm`` shuffle and ``loss.item()`` per
  step; wall time per step, per-call work included.
* **same loss**: both losses on one batch from identical weights, and their gradients.

Target: pyrogen / reference <= 1.05 per raw step.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (  # noqa: E402
    git_revision,
    load_averages,
    machine_info,
    markdown_table,
    set_threads,
    text_table,
    thread_info,
    time_interleaved,
    utc_timestamp,
    versions,
    write_json_atomic,
    write_text_atomic,
)

RESULTS = Path(__file__).resolve().parent / "results"
SETTINGS = ("nsf:2", "nsf:8", "maf:8", "realnvp:784")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke test (< 1 min)")
    parser.add_argument("--settings", default=",".join(SETTINGS), help="flow:D,...")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--transforms", type=int, default=5)
    parser.add_argument("--hidden", default="128,128")
    parser.add_argument("--repeats", type=int, default=None, help="timed blocks (full 15)")
    parser.add_argument("--block-s", type=float, default=None, help="full 0.3")
    parser.add_argument("--fit-steps", type=int, default=None, help="full 50")
    parser.add_argument("--fit-repeats", type=int, default=None, help="full 3")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS / "flows_overhead"))
    args = parser.parse_args(argv)
    full = {"repeats": 15, "block_s": 0.3, "fit_steps": 50, "fit_repeats": 3}
    quick = {"repeats": 3, "block_s": 0.1, "fit_steps": 5, "fit_repeats": 1}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.quick and args.settings == ",".join(SETTINGS):
        args.settings = "nsf:2,realnvp:784"
    return args


def make_data(features: int, rows: int, seed: int):
    """A standardized 4-component Gaussian mixture with random correlations."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    means = 3 * torch.randn(4, features, generator=gen)
    mixing = torch.randn(4, features, features, generator=gen) / features**0.5
    labels = torch.randint(4, (rows,), generator=gen)
    noise = torch.randn(rows, features, generator=gen)
    x = means[labels].clone()
    for k in range(4):
        rows_k = labels == k
        x[rows_k] += noise[rows_k] @ mixing[k].T
    return (x - x.mean(0)) / x.std(0)


def run_setting(kind: str, features: int, args) -> dict:
    import pyro
    import torch

    import pyrogen

    hidden = tuple(int(h) for h in args.hidden.split(","))
    x = make_data(features, args.rows, args.seed)
    n, b = x.shape[0], args.batch_size
    torch.manual_seed(args.seed)
    model = pyrogen.FlowDensity(
        (features,), kind, transforms=args.transforms, hidden=hidden, standardize=False
    )
    model.setup(x)
    reference = copy.deepcopy(model.flow)
    xb = x[:b]

    def pyrogen_loss(batch):
        return model.loss.differentiable_loss(model.model, model.guide, batch, None, num_data=n)

    def reference_loss(batch):
        return -(n / batch.shape[0]) * reference().log_prob(batch).sum()

    # --- same loss and gradients from identical weights -------------------------------------
    with pyro.validation_enabled(False):
        model.zero_grad()
        reference.zero_grad()
        lp = pyrogen_loss(xb)
        lp.backward()
        lr_ = reference_loss(xb)
        lr_.backward()
    grads_p = torch.cat([p.grad.flatten() for p in model.flow.parameters()])
    grads_r = torch.cat([p.grad.flatten() for p in reference.parameters()])
    same = {
        "pyrogen_loss": lp.item(),
        "reference_loss": lr_.item(),
        "loss_rel_diff": abs(lp.item() - lr_.item()) / abs(lr_.item()),
        "grad_rel_diff": ((grads_p - grads_r).norm() / grads_r.norm()).item(),
    }

    # --- raw steps in alternating blocks ------------------------------------------------------
    opt_p = torch.optim.Adam(model.parameters(), lr=1e-3)
    opt_r = torch.optim.Adam(reference.parameters(), lr=1e-3)

    def step_p():
        opt_p.zero_grad()
        pyrogen_loss(xb).backward()
        opt_p.step()

    def step_r():
        opt_r.zero_grad()
        reference_loss(xb).backward()
        opt_r.step()

    with pyro.validation_enabled(False):
        for _ in range(3):
            step_p()
            step_r()
        started = time.perf_counter()
        for _ in range(3):
            step_r()
        per_step = (time.perf_counter() - started) / 3
        k = max(1, round(args.block_s / max(per_step, 1e-6)))

        def block(fn):
            def run():
                for _ in range(k):
                    fn()

            return run

        timings = time_interleaved(
            {"pyrogen": block(step_p), "reference": block(step_r)},
            args.repeats,
            alternate=True,
        )
    raw_p = timings["pyrogen"].median / k
    raw_r = timings["reference"].median / k
    cpu_p = sorted(timings["pyrogen"].cpu_times)[len(timings["pyrogen"].cpu_times) // 2] / k
    cpu_r = sorted(timings["reference"].cpu_times)[len(timings["reference"].cpu_times) // 2] / k

    # --- whole fit calls against a hand-written loop --------------------------------------------
    steps = args.fit_steps

    def fit_call():
        pyrogen.fit(model, x, steps=steps, batch_size=b, progress=False, seed=args.seed)

    def loop_call():
        opt = torch.optim.Adam(reference.parameters(), lr=1e-3)
        gen = torch.Generator().manual_seed(args.seed)
        order = torch.randperm(n, generator=gen)
        pos = 0
        for _ in range(steps):
            if pos + b > n:
                order, pos = torch.randperm(n, generator=gen), 0
            batch = x[order[pos : pos + b]]
            pos += b
            opt.zero_grad()
            loss = reference_loss(batch)
            loss.backward()
            opt.step()
            loss.item()

    fits = time_interleaved(
        {"pyrogen": fit_call, "reference": loop_call}, args.fit_repeats, warmup=1, alternate=True
    )
    fit_p = fits["pyrogen"].median / steps
    fit_r = fits["reference"].median / steps
    return {
        "setting": f"{kind} D={features}",
        "flow": kind,
        "features": features,
        "batch_size": b,
        "parameters": sum(p.numel() for p in reference.parameters()),
        "steps_per_block": k,
        "raw_pyrogen_ms": 1e3 * raw_p,
        "raw_reference_ms": 1e3 * raw_r,
        "raw_ratio": raw_p / raw_r,
        "raw_cpu_ratio": cpu_p / cpu_r,
        "fit_pyrogen_ms": 1e3 * fit_p,
        "fit_reference_ms": 1e3 * fit_r,
        "fit_ratio": fit_p / fit_r,
        "raw_timings": {name: t.as_dict() for name, t in timings.items()},
        "fit_timings": {name: t.as_dict() for name, t in fits.items()},
        **same,
    }


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


def main(argv=None) -> int:
    args = parse_args(argv)
    limiter = set_threads(args.threads)  # noqa: F841
    import os

    summary = {
        "benchmark": "flows_overhead",
        "timestamp": utc_timestamp(),
        "quick": args.quick,
        "settings": vars(args),
        "machine": machine_info(),
        "versions": versions(("torch", "pyro", "zuko", "numpy", "pyrogen")),
        "threads": thread_info(),
        "git": git_revision(),
        "load_average_before": list(os.getloadavg()),
    }
    started = time.perf_counter()
    rows = []
    for setting in args.settings.split(","):
        kind, features = setting.split(":")
        row = run_setting(kind, int(features), args)
        rows.append(row)
        print(
            f"{row['setting']:14s} raw {row['raw_pyrogen_ms']:.2f} / {row['raw_reference_ms']:.2f}"
            f" ms = {row['raw_ratio']:.3f}; fit {row['fit_ratio']:.3f}; "
            f"loss diff {row['loss_rel_diff']:.1e}",
            flush=True,
        )
    summary["load_average_after"] = list(os.getloadavg())
    summary["rows"] = rows
    summary["target"] = {
        "raw_ratio_max": 1.05,
        "met": {r["setting"]: r["raw_ratio"] <= 1.05 for r in rows},
    }
    summary["total_s"] = time.perf_counter() - started
    out = Path(args.out)
    write_json_atomic(out.with_suffix(".json"), summary)
    loads = load_averages(summary)
    text = [
        f"Batch {args.batch_size}, N = {args.rows}, {args.transforms} transforms, hidden "
        f"({args.hidden}), torch threads {args.threads}; raw step: median of {args.repeats} "
        f"alternating blocks; fit: median of {args.fit_repeats} calls of {args.fit_steps} "
        f"steps"
        + (" (quick mode: smoke test)" if args.quick else "")
        + ". Load average "
        + ", ".join(f"{v[0]:.1f}" for v in loads)
        + " (before, after).",
        "",
        markdown_table(rows, COLUMNS),
        "",
        "Target raw-step ratio <= 1.05: "
        + ", ".join(
            f"{s} {'met' if ok else 'NOT met'}" for s, ok in summary["target"]["met"].items()
        )
        + ".",
    ]
    write_text_atomic(out.with_suffix(".md"), "\n".join(text) + "\n")
    print(text_table(rows, COLUMNS))
    print(f"total {summary['total_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
