"""Held-out likelihood of ``pyrogen.FlowDensity`` against Gaussian mixtures, in one run.

* **Old Faithful** (``pyrogen.data.old_faithful()``, 272 rows, eruption and waiting time in
  minutes), a seeded random 80/20 split (218 / 54 rows). ``FlowDensity`` (NSF, trained by
  ``pyrogen.fit`` on the full batch, once with early stopping on a validation quarter of
  the training rows, ``fit(validation=..., early_stopping=--patience)``, and once for all
  ``--faithful-steps`` on all training rows) against ``pyrogen.GaussianMixture`` (full covariance)
  with K = 2, 3 and with K chosen by BIC on the training rows among 1..6. Held-out mean
  log-density per row in nats (exact for both).
* **MNIST** bits/dim: ``FlowDensity((784,), "realnvp", dequantize=256, logit=0.05)`` trained
  by ``pyrogen.fit`` on a subset of the training images for a fixed number of steps, against
  diagonal Gaussian mixtures (``pyrogen.GaussianMixture(K, covariance="diag")`` and, as a
  cross-check of the arithmetic, scikit-learn's) fitted to one uniform dequantization of the
  same images. Both are scored on the same held-out test images with the same bound: for an
  image x (levels k / 255), y = (k + u) / 256 with u ~ U(0, 1)^D is a point of x's bin, a
  cube of volume 256^-D in [0, 1]^D, so

      log P(x) >= E_u[log p(y)] - D log 256,   bits/dim = -(that) / (D log 2),

  and with K draws of u, log (1/K) sum_k p(y_k) 256^-D is the tighter importance-weighted
  bound (``FlowDensity.bits_per_dim(x, num_samples=K)``; the mixture's is computed here from
  its ``log_prob`` in the same way). The mixture is a density on [0, 1]-scaled y; the flow's
  logit preprocessing is part of its density (its log-Jacobian is included), so both are in
  the same units. Lower is better.
"""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import torch
from sklearn.mixture import GaussianMixture as SkGaussianMixture

import pyrogen
from benchmarks import harness
from pyrogen.data import old_faithful


def faithful(args) -> list[dict]:
    x = old_faithful()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(args.seed))
    cut = int(round(0.8 * len(x)))
    train, test = x[order[:cut]], x[order[cut:]]
    rows = []
    flows = [("nsf", 3, (32, 32))]
    if not args.quick:
        flows.append(("nsf", 5, (128, 128)))  # FlowDensity's defaults
    # Early stopping on a validation quarter of the training rows (seeded), as a user
    # choosing the number of steps on held-out data would; then the same flows without it.
    fold = torch.randperm(len(train), generator=torch.Generator().manual_seed(args.seed + 1))
    cut = int(round(0.75 * len(train)))
    fit_rows, validation = train[fold[:cut]], train[fold[cut:]]
    for (kind, transforms, hidden), early in itertools.product(flows, (True, False)):
        torch.manual_seed(args.seed)
        model = pyrogen.FlowDensity((2,), kind, transforms=transforms, hidden=hidden)
        started = time.perf_counter()
        options = {"steps": args.faithful_steps, "seed": args.seed, "progress": False}
        if early:
            options |= {"validation": validation, "early_stopping": args.patience}
            result = pyrogen.fit(model, fit_rows, **options)
        else:
            result = pyrogen.fit(model, train, **options)
        rows.append(
            {
                "data": "Old Faithful",
                "model": f"FlowDensity {kind}, {transforms} x {hidden}"
                + (f", validation early stopping (best step {result.best_step})" if early else ""),
                "train_ll": model.log_prob(train).mean().item(),
                "test_ll": model.log_prob(test).mean().item(),
                "fit_s": time.perf_counter() - started,
            }
        )
    gmms = {}
    for k in range(1, 7):
        gmm = pyrogen.GaussianMixture(k, covariance="full")
        started = time.perf_counter()
        pyrogen.fit(gmm, train, seed=args.seed, progress=False)
        gmms[k] = (gmm, time.perf_counter() - started, gmm.bic(train))
    best = min(gmms, key=lambda k: gmms[k][2])
    for k in sorted({2, 3, best}):
        gmm, fit_s, bic = gmms[k]
        rows.append(
            {
                "data": "Old Faithful",
                "model": f"GaussianMixture K={k} full" + (" (BIC choice)" if k == best else ""),
                "train_ll": gmm.log_prob(train).mean().item(),
                "test_ll": gmm.log_prob(test).mean().item(),
                "fit_s": fit_s,
                "bic": bic,
            }
        )
    for row in rows:
        row["split"] = f"{len(train)} / {len(test)}"
    return rows


