"""Autoregressive densities: the networks' masks, exact normalization by enumeration, the
order ensemble, the sampler against the density, training, and bad input.

Every check is against an independent reference: autograd for the masks (output i must not
depend on input j unless j comes first), brute-force enumeration of every binary or
categorical example for the normalization, quadrature for the real-valued likelihoods, a
chi-square test of the sampler against the exact probabilities, and a hand-written fully
visible logistic model for training.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.stats import chi2
from torch import nn

import pyrogen
from pyrogen import AutoregressiveDensity
from pyrogen.nn.autoregressive import MADE, CausalConvNet, GatedPixelCNN


def _dependencies(network: nn.Module, x: torch.Tensor, **options) -> torch.Tensor:
    """(V, V) bool: [i, j] where output value i depends on input value j (by gradients) for
    any of the examples x (B, ...), V the values of one example. Several examples, because a
    ReLU can cut a path for one input."""
    x = x.clone().requires_grad_(True)
    out = network(x, **options)
    outputs = out.reshape(x.shape[0], x[0].numel(), -1)
    rows = []
    for i in range(outputs.shape[1]):
        (grad,) = torch.autograd.grad(outputs[:, i].sum(), x, retain_graph=True)
        rows.append((grad.reshape(x.shape[0], -1) != 0).any(0))
    return torch.stack(rows)


def _perturbed(module: nn.Module, scale: float = 0.5) -> nn.Module:
    """Move the weights off their initial values, so that no dependency is zero by chance."""
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(scale * torch.randn_like(parameter))
    return module


# --- the autoregressive property, by gradients -------------------------------------------------
@pytest.mark.parametrize("num_masks", [1, 3])
def test_made_outputs_depend_only_on_earlier_values_of_each_ordering(num_masks):
    torch.manual_seed(0)
    made = _perturbed(MADE(7, params=2, hidden=(16, 16), num_masks=num_masks, context_dim=2))
    context = torch.tensor([[1.0, 0.0]]).expand(8, 2)
    for mask in range(num_masks):
        degree = made.degrees[mask, :7]
        depends = _dependencies(made, torch.rand(8, 7), context=context, mask=mask)
        allowed = degree[None, :] < degree[:, None]  # j before i in this ordering
        assert not (depends & ~allowed).any(), f"mask {mask} sees later values"
        # with hidden units and direct connections every earlier value is seen
        assert torch.equal(depends, allowed)
    if num_masks > 1:
        assert not torch.equal(made.degrees[1, :7], made.degrees[0, :7])


def _raster_position(index: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Generation order of flat index ``index`` of (C, *spatial): spatial first, then C."""
    channel, *position = torch.unravel_index(torch.tensor(index), shape)
    return (*[int(p) for p in position], int(channel))


@pytest.mark.parametrize("channels", [1, 3])
def test_pixelcnn_is_autoregressive_and_has_no_blind_spot(channels):
    torch.manual_seed(0)
    shape = (channels, 5, 6)
    net = _perturbed(GatedPixelCNN(channels, params=2, hidden_channels=12, layers=3, kernel_size=3))
    depends = _dependencies(net, torch.rand(32, *shape))
    order = [_raster_position(i, shape) for i in range(math.prod(shape))]
    allowed = torch.tensor([[before < after for before in order] for after in order])
    assert not (depends & ~allowed).any(), "a value depends on itself or a later value"
    flat = torch.arange(math.prod(shape)).reshape(shape)
    # (2, 2) sees the row above to its right, which a plain masked 3x3 stack cannot (the
    # blind spot), the pixel to its left, and the earlier channels of its own pixel
    for c in range(channels):
        seen = depends[flat[c, 2, 2]]
        assert seen[flat[:, 1, 3]].all() and seen[flat[:, 1, 4]].all()
        assert seen[flat[:, 2, 1]].all()
        assert seen[flat[:c, 2, 2]].all() and not seen[flat[c:, 2, 2]].any()


