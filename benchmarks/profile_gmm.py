"""Where pyrogen.GaussianMixture's fit time goes, next to sklearn's, on the benchmark data.

For each setting of ``gmm_vs_sklearn.py`` this

1. profiles one real ``pyrogen.fit`` with cProfile and splits it into stages: input checks,
   k-means++, Lloyd, the hard-assignment M-step, EM, and the SVI polish (TraceEnum_ELBO
   forward, backward, Adam, gradient checks, best-state bookkeeping);
2. profiles one sklearn fit the same way (KMeans init, E-steps, M-steps);
3. times single SVI steps at the fitted point: as ``pyrogen.fit`` runs them, with Pyro's
   argument validation off, and a hand-written closed-form MAP loss (log prior + logsumexp of
   the component densities) that has the same value -- the cost an optimised loss would have;
4. times counterfactual fits through the public API: ``steps=1`` (EM, next to no polish) and
   the default fit with Pyro validation off, with their held-out log-likelihoods;
5. keeps torch.profiler's top operators for one default SVI step.

Nothing in pyrogen is changed. Usage::

    python benchmarks/profile_gmm.py            # N=100k, as the benchmark
    python benchmarks/profile_gmm.py --quick    # N=10k

Writes ``benchmarks/results/gmm_profile.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common  # noqa: E402
from benchmarks import gmm_vs_sklearn as bench  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# (label, file suffix, function name) of the stages read off the cProfile of pyrogen.fit.
PYROGEN_STAGES = [
    ("fit total", "pyrogen/infer/engine.py", "fit"),
    ("as_tensor (input checks)", "pyrogen/data/validation.py", "as_tensor"),
    ("setup total", "pyrogen/models/gmm.py", "setup"),
    ("  k-means++", "pyrogen/models/mixture_em.py", "kmeans_plusplus"),
    ("  Lloyd k-means", "pyrogen/models/mixture_em.py", "kmeans"),
    ("  hard-assignment M-step", "pyrogen/models/mixture_em.py", "hard_assignment_parameters"),
    ("  EM", "pyrogen/models/mixture_em.py", "expectation_maximization"),
    ("SVI forward (TraceEnum_ELBO loss)", "pyrogen/infer/engine.py", "_loss"),
    ("  model trace + log_prob", "pyro/infer/traceenum_elbo.py", "_get_traces"),
    ("  enumerated ELBO contraction", "pyro/infer/traceenum_elbo.py", "_compute_dice_elbo"),
    ("  torch.distributions validation", "torch/distributions/distribution.py", "_validate_sample"),
    ("SVI backward", "torch/_tensor.py", "backward"),
    ("SVI Adam step", "torch/optim/adam.py", "step"),
    ("SVI gradient NaN checks", "pyrogen/infer/engine.py", "_check_gradients"),
    ("SVI best-state bookkeeping", "pyrogen/infer/engine.py", "monitor"),
]

SKLEARN_STAGES = [
    ("fit total", "sklearn/mixture/_base.py", "fit"),
    ("init (KMeans + M-step)", "sklearn/mixture/_base.py", "_initialize_parameters"),
    ("  KMeans", "sklearn/cluster/_kmeans.py", "fit"),
    ("E-steps", "sklearn/mixture/_base.py", "_e_step"),
    ("M-steps", "sklearn/mixture/_gaussian_mixture.py", "_m_step"),
]


def _cumulative(stats: pstats.Stats, suffix: str, name: str) -> tuple[float, int]:
    """Total cumulative seconds and calls of functions ``name`` in files ending ``suffix``.

    Nested entries of the same function (recursion, wrappers of the same name) are counted
    once: cProfile's cumulative time already includes them.
    """
    total, calls = 0.0, 0
    for (filename, _line, function), (_cc, ncalls, _tt, cumtime, _callers) in stats.stats.items():
        if function == name and filename.replace(os.sep, "/").endswith(suffix):
            total += cumtime
            calls += ncalls
    return total, calls


def _profile(fn):
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    result = fn()
    profiler.disable()
    wall = time.perf_counter() - started
    return result, pstats.Stats(profiler), wall


def _stage_rows(stats, stages, wall) -> list[dict[str, Any]]:
    rows = []
    for label, suffix, name in stages:
        seconds, calls = _cumulative(stats, suffix, name)
        rows.append(
            {
                "stage": label,
                "seconds": seconds,
                "calls": calls,
                "share": seconds / wall if wall else None,
            }
        )
    return rows


def _top_functions(stats: pstats.Stats, n: int = 12) -> list[dict[str, Any]]:
    entries = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)[:n]
    return [
        {"function": f"{Path(file).name}:{line}({name})", "tottime": tt, "calls": nc}
        for (file, line, name), (_cc, nc, tt, _ct, _callers) in entries
    ]


def _step_seconds(step, repeats: int) -> float:
    step()  # warm
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - started)
    return best


def closed_form_map_loss(model, x):
    """-(log prior + log likelihood) at the guide's point, without Pyro: the MAP loss that
    ``TraceEnum_ELBO`` computes for the Delta guide, written with the EM module's densities."""
    import torch
    from torch.distributions import biject_to

    from pyrogen.models.mixture_em import component_log_density

    values = {
        site.name: biject_to(site.support)(getattr(model, f"{site.name}_loc"))
        for site in model._global_sites()
    }
    log_prior = sum(
        model._prior(site).log_prob(values[site.name]).sum() for site in model._global_sites()
    )
    params = model.mixture_parameters(values)
    joint = component_log_density(x, params) + params.weights.log()
    return -(log_prior + torch.logsumexp(joint, -1).sum())


