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

import copy
import math
import time
from pathlib import Path

import torch

import pyrogen
from benchmarks import harness


def load(dataset: str, args):
    """Training and test images (N, 1, 28, 28) in [0, 1], and the likelihood they need."""

    if dataset == "mnist":
        train, _, _ = harness.mnist(args, "train")
        test, _, _ = harness.mnist(args, "test")
        likelihood = "discretized"
    else:
        train = pyrogen.data.binarized_mnist(Path(args.data_dir) / "binarized_mnist", "train")
        test = pyrogen.data.binarized_mnist(Path(args.data_dir) / "binarized_mnist", "test")
        likelihood = "bernoulli"
    generator = torch.Generator().manual_seed(args.seed)
    train = train[torch.randperm(len(train), generator=generator)[: args.train]]
    test = test[torch.randperm(len(test), generator=generator)[: args.test]]
    return train.reshape(-1, 1, 28, 28), test.reshape(-1, 1, 28, 28), likelihood


def train_reference(network, gamma, x, args) -> float:
    """The DDPM loop on ``network``; batches as ``pyrogen.fit`` draws them. Returns seconds."""

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

    truth = clusters(layout)
    rows = 100 if args.quick else 4000
    torch.manual_seed(args.seed)
    x, held_out = truth.sample((rows,)), truth.sample((rows,))
    reference = truth.log_prob(held_out).mean().item()
    model = pyrogen.DiffusionVAE((2,), args.timesteps)
    started = time.perf_counter()
    epochs = args.epochs
    pyrogen.fit(model, x, epochs=epochs, batch_size=256, seed=args.seed, progress=False)
    row = {"set": layout, "rows": rows, "epochs": epochs, "train_s": time.perf_counter() - started}
    for name, options in SAMPLERS.items():
        torch.manual_seed(args.seed + 1)
        if "steps" in options:  # at most T steps (--quick uses a short chain)
            options = {**options, "steps": min(options["steps"], args.timesteps)}
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


def main(argv=None) -> int:
    options = harness.parser(__doc__)
    options.add_argument("--sets", choices=("mnist", "2d"), default="mnist")
    options.add_argument("--datasets", default="mnist,binarized-mnist")
    options.add_argument("--timesteps", type=int, default=None, help="1000")
    options.add_argument("--channels", type=int, default=None, help="16")
    options.add_argument("--steps", type=int, default=None, help="training steps (1500)")
    options.add_argument("--epochs", type=int, default=None, help="2-D sets (300)")
    options.add_argument("--batch-size", type=int, default=64)
    options.add_argument("--lr", type=float, default=1e-3)
    options.add_argument("--train", type=int, default=None, help="training rows (10000)")
    options.add_argument("--test", type=int, default=None, help="test rows (1000)")
    options.add_argument("--eval-samples", type=int, default=None, help="step draws (4)")
    run = harness.start(
        lambda a: "diffusion_quality" if a.sets == "mnist" else "diffusion_quality_2d",
        options,
        argv,
        full={"timesteps": 1000, "channels": 16, "steps": 1500, "train": 10_000, "test": 1000}
        | {"eval_samples": 4, "epochs": 300},
        quick={"timesteps": 20, "channels": 4, "steps": 3, "train": 64, "test": 8}
        | {"eval_samples": 1, "epochs": 1},
    )
    args = run.args
    if args.sets == "2d":
        rows = [run_clusters(layout, args) for layout in ("grid15", "ring8")]
        met = all(r["ancestral"] >= -0.25 for r in rows)
        run.write(
            "DiffusionVAE sample quality on 2-D clusters",
            [harness.Table(rows, COLUMNS_2D)],
            notes=[
                f"Defaults (`DiffusionVAE((2,))`) trained by `fit(epochs={args.epochs}, "
                "batch_size=256)`; nats per row, mean true log-density of the model's draws (or "
                "its ELBO) minus that of held-out data: 0 is perfect. Default draws "
                f"{'within' if met else 'NOT within'} 0.25 nats on every set."
            ],
        )
        return 0
    rows = []
    for dataset in args.datasets.split(","):
        rows += run_dataset(dataset, args)
    verdicts = [
        f"{r['dataset']}: pyrogen "
        f"{'same or better' if r['elbo_minus_reference'] + 2 * r['se'] >= 0 else 'worse'} "
        f"({harness.plus_minus(r['elbo_minus_reference'], r['se'])} nats per image)."
        for r in rows
        if "elbo_minus_reference" in r
    ]
    run.write(
        "DiffusionVAE ELBO: pyrogen.fit against the classic DDPM loop",
        [harness.Table(rows, COLUMNS)],
        notes=[
            f"UNet (channels {args.channels}), T = {args.timesteps}, {args.steps} steps of batch "
            f"{args.batch_size}, Adam {args.lr}, {args.train} training and {args.test} test "
            f"images, ELBO with {args.eval_samples} step draws per test image. -ELBO in "
            "bits/dim for 8-bit MNIST, nats per image for binarized MNIST; lower is better.",
            " ".join(verdicts),
        ],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