def dequantize(x, gen):
    """One uniform dequantization of levels k / 255: (k + u) / 256, u ~ U(0, 1)."""
    levels = (x * 255).round()
    return (levels + torch.rand(x.shape, generator=gen, dtype=x.dtype)) / 256


def mixture_bits_per_dim(log_prob, x, num_samples: int, gen) -> float:
    """Bits/dim of 8-bit images x under a density log_prob on [0, 1]^D (see the docstring)."""
    d = x.shape[1]
    draws = torch.stack([log_prob(dequantize(x, gen)) for _ in range(num_samples)])
    bound = torch.logsumexp(draws, 0) - math.log(num_samples) - d * math.log(256)
    return (-bound / (d * math.log(2))).mean().item()


def mnist_rows(args) -> list[dict]:
    train_images, _, _ = harness.mnist(args, "train")
    test_images, _, _ = harness.mnist(args, "test")
    gen = torch.Generator().manual_seed(args.seed)
    train = train_images[torch.randperm(len(train_images), generator=gen)[: args.mnist_train]]
    test = test_images[torch.randperm(len(test_images), generator=gen)[: args.mnist_test]]
    train, test = train.reshape(len(train), -1), test.reshape(len(test), -1)
    hidden = tuple(int(h) for h in args.mnist_hidden.split(","))
    rows = []
    torch.manual_seed(args.seed)
    flow = pyrogen.FlowDensity(
        data_shape=(784,),
        flow="realnvp",
        transforms=args.mnist_transforms,
        hidden=hidden,
        dequantize=256,
        logit=0.05,
    )
    started = time.perf_counter()
    result = pyrogen.fit(flow, train, steps=args.mnist_steps, seed=args.seed, progress=False)
    fit_s = time.perf_counter() - started
    torch.manual_seed(args.seed + 1)
    with torch.no_grad():
        test_elbo = flow.bits_per_dim(test).mean().item()
        test_iw = flow.bits_per_dim(test, num_samples=args.num_samples).mean().item()
        train_elbo = flow.bits_per_dim(train[: len(test)]).mean().item()
    rows.append(
        {
            "data": "MNIST",
            "model": f"FlowDensity realnvp, {args.mnist_transforms} x {hidden}, logit 0.05",
            "train_bpd": train_elbo,
            "test_bpd_elbo": test_elbo,
            "test_bpd_iw": test_iw,
            "fit_s": fit_s,
            "final_loss": result.losses[-1],
        }
    )
    y_train = dequantize(train, gen)
    for k in (int(v) for v in args.mnist_k.split(",")):
        gmm = pyrogen.GaussianMixture(k, covariance="diag")
        started = time.perf_counter()
        pyrogen.fit(gmm, y_train, seed=args.seed, progress=False)
        fit_s = time.perf_counter() - started
        rows.append(
            {
                "data": "MNIST",
                "model": f"GaussianMixture K={k} diag",
                "train_bpd": mixture_bits_per_dim(gmm.log_prob, train[: len(test)], 1, gen),
                "test_bpd_elbo": mixture_bits_per_dim(gmm.log_prob, test, 1, gen),
                "test_bpd_iw": mixture_bits_per_dim(gmm.log_prob, test, args.num_samples, gen),
                "fit_s": fit_s,
            }
        )
        sk = SkGaussianMixture(k, covariance_type="diag", random_state=args.seed)
        started = time.perf_counter()
        sk.fit(y_train.double().numpy())
        fit_s = time.perf_counter() - started

        def sk_log_prob(y, sk=sk):
            return torch.from_numpy(sk.score_samples(y.double().numpy()).astype(np.float64))

        rows.append(
            {
                "data": "MNIST",
                "model": f"sklearn GaussianMixture K={k} diag (cross-check)",
                "train_bpd": mixture_bits_per_dim(sk_log_prob, train[: len(test)], 1, gen),
                "test_bpd_elbo": mixture_bits_per_dim(sk_log_prob, test, 1, gen),
                "test_bpd_iw": mixture_bits_per_dim(sk_log_prob, test, args.num_samples, gen),
                "fit_s": fit_s,
            }
        )
    for row in rows:
        row["split"] = f"{len(train)} / {len(test)}"
    return rows


