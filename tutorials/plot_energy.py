"""
Energy-based models in a PPL
============================

An energy-based model is p(x) = exp(-E(x)) / Z. :class:`pyrogen.EnergyDensity` writes it as
a Pyro model (a flat site weighted by ``pyro.factor(-E(x))``), so Pyro's NUTS samples it
unchanged. This tutorial fits one by denoising score matching to a 2-D mixture of
Gaussians, draws from it by MALA and by NUTS, computes log Z by quadrature and by annealed
importance sampling, and compares its exact nats with a flow's on the same data. It then
sets the three training objectives side by side on those data, in exact nats beside a
Gaussian mixture and the flow. Last, it fits one to MNIST, draws digits by Langevin dynamics
and reports bits per dimension with log Z by AIS, with its error bar. The
:doc:`energy page <../energy>` documents the family.
"""

# %%
# Setup
# -----
# ``PYROGEN_SMOKE=1`` (set by the test suite) trains for a handful of steps, so the numbers
# and pictures are then those of untrained models.

import math
import os
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from pyro.infer import MCMC, NUTS

import pyrogen
from pyrogen.diagnostics import plot_energy_landscape, plot_image_grid

SMOKE = os.environ.get("PYROGEN_SMOKE") == "1"
STEPS = 10 if SMOKE else 2000
HIDDEN = (16,) if SMOKE else (128, 128)
DRAWS = 50 if SMOKE else 1000
NUTS_DRAWS, NUTS_WARMUP = (20, 20) if SMOKE else (500, 300)
MNIST_TRAIN, MNIST_TEST = (200, 50) if SMOKE else (5000, 1000)
MNIST_STEPS = 5 if SMOKE else 600
MNIST_HIDDEN = (32,) if SMOKE else (256,)
LANGEVIN_STEPS = 10 if SMOKE else 300
AIS_CHAINS, AIS_STEPS = (8, 10) if SMOKE else (100, 300)
# Under smoke, a small replay buffer and short chains keep contrastive divergence cheap.
SMOKE_PCD = {"buffer_size": 64, "langevin_steps": 2} if SMOKE else {}
torch.manual_seed(0)

# %%
# Data: three Gaussians on a ring
# -------------------------------
centres = torch.tensor([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]])
rows = 600
x = centres[torch.randint(3, (rows,))] + 0.4 * torch.randn(rows, 2)
train, test = x[:500], x[500:]

# %%
# Train by denoising score matching
# ---------------------------------
ebm = pyrogen.EnergyDensity(2, hidden=HIDDEN)
pyrogen.fit(ebm, train, steps=STEPS, seed=0, progress=False)

# %%
# The energy landscape, and samples by MALA and by NUTS
# -----------------------------------------------------
grid = torch.linspace(-4, 4, 100)
points = torch.cartesian_prod(grid, grid)
with torch.no_grad():
    energy = ebm.energy_of(points).reshape(100, 100).T
mala_draws = ebm.sample(DRAWS, method="mala")
mcmc = MCMC(NUTS(ebm.model), num_samples=NUTS_DRAWS, warmup_steps=NUTS_WARMUP)
mcmc.run(None)
nuts_draws = mcmc.get_samples()["obs"]
fig, axes = plt.subplots(1, 3, figsize=(12, 4), sharex=True, sharey=True)
axes[0].contourf(grid, grid, energy, levels=30)
axes[0].set_title("energy E(x)")
for ax, draws, title in ((axes[1], mala_draws, "MALA"), (axes[2], nuts_draws, "NUTS")):
    ax.scatter(*train.T, s=2, c="grey", alpha=0.4)
    ax.scatter(*draws.T, s=3)
    ax.set_title(f"{title} draws")
plt.show()

