"""Training throughput (images/s) of pyrogen's neural families against hand-written PyTorch,
in float32 and bf16-mixed precision; written for a GPU, runs on the CPU too.

Every family trains on 60,000 synthetic MNIST-shaped images (uniform noise: throughput does
not depend on pixel values; the diffusion rows round them to the levels k / 255). Each pyrogen
model is compared with ``references.train_loop`` on a deep copy of the same network, with the
same batches, ``torch.optim.Adam(lr=1e-3)``, the same objective and ``loss.item()`` every step:

* ``vae``: ``pyrogen.VAE(data_shape=(784,))`` against ``references.vae_loss``;
* ``flow``: ``FlowDensity((784,), "realnvp", transforms=5, hidden=(256, 256),
  standardize=False)`` against zuko used directly (``references.flow_loss``);
* ``diffusion-simple`` / ``diffusion-elbo``: ``DiffusionVAE((1, 28, 28), 1000,
  likelihood="discretized")`` with its UNet against ``references.diffusion_loss``.

``--precision bf16-mixed``: ``pyrogen.fit(..., precision="bf16-mixed")`` against the
hand-written network forward under ``torch.autocast(bfloat16)`` (``references.autocast_forward``),
losses in float32. Timing: whole calls taking turns after one warm-up call each; the steady
time per step excludes each call's first step; images/s = batch / steady step time.
"""

from __future__ import annotations

import copy

import torch

import pyrogen
from benchmarks import harness, references

FAMILIES = "vae,flow,diffusion-simple,diffusion-elbo"
COLUMNS = [
    ("family", "family"),
    ("precision", "precision"),
    ("batch_size", "batch"),
    ("pyrogen_images_per_s", "pyrogen img/s", ",.0f"),
    ("reference_images_per_s", "hand-written img/s", ",.0f"),
    ("ratio", "ratio", ".3f"),
    ("pyrogen_bf16_speedup", "pyrogen bf16 x", ".2f"),
    ("reference_bf16_speedup", "hand-written bf16 x", ".2f"),
    ("step1_loss_rel_diff", "step-1 loss rel. diff", ".1e"),
]


def build(family: str, precision: str, images, args, device) -> dict:
    """The pyrogen model, its data, the hand-written module and loss, from the same weights."""
    torch.manual_seed(args.seed)
    if family == "vae":
        x = images.flatten(1).to(device)
        model = pyrogen.VAE(data_shape=(784,)).to(device)
        nets, loss = references.vae_networks(model), references.vae_loss
        modules = [nets["encoder"], nets["decoder"]]
    elif family == "flow":
        x = images.flatten(1).to(device)
        model = pyrogen.FlowDensity(
            (784,), "realnvp", transforms=5, hidden=(256, 256), standardize=False
        ).to(device)
        model.setup(x)
        nets, loss = copy.deepcopy(model.flow), references.flow_loss
        modules = []  # the flow's networks run inside log_prob: autocast the loss instead
    else:
        x = ((images * 255).round() / 255).unsqueeze(1).to(device)
        objective = family.split("-", 1)[1]
        model = pyrogen.DiffusionVAE(
            (1, 28, 28), 1000, likelihood="discretized", objective=objective, channels=args.channels
        )
        model.setup(x)
        model.to(device)
        nets, loss = references.diffusion_loss(model, objective)
        modules = [nets]
    if precision == "bf16-mixed":
        for module in modules:
            references.autocast_forward(module, device.type)
        if family == "flow":
            plain = loss

            def loss(module, batch, num_data, plain=plain):
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    return plain(module, batch, num_data).float()

    return {"model": model, "x": x, "nets": nets, "loss": loss}


def run_family(family: str, images, run: harness.Run) -> list[dict]:
    args = run.args
    calls, built, first_losses = {}, {}, {}
    options = {"batch_size": args.batch_size, "seed": args.seed}
    for precision in args.precision.replace("both", "32,bf16-mixed").split(","):
        s = built[precision] = build(family, precision, images, args, run.device)
        extra = {"precision": precision} if precision != "32" else {}

        def pyrogen_call(stamps, steps=args.fit_steps, s=s, extra=extra, options=options):
            return references.pyrogen_fit(
                s["model"], s["x"], steps=steps, stamps=stamps, **options, **extra
            ).losses

        def reference_call(stamps, steps=args.fit_steps, s=s, options=options):
            return references.train_loop(
                s["nets"], s["loss"], s["x"], steps=steps, stamps=stamps, **options
            )

        first_losses[precision] = (pyrogen_call(None, 1)[0], reference_call(None, 1)[0])
        calls[f"pyrogen {precision}"] = pyrogen_call
        calls[f"reference {precision}"] = reference_call
    for call in calls.values():  # warm-up
        call([])
    timings = harness.time_fit_calls(calls, args.fit_steps, args.fit_repeats, sync=run.sync)
    rows = []
    for precision in built:
        p = timings[f"pyrogen {precision}"]["steady_ms"]
        r = timings[f"reference {precision}"]["steady_ms"]
        a, b = first_losses[precision]
        rows.append(
            {
                "family": family,
                "precision": precision,
                "batch_size": args.batch_size,
                "pyrogen_images_per_s": 1e3 * args.batch_size / p,
                "reference_images_per_s": 1e3 * args.batch_size / r,
                "ratio": r / p,
                "step1_loss_rel_diff": abs(a - b) / abs(b),
            }
        )
    for row in rows[1:]:
        for side in ("pyrogen", "reference"):
            key = f"{side}_images_per_s"
            row[f"{side}_bf16_speedup"] = row[key] / rows[0][key]
    return rows


def main(argv=None) -> int:
    options = harness.parser(
        __doc__, threads=0, device="cuda" if torch.cuda.is_available() else "cpu"
    )
    options.add_argument("--families", default=None, help=FAMILIES)
    options.add_argument("--precision", default=None, help="32, bf16-mixed, or both")
    options.add_argument("--batch-size", type=int, default=None, help="128")
    options.add_argument("--fit-steps", type=int, default=None, help="steps per call (100)")
    options.add_argument("--fit-repeats", type=int, default=None, help="timed calls (5)")
    options.add_argument("--channels", type=int, default=None, help="UNet channels (32)")
    run = harness.start(
        "scale_gpu",
        options,
        argv,
        full={"families": FAMILIES, "precision": "both", "batch_size": 128}
        | {"fit_steps": 100, "fit_repeats": 5, "channels": 32},
        quick={"families": "vae,flow,diffusion-elbo", "precision": "both", "batch_size": 4}
        | {"fit_steps": 2, "fit_repeats": 1, "channels": 4},
    )
    images = torch.rand(60_000, 28, 28, generator=torch.Generator().manual_seed(run.args.seed))
    rows = [
        row for family in run.args.families.split(",") for row in run_family(family, images, run)
    ]
    run.write(
        "Training throughput: pyrogen vs hand-written PyTorch",
        [harness.Table(rows, COLUMNS)],
        notes=[
            f"Synthetic images; batch {run.args.batch_size}; steady time per step, median of "
            f"{run.args.fit_repeats} calls of {run.args.fit_steps} steps each, taking turns. "
            "Ratio: pyrogen img/s over hand-written img/s (1 = as fast). bf16 x: bf16-mixed "
            "img/s over float32 img/s. Step-1 loss rel. diff: the first loss of the two sides "
            "from the same weights and batch (the diffusion sides draw steps and noise in "
            "another order)."
        ],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
