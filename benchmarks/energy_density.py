"""``pyrogen.EnergyDensity`` on 2-D data: held-out exact nats against a mixture, a flow and a
diffusion model; AIS log Z against quadrature; effective samples per second of its samplers.

* **Held-out nats** on three 2-D sets, each split at random (seeded) into training and
  held-out rows: two moons (scikit-learn's ``make_moons``, noise 0.1), a ring of 8 Gaussians
  (``pyrogen.diagnostics.sample_tests.ring_of_gaussians``, radius 2, sd ``--ring-sd``) and
  Old Faithful (``pyrogen.data.old_faithful()``, 80/20); and, when ``--sets`` names them,
  two sets the defaults were not tuned on: a 5 x 5 grid of Gaussians
  (``grid_of_gaussians``, spacing 2, sd ``--ring-sd``) and a noisy spiral (:func:`spiral`),
  split in half like the ring. ``EnergyDensity(2, objective=...)``
  with its defaults for each objective (dsm, pcd, nce, quadrature), trained by ``pyrogen.fit`` for
  ``--steps`` steps, and the default model (dsm) for ``--default-steps`` (its
  ``fit_defaults``: 2000), scored by ``log_prob``: -E(x) - log Z with log Z by quadrature,
  exact to the stated error (reported beside each number). Against
  ``GaussianMixture`` (full covariance, K chosen by BIC on the training rows among
  1..``--max-k``, MAP-EM), ``FlowDensity(2)`` (its defaults, exact) and ``DiffusionVAE((2,))``
  (its defaults; its number is the ELBO, its diffusion term estimated without bias from
  ``--elbo-steps`` random steps per row, a *lower bound* on the held-out log-likelihood, not
  comparable as an equal), all trained for the same ``--steps``.
  Higher is better. The target: the default EBM (dsm) within 0.1 nats/row of the best of
  the mixture and the flow.
* **AIS against quadrature**: for each fitted default EBM, ``log_partition("ais",
  chains=100, steps=S)`` for several S and ``--ais-seeds`` seeds against the quadrature
  value: the mean error (AIS is below log Z in expectation), the mean stated standard error
  and the seconds per estimate.
* **Samplers** on the two-moons default EBM: unadjusted Langevin (``--chains`` chains, step
  0.05 standardized), MALA (``--chains`` chains, step size adapted in the warm-up) and Pyro's
  NUTS on ``ebm.model`` (one chain), each ``--warmup`` warm-up and ``--draws`` kept steps; the
  effective sample size (ArviZ ``ess`` bulk, the smaller of the two coordinates, all chains
  together) per second of sampling, warm-up included. Unadjusted Langevin is biased by
  O(step): its ESS counts draws of a slightly wider density.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import arviz
import numpy as np
import torch
from pyro.infer import MCMC, NUTS
from sklearn.datasets import make_moons

import pyrogen
from benchmarks import harness
from pyrogen.data import old_faithful
from pyrogen.diagnostics.sample_tests import grid_of_gaussians, ring_of_gaussians
from pyrogen.models.energy_sampling import langevin, mala

OBJECTIVES = ("dsm", "pcd", "nce", "quadrature")
#: Step size of unadjusted Langevin (EnergyDensity.sample's default), standardized units.
LANGEVIN_STEP = 0.05


def split(x: torch.Tensor, train_share: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    cut = int(round(train_share * len(x)))
    return x[order[:cut]], x[order[cut:]]


def spiral(n: int, seed: int) -> torch.Tensor:
    """n rows (n, 2) of a one-armed spiral over 1.5 turns, radius growing with the angle t
    (t = 3 pi sqrt(v), v ~ U(0, 1), so the rows spread evenly along the arm), divided by 3,
    plus N(0, 0.1^2) noise in each coordinate."""
    generator = torch.Generator().manual_seed(seed)
    t = 3 * math.pi * torch.rand(n, generator=generator).sqrt()
    arm = torch.stack([t * t.cos(), t * t.sin()], 1) / 3
    return (arm + 0.1 * torch.randn(n, 2, generator=generator)).float()


def data_sets(args) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Training and held-out rows of each set named by ``--sets``, float32."""
    moons, _ = make_moons(2 * args.rows, noise=0.1, random_state=args.seed)
    ring, _, _ = ring_of_gaussians(2 * args.rows, radius=2.0, sd=args.ring_sd, seed=args.seed)
    grid, _, _ = grid_of_gaussians(
        2 * args.rows, side=5, spacing=2.0, sd=args.ring_sd, seed=args.seed
    )
    sets = {
        "two moons": split(torch.tensor(moons, dtype=torch.float32), 0.5, args.seed),
        f"ring of 8 (sd {args.ring_sd:g})": split(ring, 0.5, args.seed),
        "Old Faithful": split(old_faithful(), 0.8, args.seed),
        f"5x5 grid (sd {args.ring_sd:g})": split(grid, 0.5, args.seed),
        "spiral": split(spiral(2 * args.rows, args.seed), 0.5, args.seed),
    }
    return {name: sets[name] for name in sets if name.split(" (")[0] in args.sets.split(",")}