FAITHFUL_COLUMNS = [
    ("model", "model"),
    ("split", "train / test"),
    ("train_ll", "train LL (nats/row)", ".3f"),
    ("test_ll", "held-out LL (nats/row)", ".3f"),
    ("fit_s", "fit s", ".1f"),
]
MNIST_COLUMNS = [
    ("model", "model"),
    ("split", "train / test images"),
    ("train_bpd", "train bits/dim (K=1)", ".3f"),
    ("test_bpd_elbo", "test bits/dim (K=1)", ".3f"),
    ("test_bpd_iw", "test bits/dim (K draws)", ".3f"),
    ("fit_s", "fit s", ".1f"),
]


def main(argv=None) -> int:
    options = harness.parser(__doc__)
    options.add_argument("--faithful-steps", type=int, default=None, help="1500")
    options.add_argument("--mnist-train", type=int, default=None, help="images (10,000)")
    options.add_argument("--mnist-test", type=int, default=None, help="images (1000)")
    options.add_argument("--mnist-steps", type=int, default=None, help="800")
    options.add_argument("--mnist-transforms", type=int, default=None, help="5")
    options.add_argument("--mnist-hidden", default=None, help="256,256")
    options.add_argument("--mnist-k", default=None, help="mixture sizes for MNIST (1,10)")
    options.add_argument("--num-samples", type=int, default=None, help="dequantizations (16)")
    options.add_argument("--patience", type=int, default=100, help="early stopping, steps")
    run = harness.start(
        "flows_density",
        options,
        argv,
        full={"faithful_steps": 1500, "mnist_train": 10_000, "mnist_test": 1000}
        | {"mnist_steps": 800, "num_samples": 16, "mnist_k": "1,10", "mnist_transforms": 5}
        | {"mnist_hidden": "256,256"},
        quick={"faithful_steps": 20, "mnist_train": 200, "mnist_test": 20, "mnist_steps": 3}
        | {"mnist_k": "1", "mnist_transforms": 2, "mnist_hidden": "32", "num_samples": 2},
    )
    args = run.args
    faithful_rows = faithful(args)
    mnist_table = mnist_rows(args)
    best_gmm = max(r["test_ll"] for r in faithful_rows if r["model"].startswith("Gaussian"))
    best_flow = max(r["test_ll"] for r in faithful_rows if r["model"].startswith("Flow"))
    flow_bpd = mnist_table[0]["test_bpd_iw"]
    gmm_bpd = min(r["test_bpd_iw"] for r in mnist_table[1:])
    run.write(
        "FlowDensity against Gaussian mixtures: held-out likelihood",
        [
            harness.Table(faithful_rows, FAITHFUL_COLUMNS, "Old Faithful (nats per row)"),
            harness.Table(mnist_table, MNIST_COLUMNS, "MNIST (bits/dim)"),
        ],
        notes=[
            f"Old Faithful: seeded 80/20 split, at most {args.faithful_steps} full-batch steps "
            f"(early stopping: 3/4 of the training rows, patience {args.patience} on the other "
            "quarter); higher is better. MNIST: the flow trained for "
            f"{args.mnist_steps} steps; bits/dim of the 8-bit images (uniform dequantization "
            f"bound, K = {args.num_samples} draws in the importance-weighted column); lower is "
            f"better. Best flow minus best mixture: Old Faithful {best_flow - best_gmm:+.3f} "
            f"nats/row, MNIST {flow_bpd - gmm_bpd:+.3f} bits/dim."
        ],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
