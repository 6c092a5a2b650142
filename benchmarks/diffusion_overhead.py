"""One training step of ``pyrogen.DiffusionVAE`` against a hand-written PyTorch DDPM loop with
the same network, in one run.

The reference is a deep copy of the model's denoiser (same weights) with the same noise
schedule (gamma_t read from the model once), trained with ``torch.optim.Adam`` on the same
batch; both draw one step t per example:

* ``simple``: pyrogen's ``objective="simple"`` (DDPM's loss through Pyro: the step's KL
  reweighted to ||eps - eps_hat||^2 / 2, plus the reconstruction and prior terms, which need
  no network) against the classic hand-written loop: z_t = alpha_t x + sigma_t eps,
  loss = (N / B) sum ||eps - net(z_t, t / T)||^2 / 2.
* ``elbo``: pyrogen's default ``objective="elbo"`` (the unbiased ELBO estimate from Pyro's
  analytic KLs) against the same estimate written by hand: T (SNR_{t-1} - SNR_t) / 2
  ||x - x_hat||^2 + KL(q(z_T | x) || N(0, I)) - log p(x | z_0) with the discretized (or
  Gaussian) likelihood, each from its closed form.

Settings: a UNet on MNIST-shaped 8-bit images (1, 28, 28) with the discretized likelihood,
batch 64; an MLP on 2-D data with the Gaussian likelihood, batch 256. Time per raw step
(``zero_grad``, loss, ``backward``, ``Adam.step``, Pyro validation off): median over
alternating blocks. Target: pyrogen / reference <= 1.10.
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
    markdown_table,
    run_header,
    set_threads,
    text_table,
    time_interleaved,
    write_json_atomic,
    write_text_atomic,
)

RESULTS = Path(__file__).resolve().parent / "results"
SETTINGS = ("unet-mnist", "mlp-2d")
OBJECTIVES = ("simple", "elbo")
TARGET = 1.10


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke test (< 1 min)")
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--objectives", default=",".join(OBJECTIVES))
    parser.add_argument("--timesteps", type=int, default=1000)
    parser.add_argument("--channels", type=int, default=32, help="UNet base channels")
    parser.add_argument("--repeats", type=int, default=None, help="blocks each (full 9)")
    parser.add_argument("--block-s", type=float, default=None, help="seconds per block (full 2)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS / "diffusion_overhead"))
    args = parser.parse_args(argv)
    full, quick = {"repeats": 9, "block_s": 2.0}, {"repeats": 3, "block_s": 0.3}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.quick:
        args.channels = min(args.channels, 8)
    return args


def make_setting(name: str, objective: str, args):
    """The model, a batch, N, and the hand-written loss on a copy of the model's network."""
    import torch

    import pyrogen

    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    if name == "unet-mnist":
        shape, batch, likelihood = (1, 28, 28), 64, "discretized"
        x = torch.randint(0, 256, (batch, *shape)) / 255
        options = {"channels": args.channels}
    else:
        shape, batch, likelihood = (2,), 256, "gaussian"
        x = torch.randn(batch, *shape)
        options = {"hidden": (256, 256, 256)}
    model = pyrogen.DiffusionVAE(
        shape, args.timesteps, likelihood=likelihood, objective=objective, **options
    )
    model.setup(x)
    model.to(device)
    x = x.to(device)
    network = copy.deepcopy(model.denoiser)
    gamma = model.schedule().detach().clone()
    T, n = args.timesteps, 60_000
    alpha, sigma = torch.sigmoid(-gamma).sqrt(), torch.sigmoid(gamma).sqrt()
    snr = torch.exp(-gamma)
    dims = tuple(range(1, x.dim()))
    view = (-1,) + (1,) * len(shape)
    shift = model.data_shift.reshape(shape)
    scale = model.data_scale.reshape(shape)

    def scaled(batch):
        return 2 * batch - 1 if likelihood == "discretized" else (batch - shift) / scale

    def reference_loss(batch):
        xs = scaled(batch)
        t = torch.randint(1, T + 1, (batch.shape[0],), device=device)
        eps = torch.randn_like(xs)
        z = alpha[t].reshape(view) * xs + sigma[t].reshape(view) * eps
        out = network(z, t.to(xs.dtype) / T)
        if objective == "simple":
            return n / batch.shape[0] * 0.5 * ((eps - out) ** 2).sum()
        x_hat = (z - sigma[t].reshape(view) * out) / alpha[t].reshape(view)
        kl = 0.5 * (snr[t - 1] - snr[t]) * ((xs - x_hat) ** 2).sum(dims)
        prior = 0.5 * (alpha[T] ** 2 * xs**2 + sigma[T] ** 2 - 1 - 2 * torch.log(sigma[T])).sum(
            dims
        )
        z0 = alpha[0] * xs + sigma[0] * torch.randn_like(xs)
        if likelihood == "discretized":
            levels = torch.linspace(-1, 1, 256, device=device)
            logits = -((z0.unsqueeze(-1) - alpha[0] * levels) ** 2) / (2 * sigma[0] ** 2)
            index = (batch * 255).round().long().unsqueeze(-1)
            recon = (logits.gather(-1, index).squeeze(-1) - logits.logsumexp(-1)).sum(dims)
        else:
            recon = (
                torch.distributions.Normal(
                    shift + scale * z0 / alpha[0], scale * sigma[0] / alpha[0]
                )
                .log_prob(batch)
                .sum(dims)
            )
        return n / batch.shape[0] * (T * kl + prior - recon).sum()

    def pyrogen_loss(batch):
        return model.loss.differentiable_loss(model.model, model.guide, batch, None, num_data=n)

    return model, network, x, pyrogen_loss, reference_loss


