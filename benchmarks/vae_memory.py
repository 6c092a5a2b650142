"""Peak memory and wall time of pyrogen's VAE: training next to the hand-written PyTorch loop,
and the K = 5000 importance-sampled log-likelihood of the 10,000 MNIST test images.

Every number comes from one job in a fresh ``spawn`` subprocess (``harness.peak_rss_of``): the
growth of the peak resident set over a baseline taken after the imports, the data, the model
and a two-step warm-up of the same code path on a throwaway copy; with ``--device cuda`` also
``torch.cuda.max_memory_allocated``.

* **Training**: the MLP 784-400-50 and conv VAEs of ``vae_overhead``, batch 128 and 512,
  ``--train-steps`` steps on the 60k training images (in the baseline): ``pyrogen.fit``
  against ``references.train_loop`` on deep copies of the same networks.
* **Evaluation**: ``vae.log_likelihood(x, num_samples=5000)`` of the MLP VAE (weights at
  initialization: the cost does not depend on them) on the test images binarized once, and
  the hand-written chunked estimator ``references.vae_log_likelihood`` on the first
  ``--reference-eval-rows``. The size of a naive, unchunked K x N estimate is computed, not run.
"""

from __future__ import annotations

import gc
from typing import Any

from benchmarks import harness

NETWORKS = {
    "mlp": {"data_shape": (784,), "latent_dim": 50, "hidden": (400,)},
    "conv": {"data_shape": (1, 28, 28), "latent_dim": 50, "encoder": "conv", "decoder": "conv"},
}
MIB = 2**20
TRAIN_COLUMNS = [
    ("network", "network"),
    ("batch_size", "batch"),
    ("steps", "steps"),
    ("pyrogen_mib", "peak RSS growth pyrogen MiB", ".1f"),
    ("reference_mib", "peak RSS growth reference MiB", ".1f"),
    ("pyrogen_s", "wall s pyrogen", ".2f"),
    ("reference_s", "wall s reference", ".2f"),
    ("pyrogen_cuda_mib", "CUDA peak pyrogen MiB", ".1f"),
]
EVAL_COLUMNS = [
    ("estimator", "estimator"),
    ("rows", "test images", ",d"),
    ("num_samples", "K", ",d"),
    ("mib", "peak RSS growth MiB", ".1f"),
    ("seconds", "wall s", ".1f"),
    ("ms_per_image", "ms / image", ".1f"),
]


# --- jobs, run in the child process ------------------------------------------------------------


def _vae(job: dict[str, Any], seed: int):
    import torch

    import pyrogen
    from benchmarks import references

    if str(job["device"]).startswith("cuda"):
        torch.zeros(1, device=job["device"])  # the CUDA context, outside the measurement
    torch.manual_seed(seed)
    vae = pyrogen.VAE(**NETWORKS[job["network"]]).to(job["device"])
    return vae, references.vae_networks(vae)


def _train(job: dict[str, Any], model, x, steps: int) -> list[float]:
    from benchmarks import references

    options = {"steps": steps, "batch_size": job["batch_size"], "seed": job["seed"]}
    if job["side"] == "pyrogen":
        return references.pyrogen_fit(model, x, **options).losses
    return references.train_loop(model, references.vae_loss, x, **options)


def train_prepare(job: dict[str, Any], x) -> dict[str, Any]:
    """The data, the model, and two warm-up steps of the same side on a throwaway copy."""
    x = x.reshape(-1, *NETWORKS[job["network"]]["data_shape"]).to(job["device"])
    warm_vae, warm_nets = _vae(job, job["seed"] + 1)
    _train(job, warm_vae if job["side"] == "pyrogen" else warm_nets, x[: 2 * job["batch_size"]], 2)
    del warm_vae, warm_nets
    gc.collect()
    vae, nets = _vae(job, job["seed"])
    return {"job": job, "x": x, "model": vae if job["side"] == "pyrogen" else nets}


def train_job(payload: dict[str, Any]) -> float:
    losses = _train(payload["job"], payload["model"], payload["x"], payload["job"]["steps"])
    return losses[-1]


def eval_prepare(job: dict[str, Any], x) -> dict[str, Any]:
    """The binarized test images, the VAE, and a tiny evaluation on the same code path."""
    import torch

    from benchmarks import references

    x = x.to(job["device"])
    vae, nets = _vae(job, job["seed"])
    generator = torch.Generator(device=job["device"]).manual_seed(job["seed"])
    if job["side"] == "pyrogen":
        vae.log_likelihood(x[:2], num_samples=8)
    else:
        references.vae_log_likelihood(nets, x[:2], 8, generator)
    gc.collect()
    return {"job": job, "x": x, "vae": vae, "nets": nets, "generator": generator}