# %%
# log Z by quadrature and by AIS, and exact nats beside a flow
# ------------------------------------------------------------
# Quadrature is exact to its stated error in 2-D; AIS is a stochastic lower bound of log Z
# with its standard error (so a log-density built on it is an over-estimate in expectation).
quadrature = ebm.log_partition()
ais = ebm.log_partition("ais", chains=50 if SMOKE else 500)
print(f"log Z: quadrature {quadrature.log_z:.4f} (error {quadrature.error:.1g}), "
      f"AIS {ais.log_z:.4f} +- {ais.error:.4f}")  # fmt: skip
flow = pyrogen.FlowDensity(2, transforms=2 if SMOKE else 5, hidden=HIDDEN)
pyrogen.fit(flow, train, steps=STEPS, seed=0, progress=False)
print(f"held-out nats per row: energy {ebm.log_prob(test).mean():.3f}, "
      f"flow {flow.log_prob(test).mean():.3f}")  # fmt: skip

# %%
# The three objectives side by side, in exact nats
# ------------------------------------------------
# The same network and step budget, trained by each objective on the same rows (the
# denoising score matching model is the one above). Each estimates something different:
# denoising score matching fits the score of the data blurred by noise of sd 0.1
# standardized units, so its density is slightly too wide and never sees log Z; persistent
# contrastive divergence follows the log-likelihood's gradient with Langevin negatives, so
# it is as good as its short chains mix between the three modes; noise-contrastive
# estimation tells the rows from Gaussian noise and learns log Z as a parameter, and learns
# little where that noise seldom goes. None of the losses is a log-likelihood, but in 2-D
# quadrature gives log Z to its stated error, so all three are scored in the same exact
# held-out nats as the Gaussian mixture and the flow, beside the density that drew the
# rows; the gaps between the rows of the table are what each objective misses. The numbers
# printed are those of the run that built this page; each landscape's colours span the 12
# nats below its own peak. One full run (2000 steps each; the whole 2-D part took 380 s
# with one thread on a shared 2-core machine) gave, in held-out nats per row: dsm -2.283,
# pcd -2.177, nce -2.138, the mixture -2.148, the flow -2.540 and the true density -2.099,
# with NCE's learned log Z at 0.046 against 0.296 by quadrature. Denoising score matching
# is last here not for its blur (under 0.01 nats per row at these modes' width) but for the
# three modes' relative masses, which its loss barely sees (see the energy page): its
# density put 0.22, 0.20 and 0.58 of its mass by the three centres, and the true density
# with those masses scores -2.255, most of the gap.
ebms = {"dsm": ebm}
for objective in ("pcd", "nce"):
    options = {"objective": objective, "hidden": HIDDEN, **SMOKE_PCD}
    ebms[objective] = pyrogen.EnergyDensity(2, **options)
    pyrogen.fit(ebms[objective], train, steps=STEPS, seed=0, progress=False)
fig, axes = plt.subplots(1, 3, figsize=(15, 4), sharex=True, sharey=True, layout="constrained")
for ax, (objective, model) in zip(axes, ebms.items(), strict=True):
    plot_energy_landscape(model, train, ax, points=40 if SMOKE else 120)
    ax.set_title(f'"{objective}": log p(x), log Z by quadrature')
for ax in axes[1:]:
    ax.set_ylabel("")
plt.show()

gmm = pyrogen.GaussianMixture(3)
pyrogen.fit(gmm, train, steps=10 if SMOKE else None, seed=0, progress=False)
# The data's own density: an equal mixture of N(centre, 0.4^2 I), the ceiling on average.
components = torch.distributions.Normal(centres, 0.4).log_prob(test[:, None]).sum(-1)
true_log_p = components.logsumexp(-1) - math.log(3)
scores = {f"energy, {objective}": model.log_prob(test) for objective, model in ebms.items()}
scores["Gaussian mixture, 3 components"] = gmm.log_prob(test)
scores["flow"] = flow.log_prob(test)
scores["the true density"] = true_log_p
print("held-out log-likelihood per row (nats), exact")
for name, log_p in scores.items():
    print(f"{name:31s} {log_p.mean():8.3f}")
