"""Training throughput (images/s) of pyrogen's neural families against hand-written PyTorch,
in float32 and bf16-mixed precision; written for a GPU, runs on the CPU too.

Every family trains on MNIST-shaped data: N = 60,000 **synthetic** images, uniform [0, 1]
noise of shape 28 x 28 drawn from ``--seed`` (not MNIST: throughput does not depend on the
pixel values; the diffusion rows round them to the 256 levels k / 255 that its discretized
likelihood scores). Each pyrogen model is compared with a hand-written PyTorch loop on a deep
copy of the same network (same initial weights), with the same batches (``pyrogen.fit``'s
seeded shuffle), ``torch.optim.Adam(lr=1e-3)``, the same objective and ``loss.item()`` every
step:

* ``vae``: ``pyrogen.VAE()`` with its default networks (MLP 784-400-50, Bernoulli
  likelihood on logits, analytic KL) against ``vae_overhead.reference_loss`` (BCE with logits
  + the closed-form KL, x N / B) in ``vae_overhead.reference_fit``'s loop.
* ``flow``: ``pyrogen.FlowDensity((784,), "realnvp", transforms=5, hidden=(256, 256),
  standardize=False)`` (``flows_density.py``'s MNIST flow, without its dequantization, so that
  the density *is* the zuko flow) against zuko used directly, as in ``flows_overhead.py``: a
  deep copy of ``model.flow`` trained on ``-(N / B) sum log p(x_b)``.
* ``diffusion-simple`` / ``diffusion-elbo``: ``pyrogen.DiffusionVAE((1, 28, 28), 1000,
  likelihood="discretized")`` with its UNet denoiser (channels 32), ``objective="simple"`` and
  the default ``"elbo"``, against the hand-written DDPM loss and ELBO estimator of
  ``diffusion_overhead.make_setting`` on a copy of the denoiser.

Precision (``--precision``): ``"32"``, or ``"bf16-mixed"``: pyrogen trains with
``pyrogen.fit(..., precision="bf16-mixed")`` (its linear and convolution layers under
``torch.autocast(bfloat16)``, each output cast back to float32, so every log-density stays
float32); the hand-written side runs its network forward under ``torch.autocast(device_type,
dtype=torch.bfloat16)`` with the outputs cast to float32 (the VAE's encoder and decoder, the
UNet; for the flow, whose network runs inside ``log_prob``, the flow's ``log_prob``), and
computes its loss from them in float32.

Timing, as ``vae_overhead.py``'s engine rows (``vae_overhead.time_fits``): whole
``pyrogen.fit(model, x, steps=S, batch_size=B, seed=...)`` calls against whole hand-written
loops of S steps, every implementation and precision taking turns (the order reverses every
round), after one untimed warm-up call each. A callback (``pyrogen.fit``) and the loop itself
stamp the clock after every step; the **steady** time per step is (last stamp - first stamp) /
(S - 1), so the first step of every call (Pyro's validation, the data checks, CUDA warm-up) is
excluded; the median over calls is reported as images/s = B / steady step time. CUDA is
synchronized after every warm-up and timed call (every step syncs anyway, on ``loss.item()``).

Usage::

    python benchmarks/scale_gpu.py                      # cuda if available: fp32 and bf16
    python benchmarks/scale_gpu.py --quick --device cpu --threads 1 \\
        --out benchmarks/results/scale_gpu_cpu_quick    # smoke test on the CPU (fp32)

Writes ``benchmarks/results/scale_gpu.json`` and ``.md`` (``--out`` to change the stem).
"""

from __future__ import annotations

import argparse
import copy
import functools
import inspect
import math
import os
import sys
import time
import traceback
from pathlib import Path
from types import SimpleNamespace
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common, diffusion_overhead, vae_overhead  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
NAME = "scale_gpu"
FAMILIES = ("vae", "flow", "diffusion-simple", "diffusion-elbo")
PRECISIONS = ("32", "bf16-mixed")
# MNIST's training set size; diffusion_overhead's hand-written loss scales by 60,000 too.
N_IMAGES = 60_000
LR = vae_overhead.LR
DATA_NOTE = (
    "synthetic: 60,000 images of uniform [0, 1] noise, 28 x 28 (not MNIST); the diffusion rows "
    "use them rounded to the levels k / 255"
)


