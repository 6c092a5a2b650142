"""pyrogen's naive Bayes and logistic regression against scikit-learn's, side by side in one run.

Data sets that ship with scikit-learn: breast cancer (2 classes, 30 real features), digits
(10 classes, 64 pixel counts 0..16), wine (3 classes, 13) and iris (3 classes, 4); stratified
70/30 splits, one per seed, shared by every model. Pairs, each fitted on the same training
rows:

* ``NaiveBayes(C, "gaussian")`` and ``GaussianNB()`` on every set (raw features), and on
  breast cancer both again with ``var_smoothing=0`` (scikit-learn adds epsilon to every
  variance, pyrogen floors them at it: they part where epsilon exceeds a class's variance);
* on digits also ``NaiveBayes(C, "multinomial")`` and ``MultinomialNB(alpha=1)`` (the counts),
  and ``NaiveBayes(C, "bernoulli")`` and ``BernoulliNB(alpha=1)`` (pixels above 8 as 1);
* ``LogisticRegression(C, prior_scale=1, intercept_prior_scale=None)`` (the MAP) and
  scikit-learn's ``LogisticRegression`` with the matched L2 penalty (``C = 1``; ``C = 2`` for
  two classes, see :mod:`pyrogen.models.logistic_regression`) on standardized features.

pyrogen as a user calls it, ``pyrogen.fit(model, x, y, seed=...)`` with the family's
defaults (the closed-form or Newton mode, then the engine's checking steps; the mode alone,
``model.setup(x, y)``, is timed too), on float64
rows as scikit-learn computes (a numpy array would be fitted in torch's default float32).
Per row: test accuracy and log-loss (mean -log p(y | x) of the true labels) of each library,
the largest difference between their predicted probabilities, and the wall time of one fit
(median of ``--repeats``, the libraries taking turns).

Semi-supervised: NaiveBayes fitted on L = 10 / 50 / 100 labelled rows per class of the
training split and the rest of it unlabelled (the class enumerated in those rows, EM),
against the same model on the L labelled rows alone; test accuracy and log-loss, mean and
standard error over ``--semi-seeds`` draws of the labelled rows.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer, load_digits, load_iris, load_wine
from sklearn.linear_model import LogisticRegression as SkLogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import train_test_split
from sklearn.naive_bayes import BernoulliNB, GaussianNB, MultinomialNB
from sklearn.preprocessing import StandardScaler

import pyrogen
from benchmarks import harness

TEST_SHARE = 0.3
PRIOR_SCALE = 1.0
BINARY_THRESHOLD = 8  # digits' pixels run 0..16
COLUMNS = [
    ("data", "data"),
    ("model", "model"),
    ("pyrogen_accuracy", "acc. pyrogen", lambda v: harness.plus_minus(*v, 4)),
    ("sklearn_accuracy", "acc. sklearn", lambda v: harness.plus_minus(*v, 4)),
    ("pyrogen_log_loss", "log-loss pyrogen", lambda v: harness.plus_minus(*v, 4)),
    ("sklearn_log_loss", "log-loss sklearn", lambda v: harness.plus_minus(*v, 4)),
    ("max_prob_diff", "max abs diff p", ".1e"),
    ("pyrogen_ms", "pyrogen ms", ".1f"),
    ("setup_ms", "of which mode ms", ".1f"),
    ("sklearn_ms", "sklearn ms", ".1f"),
    ("time_ratio", "ratio", ".1f"),
]
SEMI_COLUMNS = [
    ("data", "data"),
    ("likelihood", "likelihood"),
    ("labels_per_class", "labels / class", "d"),
    ("unlabelled", "unlabelled rows", "d"),
    ("supervised_accuracy", "acc. labelled only", lambda v: harness.plus_minus(*v, 4)),
    ("semi_accuracy", "acc. + unlabelled", lambda v: harness.plus_minus(*v, 4)),
    ("accuracy_gain", "gain", lambda v: ("+" if v[0] >= 0 else "") + harness.plus_minus(*v, 4)),
    ("supervised_log_loss", "log-loss labelled only", lambda v: harness.plus_minus(*v, 3)),
    ("semi_log_loss", "log-loss + unlabelled", lambda v: harness.plus_minus(*v, 3)),
]


# --- data --------------------------------------------------------------------------------------


def data_sets(quick: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Name -> (x (N, D) float64, y (N,) int64)."""
    loaders = {
        "breast cancer": load_breast_cancer,
        "digits": load_digits,
        "wine": load_wine,
        "iris": load_iris,
    }
    if quick:
        loaders = {name: loaders[name] for name in ("iris", "digits")}
    return {name: load(return_X_y=True) for name, load in loaders.items()}