def svi_step_costs(model, x, repeats: int) -> dict[str, Any]:
    import pyro
    import torch

    elbo = model.loss
    params = [p for p in model.parameters() if p.requires_grad]

    def default_step():
        for p in params:
            p.grad = None
        elbo.differentiable_loss(model.model, model.guide, x, None, num_data=x.shape[0]).backward()

    def forward_only():  # builds the graph, as in training, but does not walk it back
        elbo.differentiable_loss(model.model, model.guide, x, None, num_data=x.shape[0])

    def no_validation_step():
        with pyro.validation_enabled(False):
            default_step()

    def closed_form_step():
        for p in params:
            p.grad = None
        closed_form_map_loss(model, x).backward()

    pyro_loss = float(
        elbo.differentiable_loss(model.model, model.guide, x, None, num_data=x.shape[0]).detach()
    )
    with torch.no_grad():
        direct_loss = float(closed_form_map_loss(model, x))
    out = {
        "default_step_s": _step_seconds(default_step, repeats),
        "forward_only_s": _step_seconds(forward_only, repeats),
        "no_validation_step_s": _step_seconds(no_validation_step, repeats),
        "closed_form_step_s": _step_seconds(closed_form_step, repeats),
        "pyro_loss": pyro_loss,
        "closed_form_loss": direct_loss,
        "loss_relative_difference": abs(pyro_loss - direct_loss) / abs(pyro_loss),
    }
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        default_step()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
    out["torch_profiler_top_ops"] = table
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    out["op_count"] = int(sum(e.count for e in ops))
    out["top_ops"] = [
        {"op": e.key, "self_cpu_ms": e.self_cpu_time_total / 1e3, "calls": e.count}
        for e in ops[:10]
    ]
    return out