def run_setting(name: str, objective: str, args) -> dict:
    import pyro
    import torch

    model, network, x, pyrogen_loss, reference_loss = make_setting(name, objective, args)
    opt_p = torch.optim.Adam(model.parameters(), lr=1e-4)
    opt_r = torch.optim.Adam(network.parameters(), lr=1e-4)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else None

    def step(optimizer, loss_fn):
        def run():
            optimizer.zero_grad()
            loss_fn(x).backward()
            optimizer.step()

        return run

    step_p, step_r = step(opt_p, pyrogen_loss), step(opt_r, reference_loss)
    with pyro.validation_enabled(False):
        for _ in range(3):
            step_p()
            step_r()
        started = time.perf_counter()
        for _ in range(3):
            step_r()
        if sync:
            sync()
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
            sync=sync,
            alternate=True,
        )
    p_ms = 1000 * timings["pyrogen"].median / k
    r_ms = 1000 * timings["reference"].median / k
    cpu = {key: sorted(t.cpu_times)[len(t.cpu_times) // 2] / k for key, t in timings.items()}
    return {
        "setting": name,
        "objective": objective,
        "params": sum(p.numel() for p in network.parameters()),
        "batch": x.shape[0],
        "steps_per_block": k,
        "pyrogen_ms": p_ms,
        "reference_ms": r_ms,
        "ratio": p_ms / r_ms,
        "cpu_ratio": cpu["pyrogen"] / cpu["reference"],
        "timings": {key: t.as_dict() for key, t in timings.items()},
    }


COLUMNS = [
    ("setting", "setting"),
    ("objective", "objective"),
    ("params", "params"),
    ("batch", "batch"),
    ("pyrogen_ms", "pyrogen step ms", ".2f"),
    ("reference_ms", "hand-written ms", ".2f"),
    ("ratio", "ratio", ".3f"),
    ("cpu_ratio", "CPU-time ratio", ".3f"),
]


def main(argv=None) -> int:
    args = parse_args(argv)
    limiter = set_threads(args.threads)  # noqa: F841
    import os

    import torch

    torch.set_num_threads(args.threads)
    loads = [list(os.getloadavg())]
    started = time.perf_counter()
    rows = []
    for name in args.settings.split(","):
        for objective in args.objectives.split(","):
            row = run_setting(name, objective, args)
            rows.append(row)
            print(
                f"{name:11s} {objective:7s} {row['pyrogen_ms']:.2f} / {row['reference_ms']:.2f} "
                f"ms = {row['ratio']:.3f}",
                flush=True,
            )
    loads.append(list(os.getloadavg()))
    summary = {
        **run_header("diffusion_overhead", args, cuda=args.device.startswith("cuda")),
        "load_averages": loads,
        "rows": rows,
        "target": TARGET,
        "total_s": time.perf_counter() - started,
    }
    out = Path(args.out)
    write_json_atomic(out.with_suffix(".json"), summary)
    met = [f"{r['setting']} {r['objective']}" for r in rows if r["ratio"] <= TARGET]
    text = [
        f"T = {args.timesteps}, device {args.device}, {args.threads} torch thread(s), median of "
        f"{args.repeats} alternating blocks of ~{args.block_s} s; load average "
        f"{loads[0][0]:.1f} / {loads[-1][0]:.1f} (before / after)"
        + (" (quick mode: smoke test)" if args.quick else "")
        + ".",
        "",
        markdown_table(rows, COLUMNS),
        "",
        f"Target ratio <= {TARGET}: met for {', '.join(met) or 'none'} of {len(rows)} rows.",
    ]
    write_text_atomic(out.with_suffix(".md"), "\n".join(text) + "\n")
    print(text_table(rows, COLUMNS))
    print(f"total {summary['total_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