@pytest.mark.parametrize("channels", [1, 2])
def test_causal_convolutions_are_autoregressive(channels):
    torch.manual_seed(0)
    shape = (channels, 9)
    net = _perturbed(CausalConvNet(channels, params=2, hidden_channels=4, layers=3))
    depends = _dependencies(net, torch.randn(8, *shape))
    order = [_raster_position(i, shape) for i in range(math.prod(shape))]
    allowed = torch.tensor([[before < after for before in order] for after in order])
    assert not (depends & ~allowed).any()
    flat = torch.arange(math.prod(shape)).reshape(shape)
    # the receptive field of 3 layers of dilations 1, 2, 4 with kernel 2: 8 steps back
    assert depends[flat[-1, 8], flat[:, 1]].all() and not depends[flat[-1, 8], flat[:, 0]].any()


# --- normalization by enumeration ----------------------------------------------------------
def _every_example(levels: int, shape: tuple[int, ...]) -> torch.Tensor:
    """All levels ** D examples of shape ``shape`` with values k / (levels - 1)."""
    values = itertools.product(range(levels), repeat=math.prod(shape))
    return torch.tensor(list(values), dtype=torch.float64).reshape(-1, *shape) / (levels - 1)


TINY = {
    "made-3-masks": ((8,), {"network": "made", "hidden": (16,), "num_masks": 3}),
    "made-fully-visible": ((6,), {"network": "made", "hidden": ()}),
    "pixelcnn": ((2, 4), {"network": "pixelcnn", "channels": 4, "layers": 2, "kernel_size": 3}),
    "pixelcnn-2-channels": (
        (2, 2, 2),
        {"network": "pixelcnn", "channels": 4, "layers": 2, "kernel_size": 3},
    ),
    "causal-conv": ((10,), {"network": "causal_conv", "channels": 4, "layers": 3}),
}


@pytest.mark.parametrize("name", sorted(TINY))
@pytest.mark.parametrize("num_classes", [None, 2])
def test_bernoulli_probabilities_of_every_binary_example_sum_to_one(name, num_classes):
    shape, options = TINY[name]
    torch.manual_seed(0)
    model = _perturbed(AutoregressiveDensity(shape, num_classes=num_classes, **options).double())
    x = _every_example(2, shape)
    assert len(x) <= 2**10
    for label in [None] if num_classes is None else range(num_classes):
        y = None if label is None else torch.full((len(x),), label)
        total = model.log_prob(x, y).exp().sum()
        torch.testing.assert_close(total, torch.tensor(1.0, dtype=torch.float64))


@pytest.mark.parametrize(
    "network, shape",
    [("made", (4,)), ("pixelcnn", (2, 1, 2)), ("causal_conv", (2, 2))],
)
def test_categorical_probabilities_of_every_example_sum_to_one(network, shape):
    torch.manual_seed(0)
    options = {"hidden": (8,), "num_masks": 2} if network == "made" else {"channels": 4}
    model = AutoregressiveDensity(shape, network, "categorical", levels=3, layers=2, **options)
    model = _perturbed(model.double())
    x = _every_example(3, shape)  # 3 ** 4 = 81 examples
    total = model.log_prob(x).exp().sum()
    torch.testing.assert_close(total, torch.tensor(1.0, dtype=torch.float64))


@pytest.mark.parametrize("likelihood", ["gaussian", "logistic_mixture"])
@pytest.mark.parametrize("network", ["made", "causal_conv"])
def test_real_valued_densities_integrate_to_one(likelihood, network):
    torch.manual_seed(0)
    model = AutoregressiveDensity(
        (2,), network, likelihood, hidden=(8,), channels=4, layers=2, mixture_components=3
    )
    model.setup(torch.randn(50, 2) + 3)  # the standardization
    model = _perturbed(model.double(), scale=0.3)
    # trapezoidal quadrature on a grid wide and fine enough for the conditionals' scales
    a = torch.linspace(3 - 12, 3 + 12, 401, dtype=torch.float64)
    grid = torch.cartesian_prod(a, a)
    density = model.log_prob(grid).exp().reshape(len(a), len(a))
    total = torch.trapezoid(torch.trapezoid(density, a, dim=1), a)
    assert total.item() == pytest.approx(1.0, abs=2e-3)