def profile_setting(spec, data, covariance, args) -> dict[str, Any]:
    import pyro

    x_train, x_test = data["x_train"], data["x_test"]
    k, seed = spec["k"], args.seed

    def run_pyrogen(**fit_kwargs):
        return bench.fit_pyrogen(
            x_train, k=k, covariance=covariance, seed=seed, fit_kwargs=fit_kwargs
        )

    run_pyrogen(steps=2)  # warm-up: lazy imports, first-call dispatch
    (model, result), stats, wall = _profile(run_pyrogen)
    pyrogen_stages = _stage_rows(stats, PYROGEN_STAGES, wall)
    svi_total = sum(
        r["seconds"]
        for r in pyrogen_stages
        if r["stage"]
        in (
            "SVI forward (TraceEnum_ELBO loss)",
            "SVI backward",
            "SVI Adam step",
            "SVI gradient NaN checks",
            "SVI best-state bookkeeping",
        )
    )

    bench.fit_sklearn(x_train[:500], k=k, covariance=covariance, seed=seed)
    sk, sk_stats, sk_wall = _profile(
        lambda: bench.fit_sklearn(x_train, k=k, covariance=covariance, seed=seed)
    )
    sklearn_stages = _stage_rows(sk_stats, SKLEARN_STAGES, sk_wall)

    # EM / Lloyd iteration counts, from the same functions pyrogen's setup calls.
    em_info = em_iterations(model, x_train, seed)

    # SVI step costs at a freshly set-up model (the point SVI starts from).
    import torch

    import pyrogen

    fresh = pyrogen.GaussianMixture(k, covariance=covariance)
    x_tensor = torch.as_tensor(x_train, dtype=torch.float32)
    fresh.setup(x_tensor, seed=seed)
    steps = svi_step_costs(fresh, x_tensor, args.step_repeats)

    # Counterfactual fits through the public API.
    counterfactual = {}
    for label, kwargs, validation in (
        ("default", {}, True),
        ("steps=1 (EM, no polish)", {"steps": 1}, True),
        ("default, pyro validation off", {}, False),
    ):
        with pyro.validation_enabled(validation):
            timing = common.time_best_of(lambda kwargs=kwargs: run_pyrogen(**kwargs), args.repeats)
        fitted, fit_result = timing.result
        counterfactual[label] = {
            "time_s": timing.best,
            "steps": fit_result.steps,
            "test_ll": bench.pyrogen_mean_log_prob(fitted, x_test),
        }
    return {
        "setting": spec["name"],
        "covariance": covariance,
        "n_train": len(x_train),
        "k": k,
        "d": spec["d"],
        "pyrogen": {
            "wall_s": wall,
            "svi_steps": result.steps,
            "svi_total_s": svi_total,
            "svi_per_step_s": svi_total / max(1, result.steps),
            "stages": pyrogen_stages,
            "top_functions": _top_functions(stats),
            **em_info,
        },
        "sklearn": {
            "wall_s": sk_wall,
            "n_iter": int(sk.n_iter_),
            "stages": sklearn_stages,
            "per_iteration_s": (
                _cumulative(sk_stats, "sklearn/mixture/_base.py", "_e_step")[0]
                + _cumulative(sk_stats, "sklearn/mixture/_gaussian_mixture.py", "_m_step")[0]
            )
            / max(1, int(sk.n_iter_)),
            "top_functions": _top_functions(sk_stats),
        },
        "svi_step": steps,
        "counterfactual_fits": counterfactual,
        "sklearn_test_ll": float(sk.score(x_test)),
    }


def em_iterations(model, x_train, seed) -> dict[str, Any]:
    """Lloyd and EM iteration counts and per-iteration EM time, replaying pyrogen's setup."""
    import torch

    from pyrogen.models import mixture_em as em

    work = torch.as_tensor(x_train, dtype=torch.float32).to(torch.float64)
    mean, sd = work.mean(0), work.std(0, unbiased=False)
    centred, reg = work - mean, 1e-6 * sd.square()
    generator = torch.Generator().manual_seed(seed)
    centres = em.kmeans_plusplus(centred, model.n_components, generator)
    lloyd = 0
    labels = torch.cdist(centred, centres).argmin(-1)
    for lloyd in range(1, 21):  # noqa: B007 (read after the loop) - as em.kmeans(max_iter=20)
        counts = torch.bincount(labels, minlength=centres.shape[0]).to(centred.dtype)
        sums = torch.zeros_like(centres).index_add_(0, labels, centred)
        centres = torch.where((counts > 0)[:, None], sums / counts.clamp(min=1)[:, None], centres)
        new_labels = torch.cdist(centred, centres).argmin(-1)
        if torch.equal(new_labels, labels):
            break
        labels = new_labels
    params = em.hard_assignment_parameters(
        centred, labels, model.n_components, model.covariance, reg
    )
    started = time.perf_counter()
    result = em.expectation_maximization(
        centred, params, max_iter=model.em_iterations, tol=model.tol, reg=reg
    )
    seconds = time.perf_counter() - started
    return {
        "lloyd_iterations": lloyd,
        "em_iterations": result.n_iter,
        "em_converged": result.converged,
        "em_per_iteration_s": seconds / max(1, result.n_iter),
        "em_train_ll": result.mean_log_likelihood,
    }


