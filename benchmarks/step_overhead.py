"""Every family's training step, eager and compiled (``compile=True``), against its
hand-written PyTorch twin on the same weights and batch, at a tiny and a realistic network
size, in one run; and the fixed cost of a ``pyrogen.fit`` call.

Twins (``benchmarks.references``): the VAE against the analytic-KL ELBO on deep copies of its
encoder and decoder; the flow against zuko used directly; the diffusion model against the
unbiased ELBO estimate written out from its closed forms; the autoregressive density (MADE)
against the Bernoulli log-likelihood of a copy of its network. Every side takes a raw step
(``zero_grad``, the loss, ``backward``, Adam's step, Pyro validation off as in every step
of ``fit`` after the first); median per-step time over alternating blocks. pyrogen's sides
step with the optimizer ``fit`` makes by default (:func:`pyrogen.nn.optim.adam`, Adam's
fused kernel), the twin with ``torch.optim.Adam()`` as a hand-written loop makes it.
*compiled* is the loss ``fit(..., compile=True)`` trains on
(:class:`pyrogen.infer.compiled.ReplayedLoss`): recorded once, replayed every step;
*inductor* the one ``compile="inductor"`` trains on: the recording's random draws made
eagerly, the rest compiled by ``torch.compile`` (``--no-inductor`` leaves it out; the
``--quick`` run does, as it compiles for tens of seconds per setting).

Targets (issue "per-step overhead"): compiled / hand-written <= 0.85 on the MLP VAE and the
diffusion MLP; pyrogen ms - hand-written ms <= 0.3 at the tiny size; a ``fit`` call's fixed
cost <= 20 ms.
"""

from __future__ import annotations

import argparse
import copy
import math
import time

import pyro
import torch

import pyrogen
from benchmarks import harness, references
from pyrogen.infer.compiled import ReplayedLoss
from pyrogen.infer.engine import _ELBOLoss
from pyrogen.nn.optim import adam

NUM_DATA = 60_000
COLUMNS = [
    ("family", "family"),
    ("size", "size"),
    ("batch", "batch"),
    ("eager_ms", "eager ms", ".3f"),
    ("compiled_ms", "compiled ms", ".3f"),
    ("reference_ms", "hand-written ms", ".3f"),
    ("eager_ratio", "eager / hand", ".3f"),
    ("compiled_ratio", "compiled / hand", ".3f"),
    ("compiled_extra_ms", "compiled - hand ms", ".3f"),
    ("inductor_ms", "inductor ms", ".3f"),
    ("inductor_ratio", "inductor / hand", ".3f"),
    ("adam_saved_ms", "fused Adam saves ms", ".3f"),
    ("recorded", "recorded"),
]
CALL_COLUMNS = [
    ("family", "family"),
    ("rows", "rows"),
    ("call_ms", "fit call ms (1 step)", ".1f"),
    ("step_ms", "one step ms", ".2f"),
    ("fixed_ms", "fixed cost ms", ".1f"),
]


def _bits(rows: int, features: int, seed: int) -> torch.Tensor:
    return (torch.rand(rows, features, generator=torch.Generator().manual_seed(seed)) > 0.5).float()


def vae(size: str, seed: int):
    d, hidden, latent, batch = (2, 32, 2, 64) if size == "tiny" else (784, 400, 50, 128)
    torch.manual_seed(seed)
    model = pyrogen.VAE((d,), latent_dim=latent, hidden=(hidden,))
    nets = references.vae_networks(model)
    return model, nets, references.vae_loss, _bits(batch, d, seed), f"MLP {d}-{hidden}-{latent}"


def flow(size: str, seed: int):
    d, hidden, batch = (2, 32, 64) if size == "tiny" else (8, 256, 256)
    x = torch.randn(batch, d, generator=torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)
    model = pyrogen.FlowDensity((d,), hidden=(hidden, hidden), standardize=False)
    model.setup(x)
    return model, copy.deepcopy(model.flow), references.flow_loss, x, f"MAF D={d}, {hidden}x2"


def diffusion(size: str, seed: int):
    hidden, batch = ((32,), 64) if size == "tiny" else ((256, 256, 256), 256)
    x = torch.randn(batch, 2, generator=torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)
    model = pyrogen.DiffusionVAE((2,), 1000, hidden=hidden)
    model.setup(x)
    network, loss = references.diffusion_loss(model, "elbo")
    return model, network, loss, x, f"MLP 2-D, {'x'.join(map(str, hidden))}"


def autoregressive(size: str, seed: int):
    d, batch = (6, 64) if size == "tiny" else (784, 128)
    x = _bits(batch, d, seed)
    torch.manual_seed(seed)
    model = pyrogen.AutoregressiveDensity((d,), network="made")
    model.setup(x)
    network = copy.deepcopy(model.network)
    return model, network, references.autoregressive_loss, x, f"MADE D={d}"


FAMILIES = {"vae": vae, "flow": flow, "diffusion": diffusion, "autoregressive": autoregressive}


