"""pyrogen.GaussianMixture against sklearn.mixture.GaussianMixture, side by side in one run.

Same data, K, covariance type and seed. Settings (covariance "full" and "diag" each):

* synthetic, well-specified mixtures: K = 5 in D = 2 and D = 10, N = 100k training rows and
  20k held out; random rotations and per-axis sds in [0.5, 2], unequal weights, means spread
  by bisection so that 10% of rows have no true responsibility above 0.9;
* heavily overlapping clusters (a third of the rows ambiguous): K = 15 in D = 2 with 4,000
  rows, and K = 8 in D = 5 with N rows, where one k-means++ start often ends in a poor optimum;
* Old Faithful (``pyrogen.data.old_faithful()``, K = 2), a seeded random 80/20 split;
* a reference row on the D = 2 "full" setting: SVI alone from k-means (``em_iterations=0``).

pyrogen as a user calls it, ``pyrogen.fit(GaussianMixture(K, covariance=...), x, seed=...)``
with the family's defaults; scikit-learn with its defaults (``n_init=1``, ``max_iter=100``,
``tol=1e-3``, k-means init), and timed again with pyrogen's number of starts. Per row: the
held-out mean log-likelihood (nats per point; target >= sklearn - 0.005), the wall time of one
fit (best of ``--repeats``, the libraries taking turns; target <= 2x sklearn from N = 10k
rows), and the growth of the peak RSS during the first timed fit of each (``VmHWM`` after
``clear_refs``, Linux).

``--scale``: the synthetic D = 2 and D = 10 settings, "full" only, at N = 10 million rows
(``--rows``) and 100k held out, drawn in chunks; ``--sklearn-rows`` fits scikit-learn on the
first rows only when the full N takes too long (its time per million rows is then a linear
extrapolation). Writes ``scale_gmm`` results.

``--profile``: where the fit time goes, from cProfile of one fit of each library per
setting: the functions with the largest cumulative time. Writes ``gmm_profile`` results.

``--stages``: where a fit's time goes in wall-clock time, without a profiler's cost per
call (meant for a few hundred rows, where fixed costs decide): medians over ``--repeats``
blocks of calls taking turns of scikit-learn's fit (one and four starts), ``pyrogen.fit``
(four starts and one), its ``setup`` alone and its one Pyro step alone (the
``TraceEnum_ELBO`` loss and gradient at the MAP-EM mode, with Pyro's validation on as at
a fit's first step), with the number of torch operations each runs. Writes ``gmm_stages``.
"""

from __future__ import annotations

import cProfile
import math
import pstats
from pathlib import Path

import numpy as np
import pyro
import torch
from sklearn.mixture import GaussianMixture as SkGaussianMixture
from torch.utils._python_dispatch import TorchDispatchMode

import pyrogen
from benchmarks import harness
from pyrogen.infer.engine import _ELBOLoss

LL_TOLERANCE = 0.005  # nats per point
TIME_TARGET, TIME_TARGET_ROWS = 2.0, 10_000
CHUNK_ROWS = 250_000
COLUMNS = [
    ("setting", "setting"),
    ("covariance", "cov."),
    ("variant", "pyrogen"),
    ("n_train", "N train", ",d"),
    ("pyrogen_ll", "held-out LL pyrogen", ".4f"),
    ("sklearn_ll", "held-out LL sklearn", ".4f"),
    ("ll_diff", "diff", "+.4f"),
    ("ll_pass", f">= -{LL_TOLERANCE}", lambda ok: "pass" if ok else "FAIL"),
    ("oracle_ll", "truth", ".4f"),
    ("pyrogen_s", "pyrogen s", ".3f"),
    ("sklearn_s", "sklearn s", ".3f"),
    ("time_ratio", "ratio", ".2f"),
    ("time_pass", f"<= {TIME_TARGET:g}x", lambda ok: "pass" if ok else "FAIL"),
    ("sklearn_matched_s", "sklearn n_init s", ".3f"),
    ("pyrogen_mib", "peak MiB pyrogen", ".1f"),
    ("sklearn_mib", "peak MiB sklearn", ".1f"),
]
PROFILE_COLUMNS = [
    ("setting", "setting"),
    ("library", "library"),
    ("function", "function"),
    ("seconds", "cumulative s", ".3f"),
    ("share", "share of fit", ".1%"),
    ("calls", "calls", ",d"),
]