print(
    f"NCE's learned log Z {ebms['nce'].log_normalizer.item():.3f}, "
    f"quadrature {ebms['nce'].log_partition().log_z:.3f}"
)

# %%
# MNIST: Langevin samples and bits per dimension by AIS
# -----------------------------------------------------
# MNIST is read from the IDX files in ``$PYROGEN_DATA/mnist``; ``PYROGEN_DATA`` defaults to
# ``../shared/data`` next to the repository (random 8-bit images stand in when it is not
# there). An energy model is a density on continuous values, so the 8-bit images (levels
# k / 255) are dequantized once, y = (k + u) / 256 with u ~ U(0, 1) in each pixel: a point
# of the image's bin, a cube of volume 256^-D. Then
# log P(x) >= E_u[log p(y)] - D log 256, and bits/dim = -(that) / (D ln 2).
#
# With D = 784 there is no grid: log Z is an AIS estimate with its standard error, below
# log Z in expectation, so the log-densities are over-estimates in expectation and the
# bits/dim an under-estimate. The error bar adds the AIS standard error (shared by every
# image) to the standard error of the mean over the test images.

TUTORIAL_DIR = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
DATA_ROOT = Path(os.environ.get("PYROGEN_DATA", TUTORIAL_DIR.parent.parent / "shared" / "data"))
try:
    train_images, _ = pyrogen.data.mnist(DATA_ROOT / "mnist", "train")
    test_images, _ = pyrogen.data.mnist(DATA_ROOT / "mnist", "test")
    DATASET = "MNIST"
except FileNotFoundError:
    print(f"MNIST not found in {DATA_ROOT / 'mnist'}: using random 8-bit images instead")
    levels = torch.randint(256, (MNIST_TRAIN + MNIST_TEST, 28, 28), dtype=torch.uint8)
    train_images, test_images = (levels.float() / 255).split([MNIST_TRAIN, MNIST_TEST])
    DATASET = "random images"
D = 28 * 28


def dequantize(images: torch.Tensor) -> torch.Tensor:
    """(N, 28, 28) 8-bit levels k / 255 -> (N, 784) points (k + u) / 256 of their bins."""
    levels = (images.reshape(len(images), D) * 255).round()
    return (levels + torch.rand(levels.shape)) / 256


y_train, y_test = dequantize(train_images[:MNIST_TRAIN]), dequantize(test_images[:MNIST_TEST])
mnist_ebm = pyrogen.EnergyDensity(D, hidden=MNIST_HIDDEN)
pyrogen.fit(mnist_ebm, y_train, steps=MNIST_STEPS, seed=0, progress=False)

# Unadjusted Langevin from the base N(0, I) (standardized units), 16 chains. After this
# short run (600 steps of one hidden layer, a few minutes on a CPU) the draws are blobs of
# ink where digits are written rather than digits, and the test bits/dim come out near 6
# (6.01 +- 0.06 in one run): a weak density model, with its number's error bar.
digits = mnist_ebm.sample(16, method="langevin", steps=LANGEVIN_STEPS, step_size=0.01)
fig, ax = plt.subplots(figsize=(4, 4))
plot_image_grid(digits.clamp(0, 1), ax, shape=(28, 28), title=f"Langevin draws ({DATASET})")
plt.show()

estimate = mnist_ebm.log_partition("ais", chains=AIS_CHAINS, steps=AIS_STEPS)
log_p = mnist_ebm.log_prob(y_test, log_partition=estimate) - D * math.log(256)
bits = -log_p / (D * math.log(2))
error = math.hypot(bits.std().item() / math.sqrt(len(bits)), estimate.error / (D * math.log(2)))
print(estimate.description)
print(
    f"{DATASET} test bits/dim: {bits.mean():.3f} +- {error:.3f} (an under-estimate in expectation)"
)