def timed(fit: Callable[[], object]) -> float:
    started = time.perf_counter()
    fit()
    return time.perf_counter() - started


def fit_options(args, steps: int | None) -> dict:
    """Options of pyrogen.fit for ``steps`` steps (None: the model's fit_defaults)."""
    return {"seed": args.seed, "progress": False} | ({"steps": steps} if steps else {})


def energy_rows(args, name, train, test) -> tuple[list[dict], dict[str, pyrogen.EnergyDensity]]:
    """Each objective for --steps, and the defaults (dsm) for --default-steps."""
    rows, models = [], {}
    runs = [(objective, args.steps) for objective in args.objectives.split(",")]
    runs.append(("default", args.default_steps))
    for objective, steps in runs:
        torch.manual_seed(args.seed)
        chosen = {} if objective == "default" else {"objective": objective}
        model = pyrogen.EnergyDensity(2, hidden=args.hidden, **chosen)
        options = fit_options(args, steps)
        fit_s = timed(lambda model=model, options=options: pyrogen.fit(model, train, **options))
        estimate = model.log_partition()
        label = "defaults (dsm, fit_defaults)" if objective == "default" else objective
        rows.append(
            {
                "model": f"EnergyDensity {label}",
                "objective": objective,
                "steps": steps or model.fit_defaults["steps"],
                "number": f"exact (quadrature, error {estimate.error:.0e})",
                "train_ll": model.log_prob(train).mean().item(),
                "test_ll": model.log_prob(test).mean().item(),
                "fit_s": fit_s,
                "quadrature_error": estimate.error,
            }
        )
        models[objective] = model
    return rows, models


def reference_rows(args, train, test) -> list[dict]:
    rows = []
    mixtures = {}
    for k in range(1, args.max_k + 1):
        gmm = pyrogen.GaussianMixture(k, covariance="full")
        fit_s = timed(lambda gmm=gmm: pyrogen.fit(gmm, train, seed=args.seed, progress=False))
        mixtures[k] = (gmm, fit_s, gmm.bic(train))
    best = min(mixtures, key=lambda k: mixtures[k][2])
    gmm, fit_s, _ = mixtures[best]
    rows.append(
        {
            "model": f"GaussianMixture full, K={best} (BIC)",
            "steps": "EM",
            "number": "exact",
            "train_ll": gmm.log_prob(train).mean().item(),
            "test_ll": gmm.log_prob(test).mean().item(),
            "fit_s": fit_s,
        }
    )
    torch.manual_seed(args.seed)
    flow = pyrogen.FlowDensity(2)
    fit_s = timed(lambda: pyrogen.fit(flow, train, **fit_options(args, args.steps)))
    rows.append(
        {
            "model": "FlowDensity (NSF defaults)",
            "steps": args.steps or flow.fit_defaults["steps"],
            "number": "exact",
            "train_ll": flow.log_prob(train).mean().item(),
            "test_ll": flow.log_prob(test).mean().item(),
            "fit_s": fit_s,
        }
    )
    torch.manual_seed(args.seed)
    diffusion = pyrogen.DiffusionVAE((2,), args.timesteps)
    fit_s = timed(lambda: pyrogen.fit(diffusion, train, **fit_options(args, args.steps)))
    with torch.no_grad():
        rows.append(
            {
                "model": f"DiffusionVAE (defaults, T={args.timesteps})",
                "steps": args.steps or diffusion.fit_defaults["steps"],
                "number": "ELBO: a lower bound",
                "train_ll": diffusion.elbo(train, num_samples=args.elbo_steps).mean().item(),
                "test_ll": diffusion.elbo(test, num_samples=args.elbo_steps).mean().item(),
                "fit_s": fit_s,
            }
        )
    return rows


