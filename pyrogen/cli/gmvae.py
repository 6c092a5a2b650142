"""``pyrogen fit gmvae``: the VAE with a Gaussian-mixture prior. It trains a few warm-up
epochs, starts the prior's components from a mixture fitted to the training codes
(``init_components``) and trains on; the run reports samples of each component and, where
the data have labels, the clustering accuracy. The rest of the command is the VAE's."""

from __future__ import annotations

import argparse
from typing import Any

import torch

from pyrogen.cli.common import _default_of, _FitCommand, _Fitted, _non_negative_int, _positive_int
from pyrogen.cli.labels import _add_labels_options
from pyrogen.cli.vae import (
    VAE_DATA_HELP,
    _add_vae_options,
    _fit_vae_family,
    _Labels,
    _Setup,
    _VAEFamily,
)
from pyrogen.infer.engine import Callback
from pyrogen.models import GaussianMixtureVAE

#: Warm-up epochs when --warmup-epochs is not given (and the run is longer than that).
DEFAULT_WARMUP_EPOCHS = 1


def _add_gmvae_options(parser: argparse.ArgumentParser) -> None:
    _add_vae_options(parser, GaussianMixtureVAE)
    group = parser.add_argument_group("GaussianMixtureVAE prior")
    group.add_argument(
        "--components",
        type=_positive_int,
        default=_default_of(GaussianMixtureVAE, "n_components"),
        metavar="K",
        help="number of mixture components (clusters) of the prior (default %(default)s)",
    )
    group.add_argument(
        "--warmup-epochs",
        type=_non_negative_int,
        metavar="E",
        help="train E epochs, then start the components from a diagonal Gaussian mixture "
        "fitted to the training rows' codes (init_components), then train on; 0 does it "
        f"before training. Default {DEFAULT_WARMUP_EPOCHS} when the run is longer, else the "
        "components keep their random start",
    )
    _add_labels_options(
        group, "only scored: the clustering accuracy of the test rows", num_classes=False
    )


def _configure(args: argparse.Namespace, labels: _Labels) -> _Setup:
    extra = {}
    if labels.source is not None:
        extra["labels"] = f"{labels.source}: not used in training; they score the clusters"
    return _Setup(options={"n_components": args.components}, test_labels=labels.test, extra=extra)


def _prepare(
    args: argparse.Namespace,
    model: GaussianMixtureVAE,
    train: torch.Tensor,
    steps_per_epoch: int,
    steps: int,
) -> tuple[list[Callback], dict[str, Any]]:
    """Initialise the components after the warm-up: a callback at its last step."""
    warmup = args.warmup_epochs
    if warmup is None:
        warmup = DEFAULT_WARMUP_EPOCHS if DEFAULT_WARMUP_EPOCHS * steps_per_epoch < steps else None
    elif warmup * steps_per_epoch >= steps:
        raise ValueError(
            f"--warmup-epochs: expected fewer epochs than the run's {steps / steps_per_epoch:g} "
            f"(the components are initialised after the warm-up, then trained on), got {warmup}"
        )
    if warmup is None:
        return [], {
            "component_init": "not initialised from the codes (no warm-up in a run of one "
            "epoch; --warmup-epochs 0 initialises them before training)"
        }
    how = (
        f"initialised from a diagonal Gaussian mixture fitted to the codes of the "
        f"{train.shape[0]} training rows "
        + (f"after {warmup} warm-up epoch(s)" if warmup else "before training")
    )
    at = warmup * steps_per_epoch
    if at == 0:
        model.init_components(train, seed=args.seed)
        return [], {"component_init": how}

    def initialise(step: int, loss: float, fitted: GaussianMixtureVAE) -> None:
        if step == at:
            fitted.init_components(train, seed=args.seed)

    return [initialise], {"component_init": how}


def _fit_gmvae(args: argparse.Namespace) -> _Fitted:
    return _fit_vae_family(args, _VAEFamily(GaussianMixtureVAE, _configure, _prepare))


#: The mixture-prior VAE's part of ``pyrogen fit`` (``pyrogen.cli._FIT_COMMANDS``).
FIT_COMMAND = _FitCommand(_add_gmvae_options, _fit_gmvae, VAE_DATA_HELP)