def eval_job(payload: dict[str, Any]) -> float:
    import torch

    from benchmarks import references

    job, x = payload["job"], payload["x"]
    if job["side"] == "pyrogen":
        torch.manual_seed(job["seed"])
        ll = payload["vae"].log_likelihood(x, num_samples=job["num_samples"])
    else:
        ll = references.vae_log_likelihood(
            payload["nets"], x, job["num_samples"], payload["generator"]
        )
    return float(ll.mean())


# --- the driver ----------------------------------------------------------------------------------


def measure(run: harness.Run, job: dict[str, Any], x, kind: str) -> dict[str, Any]:
    report = harness.peak_rss_of(
        f"benchmarks.vae_memory:{kind}_job",
        prepare=f"benchmarks.vae_memory:{kind}_prepare",
        prepare_args=(job, x),
        threads=run.args.threads or None,
        cuda=run.device.type == "cuda",
        timeout=run.args.timeout,
    )
    if not report["ok"]:
        raise SystemExit(f"{kind} job {job} failed: {report['error']}")
    return report


def main(argv=None) -> int:
    import torch

    options = harness.parser(__doc__)
    options.add_argument("--networks", default=None, help="comma-separated: mlp, conv")
    options.add_argument("--batch-sizes", default=None, help="comma-separated (128,512)")
    options.add_argument("--train-steps", type=int, default=None, help="steps per job (100)")
    options.add_argument("--rows", type=int, default=None, help="training images (60,000)")
    options.add_argument("--eval-rows", type=int, default=None, help="test images (10,000)")
    options.add_argument("--reference-eval-rows", type=int, default=None, help="1000; 0: none")
    options.add_argument("--num-samples", type=int, default=None, help="K (5000)")
    options.add_argument("--timeout", type=float, default=3600.0, help="seconds per job")
    run = harness.start(
        "vae_memory",
        options,
        argv,
        full={
            "networks": "mlp,conv",
            "batch_sizes": "128,512",
            "train_steps": 100,
            "eval_rows": 10_000,
            "reference_eval_rows": 1000,
            "num_samples": 5000,
        },
        quick={
            "networks": "mlp",
            "batch_sizes": "64",
            "train_steps": 3,
            "rows": 512,
            "eval_rows": 10,
            "reference_eval_rows": 10,
            "num_samples": 20,
        },
    )
    args = run.args
    images, _, source = harness.mnist(args, "train", args.rows, synthetic=True)
    test, _, _ = harness.mnist(args, "test", args.eval_rows, synthetic=True)
    generator = torch.Generator().manual_seed(args.seed)
    test = torch.bernoulli(test.flatten(1), generator=generator)
    base = {"device": args.device, "seed": args.seed}
    training = []
    for network in args.networks.split(","):
        for batch_size in map(int, args.batch_sizes.split(",")):
            row = {"network": network, "batch_size": batch_size, "steps": args.train_steps}
            for side in ("pyrogen", "reference"):
                job = {**base, "network": network, "batch_size": batch_size, "side": side}
                report = measure(run, {**job, "steps": args.train_steps}, images, "train")
                row[f"{side}_mib"] = report["growth_bytes"] / MIB
                row[f"{side}_s"] = report["wall_s"]
                row[f"{side}_final_loss"] = report["result"]
                if "cuda_peak_allocated_bytes" in report:
                    row[f"{side}_cuda_mib"] = report["cuda_peak_allocated_bytes"] / MIB
            training.append(row)
    evaluation = []
    for side, rows, label in (
        ("pyrogen", args.eval_rows, "pyrogen VAE.log_likelihood"),
        ("reference", args.reference_eval_rows, "hand-written estimator"),
    ):
        if not rows:
            continue
        job = {**base, "network": "mlp", "side": side, "num_samples": args.num_samples}
        report = measure(run, job, test[:rows], "eval")
        evaluation.append(
            {
                "estimator": label,
                "rows": rows,
                "num_samples": args.num_samples,
                "mib": report["growth_bytes"] / MIB,
                "seconds": report["wall_s"],
                "ms_per_image": 1e3 * report["wall_s"] / rows,
                "mean_log_likelihood": report["result"],
            }
        )
    # An unchunked estimate holds K x N decoder outputs (784 floats each) at once.
    naive_gib = args.num_samples * 10_000 * 784 * 4 / 2**30
    run.write(
        "pyrogen VAE peak memory: training and K-sample evaluation",
        [
            harness.Table(training, TRAIN_COLUMNS, "Training"),
            harness.Table(evaluation, EVAL_COLUMNS, "Evaluation"),
        ],
        notes=[
            f"Data: {source}. Peak RSS growth of one job in a fresh process over a baseline "
            "after imports, data, model and a warm-up. A naive unchunked estimate with "
            f"K = {args.num_samples:,} on 10,000 images would hold {naive_gib:,.1f} GiB of "
            "decoder outputs alone."
        ],
        data={"naive_logits_gib": naive_gib},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
