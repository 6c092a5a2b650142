"""Semi-supervised MNIST classification with pyrogen's M2 (Kingma et al., 2014), against the
same classifier network trained on the labelled rows alone.

``SemiSupervisedVAE(data_shape=(784,), latent_dim=50, num_classes=10)`` trains with
``pyrogen.fit(model, x, y, epochs=...)`` on the 60,000 training images of which only 100,
600, 1000 or 3000 carry their label (the same number per digit, nested sets chosen with
``--label-seed``; every other row has ``y = -1``). Score: the test accuracy of
``model.predict(x)`` on the 10,000 test images after every epoch. Options left unset take the
class's defaults (``--pre-tuning-defaults``: the settings before this benchmark's tuning runs).

Data: statically binarized MNIST, one Bernoulli(grey level) draw per pixel (``--seed``).

Reference, for every label count: a deep copy of ``model.classifier`` taken before training,
trained with the same Adam and learning rate for the same number of steps on as many labelled
rows per step as M2 sees (``labelled_share x batch_size``), mean cross-entropy. The difference
is the gain from the unlabelled images. Published M2 test errors (Table 1): 100 labels 11.97%
(± 1.71), 600: 4.94%, 1000: 3.60%, 3000: 3.92%, after far longer training.
"""

from __future__ import annotations

import copy
import inspect
import math
import time

import torch
import torch.nn.functional as F

import pyrogen
from benchmarks import harness

PRE_TUNING_DEFAULTS = {
    "lr": 1e-3,
    "batch_size": 200,
    "labelled_share": 0.5,
    "classifier_weight": 50.0,
}
PUBLISHED_ERROR = {100: 11.97, 600: 4.94, 1000: 3.60, 3000: 3.92}
COLUMNS = [
    ("labels", "labels"),
    ("epochs", "epochs"),
    ("m2_accuracy", "M2 test accuracy", ".2%"),
    ("supervised_accuracy", "labelled-only accuracy", ".2%"),
    ("gain", "gain (points)", "+.2f"),
    ("published_accuracy", "published M2", ".2%"),
    ("m2_s", "M2 wall s", ".0f"),
]
HISTORY_COLUMNS = [
    ("labels", "labels"),
    ("epoch", "epoch"),
    ("m2_accuracy", "M2 test accuracy", ".2%"),
    ("supervised_accuracy", "labelled-only accuracy", ".2%"),
]


