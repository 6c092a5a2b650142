"""Sampling throughput of ``pyrogen.DiffusionVAE``: T-step ancestral sampling (DDPM) against
DDIM with 50 steps, images per second and peak memory, in one run.

The model is the UNet of ``diffusion_overhead.py`` on (1, 28, 28) images with T = 1000
(untrained: the cost of a step does not depend on the weights). Each method draws
``--images`` images in one batch; time is the best of ``--repeats`` calls of
``model.sample``; peak memory is the growth of the resident set of a fresh process over one
call (``benchmarks.common.peak_rss_of``) and, on a GPU, ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (  # noqa: E402
    format_bytes,
    markdown_table,
    peak_rss_of,
    run_header,
    set_threads,
    text_table,
    time_best_of,
    write_json_atomic,
    write_text_atomic,
)

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke test (< 1 min)")
    parser.add_argument("--timesteps", type=int, default=None, help="T (full 1000)")
    parser.add_argument("--ddim-steps", type=int, default=50)
    parser.add_argument("--images", type=int, default=None, help="per call (full 16)")
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=None, help="full 1")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS / "diffusion_sampling"))
    args = parser.parse_args(argv)
    full, quick = (
        {"timesteps": 1000, "images": 64, "repeats": 2},
        {
            "timesteps": 50,
            "images": 4,
            "repeats": 1,
        },
    )
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.ddim_steps = min(args.ddim_steps, args.timesteps)
    return args


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
    args = parse_args(argv)
    limiter = set_threads(args.threads)  # noqa: F841
    import torch

    torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else None
    model = build(args.timesteps, args.channels, args.device)
    started = time.perf_counter()
    rows = []
    for method, steps in (("ancestral", None), ("ddim", args.ddim_steps)):
        timing = time_best_of(
            lambda method=method, steps=steps: draw(model, args.images, method, steps),
            args.repeats,
            sync=sync,
        )
        memory = peak_rss_of(
            draw,
            args.images,
            method,
            steps,
            prepare=build,
            prepare_args=(args.timesteps, args.channels, args.device),
            threads=args.threads,
            cuda=cuda,
        )
        row = {
            "method": method,
            "steps": steps or args.timesteps,
            "images": args.images,
            "seconds": timing.best,
            "images_per_s": args.images / timing.best,
            "peak_rss_growth": memory.get("growth_bytes"),
            "cuda_peak": memory.get("cuda_peak_allocated_bytes"),
        }
        rows.append(row)
        print(
            f"{method:9s} {row['steps']:5d} steps: {row['images_per_s']:.3f} images/s, "
            f"peak RSS growth {format_bytes(row['peak_rss_growth'])}",
            flush=True,
        )
    speedup = rows[1]["images_per_s"] / rows[0]["images_per_s"]
    summary = {
        **run_header("diffusion_sampling", args, cuda=cuda),
        "rows": rows,
        "ddim_speedup": speedup,
        "total_s": time.perf_counter() - started,
    }
    out = Path(args.out)
    write_json_atomic(out.with_suffix(".json"), summary)
    for row in rows:
        row["peak"] = format_bytes(row["peak_rss_growth"])
        row["gpu_peak"] = format_bytes(row["cuda_peak"]) if row["cuda_peak"] else ""
    columns = [
        ("method", "method"),
        ("steps", "steps"),
        ("images", "images per call"),
        ("seconds", "seconds per call", ".2f"),
        ("images_per_s", "images / s", ".3f"),
        ("peak", "peak RSS growth"),
    ] + ([("gpu_peak", "GPU peak")] if cuda else [])
    text = [
        f"UNet (channels {args.channels}) on (1, 28, 28), T = {args.timesteps}, device "
        f"{args.device}, {args.threads} torch thread(s), best of {args.repeats}"
        + (" (quick mode: smoke test)" if args.quick else "")
        + ".",
        "",
        markdown_table(rows, columns),
        "",
        f"DDIM with {args.ddim_steps} steps: {speedup:.1f}x the images per second of "
        f"{args.timesteps}-step ancestral sampling.",
    ]
    write_text_atomic(out.with_suffix(".md"), "\n".join(text) + "\n")
    print(text_table(rows, columns))
    print(f"total {summary['total_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
