"""
Implicit models: GANs in a PPL
==============================

A GAN is a sampler x = G(z), z ~ N(0, I), with no density. In pyrogen the generator is an
ordinary Pyro model -- z ~ N(0, I), x ~ N(G(z), s^2) with a small s -- so
``pyro.infer.Predictive`` draws from it like from any family; what differs is training,
which is **not** an ELBO: a discriminator and the generator take turns on an adversarial
loss. This tutorial trains GANs on the ring of eight Gaussians of the unrolled-GAN and
VEEGAN papers, measures mode collapse with :func:`pyrogen.diagnostics.mode_coverage`,
compares the objectives and stabilizers, and judges samples with two-sample tests, which
need no likelihood. It then draws MNIST digits on demand from a conditional GAN, checked by
an independent classifier, and shows with Flow-GAN, the one GAN whose likelihood can be
measured, how sample quality trades against log-likelihood. The :doc:`GAN page <../gan>`
documents the family.
"""

# %%
# Setup
# -----
# ``PYROGEN_SMOKE=1`` (set by the test suite) trains for a handful of steps, so the numbers
# and pictures are then those of untrained models.

import os
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from pyro.infer import Predictive

import pyrogen
from pyrogen.diagnostics import mmd_test, mode_coverage, nearest_neighbour_test
from pyrogen.diagnostics.feature_classifier import (
    classifier_accuracy,
    classifier_frechet_distance,
    train_feature_classifier,
)
from pyrogen.diagnostics.sample_tests import ring_of_gaussians

SMOKE = os.environ.get("PYROGEN_SMOKE") == "1"
STEPS = 20 if SMOKE else 6000
MIXTURE_STEPS = 20 if SMOKE else 1000
DRAWS = 200 if SMOKE else 2000
DIGIT_ROWS = 500 if SMOKE else 60_000  # MNIST training images for the conditional GAN
DIGIT_STEPS = 5 if SMOKE else 6000
CLASSIFIER_STEPS = 20 if SMOKE else 2000
FLOW_STEPS = 20 if SMOKE else 1500

x, centres, sd = ring_of_gaussians(2000, seed=0)
held_out, _, _ = ring_of_gaussians(DRAWS, seed=1)

# %%
# The generator is a Pyro model
# -----------------------------
# Before any training, ``Predictive`` already draws data from the generative program; the
# site ``x`` is what the program observes when data are given.

gan = pyrogen.GAN(2)
gan.setup(x)  # standardize inside the model, as the flow does
draws = Predictive(gan.model, num_samples=1)(None, None, 5)
print({name: tuple(value.shape) for name, value in draws.items()})

# %%
# Objectives and stabilizers against mode collapse
# ------------------------------------------------
# Each GAN trains for the same steps from the same seed; ``mode_coverage`` counts the
# modes with high-quality samples (within 3 standard deviations) and the share of such
# samples (0.989 for exact draws in 2-D). Without a penalty the generator tends to collapse
# onto a few modes of this sharp ring; the R1 penalty on the discriminator's gradient at
# real rows (``r1``), on by default (gamma = 1) for the nonsaturating and hinge objectives,
# keeps every mode (see :doc:`../benchmarks`). ``r1=0`` turns it off; WGAN-GP has its own
# gradient penalty instead.

settings = {
    "nonsaturating, no R1, no average": {"r1": 0.0, "ema": None},
    "nonsaturating, no R1": {"r1": 0.0},
    "nonsaturating (default: R1)": {},
    "hinge (default: R1)": {"objective": "hinge"},
    "WGAN-GP (gradient penalty)": {"objective": "wgan-gp"},
}
samples = {}
for name, options in settings.items():
    model = pyrogen.GAN(2, **options)
    pyrogen.fit(model, x, steps=STEPS, seed=0, progress=False)
    samples[name] = model.sample(DRAWS)
    found = mode_coverage(samples[name], centres, sd)
    print(f"{name:32s} modes {found.modes}/{found.total}  high quality {found.high_quality:.2f}")

