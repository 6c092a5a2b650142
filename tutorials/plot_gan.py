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
need no likelihood. The :doc:`GAN page <../gan>` documents the family.
"""

# %%
# Setup
# -----
# ``PYROGEN_SMOKE=1`` (set by the test suite) trains for a handful of steps, so the numbers
# and pictures are then those of untrained models.

import os

import matplotlib.pyplot as plt
from pyro.infer import Predictive

import pyrogen
from pyrogen.diagnostics import mmd_test, mode_coverage, nearest_neighbour_test
from pyrogen.diagnostics.sample_tests import ring_of_gaussians

SMOKE = os.environ.get("PYROGEN_SMOKE") == "1"
STEPS = 20 if SMOKE else 6000
MIXTURE_STEPS = 20 if SMOKE else 1000
DRAWS = 200 if SMOKE else 2000

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
# samples (0.989 for exact draws in 2-D).

settings = {
    "nonsaturating, no average": {"ema": None},
    "nonsaturating": {},
    "hinge": {"objective": "hinge"},
    "WGAN-GP": {"objective": "wgan-gp"},
}
samples = {}
for name, options in settings.items():
    model = pyrogen.GAN(2, **options)
    pyrogen.fit(model, x, steps=STEPS, seed=0, progress=False)
    samples[name] = model.sample(DRAWS)
    found = mode_coverage(samples[name], centres, sd)
    print(f"{name:28s} modes {found.modes}/{found.total}  high quality {found.high_quality:.2f}")

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
    print(f"{name:28s} MMD^2 {mmd.statistic:8.4f}   1-NN accuracy {nearest.statistic:.3f}")

# %%
# What to take away
# -----------------
# * The generator is the generative program: ``Predictive``, ``poutine.condition`` and the
#   run reports work on it as on every family.
# * Training is the adversarial objective, taken in turns inside the same
#   ``pyrogen.fit`` loop (``GAN.players``): two time scales, R1 and the moving average of
#   the generator are the stabilizers that matter on the ring.
# * Without a likelihood, samples are judged by mode coverage and two-sample tests; a
#   family that has a likelihood can be judged the same way, beside its nats.
