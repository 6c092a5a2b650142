"""Sampling throughput of ``pyrogen.DiffusionVAE``: T-step ancestral sampling (DDPM) against
DDIM with 50 steps, images per second and peak memory, in one run.

The model is a UNet on (1, 28, 28) images with T = 1000 (untrained: a step's cost does not
depend on the weights). Each method draws ``--images`` images in one batch; time is the best
of ``--repeats`` calls of ``model.sample``; peak memory is the growth of the resident set of a
fresh process over one call (``harness.peak_rss_of``) and, on a GPU,
``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

from benchmarks import harness

COLUMNS = [
    ("method", "method"),
    ("steps", "steps"),
    ("images", "images per call"),
    ("seconds", "seconds per call", ".2f"),
    ("images_per_s", "images / s", ".3f"),
    ("peak", "peak RSS growth"),
    ("gpu_peak", "GPU peak"),
]


def build(timesteps: int, channels: int, device: str):
    import torch

    import pyrogen

    torch.manual_seed(0)
    model = pyrogen.DiffusionVAE(
        (1, 28, 28), timesteps, likelihood="discretized", channels=channels
    )
    return model.to(device)


def draw(model, images: int, method: str, steps: int | None) -> int:
    model.sample(images, method=method, steps=steps)
    return images


def main(argv=None) -> int:
    options = harness.parser(__doc__)
    options.add_argument("--timesteps", type=int, default=None, help="T (1000)")
    options.add_argument("--ddim-steps", type=int, default=50)
    options.add_argument("--images", type=int, default=None, help="per call (64)")
    options.add_argument("--channels", type=int, default=None, help="UNet channels (32)")
    options.add_argument("--repeats", type=int, default=None, help="timed calls (2)")
    run = harness.start(
        "diffusion_sampling",
        options,
        argv,
        full={"timesteps": 1000, "images": 64, "channels": 32, "repeats": 2},
        quick={"timesteps": 10, "images": 2, "channels": 4, "repeats": 1},
    )
    args = run.args
    steps = min(args.ddim_steps, args.timesteps)
    model = build(args.timesteps, args.channels, args.device)
    rows = []
    for method, method_steps in (("ancestral", None), ("ddim", steps)):
        timing = harness.time_interleaved(
            {method: lambda m=method, s=method_steps: draw(model, args.images, m, s)},
            args.repeats,
            sync=run.sync,
        )[method]
        memory = harness.peak_rss_of(
            draw,
            args.images,
            method,
            method_steps,
            prepare=build,
            prepare_args=(args.timesteps, args.channels, args.device),
            threads=args.threads or None,
            cuda=run.device.type == "cuda",
        )
        rows.append(
            {
                "method": method,
                "steps": method_steps or args.timesteps,
                "images": args.images,
                "seconds": timing.best,
                "images_per_s": args.images / timing.best,
                "peak": harness.format_bytes(memory.get("growth_bytes")),
                "gpu_peak": harness.format_bytes(memory.get("cuda_peak_allocated_bytes")),
            }
        )
    speedup = rows[1]["images_per_s"] / rows[0]["images_per_s"]
    run.write(
        "DiffusionVAE sampling: ancestral against DDIM",
        [harness.Table(rows, COLUMNS)],
        notes=[
            f"UNet (channels {args.channels}) on (1, 28, 28), T = {args.timesteps}, best of "
            f"{args.repeats}. DDIM with {steps} steps: {speedup:.1f}x the images per second "
            f"of {args.timesteps}-step ancestral sampling."
        ],
        data={"ddim_speedup": speedup},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
