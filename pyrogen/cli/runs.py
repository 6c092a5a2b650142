"""The commands on a fitted run, through the model contract: ``pyrogen sample`` (rows as CSV,
NPY or a PNG grid) and ``pyrogen evaluate`` (:func:`pyrogen.diagnostics.score`)."""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path
from typing import Any

import torch

from pyrogen import data, ood
from pyrogen.checks import check_choice
from pyrogen.cli import options as opt
from pyrogen.diagnostics import figure_writer, plot_image_grid, score, summarize
from pyrogen.diagnostics.run_plots import drawable_shape
from pyrogen.diagnostics.text import describe_evaluation, describe_shape
from pyrogen.infer import distributed
from pyrogen.models import GenerativeModel

#: ``pyrogen sample --out`` formats: tables (rows of numbers) and images.
TABLE_FORMATS = (".csv", ".npy")
IMAGE_FORMATS = (".npy", ".png")
#: Size in inches of the PNG grid of ``pyrogen sample --out FILE.png``.
SAMPLE_FIGURE = (6.0, 6.0)


def add_sample_command(commands: argparse._SubParsersAction) -> None:
    """The ``sample`` sub-command, added to ``commands``."""
    sample = commands.add_parser(
        "sample",
        help="draw new rows from a fitted model",
        description="Draw new rows from a fitted model. Tabular models: CSV to stdout, or "
        f"--out FILE ({' or '.join(TABLE_FORMATS)}). Image models: --out FILE.npy (an array "
        "(N, *data_shape)) or FILE.png (a grid of the images).",
    )
    sample.set_defaults(run=run_sample)
    opt.add_run_options(sample, "random seed (default 0)", default=0)
    opt.add_all(
        sample,
        ("-n --num-rows", "rows (images) to draw", {"type": opt.positive_int, "required": True}),
        ("--out", f"write to this file: {' or '.join(TABLE_FORMATS)} for tabular models, "
         f"{' or '.join(IMAGE_FORMATS)} for image models (required for those)", {"type": Path}),
        ("--mean", "draw the decoder's mean of p(x | z) rather than a sample of x (models "
         "with a decoder, e.g. vae); smoother images", {"action": "store_true"}),
    )  # fmt: skip
    opt.add_all(
        sample.add_argument_group("diffusion models"),
        ("--steps", "reverse steps: with --method ddim any number up to the model's T "
         "(default 50); ancestral sampling takes all T", {"type": opt.positive_int}),
        ("--method", "ancestral (DDPM, all T steps) or ddim (deterministic, --steps steps); "
         "default ddim when --steps is given, else ancestral",
         {"choices": ("ancestral", "ddim")}),
        ("--guidance", "classifier-free guidance scale of a class-conditional model: 0 "
         "unconditional, 1 conditional (default), above 1 sharper classes", {"type": float}),
        ("--classifier", "classifier guidance by this noise_classifier run (fitted with "
         "--diffusion RUN): rows of the classes in turn, or of --label K",
         {"type": Path, "metavar": "CLF_RUN"}),
        ("--classifier-scale", "the classifier's scale: 1 (default) the class-conditional "
         "distribution, above 1 sharper classes", {"type": float}),
        ("--label --component", "draw every row from class (or mixture component) K; default "
         "the classes in turn (a PNG column each), a mixture prior's by its weights, or a "
         "completed example's own label",
         {"dest": "label", "type": opt.non_negative_int, "metavar": "K"}),
    )  # fmt: skip
    given = sample.add_argument_group("examples to complete (a cvae fitted with --observed)")
    given.add_argument("--data", type=Path, help="images whose first N rows are completed")
    given.add_argument("--key", metavar="NAME", help="the array of an NPZ --data file to use")
    opt.add_image_options(
        given, "its first N test images are completed", "Default the run's (the same images)."
    )
    opt.add_labels_options(given, "default for the completions' labels", num_classes=False)
    opt.add_scale_out_options(
        sample,
        "processes that share the draw, process r seeded with "
        "--seed + r (so the rows differ from one process's; default 1)",
    )