def run_setting(family: str, size: str, run: harness.Run) -> dict:
    model, twin, twin_loss, batch, label = FAMILIES[family](size, run.args.seed)
    model, twin, batch = model.to(run.device), twin.to(run.device), batch.to(run.device)
    if not model.is_setup:
        model.setup(batch)
    eager = _ELBOLoss(model, model.loss)
    name = type(model).__name__
    replayed = ReplayedLoss(_ELBOLoss(model, model.loss), name)
    sides = {
        "eager": lambda: eager(batch, None, NUM_DATA),
        "compiled": lambda: replayed(batch, None, NUM_DATA),
        "reference": lambda: twin_loss(twin, batch, NUM_DATA),
    }
    if run.args.inductor:
        inductor = ReplayedLoss(_ELBOLoss(model, model.loss), name, mode="inductor")
        sides["inductor"] = lambda: inductor(batch, None, NUM_DATA)
    with pyro.validation_enabled(False):
        timings = harness.time_steps(
            {
                side: references.step_fn(
                    (twin if side == "reference" else model).parameters(),
                    loss,
                    optim=torch.optim.Adam if side == "reference" else adam,
                )
                for side, loss in sides.items()
            },
            run.args.repeats,
            run.args.block_s,
            sync=run.sync,
        )
    saved = _adam_saving(model, run)
    e, c, r = (timings[k]["ms"] for k in ("eager", "compiled", "reference"))
    i = timings["inductor"]["ms"] if run.args.inductor else math.nan
    recorded = "yes" if replayed.reason is None else f"no ({replayed.reason})"
    if run.args.inductor and inductor.uncompiled is not None:
        recorded += f"; inductor: uncompiled ({inductor.uncompiled})"
    return {
        "family": family,
        "size": f"{size}: {label}",
        "batch": batch.shape[0],
        "eager_ms": e,
        "compiled_ms": c,
        "reference_ms": r,
        "eager_ratio": e / r,
        "compiled_ratio": c / r,
        "compiled_extra_ms": c - r,
        "inductor_ms": i,
        "inductor_ratio": i / r,
        "adam_saved_ms": saved,
        "recorded": recorded,
    }


def _adam_saving(model, run: harness.Run) -> float:
    """ms per step that fit's fused Adam saves over ``torch.optim.Adam()``'s default on
    copies of ``model``'s trained parameters (random gradients): the part of a pyrogen
    side's lead that is the optimizer's."""
    steps = {}
    for name, optim in (("unfused", torch.optim.Adam), ("fused", adam)):
        params = [
            p.detach().clone().requires_grad_() for p in model.parameters() if p.requires_grad
        ]
        for p in params:
            p.grad = torch.randn_like(p)
        steps[name] = optim(params, lr=references.LR).step
    timings = harness.time_steps(steps, run.args.repeats, run.args.block_s / 4, sync=run.sync)
    return timings["unfused"]["ms"] - timings["fused"]["ms"]


def fit_call_cost(family: str, run: harness.Run) -> dict:
    """Median time of a one-step ``fit`` call on 2,048 rows minus one step's time."""
    model, _, _, batch, _ = FAMILIES[family]("tiny", run.args.seed)
    rows = batch.repeat(2048 // batch.shape[0], *([1] * (batch.dim() - 1))).to(run.device)
    options = {"batch_size": batch.shape[0], "progress": False, "device": run.device}
    pyrogen.fit(model, rows, steps=2, **options)  # imports and first-use costs
    calls, steps = [], []
    for _ in range(run.args.calls):
        stamps = []

        def stamp(step, loss, model, stamps=stamps):
            stamps.append(time.perf_counter())

        started = time.perf_counter()
        pyrogen.fit(model, rows, steps=2, callbacks=[stamp], **options)
        calls.append(time.perf_counter() - started)
        steps.append(stamps[1] - stamps[0])
    call, step = sorted(calls)[len(calls) // 2], sorted(steps)[len(steps) // 2]
    return {
        "family": family,
        "rows": rows.shape[0],
        "call_ms": call * 1e3,
        "step_ms": step * 1e3,
        "fixed_ms": (call - 2 * step) * 1e3,
    }


def main(argv=None) -> int:
    options = harness.parser(__doc__)
    options.add_argument("--families", default=",".join(FAMILIES))
    options.add_argument("--sizes", default=None, help="tiny,realistic")
    options.add_argument("--repeats", type=int, default=None, help="timed blocks (9)")
    options.add_argument("--block-s", type=float, default=None, help="seconds per block (1)")
    options.add_argument("--calls", type=int, default=None, help="timed fit calls (9)")
    options.add_argument(
        "--inductor",
        action=argparse.BooleanOptionalAction,
        default=None,
        help='time compile="inductor" too (default: in the full run)',
    )
    run = harness.start(
        "step_overhead",
        options,
        argv,
        full={
            "repeats": 9,
            "block_s": 1.0,
            "calls": 9,
            "sizes": "tiny,realistic",
            "inductor": True,
        },
        quick={"repeats": 1, "block_s": 0.01, "calls": 1, "sizes": "tiny", "inductor": False},
    )
    args = run.args
    families = args.families.split(",")
    rows = [run_setting(f, s, run) for f in families for s in args.sizes.split(",")]
    calls = [fit_call_cost(f, run) for f in families]
    run.write(
        "Training step: eager and compiled against the hand-written twin",
        [harness.Table(rows, COLUMNS, "steps"), harness.Table(calls, CALL_COLUMNS, "fit calls")],
        notes=[
            f"Median of {args.repeats} alternating blocks of ~{args.block_s} s per step; "
            f"fit call cost: median of {args.calls} calls of 2 steps, minus the two steps. "
            "Fused Adam saves: the twin's optimizer step (torch.optim.Adam's default) minus "
            "fit's (fused) on the same parameters; added to a pyrogen side's ms, it compares "
            "the two at the same optimizer.",
        ],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
