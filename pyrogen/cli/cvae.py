"""``pyrogen fit cvae``: the conditional VAE, conditioned on the images' labels and/or on a
given half of each image; the rest of the command is the VAE's (``vae.py``)."""

from __future__ import annotations

import argparse

from pyrogen.cli.common import _FitCommand, _Fitted
from pyrogen.cli.labels import _add_labels_options, _check_classes, _num_classes
from pyrogen.cli.vae import (
    VAE_DATA_HELP,
    _add_vae_options,
    _fit_vae_family,
    _Labels,
    _Setup,
    _VAEFamily,
)
from pyrogen.models import ConditionalVAE
from pyrogen.models.conditional_vae import HALVES


def _add_cvae_options(parser: argparse.ArgumentParser) -> None:
    _add_vae_options(parser, ConditionalVAE)
    group = parser.add_argument_group("ConditionalVAE conditions")
    group.add_argument(
        "--observed",
        choices=HALVES,
        help="the half of every image that is given: the model generates the other half "
        "(image completion), and its bounds are of log p(x_missing | x_given[, y])",
    )
    group.add_argument(
        "--no-labels",
        action="store_true",
        help="ignore the data's labels (then --observed is needed); by default the model is "
        "conditioned on them wherever the data have labels, and its bounds are of "
        "log p(x | y)",
    )
    _add_labels_options(group, "the model is conditioned on them")


def _configure(args: argparse.Namespace, labels: _Labels) -> _Setup:
    if args.no_labels and (args.labels is not None or args.num_classes is not None):
        given = "--labels" if args.labels is not None else "--num-classes"
        raise ValueError(f"--no-labels, {given}: expected at most one of them, got both")
    use = labels.train is not None and not args.no_labels
    if not use and args.observed is None:
        why = (
            "--no-labels"
            if args.no_labels
            else "no labels in the data (MNIST --data-dir has them; with --data give "
            "--labels FILE|KEY)"
        )
        raise ValueError(
            "--observed, --labels: expected a condition (labels, or --observed "
            f"{'|'.join(HALVES)}), got neither ({why})"
        )
    if args.num_classes is not None and labels.train is None:
        raise ValueError(
            f"--num-classes: expected labels to go with it (--labels), got none for "
            f"{args.num_classes} classes"
        )
    if not use:
        extra = {"labels": f"{labels.source}: not used (--no-labels)"} if labels.source else {}
        return _Setup(options={"observed": args.observed}, test_labels=labels.test, extra=extra)
    classes = _num_classes(args.num_classes, [labels.train, labels.test], labels.source)
    train = _check_classes(labels.train, classes, labels.source)
    test = None if labels.test is None else _check_classes(labels.test, classes, labels.source)
    return _Setup(
        options={"num_classes": classes, "observed": args.observed},
        train_labels=train,
        test_labels=test,
        extra={"labels": f"{labels.source}: the condition y, classes 0..{classes - 1}"},
    )


def _fit_cvae(args: argparse.Namespace) -> _Fitted:
    return _fit_vae_family(args, _VAEFamily(ConditionalVAE, _configure))


#: The conditional VAE's part of ``pyrogen fit`` (its entry in ``pyrogen.cli._FIT_COMMANDS``).
FIT_COMMAND = _FitCommand(_add_cvae_options, _fit_cvae, VAE_DATA_HELP)
