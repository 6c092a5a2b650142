"""Peak memory and wall time of pyrogen's VAE: training next to a hand-written PyTorch loop, and
the K = 5000 importance-sampled test log-likelihood of the 10,000 MNIST test images.

Every number comes from one job in a fresh ``spawn`` subprocess (``common.peak_rss_of``): the
peak resident set size growth over a baseline taken after the imports, the data, the model
and a small untimed warm-up of the same code path on a throwaway copy (so lazy imports and
first-call allocations are not counted), and the job's wall time. With ``--device cuda`` also
``torch.cuda.max_memory_allocated`` over the job.

* **Training** (as in ``vae_overhead.py``): the MLP 784-400-50
  (``VAE((784,), latent_dim=50, hidden=(400,))``) and the conv networks
  (``VAE((1, 28, 28), latent_dim=50, encoder="conv", decoder="conv")``) at batch 128 and 512,
  ``--train-steps`` (100) steps on the 60k MNIST training images: ``pyrogen.fit(vae, x,
  steps=S, batch_size=B, progress=False)`` against the hand-written loop on deep copies of the
  same networks (``vae_overhead.reference_fit``: the same shuffling, Adam lr 1e-3,
  ``loss.item()`` per step). The 60k images (188 MB as float32) are part of the baseline.
* **Evaluation**: ``vae.log_likelihood(x, num_samples=5000)`` of the MLP 784-400-50 VAE on the
  10,000 test images (binarized once with ``--seed``), weights at initialization (the cost
  does not depend on their values). pyrogen chunks rows and samples; the sizes a naive,
  unchunked estimate would hold at once (all K x N decoder outputs, hidden activations and
  latents) are computed here, not run. Next to it, the hand-written chunked estimator of
  ``vae_quality.py`` on the first ``--reference-eval-rows`` (1000) images.

Usage::

    python benchmarks/vae_memory.py              # full run (~18 min on an idle core, 1 thread)
    python benchmarks/vae_memory.py --quick      # smoke test (< 1 min)
    python benchmarks/vae_memory.py --device cuda

Writes ``benchmarks/results/vae_memory.json`` and ``.md`` (``--out`` to change the stem).
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "benchmarks" / "results"
NAME = "vae_memory"
DEFAULT_MNIST = Path(os.environ.get("PYROGEN_DATA", REPO.parent / "shared" / "data")) / "mnist"

NETWORK_NAMES = ("mlp", "conv")
BATCH_SIZES = (128, 512)
IW_SAMPLES = 5000
EVAL_NETWORK = "mlp"  # 784-400-50
FLOAT32 = 4
MIB = 2**20


# --- jobs (run in the child process) ---------------------------------------------------------


def _touch_cuda(device: str) -> None:
    if str(device).startswith("cuda"):
        import torch

        torch.zeros(1, device=device)  # the CUDA context outside the measurement


def _training_images(job: dict[str, Any]):
    import torch

    import pyrogen
    from benchmarks.vae_overhead import network_data

    root = Path(job["mnist"])
    if root.is_dir():
        images, _ = pyrogen.data.mnist(root, "train")
    elif job["allow_synthetic"]:
        images = torch.rand(60_000, 28, 28, generator=torch.Generator().manual_seed(job["seed"]))
    else:
        raise FileNotFoundError(f"MNIST not found in {root}")
    if job.get("n_train"):
        images = images[: job["n_train"]]
    return network_data(images, job["network"], job["device"])


def train_prepare(job: dict[str, Any]) -> dict[str, Any]:
    """Imports, data, the networks, and two warm-up steps of the same side on a throwaway copy."""
    from benchmarks.vae_overhead import build_pair, pyrogen_fit, reference_fit

    _touch_cuda(job["device"])
    x = _training_images(job)
    warm_vae, warm_nets = build_pair(job["network"], job["device"], job["seed"] + 1)
    warm = x[: min(2 * job["batch_size"], x.shape[0])]
    if job["side"] == "pyrogen":
        pyrogen_fit(warm_vae, warm, steps=2, batch_size=job["batch_size"], seed=job["seed"])
    else:
        reference_fit(warm_nets, warm, steps=2, batch_size=job["batch_size"], seed=job["seed"])
    del warm_vae, warm_nets, warm
    gc.collect()
    vae, nets = build_pair(job["network"], job["device"], job["seed"])
    return {"job": job, "x": x, "model": vae if job["side"] == "pyrogen" else nets}


def train_job(payload: dict[str, Any]) -> dict[str, Any]:
    from benchmarks.vae_overhead import pyrogen_fit, reference_fit

    job = payload["job"]
    run = pyrogen_fit if job["side"] == "pyrogen" else reference_fit
    losses = run(
        payload["model"],
        payload["x"],
        steps=job["steps"],
        batch_size=job["batch_size"],
        seed=job["seed"],
    )
    return {"steps": len(losses), "final_loss": losses[-1]}


def _test_images(job: dict[str, Any]):
    import torch

    import pyrogen

    root = Path(job["mnist"])
    if root.is_dir():
        images, _ = pyrogen.data.mnist(root, "test")
    elif job["allow_synthetic"]:
        images = torch.rand(10_000, 28, 28, generator=torch.Generator().manual_seed(job["seed"]))
    else:
        raise FileNotFoundError(f"MNIST not found in {root}")
    generator = torch.Generator().manual_seed(job["seed"])
    x = torch.bernoulli(images.reshape(images.shape[0], -1), generator=generator)
    return x[: job["rows"]].contiguous().to(job["device"])


def eval_prepare(job: dict[str, Any]) -> dict[str, Any]:
    """Imports, the test images, the VAE, and a tiny evaluation on the same code path."""
    import torch

    from benchmarks.vae_overhead import build_pair
    from benchmarks.vae_quality import reference_log_likelihood

    _touch_cuda(job["device"])
    x = _test_images(job)
    vae, nets = build_pair(EVAL_NETWORK, job["device"], job["seed"])
    generator = torch.Generator(device=job["device"]).manual_seed(job["seed"])
    if job["side"] == "pyrogen":
        vae.log_likelihood(x[:2], num_samples=8)
    else:
        reference_log_likelihood(nets, x[:2], 8, generator)
    gc.collect()
    return {"job": job, "x": x, "vae": vae, "nets": nets, "generator": generator}


def eval_job(payload: dict[str, Any]) -> dict[str, Any]:
    import torch

    from benchmarks.vae_quality import reference_log_likelihood

    job = payload["job"]
    if job["side"] == "pyrogen":
        torch.manual_seed(job["seed"])
        ll = payload["vae"].log_likelihood(payload["x"], num_samples=job["num_samples"])
    else:
        ll = reference_log_likelihood(
            payload["nets"], payload["x"], job["num_samples"], payload["generator"]
        )
    return {"rows": int(ll.shape[0]), "mean_log_likelihood": float(ll.mean())}


# --- what pyrogen chunks, and what a naive estimate would hold -------------------------------


def naive_sizes(rows: int, num_samples: int, data_dim: int, hidden: int, latent: int):
    """Bytes of the float32 tensors an unchunked K x N estimate would hold at once."""
    tensors = [
        ("decoder outputs (logits)", (num_samples, rows, data_dim)),
        ("decoder hidden activations", (num_samples, rows, hidden)),
        ("latent samples z", (num_samples, rows, latent)),
        ("log-weights", (num_samples, rows)),
    ]
    out = []
    for name, shape in tensors:
        nbytes = math.prod(shape) * FLOAT32
        out.append({"tensor": name, "shape": list(shape), "bytes": nbytes, "gib": nbytes / 2**30})
    return out


def pyrogen_chunks(rows: int, num_samples: int, data_dim: int) -> dict[str, Any] | None:
    """The row and sample chunks ``VAE.log_likelihood`` uses (from its element budget)."""
    from pyrogen.models import vae as vae_module

    elements = getattr(vae_module, "_EVAL_ELEMENTS", None)
    if elements is None:
        return None
    rows_per_chunk = max(1, min(rows, elements // (data_dim * min(num_samples, 256))))
    samples_per_chunk = max(1, elements // (data_dim * rows_per_chunk))
    return {
        "element_budget": elements,
        "rows_per_chunk": rows_per_chunk,
        "samples_per_chunk": samples_per_chunk,
        "logits_chunk_bytes": rows_per_chunk * min(samples_per_chunk, num_samples) * data_dim * 4,
    }


# --- report ----------------------------------------------------------------------------------


def _mib(value: float | None) -> float | None:
    return None if value is None else value / MIB


TRAIN_COLUMNS = [
    ("network_label", "network"),
    ("batch_size", "batch", "d"),
    ("steps", "steps", "d"),
    ("pyrogen_rss_mib", "peak RSS growth pyrogen MiB", ".1f"),
    ("reference_rss_mib", "peak RSS growth reference MiB", ".1f"),
    ("rss_diff_mib", "difference MiB", "+.1f"),
    ("pyrogen_wall_s", "wall s pyrogen", ".2f"),
    ("reference_wall_s", "wall s reference", ".2f"),
    ("baseline_mib", "baseline RSS MiB", ".0f"),
]
EVAL_COLUMNS = [
    ("label", "estimator"),
    ("rows", "test images", ",d"),
    ("num_samples", "K", ",d"),
    ("rss_mib", "peak RSS growth MiB", ".1f"),
    ("wall_s", "wall s", ".1f"),
    ("ms_per_image", "ms / image", ".1f"),
    ("baseline_mib", "baseline RSS MiB", ".0f"),
]
NAIVE_COLUMNS = [
    ("tensor", "tensor (float32)"),
    ("shape_text", "shape"),
    ("gib", "GiB", ",.1f"),
]


def _cuda_columns(rows, columns, keys):
    if any(row.get(key) is not None for row in rows for key, _ in keys):
        return columns + [(key, header, ".1f") for key, header in keys]
    return columns


def markdown_report(payload) -> str:
    machine, versions, settings = payload["machine"], payload["versions"], payload["settings"]
    git = payload["git"]
    train_columns = _cuda_columns(
        payload["training"],
        TRAIN_COLUMNS,
        [
            ("pyrogen_cuda_mib", "CUDA peak pyrogen MiB"),
            ("reference_cuda_mib", "CUDA peak ref MiB"),
        ],
    )
    eval_columns = _cuda_columns(
        payload["evaluation"], EVAL_COLUMNS, [("cuda_mib", "CUDA peak MiB")]
    )
    naive = payload["naive"]
    total_naive = sum(t["gib"] for t in naive["tensors"])
    chunks = payload.get("pyrogen_chunks")
    lines = [
        "# pyrogen VAE: peak memory and wall time of training and of the K = 5000 evaluation",
        "",
        f"Run {payload['timestamp']} on {machine['cpu_model']} "
        f"({machine['usable_cpus']} usable cores, {machine['ram_gib']} GiB RAM), "
        f"{settings['threads']} thread(s), device `{settings['device']}`. "
        f"python {versions['python']}, torch {versions['torch']}, pyro {versions['pyro']}, "
        f"pyrogen {versions['pyrogen']}"
        + (
            f" (git {git['commit'][:10]}{', dirty' if git['dirty'] else ''})"
            if git.get("commit")
            else ""
        )
        + ".",
        "",
        "Each number is one job in a fresh `spawn` subprocess: peak RSS growth (VmHWM after "
        "`clear_refs`) over a baseline taken after imports, data, the model and a small "
        "warm-up of the same code path; wall time of the job. One job per number: repeated "
        "runs can differ by tens of MiB (allocator behaviour).",
        "",
        f"## Training ({settings['train_steps']} steps, {settings['num_train']:,} MNIST images "
        "in the baseline)",
        "",
        "`pyrogen.fit(vae, x, steps, batch_size, progress=False)` against the hand-written "
        "loop of `vae_overhead.py` on deep copies of the same networks (Adam lr 1e-3, the "
        "same shuffling).",
        "",
        common.markdown_table(payload["training"], train_columns),
        "",
        f"## Evaluation: `log_likelihood`, K = {settings['num_samples']:,}",
        "",
        f"MLP 784-400-50 VAE, binarized MNIST test images. pyrogen: "
        f"`vae.log_likelihood(x, num_samples={settings['num_samples']})`"
        + (
            f" (chunks of {chunks['rows_per_chunk']} images x {chunks['samples_per_chunk']} "
            f"samples, {chunks['logits_chunk_bytes'] / MIB:.0f} MiB of decoder outputs at a "
            "time)"
            if chunks
            else ""
        )
        + "; reference: the hand-written chunked estimator of `vae_quality.py` (100 images "
        "at a time, at most 2^23 decoder outputs).",
        "",
        common.markdown_table(payload["evaluation"], eval_columns),
        "",
        f"A naive, unchunked estimate for N = {naive['rows']:,} images and K = "
        f"{naive['num_samples']:,} would hold at once (computed, not run):",
        "",
        common.markdown_table(naive["tensors"], NAIVE_COLUMNS),
        "",
        f"In all {total_naive:,.0f} GiB (not counting temporaries such as the "
        f"softplus of the logits), against {payload['summary']['pyrogen_eval_rss_mib']:.0f} "
        f"MiB measured for pyrogen's chunked estimate on this machine with "
        f"{machine['ram_gib']} GiB of RAM.",
        "",
    ]
    lines += common.busy_machine_note(
        payload["summary"], machine, "wall times are inflated by other work, memory is not."
    )
    if settings["quick"]:
        lines += ["*Quick mode: a smoke test with few steps and images.*", ""]
    return "\n".join(lines)


# --- driver ----------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few steps and images (< 1 min)")
    parser.add_argument("--device", default="cpu", help="device, e.g. cuda (default cpu)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch and BLAS threads (default 1; 0: defaults)"
    )
    parser.add_argument(
        "--networks", default=",".join(NETWORK_NAMES), help="comma-separated: mlp, conv"
    )
    parser.add_argument("--batch-sizes", default=None, help="comma-separated (default 128,512)")
    parser.add_argument("--train-steps", type=int, default=None, help="steps per job (100)")
    parser.add_argument(
        "--eval-rows", type=int, default=None, help="test images of pyrogen's evaluation (10000)"
    )
    parser.add_argument(
        "--reference-eval-rows",
        type=int,
        default=None,
        help="test images of the hand-written estimator (1000; 0 skips it)",
    )
    parser.add_argument("--num-samples", type=int, default=IW_SAMPLES, help="K (default 5000)")
    parser.add_argument("--mnist", type=Path, default=DEFAULT_MNIST, help="MNIST IDX folder")
    parser.add_argument(
        "--allow-synthetic",
        action="store_true",
        help="uniform noise of MNIST's shape when MNIST is not found",
    )
    parser.add_argument("--n-train", type=int, default=None, help="use the first n images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--timeout", type=float, default=3600.0, help="seconds to wait for one job (3600)"
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS_DIR / NAME, help="output path stem (.json and .md)"
    )
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "batch_sizes": "128" if quick else ",".join(map(str, BATCH_SIZES)),
        "train_steps": 5 if quick else 100,
        "eval_rows": 100 if quick else 10_000,
        "reference_eval_rows": 100 if quick else 1000,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.networks = [n.strip() for n in args.networks.split(",") if n.strip()]
    if set(args.networks) - set(NETWORK_NAMES):
        parser.error(f"--networks: expected items from {NETWORK_NAMES}, got {args.networks}")
    args.batch_sizes = [int(b) for b in str(args.batch_sizes).split(",") if b.strip()]
    if args.threads == 0:
        args.threads = None
    return args


def _measure(fn: str, prepare: str, job: dict[str, Any], args) -> dict[str, Any]:
    report = common.peak_rss_of(
        f"benchmarks.vae_memory:{fn}",
        prepare=f"benchmarks.vae_memory:{prepare}",
        prepare_args=(job,),
        threads=args.threads,
        cuda=str(args.device).startswith("cuda"),
        timeout=args.timeout,
    )
    if not report.get("ok"):
        print(f"  {job}: {report.get('error')}\n{report.get('traceback', '')}", file=sys.stderr)
    return report


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    load_before = common.load_average()
    git = common.git_revision(REPO)
    if str(args.device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print("--device cuda: no CUDA device here", file=sys.stderr)
            return 2
    from benchmarks.vae_overhead import NETWORKS

    base = {
        "device": args.device,
        "seed": args.seed,
        "mnist": str(args.mnist),
        "allow_synthetic": args.allow_synthetic,
    }
    training, raw = [], []
    num_train = args.n_train or 60_000
    for network in args.networks:
        for batch_size in args.batch_sizes:
            row: dict[str, Any] = {
                "network": network,
                "network_label": NETWORKS[network]["label"],
                "batch_size": batch_size,
                "steps": args.train_steps,
            }
            for side in ("pyrogen", "reference"):
                job = {
                    **base,
                    "network": network,
                    "batch_size": batch_size,
                    "steps": args.train_steps,
                    "side": side,
                    "n_train": args.n_train,
                }
                print(f"training {network} B={batch_size} {side} ...", file=sys.stderr, flush=True)
                report = _measure("train_job", "train_prepare", job, args)
                raw.append({"job": job, "report": report})
                if not report.get("ok"):
                    continue
                row[f"{side}_rss_mib"] = report["growth_bytes"] / MIB
                row[f"{side}_wall_s"] = report["wall_s"]
                row[f"{side}_ms_per_step"] = 1e3 * report["wall_s"] / args.train_steps
                row[f"{side}_cuda_mib"] = _mib(report.get("cuda_peak_allocated_bytes"))
                row[f"{side}_final_loss"] = report["result"]["final_loss"]
                row["baseline_mib"] = report["baseline_rss_bytes"] / MIB
            if "pyrogen_rss_mib" in row and "reference_rss_mib" in row:
                row["rss_diff_mib"] = row["pyrogen_rss_mib"] - row["reference_rss_mib"]
            training.append(row)
            print(
                f"    RSS growth pyrogen {row.get('pyrogen_rss_mib', math.nan):.1f} MiB, "
                f"reference {row.get('reference_rss_mib', math.nan):.1f} MiB",
                file=sys.stderr,
                flush=True,
            )

    evaluation = []
    eval_jobs = [("pyrogen", args.eval_rows, "pyrogen VAE.log_likelihood")]
    if args.reference_eval_rows:
        eval_jobs.append(("reference", args.reference_eval_rows, "hand-written estimator"))
    for side, rows, label in eval_jobs:
        job = {**base, "side": side, "rows": rows, "num_samples": args.num_samples}
        print(f"evaluation {label}, {rows} images, K={args.num_samples} ...", file=sys.stderr)
        report = _measure("eval_job", "eval_prepare", job, args)
        raw.append({"job": job, "report": report})
        if not report.get("ok"):
            continue
        row = {
            "side": side,
            "label": label,
            "rows": report["result"]["rows"],
            "num_samples": args.num_samples,
            "rss_mib": report["growth_bytes"] / MIB,
            "wall_s": report["wall_s"],
            "ms_per_image": 1e3 * report["wall_s"] / report["result"]["rows"],
            "cuda_mib": _mib(report.get("cuda_peak_allocated_bytes")),
            "baseline_mib": report["baseline_rss_bytes"] / MIB,
            "mean_log_likelihood": report["result"]["mean_log_likelihood"],
        }
        evaluation.append(row)
        print(
            f"    RSS growth {row['rss_mib']:.1f} MiB, {row['wall_s']:.1f} s "
            f"({row['ms_per_image']:.1f} ms / image)",
            file=sys.stderr,
            flush=True,
        )
    hidden = NETWORKS[EVAL_NETWORK]["vae_kwargs"]["hidden"][0]
    naive_rows = 10_000
    tensors = naive_sizes(naive_rows, args.num_samples, 784, hidden, 50)
    for tensor in tensors:
        tensor["shape_text"] = " x ".join(f"{d:,}" for d in tensor["shape"])
    pyrogen_eval = next((r for r in evaluation if r["side"] == "pyrogen"), {})
    load_after = common.load_average()
    payload = {
        "benchmark": NAME,
        "timestamp": common.utc_timestamp(),
        "machine": common.machine_info(cuda=str(args.device).startswith("cuda")),
        "versions": common.versions(("torch", "pyro", "numpy", "pyrogen")),
        "git": git,
        "settings": {
            "quick": args.quick,
            "device": args.device,
            "threads": args.threads,
            "networks": {n: NETWORKS[n] for n in args.networks},
            "batch_sizes": args.batch_sizes,
            "train_steps": args.train_steps,
            "num_train": num_train,
            "eval_network": NETWORKS[EVAL_NETWORK],
            "eval_rows": args.eval_rows,
            "reference_eval_rows": args.reference_eval_rows,
            "num_samples": args.num_samples,
            "test_set": f"MNIST test images binarized once, torch.Generator seed {args.seed}",
            "weights": "at initialization (seed "
            f"{args.seed}); training and evaluation cost do not depend on their values",
            "method": "common.peak_rss_of: fresh spawn subprocess per job, VmHWM after "
            "clear_refs minus the RSS after imports, data, model and warm-up",
            "seed": args.seed,
        },
        "training": training,
        "evaluation": evaluation,
        "naive": {"rows": naive_rows, "num_samples": args.num_samples, "tensors": tensors},
        "pyrogen_chunks": pyrogen_chunks(args.eval_rows, args.num_samples, 784),
        "raw": raw,
        "summary": {
            "pyrogen_eval_rss_mib": pyrogen_eval.get("rss_mib", math.nan),
            "pyrogen_eval_wall_s": pyrogen_eval.get("wall_s", math.nan),
            "naive_total_gib": sum(t["gib"] for t in tensors),
            "max_training_rss_diff_mib": max(
                (r["rss_diff_mib"] for r in training if "rss_diff_mib" in r), default=None
            ),
            "load_average_before": load_before,
            "load_average_after": load_after,
            "total_s": time.perf_counter() - started,
        },
    }
    stem = Path(args.out)
    json_path = common.write_json_atomic(stem.with_suffix(".json"), payload)
    md_path = common.write_text_atomic(stem.with_suffix(".md"), markdown_report(payload))
    print(common.text_table(training, TRAIN_COLUMNS))
    print()
    print(common.text_table(evaluation, EVAL_COLUMNS))
    print(f"\nwrote {json_path} and {md_path} in {payload['summary']['total_s']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
