"""``pyrogen fit ssvae``: the semi-supervised VAE (M2), trained on images of which a few
keep their labels (``--labelled N``, balanced across classes); the run reports the test
accuracy of its classifier. The rest of the command is the VAE's (``vae.py``)."""

from __future__ import annotations

import argparse

from pyrogen.cli.common import _default_of, _FitCommand, _Fitted, _positive_int
from pyrogen.cli.labels import (
    _add_labels_options,
    _check_classes,
    _describe_counts,
    _keep_balanced,
    _num_classes,
)
from pyrogen.cli.vae import (
    VAE_DATA_HELP,
    _add_vae_options,
    _fit_vae_family,
    _Labels,
    _Setup,
    _VAEFamily,
)
from pyrogen.models import SemiSupervisedVAE

#: Default K of the test log-likelihood bound: each importance sample decodes every class,
#: so K = 10 with 10 classes costs what K = 100 costs the VAE.
DEFAULT_IW_SAMPLES = 10


def _add_ssvae_options(parser: argparse.ArgumentParser) -> None:
    _add_vae_options(
        parser,
        SemiSupervisedVAE,
        iw_samples=DEFAULT_IW_SAMPLES,
        iw_note="; each sample decodes all C classes, so it costs C times a vae's",
    )
    group = parser.add_argument_group("SemiSupervisedVAE labels")
    group.add_argument(
        "--labelled",
        type=_positive_int,
        metavar="N",
        help="keep the labels of N training rows, as many of each class as the rows allow "
        "(chosen at random with --seed), and train on every other row unlabelled; default: "
        "the labels as the data give them (-1 = unlabelled), for MNIST all of them",
    )
    group.add_argument(
        "--classifier-weight",
        type=_non_negative_float,
        default=_default_of(SemiSupervisedVAE, "classifier_weight"),
        metavar="A",
        help="weight alpha of log q(y | x) of each labelled row in the objective "
        "(default %(default)s)",
    )
    group.add_argument(
        "--labelled-share",
        type=_share,
        default=_default_of(SemiSupervisedVAE, "labelled_share"),
        metavar="S",
        help="fraction of each minibatch drawn from the labelled rows, in (0, 1) "
        "(default %(default)s)",
    )
    _add_labels_options(group, "-1 marks an unlabelled row")


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text!r}") from None
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text!r}")
    return value


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}")
    return value


def _configure(args: argparse.Namespace, labels: _Labels) -> _Setup:
    if labels.train is None:
        raise ValueError(
            "--labels: expected labels for the semi-supervised VAE (MNIST --data-dir has "
            "them; with --data give --labels FILE|KEY, -1 for unlabelled rows), got none"
        )
    classes = _num_classes(args.num_classes, [labels.train, labels.test], labels.source)
    train = _check_classes(labels.train, classes, labels.source, unlabelled=True)
    test = labels.test
    if test is not None:
        test = _check_classes(test, classes, labels.source, unlabelled=True)
    rows = train.shape[0]
    if args.labelled is not None:
        train, counts = _keep_balanced(train, args.labelled, classes, args.seed)
        how = (
            f"{args.labelled} of the {rows} training rows keep their labels "
            f"({_describe_counts(counts)}, chosen at random with seed {args.seed}); the "
            f"other {rows - args.labelled} are unlabelled"
        )
    else:
        known = int((train >= 0).sum())
        if known == 0:
            raise ValueError(
                f"{labels.source}: expected some labelled training rows (labels >= 0), got "
                f"none of {rows}"
            )
        how = f"{known} of the {rows} training rows labelled" + (
            " (all of them: supervised; --labelled N keeps N)" if known == rows else ""
        )
    extra = {"labels": f"{labels.source}, classes 0..{classes - 1}: {how}"}
    options = {
        "num_classes": classes,
        "classifier_weight": args.classifier_weight,
        "labelled_share": args.labelled_share,
    }
    return _Setup(options=options, train_labels=train, test_labels=test, extra=extra)


def _fit_ssvae(args: argparse.Namespace) -> _Fitted:
    return _fit_vae_family(args, _VAEFamily(SemiSupervisedVAE, _configure))


#: The semi-supervised VAE's part of ``pyrogen fit`` (``pyrogen.cli._FIT_COMMANDS``).
FIT_COMMAND = _FitCommand(_add_ssvae_options, _fit_ssvae, VAE_DATA_HELP)