fig, axes = plt.subplots(1, len(samples) + 1, figsize=(3 * (len(samples) + 1), 3))
for ax, (name, draw) in zip(axes, [("data", held_out), *samples.items()], strict=True):
    ax.scatter(draw[:, 0], draw[:, 1], s=2, alpha=0.5)
    ax.set_title(name, fontsize=8)
    ax.set_xlim(-3, 3)
    ax.set_ylim(-3, 3)
fig.tight_layout()

# %%
# Judging samples without a likelihood
# ------------------------------------
# A GAN reports no nats. Two-sample tests compare its draws with held-out data: the kernel
# MMD (0 for one distribution) and the leave-one-out 1-nearest-neighbour accuracy (1/2
# when the two sets cannot be told apart), each with a permutation p-value. They apply to
# every family's samples, so a mixture fitted by the PPL is a yardstick.

mixture = pyrogen.GaussianMixture(8)
pyrogen.fit(mixture, x, steps=MIXTURE_STEPS, seed=0, progress=False)
candidates = {**samples, "Gaussian mixture (K = 8)": mixture.sample(DRAWS)}
for name, draw in candidates.items():
    mmd = mmd_test(draw, held_out, permutations=100)
    nearest = nearest_neighbour_test(draw, held_out, permutations=100)
    print(f"{name:32s} MMD^2 {mmd.statistic:8.4f}   1-NN accuracy {nearest.statistic:.3f}")

# %%
# Digits on demand: a conditional GAN on MNIST
# --------------------------------------------
# With ``num_classes=10`` both networks see the one-hot label: the generator draws
# x = G(z, y) and the discriminator judges pairs (x, y). MNIST comes from
# ``$PYROGEN_DATA/mnist`` (``PYROGEN_DATA`` defaults to ``../shared/data`` beside the
# repository). Grey levels in [0, 1] are modelled as they are (``standardize=False``: a
# border pixel that is nearly always 0 would otherwise be scaled up by its tiny deviation),
# with MLP networks (fast on a CPU), and without the R1 penalty (``r1=0``), as the figures
# of the :doc:`GAN page <../gan>` were measured.

HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
MNIST_DIR = Path(os.environ.get("PYROGEN_DATA", HERE.parent.parent / "shared" / "data")) / "mnist"
train_images, train_labels = pyrogen.data.mnist(MNIST_DIR, "train")
test_images, test_labels = pyrogen.data.mnist(MNIST_DIR, "test")
digits, digit_labels = train_images[:DIGIT_ROWS].flatten(1), train_labels[:DIGIT_ROWS]

conditional = pyrogen.GAN(
    784, latent_dim=32, hidden=(512, 512), num_classes=10, standardize=False, r1=0.0
)
pyrogen.fit(conditional, digits, digit_labels, steps=DIGIT_STEPS, batch_size=64, seed=0,
            progress=False)  # fmt: skip
wanted = torch.arange(10).repeat_interleave(10)
torch.manual_seed(0)
fig, ax = plt.subplots(figsize=(5, 5))
grid = conditional.sample(100, wanted).clamp(0, 1).reshape(10, 10, 28, 28)
ax.imshow(grid.permute(0, 2, 1, 3).reshape(280, 280), cmap="gray")
ax.set_axis_off()
ax.set_title("row k: digits drawn for label k", fontsize=9)

# %%
# Are the digits recognised? An independent judge
# ------------------------------------------------
# A small classifier (an MLP), trained on the same training images but never on the
# GAN's, judges the draws: how often is a digit drawn for label k classified as k? Its
# last hidden layer also gives a Fréchet distance between draws and held-out test images
# (:func:`~pyrogen.diagnostics.feature_classifier.classifier_frechet_distance`), the
# closed form of the FID in *this* classifier's features -- **not** the Inception FID,
# so only comparable between models judged by the same classifier.

