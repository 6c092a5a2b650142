"""Out-of-distribution detection with ``pyrogen.ood``: AUROC, AUPR and FPR at 95% TPR of every
score of every family with a likelihood, against scikit-learn's IsolationForest, OneClassSVM
and KernelDensity, in one run.

* **MNIST**: in-distribution = training images of the digits 0-4 (held-out test images of
  the same digits are the positives); out-of-distribution sets = the test images of the
  held-out digits 5-9, uniform noise (8-bit levels), the in-distribution test images
  inverted (1 - x) and blank (all-zero) images. Each family gets the data it models:
  ``GaussianMixture`` (diagonal) one uniform dequantization (k + u) / 256 of the 8-bit
  pixels, ``FlowDensity`` (RealNVP, ``dequantize=256``, logit) and ``DiffusionVAE``
  (``likelihood="discretized"``, ELBO) the levels k / 255, ``AutoregressiveDensity`` (MADE)
  and ``VAE`` (importance-weighted bound) pixels binarized at 1/2 (every set binarized
  alike), ``EnergyDensity`` (denoising score matching, log Z by AIS) the levels.
* **Breast cancer** (scikit-learn, 30 features, standardized on the training rows):
  in-distribution = benign tumours; out-of-distribution = malignant ones, held-out benign
  rows shifted by ``--shift`` standard deviations in every feature, and held-out benign
  rows shrunk to a tenth of their distance from the training mean (near the mode: more
  likely than the data, the tabular analogue of a blank image).

Scores (higher = more out-of-distribution): ``nll`` (-log p(x) / D), ``typicality``
(|nll - mean nll of held-out in-distribution rows|), ``likelihood_ratio`` (against a
background of the same family and config fitted on inputs with ``--rate`` of their values
perturbed, :func:`pyrogen.ood.fit_background`), ``complexity_zlib`` and ``complexity_png``
(Serra et al.; images only); and the batch typicality test (:class:`pyrogen.ood.TypicalityTest`,
batches of ``--batch-test`` rows, alpha 0.01): the share of batches it flags.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

import pyrogen
from benchmarks import harness
from pyrogen import ood
from pyrogen.models import GenerativeModel

IMAGE_SETS = ("digits 5-9", "noise", "inverted", "blank")
TABLE_SETS = ("malignant", "shifted", "shrunk")
#: Scores computed from a model (complexity: images only).
MODEL_SCORES = ("nll", "typicality", "likelihood_ratio", "complexity_zlib", "complexity_png")
BASELINES = ("IsolationForest", "OneClassSVM", "KernelDensity")
SIDE = 28  # MNIST's images are SIDE x SIDE
PIXELS = SIDE * SIDE
FEATURES = 30  # breast cancer's
METRICS = (("auroc", "AUROC"), ("aupr_in", "AUPR-in"), ("fpr_at_95_tpr", "FPR@95TPR"))


@dataclass
class Family:
    """A family of the benchmark: how to build it, which view of the data it models, how to
    fit and score it."""

    name: str
    build: Callable[[], GenerativeModel]
    view: str  # "binary", "levels" or "dequantized" (images); "table"
    fit: dict[str, Any] = field(default_factory=dict)
    num_samples: int | None = None


@dataclass
class Task:
    """One data set: the in-distribution rows in each view and the OOD sets."""

    name: str
    train: torch.Tensor
    validation: torch.Tensor
    test: torch.Tensor
    outside: dict[str, torch.Tensor]
    images: bool


def _views(x: torch.Tensor, view: str, generator: torch.Generator) -> torch.Tensor:
    """Images (N, PIXELS) of levels k / 255 in the view a family models."""
    if view == "binary":
        return (x > 0.5).float()
    if view == "dequantized":
        return (torch.round(x * 255) + torch.rand(x.shape, generator=generator)) / 256
    return x


def mnist_task(args) -> Task:
    """Digits 0-4 in, 5-9, noise, inverted and blank images out; all (N, PIXELS) in [0, 1]."""
    train_images, train_labels, _ = harness.mnist(args, "train")
    test_images, test_labels, _ = harness.mnist(args, "test")
    generator = torch.Generator().manual_seed(args.seed)
    inside = train_images[train_labels < 5].reshape(-1, PIXELS)
    inside = inside[torch.randperm(len(inside), generator=generator)]
    train, validation = inside[: args.train_rows], inside[-args.test_rows :]
    test_in = test_images[test_labels < 5].reshape(-1, PIXELS)[: args.test_rows]
    held_out = test_images[test_labels >= 5].reshape(-1, PIXELS)[: args.test_rows]
    noise = torch.randint(256, (args.test_rows, PIXELS), generator=generator).float() / 255
    outside = {
        "digits 5-9": held_out,
        "noise": noise,
        "inverted": 1 - test_in,
        "blank": torch.zeros(args.test_rows, PIXELS),
    }
    return Task("MNIST", train, validation, test_in, outside, images=True)


def table_task(args) -> Task:
    """Breast cancer: benign rows in; malignant, shifted and shrunk benign rows out."""
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    x = torch.as_tensor(x, dtype=torch.float32)
    generator = torch.Generator().manual_seed(args.seed)
    benign = x[y == 1][torch.randperm(int((y == 1).sum()), generator=generator)]
    train, validation, test = benign[:200], benign[200:280], benign[280:]
    mean, sd = train.mean(0), train.std(0)
    train, validation, test = ((rows - mean) / sd for rows in (train, validation, test))
    malignant = (x[y == 0] - mean) / sd
    outside = {"malignant": malignant, "shifted": test + args.shift, "shrunk": 0.1 * test}
    return Task("breast cancer", train, validation, test, outside, images=False)


def image_families(args) -> list[Family]:
    hidden = (args.hidden,)
    fit = {"steps": args.steps, "batch_size": 100, "lr": 1e-3}
    families = [
        Family(
            "GaussianMixture",
            lambda: pyrogen.GaussianMixture(args.components, covariance="diag"),
            "dequantized",
        ),
        Family(
            "FlowDensity",
            lambda: pyrogen.FlowDensity(
                PIXELS, "realnvp", transforms=4, hidden=hidden, dequantize=256, logit=0.05
            ),
            "levels",
            fit,
            num_samples=args.flow_samples,  # dequantizations per image of its bound
        ),
        Family(
            "AutoregressiveDensity",
            lambda: pyrogen.AutoregressiveDensity(PIXELS, "made", hidden=hidden),
            "binary",
            fit,
        ),
        Family(
            "VAE",
            lambda: pyrogen.VAE(PIXELS, latent_dim=20, hidden=hidden),
            "binary",
            fit,
            num_samples=args.iw_samples,
        ),
        Family(
            "DiffusionVAE",
            lambda: pyrogen.DiffusionVAE(
                PIXELS,
                timesteps=args.timesteps,
                likelihood="discretized",
                hidden=(args.hidden,) * 2,
            ),
            "levels",
            fit,
            num_samples=args.timesteps,
        ),
        Family(
            "EnergyDensity",
            lambda: pyrogen.EnergyDensity(PIXELS, hidden=hidden, noise_levels=(0.3,)),
            "levels",
            fit,
            num_samples=args.ais_chains,
        ),
    ]
    return [family for family in families if family.name in args.families.split(",")]


def table_families(args) -> list[Family]:
    fit = {"steps": args.steps, "batch_size": 100, "lr": 1e-3}
    families = [
        Family("GaussianMixture", lambda: pyrogen.GaussianMixture(2, covariance="full"), "table"),
        Family(
            "FlowDensity",
            lambda: pyrogen.FlowDensity(FEATURES, "realnvp", transforms=4, hidden=(64, 64)),
            "table",
            fit,
        ),
        Family(
            "AutoregressiveDensity",
            lambda: pyrogen.AutoregressiveDensity(FEATURES, "made", "gaussian", hidden=(64,)),
            "table",
            fit,
        ),
        Family(
            "VAE",
            lambda: pyrogen.VAE(FEATURES, latent_dim=5, likelihood="gaussian", hidden=(64,)),
            "table",
            fit,
            num_samples=args.iw_samples,
        ),
        Family(
            "DiffusionVAE",
            lambda: pyrogen.DiffusionVAE(FEATURES, timesteps=args.timesteps, hidden=(64, 64)),
            "table",
            fit,
            num_samples=args.timesteps,
        ),
        Family(
            "EnergyDensity",
            lambda: pyrogen.EnergyDensity(FEATURES, hidden=(64, 64), noise_levels=(0.3,)),
            "table",
            fit,
            num_samples=args.ais_chains,
        ),
    ]
    return [family for family in families if family.name in args.families.split(",")]


def metric_rows(task: str, family: str, score: str, inside, outside: dict) -> list[dict]:
    """One row per OOD set: :func:`pyrogen.ood.ood_metrics` of the score."""
    rows = []
    for name, values in outside.items():
        metrics = ood.ood_metrics(inside, values)
        rows.append({"task": task, "family": family, "score": score, "ood": name, **metrics})
    return rows


def score_family(args, task: Task, family: Family) -> tuple[list[dict], dict, dict]:
    """Fit a family and its background; every score on every set. Returns the metric rows,
    the batch test's row and the fit's row."""
    generator = torch.Generator().manual_seed(args.seed + 1)
    view = {
        name: _views(rows, family.view, generator)
        for name, rows in {
            "train": task.train,
            "validation": task.validation,
            "test": task.test,
            **task.outside,
        }.items()
    }
    options = {"seed": args.seed, "progress": False, **family.fit}
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    model = pyrogen.fit(family.build(), view["train"], **options).model
    fit_s = time.perf_counter() - started
    background = ood.fit_background(model, view["train"], rate=args.rate, **options)
    scored = {"num_samples": family.num_samples, "seed": args.seed}
    started = time.perf_counter()
    # Each set's -log p(x) / D once; every score below is a function of it (as
    # ood.typicality_score, ood.likelihood_ratio and ood.complexity_score compute them).
    view["train"] = view["train"][: len(task.test)]  # the batch test's typical value
    nll = {name: ood.negative_log_likelihood(model, rows, **scored) for name, rows in view.items()}
    nll_bg = {n: ood.negative_log_likelihood(background, r, **scored) for n, r in view.items()}
    score_s = time.perf_counter() - started
    typical = nll["validation"].mean()
    scores = {
        "nll": nll,
        "typicality": {name: (values - typical).abs() for name, values in nll.items()},
        "likelihood_ratio": {name: nll[name] - nll_bg[name] for name in nll},
    }
    if task.images:
        for compressor in ood.COMPRESSORS:
            # Compressed as SIDE x SIDE images, so PNG's filters see neighbouring rows.
            scores[f"complexity_{compressor}"] = {
                name: nll[name] / math.log(2)
                - ood.code_length(rows.reshape(-1, 1, SIDE, SIDE), compressor)
                for name, rows in view.items()
            }
    rows = []
    for score, values in scores.items():
        outside = {name: values[name] for name in task.outside}
        rows += metric_rows(task.name, family.name, score, values["test"], outside)
    test = ood.TypicalityTest.from_scores(
        nll["train"], nll["validation"], batch_size=args.batch_test, alpha=0.01, seed=args.seed
    )
    batch_row = {"task": task.name, "family": family.name, "threshold": test.threshold}
    for name in ("test", *task.outside):
        whole = len(nll[name]) // args.batch_test * args.batch_test
        flagged = test.statistics_of(nll[name][:whole]) > test.threshold
        batch_row["in-distribution" if name == "test" else name] = float(flagged.double().mean())
    fit_row = {
        "task": task.name,
        "family": family.name,
        "view": family.view,
        "exact": model.exact_likelihood,
        "fit_s": fit_s,
        "score_s": score_s,
        "test_nll": float(nll["test"].mean()),
    }
    return rows, batch_row, fit_row


def baselines(args, task: Task) -> list[dict]:
    """scikit-learn's detectors on the rows (levels k / 255 for images); each score
    oriented higher = more out-of-distribution."""
    from sklearn.ensemble import IsolationForest
    from sklearn.neighbors import KernelDensity
    from sklearn.svm import OneClassSVM

    train, validation = task.train.numpy(), task.validation.numpy()
    # The KDE's bandwidth: the best held-out log-likelihood on a grid.
    scale = float(np.sqrt(train.var(0).sum()))
    fits = [KernelDensity(bandwidth=scale * f).fit(train) for f in (0.03, 0.06, 0.12, 0.25)]
    kde = max(fits, key=lambda fitted: fitted.score(validation))
    detectors = {
        "IsolationForest": IsolationForest(random_state=args.seed).fit(train).score_samples,
        "OneClassSVM": OneClassSVM(gamma="scale", nu=0.1).fit(train).decision_function,
        "KernelDensity": kde.score_samples,
    }
    rows = []
    for name, normality in detectors.items():
        inside = -normality(task.test.numpy())
        outside = {key: -normality(rows.numpy()) for key, rows in task.outside.items()}
        rows += metric_rows(task.name, "baseline", name, inside, outside)
    return rows


def wide(rows: list[dict], sets: tuple[str, ...], metric: str) -> list[dict]:
    """One row per (family, score), one column per OOD set."""
    table: dict[tuple[str, str], dict] = {}
    for row in rows:
        key = (row["family"], row["score"])
        table.setdefault(key, {"family": row["family"], "score": row["score"]})
        table[key][row["ood"]] = row[metric]
    return list(table.values())


def main(argv=None) -> int:
    options = harness.parser(__doc__)
    options.add_argument("--train-rows", type=int, default=None, help="MNIST 0-4 (2000)")
    options.add_argument("--test-rows", type=int, default=None, help="per set (500)")
    options.add_argument("--steps", type=int, default=None, help="per network (600)")
    options.add_argument("--hidden", type=int, default=None, help="units per layer (128)")
    options.add_argument("--components", type=int, default=None, help="the mixture's (5)")
    options.add_argument("--timesteps", type=int, default=None, help="diffusion's (50)")
    options.add_argument("--iw-samples", type=int, default=None, help="VAE's K (50)")
    options.add_argument("--flow-samples", type=int, default=None, help="flow's K (5)")
    options.add_argument("--ais-chains", type=int, default=None, help="energy's log Z (8)")
    options.add_argument("--rate", type=float, default=0.2, help="background perturbation")
    options.add_argument("--batch-test", type=int, default=10, help="typicality test's M")
    options.add_argument("--shift", type=float, default=0.5, help="tabular mean shift (sd)")
    options.add_argument(
        "--families",
        default="GaussianMixture,FlowDensity,AutoregressiveDensity,VAE,DiffusionVAE,EnergyDensity",
    )
    options.add_argument("--tasks", default="mnist,table", help="mnist,table")
    run = harness.start(
        "ood",
        options,
        argv,
        full={"train_rows": 2000, "test_rows": 500, "steps": 600, "hidden": 128}
        | {"components": 5, "timesteps": 50, "iw_samples": 50, "flow_samples": 5}
        | {"ais_chains": 8},
        quick={"train_rows": 200, "test_rows": 50, "steps": 3, "hidden": 16}
        | {"components": 2, "timesteps": 10, "iw_samples": 4, "flow_samples": 2}
        | {"ais_chains": 2},
    )
    args = run.args
    tasks = {"mnist": (mnist_task, image_families), "table": (table_task, table_families)}
    rows, batch_rows, fit_rows = [], [], []
    for key in args.tasks.split(","):
        make_task, make_families = tasks[key]
        task = make_task(args)
        for family in make_families(args):
            family_rows, batch_row, fit_row = score_family(args, task, family)
            rows += family_rows
            batch_rows.append(batch_row)
            fit_rows.append(fit_row)
            print(f"{task.name} {family.name}: fit {fit_row['fit_s']:.1f} s", flush=True)
        rows += baselines(args, task)
    tables = []
    for key in args.tasks.split(","):
        name, sets = ("MNIST", IMAGE_SETS) if key == "mnist" else ("breast cancer", TABLE_SETS)
        task_rows = [row for row in rows if row["task"] == name]
        for metric, header in METRICS:
            columns = [("family", "family"), ("score", "score")]
            columns += [(s, s, ".3f") for s in sets]
            tables.append(
                harness.Table(wide(task_rows, sets, metric), columns, f"{name}: {header}")
            )
        columns = [("family", "family"), ("threshold", "threshold", ".4f")]
        columns += [(s, s, ".2f") for s in ("in-distribution", *sets)]
        task_batches = [row for row in batch_rows if row["task"] == name]
        heading = f"{name}: typicality test, share of batches of {args.batch_test} flagged"
        tables.append(harness.Table(task_batches, columns, heading))
    fit_columns = [
        ("task", "task"),
        ("family", "family"),
        ("view", "data"),
        ("exact", "exact log p"),
        ("fit_s", "fit s", ".1f"),
        ("score_s", "score s", ".1f"),
        ("test_nll", "test nats/value", ".4f"),
    ]
    tables.append(harness.Table(fit_rows, fit_columns, "Fits"))
    run.write(
        "Out-of-distribution detection: every family and score against scikit-learn",
        tables,
        data={"metrics": rows},
        notes=[
            f"MNIST: {args.train_rows} training images of the digits 0-4, {args.test_rows} "
            "held-out ones as the in-distribution positives and per OOD set; breast cancer: "
            f"200 benign training rows, 80 validation, the rest as positives, shift "
            f"{args.shift} sd. Networks: {args.steps} Adam steps (lr 1e-3) of 100 rows, "
            f"{args.hidden} units per layer; the mixture {args.components} diagonal "
            f"components on MNIST; VAE K = {args.iw_samples}; diffusion T = "
            f"{args.timesteps}, its ELBO with T step samples. Background: same family and "
            f"config, {args.rate:.0%} of the values perturbed. Typicality's typical value "
            "and the batch test's threshold from held-out training rows. AUROC below 0.5: "
            "the score ranks that OOD set as *more* in-distribution than the data.",
        ],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
