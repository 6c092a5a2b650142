"""The cost of one training step of pyrogen's VAE against a hand-written PyTorch ELBO loop.

Both sides train IDENTICAL networks in the same run: the pyrogen ``VAE`` is built first and
the reference takes ``copy.deepcopy(vae.encoder)`` / ``copy.deepcopy(vae.decoder)``, so the
initial weights are the same. Both use ``torch.optim.Adam(lr=1e-3)``, the same minibatch and
the same objective: the analytic-KL ELBO with a Bernoulli likelihood on logits, one
reparameterized sample per example, scaled by N / B to stand for the whole data set::

    loc, scale = encoder(x);  z = loc + scale * eps,  eps ~ N(0, I)
    loss = (BCE_with_logits(decoder(z), x, reduction="sum")
            + sum 0.5 (loc^2 + scale^2 - 1) - log scale) * N / B

pyrogen computes the same quantity with Pyro's ``TraceMeanField_ELBO`` on ``vae.model`` /
``vae.guide`` (``VAE`` defaults: ``objective="mean_field"``, ``likelihood="bernoulli"``).

Networks: MLP 784-400-50 (``VAE((784,), latent_dim=50, hidden=(400,))``) and the conv
networks (``VAE((1, 28, 28), latent_dim=50, encoder="conv", decoder="conv")``), at batch
sizes 128 and 512, on MNIST (60k training images, grey levels in [0, 1]).

Two measurements per setting, the two sides taking turns (blocks alternate A B, B A, ...)
after an untimed warm-up:

* **raw step**: ``loss = vae.loss.differentiable_loss(vae.model, vae.guide, xb, None,
  num_data=N); loss.backward(); opt.step()`` (plus ``zero_grad``) against the same three
  lines on the reference loss; Pyro validation off, as ``pyrogen.fit`` runs every step after
  the first. Median over blocks of k steps (k chosen so a block lasts ~``--block-s``).
* **engine**: ``pyrogen.fit(vae, x, steps=S, batch_size=B, progress=False)`` wall time / S
  (batching, NaN checks, gradient checks, validation on step 1, per-call data checks)
  against a hand-written loop with the same shuffling (``torch.randperm`` from a generator
  seeded like fit's), the same number of steps, a new Adam per call and ``loss.item()``
  per step (as in pytorch/examples' VAE). Median over ``--fit-repeats`` calls.

Target: pyrogen / reference <= 1.10 per step.

It also checks that both sides compute the same loss and gradients on the same batch with the
same noise (``pyro.set_rng_seed(s)`` before pyrogen's loss, ``torch.manual_seed(s)`` before the
reference's: both draw eps with one ``normal_`` of shape (B, 50)), and that ``pyrogen.fit`` and
the hand-written loop produce the same loss trajectory over the first few steps.

With the full run (``--breakdown``), a set of counterfactual steps on the MLP splits pyrogen's
overhead into its sources (torch.distributions, Pyro's tracing, ``pyro.module`` registration
of the networks on every call, Pyro's ``.item()``/NaN checks and unused log-probs, Pyro
validation), and the engine's own extras are timed one by one.

Usage::

    python benchmarks/vae_overhead.py            # full run (~12-15 min on 2 cores)
    python benchmarks/vae_overhead.py --quick    # smoke test (~35 s on 2 cores)
    python benchmarks/vae_overhead.py --device cuda
    python benchmarks/vae_overhead.py --threads 1 --out benchmarks/results/vae_overhead_1thread

Writes ``benchmarks/results/vae_overhead.json`` and ``.md`` (``--out`` to change the stem).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "benchmarks" / "results"
NAME = "vae_overhead"
DEFAULT_MNIST = Path(os.environ.get("PYROGEN_DATA", REPO.parent / "shared" / "data")) / "mnist"

RATIO_TARGET = 1.10
LR = 1e-3
LATENT_DIM = 50
NETWORKS: dict[str, dict[str, Any]] = {
    "mlp": {
        "label": "MLP 784-400-50",
        "vae_kwargs": {"data_shape": (784,), "latent_dim": LATENT_DIM, "hidden": (400,)},
    },
    "conv": {
        "label": "conv (1x28x28)",
        "vae_kwargs": {
            "data_shape": (1, 28, 28),
            "latent_dim": LATENT_DIM,
            "encoder": "conv",
            "decoder": "conv",
        },
    },
}
BATCH_SIZES = (128, 512)
# Seeded noise is "the same" when the two losses agree to float32 rounding.
SAME_NOISE_TOLERANCE = 1e-4


def default_fit_steps() -> int:
    import pyrogen

    return int(pyrogen.VAE.fit_defaults.get("steps", 5000))


# --- data ------------------------------------------------------------------------------------


def load_images(args) -> tuple[Any, str]:
    """MNIST training images (N, 28, 28) in [0, 1]; uniform noise of that shape if absent."""
    import torch

    import pyrogen

    root = Path(args.mnist)
    if root.is_dir():
        images, _ = pyrogen.data.mnist(root, "train")
        source = f"MNIST train ({root})"
    elif args.allow_synthetic:
        generator = torch.Generator().manual_seed(args.seed)
        images = torch.rand(60_000, 28, 28, generator=generator)
        source = "synthetic: uniform [0, 1] noise of MNIST's shape (MNIST not found)"
        print(f"warning: {root} not found; timing on {source}", file=sys.stderr)
    else:
        raise SystemExit(f"MNIST not found in {root} (--mnist PATH, or --allow-synthetic)")
    if args.n_train is not None:
        images = images[: args.n_train]
    return images.contiguous(), source


def network_data(images, network: str, device):
    shape = NETWORKS[network]["vae_kwargs"]["data_shape"]
    return images.reshape(images.shape[0], *shape).contiguous().to(device)


# --- the two sides ---------------------------------------------------------------------------


def build_pair(network: str, device, seed: int):
    """A pyrogen VAE and a ModuleDict with deep copies of its encoder and decoder."""
    import torch

    import pyrogen

    torch.manual_seed(seed)
    vae = pyrogen.VAE(**NETWORKS[network]["vae_kwargs"]).to(device)
    reference = torch.nn.ModuleDict(
        {"encoder": copy.deepcopy(vae.encoder), "decoder": copy.deepcopy(vae.decoder)}
    )
    return vae, reference


def reference_loss(nets, x, num_data: int):
    """Negative ELBO (analytic KL, Bernoulli logits, one reparameterized sample) x N / B."""
    import torch
    import torch.nn.functional as F

    loc, scale = nets["encoder"](x)
    z = loc + scale * torch.randn_like(loc)
    reconstruction = F.binary_cross_entropy_with_logits(nets["decoder"](z), x, reduction="sum")
    kl = 0.5 * (loc.pow(2) + scale.pow(2) - 1.0).sum() - scale.log().sum()
    return (reconstruction + kl) * (num_data / x.shape[0])


def reference_fit(
    nets,
    x,
    *,
    steps: int,
    batch_size: int,
    seed: int,
    stamps: list | None = None,
    loss_fn=None,
) -> list[float]:
    """The hand-written loop: pyrogen.fit's shuffling, Adam, ``loss.item()`` every step.

    ``stamps`` (optional) gets ``(time.perf_counter(), time.process_time())`` after every
    step, as the callback given to ``pyrogen.fit`` does on the other side. ``loss_fn(nets,
    batch, num_data)`` replaces :func:`reference_loss` (other benchmarks reuse the loop with
    their own hand-written losses).
    """
    import torch

    if loss_fn is None:
        loss_fn = reference_loss
    torch.manual_seed(seed)
    order = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(nets.parameters(), lr=LR)
    num_data = x.shape[0]
    per_epoch = math.ceil(num_data / batch_size)
    permutation = None
    losses = []
    for step in range(steps):
        position = step % per_epoch
        if position == 0 or permutation is None:
            permutation = torch.randperm(num_data, generator=order)
        index = permutation[position * batch_size : (position + 1) * batch_size].to(x.device)
        batch = x[index]
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(nets, batch, num_data)
        loss.backward()
        optimizer.step()
        losses.append(loss.item() / num_data)
        if stamps is not None:
            stamps.append((time.perf_counter(), time.process_time()))
    return losses


def pyrogen_fit(
    vae, x, *, steps: int, batch_size: int, seed: int, stamps: list | None = None, **options
) -> list[float]:
    """``pyrogen.fit`` as a user calls it (a time-stamping callback when ``stamps``);
    ``options`` go to ``pyrogen.fit`` as they are (e.g. ``precision``)."""
    import pyrogen

    def stamp(step, loss, model):
        stamps.append((time.perf_counter(), time.process_time()))

    callbacks = () if stamps is None else (stamp,)
    return pyrogen.fit(
        vae,
        x,
        steps=steps,
        batch_size=batch_size,
        seed=seed,
        progress=False,
        callbacks=callbacks,
        **options,
    ).losses


def fixed_batch(x, batch_size: int, seed: int):
    import torch

    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    return x[order[:batch_size].to(x.device)]


def make_steps(vae, nets, batch, num_data: int) -> dict[str, Any]:
    """The raw training steps, each with its own Adam."""
    import torch

    elbo = vae.loss
    pyrogen_opt = torch.optim.Adam([p for p in vae.parameters() if p.requires_grad], lr=LR)
    reference_opt = torch.optim.Adam(nets.parameters(), lr=LR)

    def pyrogen_step():
        pyrogen_opt.zero_grad(set_to_none=True)
        loss = elbo.differentiable_loss(vae.model, vae.guide, batch, None, num_data=num_data)
        loss.backward()
        pyrogen_opt.step()

    def reference_step():
        reference_opt.zero_grad(set_to_none=True)
        loss = reference_loss(nets, batch, num_data)
        loss.backward()
        reference_opt.step()

    return {"pyrogen": pyrogen_step, "reference": reference_step}


# --- timing ----------------------------------------------------------------------------------


def time_steps(steps: dict[str, Any], args, sync) -> dict[str, dict[str, Any]]:
    """Per-step wall time of each step function: blocks of k steps, taking turns."""
    for _ in range(args.warmup_steps):
        for step in steps.values():
            step()
    if sync is not None:
        sync()
    # Block length from the slowest side's step time, so every block lasts ~block_s.
    probe = []
    for step in steps.values():
        started = time.perf_counter()
        for _ in range(2):
            step()
        if sync is not None:
            sync()
        probe.append((time.perf_counter() - started) / 2)
    k = max(1, min(args.max_block_steps, round(args.block_s / max(probe))))

    def block(step):
        def run():
            for _ in range(k):
                step()

        return run

    timings = common.time_interleaved(
        {name: block(step) for name, step in steps.items()},
        args.repeats,
        warmup=1,
        sync=sync,
        alternate=True,
    )
    return {
        name: {
            "median_ms": 1e3 * timing.median / k,
            "best_ms": 1e3 * timing.best / k,
            "per_step_ms": [1e3 * t / k for t in timing.times],
            "cpu_per_step_ms": [1e3 * t / k for t in timing.cpu_times],
            "cpu_median_ms": 1e3 * statistics.median(timing.cpu_times) / k,
            "block_steps": k,
            "blocks": len(timing.times),
        }
        for name, timing in timings.items()
    }


def time_raw(network, images_by_network, batch_size, args, device, sync) -> dict[str, Any]:
    import pyro

    x = images_by_network[network]
    vae, nets = build_pair(network, device, args.seed)
    batch = fixed_batch(x, batch_size, args.seed)
    with pyro.validation_enabled(False):
        return time_steps(make_steps(vae, nets, batch, x.shape[0]), args, sync)


def time_fits(fns: dict[str, Any], steps: int, repeats: int, sync) -> dict[str, dict[str, Any]]:
    """Time whole training calls taking turns; split each into per-call and per-step costs.

    Each ``fns[name](stamps)`` runs ``steps`` steps and appends a ``perf_counter`` stamp after
    every step. Per call: ``whole`` = wall / steps; ``steady`` = (last stamp - first stamp) /
    (steps - 1), the per-step cost once running (steps 2..S); ``fixed`` = wall - steps x
    steady, what the call costs beyond its steady steps (data checks, setup, the first
    step's extra work). Medians over calls.
    """
    import gc

    names = list(fns)
    raw: dict[str, dict[str, list[float]]] = {
        name: {"whole": [], "steady": [], "fixed": [], "cpu": [], "steady_cpu": []}
        for name in names
    }
    for round_index in range(repeats):
        for name in names[::-1] if round_index % 2 else names:
            stamps: list[float] = []
            gc.collect()
            wall, cpu = time.perf_counter(), time.process_time()
            fns[name](stamps)
            if sync is not None:
                sync()
            total = time.perf_counter() - wall
            raw[name]["cpu"].append(time.process_time() - cpu)
            steady = (stamps[-1][0] - stamps[0][0]) / (len(stamps) - 1)
            raw[name]["steady_cpu"].append((stamps[-1][1] - stamps[0][1]) / (len(stamps) - 1))
            raw[name]["whole"].append(total / steps)
            raw[name]["steady"].append(steady)
            raw[name]["fixed"].append(total - steps * steady)
    return {
        name: {
            "median_ms": 1e3 * statistics.median(values["whole"]),
            "best_ms": 1e3 * min(values["whole"]),
            "steady_median_ms": 1e3 * statistics.median(values["steady"]),
            "steady_best_ms": 1e3 * min(values["steady"]),
            "fixed_median_ms": 1e3 * statistics.median(values["fixed"]),
            "per_step_ms": [1e3 * v for v in values["whole"]],
            "steady_per_step_ms": [1e3 * v for v in values["steady"]],
            "fixed_ms": [1e3 * v for v in values["fixed"]],
            "cpu_per_step_ms": [1e3 * v / steps for v in values["cpu"]],
            "steady_cpu_per_step_ms": [1e3 * v for v in values["steady_cpu"]],
            "cpu_median_ms": 1e3 * statistics.median(values["cpu"]) / steps,
            "steady_cpu_median_ms": 1e3 * statistics.median(values["steady_cpu"]),
            "fit_steps": steps,
            "calls": len(values["whole"]),
        }
        for name, values in raw.items()
    }


def time_engine(network, images_by_network, batch_size, args, device, sync) -> dict[str, Any]:
    """pyrogen.fit against the hand-written loop (the same-trajectory check ran just before,
    with the same shapes, and serves as their warm-up)."""
    x = images_by_network[network]
    vae, nets = build_pair(network, device, args.seed)
    steps, seed = args.fit_steps, args.seed
    fns = {
        "pyrogen": lambda stamps: pyrogen_fit(
            vae, x, steps=steps, batch_size=batch_size, seed=seed, stamps=stamps
        ),
        "reference": lambda stamps: reference_fit(
            nets, x, steps=steps, batch_size=batch_size, seed=seed, stamps=stamps
        ),
    }
    return time_fits(fns, steps, args.fit_repeats, sync)


# --- correctness: the same loss --------------------------------------------------------------


def _flat_grads(modules) -> Any:
    import torch

    return torch.cat([p.grad.reshape(-1) for m in modules for p in m.parameters()])


def check_same_loss(network, images_by_network, batch_size, args, device) -> dict[str, Any]:
    """Same batch, same weights, same eps: loss and gradient relative differences."""
    import pyro
    import torch

    x = images_by_network[network]
    num_data = x.shape[0]
    vae, nets = build_pair(network, device, args.seed)
    batch = fixed_batch(x, batch_size, args.seed)
    noise_seed = args.seed + 1
    with pyro.validation_enabled(False):
        pyro.set_rng_seed(noise_seed)
        pyrogen_loss = vae.loss.differentiable_loss(
            vae.model, vae.guide, batch, None, num_data=num_data
        )
    torch.manual_seed(noise_seed)
    ref_loss = reference_loss(nets, batch, num_data)
    pyrogen_loss.backward()
    ref_loss.backward()
    p_value, r_value = pyrogen_loss.item(), ref_loss.item()
    p_grad = _flat_grads([vae.encoder, vae.decoder])
    r_grad = _flat_grads([nets["encoder"], nets["decoder"]])
    result: dict[str, Any] = {
        "method": "seeded noise: pyro.set_rng_seed(s) / torch.manual_seed(s), one sample",
        "pyrogen_loss_per_example": p_value / num_data,
        "reference_loss_per_example": r_value / num_data,
        "loss_rel_diff": abs(p_value - r_value) / abs(r_value),
        "grad_rel_diff": float((p_grad - r_grad).norm() / r_grad.norm()),
    }
    result["same_noise"] = result["loss_rel_diff"] < SAME_NOISE_TOLERANCE
    if not result["same_noise"]:
        result["expected"] = expected_loss_check(vae, nets, batch, num_data, args)
    return result


def expected_loss_check(vae, nets, batch, num_data, args) -> dict[str, Any]:
    """Fallback when the seeded draws differ: mean loss over many independent draws."""
    import pyro
    import torch

    draws = args.particles
    elbo = vae.loss
    pyrogen_values, reference_values = [], []
    with torch.no_grad(), pyro.validation_enabled(False):
        for i in range(draws):
            pyro.set_rng_seed(10_000 + i)
            pyrogen_values.append(
                elbo.differentiable_loss(
                    vae.model, vae.guide, batch, None, num_data=num_data
                ).item()
            )
            torch.manual_seed(20_000 + i)
            reference_values.append(reference_loss(nets, batch, num_data).item())
    p_mean, r_mean = statistics.fmean(pyrogen_values), statistics.fmean(reference_values)
    se = math.sqrt(
        statistics.variance(pyrogen_values) / draws + statistics.variance(reference_values) / draws
    )
    return {
        "draws": draws,
        "pyrogen_mean_per_example": p_mean / num_data,
        "reference_mean_per_example": r_mean / num_data,
        "rel_diff": abs(p_mean - r_mean) / abs(r_mean),
        "diff_in_standard_errors": abs(p_mean - r_mean) / se if se > 0 else 0.0,
    }


def check_same_trajectory(network, images_by_network, batch_size, args, device) -> dict[str, Any]:
    """pyrogen.fit and the hand-written loop from the same weights and seed: the losses."""
    x = images_by_network[network]
    vae, nets = build_pair(network, device, args.seed)
    steps = args.trajectory_steps
    fit_losses = pyrogen_fit(vae, x, steps=steps, batch_size=batch_size, seed=args.seed)
    loop_losses = reference_fit(nets, x, steps=steps, batch_size=batch_size, seed=args.seed)
    diffs = [abs(a - b) / abs(b) for a, b in zip(fit_losses, loop_losses, strict=True)]
    return {
        "steps": steps,
        "fit_losses": fit_losses,
        "loop_losses": loop_losses,
        "max_rel_diff": max(diffs),
        "first_rel_diff": diffs[0],
    }


# --- breakdown: where the overhead comes from ------------------------------------------------


def _lean_elbo_class():
    """TraceMeanField_ELBO without the work the analytic-KL VAE loss does not need.

    Pyro's ``differentiable_loss`` calls ``.item()`` twice and ``torch.isnan(...).any()`` once
    per step (and registers a NaN hook on the loss), and ``get_importance_trace`` computes
    the log-density of every sample site, including the latent z in both model and guide,
    whose values the analytic KL never reads. This variant computes only the observed sites'
    log-densities and returns the surrogate loss as a tensor. Valid when every latent site
    has an analytic KL (what TraceMeanField_ELBO assumes for reparameterized guides).
    """
    from pyro import poutine
    from pyro.distributions.kl import kl_divergence
    from pyro.distributions.util import scale_and_mask
    from pyro.infer import TraceMeanField_ELBO
    from pyro.infer.util import is_validation_enabled
    from pyro.poutine.util import prune_subsample_sites

    class LeanMeanFieldELBO(TraceMeanField_ELBO):
        def _get_trace(self, model, guide, args, kwargs):
            if is_validation_enabled():  # keep Pyro's checks when asked for
                return super()._get_trace(model, guide, args, kwargs)
            guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
            model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
                *args, **kwargs
            )
            guide_trace = prune_subsample_sites(guide_trace)
            model_trace = prune_subsample_sites(model_trace)
            model_trace.compute_log_prob(site_filter=lambda name, site: site["is_observed"])
            return model_trace, guide_trace

        def differentiable_loss(self, model, guide, *args, **kwargs):
            loss = 0.0
            for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
                elbo = 0.0
                for name, site in model_trace.nodes.items():
                    if site["type"] != "sample":
                        continue
                    if site["is_observed"]:
                        elbo = elbo + site["log_prob_sum"]
                    else:
                        guide_site = guide_trace.nodes[name]
                        kl = kl_divergence(guide_site["fn"], site["fn"])
                        elbo = (
                            elbo - scale_and_mask(kl, guide_site["scale"], guide_site["mask"]).sum()
                        )
                loss = loss - elbo / self.num_particles
            return loss

    return LeanMeanFieldELBO


def _no_module_vae_class():
    """pyrogen's VAE with model/guide reading the networks without ``pyro.module``.

    ``VAE`` is a ``PyroModule`` holding plain ``nn.Module`` networks, so every
    ``self.encoder`` / ``self.decoder`` inside ``model``/``guide`` runs ``pyro.module``, which
    sends one ``pyro.param`` message per network parameter through the effect-handler stack
    (and into both traces). ``self._modules[...]`` returns the same module without that.
    NB: ``pyro.infer.SVI`` with a ``pyro.optim`` optimizer finds parameters through those
    messages, so a real change has to keep them where SVI needs them (see the report).
    """
    import pyro
    from pyro import poutine
    from pyro.nn import pyro_method

    import pyrogen
    from pyrogen.models.base import data_plate
    from pyrogen.models.vae import LATENT, OBS

    class NoModuleVAE(pyrogen.VAE):
        @pyro_method
        def model(self, x, y=None, num_data=None):
            decoder = self._modules["decoder"]
            with data_plate(x, num_data):
                with poutine.scale(scale=self.beta):
                    z = pyro.sample(LATENT, self._prior(x.shape[:1]))
                pyro.sample(OBS, self._likelihood(decoder(z)), obs=x)

        @pyro_method
        def guide(self, x, y=None, num_data=None):
            encoder = self._modules["encoder"]
            with data_plate(x, num_data):
                loc, scale = encoder(x)
                with poutine.scale(scale=self.beta):
                    pyro.sample(LATENT, pyro.distributions.Normal(loc, scale).to_event(1))

    return NoModuleVAE


def _fast_vae_class():
    """NoModuleVAE trained with the lean ELBO (``loss`` is what pyrogen.fit differentiates)."""
    lean = _lean_elbo_class()

    class FastVAE(_no_module_vae_class()):
        @property
        def loss(self):
            return lean(num_particles=self.num_particles, max_plate_nesting=1)

    return FastVAE


class _Patched:
    """Context manager: replace ``module.attribute`` by ``value`` and put it back after."""

    def __init__(self, *patches):
        self.patches = patches
        self.saved = []

    def __enter__(self):
        for module, attribute, value in self.patches:
            self.saved.append((module, attribute, getattr(module, attribute)))
            setattr(module, attribute, value)
        return self

    def __exit__(self, *exc):
        for module, attribute, value in reversed(self.saved):
            setattr(module, attribute, value)
        self.saved.clear()
        return False


def engine_patches():
    """The engine's suggested fixes, as monkeypatches: the aminmax
    data check (``fast_*`` call the originals captured here when a check fails)."""
    import torch

    from pyrogen.data import validation

    original_finite = validation._check_finite

    def finite(tensor, name):
        if not tensor.is_floating_point():
            return
        low, high = torch.aminmax(tensor)
        if not bool(torch.isfinite(low) & torch.isfinite(high)):
            original_finite(tensor, name)

    return _Patched((validation, "_check_finite", finite))


ENGINE_VARIANTS = [
    ("reference", "hand-written loop (the reference)"),
    ("pyrogen", "pyrogen.fit as is"),
    ("pyrogen_fast_checks", "pyrogen.fit + aminmax data check"),
    (
        "pyrogen_all_fixes",
        "... + lean ELBO + networks without pyro.module (all suggested changes)",
    ),
]


def run_engine_breakdown(
    network, images_by_network, batch_size, args, device, sync
) -> dict[str, Any]:
    """Whole fit calls of pyrogen.fit as is and with the suggested changes patched in."""
    import torch

    x = images_by_network[network]
    steps, seed = args.fit_steps, args.seed

    def make(variant):
        """A fresh model (or reference networks) with the common initial weights."""
        vae, nets = build_pair(network, device, seed)
        if variant == "reference":
            return nets
        if variant == "pyrogen_all_fixes":
            torch.manual_seed(seed)
            fast = _fast_vae_class()(**NETWORKS[network]["vae_kwargs"]).to(device)
            fast.load_state_dict(vae.state_dict())
            return fast
        return vae

    def trainer(variant, model):
        def run(stamps, steps=steps):
            options = {"steps": steps, "batch_size": batch_size, "seed": seed, "stamps": stamps}
            if variant == "reference":
                return reference_fit(model, x, **options)
            if variant == "pyrogen":
                return pyrogen_fit(model, x, **options)
            with engine_patches():
                return pyrogen_fit(model, x, **options)

        return run

    variants = [key for key, _ in ENGINE_VARIANTS]
    # Sanity: from the same weights and seed, every variant trains exactly like the reference.
    check_steps = max(2, args.trajectory_steps)
    losses = {v: trainer(v, make(v))(None, steps=check_steps) for v in variants}
    timings = time_fits({v: trainer(v, make(v)) for v in variants}, steps, args.fit_repeats, sync)
    reference = timings["reference"]
    rows = []
    for key, label in ENGINE_VARIANTS:
        t = timings[key]
        rows.append(
            {
                "variant": key,
                "label": label,
                "steady_ms": t["steady_median_ms"],
                "steady_ratio": t["steady_median_ms"] / reference["steady_median_ms"],
                "fixed_ms": t["fixed_median_ms"],
                "whole_ms": t["median_ms"],
                "whole_ratio": t["median_ms"] / reference["median_ms"],
                "steady_cpu_ms": t["steady_cpu_median_ms"],
                "steady_cpu_ratio": t["steady_cpu_median_ms"] / reference["steady_cpu_median_ms"],
                "trajectory_max_rel_diff": max(
                    abs(a - b) / abs(b)
                    for a, b in zip(losses[key], losses["reference"], strict=True)
                ),
                "timing": t,
            }
        )
    return {"network": network, "batch_size": batch_size, "fit_steps": steps, "rows": rows}


BREAKDOWN_VARIANTS = [
    ("reference", "hand-written PyTorch (the reference)"),
    ("torch_distributions", "+ torch.distributions objects (Normal.rsample, Bernoulli, kl)"),
    ("plain_pyro", "plain Pyro model/guide functions + TraceMeanField_ELBO"),
    ("pyrogen_lean_no_module", "pyrogen VAE, lean ELBO, networks without pyro.module"),
    ("pyrogen_no_module", "pyrogen VAE, networks without pyro.module"),
    ("pyrogen_lean", "pyrogen VAE + lean ELBO"),
    ("pyrogen", "pyrogen VAE as is (validation off, as in fit)"),
    ("pyrogen_validation", "pyrogen VAE, Pyro validation on (Pyro's default)"),
]


def breakdown_steps(network, x, batch_size, args, device) -> dict[str, Any]:
    """One step function per counterfactual, each on its own copy of the same weights."""
    import pyro
    import pyro.distributions as dist
    import torch
    from pyro import poutine
    from torch.distributions import Bernoulli, Independent, Normal, kl_divergence

    from pyrogen.models.base import data_plate

    num_data = x.shape[0]
    batch = fixed_batch(x, batch_size, args.seed)
    vae, nets = build_pair(network, device, args.seed)
    pyrogen_steps = make_steps(vae, nets, batch, num_data)
    lean = _lean_elbo_class()(max_plate_nesting=1)
    no_module_cls = _no_module_vae_class()

    def with_optimizer(params, loss_fn, validation=False):
        optimizer = torch.optim.Adam(list(params), lr=LR)

        def step():
            optimizer.zero_grad(set_to_none=True)
            with pyro.validation_enabled(validation):
                loss = loss_fn()
            loss.backward()
            optimizer.step()

        return step

    # + torch.distributions: the same maths through distribution objects.
    dist_nets = copy.deepcopy(nets)

    def dist_loss():
        loc, scale = dist_nets["encoder"](batch)
        posterior = Independent(Normal(loc, scale), 1)
        z = posterior.rsample()
        likelihood = Independent(Bernoulli(logits=dist_nets["decoder"](z), validate_args=False), 1)
        prior = Independent(Normal(torch.zeros_like(loc), torch.ones_like(loc)), 1)
        elbo = likelihood.log_prob(batch).sum() - kl_divergence(posterior, prior).sum()
        return -elbo * (num_data / batch_size)

    # Plain Pyro: functions (no PyroModule, no pyro.module), the same plate and scale.
    plain_nets = copy.deepcopy(nets)
    prior_loc = torch.zeros(LATENT_DIM, device=device)
    event_dims = len(NETWORKS[network]["vae_kwargs"]["data_shape"])

    def plain_model(x, num_data):
        with data_plate(x, num_data):
            with poutine.scale(scale=1.0):
                loc = prior_loc.expand(x.shape[0], LATENT_DIM)
                z = pyro.sample("z", dist.Normal(loc, torch.ones_like(loc)).to_event(1))
            logits = plain_nets["decoder"](z)
            pyro.sample(
                "obs",
                dist.Bernoulli(logits=logits, validate_args=False).to_event(event_dims),
                obs=x,
            )

    def plain_guide(x, num_data):
        with data_plate(x, num_data):
            loc, scale = plain_nets["encoder"](x)
            with poutine.scale(scale=1.0):
                pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    plain_elbo = vae.loss

    def vae_copy(cls=None):
        torch.manual_seed(args.seed)
        model = (cls or type(vae))(**NETWORKS[network]["vae_kwargs"]).to(device)
        model.load_state_dict(vae.state_dict())
        return model

    no_module = vae_copy(no_module_cls)
    lean_no_module = vae_copy(no_module_cls)
    lean_vae = vae_copy()
    validating = vae_copy()
    elbo = vae.loss

    def elbo_loss(loss, model):
        return lambda: loss.differentiable_loss(
            model.model, model.guide, batch, None, num_data=num_data
        )

    losses = {
        "reference": lambda: reference_loss(nets, batch, num_data),
        "torch_distributions": dist_loss,
        "plain_pyro": lambda: plain_elbo.differentiable_loss(
            plain_model, plain_guide, batch, num_data
        ),
        "pyrogen_lean_no_module": elbo_loss(lean, lean_no_module),
        "pyrogen_no_module": elbo_loss(elbo, no_module),
        "pyrogen_lean": elbo_loss(lean, lean_vae),
        "pyrogen": elbo_loss(elbo, vae),
        "pyrogen_validation": elbo_loss(elbo, validating),
    }
    # Sanity: before any step, every variant's loss on the same noise equals the reference's.
    values = {}
    for key, loss_fn in losses.items():
        with torch.no_grad(), pyro.validation_enabled(key == "pyrogen_validation"):
            pyro.set_rng_seed(args.seed + 1)
            values[key] = loss_fn().item()
    loss_rel_diffs = {
        key: abs(value - values["reference"]) / abs(values["reference"])
        for key, value in values.items()
    }
    steps = {
        "reference": pyrogen_steps["reference"],
        "torch_distributions": with_optimizer(dist_nets.parameters(), dist_loss),
        "plain_pyro": with_optimizer(
            plain_nets.parameters(),
            lambda: plain_elbo.differentiable_loss(plain_model, plain_guide, batch, num_data),
        ),
        "pyrogen_lean_no_module": with_optimizer(
            lean_no_module.parameters(), elbo_loss(lean, lean_no_module)
        ),
        "pyrogen_no_module": with_optimizer(no_module.parameters(), elbo_loss(elbo, no_module)),
        "pyrogen_lean": with_optimizer(lean_vae.parameters(), elbo_loss(lean, lean_vae)),
        "pyrogen": pyrogen_steps["pyrogen"],
        "pyrogen_validation": with_optimizer(
            validating.parameters(), elbo_loss(elbo, validating), validation=True
        ),
    }
    return steps, loss_rel_diffs


def run_breakdown(network, images_by_network, batch_size, args, device, sync) -> dict[str, Any]:
    import pyro

    x = images_by_network[network]
    steps, loss_rel_diffs = breakdown_steps(network, x, batch_size, args, device)
    with pyro.validation_enabled(False):
        timings = time_steps(steps, args, sync)
    reference = timings["reference"]["median_ms"]
    reference_cpu = statistics.median(timings["reference"]["cpu_per_step_ms"])
    rows = []
    for key, label in BREAKDOWN_VARIANTS:
        median = timings[key]["median_ms"]
        cpu = statistics.median(timings[key]["cpu_per_step_ms"])
        rows.append(
            {
                "variant": key,
                "label": label,
                "median_ms": median,
                "over_reference_ms": median - reference,
                "ratio": median / reference,
                "cpu_ms": cpu,
                "cpu_over_reference_ms": cpu - reference_cpu,
                "per_step_ms": timings[key]["per_step_ms"],
                "cpu_per_step_ms": timings[key]["cpu_per_step_ms"],
                "block_steps": timings[key]["block_steps"],
                "loss_rel_diff": loss_rel_diffs[key],
            }
        )
    return {"network": network, "batch_size": batch_size, "rows": rows}


def engine_extras(network, images_by_network, batch_size, args, device, sync) -> dict[str, Any]:
    """The engine's own per-step and per-call costs, each timed on its own."""
    import pyro
    import torch

    from pyrogen.data.validation import as_tensor, float_dtype_of

    x = images_by_network[network]
    num_data = x.shape[0]
    vae, nets = build_pair(network, device, args.seed)
    batch = fixed_batch(x, batch_size, args.seed)
    elbo = vae.loss
    with pyro.validation_enabled(False):
        loss = elbo.differentiable_loss(vae.model, vae.guide, batch, None, num_data=num_data)
    loss.backward()
    order = torch.Generator().manual_seed(args.seed)
    permutation = torch.randperm(num_data, generator=order)

    def per_call_us(fn, calls, rounds, warm=True):
        """Median over ``rounds`` of the mean time of ``calls`` calls, in microseconds."""
        if warm:
            fn()
        values = []
        for _ in range(rounds):
            if sync is not None:
                sync()
            started = time.perf_counter()
            for _ in range(calls):
                fn()
            if sync is not None:
                sync()
            values.append(1e6 * (time.perf_counter() - started) / calls)
        return statistics.median(values)

    @contextlib.contextmanager
    def no_patches():
        yield

    def paired_us(original, patched, calls, rounds, warm=True, patches=engine_patches):
        """Medians of two versions of one job, measured in alternation (one round each)."""
        a_values, b_values = [], []
        for _ in range(rounds):
            a_values.append(per_call_us(original, calls, 1, warm))
            with patches():
                b_values.append(per_call_us(patched, calls, 1, warm))
        return statistics.median(a_values), statistics.median(b_values)

    def first_step(validation):
        def run():
            with pyro.validation_enabled(validation):
                value = elbo.differentiable_loss(
                    vae.model, vae.guide, batch, None, num_data=num_data
                )
            value.backward()

        return run

    def convert():
        as_tensor(x, name="data", ndim=None, dtype=float_dtype_of(x))

    def setup():
        vae.setup(x)

    rounds = 3 if args.quick else 7
    calls = 10 if args.quick else 50
    data_rounds = 1 if args.quick else 3
    as_tensor_us, as_tensor_fast_us = paired_us(convert, convert, 1, data_rounds, warm=False)
    setup_us, setup_fast_us = paired_us(setup, setup, 1, data_rounds, warm=False)
    validation_off_us, validation_on_us = paired_us(
        first_step(False), first_step(True), max(2, calls // 10), rounds, patches=no_patches
    )
    result = {
        "gradient_elements": sum(p.numel() for p in vae.parameters()),
        "loss_item_us": per_call_us(lambda: loss.item(), calls, rounds),
        "gather_batch_us": per_call_us(
            lambda: x[permutation[:batch_size].to(device)], calls, rounds
        ),
        "randperm_per_epoch_us": per_call_us(
            lambda: torch.randperm(num_data, generator=order), 2, rounds
        ),
        "loss_and_backward_validation_on_us": validation_on_us,
        "loss_and_backward_validation_off_us": validation_off_us,
        # Per fit call: fit converts and checks the whole data set (as_tensor: finite, range),
        # then VAE.setup checks it again (as_tensor, min, max).
        "fit_as_tensor_ms": 1e-3 * as_tensor_us,
        "vae_setup_ms": 1e-3 * setup_us,
        "fit_as_tensor_aminmax_ms": 1e-3 * as_tensor_fast_us,
        "vae_setup_aminmax_ms": 1e-3 * setup_fast_us,
        "parameters": sum(1 for _ in vae.parameters()),
        "network": network,
        "batch_size": batch_size,
        "data_shape": list(x.shape),
    }
    result["validation_first_step_extra_ms"] = 1e-3 * (
        result["loss_and_backward_validation_on_us"] - result["loss_and_backward_validation_off_us"]
    )
    return result


# --- report ----------------------------------------------------------------------------------


def _mark(value) -> str:
    return "pass" if value else "FAIL"


COLUMNS = [
    ("network_label", "network"),
    ("batch_size", "batch"),
    ("mode_label", "measured"),
    ("pyrogen_ms", "pyrogen ms/step", ".2f"),
    ("reference_ms", "reference ms/step", ".2f"),
    ("ratio", "ratio", ".3f"),
    ("target", f"<= {RATIO_TARGET:.2f}", _mark),
    ("cpu_ratio", "CPU-time ratio", ".3f"),
    ("pyrogen_images_per_s", "pyrogen img/s", ",.0f"),
    ("reference_images_per_s", "reference img/s", ",.0f"),
    ("timed", "timed"),
]

MODE_LABELS = {
    "raw": "raw step",
    "engine": "fit / loop, whole calls",
    "engine_steady": "fit / loop, steady steps",
}

ENGINE_COLUMNS = [
    ("network_label", "network"),
    ("batch_size", "batch"),
    ("pyrogen_fixed_ms", "pyrogen per call ms", ".0f"),
    ("reference_fixed_ms", "reference per call ms", ".0f"),
    ("pyrogen_steady_ms", "pyrogen steady ms/step", ".2f"),
    ("reference_steady_ms", "reference steady ms/step", ".2f"),
    ("pyrogen_ms_at_default_steps", "pyrogen ms/step at default steps", ".2f"),
    ("reference_ms_at_default_steps", "reference ms/step at default steps", ".2f"),
    ("ratio_at_default_steps", "ratio at default steps", ".3f"),
]

CHECK_COLUMNS = [
    ("network_label", "network"),
    ("batch_size", "batch"),
    ("pyrogen_loss", "pyrogen loss/example", ".4f"),
    ("reference_loss", "reference loss/example", ".4f"),
    ("loss_rel_diff", "loss rel diff", ".1e"),
    ("grad_rel_diff", "grad rel diff", ".1e"),
    ("trajectory_max_rel_diff", "fit vs loop, max rel diff", ".1e"),
]

BREAKDOWN_COLUMNS = [
    ("label", "variant"),
    ("median_ms", "ms/step", ".2f"),
    ("over_reference_ms", "over reference ms", "+.2f"),
    ("ratio", "ratio", ".3f"),
    ("cpu_over_reference_ms", "CPU time over reference ms", "+.2f"),
    ("loss_rel_diff", "loss rel diff vs reference", ".1e"),
]


ENGINE_BREAKDOWN_COLUMNS = [
    ("label", "variant"),
    ("steady_ms", "steady ms/step", ".2f"),
    ("steady_ratio", "steady ratio", ".3f"),
    ("steady_cpu_ratio", "steady CPU-time ratio", ".3f"),
    ("fixed_ms", "per call ms", ".0f"),
    ("whole_ms", "whole call ms/step", ".2f"),
    ("whole_ratio", "whole ratio", ".3f"),
    ("trajectory_max_rel_diff", "loss rel diff vs reference", ".1e"),
]


def table_rows(rows) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        timed = (
            f"{row['blocks']} blocks x {row['block_steps']} steps"
            if row["mode"] == "raw"
            else f"{row['calls']} calls x {row['fit_steps']} steps"
        )
        out.append(
            {
                **row,
                "network_label": NETWORKS[row["network"]]["label"],
                "mode_label": MODE_LABELS[row["mode"]],
                "timed": timed,
            }
        )
    return out


def engine_rows(rows) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        if row["mode"] != "engine":
            continue
        out.append(
            {
                **row,
                "network_label": NETWORKS[row["network"]]["label"],
                "pyrogen_steady_ms": row["pyrogen"]["steady_median_ms"],
                "reference_steady_ms": row["reference"]["steady_median_ms"],
            }
        )
    return out


def check_rows(checks) -> list[dict[str, Any]]:
    return [
        {
            "network_label": NETWORKS[c["network"]]["label"],
            "batch_size": c["batch_size"],
            "pyrogen_loss": c["loss"]["pyrogen_loss_per_example"],
            "reference_loss": c["loss"]["reference_loss_per_example"],
            "loss_rel_diff": c["loss"]["loss_rel_diff"],
            "grad_rel_diff": c["loss"]["grad_rel_diff"],
            "trajectory_max_rel_diff": c["trajectory"]["max_rel_diff"],
        }
        for c in checks
    ]


EXTRAS_COLUMNS = [
    ("network_label", "network"),
    ("batch_size", "batch"),
    ("gradient_elements", "gradient elements", ","),
    ("loss_item_us", "loss.item() us", ".1f"),
    ("gather_batch_us", "batch gather us", ".0f"),
    ("fit_as_tensor_ms", "as_tensor(data) ms", ".0f"),
    ("fit_as_tensor_aminmax_ms", "aminmax as_tensor ms", ".0f"),
    ("vae_setup_ms", "VAE.setup ms", ".0f"),
    ("vae_setup_aminmax_ms", "aminmax VAE.setup ms", ".0f"),
    ("validation_first_step_extra_ms", "validation step 1 ms", "+.1f"),
]


def extras_rows(extras) -> list[dict[str, Any]]:
    return [{**extra, "network_label": NETWORKS[extra["network"]]["label"]} for extra in extras]


def markdown_report(payload) -> str:
    machine, versions, settings = payload["machine"], payload["versions"], payload["settings"]
    git = payload["git"]
    lines = [
        "# pyrogen VAE training step vs a hand-written PyTorch ELBO loop",
        "",
        f"Run {payload['timestamp']} on {machine['cpu_model']} "
        f"({machine['usable_cpus']} usable cores, {machine['ram_gib']} GiB RAM), "
        f"{settings['threads']} threads, device `{settings['device']}`, "
        f"OMP_WAIT_POLICY={settings['omp_wait_policy']}. "
        f"python {versions['python']}, torch {versions['torch']}, pyro {versions['pyro']}, "
        f"pyrogen {versions['pyrogen']}"
        + (
            f" (git {git['commit'][:10]}{', dirty' if git['dirty'] else ''})"
            if git.get("commit")
            else ""
        )
        + f". Data: {settings['data']}, N = {settings['num_data']:,}.",
        "",
        "Identical networks (the reference deep-copies the VAE's encoder and decoder), Adam "
        f"(lr {LR:g}), the analytic-KL ELBO with a Bernoulli likelihood on logits, one "
        "reparameterized sample, scaled by N / B. **raw step**: `zero_grad` + "
        "`differentiable_loss` + `backward` + `Adam.step` on a fixed batch, Pyro validation "
        "off (as `fit` runs every step after the first); median per-step time over blocks of "
        "k steps, the two sides taking turns. **fit / loop**: `pyrogen.fit(vae, x, "
        f"steps={settings['fit_steps']}, batch_size=B, progress=False)` against a hand-written "
        "loop with the same shuffling, a new Adam per call and `loss.item()` per step; "
        "*whole calls* is wall time / steps (the per-call data checks included), *steady "
        "steps* the time per step between the first and the last step (from a time-stamping "
        f"callback on both sides); medians over calls. Target: ratio <= {RATIO_TARGET:.2f}.",
        "",
        common.markdown_table(table_rows(payload["rows"]), COLUMNS),
        "",
        "Per-call costs of `fit` / the loop (wall time beyond steps x steady per-step time: "
        "data checks, setup, the first step's validation) and what they come to per step at "
        f"the VAE's default `steps={default_fit_steps()}`:",
        "",
        common.markdown_table(engine_rows(payload["rows"]), ENGINE_COLUMNS),
        "",
        "Same loss: one batch, the same weights and the same noise "
        "(`pyro.set_rng_seed(s)` vs `torch.manual_seed(s)`), relative differences of the "
        f"loss and of the gradient vector; and the losses of the first "
        f"{settings['trajectory_steps']} steps of `pyrogen.fit` against the hand-written loop "
        "from the same weights and seed.",
        "",
        common.markdown_table(check_rows(payload["checks"]), CHECK_COLUMNS),
        "",
    ]
    for part in payload.get("breakdown", []):
        label = f"{NETWORKS[part['network']]['label']}, batch {part['batch_size']}"
        lines += [
            f"## Where the time goes: {label}",
            "",
            "Raw steps of counterfactual variants, each on a copy of the same weights, timed "
            "in turns like the main table (the loss column checks each computes the same loss "
            "on the same noise). *Lean ELBO*: `TraceMeanField_ELBO` without Pyro's two "
            "`.item()` calls and NaN check per step and without the log-densities of the "
            "latent site that the analytic KL never reads. *Without pyro.module*: `model` / "
            "`guide` read the networks as `self._modules[...]`, so `PyroModule.__getattr__` "
            "does not send a `pyro.param` message per network parameter on every call.",
            "",
            common.markdown_table(part["rows"], BREAKDOWN_COLUMNS),
            "",
        ]
        if "engine" in part:
            lines += [
                f"Whole `pyrogen.fit` calls ({part['engine']['fit_steps']} steps) with the "
                "suggested changes patched in: the gradient check from one "
                "`torch.nn.utils.get_total_norm` (the per-parameter scan only when it is not "
                "finite) and the data's finiteness check from `torch.aminmax`; then also the "
                "lean ELBO and networks without `pyro.module`.",
                "",
                common.markdown_table(part["engine"]["rows"], ENGINE_BREAKDOWN_COLUMNS),
                "",
            ]
    if payload.get("engine_extras"):
        lines += [
            "## The engine's own costs",
            "",
            "Timed one by one (medians of rounds; each original and its replacement in "
            "alternation). Per step: `loss.item()` and the batch gather, which the reference "
            "loop does too (the engine checks no gradients per step: a NaN/inf gradient "
            "makes the parameters NaN/inf, which the next loss check names). Per `fit` call: "
            "`as_tensor` on the whole data set (finiteness scan), and `VAE.setup`, which "
            "converts and scans it again and takes its min and max, against the same with the "
            "finiteness scan done by `torch.aminmax` (the exact scan only on failure). "
            "Validation step 1: the extra time of the first step, which `fit` runs with Pyro "
            "validation on.",
            "",
            common.markdown_table(extras_rows(payload["engine_extras"]), EXTRAS_COLUMNS),
            "",
        ]
    lines += common.busy_machine_note(
        payload["summary"],
        machine,
        "the sides took turns, which keeps the ratios fairer than the absolute times.",
    )
    if settings["quick"]:
        lines += ["*Quick mode: a smoke test with few repeats, not the reference numbers.*", ""]
    return "\n".join(lines)


# --- driver ----------------------------------------------------------------------------------


def _parse_settings(text: str) -> list[tuple[str, int]]:
    out = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        network, _, batch = item.partition(":")
        if network not in NETWORKS or not batch.isdigit():
            raise argparse.ArgumentTypeError(
                f"expected network:batch items with network in {sorted(NETWORKS)}, got {item!r}"
            )
        out.append((network, int(batch)))
    return out


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few repeats, short fits (< 1 min)")
    parser.add_argument(
        "--device", default="cpu", help="device of both sides, e.g. cuda (default cpu)"
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="torch and BLAS threads (0: library defaults)"
    )
    parser.add_argument(
        "--omp-wait-policy",
        default="PASSIVE",
        choices=("PASSIVE", "ACTIVE", "unset"),
        help="OMP_WAIT_POLICY (unless already set in the environment), as gmm_vs_sklearn.py",
    )
    parser.add_argument(
        "--networks", default="mlp,conv", help="comma-separated subset of: mlp, conv"
    )
    parser.add_argument(
        "--batch-sizes", default=",".join(map(str, BATCH_SIZES)), help="comma-separated"
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed blocks per side (21)")
    parser.add_argument(
        "--block-s", type=float, default=None, help="target seconds per timed block (0.3)"
    )
    parser.add_argument("--max-block-steps", type=int, default=200)
    parser.add_argument("--warmup-steps", type=int, default=None, help="untimed steps (10)")
    parser.add_argument(
        "--fit-steps", type=int, default=None, help="steps per pyrogen.fit / loop call (100)"
    )
    parser.add_argument(
        "--fit-repeats", type=int, default=None, help="timed fit calls per side (5)"
    )
    parser.add_argument(
        "--trajectory-steps", type=int, default=None, help="steps compared fit vs loop (5)"
    )
    parser.add_argument(
        "--particles", type=int, default=64, help="draws for the expected-loss fallback check"
    )
    parser.add_argument(
        "--breakdown",
        type=_parse_settings,
        default=None,
        help="network:batch settings for the counterfactual breakdown, e.g. mlp:128,mlp:512 "
        "(default: those two; none with --quick; '' for none)",
    )
    parser.add_argument("--mnist", type=Path, default=DEFAULT_MNIST, help="MNIST IDX folder")
    parser.add_argument(
        "--allow-synthetic",
        action="store_true",
        help="time on uniform noise of MNIST's shape when MNIST is not found",
    )
    parser.add_argument("--n-train", type=int, default=None, help="use the first n images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, default=RESULTS_DIR / NAME, help="output path stem (.json and .md)"
    )
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "repeats": 3 if quick else 21,
        "block_s": 0.05 if quick else 0.3,
        "warmup_steps": 2 if quick else 10,
        "fit_steps": 6 if quick else 100,
        "fit_repeats": 1 if quick else 5,
        "trajectory_steps": 2 if quick else 5,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.breakdown is None:
        args.breakdown = [] if quick else [("mlp", 128), ("mlp", 512)]
    args.networks = [n.strip() for n in args.networks.split(",") if n.strip()]
    unknown = set(args.networks) - set(NETWORKS)
    if unknown:
        parser.error(f"--networks: unknown {sorted(unknown)}, expected from {sorted(NETWORKS)}")
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    if args.fit_steps < 2:
        parser.error("--fit-steps: expected at least 2 (the steady per-step time needs two)")
    if args.threads == 0:
        args.threads = None
    return args


def make_row(network: str, batch_size: int, mode: str, sides: dict[str, Any]) -> dict[str, Any]:
    """A table row: ``mode`` is "raw", "engine" (whole fit calls) or "engine_steady"."""
    key = "steady_median_ms" if mode == "engine_steady" else "median_ms"
    best = "steady_best_ms" if mode == "engine_steady" else "best_ms"
    cpu = "steady_cpu_median_ms" if mode == "engine_steady" else "cpu_median_ms"
    p, r = sides["pyrogen"], sides["reference"]
    row: dict[str, Any] = {
        "network": network,
        "batch_size": batch_size,
        "mode": mode,
        "pyrogen_ms": p[key],
        "reference_ms": r[key],
        "pyrogen_best_ms": p[best],
        "reference_best_ms": r[best],
        "ratio": p[key] / r[key],
        "best_ratio": p[best] / r[best],
        "pyrogen_cpu_ms": p[cpu],
        "reference_cpu_ms": r[cpu],
        "cpu_ratio": p[cpu] / r[cpu],
        "pyrogen_images_per_s": 1e3 * batch_size / p[key],
        "reference_images_per_s": 1e3 * batch_size / r[key],
    }
    row["target"] = row["ratio"] <= RATIO_TARGET
    if mode == "raw":
        row.update(blocks=p["blocks"], block_steps=p["block_steps"], pyrogen=p, reference=r)
    else:
        row.update(
            calls=p["calls"],
            fit_steps=p["fit_steps"],
            pyrogen_fixed_ms=p["fixed_median_ms"],
            reference_fixed_ms=r["fixed_median_ms"],
        )
        if mode == "engine":
            row.update(pyrogen=p, reference=r)
            # Per step at VAE.fit_defaults["steps"]: steady steps plus the per-call cost spread.
            steps = default_fit_steps()
            row["default_steps"] = steps
            row["pyrogen_ms_at_default_steps"] = (
                p["steady_median_ms"] + p["fixed_median_ms"] / steps
            )
            row["reference_ms_at_default_steps"] = (
                r["steady_median_ms"] + r["fixed_median_ms"] / steps
            )
            row["ratio_at_default_steps"] = (
                row["pyrogen_ms_at_default_steps"] / row["reference_ms_at_default_steps"]
            )
    return row


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    load_before = common.load_average()
    git = common.git_revision(REPO)
    if args.omp_wait_policy != "unset" and "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", args.omp_wait_policy)  # before libgomp loads
    limiter = common.set_threads(args.threads, preload=("numpy", "torch"))  # noqa: F841
    import torch

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        print("--device cuda: no CUDA device here", file=sys.stderr)
        return 2
    sync = torch.cuda.synchronize if cuda else None

    images, source = load_images(args)
    images_by_network = {net: network_data(images, net, device) for net in args.networks}
    num_data = images.shape[0]
    del images

    rows, checks, extras = [], [], []
    for network in args.networks:
        for batch_size in args.batch_sizes:
            label = f"{NETWORKS[network]['label']}, B={batch_size}"
            print(f"{label}: same-loss checks ...", file=sys.stderr, flush=True)
            checks.append(
                {
                    "network": network,
                    "batch_size": batch_size,
                    "loss": check_same_loss(network, images_by_network, batch_size, args, device),
                    "trajectory": check_same_trajectory(
                        network, images_by_network, batch_size, args, device
                    ),
                }
            )
            for mode, timer in (("raw", time_raw), ("engine", time_engine)):
                print(f"{label}: {mode} ...", file=sys.stderr, flush=True)
                sides = timer(network, images_by_network, batch_size, args, device, sync)
                rows.append(make_row(network, batch_size, mode, sides))
                if mode == "engine":
                    rows.append(make_row(network, batch_size, "engine_steady", sides))
                for row in rows[-2 if mode == "engine" else -1 :]:
                    print(
                        f"    {row['mode']}: pyrogen {row['pyrogen_ms']:.2f} ms, reference "
                        f"{row['reference_ms']:.2f} ms, ratio {row['ratio']:.3f}",
                        file=sys.stderr,
                        flush=True,
                    )
            if not args.quick or not extras:  # quick: the first setting only
                print(f"{label}: engine extras ...", file=sys.stderr, flush=True)
                extras.append(
                    engine_extras(network, images_by_network, batch_size, args, device, sync)
                )
    breakdown = []
    for network, batch_size in args.breakdown:
        if network not in images_by_network:
            images_by_network[network] = network_data(load_images(args)[0], network, device)
        print(
            f"breakdown {NETWORKS[network]['label']}, B={batch_size} ...",
            file=sys.stderr,
            flush=True,
        )
        part = run_breakdown(network, images_by_network, batch_size, args, device, sync)
        print(
            f"breakdown {NETWORKS[network]['label']}, B={batch_size}: pyrogen.fit variants ...",
            file=sys.stderr,
            flush=True,
        )
        part["engine"] = run_engine_breakdown(
            network, images_by_network, batch_size, args, device, sync
        )
        breakdown.append(part)
    load_after = common.load_average()

    payload = {
        "benchmark": NAME,
        "timestamp": common.utc_timestamp(),
        "machine": common.machine_info(cuda=cuda),
        "versions": common.versions(("torch", "pyro", "numpy", "pyrogen")),
        "threads": common.thread_info(),
        "git": git,
        "settings": {
            "quick": args.quick,
            "device": str(device),
            "threads": args.threads,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "data": source,
            "num_data": num_data,
            "networks": {n: NETWORKS[n] for n in args.networks},
            "batch_sizes": args.batch_sizes,
            "optimizer": f"torch.optim.Adam(lr={LR})",
            "objective": "analytic-KL ELBO, Bernoulli(logits) likelihood, 1 reparameterized "
            "sample, x N/B (pyrogen: VAE defaults, TraceMeanField_ELBO)",
            "raw_step": "zero_grad + differentiable_loss + backward + Adam.step on a fixed "
            "batch, Pyro validation off; median over blocks",
            "engine": "pyrogen.fit(vae, x, steps, batch_size, seed, progress=False) vs "
            "hand-written loop (same shuffling, new Adam per call, loss.item() per step)",
            "repeats": args.repeats,
            "block_s": args.block_s,
            "warmup_steps": args.warmup_steps,
            "fit_steps": args.fit_steps,
            "fit_repeats": args.fit_repeats,
            "trajectory_steps": args.trajectory_steps,
            "seed": args.seed,
            "ratio_target": RATIO_TARGET,
            "breakdown": [f"{n}:{b}" for n, b in args.breakdown],
        },
        "rows": rows,
        "checks": checks,
        "breakdown": breakdown,
        "engine_extras": extras,
        "summary": {
            "all_pass": all(row["target"] for row in rows),
            "raw_pass": all(row["target"] for row in rows if row["mode"] == "raw"),
            "engine_pass": all(row["target"] for row in rows if row["mode"] == "engine"),
            "max_loss_rel_diff": max(c["loss"]["loss_rel_diff"] for c in checks),
            "max_trajectory_rel_diff": max(c["trajectory"]["max_rel_diff"] for c in checks),
            "load_average_before": load_before,
            "load_average_after": load_after,
            "total_s": time.perf_counter() - started,
        },
    }
    stem = Path(args.out)
    json_path = common.write_json_atomic(stem.with_suffix(".json"), payload)
    md_path = common.write_text_atomic(stem.with_suffix(".md"), markdown_report(payload))
    print(common.text_table(table_rows(rows), COLUMNS))
    print()
    print(common.text_table(check_rows(checks), CHECK_COLUMNS))
    for part in breakdown:
        print(f"\nbreakdown {NETWORKS[part['network']]['label']}, B={part['batch_size']}")
        print(common.text_table(part["rows"], BREAKDOWN_COLUMNS))
        print()
        print(common.text_table(part["engine"]["rows"], ENGINE_BREAKDOWN_COLUMNS))
    if extras:
        print()
        print(common.text_table(extras_rows(extras), EXTRAS_COLUMNS))
    print(f"\nwrote {json_path} and {md_path} in {payload['summary']['total_s']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