def test_the_order_ensemble_is_the_mean_of_normalized_ordering_densities():
    torch.manual_seed(0)
    model = _perturbed(AutoregressiveDensity((7,), "made", hidden=(16,), num_masks=4).double())
    x = _every_example(2, (7,))
    per_ordering = model.ordering_log_probs(x).detach()
    assert per_ordering.shape == (4, len(x))
    # each ordering is a normalized density, and different from the others
    torch.testing.assert_close(per_ordering.exp().sum(1), torch.ones(4, dtype=torch.float64))
    assert (per_ordering[0] - per_ordering[1]).abs().max() > 0.1
    expected = per_ordering.logsumexp(0) - math.log(4)
    torch.testing.assert_close(model.log_prob(x), expected)
    assert model.log_prob(x).exp().sum().item() == pytest.approx(1.0, abs=1e-9)
    # averaging the networks' logits instead would not give a normalized density
    logits = torch.stack([model.network(2 * x - 1, mask=k)[..., 0] for k in range(4)]).mean(0)
    averaged = -nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
    assert abs(averaged.exp().sum().item() - 1.0) > 1e-3


# --- the sampler against the density ----------------------------------------------------------
def _pooled_chi_square(draws: torch.Tensor, levels: int, probabilities: torch.Tensor) -> float:
    """p-value of Pearson's chi-square test of the draws' frequencies against the
    probabilities of every example, the cells expected fewer than 5 times pooled into one
    (the chi-square approximation needs about 5 per cell)."""
    n, dims = draws.shape[0], math.prod(draws.shape[1:])
    codes = (draws.reshape(n, -1) * (levels - 1)).round().long()
    index = codes @ (levels ** torch.arange(dims - 1, -1, -1))
    counts = torch.bincount(index, minlength=levels**dims).double()
    expected = n * probabilities.double()
    small = expected < 5
    counts = torch.cat([counts[~small], counts[small].sum().reshape(1)])
    expected = torch.cat([expected[~small], expected[small].sum().reshape(1)])
    keep = expected > 0
    statistic = ((counts - expected)[keep] ** 2 / expected[keep]).sum().item()
    return float(chi2.sf(statistic, int(keep.sum()) - 1))


@pytest.mark.parametrize(
    "name", ["made-3-masks", "pixelcnn-2-channels", "causal-conv", "categorical-made"]
)
def test_sample_frequencies_match_the_exact_probabilities(name):
    # Seeded, so deterministic: a sampler that draws from the density passes at the 1e-3
    # level (it would fail by chance once in a thousand seeds); one off by a few percent in
    # any cell of 20000 draws (a wrong ordering, an off-by-one mask) fails, as the second
    # half of the test shows for draws compared with one ordering of the mixture.
    torch.manual_seed(0)
    if name == "categorical-made":
        shape, levels = (3,), 3
        model = AutoregressiveDensity(
            shape, "made", "categorical", levels=3, hidden=(8,), num_masks=2
        )
    else:
        (shape, options), levels = TINY[name], 2
        shape = shape[:-1] + (min(shape[-1], 6),) if name == "causal-conv" else shape
        model = AutoregressiveDensity(shape, **options)
    model = _perturbed(model)
    probabilities = model.log_prob(_every_example(levels, shape).float()).exp()
    draws = model.sample(20_000)
    assert _pooled_chi_square(draws, levels, probabilities) > 1e-3
    if model.num_masks > 1:
        one_ordering = model.ordering_log_probs(_every_example(levels, shape).float())[1].exp()
        assert _pooled_chi_square(draws, levels, one_ordering) < 1e-6


def test_sampling_runs_only_up_to_the_current_row_and_keeps_labels():
    torch.manual_seed(0)
    model = AutoregressiveDensity((1, 4, 4), channels=4, layers=2, num_classes=3)
    draws = model.sample(5, torch.tensor([0, 1, 2, 0, 1]))
    assert draws.shape == (5, 1, 4, 4) and set(draws.unique().tolist()) <= {0.0, 1.0}
    assert model.network_kind == "pixelcnn"


