"""Test log-likelihood of pyrogen's VAE (and IWAE) on dynamically binarized MNIST against a
hand-written PyTorch reference trained the same way in the same run.

The setting is Burda, Grosse & Salakhutdinov (2016), *Importance Weighted Autoencoders*,
Table 1, one stochastic layer: 50 latents, 784-200-200-50 tanh networks, Bernoulli logits,
batch 100, Adam; test log-likelihood with K = 5000 importance samples. Published: VAE
-86.76 nats, IWAE (k = 50) -84.78 nats, after 3280 epochs.

* **pyrogen**: the VAE on those networks, trained by ``pyrogen.fit`` one epoch per call on
  that epoch's binarization, resuming from a checkpoint (as ``pyrogen fit --binarize
  dynamic`` does); evaluated with ``vae.log_likelihood(x, num_samples=K)``.
* **reference**: a hand-written loop (``references.vae_loss``) on deep copies of the same
  initial networks, the same binarized images, minibatch order and seeds; evaluated by the
  hand-written estimator ``references.vae_log_likelihood``. A cross-check runs that
  estimator on pyrogen's final model.

The 60k training images are resampled as Bernoulli(grey level) every epoch (seed + 1); the
test images are binarized once (seed), or ``--test-set larochelle-murray``. Intermediate
checkpoints use the first ``--eval-rows`` test images, the last ``--final-rows``. Targets:
within 0.3 nats of the published figures where the budget allows, and pyrogen never worse
than the reference at equal epochs (difference <= 2 standard errors).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

import pyrogen
from benchmarks import harness, references
from pyrogen.infer.noise import step_seed

OBJECTIVES = {  # label, VAE options, particles of the reference bound, published test LL
    "vae": ("VAE (k=1)", {"objective": "mean_field", "num_particles": 1}, 1, -86.76),
    "iwae": ("IWAE (k=50)", {"objective": "iwae", "num_particles": 50}, 50, -84.78),
}
EVAL_EPOCHS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 3280)
EVAL_SEED = 1000  # the estimators' noise: a stream apart from training's
COLUMNS = [
    ("epoch", "epoch"),
    ("rows", "test images", ",d"),
    ("pyrogen_nll_text", "NLL pyrogen"),
    ("reference_nll_text", "NLL reference"),
    ("diff_text", "pyrogen − reference"),
    ("pyrogen_train_s", "train s pyrogen", ".1f"),
    ("reference_train_s", "train s reference", ".1f"),
    ("pyrogen_step_ms", "step ms pyrogen", ".2f"),
    ("reference_step_ms", "step ms reference", ".2f"),
]


def load(args):
    """Grey-level training images (N, 784) and binarized test images (M, 784)."""
    train, _, _ = harness.mnist(args, "train", args.rows)
    if args.test_set == "sampled":
        test = references.binarized_mnist_test(args)
    else:
        test = pyrogen.data.binarized_mnist(Path(args.data_dir) / "binarized_mnist", "test")
    return train.flatten(1), test.flatten(1)


def paired(p_ll: torch.Tensor, r_ll: torch.Tensor) -> dict:
    """NLLs, their standard errors, and the paired difference (pyrogen - reference)."""
    out = {"rows": p_ll.shape[0]}
    for key, values in (("pyrogen_nll", -p_ll), ("reference_nll", -r_ll), ("diff", r_ll - p_ll)):
        out[key], out[key + "_se"] = harness.mean_and_se(values.double().tolist())
    return out


def run_objective(objective: str, train, test, run: harness.Run) -> dict:
    args, device = run.args, run.device
    label, _, particles, published = OBJECTIVES[objective]
    vae = references.burda_vae(args.seed, **OBJECTIVES[objective][1]).to(device)
    nets = references.vae_networks(vae)
    n, batch = train.shape[0], args.batch_size
    optimizer = torch.optim.Adam(nets.parameters(), lr=references.LR)
    order = torch.Generator().manual_seed(args.seed)  # as fit's minibatch order
    noise, step = torch.Generator(device=device), 0
    binarizer = torch.Generator().manual_seed(args.seed + 1)
    eval_noise = torch.Generator(device=device).manual_seed(args.seed + EVAL_SEED + 1)
    test = test.to(device)
    checkpoints, train_s = [], {"pyrogen": 0.0, "reference": 0.0}
    with tempfile.TemporaryDirectory() as folder:
        for epoch in range(1, args.epochs + 1):
            x = torch.bernoulli(train, generator=binarizer).to(device)
            stamps = {"pyrogen": [], "reference": []}
            started = time.perf_counter()
            result = references.fit_one_epoch(
                vae, x, epoch, Path(folder) / "vae.pt", batch_size=batch, seed=args.seed,
                stamps=stamps["pyrogen"],
            )  # fmt: skip
            train_s["pyrogen"] += time.perf_counter() - started
            started = time.perf_counter()
            for index in torch.randperm(n, generator=order).to(device).split(batch):
                # each step's noise seeded as pyrogen.fit seeds it, so both take the same steps
                noise.manual_seed(step_seed(args.seed, step))
                step += 1
                loss = references.vae_loss(nets, x[index], n, particles, noise)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss.item()
                stamps["reference"].append(time.perf_counter())
            train_s["reference"] += time.perf_counter() - started
            if epoch not in EVAL_EPOCHS and epoch != args.epochs:
                continue
            rows = args.final_rows if epoch == args.epochs else args.eval_rows
            subset = test[: rows or None]
            torch.manual_seed(args.seed + EVAL_SEED)
            p_ll = vae.log_likelihood(subset, num_samples=args.iw_samples).cpu()
            r_ll = references.vae_log_likelihood(nets, subset, args.iw_samples, eval_noise).cpu()
            point = {"epoch": epoch, **paired(p_ll, r_ll), "train_loss": result.final_loss}
            for side in ("pyrogen", "reference"):
                point[f"{side}_train_s"] = train_s[side]
                s = stamps[side]
                point[f"{side}_step_ms"] = 1e3 * (s[-1] - s[0]) / max(1, len(s) - 1)
                point[f"{side}_nll_text"] = harness.plus_minus(
                    point[f"{side}_nll"], point[f"{side}_nll_se"]
                )
            point["diff_text"] = harness.plus_minus(point["diff"], point["diff_se"], 3)
            point["not_worse"] = point["diff"] <= 2 * (point["diff_se"] or 0.0)
            checkpoints.append(point)
            print(f"{label} epoch {epoch}: NLL {point['pyrogen_nll']:.2f} (pyrogen)", flush=True)
    cross_rows = min(args.crosscheck_rows, len(p_ll))
    cross_noise = torch.Generator(device=device).manual_seed(args.seed + EVAL_SEED + 2)
    trained = {"encoder": vae.encoder, "decoder": vae.decoder}
    mine = references.vae_log_likelihood(trained, test[:cross_rows], args.iw_samples, cross_noise)
    cross = harness.mean_and_se((p_ll[:cross_rows] - mine.cpu()).double().tolist())
    final = checkpoints[-1]["pyrogen_nll"]
    return {
        "objective": objective,
        "label": label,
        "checkpoints": checkpoints,
        "published_nll": -published,
        "published_gap": final + published,
        "all_not_worse": all(p["not_worse"] for p in checkpoints),
        "estimator_crosscheck": {"rows": cross_rows, "mean_diff": cross[0], "se": cross[1]},
    }


def main(argv=None) -> int:
    options = harness.parser(__doc__)
    options.add_argument("--objectives", default="vae", help="comma-separated: vae, iwae")
    options.add_argument("--epochs", type=int, default=None, help="30")
    options.add_argument("--rows", type=int, default=None, help="training images (all)")
    options.add_argument("--eval-rows", type=int, default=None, help="at checkpoints (500)")
    options.add_argument("--final-rows", type=int, default=None, help="at the end (all)")
    options.add_argument("--crosscheck-rows", type=int, default=None, help="500")
    options.add_argument("--iw-samples", type=int, default=None, help="K (5000)")
    options.add_argument("--batch-size", type=int, default=100)
    options.add_argument("--test-set", default="sampled", choices=("sampled", "larochelle-murray"))
    run = harness.start(
        "vae_quality",
        options,
        argv,
        full={"epochs": 30, "eval_rows": 500, "crosscheck_rows": 500, "iw_samples": 5000},
        quick={
            "epochs": 2,
            "rows": 500,
            "eval_rows": 20,
            "final_rows": 20,
            "crosscheck_rows": 10,
            "iw_samples": 50,
        },
    )
    args = run.args
    train, test = load(args)
    results = [run_objective(o, train, test, run) for o in args.objectives.split(",")]
    notes = []
    for r in results:
        cross = r["estimator_crosscheck"]
        notes.append(
            f"{r['label']}: published NLL {r['published_nll']:.2f} after 3280 epochs; gap of "
            f"pyrogen after {args.epochs} epoch(s) {r['published_gap']:+.2f} nats. Not worse "
            f"than the reference at every checkpoint (<= 2 SE): "
            f"{'yes' if r['all_not_worse'] else 'no'}. Estimators on pyrogen's final model "
            f"(first {cross['rows']} images): pyrogen's minus the hand-written "
            f"{harness.plus_minus(cross['mean_diff'], cross['se'], 3)} nats."
        )
    notes.append(
        f"NLL = −(mean test log-likelihood), nats, K = {args.iw_samples:,}, ± one standard "
        f"error over test images (the difference: paired). Adam lr 1e-3 constant, batch "
        f"{args.batch_size}, {train.shape[0]:,} training images binarized afresh each epoch."
    )
    run.write(
        "pyrogen VAE / IWAE test log-likelihood vs a hand-written PyTorch reference",
        [harness.Table(r["checkpoints"], COLUMNS, r["label"]) for r in results],
        notes=notes,
        data={"results": results},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
