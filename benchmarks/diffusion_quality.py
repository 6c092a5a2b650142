"""The ELBO of ``pyrogen.DiffusionVAE`` against a hand-written PyTorch DDPM loop at a fixed
training budget, on MNIST (8-bit, bits/dim) and binarized MNIST (nats), in one run.

Both sides start from the same UNet weights (a deep copy made before training), use the same
noise schedule, optimizer (Adam), learning rate, batches (one seeded permutation per epoch)
and number of steps:

* **pyrogen**: ``pyrogen.fit(model, x, ...)`` with the default ``objective="elbo"`` (the
  unbiased ELBO estimate: one uniformly drawn step per example, analytic KLs);
* **reference**: the classic DDPM loop (Ho et al. 2020, algorithm 1): t uniform, z_t =
  alpha_t x + sigma_t eps, loss ||eps - net(z_t, t / T)||^2, on the copy.

Both trained networks are scored by the same estimator, ``DiffusionVAE.elbo_terms`` (the
reference's weights loaded into a copy of the model), on the same test images with the same
random draws: the ELBO and its reconstruction / prior / diffusion terms, and bits/dim for
8-bit MNIST (discretized likelihood over 256 levels) or nats for binarized MNIST
(Bernoulli). Paired differences come with standard errors over test images. Target: pyrogen
the same or better.

``--sets 2d`` measures sample quality instead, on 2-D sets of well-separated Gaussian
clusters (a 5 x 3 grid and a ring of 8, standardized inside the model) with the defaults:
``DiffusionVAE((2,))`` trained by ``fit(epochs=300, batch_size=256)`` on 4000 rows. The score
is the mean log-density of 4000 draws under the true mixture minus that of 4000 held-out
rows (0 is perfect; goal: within 0.25 nats), for the default sampler (ancestral, T steps)
and for DDIM with 50 and 200 steps, beside the ELBO's gap to the same reference. Results go
to ``results/diffusion_quality_2d.{json,md}``.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (  # noqa: E402
    markdown_table,
    run_header,
    set_threads,
    text_table,
    write_json_atomic,
    write_text_atomic,
)

RESULTS = Path(__file__).resolve().parent / "results"
DATA_ROOT = Path(
    os.environ.get("PYROGEN_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
DATASETS = ("mnist", "binarized-mnist")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke test (< 1 min)")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--timesteps", type=int, default=1000)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--steps", type=int, default=None, help="training steps (full 1500)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--train", type=int, default=None, help="training images (full 10000)")
    parser.add_argument("--test", type=int, default=None, help="test images (full 1000)")
    parser.add_argument("--eval-samples", type=int, default=4, help="step draws per image")
    parser.add_argument("--data", type=Path, default=DATA_ROOT)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="results path without suffix")
    parser.add_argument("--sets", choices=("mnist", "2d"), default="mnist")
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = str(
            RESULTS / ("diffusion_quality" if args.sets == "mnist" else "diffusion_quality_2d")
        )
    full = {"steps": 1500, "train": 10_000, "test": 1000}
    quick = {"steps": 10, "train": 256, "test": 64}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.quick:
        args.timesteps, args.channels, args.eval_samples = 50, 8, 1
    return args


def load(dataset: str, args):
    """Training and test images (N, 1, 28, 28) in [0, 1], and the likelihood they need."""
    import torch

    import pyrogen

    if dataset == "mnist":
        train, _ = pyrogen.data.mnist(args.data / "mnist", "train")
        test, _ = pyrogen.data.mnist(args.data / "mnist", "test")
        likelihood = "discretized"
    else:
        train = pyrogen.data.binarized_mnist(args.data / "binarized_mnist", "train")
        test = pyrogen.data.binarized_mnist(args.data / "binarized_mnist", "test")
        likelihood = "bernoulli"
    generator = torch.Generator().manual_seed(args.seed)
    train = train[torch.randperm(len(train), generator=generator)[: args.train]]
    test = test[torch.randperm(len(test), generator=generator)[: args.test]]
    return train.reshape(-1, 1, 28, 28), test.reshape(-1, 1, 28, 28), likelihood


def train_reference(network, gamma, x, args) -> float:
    """The DDPM loop on ``network``; batches as ``pyrogen.fit`` draws them. Returns seconds."""
    import torch

    T = args.timesteps
    alpha, sigma = torch.sigmoid(-gamma).sqrt(), torch.sigmoid(gamma).sqrt()
    optimizer = torch.optim.Adam(network.parameters(), lr=args.lr)
    order_rng = torch.Generator().manual_seed(args.seed)
    noise = torch.Generator().manual_seed(args.seed + 1)
    n, b = x.shape[0], args.batch_size
    order, position = torch.randperm(n, generator=order_rng), 0
    started = time.perf_counter()
    for _ in range(args.steps):
        if position + b > n:
            order, position = torch.randperm(n, generator=order_rng), 0
        batch = 2 * x[order[position : position + b]] - 1
        position += b
        t = torch.randint(1, T + 1, (b,), generator=noise)
        eps = torch.randn(batch.shape, generator=noise)
        z = alpha[t].view(-1, 1, 1, 1) * batch + sigma[t].view(-1, 1, 1, 1) * eps
        loss = ((eps - network(z, t.float() / T)) ** 2).sum() / b
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return time.perf_counter() - started


def run_dataset(dataset: str, args) -> dict:
    import torch

    import pyrogen

    train, test, likelihood = load(dataset, args)
    torch.manual_seed(args.seed)
    model = pyrogen.DiffusionVAE(
        (1, 28, 28), args.timesteps, likelihood=likelihood, channels=args.channels
    )
    model.setup(train)
    reference = copy.deepcopy(model)  # the same initial weights
    started = time.perf_counter()
    pyrogen.fit(
        model,
        train,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        progress=False,
    )
    pyrogen_s = time.perf_counter() - started
    reference_s = train_reference(reference.denoiser, reference.schedule().detach(), train, args)
    scores = {}
    for side, each in (("pyrogen", model), ("reference", reference)):
        torch.manual_seed(args.seed + 1000)  # the same draws for both
        scores[side] = each.elbo_terms(test, num_samples=args.eval_samples)
    dims = 784
    unit = (dims * math.log(2)) if likelihood == "discretized" else 1.0
    rows = []
    for side in ("pyrogen", "reference"):
        terms = scores[side]
        rows.append(
            {
                "dataset": dataset,
                "side": side,
                "elbo": terms["elbo"].mean().item(),
                "bpd_or_nats": (-terms["elbo"] / unit).mean().item(),
                "reconstruction": terms["reconstruction"].mean().item(),
                "prior": terms["prior"].mean().item(),
                "diffusion": terms["diffusion"].mean().item(),
                "train_s": pyrogen_s if side == "pyrogen" else reference_s,
            }
        )
    diff = (scores["pyrogen"]["elbo"] - scores["reference"]["elbo"]).double()
    rows[0]["elbo_minus_reference"] = diff.mean().item()
    rows[0]["se"] = (diff.std() / math.sqrt(diff.numel())).item()
    for row in rows:
        row["units"] = "bits/dim" if likelihood == "discretized" else "nats"
    return rows


COLUMNS = [
    ("dataset", "data"),
    ("side", "trained by"),
    ("bpd_or_nats", "-ELBO", ".3f"),
    ("units", "units"),
    ("reconstruction", "recon. (nats)", ".2f"),
    ("prior", "prior KL", ".4f"),
    ("diffusion", "diffusion KLs", ".2f"),
    ("elbo_minus_reference", "ELBO - ref. (nats)", "+.2f"),
    ("se", "+-", ".2f"),
    ("train_s", "train s", ".0f"),
]


def clusters(layout: str):
    """The true density of a 2-D set: a 5 x 3 grid (spacing 4, sd 0.5) or a ring of 8
    (radius 4, sd 0.35) of equally weighted Gaussian clusters."""
    import torch

    if layout == "grid15":
        centers, sd = 4 * torch.cartesian_prod(torch.arange(5.0), torch.arange(3.0)), 0.5
    else:
        angles = torch.arange(8.0) * 2 * math.pi / 8
        centers, sd = 4 * torch.stack([angles.cos(), angles.sin()], 1), 0.35
    return torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(torch.ones(len(centers))),
        torch.distributions.Independent(torch.distributions.Normal(centers, sd), 1),
    )


def run_clusters(layout: str, args) -> dict:
    """Default diffusion model on one 2-D set: the draws' and the ELBO's gaps to held-out data."""
    import torch

    import pyrogen

    truth = clusters(layout)
    rows = 1000 if args.quick else 4000
    torch.manual_seed(args.seed)
    x, held_out = truth.sample((rows,)), truth.sample((rows,))
    reference = truth.log_prob(held_out).mean().item()
    model = pyrogen.DiffusionVAE((2,))
    started = time.perf_counter()
    epochs = 5 if args.quick else 300
    pyrogen.fit(model, x, epochs=epochs, batch_size=256, seed=args.seed, progress=False)
    row = {"set": layout, "rows": rows, "epochs": epochs, "train_s": time.perf_counter() - started}
    for name, options in SAMPLERS.items():
        torch.manual_seed(args.seed + 1)
        row[name] = truth.log_prob(model.sample(rows, **options)).mean().item() - reference
    torch.manual_seed(args.seed + 2)
    row["elbo"] = model.elbo(held_out, num_samples=args.eval_samples).mean().item() - reference
    return row


SAMPLERS = {
    "ancestral": {},
    "ddim50": {"method": "ddim", "steps": 50},
    "ddim200": {"method": "ddim", "steps": 200},
}
COLUMNS_2D = [
    ("set", "set"),
    ("rows", "rows"),
    ("epochs", "epochs"),
    ("ancestral", "draws, ancestral (default)", "+.3f"),
    ("ddim50", "draws, DDIM 50", "+.3f"),
    ("ddim200", "draws, DDIM 200", "+.3f"),
    ("elbo", "ELBO", "+.3f"),
    ("train_s", "train s", ".0f"),
]


def main_2d(args) -> int:
    started = time.perf_counter()
    rows = []
    for layout in ("grid15", "ring8"):
        rows.append(run_clusters(layout, args))
        print(text_table(rows[-1:], COLUMNS_2D), flush=True)
    summary = {**run_header("diffusion_quality_2d", args), "rows": rows}
    summary["total_s"] = time.perf_counter() - started
    out = Path(args.out)
    write_json_atomic(out.with_suffix(".json"), summary)
    met = all(r["ancestral"] >= -0.25 for r in rows)
    text = [
        "Defaults (`DiffusionVAE((2,))`, T = 1000, MLP denoiser with Fourier features) trained "
        f"by `fit(epochs={rows[0]['epochs']}, batch_size=256)`; nats per row, mean true "
        "log-density of the model's draws (or its ELBO) minus that of held-out data: 0 is "
        f"perfect, goal within 0.25 for the default sampler; {args.threads} torch thread(s)"
        + (" (quick mode: smoke test)" if args.quick else "")
        + ".",
        "",
        markdown_table(rows, COLUMNS_2D),
        "",
        f"* default draws {'within' if met else 'NOT within'} 0.25 nats on every set",
    ]
    write_text_atomic(out.with_suffix(".md"), "\n".join(text) + "\n")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    limiter = set_threads(args.threads)  # noqa: F841
    import torch

    torch.set_num_threads(args.threads)
    if args.sets == "2d":
        return main_2d(args)
    loads = [list(os.getloadavg())]
    started = time.perf_counter()
    rows = []
    for dataset in args.datasets.split(","):
        rows += run_dataset(dataset, args)
        print(text_table(rows[-2:], COLUMNS), flush=True)
    loads.append(list(os.getloadavg()))
    summary = {
        **run_header("diffusion_quality", args),
        "load_averages": loads,
        "rows": rows,
        "total_s": time.perf_counter() - started,
    }
    out = Path(args.out)
    write_json_atomic(out.with_suffix(".json"), summary)
    verdicts = []
    for r in rows:
        if "elbo_minus_reference" in r:
            same = r["elbo_minus_reference"] + 2 * r["se"] >= 0  # within 2 standard errors
            verdicts.append(
                f"{r['dataset']}: pyrogen {'same or better' if same else 'worse'} "
                f"({r['elbo_minus_reference']:+.2f} +- {r['se']:.2f} nats per image)"
            )
    text = [
        f"UNet (channels {args.channels}), T = {args.timesteps}, linear schedule, {args.steps} "
        f"steps of batch {args.batch_size}, Adam {args.lr}, {args.train} training and "
        f"{args.test} test images, ELBO with {args.eval_samples} step draws per test image; "
        f"{args.threads} torch thread(s), load average {loads[0][0]:.1f} / {loads[-1][0]:.1f}"
        + (" (quick mode: smoke test)" if args.quick else "")
        + ". -ELBO in bits/dim for 8-bit MNIST, nats per image for binarized MNIST; lower is "
        "better.",
        "",
        markdown_table(rows, COLUMNS),
        "",
        *[f"* {v}" for v in verdicts],
    ]
    write_text_atomic(out.with_suffix(".md"), "\n".join(text) + "\n")
    print("\n".join(verdicts))
    print(f"total {summary['total_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