# --- training --------------------------------------------------------------------------------
def _parity_data(rows: int, seed: int) -> torch.Tensor:
    """Binary vectors (rows, 10): 5 fair coins, then the XOR of each neighbouring pair of
    them, flipped with probability 0.05. An XOR is not logistic in the earlier values, so a
    logistic regression per value cannot model it and hidden units can. Entropy:
    5 log 2 + 5 H(0.05) = 4.46 nats."""
    generator = torch.Generator().manual_seed(seed)
    coins = torch.randint(2, (rows, 5), generator=generator).float()
    parities = (coins + coins.roll(-1, dims=1)) % 2
    flips = (torch.rand(rows, 5, generator=generator) < 0.05).float()
    return torch.cat([coins, (parities + flips) % 2], dim=1)


class FullyVisibleLogistic(nn.Module):
    """The fully visible sigmoid belief net written by hand: one logistic regression per
    value on the values before it, p(x_i = 1 | x_<i) = sigmoid(b_i + sum_{j<i} W_ij x_j)."""

    def __init__(self, dims: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dims, dims))
        self.bias = nn.Parameter(torch.zeros(dims))
        self.register_buffer("mask", torch.ones(dims, dims).tril(-1))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        logits = x @ (self.weight * self.mask).T + self.bias
        return -nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)


def test_training_lowers_the_nll_and_beats_a_fully_visible_logistic_model():
    train, test = _parity_data(600, 0), _parity_data(600, 1)
    steps, batch_size, lr = 400, 64, 1e-2
    torch.manual_seed(0)
    model = AutoregressiveDensity((10,), "made", hidden=(32,))
    before = -model.log_prob(test).mean().item()
    result = pyrogen.fit(model, train, steps=steps, batch_size=batch_size, lr=lr, progress=False)
    made_nll = -model.log_prob(test).mean().item()
    assert result.losses[-1] < result.losses[0]
    assert made_nll < before - 1.0

    torch.manual_seed(0)
    reference = FullyVisibleLogistic(10)
    optimizer = torch.optim.Adam(reference.parameters(), lr=lr)
    for _ in range(steps):
        batch = train[torch.randint(len(train), (batch_size,))]
        optimizer.zero_grad()
        (-reference.log_prob(batch).mean()).backward()
        optimizer.step()
    with torch.no_grad():
        reference_nll = -reference.log_prob(test).mean().item()
    # the entropy is 4.46 nats; the logistic model is stuck near 5 log 2 + 5 log 2 = 6.93
    assert made_nll < reference_nll - 1.0, (made_nll, reference_nll)


def test_order_agnostic_training_draws_a_mask_per_step_and_saves_them(tmp_path):
    torch.manual_seed(0)
    model = AutoregressiveDensity((10,), "made", hidden=(32,), num_masks=4)
    x = _parity_data(300, 0)
    pyrogen.fit(model, x, steps=60, batch_size=64, lr=1e-2, progress=False, seed=3)
    path = tmp_path / "made.pt"
    model.save(path)
    loaded = pyrogen.load(path)
    assert torch.equal(loaded.network.degrees, model.network.degrees)
    torch.testing.assert_close(loaded.log_prob(x), model.log_prob(x))
    assert model.bits_per_dim(x).shape == (300,)


def test_the_command_line_fits_evaluates_and_samples_binary_images(tmp_path, capsys):
    from pyrogen.cli import main

    images = (torch.rand(60, 6, 6, generator=torch.Generator().manual_seed(0)) < 0.3).numpy()
    data = tmp_path / "images.npz"
    np.savez(data, x=images.astype(np.float32), y=np.arange(60) % 3)
    out = tmp_path / "run"
    argv = ["fit", "autoregressive", "--data", str(data), "--key", "x", "--epochs", "1"]
    argv += ["--channels", "4", "--layers", "2", "--kernel-size", "3", "--out", str(out)]
    assert main([*argv, "--quiet"]) == 0
    assert (out / "samples.png").is_file()
    assert pyrogen.load(out / "model.pt").network_kind == "pixelcnn"
    assert main(["evaluate", str(out), "--data", str(data), "--key", "x"]) == 0
    assert "(exact" in capsys.readouterr().out
    assert main(["sample", str(out), "-n", "2", "--out", str(tmp_path / "draws.npy")]) == 0
    assert set(np.unique(np.load(tmp_path / "draws.npy"))) <= {0.0, 1.0}