STAGE_COLUMNS = [
    ("setting", "setting"),
    ("covariance", "cov."),
    ("stage", "stage"),
    ("ms", "ms", ".2f"),
    ("vs_sklearn", "/ scikit-learn's default fit", ".2f"),
    ("torch_ops", "torch operations", ",d"),
]


# --- data --------------------------------------------------------------------------------------


def synthetic_parameters(d: int, k: int, seed: int, ambiguity: float = 0.10) -> dict:
    """A random mixture whose components overlap so that a share ``ambiguity`` of rows have
    no true responsibility above 0.9 (the means' scale found by bisection)."""
    rng = np.random.default_rng([seed, d, k])
    weights = 0.8 * rng.dirichlet(np.full(k, 2.0)) + 0.2 / k
    covariances = np.empty((k, d, d))
    for j in range(k):
        q, r = np.linalg.qr(rng.standard_normal((d, d)))
        rotation = q * np.sign(np.diag(r))
        sds = np.exp(rng.uniform(np.log(0.5), np.log(2.0), d))
        covariances[j] = (rotation * sds**2) @ rotation.T
    directions = rng.normal(0.0, 1.0 / math.sqrt(2 * d), (k, d))
    calibration = np.random.default_rng([seed, d, k, 2])  # one sample, only the scale changes
    labels = calibration.choice(k, size=20_000, p=weights)
    noise = np.einsum(
        "nij,nj->ni",
        np.linalg.cholesky(covariances)[labels],
        calibration.standard_normal((20_000, d)),
    )

    def ambiguous(scale: float) -> float:
        params = {"weights": weights, "means": scale * directions, "covariances": covariances}
        joint = log_joint(params, scale * directions[labels] + noise)
        return float((np.exp(joint.max(1) - log_sum(joint)) < 0.9).mean())

    low, high = 0.0, 100.0
    for _ in range(30):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if ambiguous(middle) > ambiguity else (low, middle)
    return {"weights": weights, "means": high * directions, "covariances": covariances}


