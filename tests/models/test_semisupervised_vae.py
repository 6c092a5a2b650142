"""SemiSupervisedVAE: the enumerated ELBO is the explicit sum over labels; batches; bad labels."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro.infer import TraceEnum_ELBO

import pyrogen
from pyrogen import SemiSupervisedVAE
from tests.models.test_vae import binary_data


def _model(**options) -> SemiSupervisedVAE:
    torch.manual_seed(0)
    return SemiSupervisedVAE((12,), latent_dim=2, num_classes=3, hidden=(16,), **options)


def _hand_elbo(model: SemiSupervisedVAE, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """sum_y q(y|x) [log p(y) + log p(x|z_y,y) + log p(z_y) - log q(z_y|x,y) - log q(y|x)].

    z: (C, B, L), one draw per label, written out without Pyro.
    """
    n, c = x.shape[0], model.num_classes
    log_q_y = torch.log_softmax(model.classifier(x), -1)  # (B, C)
    total = torch.zeros(n)
    for label in range(c):
        one_hot = torch.nn.functional.one_hot(torch.full((n,), label), c).float()
        loc, scale = model.encoder(x, one_hot)
        logits = model.decoder(z[label], one_hot)
        log_px = torch.distributions.Bernoulli(logits=logits).log_prob(x).sum(-1)
        log_pz = torch.distributions.Normal(0.0, 1.0).log_prob(z[label]).sum(-1)
        log_qz = torch.distributions.Normal(loc, scale).log_prob(z[label]).sum(-1)
        inner = -math.log(c) + log_px + log_pz - log_qz - log_q_y[:, label]
        total = total + log_q_y[:, label].exp() * inner
    return total


def test_enumerated_elbo_equals_the_explicit_sum_over_labels_draw_for_draw():
    x = binary_data(10)
    model = _model()
    # The guide draws z for all C labels at once, shape (C, B, L): same draws by seeding.
    pyro.set_rng_seed(3)
    loss = TraceEnum_ELBO(max_plate_nesting=1).loss(model.model, model.guide, x)
    pyro.set_rng_seed(3)
    labels = torch.eye(3)[:, None, :]
    loc, scale = model.encoder(x, labels)
    z = torch.distributions.Normal(loc, scale).rsample()
    assert -loss == pytest.approx(_hand_elbo(model, x, z).sum().item(), rel=1e-5)


def test_labelled_rows_score_their_label_plus_the_classifier_term():
    x = binary_data(10)
    y = torch.arange(10) % 3
    plain, weighted = _model(classifier_weight=0.0), _model(classifier_weight=7.0)
    weighted.load_state_dict(plain.state_dict())
    pyro.set_rng_seed(4)
    elbo = TraceEnum_ELBO(max_plate_nesting=1, strict_enumeration_warning=False)
    without = elbo.loss(plain.model, plain.guide, x, y)
    pyro.set_rng_seed(4)
    with_term = elbo.loss(weighted.model, weighted.guide, x, y)
    log_q = torch.log_softmax(plain.classifier(x), -1)[torch.arange(10), y].sum().item()
    assert without - with_term == pytest.approx(7.0 * log_q, rel=1e-5)


def test_evaluation_elbo_agrees_with_pyro_on_mixed_batches():
    x, y = binary_data(30), torch.tensor([0, -1, 2, -1, 1, -1] * 5)
    model = _model(classifier_weight=0.0)
    evaluated = model.elbo(x, y, num_samples=3000).sum().item()
    elbo = TraceEnum_ELBO(num_particles=3000, vectorize_particles=True, max_plate_nesting=1)
    assert -elbo.loss(model.model, model.guide, x, y) == pytest.approx(evaluated, rel=2e-3)


def test_bounds_order_and_label_marginalisation():
    x = binary_data(20)
    model = _model()
    torch.manual_seed(0)
    elbo = model.elbo(x, num_samples=50).mean().item()
    log_px = model.log_likelihood(x, num_samples=300).mean().item()
    assert elbo <= log_px
    # log p(x) = logsumexp_y log p(x, y): estimated per label with the same estimator
    per_label = torch.stack(
        [model.log_likelihood(x, torch.full((20,), k), num_samples=300) for k in range(3)]
    )
    assert torch.logsumexp(per_label, 0).mean().item() == pytest.approx(log_px, abs=0.05)


def test_every_batch_mixes_labelled_rows_and_an_epoch_covers_each_unlabelled_row_once():
    y = torch.full((100,), -1)
    y[:7] = torch.arange(7) % 3
    model = _model(labelled_share=0.25)
    order = model.minibatch_order(100, 20, y, torch.Generator().manual_seed(0))
    batches = order.split(20)
    assert all((y[b] >= 0).sum() == 5 for b in batches[:-1])
    unlabelled = order[y[order] < 0]
    assert sorted(unlabelled.tolist()) == list(range(7, 100))
    result = pyrogen.fit(model, binary_data(100), y, epochs=2, batch_size=20, progress=False)
    assert result.steps == 2 * len(batches)


def test_training_with_few_labels_learns_the_classes():
    generator = torch.Generator().manual_seed(1)
    prototypes = torch.tensor([[1.0] * 6 + [0.0] * 6, [0.0] * 6 + [1.0] * 6, [1.0, 0.0] * 6])
    classes = torch.randint(3, (300,), generator=generator)
    flips = torch.rand(300, 12, generator=generator) < 0.05
    x = torch.where(flips, 1 - prototypes[classes], prototypes[classes])
    y = torch.full((300,), -1)
    y[:6] = classes[:6]  # two labels per class
    model = _model()
    pyrogen.fit(model, x, y, steps=300, batch_size=30, lr=0.01, progress=False)
    accuracy = (model.predict(x[6:]) == classes[6:]).float().mean().item()
    assert accuracy > 0.9


def test_bad_labels_are_named():
    model = _model()
    x = binary_data(4)
    with pytest.raises(ValueError, match=r"y: expected labels in 0..2 or -1 \(unlabelled\), got 3"):
        pyrogen.fit(model, x, torch.tensor([0, 1, 3, -1]), steps=1, progress=False)
    with pytest.raises(ValueError, match=r"y: expected labels of shape \(4,\)"):
        model.elbo(x, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="y: expected integer class labels"):
        model.elbo(x, torch.tensor([0.5, 1, 2, 0]))
    with pytest.raises(ValueError, match=r"y: expected labels in 0..2, got -1"):
        model.sample(2, y=[0, -1])
    with pytest.raises(ValueError, match="num_classes: expected an integer >= 2"):
        SemiSupervisedVAE((12,), num_classes=1)