# --- data and the two sides ------------------------------------------------------------------


def synthetic_images(seed: int, n: int = N_IMAGES):
    """(n, 28, 28) uniform [0, 1] noise on the CPU, from a seeded generator."""
    import torch

    return torch.rand(n, 28, 28, generator=torch.Generator().manual_seed(seed))


def _float32(out: Any) -> Any:
    import torch

    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, (tuple, list)):
        return type(out)(_float32(o) for o in out)
    return out


def autocast_forward(module, device_type: str):
    """Run ``module``'s forward under ``torch.autocast(device_type, bfloat16)`` from now on,
    its floating outputs cast back to float32 (an instance attribute shadowing the class's
    ``forward``). Returns the module."""
    import torch

    forward = module.forward

    def run(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast(device_type, dtype=torch.bfloat16):
            out = forward(*args, **kwargs)
        return _float32(out)

    module.forward = run
    return module


def flow_loss(flow, batch, num_data: int):
    """zuko used directly (flows_overhead.py's reference): -(N / B) sum_b log p(x_b)."""
    return -(num_data / batch.shape[0]) * flow().log_prob(batch).sum()


def flow_loss_bf16(device_type: str):
    """:func:`flow_loss` with the flow's log_prob (where its networks run) under autocast."""
    import torch

    def loss(flow, batch, num_data: int):
        with torch.autocast(device_type, dtype=torch.bfloat16):
            log_p = flow().log_prob(batch)
        return -(num_data / batch.shape[0]) * log_p.float().sum()

    return loss


def build_setting(family: str, precision: str, images, args, device) -> dict[str, Any]:
    """The pyrogen model, its data on ``device``, the hand-written side's module (what its
    Adam trains) and loss ``loss_fn(nets, batch, num_data)``, from the same weights."""
    import torch

    import pyrogen

    bf16 = precision == "bf16-mixed"
    device_type = device.type
    if family == "vae":
        x = vae_overhead.network_data(images, "mlp", device)  # (N, 784)
        model, nets = vae_overhead.build_pair("mlp", device, args.seed)
        if bf16:
            autocast_forward(nets["encoder"], device_type)
            autocast_forward(nets["decoder"], device_type)
        return {"model": model, "x": x, "nets": nets, "loss_fn": vae_overhead.reference_loss}
    if family == "flow":
        x = images.reshape(images.shape[0], -1).to(device)
        torch.manual_seed(args.seed)
        model = pyrogen.FlowDensity(
            (784,),
            "realnvp",
            transforms=args.flow_transforms,
            hidden=tuple(args.flow_hidden),
            standardize=False,
        ).to(device)
        model.setup(x)
        nets = copy.deepcopy(model.flow)
        loss_fn = flow_loss_bf16(device_type) if bf16 else flow_loss
        return {"model": model, "x": x, "nets": nets, "loss_fn": loss_fn}
    objective = family.split("-", 1)[1]
    options = SimpleNamespace(
        seed=args.seed, device=str(device), timesteps=args.timesteps, channels=args.channels
    )
    model, network, _, _, hand_written = diffusion_overhead.make_setting(
        "unet-mnist", objective, options
    )
    x = ((images * 255).round() / 255).reshape(images.shape[0], 1, 28, 28).to(device)
    if bf16:
        autocast_forward(network, device_type)

    def loss_fn(nets, batch, num_data: int):
        return hand_written(batch)  # scales by N = 60,000 itself

    return {"model": model, "x": x, "nets": network, "loss_fn": loss_fn}


def fit_has_precision() -> bool:
    import pyrogen

    return "precision" in inspect.signature(pyrogen.fit).parameters


# --- timing ----------------------------------------------------------------------------------


def run_family(
    family: str, images, args, device, sync, errors: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Warm-up and timed fit calls of both sides at every precision, taking turns.

    A precision whose setting or warm-up call fails on either side is left out (the error is
    appended to ``errors``); the others are still timed.
    """
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    calls: dict[str, Any] = {}
    settings: dict[str, dict[str, Any]] = {}
    warmup_losses: dict[str, list[float]] = {}
    for precision in args.precision:
        options: dict[str, Any] = {"lr": LR}
        if args.fit_precision:
            options["precision"] = precision

        def pyrogen_call(steps, stamps=None, precision=precision, o=options):
            s = settings[precision]
            return vae_overhead.pyrogen_fit(
                s["model"],
                s["x"],
                steps=steps,
                batch_size=args.batch_size,
                seed=args.seed,
                stamps=stamps,
                **o,
            )

        def reference_call(steps, stamps=None, precision=precision):
            s = settings[precision]
            return vae_overhead.reference_fit(
                s["nets"],
                s["x"],
                steps=steps,
                batch_size=args.batch_size,
                seed=args.seed,
                stamps=stamps,
                loss_fn=s["loss_fn"],
            )

        pair = {f"pyrogen {precision}": pyrogen_call, f"hand-written {precision}": reference_call}
        try:
            settings[precision] = build_setting(family, precision, images, args, device)
            # Untimed warm-up call of each, from the shared initial weights: the step-1 losses
            # are compared.
            for name, call in pair.items():
                warmup_losses[name] = call(args.warmup_steps)
                if sync is not None:
                    sync()
        except Exception as error:  # record it; time the other precisions
            traceback.print_exc()
            errors.append(
                {
                    "family": family,
                    "precision": precision,
                    "error": f"{type(error).__name__}: {error}",
                }
            )
            settings.pop(precision, None)
            continue
        calls.update(pair)
    if not calls:
        return []
    timings = vae_overhead.time_fits(
        {name: (lambda stamps, c=call: c(args.fit_steps, stamps)) for name, call in calls.items()},
        args.fit_steps,
        args.fit_repeats,
        sync,
    )
    cuda_peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None

    rows = []
    for precision, setting in settings.items():
        p, r = timings[f"pyrogen {precision}"], timings[f"hand-written {precision}"]
        p_losses = warmup_losses[f"pyrogen {precision}"]
        r_losses = warmup_losses[f"hand-written {precision}"]
        p_first, r_first = p_losses[0], r_losses[0]
        row = {
            "family": family,
            "precision": precision,
            "batch_size": args.batch_size,
            "parameters": sum(q.numel() for q in setting["model"].parameters()),
            "pyrogen_ms": p["steady_median_ms"],
            "reference_ms": r["steady_median_ms"],
            "pyrogen_images_per_s": 1e3 * args.batch_size / p["steady_median_ms"],
            "reference_images_per_s": 1e3 * args.batch_size / r["steady_median_ms"],
            "pyrogen_best_images_per_s": 1e3 * args.batch_size / p["steady_best_ms"],
            "reference_best_images_per_s": 1e3 * args.batch_size / r["steady_best_ms"],
            "pyrogen_whole_call_ms_per_step": p["median_ms"],
            "reference_whole_call_ms_per_step": r["median_ms"],
            "pyrogen_fixed_ms_per_call": p["fixed_median_ms"],
            "reference_fixed_ms_per_call": r["fixed_median_ms"],
            "pyrogen_step1_loss": p_first,
            "reference_step1_loss": r_first,
            "step1_loss_rel_diff": abs(p_first - r_first) / abs(r_first)
            if r_first and math.isfinite(r_first)
            else None,
            "pyrogen_warmup_losses": p_losses,
            "reference_warmup_losses": r_losses,
            "cuda_peak_allocated_mib": cuda_peak,
            "pyrogen": p,
            "reference": r,
        }
        row["ratio"] = row["pyrogen_images_per_s"] / row["reference_images_per_s"]
        rows.append(row)
    fp32 = next((row for row in rows if row["precision"] == "32"), None)
    for row in rows:
        if fp32 is not None and row["precision"] != "32":
            for side in ("pyrogen", "reference"):
                row[f"{side}_bf16_speedup"] = (
                    row[f"{side}_images_per_s"] / fp32[f"{side}_images_per_s"]
                )
    return rows


# --- report ----------------------------------------------------------------------------------

COLUMNS = [
    ("family", "family"),
    ("precision", "precision"),
    ("batch_size", "batch"),
    ("pyrogen_images_per_s", "pyrogen img/s", ",.0f"),
    ("reference_images_per_s", "hand-written img/s", ",.0f"),
    ("ratio", "ratio", ".3f"),
    ("pyrogen_bf16_speedup", "pyrogen bf16 x", ".2f"),
    ("reference_bf16_speedup", "hand-written bf16 x", ".2f"),
    ("pyrogen_ms", "pyrogen ms/step", ".2f"),
    ("reference_ms", "hand-written ms/step", ".2f"),
    ("step1_loss_rel_diff", "step-1 loss rel. diff", ".1e"),
]


def markdown_report(payload: dict[str, Any]) -> str:
    s, versions = payload["settings"], payload["versions"]
    lines = [
        "# Training throughput: pyrogen vs hand-written PyTorch",
        "",
        f"Run {payload['timestamp']} on `{s['device']}` ({payload['device_name']}); "
        f"torch {versions.get('torch')}, pyro {versions.get('pyro')}, zuko "
        f"{versions.get('zuko')}, pyrogen {versions.get('pyrogen')}; "
        f"{s['threads'] or 'default'} torch thread(s). Data: {DATA_NOTE}. Batch "
        f"{s['batch_size']}; UNet channels {s['channels']}, T = {s['timesteps']}; RealNVP "
        f"{s['flow_transforms']} x {tuple(s['flow_hidden'])}. Steady time per step (first "
        f"step of each call excluded), median of {s['fit_repeats']} calls of {s['fit_steps']} "
        f"steps per implementation and precision, taking turns after one warm-up call each; "
        f"images/s = batch / step time. Ratio: pyrogen img/s / hand-written img/s (1 = "
        "as fast). bf16 x: img/s in bf16-mixed over img/s in float32, per implementation. "
        "Step-1 loss rel. diff: the first step's loss of the two sides from the same weights "
        "and batch (the VAE and the flow draw the same noise or none; the diffusion sides "
        "draw their steps and noise in another order, so only the order of magnitude agrees).",
        "",
        common.markdown_table(payload["rows"], COLUMNS),
        "",
    ]
    if payload["errors"]:
        lines += [
            "Failed: "
            + "; ".join(
                f"{e['family']} {e['precision'] or ''}: {e['error']}" for e in payload["errors"]
            ),
            "",
        ]
    if payload["precision_note"]:
        lines += [f"*{payload['precision_note']}*", ""]
    lines += common.busy_machine_note(
        payload["summary"],
        payload["machine"],
        "the implementations took turns, which keeps the ratios fairer than the absolute "
        "throughputs.",
    )
    if s["quick"]:
        lines += ["*Quick mode: a smoke test with short calls, not the reference numbers.*", ""]
    return "\n".join(lines)


# --- driver ----------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke test (about a minute)")
    parser.add_argument(
        "--device", default=None, help="cuda if available, else cpu (both sides run there)"
    )
    parser.add_argument(
        "--precision",
        default=None,
        choices=("32", "bf16-mixed", "both"),
        help="default: both on cuda, 32 on cpu",
    )
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated")
    parser.add_argument("--batch-size", type=int, default=None, help="default 128 (quick 32)")
    parser.add_argument("--fit-steps", type=int, default=None, help="steps per call (100)")
    parser.add_argument("--fit-repeats", type=int, default=None, help="timed calls each (5)")
    parser.add_argument("--warmup-steps", type=int, default=None, help="warm-up call steps (10)")
    parser.add_argument("--channels", type=int, default=None, help="UNet channels (32; quick 8)")
    parser.add_argument("--timesteps", type=int, default=1000)
    parser.add_argument("--flow-transforms", type=int, default=5)
    parser.add_argument("--flow-hidden", default="256,256")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=0, help="torch and BLAS threads (0: library defaults)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / NAME, help="output stem")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "batch_size": 32 if quick else 128,
        "fit_steps": 5 if quick else 100,
        "fit_repeats": 2 if quick else 5,
        "warmup_steps": 2 if quick else 10,
        "channels": 8 if quick else 32,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = set(args.families) - set(FAMILIES)
    if unknown:
        parser.error(f"--families: unknown {sorted(unknown)}, expected from {FAMILIES}")
    args.flow_hidden = [int(h) for h in args.flow_hidden.split(",") if h.strip()]
    if args.fit_steps < 2:
        parser.error("--fit-steps: expected at least 2 (the steady step time needs two)")
    if args.warmup_steps < 1:
        parser.error("--warmup-steps: expected at least 1")
    if args.threads == 0:
        args.threads = None
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    load_before = common.load_average()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before libgomp loads
    limiter = common.set_threads(args.threads, preload=("numpy", "torch"))  # noqa: F841
    import torch

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        print("--device cuda: no CUDA device here", file=sys.stderr)
        return 2
    if args.precision is None:
        args.precision = "both" if cuda else "32"
    args.precision = list(PRECISIONS) if args.precision == "both" else [args.precision]
    args.fit_precision = fit_has_precision()
    precision_note = None
    if not args.fit_precision:
        precision_note = "pyrogen.fit has no `precision` argument in this version: float32 only."
        if args.precision != ["32"]:
            print(f"warning: {precision_note}", file=sys.stderr)
            args.precision = ["32"]
    sync = functools.partial(torch.cuda.synchronize, device) if cuda else None
    device_name = torch.cuda.get_device_name(device) if cuda else common.cpu_model()

    images = synthetic_images(args.seed)
    rows, errors = [], []
    for family in args.families:
        print(f"{family}: {', '.join(args.precision)} ...", file=sys.stderr, flush=True)
        try:
            family_rows = run_family(family, images, args, device, sync, errors)
        except Exception as error:  # record it and go on with the other families
            traceback.print_exc()
            errors.append(
                {"family": family, "precision": None, "error": f"{type(error).__name__}: {error}"}
            )
            continue
        for row in family_rows:
            rows.append(row)
            print(
                f"    {row['precision']:>10}: pyrogen {row['pyrogen_images_per_s']:,.0f} img/s, "
                f"hand-written {row['reference_images_per_s']:,.0f} img/s, "
                f"ratio {row['ratio']:.3f}",
                file=sys.stderr,
                flush=True,
            )

    payload = {
        **common.run_header(
            NAME, args, packages=("torch", "pyro", "zuko", "numpy", "pyrogen"), cuda=cuda
        ),
        "device_name": device_name,
        "data": DATA_NOTE,
        "precision_note": precision_note,
        "backend_flags": {
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        },
        "method": {
            "timing": "vae_overhead.time_fits: whole pyrogen.fit calls vs whole hand-written "
            "loops (vae_overhead.reference_fit), all taking turns; steady step = (last - first "
            "per-step stamp) / (steps - 1); median over calls; images/s = batch / steady",
            "optimizer": f"torch.optim.Adam(lr={LR}) on both sides",
            "bf16_pyrogen": "pyrogen.fit(..., precision='bf16-mixed')",
            "bf16_hand_written": "network forward (flow: log_prob) under torch.autocast("
            "device_type, dtype=torch.bfloat16), outputs cast to float32, loss in float32",
        },
        "rows": rows,
        "errors": errors,
        "summary": common.run_summary(started, load_before),
    }
    written = common.write_results(args.out, payload, markdown_report(payload))
    print(common.text_table(rows, COLUMNS))
    for error in errors:
        print(f"FAILED {error['family']} {error['precision'] or ''}: {error['error']}")
    print(f"\n{written}")
    return 1 if errors and not rows else 0


if __name__ == "__main__":
    sys.exit(main())