def run_sample(args: argparse.Namespace) -> int:
    """Draw the rows and write or print them."""
    model, run, device = opt.load_run(args)
    data_shape = model.config.get("data_shape")  # drawn as the run's images, else guessed
    shape = data_shape and drawable_shape(run.get("image_shape"), data_shape)
    row = data_shape or [model.config.get("n_features") or 1]  # checked before any is drawn
    data.check_fits_in_memory((args.num_rows, *row), "-n")
    suffix = _check_out(args.out, model, shape)
    options: dict[str, Any] = {}
    if args.mean:
        if "mean" not in inspect.signature(model.sample).parameters:
            raise ValueError(
                f"--mean: expected a model with a decoder (e.g. vae), got {model.family}"
            )
        options["mean"] = True
    options |= _reverse_process_options(args, model)
    columns_per_class = _conditions(args, model, run, options)
    try:
        rows = distributed.sample(
            model, args.num_rows, devices=args.devices, num_nodes=args.num_nodes,
            device=str(device), seed=args.seed, **options,
        )  # fmt: skip
    except NotImplementedError as error:  # a family that draws no x says why (discriminative)
        raise ValueError(f"RUN: a {model.family} model draws no rows ({error})") from None
    if opt.is_main_process(args):
        _write(args.out, rows, shape, suffix, columns_per_class, run.get("columns"))
    return 0


def _check_out(out: Path | None, model: GenerativeModel, shape: Any) -> str | None:
    """The suffix of ``--out``, checked against what the model draws."""
    formats = IMAGE_FORMATS if shape is not None else TABLE_FORMATS
    kind = "an image model" if shape is not None else f"a tabular model ({model.family})"
    suffix = None if out is None else out.suffix.lower()
    if (out is None and shape is not None) or (suffix is not None and suffix not in formats):
        got = "no --out (CSV on stdout is for tabular models)" if out is None else repr(str(out))
        raise ValueError(
            f"--out: expected a file ending in {' or '.join(formats)} for {kind}, got {got}"
        )
    return suffix


def _write(out: Path | None, rows, shape, suffix, ncols, columns) -> None:
    """The rows as a PNG grid, else by :func:`pyrogen.data.save` (``out``, else stdout)."""
    if suffix != ".png":
        return data.save(out, rows, columns)
    draw = lambda ax: plot_image_grid(rows, ax, shape=shape, ncols=ncols)  # noqa: E731
    figure_writer(draw, SAMPLE_FIGURE)(out)


def _conditions(
    args: argparse.Namespace, model: GenerativeModel, run: dict[str, Any], options: dict
) -> int | None:
    """Add the labels (``y``) and given examples (``observed``) of the draw to ``options``;
    returns the columns of a PNG with one column per class, or None for a square grid."""
    n, classes = args.num_rows, model.label_count
    if options.get("classifier") is not None:  # classifier guidance: the classifier's classes
        classes = options["classifier"].num_classes
    if args.label is not None:
        if classes is None:
            raise ValueError(
                f"--label: expected a model with classes or components (cvae with labels, "
                f"ssvae, gmvae), got {model.family}"
            )
        if args.label >= classes:
            raise ValueError(
                f"--label: expected a {model.label_kind} in 0..{classes - 1}, got {args.label}"
            )
        options["y"] = torch.full((n,), args.label, dtype=torch.long)
    given = [n for n, v in (("--data", args.data), ("--data-dir", args.data_dir)) if v]
    in_turn = args.label is None and classes is not None and model.label_kind == "class"
    if model.given_mask is None and given:
        raise ValueError(
            f"{', '.join(given)}: expected no examples for a {model.family} model "
            "that generates whole images, got some (only a cvae fitted with --observed "
            "completes examples)"
        )
    if model.given_mask is not None:
        if not given:
            raise ValueError(
                f"--data, --data-dir: a cvae given the {model.config['observed']} half of "
                "each image generates only the rest, so it needs examples to complete "
                "(--data FILE, or --data-dir DIR for the test images); got neither"
            )
        # Binarized with the run's seed (--seed seeds only the draw), like its test rows.
        examples = opt.images_for(argparse.Namespace(**{**vars(args), "seed": None}), model, run)
        if n > examples.x.shape[0]:
            raise ValueError(
                f"-n: expected at most {examples.x.shape[0]}, the examples to complete in "
                f"{examples.description}, got {n}"
            )
        options["observed"] = examples.x[:n]
        if in_turn and model.conditions_on_labels and examples.labels is not None:
            labels = data.check_classes(examples.labels, classes, examples.labels_source)
            options["y"], in_turn = labels[:n], False
    if in_turn:
        options["y"] = torch.arange(n) % classes
    return classes if in_turn else None


