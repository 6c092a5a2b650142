"""What ``pyrogen fit FAMILY`` needs to know of a family beyond its constructor's signature
and class attributes, keyed by family name: old spellings of its options, and its own
workflow where it has one (the mixture's ``--components auto`` and NUTS, the labels of the
VAE variants, the diffusion model's latent and conditional modes). A family missing here
gets a working command from its signature alone.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pyrogen.cli import options as opt
from pyrogen.data import ImageSplit, balanced_labels, check_classes, count_classes, describe_counts
from pyrogen.infer.callbacks import ComponentWarmup
from pyrogen.infer.mixtures import MAX_AUTO_COMPONENTS, MIXTURE_INFERENCE, NUTS_CHAINS, fit_mixture
from pyrogen.models import REGISTRY, GenerativeModel, load


@dataclass
class Setup:
    """What a family's workflow makes of the labels: its constructor keywords, the labels
    ``fit`` gets (-1: unlabelled), those of the test rows (for the report), entries of
    summary.json and callbacks of the fit."""

    options: dict[str, Any] = field(default_factory=dict)
    train_labels: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    callbacks: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class FamilySpec:
    """A family's part of ``pyrogen fit`` that neither its constructor's signature nor its
    class attributes (``choices``, ``reads_images``) say.

    ``arguments``: per constructor argument, keywords of its option that replace those read
    from the family (``type``, ``default``, ``help``, ``choices``; None: no option);
    ``aliases``: another spelling of an argument's option; ``same_as``: an argument that takes
    another's value when not given; ``score_samples``: the test bounds' samples (default the
    family's ``default_score_samples``). The workflow: ``labels`` (what ``--labels`` does;
    None: no such option), ``options`` (rows of :func:`~pyrogen.cli.options.add_all`),
    ``before_data`` (constructor keywords decided before the data are read), ``configure``
    (what the labels are for, once read; default: they only colour the report's latent
    plot) and ``train`` (replaces the one :func:`pyrogen.fit`
    call: ``train(args, family, options, x, fit_options)`` -> model, FitResult,
    InferenceData and summary entries).
    """

    arguments: Mapping[str, dict[str, Any] | None] = field(default_factory=dict)
    aliases: Mapping[str, str] = field(default_factory=dict)
    same_as: Mapping[str, str] = field(default_factory=dict)
    score_samples: int | None = None
    labels: str | None = None
    num_classes: bool = True
    options: tuple[tuple[str, str, dict[str, Any]], ...] = ()
    before_data: Callable[[argparse.Namespace, str | None], dict[str, Any]] | None = None
    configure: Callable[[argparse.Namespace, ImageSplit], Setup] | None = None
    train: Callable[..., tuple[GenerativeModel, Any, Any, dict[str, Any]]] | None = None


# --- gmm ----------------------------------------------------------------------------------
def _components(text: str) -> int | str:
    if text != "auto" and not (text.isdigit() and int(text) > 0):
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {text!r}")
    return text if text == "auto" else int(text)


def _train_gmm(args: argparse.Namespace, family: type, options: dict, x, fit_options: dict):
    """:func:`pyrogen.infer.mixtures.fit_mixture` (K by BIC, MAP, variational or NUTS)."""
    fitted = fit_mixture(x, **options, num_samples=args.num_samples, warmup=args.warmup,
                         **fit_options)  # fmt: skip
    return fitted.model, fitted.result, fitted.idata, fitted.summary


# --- the VAE variants ----------------------------------------------------------------------
def _labelled(args: argparse.Namespace, data: ImageSplit, unlabelled: bool = False) -> Setup:
    """C (``--num-classes``, else from the labels) and the labels checked against it, as the
    condition y."""
    source = data.labels_source
    classes = count_classes([data.train_labels, data.test_labels], source, args.num_classes)
    train, test = (
        None if y is None else check_classes(y, classes, source, unlabelled=unlabelled)
        for y in (data.train_labels, data.test_labels)
    )
    extra = {"labels": f"{source}: the condition y, classes 0..{classes - 1}"}
    return Setup({"num_classes": classes}, train, test, extra)


def _configure_cvae(args: argparse.Namespace, data: ImageSplit) -> Setup:
    if args.no_labels and (args.labels is not None or args.num_classes is not None):
        given = "--labels" if args.labels is not None else "--num-classes"
        raise ValueError(f"--no-labels, {given}: expected at most one of them, got both")
    use = data.train_labels is not None and not args.no_labels
    if not use and args.model_observed is None:
        why = "--no-labels" if args.no_labels else (
            "no labels in the data (MNIST --data-dir has them; with --data give --labels "
            "FILE|KEY)"
        )  # fmt: skip
        raise ValueError(
            "--observed, --labels: expected a condition (labels, or --observed "
            f"{'|'.join(REGISTRY[args.family].choices['observed'])}), got neither ({why})"
        )
    if args.num_classes is not None and data.train_labels is None:
        raise ValueError(
            f"--num-classes: expected labels to go with it (--labels), got none for "
            f"{args.num_classes} classes"
        )
    if not use:
        source = data.labels_source
        extra = {"labels": f"{source}: not used (--no-labels)"} if source else {}
        return Setup(test_labels=data.test_labels, extra=extra)
    return _labelled(args, data)


def _configure_ssvae(args: argparse.Namespace, data: ImageSplit) -> Setup:
    if data.train_labels is None:
        raise ValueError(
            "--labels: expected labels for the semi-supervised VAE (MNIST --data-dir has "
            "them; with --data give --labels FILE|KEY, -1 for unlabelled rows), got none"
        )
    setup = _labelled(args, data, unlabelled=True)
    classes, train, rows = setup.options["num_classes"], setup.train_labels, len(data.train)
    if args.labelled is not None:
        with opt.as_option_errors():
            train, counts = balanced_labels(train, args.labelled, classes, args.seed)
        how = (
            f"{args.labelled} of the {rows} training rows keep their labels "
            f"({describe_counts(counts)}, chosen at random with seed {args.seed}); the "
            f"other {rows - args.labelled} are unlabelled"
        )
    else:
        known = int((train >= 0).sum())
        if known == 0:
            raise ValueError(
                f"{data.labels_source}: expected some labelled training rows (labels >= 0), "
                f"got none of {rows}"
            )
        how = f"{known} of the {rows} training rows labelled" + (
            " (all of them: supervised; --labelled N keeps N)" if known == rows else ""
        )
    setup.train_labels = train
    setup.extra = {"labels": f"{data.labels_source}, classes 0..{classes - 1}: {how}"}
    return setup


def _configure_gmvae(args: argparse.Namespace, data: ImageSplit) -> Setup:
    extra = {}
    if data.labels_source is not None:
        extra["labels"] = f"{data.labels_source}: not used in training; they score the clusters"
    start = ComponentWarmup(args.warmup_epochs, args.seed)
    return Setup(test_labels=data.test_labels, extra=extra, callbacks=[start])


# --- diffusion ------------------------------------------------------------------------------
def _diffusion_before_data(args: argparse.Namespace, dataset: str | None) -> dict[str, Any]:
    """The likelihood (default from the data) and the frozen autoencoder of latent diffusion."""
    options: dict[str, Any] = {}
    likelihood = args.model_likelihood
    if args.autoencoder is not None:
        model_file = args.autoencoder
        if model_file.is_dir():
            model_file = model_file / "model.pt"
        options["autoencoder"] = load(model_file)
        options["data_shape"] = tuple(options["autoencoder"].data_shape)
        if likelihood not in (None, "gaussian"):
            raise ValueError(
                f"--likelihood: the codes of --autoencoder are real vectors, expected gaussian, "
                f"got {likelihood}"
            )
        likelihood = "gaussian"
    elif likelihood is None:
        binary = dataset == "binarized-mnist" or args.binarize not in (None, "none")
        likelihood = "bernoulli" if binary else "discretized" if dataset == "mnist" else "gaussian"
    if args.binarize not in (None, "none") and likelihood != "bernoulli" and not options:
        raise ValueError(
            f"--binarize: {args.binarize} gives 0/1 data, for --likelihood bernoulli; got "
            f"{likelihood}"
        )
    return {**options, "likelihood": likelihood}


def _configure_diffusion(args: argparse.Namespace, data: ImageSplit) -> Setup:
    extra = {} if args.autoencoder is None else {"autoencoder": str(args.autoencoder)}
    if not args.conditional:
        return Setup(extra=extra)
    if data.train_labels is None:
        raise ValueError(
            "--conditional: expected labels in the data (MNIST --data-dir has them; with "
            "--data give --labels FILE|KEY), got none"
        )
    setup = _labelled(args, data)
    setup.extra.update(extra)
    return setup


# --- the table --------------------------------------------------------------------------------
#: What every VAE family's spec shares.
_VAE = {
    "arguments": {"beta": {"type": opt.positive_float}},
    "aliases": {"num_particles": "--particles"},
    "same_as": {"decoder": "encoder"},
}

# fmt: off
SPECS: dict[str, FamilySpec] = {
    "gmm": FamilySpec(
        arguments={
            "n_components": {"type": _components, "default": "auto", "help": "number of "
                             "components, or 'auto' to choose K in "
                             f"1..{MAX_AUTO_COMPONENTS} by BIC"},
            "inference": {"choices": MIXTURE_INFERENCE, "help": "map (point estimates), "
                          "variational (mean-field posterior) or nuts (MAP, then collapsed NUTS "
                          f"with {NUTS_CHAINS} chains)"},
        },
        aliases={"n_components": "--components"},
        options=(
            ("--num-samples", "posterior draws (per chain for nuts; default 500)",
             {"type": opt.positive_int, "default": 500}),
            ("--warmup", "NUTS warm-up steps per chain (default 500)",
             {"type": opt.non_negative_int, "default": 500}),
        ),
        train=_train_gmm,
    ),
    "vae": FamilySpec(**_VAE),
    "cvae": FamilySpec(
        **_VAE, labels="the model is conditioned on them",
        options=(("--no-labels", "ignore the data's labels (then --observed is needed); by "
                  "default the model is conditioned on them where the data have labels",
                  {"action": "store_true"}),),
        configure=_configure_cvae,
    ),
    "ssvae": FamilySpec(
        **{**_VAE, "arguments": {"beta": {"type": opt.positive_float},
                                 "classifier_weight": {"type": opt.non_negative_float},
                                 "labelled_share": {"type": opt.share}}},
        labels="-1 marks an unlabelled row",
        score_samples=10,  # each importance sample decodes every class: C times a vae's
        options=(("--labelled", "keep the labels of N training rows, balanced over the classes "
                  "(chosen with --seed); default: the data's labels (-1 = unlabelled)",
                  {"type": opt.positive_int, "metavar": "N"}),),
        configure=_configure_ssvae,
    ),
    "gmvae": FamilySpec(
        **{**_VAE, "aliases": {"num_particles": "--particles", "n_components": "--components"}},
        labels="only scored: the clustering accuracy of the test rows", num_classes=False,
        options=(("--warmup-epochs", "start the components from the training rows' codes "
                  "after E epochs (ComponentWarmup; 0: before training; default 1 where the "
                  "run is longer)", {"type": opt.non_negative_int, "metavar": "E"}),),
        configure=_configure_gmvae,
    ),
    "flow": FamilySpec(arguments={"context_dim": None}),
    "diffusion": FamilySpec(
        arguments={"likelihood": {"help": "p(x | z_0): discretized (8-bit levels; default for "
                   "--data-dir mnist), bernoulli (0/1 data; default for binarized-mnist and "
                   "with --binarize), gaussian (real values; default for a --data file)"}},
        labels="the model is conditioned on them (with --conditional)",
        options=(
            ("--autoencoder", "latent diffusion: model the codes of this trained VAE (a run "
             "folder or model file), kept frozen; samples are decoded by it",
             {"type": Path, "metavar": "RUN"}),
            ("--conditional", "condition on the data's labels, dropping a share of them in "
             "training so that guidance works", {"action": "store_true"}),
        ),
        before_data=_diffusion_before_data, configure=_configure_diffusion,
    ),
}
# fmt: on


def spec_of(family: str) -> FamilySpec:
    """The family's spec; a family without one gets the signature's options alone."""
    return SPECS.get(family, FamilySpec())