def choose_labels(labels: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """``count / 10`` known labels per digit (the first of a seeded order: nested sets), -1
    elsewhere."""
    generator = torch.Generator().manual_seed(seed)
    y = torch.full_like(labels, -1)
    for digit in range(10):
        rows = (labels == digit).nonzero()[:, 0]
        chosen = rows[torch.randperm(len(rows), generator=generator)][: count // 10]
        y[chosen] = digit
    return y


def accuracy(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    return float((predicted == labels).double().mean())


def m2(args, x, y, x_test, y_test, options) -> tuple[torch.nn.Module, dict]:
    """Train M2; the test accuracy after every epoch, and the classifier's initial copy."""
    torch.manual_seed(args.seed)
    model = pyrogen.SemiSupervisedVAE(data_shape=(784,), latent_dim=50, num_classes=10, **options)
    initial = copy.deepcopy(model.classifier)
    history: list[tuple[int, float]] = []  # (step, test accuracy)

    def score(step, trained) -> None:
        trained.eval()
        history.append((step, accuracy(trained.predict(x_test), y_test)))
        trained.train()

    # An epoch is one pass over the unlabelled rows; labelled ones ride along in each batch.
    unlabelled_per_batch = args.batch_size * (1 - options["labelled_share"])
    steps_per_epoch = max(1, math.ceil(int((y < 0).sum()) / unlabelled_per_batch))
    result = pyrogen.fit(
        model, x, y, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        seed=args.seed, progress=False,
        callbacks=(lambda step, loss, m: step % steps_per_epoch or score(step, m),),
    )  # fmt: skip
    if not history or history[-1][0] != result.steps:
        score(result.steps, model)
    per_batch = max(1, min(int((y >= 0).sum()), round(args.batch_size * model.labelled_share)))
    return initial, {
        "history": [a for _, a in history],
        "steps": result.steps,
        "per_batch": per_batch,
    }


def labelled_only(args, classifier, x, y, x_test, y_test, steps, per_batch, evals) -> list[float]:
    """The classifier network on the labelled rows alone: Adam, cross-entropy, shuffled passes."""
    known = (y >= 0).nonzero()[:, 0]
    generator = torch.Generator().manual_seed(args.seed)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=args.lr)
    order = torch.empty(0, dtype=torch.long)
    history = []
    for step in range(1, steps + 1):
        while len(order) < per_batch:
            order = torch.cat([order, torch.randperm(len(known), generator=generator)])
        index, order = known[order[:per_batch]], order[per_batch:]
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(classifier(x[index]), y[index]).backward()
        optimizer.step()
        if step * evals % steps < evals or step == steps:
            with torch.no_grad():
                history.append(accuracy(classifier(x_test).argmax(-1), y_test))
    return history[-evals:]


def main(argv=None) -> int:
    options = harness.parser(__doc__)
    options.add_argument("--labels", default=None, help="labelled counts (100,600,1000,3000)")
    options.add_argument("--epochs", type=int, default=None, help="5")
    options.add_argument("--pre-tuning-defaults", action="store_true")
    options.add_argument("--lr", type=float, default=None)
    options.add_argument("--batch-size", type=int, default=None)
    options.add_argument("--labelled-share", type=float, default=None)
    options.add_argument("--classifier-weight", type=float, default=None)
    options.add_argument("--rows", type=int, default=None, help="training images (all)")
    options.add_argument("--test-rows", type=int, default=None, help="test images (all)")
    options.add_argument("--label-seed", type=int, default=0)
    run = harness.start(
        "vae_semisupervised",
        options,
        argv,
        full={"labels": "100,600,1000,3000", "epochs": 5},
        quick={"labels": "100", "epochs": 1, "rows": 1000, "test_rows": 200},
    )
    args = run.args
    cls = pyrogen.SemiSupervisedVAE
    signature = inspect.signature(cls.__init__).parameters
    defaults = PRE_TUNING_DEFAULTS if args.pre_tuning_defaults else {
        "lr": cls.fit_defaults["lr"],
        "batch_size": cls.fit_defaults["batch_size"],
        "labelled_share": signature["labelled_share"].default,
        "classifier_weight": signature["classifier_weight"].default,
    }  # fmt: skip
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    model_options = {"labelled_share": args.labelled_share}
    model_options["classifier_weight"] = args.classifier_weight
    binarize = torch.Generator().manual_seed(args.seed)
    images, labels, source = harness.mnist(args, "train", args.rows)
    x = torch.bernoulli(images.flatten(1), generator=binarize)
    test, y_test, _ = harness.mnist(args, "test", args.test_rows)
    x_test = torch.bernoulli(test.flatten(1), generator=binarize)
    rows, history = [], []
    for count in map(int, args.labels.split(",")):
        y = choose_labels(labels, count, args.label_seed)
        started = time.perf_counter()
        classifier, trained = m2(args, x, y, x_test, y_test, model_options)
        m2_s = time.perf_counter() - started
        evals = len(trained["history"])
        supervised = labelled_only(
            args, classifier, x, y, x_test, y_test, trained["steps"], trained["per_batch"], evals
        )
        for epoch, (a, b) in enumerate(zip(trained["history"], supervised, strict=True), 1):
            history.append(
                {"labels": count, "epoch": epoch, "m2_accuracy": a, "supervised_accuracy": b}
            )
        rows.append(
            {
                "labels": count,
                "epochs": args.epochs,
                "m2_accuracy": trained["history"][-1],
                "supervised_accuracy": supervised[-1],
                "gain": 100 * (trained["history"][-1] - supervised[-1]),
                "published_accuracy": 1 - PUBLISHED_ERROR.get(count, math.nan) / 100,
                "m2_s": m2_s,
            }
        )
    run.write(
        "Semi-supervised MNIST: M2 against the labelled rows alone",
        [harness.Table(rows, COLUMNS), harness.Table(history, HISTORY_COLUMNS, "By epoch")],
        notes=[
            f"Data: {source}, {x.shape[0]:,} training and {x_test.shape[0]:,} test images, "
            f"statically binarized. Settings: lr {args.lr:g}, batch {args.batch_size}, "
            f"labelled_share {args.labelled_share}, classifier_weight "
            f"{args.classifier_weight}"
            + (" (pre-tuning defaults)" if args.pre_tuning_defaults else "")
            + "."
        ],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