def _reverse_process_options(args: argparse.Namespace, model: GenerativeModel) -> dict:
    """--steps, --method, --guidance and --classifier(-scale), for models that sample by a
    reverse process."""
    flags = (
        ("--steps", args.steps),
        ("--method", args.method),
        ("--guidance", args.guidance),
        ("--classifier", args.classifier),
        ("--classifier-scale", args.classifier_scale),
    )
    given = [flag for flag, value in flags if value is not None]
    if "guidance" not in inspect.signature(model.sample).parameters:
        if given:
            raise ValueError(f"{', '.join(given)}: expected a diffusion model, got {model.family}")
        return {}
    options: dict[str, Any] = {"steps": args.steps}
    options["method"] = args.method or ("ddim" if args.steps is not None else "ancestral")
    options |= _classifier_options(args)
    if args.guidance is not None:
        if model.label_count is None:
            raise ValueError(
                "--guidance: expected a class-conditional model, got an unconditional one"
            )
        options["guidance"] = args.guidance
    return options


def _classifier_options(args: argparse.Namespace) -> dict[str, Any]:
    """--classifier (loaded on --device) and --classifier-scale, for classifier guidance."""
    if args.classifier is None:
        if args.classifier_scale is not None:
            raise ValueError(
                "--classifier-scale: expected a classifier to scale (--classifier CLF_RUN), "
                "got none"
            )
        return {}
    classifier = opt.load_family_run(args.classifier, "noise_classifier", "--classifier")
    scale = 1.0 if args.classifier_scale is None else args.classifier_scale
    return {"classifier": classifier.to(args.device), "classifier_scale": scale}


# --- evaluate -------------------------------------------------------------------------------
#: Options of the models that read images (refused for those fitted to a table).
_IMAGE_OPTIONS = ("data_dir", "dataset", "binarize", "iw_samples", "step_samples", "labels")


