"""One training step of ``pyrogen.DiffusionVAE`` against a hand-written PyTorch DDPM loop on a
deep copy of the same network, in the same run.

The reference (``references.diffusion_loss``) reads the model's noise schedule once and trains
a copy of its denoiser with ``torch.optim.Adam`` on the same batch; both draw one step t per
example:

* ``simple``: pyrogen's ``objective="simple"`` (DDPM's loss through Pyro) against the classic
  loop, (N / B) sum ||eps - net(z_t, t / T)||^2 / 2;
* ``elbo``: pyrogen's default ``objective="elbo"`` against the same unbiased ELBO estimate
  written out from its closed forms.

Settings: a UNet on MNIST-shaped 8-bit images (1, 28, 28) with the discretized likelihood,
batch 64; an MLP on 2-D data with the Gaussian likelihood, batch 256. Time per raw step
(``zero_grad``, loss, ``backward``, ``Adam.step``, Pyro validation off): median over
alternating blocks. Target: pyrogen / reference <= 1.10.
"""

from __future__ import annotations

import pyro
import torch

import pyrogen
from benchmarks import harness, references

TARGET = 1.10
NUM_DATA = 60_000
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


def make_model(setting: str, objective: str, args, device):
    """The model (set up on its data) and a batch."""
    torch.manual_seed(args.seed)
    if setting == "unet-mnist":
        shape, likelihood, options = (1, 28, 28), "discretized", {"channels": args.channels}
        x = torch.randint(0, 256, (args.unet_batch, *shape)) / 255
    else:
        shape, likelihood, options = (2,), "gaussian", {"hidden": (256, 256, 256)}
        x = torch.randn(256, *shape)
    model = pyrogen.DiffusionVAE(
        shape, args.timesteps, likelihood=likelihood, objective=objective, **options
    )
    model.setup(x)
    return model.to(device), x.to(device)


def run_setting(setting: str, objective: str, run: harness.Run) -> dict:
    model, x = make_model(setting, objective, run.args, run.device)
    network, loss = references.diffusion_loss(model, objective)
    with pyro.validation_enabled(False):
        timings = harness.time_steps(
            {
                "pyrogen": references.step_fn(
                    model.parameters(), lambda: references.pyro_loss(model, x, NUM_DATA), 1e-4
                ),
                "reference": references.step_fn(
                    network.parameters(), lambda: loss(network, x, NUM_DATA), 1e-4
                ),
            },
            run.args.repeats,
            run.args.block_s,
            sync=run.sync,
        )
    p, r = timings["pyrogen"], timings["reference"]
    return {
        "setting": setting,
        "objective": objective,
        "params": sum(q.numel() for q in network.parameters()),
        "batch": x.shape[0],
        "pyrogen_ms": p["ms"],
        "reference_ms": r["ms"],
        "ratio": p["ms"] / r["ms"],
        "cpu_ratio": p["cpu_ms"] / r["cpu_ms"],
    }


def main(argv=None) -> int:
    options = harness.parser(__doc__)
    options.add_argument("--settings", default=None, help="unet-mnist,mlp-2d")
    options.add_argument("--objectives", default="simple,elbo")
    options.add_argument("--timesteps", type=int, default=1000)
    options.add_argument("--channels", type=int, default=None, help="UNet base channels (32)")
    options.add_argument("--unet-batch", type=int, default=None, help="UNet batch (64)")
    options.add_argument("--repeats", type=int, default=None, help="timed blocks (9)")
    options.add_argument("--block-s", type=float, default=None, help="seconds per block (2)")
    run = harness.start(
        "diffusion_overhead",
        options,
        argv,
        full={"settings": "unet-mnist,mlp-2d", "channels": 32, "repeats": 9, "block_s": 2.0}
        | {"unet_batch": 64},
        quick={"settings": "unet-mnist,mlp-2d", "channels": 4, "repeats": 1, "block_s": 0.01}
        | {"unet_batch": 4},
    )
    args = run.args
    rows = [
        run_setting(setting, objective, run)
        for setting in args.settings.split(",")
        for objective in args.objectives.split(",")
    ]
    met = [f"{r['setting']} {r['objective']}" for r in rows if r["ratio"] <= TARGET]
    run.write(
        "DiffusionVAE training step vs a hand-written DDPM loop",
        [harness.Table(rows, COLUMNS)],
        notes=[
            f"T = {args.timesteps}, UNet channels {args.channels}; median of {args.repeats} "
            f"alternating blocks of ~{args.block_s} s. Target ratio <= {TARGET}: met for "
            f"{', '.join(met) or 'none'} of {len(rows)} rows."
        ],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