def pairs(name: str, classes: int) -> list[dict]:
    """The (pyrogen, scikit-learn) pairs fitted on data set ``name``: a label, how to
    transform the features, and how to build each model."""
    out = [
        {
            "model": "naive Bayes, gaussian",
            "features": "raw",
            "pyrogen": lambda: pyrogen.NaiveBayes(classes, "gaussian"),
            "sklearn": GaussianNB,
        }
    ]
    if name == "breast cancer":
        # Its areas' column variance (1e5) makes var_smoothing's epsilon larger than some class
        # variances, where scikit-learn's added epsilon and pyrogen's floor part; without it
        # both are the same maximum-likelihood fit.
        out.append(
            {
                "model": "naive Bayes, gaussian, var_smoothing=0",
                "features": "raw",
                "pyrogen": lambda: pyrogen.NaiveBayes(classes, "gaussian", var_smoothing=0.0),
                "sklearn": lambda: GaussianNB(var_smoothing=0.0),
            }
        )
    if name == "digits":
        out += [
            {
                "model": "naive Bayes, multinomial",
                "features": "raw",
                "pyrogen": lambda: pyrogen.NaiveBayes(classes, "multinomial", smoothing=1.0),
                "sklearn": lambda: MultinomialNB(alpha=1.0),
            },
            {
                "model": f"naive Bayes, bernoulli (x > {BINARY_THRESHOLD})",
                "features": "binary",
                "pyrogen": lambda: pyrogen.NaiveBayes(classes, "bernoulli", smoothing=1.0),
                "sklearn": lambda: BernoulliNB(alpha=1.0),
            },
        ]
    # scikit-learn's C is s**2, or 2 s**2 where it fits one weight vector for two classes.
    penalty = (2 if classes == 2 else 1) * PRIOR_SCALE**2
    out.append(
        {
            "model": "logistic regression (MAP)",
            "features": "standardized",
            "pyrogen": lambda: pyrogen.LogisticRegression(
                classes, prior_scale=PRIOR_SCALE, intercept_prior_scale=None
            ),
            "sklearn": lambda: SkLogisticRegression(C=penalty, tol=1e-10, max_iter=10_000),
        }
    )
    return out


def features(kind: str, x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, ...]:
    """Training and test features as a pair expects them (the scaler fitted on training)."""
    if kind == "binary":
        return (x_train > BINARY_THRESHOLD).astype(float), (x_test > BINARY_THRESHOLD).astype(float)
    if kind == "standardized":
        scaler = StandardScaler().fit(x_train)
        return scaler.transform(x_train), scaler.transform(x_test)
    return x_train, x_test


def split(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, ...]:
    """A stratified 70/30 split: x_train, x_test, y_train, y_test."""
    return train_test_split(x, y, test_size=TEST_SHARE, stratify=y, random_state=seed)


# --- supervised: both libraries on the same splits ---------------------------------------------


def scores(probs: np.ndarray, y: np.ndarray, classes: int) -> tuple[float, float]:
    """Accuracy and log-loss (nats, mean -log p(y | x)) of predicted probabilities (N, C)."""
    accuracy = float((probs.argmax(1) == y).mean())
    return accuracy, float(log_loss(y, probs, labels=list(range(classes))))


def fits(pair: dict, x: np.ndarray, y: np.ndarray, seed: int) -> dict:
    """Both libraries' fits of one pair on rows x (N, D), labels y (N,): name -> work that
    returns the fitted model."""
    rows = torch.as_tensor(x)  # float64, as scikit-learn computes

    def mode_only() -> None:
        pair["pyrogen"]().setup(rows, y, seed=seed)

    return {
        "pyrogen": lambda: pyrogen.fit(pair["pyrogen"](), rows, y, seed=seed, progress=False).model,
        "sklearn": lambda: pair["sklearn"]().fit(x, y),
        "setup": mode_only,
    }


def compare(name: str, x: np.ndarray, y: np.ndarray, pair: dict, args) -> dict:
    """Both libraries of one pair over every seed's split: scores and interleaved times."""
    classes = int(y.max()) + 1
    metrics: dict[str, list[float]] = {}
    times: dict[str, list[float]] = {"pyrogen": [], "sklearn": [], "setup": []}
    largest_difference = 0.0
    for seed in range(args.seed, args.seed + args.seeds):
        x_train, x_test, y_train, y_test = split(x, y, seed)
        x_train, x_test = features(pair["features"], x_train, x_test)
        timings = harness.time_interleaved(
            fits(pair, x_train, y_train, seed), args.repeats, warmup=1
        )
        probs = {
            "pyrogen": timings["pyrogen"].result.predict_proba(x_test).double().numpy(),
            "sklearn": timings["sklearn"].result.predict_proba(x_test),
        }
        for library, p in probs.items():
            accuracy, loss = scores(p, y_test, classes)
            metrics.setdefault(f"{library}_accuracy", []).append(accuracy)
            metrics.setdefault(f"{library}_log_loss", []).append(loss)
            times[library].append(timings[library].median)
        times["setup"].append(timings["setup"].median)
        difference = np.abs(probs["pyrogen"] - probs["sklearn"]).max()
        largest_difference = max(largest_difference, float(difference))
    row = {"data": name, "model": pair["model"], "seeds": args.seeds}
    row.update({key: harness.mean_and_se(values) for key, values in metrics.items()})
    row["max_prob_diff"] = largest_difference
    row["pyrogen_ms"] = 1e3 * float(np.median(times["pyrogen"]))
    row["sklearn_ms"] = 1e3 * float(np.median(times["sklearn"]))
    row["setup_ms"] = 1e3 * float(np.median(times["setup"]))
    row["time_ratio"] = harness.ratio(row["pyrogen_ms"], row["sklearn_ms"])
    return row