def add_evaluate_command(commands: argparse._SubParsersAction) -> None:
    """The ``evaluate`` sub-command, added to ``commands``."""
    evaluate = commands.add_parser(
        "evaluate",
        help="log-likelihood of data under a fitted model",
        description="Print the mean log-likelihood per row (nats) of data under a fitted "
        "model (what it models: log p(x), or log p(x | y) ...), exact with BIC/AIC or its "
        "bounds and bits per dimension, on the test split of --data-dir or on every row of "
        "--data; where the data have labels, also the accuracy of a classifier or clusters.",
    )
    opt.add_run_options(
        evaluate, "seed of the Monte Carlo draws and of sampled binarization; default the run's"
    )
    opt.add_all(
        evaluate,
        ("--data", "data file (CSV/TSV, NPY/NPZ or IDX); every row is scored", {"type": Path}),
        ("--columns", "columns of a CSV file to use", {"metavar": "A,B"}),
        ("--key", "the array of an NPZ --data file holding several to use", {"metavar": "NAME"}),
    )
    latent = evaluate.add_argument_group(
        "image models (vae, diffusion, autoregressive, ...): --iw-samples and --step-samples "
        "for those without an exact log-likelihood"
    )
    opt.add_image_options(latent, "scores the test split", "Default the run's (the same images).")
    opt.add_all(
        latent,
        ("--iw-samples", "importance samples of the log-likelihood bound; default the run's, "
         "else the family's", {"type": opt.positive_int, "metavar": "K"}),
        ("--step-samples", "diffusion models: draws of the diffusion step per example in the "
         "ELBO's diffusion term; default the run's, else 1", {"type": opt.positive_int}),
    )  # fmt: skip
    opt.add_labels_options(
        latent,
        "the condition y of a cvae with labels (required), or scores an ssvae's classifier "
        "or a gmvae's clusters",
        num_classes=False,
    )
    opt.add_scale_out_options(
        evaluate,
        "processes that score the rows, each its share; the "
        "bounds' draws of process r seeded with --seed + r (default 1)",
    )
    opt.add_all(
        evaluate.add_argument_group("out-of-distribution detection (pyrogen.ood)"),
        ("--ood-data", "rows that are not from the model's data, read like --data: prints "
         "AUROC, AUPR and FPR at 95%% TPR of each --ood-score telling the scored rows "
         "(in-distribution) from these", {"type": Path, "metavar": "PATH"}),
        ("--ood-score", f"scores, comma-separated, of {', '.join(ood.SCORES)} (complexity: "
         "images in [0, 1]); default nll,typicality", {"metavar": "A,B"}),
    )  # fmt: skip
    evaluate.set_defaults(run=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    """Score the data and print the numbers (the first process, with several)."""
    model, run, device = opt.load_run(args)
    model.to(device)
    scores = _ood_scores(args, model)
    scale_out = {"devices": args.devices, "num_nodes": args.num_nodes, "device": device}
    evaluate = _evaluate_images if model.reads_images else _evaluate_table
    text, rows = evaluate(args, model, run, scale_out)
    if scores:
        text += "\n\n" + _evaluate_ood(args, model, run, rows, scores)
    if opt.is_main_process(args):
        print(text)
    return 0


def _evaluate_table(
    args: argparse.Namespace, model: GenerativeModel, run: dict[str, Any], scale_out: dict
) -> tuple[str, torch.Tensor]:
    """The exact log-likelihood per row, BIC and AIC of ``--data`` (the mixture, a flow);
    for a classifier (a model that uses labels) its scores with the data's labels."""
    uses_labels = model.conditions_on_labels or model.predicts == "class"
    for option in (*_IMAGE_OPTIONS, "seed"):
        if option == "labels" and uses_labels:
            continue
        if getattr(args, option) is not None:
            raise ValueError(
                f"--{option.replace('_', '-')}: expected no value for a {model.family} model "
                f"(its log-likelihood is exact; give its data with --data), got "
                f"{getattr(args, option)!r}"
            )
    if args.data is None:
        raise ValueError(
            f"--data: expected a data file to score the {model.family} model on, got none"
        )
    if uses_labels:
        with opt.as_option_errors():
            x, labels, source = data.read_labelled_array(
                args.data, labels=args.labels, columns=args.columns, key=args.key
            )
        labels = _labels_for(model, labels, source)
        if labels is not None:
            stats = score(model, x, labels=labels, **scale_out)
            summary = {"family": model.family, "config": model.config}
            where = f"{args.data}: {describe_shape(x.shape)}"
            text = describe_evaluation(args.model_path, summary, where, stats, labels=source)
            return text, x
    with opt.as_option_errors():
        x = data.load_table(args.data, args.columns, args.key)[0].to(model.device)
    summary = summarize(model, x, **scale_out)
    if "inference" in run:
        summary["inference"] = run["inference"]
    described = f"{args.data}: {describe_shape(x.shape)}"
    scores = None if model.has_likelihood else score(model, x, seed=run.get("seed", 0))
    return describe_evaluation(args.model_path, summary, described, scores), x


def _evaluate_images(
    args: argparse.Namespace, model: GenerativeModel, run: dict[str, Any], scale_out: dict
) -> tuple[str, torch.Tensor]:
    """The exact log-likelihood or the bounds, and bits/dim, of the test split of
    --data-dir, or of --data (and accuracy with labels); defaults from the run, so a run's
    own data reproduce its numbers."""
    seed = args.seed if args.seed is not None else run.get("seed", 0)
    uses_labels = model.conditions_on_labels or model.predicts is not None
    if args.labels is not None and not uses_labels:
        raise ValueError(
            f"--labels: expected none for a {model.family} model (it uses no labels), "
            f"got {args.labels!r}"
        )
    examples = opt.images_for(args, model, run)
    labels = _labels_for(model, examples.labels, examples.labels_source)
    _check_sample_options(args, model)
    samples = _score_samples(args, model, run)
    stats = score(model, examples.x, labels=labels, iw_samples=samples, seed=seed, **scale_out)
    use = "the condition y" if model.conditions_on_labels else "scoring predict"
    text = describe_evaluation(
        args.model_path, {"family": model.family, "config": model.config},
        f"{examples.description}, scored as examples of shape {tuple(examples.x.shape[1:])}",
        stats, preprocessing=f"--binarize {examples.binarize}: {examples.preprocessing}",
        labels=None if labels is None else f"{examples.labels_source} ({use})",
    )  # fmt: skip
    return text, examples.x


def _score_samples(args: argparse.Namespace, model: GenerativeModel, run: dict[str, Any]) -> int:
    """--iw-samples or --step-samples (what the model's bounds use), else the run's, else the
    family's default."""
    name = model.score_samples_name
    return getattr(args, name) or run.get("test", {}).get(name) or model.default_score_samples


def _ood_scores(args: argparse.Namespace, model: GenerativeModel) -> tuple[str, ...]:
    """The --ood-score names where --ood-data is given (checked: known, and a model of p(x)
    with a likelihood), else ()."""
    if args.ood_data is None:
        if args.ood_score is not None:
            raise ValueError(f"--ood-score: expected --ood-data with it, got {args.ood_score!r}")
        return ()
    names = tuple(name.strip() for name in (args.ood_score or "nll,typicality").split(","))
    for name in names:
        check_choice("--ood-score", name, ood.SCORES)
    try:
        ood.check_likelihood(model)
    except ValueError as error:
        raise ValueError(f"--ood-data: {error}") from None
    if model.conditions_on_labels:
        raise ValueError(
            f"--ood-data: expected a model of p(x), got a {model.family} of "
            f"{model.likelihood_target} (out-of-distribution rows have no labels)"
        )
    return names


def _evaluate_ood(
    args: argparse.Namespace,
    model: GenerativeModel,
    run: dict[str, Any],
    rows: torch.Tensor,
    scores: tuple[str, ...],
) -> str:
    """:func:`pyrogen.ood.ood_report` of the rows scored (in-distribution) against the rows
    of --ood-data, read and prepared as --data is."""
    if model.reads_images:
        reading = argparse.Namespace(**{**vars(args), "data": args.ood_data, "data_dir": None})
        with opt.as_option_errors():
            outside = opt.images_for(reading, model, run).x
    else:
        with opt.as_option_errors():
            outside = data.load_table(args.ood_data, args.columns, args.key)[0]
    if outside.shape[1:] != rows.shape[1:]:
        raise ValueError(
            f"--ood-data: expected rows of shape {tuple(rows.shape[1:])}, as the rows the "
            f"model scores, got {tuple(outside.shape[1:])} in {args.ood_data}"
        )
    seed = args.seed if args.seed is not None else run.get("seed", 0)
    samples = None if model.exact_likelihood else _score_samples(args, model, run)
    report = ood.ood_report(model, rows, outside, scores=scores, num_samples=samples, seed=seed)
    return (
        f"out-of-distribution: {args.ood_data}: {describe_shape(outside.shape)} against the "
        "rows above (in-distribution, the positives)\n" + ood.format_report(report)
    )


def _check_sample_options(args: argparse.Namespace, model: GenerativeModel) -> None:
    """A ValueError for --iw-samples or --step-samples where the model's numbers use neither."""
    name = model.score_samples_name
    for other in ("iw_samples", "step_samples"):
        given = getattr(args, other)
        if given is None or (other == name and not model.exact_likelihood):
            continue
        why = (
            "its log-likelihood is exact"
            if model.exact_likelihood
            else f"its bounds are estimated with --{name.replace('_', '-')}"
        )
        raise ValueError(
            f"--{other.replace('_', '-')}: expected none for a {model.family} model ({why}), "
            f"got {given}"
        )


def _labels_for(
    model: GenerativeModel, labels: torch.Tensor | None, source: str | None
) -> torch.Tensor | None:
    """The data's labels where the model uses them, checked against its classes."""
    conditioned = model.conditions_on_labels
    classes = model.label_count or model.num_classes  # a discriminative model draws no x
    if conditioned and labels is None:
        raise ValueError(
            f"--labels: expected the labels of the data for a {model.family} conditioned on "
            f"{classes} classes (it is scored on {model.likelihood_target}; "
            "MNIST --data-dir has them, with --data give --labels FILE|KEY), got none"
        )
    if labels is None or not (conditioned or model.predicts is not None):
        return None
    if model.predicts == "class" or conditioned:
        return data.check_classes(labels, classes, source, unlabelled=not conditioned)
    return labels