def ais_rows(args, name: str, model: pyrogen.EnergyDensity) -> list[dict]:
    quadrature = model.log_partition().log_z
    rows = []
    for steps in (int(s) for s in args.ais_steps.split(",")):
        errors, standard_errors, seconds = [], [], []
        for seed in range(args.ais_seeds):
            started = time.perf_counter()
            estimate = model.log_partition("ais", chains=100, steps=steps, seed=seed)
            seconds.append(time.perf_counter() - started)
            errors.append(estimate.log_z - quadrature)
            standard_errors.append(estimate.error)
        mean, se = harness.mean_and_se(errors)
        rows.append(
            {
                "data": name,
                "steps": steps,
                "error": mean,
                "error_se": se,
                "stated_se": sum(standard_errors) / len(standard_errors),
                "seconds": sum(seconds) / len(seconds),
            }
        )
    return rows


def effective_samples(draws: np.ndarray) -> float:
    """The smaller bulk ESS of the two coordinates of draws (chains, draws, 2)."""
    dataset = arviz.convert_to_dataset({"x": draws})
    return float(arviz.ess(dataset, method="bulk")["x"].min())


def sampler_rows(args, model: pyrogen.EnergyDensity) -> list[dict]:
    rows = []

    def log_density(u: torch.Tensor) -> torch.Tensor:  # standardized units
        return -model.standardized_energy(u)

    for method in ("langevin", "mala"):
        torch.manual_seed(args.seed)
        start = torch.randn(args.chains, 2)
        path: list[torch.Tensor] = []
        started = time.perf_counter()
        if method == "langevin":
            langevin(
                log_density,
                start,
                steps=args.warmup + args.draws,
                step_size=LANGEVIN_STEP,
                on_step=path.append,
            )
            detail = f"step {LANGEVIN_STEP:g}"
        else:
            result = mala(
                log_density,
                start,
                steps=2 * args.warmup,  # adapts in the first half
                step_size=LANGEVIN_STEP,
            )
            mala(
                log_density,
                result.samples,
                steps=args.draws,
                step_size=result.step_size,
                adapt=False,
                on_step=path.append,
            )
            detail = f"step {result.step_size:.3g}, acceptance {result.acceptance:.2f}"
        seconds = time.perf_counter() - started
        kept = torch.stack(path[-args.draws :], 1).numpy()  # (chains, draws, 2)
        rows.append(_sampler_row(method, args.chains, detail, effective_samples(kept), seconds))
    torch.manual_seed(args.seed)
    kernel = NUTS(model.model)
    mcmc = MCMC(kernel, num_samples=args.draws, warmup_steps=args.warmup, disable_progbar=True)
    started = time.perf_counter()
    mcmc.run(None)
    seconds = time.perf_counter() - started
    draws = mcmc.get_samples()["obs"].unsqueeze(0).numpy()
    detail = f"step {kernel.step_size:.3g}"
    rows.append(_sampler_row("NUTS (Pyro)", 1, detail, effective_samples(draws), seconds))
    return rows


def _sampler_row(method: str, chains: int, detail: str, ess: float, seconds: float) -> dict:
    return {
        "method": method,
        "chains": chains,
        "detail": detail,
        "ess": ess,
        "seconds": seconds,
        "ess_per_s": ess / seconds,
    }


DENSITY_COLUMNS = [
    ("data", "data"),
    ("split", "train / held-out"),
    ("model", "model"),
    ("steps", "steps"),
    ("number", "number"),
    ("train_ll", "train (nats/row)", ".3f"),
    ("test_ll", "held-out (nats/row)", ".3f"),
    ("fit_s", "fit s", ".0f"),
]
AIS_COLUMNS = [
    ("data", "data (default EBM)"),
    ("steps", "AIS temperatures"),
    ("error", "AIS - quadrature (nats)", "+.3f"),
    ("error_se", "its SE over seeds", ".3f"),
    ("stated_se", "stated SE", ".3f"),
    ("seconds", "s per estimate", ".2f"),
]
SAMPLER_COLUMNS = [
    ("method", "sampler"),
    ("chains", "chains"),
    ("detail", "settings"),
    ("ess", "ESS (bulk, min over x)", ".0f"),
    ("seconds", "s", ".1f"),
    ("ess_per_s", "ESS / s", ".1f"),
]