# --- semi-supervised naive Bayes ----------------------------------------------------------------


def labelled_subset(y: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``per_class`` rows of every class, drawn without replacement."""
    return np.concatenate(
        [rng.choice(np.flatnonzero(y == k), per_class, replace=False) for k in np.unique(y)]
    )


def semi_supervised(name: str, likelihood: str, x, y, per_class: int, args) -> dict | None:
    """NaiveBayes with the unlabelled training rows against the labelled rows alone; None
    where a class has fewer than ``per_class`` training rows."""
    classes = int(y.max()) + 1
    x_train, x_test, y_train, y_test = split(x, y, args.seed)
    if np.bincount(y_train).min() < per_class:
        return None
    metrics: dict[str, list[float]] = {}
    for draw in range(args.semi_seeds):
        chosen = labelled_subset(y_train, per_class, np.random.default_rng([args.seed, draw]))
        partial = np.full_like(y_train, -1)
        partial[chosen] = y_train[chosen]
        fits = {
            "supervised": (x_train[chosen], y_train[chosen]),
            "semi": (x_train, partial),
        }
        for regime, (rows, labels) in fits.items():
            model = pyrogen.NaiveBayes(classes, likelihood)
            pyrogen.fit(model, torch.as_tensor(rows), labels, seed=draw, progress=False)
            accuracy, loss = scores(model.predict_proba(x_test).double().numpy(), y_test, classes)
            metrics.setdefault(f"{regime}_accuracy", []).append(accuracy)
            metrics.setdefault(f"{regime}_log_loss", []).append(loss)
        metrics.setdefault("accuracy_gain", []).append(
            metrics["semi_accuracy"][-1] - metrics["supervised_accuracy"][-1]
        )
    row = {
        "data": name,
        "likelihood": likelihood,
        "labels_per_class": per_class,
        "unlabelled": len(y_train) - per_class * classes,
        "draws": args.semi_seeds,
    }
    row.update({key: harness.mean_and_se(values) for key, values in metrics.items()})
    return row


SEMI_SETTINGS = (("digits", "multinomial"), ("breast cancer", "gaussian"))


def main(argv=None) -> int:
    options = harness.parser(__doc__, threads=1)
    options.add_argument("--seeds", type=int, default=None, help="splits (3; 1)")
    options.add_argument("--repeats", type=int, default=None, help="timed fits each (3; 1)")
    options.add_argument("--semi-seeds", type=int, default=None, help="label draws (5; 2)")
    run = harness.start(
        "generative_classifiers",
        options,
        argv,
        full={"seeds": 3, "repeats": 3, "semi_seeds": 5},
        quick={"seeds": 1, "repeats": 1, "semi_seeds": 2},
    )
    args = run.args
    sets = data_sets(args.quick)
    rows = [
        compare(name, x, y, pair, args)
        for name, (x, y) in sets.items()
        for pair in pairs(name, int(y.max()) + 1)
    ]
    semi_rows = []
    for name, likelihood in SEMI_SETTINGS:
        if name not in sets:
            continue
        for per_class in (10,) if args.quick else (10, 50, 100):
            row = semi_supervised(name, likelihood, *sets[name], per_class, args)
            if row is not None:
                semi_rows.append(row)
    run.write(
        "pyrogen's naive Bayes and logistic regression vs scikit-learn's",
        [
            harness.Table(rows, COLUMNS, "Supervised: the same splits"),
            harness.Table(semi_rows, SEMI_COLUMNS, "Semi-supervised naive Bayes"),
        ],
        notes=[
            f"Test accuracy and log-loss (nats, mean -log p(y | x)): mean ± standard error "
            f"over {args.seeds} stratified {1 - TEST_SHARE:.0%}/{TEST_SHARE:.0%} splits. "
            "*max abs diff p*: the largest difference between the two libraries' predicted "
            f"probabilities on any test row of any split. Time: one fit, median of "
            f"{args.repeats} per split (the libraries taking turns on a shared machine, so "
            "noisy), then the median over splits; pyrogen's includes ``pyrogen.fit``'s "
            "checks and its checking steps after the closed-form or Newton mode; *of which "
            "mode*: ``model.setup(x, y)`` alone, timed in the same turns.",
            f"Semi-supervised: the split of seed {args.seed}; mean ± standard error over "
            f"{args.semi_seeds} draws of the labelled rows; *gain*: accuracy with the "
            "unlabelled rows minus without, paired by draw.",
        ],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