def sample_mixture(params: dict, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` rows, drawn in chunks (one call would hold an (N, D, D) array)."""
    weights, means = params["weights"], params["means"]
    factors = np.linalg.cholesky(params["covariances"])
    out = np.empty((n, means.shape[1]))
    for start in range(0, n, CHUNK_ROWS):
        stop = min(n, start + CHUNK_ROWS)
        labels = rng.choice(len(weights), size=stop - start, p=weights)
        noise = rng.standard_normal((stop - start, means.shape[1]))
        out[start:stop] = means[labels] + np.einsum("nij,nj->ni", factors[labels], noise)
    return out


def log_joint(params: dict, x: np.ndarray) -> np.ndarray:
    """log w_k N(x_n | mu_k, Sigma_k), (N, K), in numpy: the truth's densities."""
    factors = np.linalg.cholesky(params["covariances"])
    out = np.empty((x.shape[0], len(params["weights"])))
    for j, (w, mean, factor) in enumerate(
        zip(params["weights"], params["means"], factors, strict=True)
    ):
        z = np.linalg.solve(factor, (x - mean).T)
        log_det = np.log(np.diag(factor)).sum()
        out[:, j] = (
            np.log(w) - 0.5 * (z * z).sum(0) - log_det - 0.5 * x.shape[1] * math.log(2 * math.pi)
        )
    return out


def log_sum(joint: np.ndarray) -> np.ndarray:
    top = joint.max(1)
    return top + np.log(np.exp(joint - top[:, None]).sum(1))


def settings(args) -> list[dict]:
    """Name, K, and train / test rows (float64) of every setting, with the truth where known."""
    out = []
    layouts = [(f"synthetic D={d}", d, 5, args.rows, 0.10) for d in (2, 10)]
    if not args.scale:
        layouts += [("overlapping K=15 D=2", 2, 15, min(4000, args.rows), 0.33)]
        layouts += [("overlapping K=8 D=5", 5, 8, args.rows, 0.33)]
    if args.quick:  # a smoke run: one synthetic setting (and Old Faithful below)
        layouts = layouts[:1]
    for name, d, k, n, ambiguity in layouts:
        params = synthetic_parameters(d, k, args.data_seed, ambiguity)
        rng = np.random.default_rng([args.data_seed, d, k, 1])
        x_train, x_test = (
            sample_mixture(params, n, rng),
            sample_mixture(params, args.test_rows, rng),
        )
        out.append({"name": name, "k": k, "train": x_train, "test": x_test, "truth": params})
    if not args.scale:
        x = pyrogen.data.old_faithful().double().numpy()
        order = np.random.default_rng(args.data_seed).permutation(len(x))
        cut = int(round(0.2 * len(x)))
        out.append(
            {"name": "Old Faithful", "k": 2, "train": x[order[cut:]], "test": x[order[:cut]]}
        )
    return out


# --- the fits ----------------------------------------------------------------------------------


def fit_pyrogen(x, k: int, covariance: str, args, **model_options):
    model = pyrogen.GaussianMixture(k, covariance=covariance, **model_options)
    x = x.astype(np.float32) if args.float32 else x
    return pyrogen.fit(model, x, seed=args.seed, device=args.device, progress=False)


def fit_sklearn(x, k: int, covariance: str, args, n_init: int = 1):
    sk = SkGaussianMixture(k, covariance_type=covariance, n_init=n_init, random_state=args.seed)
    return sk.fit(x)


def with_peak(fn, record: dict, key: str):
    """``fn`` that also records its peak RSS growth in MiB under ``record[key]`` (first call)."""

    def run():
        baseline = harness.reset_peak_rss() if key not in record else None
        result = fn()
        if baseline is not None:
            record[key] = ((harness.peak_rss() or baseline) - baseline) / 2**20
        return result

    return run


def compare(setting: dict, covariance: str, args, run: harness.Run, **model_options) -> dict:
    """Time and score both libraries on one setting (pyrogen with ``model_options``)."""
    x_train, x_test, k = setting["train"], setting["test"], setting["k"]
    x_sklearn = x_train[: args.sklearn_rows or None]
    n_init = getattr(pyrogen.GaussianMixture(k, **model_options), "n_init", 1)
    memory: dict = {}
    fns = {
        "sklearn": with_peak(lambda: fit_sklearn(x_sklearn, k, covariance, args), memory, "sk"),
        "pyrogen": with_peak(
            lambda: fit_pyrogen(x_train, k, covariance, args, **model_options), memory, "py"
        ),
    }
    if not args.scale:  # sklearn with as many starts as pyrogen makes
        fns["matched"] = lambda: fit_sklearn(x_train, k, covariance, args, n_init)
    timings = harness.time_interleaved(fns, args.repeats, sync={"pyrogen": run.sync})
    model = timings["pyrogen"].result.model
    row = {
        "setting": setting["name"],
        "covariance": covariance,
        "variant": "SVI only (em_iterations=0)" if model_options else "default",
        "n_train": len(x_train),
        "sklearn_rows": len(x_sklearn),
        "pyrogen_ll": float(model.log_prob(torch.as_tensor(x_test)).double().mean()),
        "sklearn_ll": float(timings["sklearn"].result.score(x_test)),
        "pyrogen_s": timings["pyrogen"].best,
        "sklearn_s": timings["sklearn"].best * len(x_train) / len(x_sklearn),
        "pyrogen_cpu_s": timings["pyrogen"].best_cpu,
        "sklearn_cpu_s": timings["sklearn"].best_cpu,
        "pyrogen_steps": timings["pyrogen"].result.steps,
        "sklearn_n_iter": int(timings["sklearn"].result.n_iter_),
        "pyrogen_mib": memory.get("py"),
        "sklearn_mib": memory.get("sk"),
    }
    if "matched" in timings:
        row["sklearn_matched_s"] = timings["matched"].best
        row["sklearn_matched_ll"] = float(timings["matched"].result.score(x_test))
    if "truth" in setting:
        row["oracle_ll"] = float(log_sum(log_joint(setting["truth"], x_test)).mean())
    row["ll_diff"] = row["pyrogen_ll"] - row["sklearn_ll"]
    row["ll_pass"] = row["ll_diff"] >= -LL_TOLERANCE
    row["time_ratio"] = row["pyrogen_s"] / row["sklearn_s"]
    if row["n_train"] >= TIME_TARGET_ROWS:
        row["time_pass"] = row["time_ratio"] <= TIME_TARGET
    return row


def profile(setting: dict, covariance: str, args, top: int) -> list[dict]:
    """cProfile of one fit of each library: the functions with the most cumulative time."""
    rows = []
    for library, fit, prefixes in (
        ("pyrogen", fit_pyrogen, ("pyrogen/", "pyro/", "torch/")),
        ("sklearn", fit_sklearn, ("sklearn/",)),
    ):
        fit(setting["train"][:500], setting["k"], covariance, args)  # warm-up
        profiler = cProfile.Profile()
        profiler.runcall(fit, setting["train"], setting["k"], covariance, args)
        stats = pstats.Stats(profiler).stats
        total = max(entry[3] for entry in stats.values())
        entries = [
            (f"{'/'.join(Path(file).parts[-2:])}:{name}", entry)
            for (file, _line, name), entry in stats.items()
            if any(prefix in file.replace("\\", "/") for prefix in prefixes)
        ]
        entries.sort(key=lambda item: item[1][3], reverse=True)
        for function, (_cc, calls, _tt, cumulative, _callers) in entries[:top]:
            rows.append(
                {
                    "setting": f"{setting['name']} / {covariance}",
                    "library": library,
                    "function": function,
                    "seconds": cumulative,
                    "share": cumulative / total,
                    "calls": calls,
                }
            )
    return rows


def stages(setting: dict, covariance: str, args) -> list[dict]:
    """Wall-clock medians of a fit's parts (see ``--stages``), the parts taking turns."""
    x, k = setting["train"], setting["k"]
    rows = torch.as_tensor(x.astype(np.float32) if args.float32 else x)
    at_mode = pyrogen.GaussianMixture(k, covariance=covariance)
    at_mode.setup(rows, seed=args.seed)
    loss = _ELBOLoss(at_mode, at_mode.loss)

    def pyro_step() -> None:
        with pyro.validation_enabled(True):
            loss(rows, None, len(rows)).backward()
        at_mode.zero_grad(set_to_none=True)

    parts = {
        "scikit-learn fit, 1 start (its default)": lambda: fit_sklearn(x, k, covariance, args),
        "scikit-learn fit, 4 starts": lambda: fit_sklearn(x, k, covariance, args, n_init=4),
        "pyrogen.fit, 4 starts (its default)": lambda: fit_pyrogen(x, k, covariance, args),
        "pyrogen.fit, n_init=1": lambda: fit_pyrogen(x, k, covariance, args, n_init=1),
        "- its setup (starts, EM, MAP-EM)": lambda: pyrogen.GaussianMixture(
            k, covariance=covariance
        ).setup(rows, seed=args.seed),
        "- its Pyro step (TraceEnum_ELBO loss and gradient)": pyro_step,
    }
    timings = harness.time_steps(parts, args.repeats, block_s=0.3)
    baseline = timings["scikit-learn fit, 1 start (its default)"]["ms"]
    out = []
    for stage, part in parts.items():
        counter = _OperationCount()
        with counter:
            part()
        out.append(
            {
                "setting": f"{setting['name']} (N={len(x):,})",
                "covariance": covariance,
                "stage": stage,
                "ms": timings[stage]["ms"],
                "vs_sklearn": timings[stage]["ms"] / baseline,
                "torch_ops": counter.count,
            }
        )
    return out


class _OperationCount(TorchDispatchMode):
    """Counts the torch operations (ATen calls, views included) run inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def main(argv=None) -> int:
    options = harness.parser(__doc__, threads=2)
    options.add_argument("--scale", action="store_true", help="N = 10M, D = 2 and 10, full")
    options.add_argument("--profile", action="store_true", help="cProfile stages instead")
    options.add_argument("--rows", type=int, default=None, help="training rows (100k; 10M)")
    options.add_argument("--test-rows", type=int, default=None, help="held out (20k; 100k)")
    options.add_argument("--sklearn-rows", type=int, default=None, help="cap sklearn's N")
    options.add_argument("--repeats", type=int, default=None, help="timed fits (3; 1)")
    options.add_argument("--float32", action="store_true", help="pyrogen on float32 rows")
    options.add_argument("--data-seed", type=int, default=20240601)
    options.add_argument("--top", type=int, default=8, help="--profile: functions each")
    options.add_argument("--stages", action="store_true", help="wall-clock parts instead")
    scale = options.parse_known_args(argv)[0].scale
    run = harness.start(
        lambda a: (
            "scale_gmm"
            if a.scale
            else "gmm_profile"
            if a.profile
            else "gmm_stages"
            if a.stages
            else "gmm_vs_sklearn"
        ),
        options,
        argv,
        full={"rows": 10_000_000, "test_rows": 100_000, "repeats": 1}
        if scale
        else {"rows": 100_000, "test_rows": 20_000, "repeats": 3},
        quick={"rows": 2000, "test_rows": 500, "repeats": 1},
    )
    args = run.args
    covariances = ("full",) if args.scale else ("full", "diag")
    if args.profile:
        rows = [
            row
            for setting in settings(args)
            for covariance in covariances
            for row in profile(setting, covariance, args, args.top)
        ]
        run.write(
            "Where GaussianMixture's fit time goes, next to scikit-learn's",
            [harness.Table(rows, PROFILE_COLUMNS)],
            notes=["cProfile of one fit each; cumulative time includes the functions called."],
        )
        return 0
    if args.stages:
        rows = [
            row
            for setting in settings(args)
            for covariance in covariances
            for row in stages(setting, covariance, args)
        ]
        run.write(
            "Where a GaussianMixture fit's time goes, in wall-clock time",
            [harness.Table(rows, STAGE_COLUMNS)],
            notes=[
                f"Medians of {args.repeats} blocks of about 0.3 s per part, the parts taking "
                "turns; torch operations: ATen calls (views included) of one call. The Pyro "
                "step runs with Pyro's validation on, as at the first step of a fit."
            ],
        )
        return 0
    warm = settings(args)[0]["train"][:500]  # lazy imports and first-call dispatch, untimed
    fit_sklearn(warm, 2, "full", args)
    fit_pyrogen(warm, 2, "full", args)
    rows = []
    for setting in settings(args):
        for covariance in covariances:
            rows.append(compare(setting, covariance, args, run))
            if setting["name"] == "synthetic D=2" and covariance == "full" and not args.scale:
                rows.append(compare(setting, covariance, args, run, em_iterations=0))
    default = [r for r in rows if r["variant"] == "default"]
    run.write(
        "pyrogen.GaussianMixture vs sklearn.mixture.GaussianMixture",
        [harness.Table(rows, COLUMNS)],
        notes=[
            "Held-out LL: mean log-likelihood per held-out point (nats), higher is better; "
            "*truth*: under the true parameters. Time: one fit, best of "
            f"{args.repeats}, the libraries taking turns; *sklearn n_init*: scikit-learn with "
            "pyrogen's number of starts. Peak MiB: growth of the peak RSS during the first "
            "timed fit."
            + (
                f" scikit-learn fitted on the first {args.sklearn_rows:,} rows; its time is "
                "scaled to N (a linear extrapolation)."
                if args.sklearn_rows
                else ""
            ),
            f"Held-out LL target met on {sum(r['ll_pass'] for r in default)} of {len(default)} "
            f"rows; time target on {sum(bool(r.get('time_pass')) for r in default)} of "
            f"{sum('time_pass' in r for r in default)} rows with N >= {TIME_TARGET_ROWS:,}.",
        ],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
