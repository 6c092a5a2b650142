"""ConditionalVAE: labels steer samples, partial observations are kept and not scored."""

from __future__ import annotations

import pytest
import torch

import pyrogen
from pyrogen import ConditionalVAE
from pyrogen.models.conditional_vae import observed_mask


def _prototype_data(n: int = 300, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    prototypes = torch.tensor([[1.0] * 8 + [0.0] * 8, [0.0] * 8 + [1.0] * 8, [1.0, 0.0] * 8])
    classes = torch.randint(3, (n,), generator=generator)
    flips = torch.rand(n, 16, generator=generator) < 0.05
    return torch.where(flips, 1 - prototypes[classes], prototypes[classes]), classes, prototypes


def test_samples_follow_the_requested_label():
    x, y, prototypes = _prototype_data()
    torch.manual_seed(0)
    model = ConditionalVAE((16,), latent_dim=2, num_classes=3, hidden=(32,))
    pyrogen.fit(model, x, y, steps=300, batch_size=50, lr=0.01, progress=False)
    means = model.sample(3, y=[0, 1, 2], mean=True)
    errors = (means[:, None, :] - prototypes[None]).abs().mean(-1)  # (requested, prototype)
    assert torch.equal(errors.argmin(-1), torch.arange(3))
    assert errors.diagonal().max() < 0.2


def test_completion_keeps_the_given_half_and_learns_the_missing_one():
    x, y, prototypes = _prototype_data()
    torch.manual_seed(0)
    model = ConditionalVAE((16,), latent_dim=2, observed=observed_mask("top", (16,)), hidden=(32,))
    pyrogen.fit(model, x, steps=300, batch_size=50, lr=0.01, progress=False)
    clean = prototypes[y[:30]]
    corrupted = clean.clone()
    corrupted[:, 8:] = 0.5  # the missing half is ignored
    completed = model.complete(corrupted)
    assert torch.equal(completed[:, :8], clean[:, :8])
    assert torch.equal(model.reconstruct(corrupted)[:, :8], clean[:, :8])
    assert (completed[:, 8:] - clean[:, 8:]).abs().mean() < 0.2


def test_the_likelihood_scores_only_the_missing_values():
    model = ConditionalVAE((1, 4, 4), latent_dim=2, observed="left", hidden=(8,))
    x = (torch.rand(5, 1, 4, 4) > 0.5).float()
    output = torch.randn(5, 1, 4, 4)
    missing = ~observed_mask("left", (1, 4, 4))
    expected = torch.distributions.Bernoulli(logits=output).log_prob(x)[:, missing].sum(-1)
    assert torch.allclose(model._likelihood(output).log_prob(x), expected)
    # and the ELBO ignores what the decoder says about the given values
    assert torch.allclose(
        model._likelihood(output.masked_fill(~missing, 50.0)).log_prob(x), expected
    )


@pytest.mark.parametrize(
    "observed, shape, expected",
    [
        ("top", (1, 2, 2), [[[True, True], [False, False]]]),
        ("bottom", (4,), [False, False, True, True]),
        ("left", (4,), [True, False, True, False]),
        ("right", (1, 2, 2), [[[False, True], [False, True]]]),
    ],
)
def test_halves(observed, shape, expected):
    assert observed_mask(observed, shape).tolist() == expected


def test_conditional_prior_and_config_round_trip(tmp_path):
    mask = torch.zeros(16, dtype=torch.bool)
    mask[::3] = True
    model = ConditionalVAE((16,), latent_dim=2, num_classes=2, observed=mask, hidden=(8,))
    assert model.conditional_prior and model.context_dim == 2 + int(mask.sum())
    model.save(tmp_path / "cvae.pt")
    loaded = pyrogen.load(tmp_path / "cvae.pt")
    assert torch.equal(loaded._given_mask, mask)
    x = torch.rand(4, 16)
    torch.manual_seed(1)
    a = model.elbo(x, [0, 1, 0, 1])
    torch.manual_seed(1)
    assert torch.equal(a, loaded.elbo(x, [0, 1, 0, 1]))


def test_bad_arguments_and_data_are_named():
    with pytest.raises(ValueError, match="num_classes, observed: expected at least one"):
        ConditionalVAE((16,))
    with pytest.raises(ValueError, match="observed: expected one of"):
        ConditionalVAE((16,), observed="middle")
    with pytest.raises(ValueError, match=r"observed: expected a mask of shape \(16,\)"):
        ConditionalVAE((16,), observed=torch.ones(15, dtype=torch.bool))
    with pytest.raises(ValueError, match="observed: expected some values given"):
        ConditionalVAE((16,), observed=torch.ones(16, dtype=torch.bool))
    with pytest.raises(ValueError, match="'left' needs image-shaped examples"):
        ConditionalVAE((6,), observed="left")
    model = ConditionalVAE((16,), latent_dim=2, num_classes=3)
    x = torch.rand(4, 16)
    with pytest.raises(ValueError, match=r"y: expected labels of shape \(4,\) .* got None"):
        pyrogen.fit(model, x, steps=1, progress=False)
    with pytest.raises(ValueError, match=r"y: expected labels in 0..2, got 5 at row 1"):
        pyrogen.fit(model, x, [0, 5, 1, 1], steps=1, progress=False)
    with pytest.raises(ValueError, match="complete: this ConditionalVAE was built without"):
        model.complete(x, [0, 1, 2, 0])
    completion = ConditionalVAE((16,), latent_dim=2, observed="top")
    with pytest.raises(ValueError, match="observed: expected examples whose given values"):
        completion.sample(3)
    with pytest.raises(ValueError, match=r"y: ConditionalVAE takes no labels"):
        completion.elbo(x, [0, 1, 2, 0])