def markdown_report(payload) -> str:
    lines = [
        "# Where pyrogen.GaussianMixture's fit time goes",
        "",
        f"Run {payload['timestamp']}, {payload['machine']['cpu_model']}, "
        f"{payload['settings']['threads']} threads, load average {payload['load_average']}.",
        "",
    ]
    for entry in payload["settings_profiled"]:
        py, sk, step = entry["pyrogen"], entry["sklearn"], entry["svi_step"]
        lines += [
            f"## {entry['setting']}, {entry['covariance']}, N={entry['n_train']:,}",
            "",
            f"pyrogen fit {py['wall_s']:.3f} s under cProfile ({py['svi_steps']} SVI steps, "
            f"{py['lloyd_iterations']} Lloyd and {py['em_iterations']} EM iterations); "
            f"sklearn {sk['wall_s']:.3f} s ({sk['n_iter']} EM iterations, "
            f"{1e3 * sk['per_iteration_s']:.1f} ms each vs pyrogen's "
            f"{1e3 * py['em_per_iteration_s']:.1f} ms).",
            "",
            common.markdown_table(
                py["stages"],
                [
                    ("stage", "pyrogen stage"),
                    ("seconds", "s", ".3f"),
                    ("share", "share", ".0%"),
                    ("calls", "calls"),
                ],
            ),
            "",
            common.markdown_table(
                sk["stages"],
                [
                    ("stage", "sklearn stage"),
                    ("seconds", "s", ".3f"),
                    ("share", "share", ".0%"),
                    ("calls", "calls"),
                ],
            ),
            "",
            f"One SVI step at the EM solution: {1e3 * step['default_step_s']:.1f} ms "
            "with Pyro validation on (`fit` validates only its first step) "
            f"(forward alone {1e3 * step['forward_only_s']:.1f} ms, {step['op_count']} torch ops), "
            f"{1e3 * step['no_validation_step_s']:.1f} ms with Pyro validation off, "
            f"{1e3 * step['closed_form_step_s']:.1f} ms as a closed-form MAP loss "
            f"(same value to {step['loss_relative_difference']:.1e}).",
            "",
            common.markdown_table(
                [{"variant": k, **v} for k, v in entry["counterfactual_fits"].items()],
                [
                    ("variant", "pyrogen.fit variant"),
                    ("time_s", "s", ".3f"),
                    ("steps", "SVI steps"),
                    ("test_ll", "held-out LL", ".4f"),
                ],
            ),
            f"\nsklearn held-out LL {entry['sklearn_test_ll']:.4f}.",
            "",
        ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="N=10k, 2k held out")
    parser.add_argument("--n-train", type=int, default=100_000)
    parser.add_argument("--n-test", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-seed", type=int, default=20240601)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--repeats", type=int, default=2, help="timed counterfactual fits (best kept)"
    )
    parser.add_argument("--step-repeats", type=int, default=5)
    parser.add_argument(
        "--only", default=None, help="substring of 'setting/cov' to profile, e.g. 'D=2/full'"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "gmm_profile")
    args = parser.parse_args(argv)
    args.memory, args.device = "none", None
    if args.quick:
        args.n_train, args.n_test = 10_000, 2_000
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    limiter = common.set_threads(args.threads)  # noqa: F841
    specs = bench.dataset_specs(
        argparse.Namespace(
            quick=False, n_train=args.n_train, n_test=args.n_test, data_seed=args.data_seed
        )
    )
    git = common.git_revision()  # at start: the code this process imports
    profiled = []
    for spec in specs:
        data = bench.load_data(spec)
        for covariance in ("full", "diag"):
            if args.only and args.only not in f"{spec['name']}/{covariance}":
                continue
            print(f"profiling {spec['name']} {covariance} ...", file=sys.stderr, flush=True)
            profiled.append(profile_setting(spec, data, covariance, args))
    payload = {
        "benchmark": "gmm_profile",
        "timestamp": common.utc_timestamp(),
        "machine": common.machine_info(),
        "versions": common.versions(),
        "threads": common.thread_info(),
        "git": git,
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "settings": {
            "n_train": args.n_train,
            "n_test": args.n_test,
            "seed": args.seed,
            "data_seed": args.data_seed,
            "threads": args.threads,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        },
        "settings_profiled": profiled,
    }
    common.write_json_atomic(args.out.with_suffix(".json"), payload)
    common.write_text_atomic(args.out.with_suffix(".md"), markdown_report(payload))
    print(markdown_report(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
