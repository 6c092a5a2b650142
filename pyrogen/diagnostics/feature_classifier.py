"""A small classifier trained on labelled data, whose features judge samples of images.

The Fréchet Inception Distance (Heusel et al. 2017) compares Gaussians fitted to the
features of an ImageNet Inception network. pyrogen ships no such network: it trains a small
classifier on the data set itself (:func:`train_feature_classifier`, a
:class:`~pyrogen.nn.critic.Critic` with one output per class) and computes the same closed
form (:func:`~pyrogen.diagnostics.sample_tests.frechet_distance`) in that classifier's last
hidden layer (:func:`classifier_frechet_distance`). **This is not the Inception FID**: its
numbers depend on the classifier and are comparable only between models judged with the
same one. The same classifier also tells whether conditional samples are recognised as
their labels (:func:`classifier_accuracy`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from pyrogen.checks import as_labels, as_tensor, check_int, check_number
from pyrogen.diagnostics.sample_tests import frechet_distance
from pyrogen.nn.critic import Critic

__all__ = ["classifier_accuracy", "classifier_frechet_distance", "train_feature_classifier"]

#: Rows the classifier reads at once when evaluating.
_ROWS = 2048


def train_feature_classifier(
    x: Any,
    y: Any,
    *,
    num_classes: int | None = None,
    kind: str | None = None,
    hidden: Sequence[int] = (128,),
    channels: Sequence[int] = (32, 64),
    steps: int = 1000,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
) -> Critic:
    """Train a small classifier of labelled examples by Adam on the cross-entropy.

    Args:
        x: examples (N, ``*data_shape``).
        y: their classes (N,) in 0..C-1.
        num_classes: C; default ``max(y) + 1``.
        kind: ``"conv"`` (strided convolutions, for images (C, H, W)) or ``"mlp"``;
            default conv for images, else mlp.
        hidden: hidden widths after the convolutions; the last one is the feature size.
        channels: output channels of each convolution.
        steps: optimizer steps on random batches of ``batch_size`` rows.
        lr: Adam's learning rate.
        seed: seeds the initial weights and the batches.

    Returns:
        the trained :class:`~pyrogen.nn.critic.Critic` (``outputs`` = C), in eval mode, on
        the device of x; ``critic.embed(x)`` gives the features.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> y = torch.arange(200) % 2
        >>> x = torch.randn(200, 3, generator=g) + 3 * y[:, None]
        >>> net = train_feature_classifier(x, y, hidden=(8,), steps=500)
        >>> classifier_accuracy(net, x, y) > 0.95
        True
    """
    x = as_tensor(x, name="x", ndim=None)
    if x.dim() < 2:
        raise ValueError(f"x: expected examples (N, ...), got shape {tuple(x.shape)}")
    labels = torch.as_tensor(y)
    classes = int(labels.max()) + 1 if num_classes is None else num_classes
    labels = as_labels(labels, len(x), check_int("num_classes", classes, minimum=2)).to(x.device)
    data_shape = tuple(x.shape[1:])
    kind = kind or ("conv" if len(data_shape) == 3 else "mlp")
    check_number("lr", lr)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = Critic(data_shape, kind, hidden, channels, outputs=classes).to(x.device)
    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    size = min(check_int("batch_size", batch_size), len(x))
    network.train()
    for _ in range(check_int("steps", steps)):
        rows = torch.randint(len(x), (size,), generator=generator).to(x.device)
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(network(x[rows]), labels[rows]).backward()
        optimizer.step()
    return network.eval().requires_grad_(False)


@torch.no_grad()
def _in_batches(function: Any, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([function(rows) for rows in torch.split(x, _ROWS)])


def classifier_frechet_distance(classifier: Critic, samples: Any, data: Any) -> float:
    """The Fréchet distance between Gaussians fitted to the classifier's features
    (``classifier.embed``) of ``samples`` (N, ``*data_shape``) and of ``data``
    (M, ``*data_shape``): 0 for identical sets, in squared feature units. Not the
    Inception FID (see the module's docstring)."""
    samples = as_tensor(samples, name="samples", ndim=None).to(_device(classifier))
    data = as_tensor(data, name="data", ndim=None).to(_device(classifier))
    return frechet_distance(
        _in_batches(classifier.embed, samples), _in_batches(classifier.embed, data)
    )


def classifier_accuracy(classifier: Critic, x: Any, y: Any) -> float:
    """The share of examples x (N, ``*data_shape``) that the classifier assigns to their
    labels y (N,): held-out accuracy on data, or how often conditional samples are
    recognised as the class they were drawn for."""
    x = as_tensor(x, name="x", ndim=None).to(_device(classifier))
    labels = as_labels(torch.as_tensor(y), len(x), classifier.outputs).to(x.device)
    predicted = _in_batches(classifier, x).argmax(-1)
    return float((predicted == labels).double().mean())


def _device(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device