# --- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "options, message",
    [
        ({"data_shape": (5,), "network": "pixelcnn"}, r"data_shape: expected \(H, W\) or \(C, H"),
        ({"data_shape": (1, 4, 4), "network": "causal_conv"}, r"data_shape: expected \(T,\)"),
        ({"data_shape": (4,), "network": "rnn"}, r"network: expected one of 'made'"),
        ({"data_shape": (4,), "likelihood": "poisson"}, r"likelihood: expected one of"),
        ({"data_shape": (4, 4), "num_masks": 2}, r"num_masks: expected 1 for network='pixelcnn'"),
        ({"data_shape": (4, 4), "kernel_size": 4}, r"kernel_size: expected an odd integer"),
        ({"data_shape": (3, 4, 4), "channels": 2}, r"hidden_channels: expected at least the"),
        ({"data_shape": (4,), "hidden": 8}, r"hidden: expected a sequence of positive integers"),
        ({"data_shape": (4,), "levels": 1}, r"levels: expected an integer >= 2"),
        ({"data_shape": (0,)}, r"data_shape: expected positive integers"),
    ],
)
def test_bad_settings_are_refused_naming_the_argument(options, message):
    with pytest.raises(ValueError, match=message):
        AutoregressiveDensity(**options)


def test_bad_data_are_refused_naming_the_argument():
    binary = AutoregressiveDensity((4,), hidden=(8,))
    with pytest.raises(ValueError, match=r"x: expected binary values 0 or 1 .* got 0.5 at row 1"):
        binary.log_prob([[0, 1, 0, 1], [0, 0.5, 1, 1]])
    # grey values may be binarized each epoch; fit refuses them on the first batch
    with pytest.raises(ValueError, match=r"x: expected binary .* got 0.5 at row of the batch"):
        pyrogen.fit(binary, [[0, 1, 0, 1], [0, 0.5, 1, 1]], steps=1, progress=False)
    # the log-likelihood of grey values averages over their binarizations
    grey = torch.full((3, 4), 0.5)
    binarizations = _every_example(2, (4,)).float()
    expected = binary.log_prob(binarizations).mean().item()  # every b equally likely
    estimate = binary.log_likelihood(grey, num_samples=400).mean().item()
    assert estimate == pytest.approx(expected, abs=0.05)
    with pytest.raises(ValueError, match=r"x: expected values in \[0, 1\] for likelihood='ber"):
        pyrogen.fit(binary, [[0, 1, 0, 1], [0, 2, 1, 1]], steps=1, progress=False)
    with pytest.raises(ValueError, match=r"x: expected shape \(n, 4\), got \(2, 5\)"):
        binary.log_prob(torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"y: this model is not conditional"):
        binary.log_prob(torch.zeros(2, 4), torch.zeros(2))
    levels = AutoregressiveDensity((2,), "made", "categorical", levels=4, hidden=(8,))
    with pytest.raises(ValueError, match=r"x: expected values k / 3 for k in 0..3 .* got 0.5"):
        levels.log_prob(torch.tensor([[0.0, 1 / 3], [0.5, 1.0]]))
    with pytest.raises(ValueError, match=r"x: expected values k / 3 .* got 2 at row 0"):
        levels.log_prob(torch.tensor([[2.0, 0.0]]))
    labelled = AutoregressiveDensity((4,), hidden=(8,), num_classes=3)
    with pytest.raises(ValueError, match=r"y: expected labels of shape \(2,\), got None"):
        labelled.log_prob(torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"y: expected labels in 0..2, got 3 at row 1"):
        labelled.log_prob(torch.zeros(2, 4), torch.tensor([0, 3]))


def test_the_default_network_follows_the_data_shape():
    assert AutoregressiveDensity((5,), hidden=(4,)).network_kind == "made"
    assert AutoregressiveDensity((4, 4), channels=2, layers=1).network_kind == "pixelcnn"
    model = AutoregressiveDensity((3, 4, 4), channels=3, layers=1)
    assert model.config["network"] == "pixelcnn" and model.config["kernel_size"] == 5
    assert AutoregressiveDensity((6,), "causal_conv", channels=2).config["kernel_size"] == 2
