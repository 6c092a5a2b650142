"""Classifier guidance and the score of DiffusionVAE, against a mixture of two Gaussians.

Under the forward process z_t = alpha_t x + sigma_t eps, data from a 1-D mixture
sum_k w_k N(mu_k, s_k^2) have the closed-form noisy marginals q(z_t | y = k) =
N(alpha_t mu_k, alpha_t^2 s_k^2 + sigma_t^2), so the exact denoiser E[x | z_t], the exact
score and the exact noisy class posteriors p(y | z_t) are all known. Plugged into the
model (``denoiser=``) and the classifier (``network=``), the samplers must reproduce the
mixture, and guidance at scale 1 must reproduce each component.
"""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from scipy import stats

import pyrogen
from pyrogen.models.noise_classifier import LATENT, LEVEL
from pyrogen.nn.schedules import NoiseSchedule

WEIGHTS = torch.tensor([0.3, 0.7], dtype=torch.float64)
MEANS = torch.tensor([-2.0, 1.5], dtype=torch.float64)
SDS = torch.tensor([0.5, 0.8], dtype=torch.float64)
T = 200
ROWS = 4000


class _Mixture(torch.nn.Module):
    """The mixture's noisy marginals at level t = round(T * time): per-component log
    densities log w_k + log q(z_t | k) (N, 2), and E[x | z_t] (N, 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("gamma", NoiseSchedule("linear", T)().double())

    def components(self, z: torch.Tensor, time: torch.Tensor):
        gamma = self.gamma[(time * T).round().long()][:, None]
        alpha2, sigma2 = torch.sigmoid(-gamma), torch.sigmoid(gamma)
        variance = alpha2 * SDS**2 + sigma2  # (N, 2)
        loc = alpha2.sqrt() * MEANS
        log_joint = WEIGHTS.log() + torch.distributions.Normal(loc, variance.sqrt()).log_prob(z)
        # E[x | z_t, k]: the Gaussian conditional of x given its noisy copy
        mean = MEANS + alpha2.sqrt() * SDS**2 / variance * (z - loc)
        return log_joint, mean


class ExactDenoiser(_Mixture):
    """E[x | z_t] (``prediction="x0"``), the call signature of a denoiser."""

    def forward(self, z: torch.Tensor, time: torch.Tensor, y=None) -> torch.Tensor:
        log_joint, mean = self.components(z, time)
        return (torch.softmax(log_joint, -1) * mean).sum(-1, keepdim=True)


class ExactClassifier(_Mixture):
    """The logits of p(y | z_t), the call signature of the classifier's network."""

    def forward(self, z: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        return self.components(z, time)[0]


def _models():
    diffusion = pyrogen.DiffusionVAE((1,), timesteps=T, denoiser=ExactDenoiser(), prediction="x0")
    diffusion.double()  # shift 0, scale 1: the diffusion runs on x itself
    classifier = pyrogen.NoiseConditionalClassifier.for_model(diffusion, network=ExactClassifier(),
                                                              num_classes=2)  # fmt: skip
    return diffusion, classifier


def _mixture_cdf(x):
    parts = zip(WEIGHTS.tolist(), MEANS.tolist(), SDS.tolist(), strict=True)
    return sum(w * stats.norm.cdf(x, m, s) for w, m, s in parts)


def test_the_score_is_the_mixtures_and_tweedie_gives_the_denoiser():
    diffusion, _ = _models()
    z = torch.linspace(-4, 4, 41, dtype=torch.float64)[:, None]
    for level in (1, T // 2, T):
        z_ = z.clone().requires_grad_(True)
        time = torch.full((41,), level / T, dtype=torch.float64)
        log_q = ExactDenoiser().components(z_, time)[0].logsumexp(-1)
        (exact,) = torch.autograd.grad(log_q.sum(), z_)
        score = diffusion.score(z, level)
        torch.testing.assert_close(score, exact, rtol=1e-6, atol=1e-8)
        _, alpha, sigma = diffusion._levels(torch.tensor([level]), z)
        tweedie = (z + sigma**2 * score) / alpha
        torch.testing.assert_close(tweedie, ExactDenoiser()(z, time), rtol=1e-6, atol=1e-8)


def test_exact_denoiser_reproduces_the_mixture():
    diffusion, _ = _models()
    torch.manual_seed(0)
    x = diffusion.sample(ROWS)[:, 0].numpy()
    # KS at n = 4000 rejects at the 1% level above 0.026; the discretization of T = 200
    # steps adds about 0.007 (measured with 40000 rows)
    assert stats.kstest(x, _mixture_cdf).statistic < 0.026 + 0.007


# Discretization (the classifier's gradient read at z_t for a whole step, and DDIM's
# deterministic steps), measured with 20000-40000 rows at T = 200: the mean is off by
# 0.027 (ancestral) and 0.072 (DDIM), the sd by under 0.01, and DDIM's KS distance is 0.059;
# halving T doubles them (O(1 / T)). Monte Carlo adds 4 standard errors: s_k / sqrt(n) for
# the mean, s_k / sqrt(2 n) for the sd, 1.63 / sqrt(n) (the 1% level) for KS.
BIAS = {"ancestral": (0.04, 0.015, 0.02), "ddim": (0.09, 0.015, 0.065)}


@pytest.mark.parametrize("method, k", [("ancestral", 0), ("ancestral", 1), ("ddim", 0)])
def test_guidance_with_the_exact_classifier_at_scale_1_draws_the_component(method, k):
    diffusion, classifier = _models()
    torch.manual_seed(1)
    steps = T if method == "ddim" else None
    labels = torch.full((ROWS,), k)
    x = diffusion.sample(ROWS, labels, classifier=classifier, method=method, steps=steps)[:, 0]
    mean_bias, sd_bias, ks_bias = BIAS[method]
    assert abs(x.mean() - MEANS[k]) < 4 * SDS[k] / math.sqrt(ROWS) + mean_bias
    assert abs(x.std() - SDS[k]) < 4 * SDS[k] / math.sqrt(2 * ROWS) + sd_bias
    ks = stats.kstest(x.numpy(), stats.norm(MEANS[k].item(), SDS[k].item()).cdf).statistic
    assert ks < 1.63 / math.sqrt(ROWS) + ks_bias


def test_guidance_composes_with_an_unguided_draw_of_labels():
    # y=None draws the labels uniformly: half the rows from each component
    diffusion, classifier = _models()
    torch.manual_seed(2)
    x = diffusion.sample(1000, classifier=classifier)[:, 0]
    assert abs((x > -0.25).double().mean() - 0.5) < 0.06  # 3.8 standard errors


def test_a_larger_scale_sharpens_the_classes():
    # p(y | z_t)^4 pushes the draws of class 0 away from class 1 and narrows them (at
    # scale 1 their mean and sd are -1.94 and 0.50 on these draws; standard errors 0.016
    # and 0.011)
    diffusion, classifier = _models()
    torch.manual_seed(3)
    labels = torch.zeros(1000, dtype=torch.long)
    sharp = diffusion.sample(1000, labels, classifier=classifier, classifier_scale=4.0)
    assert sharp.mean() < MEANS[0] - 0.1 and sharp.std() < 0.95 * SDS[0]


def test_the_trained_classifier_approaches_the_exact_posteriors():
    diffusion, exact = _models()
    generator = torch.Generator().manual_seed(0)
    y = (torch.rand(2000, generator=generator) < WEIGHTS[1]).long()
    x = MEANS[y] + SDS[y] * torch.randn(2000, generator=generator, dtype=torch.float64)
    classifier = pyrogen.NoiseConditionalClassifier.for_model(diffusion, 2, hidden=(32, 32))
    pyrogen.fit(classifier, x[:, None], y, steps=150, batch_size=256, lr=3e-3, seed=0,
                progress=False)  # fmt: skip
    # p(y = 1 | z_t) on the rows' own noisy copies, where the classifier saw data
    for level in (0, T // 4, T // 2):
        t = torch.full((2000,), level)
        _, alpha, sigma = diffusion._levels(t, x[:, None])
        z = alpha * x[:, None] + sigma * torch.randn(2000, 1, generator=generator).double()
        learned = torch.softmax(classifier.logits(z, t), -1)[:, 1].detach()
        truth = torch.softmax(exact.logits(z, t), -1)[:, 1]
        assert (learned - truth).abs().mean() < 0.02, level  # 0.005 measured


def test_the_augmentation_is_the_forward_process():
    # t and z_t are sites of the model and the guide; z_t ~ q(z_t | x) at the drawn level
    _, classifier = _models()
    x = torch.full((3000, 1), 2.0, dtype=torch.float64)
    conditioned = pyro.poutine.condition(classifier.guide, {LEVEL: torch.full((3000,), T // 2)})
    trace = pyro.poutine.trace(conditioned).get_trace(x, None)
    z = trace.nodes[LATENT]["value"][:, 0]
    _, alpha, sigma = classifier._levels(torch.tensor([T // 2]), x)
    assert abs(z.mean() - 2 * alpha.item()) < 4 * sigma.item() / math.sqrt(3000)
    assert abs(z.std() - sigma.item()) < 0.05


# --- errors ------------------------------------------------------------------------------------
def test_a_classifier_of_another_schedule_or_shape_is_refused():
    diffusion, _ = _models()
    for other, message in [
        (pyrogen.NoiseConditionalClassifier((1,), 2, T, "cosine"), "noise levels"),
        (pyrogen.NoiseConditionalClassifier((1,), 2, T // 2), "timesteps"),
        (pyrogen.NoiseConditionalClassifier((2,), 2, T), "data_shape"),
        (pyrogen.NoiseConditionalClassifier((1,), 2, T, likelihood="bernoulli"), "likelihood"),
    ]:
        with pytest.raises(ValueError, match=message):
            diffusion.sample(2, classifier=other.double())


def test_a_classifier_of_other_data_scaling_is_refused():
    diffusion, classifier = _models()
    classifier.data_shift.fill_(1.0)
    with pytest.raises(ValueError, match="data shift"):
        diffusion.sample(2, classifier=classifier)


def test_bad_labels_scales_and_classifiers_name_the_argument():
    diffusion, classifier = _models()
    with pytest.raises(ValueError, match="y: .*0..1"):
        diffusion.sample(2, [0, 2], classifier=classifier)
    with pytest.raises(ValueError, match="classifier_scale: expected a number"):
        diffusion.sample(2, classifier=classifier, classifier_scale=math.nan)
    with pytest.raises(ValueError, match="classifier_scale: expected a classifier"):
        diffusion.sample(2, classifier_scale=2.0)
    with pytest.raises(TypeError, match="classifier: expected a NoiseConditionalClassifier"):
        diffusion.sample(2, classifier=ExactClassifier())
    with pytest.raises(ValueError, match="y: this diffusion model is not conditional"):
        diffusion.sample(2, [0, 1])


def test_a_conditional_model_needs_a_classifier_of_its_classes():
    diffusion = pyrogen.DiffusionVAE((2,), timesteps=5, hidden=(8,), num_classes=3)
    with pytest.raises(ValueError, match="num_classes 3, got num_classes 2"):
        classifier = pyrogen.NoiseConditionalClassifier.for_model(diffusion, 2, hidden=(8,))
        diffusion.sample(2, classifier=classifier)
    classifier = pyrogen.NoiseConditionalClassifier.for_model(diffusion, hidden=(8,))
    draws = diffusion.sample(4, [0, 1, 2, 0], guidance=2.0, classifier=classifier, method="ddim")
    assert draws.shape == (4, 2) and torch.isfinite(draws).all()


def test_latent_diffusion_is_refused():
    autoencoder = pyrogen.VAE((6,), latent_dim=2, hidden=(8,))
    diffusion = pyrogen.DiffusionVAE((6,), timesteps=5, hidden=(8,), autoencoder=autoencoder)
    with pytest.raises(ValueError, match="latent diffusion"):
        pyrogen.NoiseConditionalClassifier.for_model(diffusion, 2)


def test_score_checks_its_arguments():
    diffusion, _ = _models()
    with pytest.raises(ValueError, match="t: expected levels in 0..200"):
        diffusion.score(torch.zeros(2, 1), T + 1)
    with pytest.raises(ValueError, match="t: expected an int"):
        diffusion.score(torch.zeros(2, 1), 0.5)
    with pytest.raises(ValueError, match=r"z: expected shape \(n, 1\)"):
        diffusion.score(torch.zeros(2, 3), 1)


def test_the_classifier_needs_labels_and_draws_nothing():
    _, classifier = _models()
    with pytest.raises(ValueError, match="y: expected the labels"):
        classifier.setup(torch.zeros(3, 1, dtype=torch.float64))
    with pytest.raises(NotImplementedError, match="discriminative"):
        classifier.sample(3)