def main(argv=None) -> int:
    options = harness.parser(__doc__)
    options.add_argument(
        "--sets", default="two moons,ring of 8,Old Faithful", help="also: 5x5 grid, spiral"
    )
    options.add_argument("--objectives", default=",".join(OBJECTIVES))
    options.add_argument("--rows", type=int, default=None, help="rows of moons, ring (1000)")
    options.add_argument("--ring-sd", type=float, default=0.2, help="of each ring (grid) Gaussian")
    options.add_argument("--steps", type=int, default=None, help="flow, diffusion, EBMs (500)")
    options.add_argument(
        "--default-steps", type=int, default=None, help="the default EBM (its fit_defaults)"
    )
    options.add_argument("--hidden", default=None, help="EBM widths (the default 128,128)")
    options.add_argument("--max-k", type=int, default=None, help="mixture sizes (10)")
    options.add_argument("--timesteps", type=int, default=None, help="diffusion T (1000)")
    options.add_argument("--elbo-steps", type=int, default=None, help="diffusion ELBO (20)")
    options.add_argument("--ais-steps", default=None, help="AIS temperatures (10,100,1000)")
    options.add_argument("--ais-seeds", type=int, default=None, help="(2)")
    options.add_argument("--chains", type=int, default=None, help="Langevin, MALA (16)")
    options.add_argument("--warmup", type=int, default=None, help="(300)")
    options.add_argument("--draws", type=int, default=None, help="(1000)")
    run = harness.start(
        "energy_density",
        options,
        argv,
        full={"rows": 1000, "steps": 500, "hidden": "128,128", "max_k": 10, "timesteps": 1000}
        | {"elbo_steps": 20}
        | {"ais_steps": "10,100,1000", "ais_seeds": 2, "chains": 16}
        | {"warmup": 300, "draws": 1000},
        quick={"rows": 100, "hidden": "16", "steps": 5, "default_steps": 5, "max_k": 2}
        | {"timesteps": 20, "elbo_steps": 2}
        | {"ais_steps": "5", "ais_seeds": 2, "chains": 4, "warmup": 10, "draws": 20},
    )
    args = run.args
    args.hidden = tuple(int(h) for h in args.hidden.split(","))
    density, ais, gaps = [], [], []
    sampler_table: list[dict] = []
    for name, (train, test) in data_sets(args).items():
        energies, models = energy_rows(args, name, train, test)
        references = reference_rows(args, train, test)
        for row in energies + references:
            density.append({"data": name, "split": f"{len(train)} / {len(test)}", **row})
        best_reference = max(r["test_ll"] for r in references if r["number"] == "exact")
        gaps.append(
            f"{name}: "
            + ", ".join(f"{r['objective']} {r['test_ll'] - best_reference:+.3f}" for r in energies)
        )
        default = models["default"]
        ais += ais_rows(args, name, default)
        if name == "two moons":
            sampler_table = sampler_rows(args, default)
    run.write(
        "EnergyDensity on 2-D data: held-out nats, AIS against quadrature, samplers",
        [
            harness.Table(density, DENSITY_COLUMNS, "Held-out nats per row (higher is better)"),
            harness.Table(ais, AIS_COLUMNS, "AIS log Z against quadrature (100 chains)"),
        ]
        + (
            [harness.Table(sampler_table, SAMPLER_COLUMNS, "Samplers on the two-moons EBM")]
            if sampler_table
            else []
        ),
        notes=[
            "Each EBM's held-out nats minus the best of the mixture and the flow (the target: "
            "the default, dsm, above -0.1): " + "; ".join(gaps) + ".",
            "Steps: pyrogen.fit's steps (the default EBM: EnergyDensity.fit_defaults; the "
            "mixture: MAP-EM to convergence); the diffusion model's number is its ELBO, a "
            "lower bound. AIS: mean over seeds of its log Z minus the quadrature value, which "
            "is exact to below 1e-3 nats here.",
        ],
        data={"gaps": gaps, "finite": all(math.isfinite(r["test_ll"]) for r in density)},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