judge = train_feature_classifier(
    digits, digit_labels, kind="mlp", hidden=(256, 128), steps=CLASSIFIER_STEPS, seed=1
)
test = (test_images if not SMOKE else test_images[:500]).flatten(1)
test_y = test_labels[: len(test)]
accuracy = classifier_accuracy(judge, test, test_y)
print(f"the judge's accuracy on {len(test)} test images: {accuracy:.3f}")
torch.manual_seed(1)
asked = test_y  # one draw per test image, for its label: the same class balance
drawn = conditional.sample(len(asked), asked).clamp(0, 1)
print(f"digits drawn for label k recognised as k: {classifier_accuracy(judge, drawn, asked):.3f}")
half = len(test) // 2  # real against real: the distance's floor at this sample size
floor = classifier_frechet_distance(judge, test[:half], test[half:])
distance = classifier_frechet_distance(judge, drawn[:half], test[half:])
print(f"Fréchet distance in the judge's features: draws {distance:.2f}, test halves {floor:.2f}")

# %%
# Flow-GAN: sample quality against log-likelihood
# -----------------------------------------------
# :class:`pyrogen.FlowGAN` (Grover et al. 2018) puts the same adversarial objective on a
# normalizing-flow generator, so the exact log-likelihood of held-out data can be
# measured, and mixes it with maximum likelihood: the generator minimizes
# ``adversarial + lambda * (-log p(x))``. ``adversarial_weight=0`` is plain maximum
# likelihood. On the ring (1,500 steps, without the R1 penalty, ``r1=0``, measured when
# this was written): the adversarial objective alone gives the largest share of samples
# near a mode (0.17) but a held-out log-likelihood of -8.4 nats, far below the other
# settings (-0.6 to 0.0 nats); a weight on the likelihood buys those nats back, at some
# cost in sample quality (0.07 to 0.14).

flow_settings = {
    "adversarial (lambda = 0)": {},
    "lambda = 0.1": {"likelihood_weight": 0.1},
    "lambda = 1": {"likelihood_weight": 1.0},
    "maximum likelihood": {"likelihood_weight": 1.0, "adversarial_weight": 0.0},
}
flow_draws = {}
for name, options in flow_settings.items():
    flow_gan = pyrogen.FlowGAN(2, transforms=6, hidden=(64, 64), r1=0.0, **options)
    pyrogen.fit(flow_gan, x, steps=FLOW_STEPS, seed=0, progress=False)
    nats = flow_gan.log_prob(held_out).mean()
    torch.manual_seed(2)
    flow_draws[name] = flow_gan.sample(DRAWS)
    found = mode_coverage(flow_draws[name], centres, sd)
    print(
        f"{name:26s} held-out log p(x) {nats:8.2f} nats   modes {found.modes}/{found.total}"
        f"   high quality {found.high_quality:.2f}"
    )

fig, axes = plt.subplots(1, len(flow_draws), figsize=(3 * len(flow_draws), 3))
for ax, (name, draw) in zip(axes, flow_draws.items(), strict=True):
    ax.scatter(draw[:, 0], draw[:, 1], s=2, alpha=0.5)
    ax.set_title(name, fontsize=8)
    ax.set_xlim(-3, 3)
    ax.set_ylim(-3, 3)
fig.tight_layout()

# %%
# What to take away
# -----------------
# * The generator is the generative program: ``Predictive``, ``poutine.condition`` and the
#   run reports work on it as on every family.
# * Training is the adversarial objective, taken in turns inside the same
#   ``pyrogen.fit`` loop (``GAN.players``): two time scales, R1 (on by default) and the
#   moving average of the generator are the stabilizers that matter on the ring.
# * Without a likelihood, samples are judged by mode coverage and two-sample tests; a
#   family that has a likelihood can be judged the same way, beside its nats.
# * A conditional GAN draws digits on demand; a classifier trained on the data is an
#   independent judge of them, and its features give a Fréchet distance (not the
#   Inception FID).
# * Flow-GAN measures what a GAN gives up: the exact log-likelihood of the same adversarial
#   generator, and how a weight on maximum likelihood buys nats back.
