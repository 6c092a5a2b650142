"""What ``pyrogen fit FAMILY`` needs to know of a family beyond its constructor's signature
and class attributes, keyed by family name: other spellings of its options and its own
workflow. A family missing here gets a working command from its signature alone."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pyrogen.cli import options as opt
from pyrogen.data import ImageSplit, condition_labels, image_likelihood, semi_supervised_labels
from pyrogen.infer.callbacks import ComponentWarmup
from pyrogen.infer.mixtures import MAX_AUTO_COMPONENTS, MIXTURE_INFERENCE, NUTS_CHAINS, fit_mixture
from pyrogen.models import REGISTRY, GenerativeModel


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
    """A family's part of ``pyrogen fit`` that neither its signature nor its class attributes
    say: ``arguments`` (per constructor argument, keywords replacing those of its option;
    None: no option), ``aliases``, ``same_as`` (an argument that defaults to another's value),
    ``score_samples``, ``labels`` (the help of ``--labels``; None: no such option),
    ``options`` (rows of :func:`~pyrogen.cli.options.add_all`), ``before_data`` (constructor
    keywords decided before the data are read), ``configure`` (what the labels are for;
    default: they colour the report), ``build`` (makes the model from the constructor
    keywords; default ``family(**options)``) and ``train`` (replaces :func:`pyrogen.fit`:
    ``train(args, family, options, x, fit_options)`` -> model, FitResult, InferenceData,
    summary entries)."""

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
    build: Callable[[dict[str, Any]], GenerativeModel] | None = None


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
def _labelled(args: argparse.Namespace, data: ImageSplit) -> Setup:
    """The labels as the condition y (:func:`pyrogen.data.condition_labels`)."""
    classes, train, test = condition_labels(data, args.num_classes)
    extra = {"labels": f"{data.labels_source}: the condition y, classes 0..{classes - 1}"}
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
    classes, train, test = condition_labels(data, args.num_classes, unlabelled=True)
    with opt.as_option_errors(("labelled",)):
        train, how = semi_supervised_labels(
            train, classes, args.labelled, args.seed, data.labels_source
        )
    extra = {"labels": f"{data.labels_source}, classes 0..{classes - 1}: {how}"}
    return Setup({"num_classes": classes}, train, test, extra)


def _configure_gmvae(args: argparse.Namespace, data: ImageSplit) -> Setup:
    extra = {}
    if data.labels_source is not None:
        extra["labels"] = f"{data.labels_source}: not used in training; they score the clusters"
    start = ComponentWarmup(args.warmup_epochs, args.seed)
    return Setup(test_labels=data.test_labels, extra=extra, callbacks=[start])


# --- diffusion ------------------------------------------------------------------------------
def _diffusion_before_data(args: argparse.Namespace, dataset: str | None) -> dict[str, Any]:
    """The likelihood (default from the data) and the frozen autoencoder of latent diffusion."""
    if args.autoencoder is None:
        with opt.as_option_errors():
            return {"likelihood": image_likelihood(dataset, args.binarize, args.model_likelihood)}
    # a VAE: its encoder gives the codes to model
    autoencoder = opt.load_family_run(args.autoencoder, "vae", "--autoencoder")
    if args.model_likelihood not in (None, "gaussian"):
        raise ValueError(
            f"--likelihood: the codes of --autoencoder are real vectors, expected gaussian, "
            f"got {args.model_likelihood}"
        )
    shape = tuple(autoencoder.data_shape)
    return {"autoencoder": autoencoder, "data_shape": shape, "likelihood": "gaussian"}


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


# --- noise_classifier -------------------------------------------------------------------------
def _noise_classifier_before_data(args: argparse.Namespace, dataset: str | None) -> dict:
    """The diffusion run whose latents the classifier reads: its shape and likelihood say
    how the data are read; ``build`` copies the rest (schedule, levels, scaling)."""
    diffusion = opt.load_family_run(args.diffusion, "diffusion", "--diffusion")
    shape, likelihood = tuple(diffusion.data_shape), diffusion.likelihood
    return {"diffusion": diffusion, "data_shape": shape, "likelihood": likelihood}


def _configure_noise_classifier(args: argparse.Namespace, data: ImageSplit) -> Setup:
    if data.train_labels is None:
        raise ValueError(
            "--labels: expected labels for the noise classifier (MNIST --data-dir has them; "
            "with --data give --labels FILE|KEY), got none"
        )
    setup = _labelled(args, data)
    setup.extra["diffusion"] = str(args.diffusion)
    return setup


def _build_noise_classifier(options: dict[str, Any]) -> GenerativeModel:
    """:meth:`~pyrogen.NoiseConditionalClassifier.for_model` of the --diffusion model."""
    own = {key: options[key] for key in ("network", "hidden", "channels") if key in options}
    family = REGISTRY["noise_classifier"]
    return family.for_model(options["diffusion"], options["num_classes"], **own)


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
    "naive_bayes": FamilySpec(labels="a column of the --data table, a file or an NPZ array; "
                              "-1 marks an unlabelled row (its class is inferred)"),
    "logistic_regression": FamilySpec(labels="a column of the --data table, a file or an NPZ "
                                      "array (required: the model is of p(y | x))"),
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
    "noise_classifier": FamilySpec(
        arguments={"timesteps": None, "schedule": None, "likelihood": None},
        labels="the classes the classifier learns (required)",
        options=(("--diffusion", "the diffusion model (a run folder or model file) whose noisy "
                  "latents to classify: its schedule, levels and data scaling are copied",
                  {"type": Path, "metavar": "RUN", "required": True}),),
        before_data=_noise_classifier_before_data, configure=_configure_noise_classifier,
        build=_build_noise_classifier,
    ),
}
# fmt: on


def spec_of(family: str) -> FamilySpec:
    """The family's spec; a family without one gets the signature's options alone."""
    return SPECS.get(family, FamilySpec())
