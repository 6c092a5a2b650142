"""Gaussian mixture fits at scale: pyrogen.GaussianMixture on ``--device`` (a GPU) against
sklearn.mixture.GaussianMixture on the CPU, at N = 10 million points.

Data: ``gmm_vs_sklearn.py``'s well-specified synthetic mixtures (``synthetic_parameters``:
K = 5, moderate overlap, random full covariances; D = 2 and D = 10), N = ``--n`` training
rows (10,000,000; ``--quick``: 200,000) and 100,000 held-out rows from the same mixture,
drawn with ``sample_mixture`` in chunks of 250,000 rows (one call would materialise an
(N, D, D) array: 8 GB at D = 10) from ``--data-seed``.

Fits, as in ``gmm_vs_sklearn.py`` (``fit_pyrogen`` / ``fit_sklearn``): pyrogen
``GaussianMixture(K, covariance="full")`` + ``pyrogen.fit(model, x, seed=..., device=...)``
with the family's defaults (k-means++ and Lloyd, EM with at most 100 iterations and tol 1e-3,
then the MAP SVI polish with early stopping); scikit-learn ``GaussianMixture(K,
covariance_type="full", n_init=1, max_iter=100, tol=1e-3, random_state=seed)`` (its
defaults, k-means init). Both get the same float64 numpy array (pyrogen copies it to the
device inside the timed fit, as a user's call would); ``--sklearn-n`` fits scikit-learn on
the first rows only (the rows are i.i.d., so a prefix is a random subsample) when the full N
would take too long on the CPU at hand, and the JSON records it.

Measured per setting:

* **time**: wall time of one fit (best of ``--repeats``, the libraries taking turns; CUDA
  synchronized before the clock stops), after an untimed warm-up fit of each library on
  ``--warmup-rows`` rows (CUDA context, kernels, lazy imports); also seconds per million
  training rows, and the speed-up sklearn time / pyrogen time (per million rows when
  ``--sklearn-n`` caps scikit-learn's N: a linear extrapolation, stated as such).
* **held-out LL**: mean log-likelihood per held-out point (nats): pyrogen
  ``model.log_prob(x_test).mean()``, sklearn ``score(x_test)``, and the truth's.
* **peak memory** (``--memory``): ``inprocess`` (default, free): the growth of this process's
  peak RSS during the first timed fit over its RSS just before (``/proc/self/clear_refs``
  then ``VmHWM``; Linux), and on CUDA ``torch.cuda.max_memory_allocated`` over the memory
  allocated before; ``subprocess``: one more fit per library in a fresh process
  (``common.peak_rss_of``, as ``gmm_vs_sklearn.py``); ``none``.

Usage::

    python benchmarks/scale_gmm.py                        # N = 10M on cuda if available
    python benchmarks/scale_gmm.py --sklearn-n 2000000    # sklearn on the first 2M rows
    python benchmarks/scale_gmm.py --quick --device cpu --threads 1 \\
        --out benchmarks/results/scale_gmm_cpu_quick      # smoke test, N = 200k

Writes ``benchmarks/results/scale_gmm.json`` and ``.md`` (``--out`` to change the stem).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common, gmm_vs_sklearn  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
NAME = "scale_gmm"
CHUNK_ROWS = 250_000


# --- data ------------------------------------------------------------------------------------


def sample_rows(params: dict[str, np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    """``gmm_vs_sklearn.sample_mixture`` in chunks of ``CHUNK_ROWS`` rows, into one array."""
    out = np.empty((n, params["means"].shape[1]))
    for start in range(0, n, CHUNK_ROWS):
        stop = min(n, start + CHUNK_ROWS)
        out[start:stop] = gmm_vs_sklearn.sample_mixture(params, stop - start, rng)
    return out


def load_data(spec: dict[str, Any]) -> dict[str, Any]:
    """Training and held-out rows (float64) of the synthetic mixture of ``spec``, and the truth."""
    params = gmm_vs_sklearn.synthetic_parameters(spec["d"], spec["k"], spec["data_seed"])
    rng = np.random.default_rng([spec["data_seed"], spec["d"], spec["k"], 1])
    x_train = sample_rows(params, spec["n_train"], rng)
    x_test = sample_rows(params, spec["n_test"], rng)
    return {"x_train": x_train, "x_test": x_test, "truth": params}


def pyrogen_rows(x: np.ndarray, dtype: str) -> np.ndarray:
    return x if dtype == "float64" else x.astype(np.float32)


# --- memory ----------------------------------------------------------------------------------


def in_process_peak(fn, device, record: list[dict[str, Any]]):
    """``fn`` that also appends its peak memory growth to ``record`` (the first call only)."""

    def run():
        if record:
            return fn()
        import torch

        cuda = device is not None and device.type == "cuda"
        reset = common._reset_peak_rss()
        baseline = common._proc_status_bytes("VmRSS") if reset else None
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            cuda_baseline = torch.cuda.memory_allocated(device)
        result = fn()
        entry: dict[str, Any] = {"method": "in process: VmHWM after clear_refs - VmRSS before"}
        peak = common._proc_status_bytes("VmHWM") if reset else None
        if peak is not None and baseline is not None:
            entry["rss_growth_mib"] = max(0, peak - baseline) / 2**20
        if cuda:
            torch.cuda.synchronize(device)
            entry["cuda_peak_growth_mib"] = (
                torch.cuda.max_memory_allocated(device) - cuda_baseline
            ) / 2**20
        record.append(entry)
        return result

    return run


def memory_prepare(spec: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    """Runs in the ``--memory subprocess`` child before its baseline: data, a small warm-up."""
    data = load_data(spec)
    x = data["x_train"][: job["rows"]]
    if job["library"] == "pyrogen":
        x = pyrogen_rows(x, job["dtype"])
    warm = x[: min(len(x), 2000)]
    if job["library"] == "sklearn":
        gmm_vs_sklearn.fit_sklearn(warm, k=spec["k"], covariance=job["covariance"], seed=0)
    else:
        gmm_vs_sklearn.fit_pyrogen(
            warm,
            k=spec["k"],
            covariance=job["covariance"],
            seed=0,
            device=job["device"],
            fit_kwargs={"steps": 2},
        )
    return {"x": x, "spec": spec, "job": job}


def memory_job(payload: dict[str, Any]) -> dict[str, Any]:
    spec, job, x = payload["spec"], payload["job"], payload["x"]
    if job["library"] == "sklearn":
        model = gmm_vs_sklearn.fit_sklearn(
            x, k=spec["k"], covariance=job["covariance"], seed=job["seed"]
        )
        return {"n_iter": int(model.n_iter_)}
    _, result = gmm_vs_sklearn.fit_pyrogen(
        x, k=spec["k"], covariance=job["covariance"], seed=job["seed"], device=job["device"]
    )
    return {"steps": result.steps}


def subprocess_peak(spec, covariance, library, rows, args) -> dict[str, Any]:
    job = {
        "library": library,
        "covariance": covariance,
        "rows": rows,
        "seed": args.seed,
        "device": args.device,
        "dtype": args.pyrogen_dtype,
    }
    report = common.peak_rss_of(
        "benchmarks.scale_gmm:memory_job",
        prepare="benchmarks.scale_gmm:memory_prepare",
        prepare_args=(spec, job),
        threads=args.threads,
        cuda=library == "pyrogen" and args.device.startswith("cuda"),
        timeout=args.memory_timeout,
    )
    if not report.get("ok"):
        return {"method": "fresh process (peak_rss_of)", "error": report.get("error")}
    entry = {
        "method": "fresh process (peak_rss_of): VmHWM growth over the baseline after data "
        "and a warm-up fit",
        "rss_growth_mib": report["growth_bytes"] / 2**20,
        "wall_s": report["wall_s"],
    }
    if "cuda_peak_allocated_bytes" in report:
        entry["cuda_peak_growth_mib"] = report["cuda_peak_allocated_bytes"] / 2**20
    return entry


# --- one setting -----------------------------------------------------------------------------


def run_setting(spec, covariance: str, data, args, device, sync) -> dict[str, Any]:
    x_train, x_test = data["x_train"], data["x_test"]
    k, seed = spec["k"], args.seed
    sklearn_rows = min(len(x_train), args.sklearn_n or len(x_train))
    x_sklearn = x_train[:sklearn_rows]
    x_pyrogen = pyrogen_rows(x_train, args.pyrogen_dtype)
    memory: dict[str, list[dict[str, Any]]] = {"sklearn": [], "pyrogen": []}

    def run_sklearn():
        return gmm_vs_sklearn.fit_sklearn(x_sklearn, k=k, covariance=covariance, seed=seed)

    def run_pyrogen():
        return gmm_vs_sklearn.fit_pyrogen(
            x_pyrogen, k=k, covariance=covariance, seed=seed, device=args.device
        )

    fns = {"sklearn": run_sklearn, "pyrogen": run_pyrogen}
    if args.memory == "inprocess":
        fns = {
            name: in_process_peak(fn, device if name == "pyrogen" else None, memory[name])
            for name, fn in fns.items()
        }
    timings = common.time_interleaved(fns, args.repeats, sync={"pyrogen": sync})
    sk = timings["sklearn"].result
    model, result = timings["pyrogen"].result
    t_p, t_s = timings["pyrogen"].best, timings["sklearn"].best
    row: dict[str, Any] = {
        "setting": spec["name"],
        "d": spec["d"],
        "k": k,
        "covariance": covariance,
        "n_train": len(x_train),
        "sklearn_n_train": sklearn_rows,
        "sklearn_capped": sklearn_rows < len(x_train),
        "n_test": len(x_test),
        "pyrogen_dtype": args.pyrogen_dtype,
        "pyrogen_test_ll": gmm_vs_sklearn.pyrogen_mean_log_prob(model, x_test),
        "sklearn_test_ll": float(sk.score(x_test)),
        "pyrogen_time_s": t_p,
        "sklearn_time_s": t_s,
        "pyrogen_times_s": timings["pyrogen"].times,
        "sklearn_times_s": timings["sklearn"].times,
        "pyrogen_cpu_s": timings["pyrogen"].best_cpu,
        "sklearn_cpu_s": timings["sklearn"].best_cpu,
        "pyrogen_s_per_million_rows": t_p / (len(x_train) / 1e6),
        "sklearn_s_per_million_rows": t_s / (sklearn_rows / 1e6),
        "pyrogen_svi_steps": result.steps,
        "pyrogen_best_step": result.best_step,
        "pyrogen_stopped_early": result.stopped_early,
        "pyrogen_final_loss": result.final_loss,
        "pyrogen_device": result.device,
        "sklearn_n_iter": int(sk.n_iter_),
        "sklearn_converged": bool(sk.converged_),
    }
    row["ll_diff"] = row["pyrogen_test_ll"] - row["sklearn_test_ll"]
    # sklearn time / pyrogen time; per million rows (a linear extrapolation) when capped.
    row["speedup"] = row["sklearn_s_per_million_rows"] / row["pyrogen_s_per_million_rows"]
    row.update(gmm_vs_sklearn.oracle_summary(data))
    if args.memory == "subprocess":
        print(f"{spec['name']}: peak memory in fresh processes ...", file=sys.stderr, flush=True)
        memory["sklearn"].append(subprocess_peak(spec, covariance, "sklearn", sklearn_rows, args))
        memory["pyrogen"].append(subprocess_peak(spec, covariance, "pyrogen", len(x_train), args))
    for library, entries in memory.items():
        if entries:
            row[f"{library}_memory"] = entries[0]
            row[f"{library}_peak_rss_mib"] = entries[0].get("rss_growth_mib")
            row[f"{library}_cuda_peak_mib"] = entries[0].get("cuda_peak_growth_mib")
    return row


# --- report ----------------------------------------------------------------------------------

COLUMNS = [
    ("setting", "setting"),
    ("covariance", "cov"),
    ("n_train", "N pyrogen", ","),
    ("sklearn_n_train", "N sklearn", ","),
    ("pyrogen_test_ll", "pyrogen LL", ".4f"),
    ("sklearn_test_ll", "sklearn LL", ".4f"),
    ("oracle_test_ll", "true LL", ".4f"),
    ("ll_diff", "diff", "+.4f"),
    ("pyrogen_time_s", "pyrogen s", ".2f"),
    ("sklearn_time_s", "sklearn s", ".2f"),
    ("pyrogen_s_per_million_rows", "pyrogen s/M rows", ".3f"),
    ("sklearn_s_per_million_rows", "sklearn s/M rows", ".3f"),
    ("speedup", "speed-up", ".1f"),
    ("pyrogen_peak_rss_mib", "pyrogen RSS MiB", ",.0f"),
    ("pyrogen_cuda_peak_mib", "pyrogen CUDA MiB", ",.0f"),
    ("sklearn_peak_rss_mib", "sklearn RSS MiB", ",.0f"),
    ("pyrogen_svi_steps", "SVI steps"),
    ("sklearn_n_iter", "sk iters"),
]


def markdown_report(payload: dict[str, Any]) -> str:
    s, versions, machine = payload["settings"], payload["versions"], payload["machine"]
    capped = any(row["sklearn_capped"] for row in payload["rows"])
    lines = [
        "# GaussianMixture at scale: pyrogen vs scikit-learn",
        "",
        f"Run {payload['timestamp']}: pyrogen on `{s['device']}` ({payload['device_name']}), "
        f"scikit-learn on the CPU ({machine['cpu_model']}, {machine['usable_cpus']} usable "
        f"cores, {s['threads'] or 'default'} thread(s)); torch {versions.get('torch')}, pyro "
        f"{versions.get('pyro')}, scikit-learn {versions.get('sklearn')}, numpy "
        f"{versions.get('numpy')}, pyrogen {versions.get('pyrogen')}.",
        "",
        f"Data: gmm_vs_sklearn.py's synthetic mixtures (K = {s['k']}), N = {s['n']:,} training "
        f"rows and {s['n_test']:,} held-out rows. pyrogen: `GaussianMixture(K, covariance)` + "
        f"`pyrogen.fit` defaults on {s['pyrogen_dtype']} rows (the copy to the device is inside "
        "the fit); scikit-learn: `n_init=1, max_iter=100, tol=1e-3`, k-means init. Time: one "
        f"fit, best of {s['repeats']}, after a warm-up fit of each on {s['warmup_rows']:,} rows. "
        "LL: mean held-out log-likelihood per point (nats). Speed-up: sklearn s / pyrogen s "
        "per million rows. Memory: peak growth during one fit "
        f"({s['memory']}).",
        "",
        common.markdown_table(payload["rows"], COLUMNS),
        "",
    ]
    if capped:
        lines += [
            f"*scikit-learn was fitted on the first {s['sklearn_n']:,} rows only "
            "(`--sklearn-n`): its speed-up is a linear extrapolation per million rows.*",
            "",
        ]
    lines += common.busy_machine_note(
        payload["summary"],
        machine,
        "the libraries took turns, but CPU-side timings are inflated.",
    )
    if s["quick"]:
        lines += [f"*Quick mode (N = {s['n']:,}): a smoke test, not the 10M-row numbers.*", ""]
    return "\n".join(lines)


# --- driver ----------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 200,000 (a few minutes)")
    parser.add_argument("--n", type=int, default=None, help="training rows (10,000,000)")
    parser.add_argument("--n-test", type=int, default=100_000, help="held-out rows")
    parser.add_argument(
        "--sklearn-n", type=int, default=None, help="fit sklearn on the first rows only"
    )
    parser.add_argument("--d", default="2,10", help="dimensions, comma-separated")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--covariance", default="full", help="comma-separated: full, diag, ...")
    parser.add_argument(
        "--device", default=None, help="pyrogen's device (default cuda if available, else cpu)"
    )
    parser.add_argument(
        "--pyrogen-dtype",
        default="float64",
        choices=("float64", "float32"),
        help="rows given to pyrogen (sklearn always gets float64)",
    )
    parser.add_argument("--repeats", type=int, default=1, help="timed fits per library (best)")
    parser.add_argument("--warmup-rows", type=int, default=20_000)
    parser.add_argument(
        "--memory", default="inprocess", choices=("inprocess", "subprocess", "none")
    )
    parser.add_argument("--memory-timeout", type=float, default=3600.0)
    parser.add_argument("--seed", type=int, default=0, help="random_state / pyrogen.fit seed")
    parser.add_argument("--data-seed", type=int, default=20240601, help="seed of the data")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch and BLAS threads (0: library defaults)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / NAME, help="output stem")
    args = parser.parse_args(argv)
    if args.n is None:
        args.n = 200_000 if args.quick else 10_000_000
    args.d = [int(d) for d in args.d.split(",") if d.strip()]
    args.covariance = [c.strip() for c in args.covariance.split(",") if c.strip()]
    if args.sklearn_n is not None and args.sklearn_n < args.k:
        parser.error(f"--sklearn-n: expected at least K={args.k} rows")
    if args.threads == 0:
        args.threads = None
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    load_before = common.load_average()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before libgomp loads
    limiter = common.set_threads(  # noqa: F841
        args.threads, preload=("numpy", "scipy.linalg", "torch", "sklearn.mixture")
    )
    import torch

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        print("--device cuda: no CUDA device here", file=sys.stderr)
        return 2
    sync = functools.partial(torch.cuda.synchronize, device) if cuda else None
    device_name = torch.cuda.get_device_name(device) if cuda else common.cpu_model()

    rows, datasets = [], []
    for d in args.d:
        spec = {
            "name": f"synthetic D={d}",
            "kind": "synthetic",
            "d": d,
            "k": args.k,
            "n_train": args.n,
            "n_test": args.n_test,
            "data_seed": args.data_seed,
        }
        print(f"{spec['name']}: data ...", file=sys.stderr, flush=True)
        clock = time.perf_counter()
        data = load_data(spec)
        data_s = time.perf_counter() - clock
        truth = data["truth"]
        datasets.append(
            {
                **spec,
                "generate_s": data_s,
                "truth": {
                    "weights": truth["weights"].tolist(),
                    "means": truth["means"].tolist(),
                    "mean_scale": float(truth["mean_scale"]),
                },
            }
        )
        # Untimed warm-up of both libraries (CUDA context, kernels, lazy imports).
        warm = data["x_train"][: min(args.n, args.warmup_rows)]
        gmm_vs_sklearn.fit_sklearn(warm, k=args.k, covariance=args.covariance[0], seed=args.seed)
        gmm_vs_sklearn.fit_pyrogen(
            pyrogen_rows(warm, args.pyrogen_dtype),
            k=args.k,
            covariance=args.covariance[0],
            seed=args.seed,
            device=args.device,
        )
        if sync is not None:
            sync()
        for covariance in args.covariance:
            print(f"{spec['name']} {covariance}: fitting ...", file=sys.stderr, flush=True)
            row = run_setting(spec, covariance, data, args, device, sync)
            rows.append(row)
            print(
                f"    pyrogen {row['pyrogen_time_s']:.2f} s (LL {row['pyrogen_test_ll']:.4f}), "
                f"sklearn {row['sklearn_time_s']:.2f} s on {row['sklearn_n_train']:,} rows "
                f"(LL {row['sklearn_test_ll']:.4f}), speed-up {row['speedup']:.1f}",
                file=sys.stderr,
                flush=True,
            )
        del data, warm

    payload = {
        **common.run_header(
            NAME,
            args,
            packages=("torch", "pyro", "sklearn", "numpy", "scipy", "pyrogen"),
            cuda=cuda,
        ),
        "device_name": device_name,
        "datasets": datasets,
        "sklearn": {"n_init": 1, "max_iter": 100, "tol": 1e-3, "init_params": "kmeans"},
        "pyrogen": "GaussianMixture(K, covariance) defaults; pyrogen.fit defaults "
        f"(MAP: {gmm_vs_sklearn.map_defaults()})",
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "rows": rows,
        "summary": common.run_summary(started, load_before),
    }
    written = common.write_results(args.out, payload, markdown_report(payload))
    print(common.text_table(rows, COLUMNS))
    print(f"\n{written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
