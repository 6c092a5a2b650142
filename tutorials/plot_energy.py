"""
Energy-based models in a PPL
============================

An energy-based model is p(x) = exp(-E(x)) / Z. :class:`pyrogen.EnergyDensity` writes it as
a Pyro model (a flat site weighted by ``pyro.factor(-E(x))``), so Pyro's NUTS samples it
unchanged. This tutorial fits one by denoising score matching to a 2-D mixture of
Gaussians, draws from it by MALA and by NUTS, computes log Z by quadrature and by annealed
importance sampling, and compares its exact nats with a flow's on the same data. The
:doc:`energy page <../energy>` documents the family.
"""

# %%
# Setup
# -----
# ``PYROGEN_SMOKE=1`` (set by the test suite) trains for a handful of steps, so the numbers
# and pictures are then those of untrained models.

import os

import matplotlib.pyplot as plt
import torch
from pyro.infer import MCMC, NUTS

import pyrogen

SMOKE = os.environ.get("PYROGEN_SMOKE") == "1"
STEPS = 10 if SMOKE else 2000
HIDDEN = (16,) if SMOKE else (128, 128)
DRAWS = 50 if SMOKE else 1000
NUTS_DRAWS, NUTS_WARMUP = (20, 20) if SMOKE else (500, 300)
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
