"""
Autoregressive models: the chain rule as a Pyro model
=====================================================

An autoregressive model writes the density of an image as a product of conditionals,
p(x) = prod_i p(x_i | x_<i), and computes all of them in one pass of a network that is
*masked* so that output i never sees the values from i on. The likelihood is exact; there
is no latent variable and no bound. :class:`pyrogen.AutoregressiveDensity` is such a model
written as a Pyro model with one observed site and an empty guide, so :func:`pyrogen.fit`
trains it by maximum likelihood through the same SVI machinery as every other family.

This tutorial, on binarized MNIST:

* draws MADE's masks and checks the autoregressive property by gradients, and shows that a
  gated PixelCNN has no blind spot;
* trains MADE with one ordering and with an ensemble of orderings, and a PixelCNN;
* reports exact test NLL and bits/dim, beside a VAE's importance-weighted bound, a flow's
  dequantization bound and a diffusion model's ELBO on the same data;
* draws samples and measures what sampling costs (one network pass per pixel).

Every number is in nats per example unless it says bits. The
:doc:`autoregressive page <../autoregressive>` documents the family in full.
"""

# %%
# Setup
# -----
# ``PYROGEN_SMOKE=1`` (set by the test suite and CI) trains every model for a handful of
# steps on a few hundred images, so the script finishes in seconds; its numbers and
# pictures are then those of untrained models. Without it the tutorial takes a few minutes
# on a CPU, most of it training the PixelCNN.

import math
import os
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch

import pyrogen
from pyrogen.nn import MADE, GatedPixelCNN

SMOKE = os.environ.get("PYROGEN_SMOKE") == "1"

TRAIN_ROWS = 300 if SMOKE else 20_000
TEST_ROWS = 100 if SMOKE else 2_000
MADE_STEPS = 5 if SMOKE else 3_000
MADE_HIDDEN = (32,) if SMOKE else (500,)
NUM_MASKS = 4 if SMOKE else 8
PIXELCNN_STEPS = 3 if SMOKE else 600
PIXELCNN_CHANNELS = 8 if SMOKE else 32
PIXELCNN_LAYERS = 2 if SMOKE else 5
VAE_STEPS = 5 if SMOKE else 3_000
OTHER_STEPS = 5 if SMOKE else 3_000  # the flow and the diffusion model
OTHER_HIDDEN = (64,) if SMOKE else (512,)
DIFFUSION_STEPS = 20 if SMOKE else 200  # T, the diffusion's levels
SAMPLES = 4 if SMOKE else 16
torch.manual_seed(0)

# %%
# Binarized MNIST is read from ``$PYROGEN_DATA/binarized_mnist`` (``PYROGEN_DATA`` defaults
# to ``../shared/data`` next to the repository): the fixed binarization of Larochelle and
# Murray, the data of the published MADE and PixelCNN figures. Without it, random blobs
# thresholded to 0/1 keep the tutorial running end to end.

TUTORIAL_DIR = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
DATA_ROOT = Path(os.environ.get("PYROGEN_DATA", TUTORIAL_DIR.parent.parent / "shared" / "data"))


def binary_blobs(n: int, generator: torch.Generator) -> torch.Tensor:
    """n flattened 28 x 28 binary images of a disc at a random place."""
    centre = 8 + 12 * torch.rand(n, 2, 1, 1, generator=generator)
    radius = 3 + 4 * torch.rand(n, 1, 1, generator=generator)
    rows, cols = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    inside = (rows - centre[:, 0]) ** 2 + (cols - centre[:, 1]) ** 2 < radius**2
    return inside.float().reshape(n, 784)


try:
    train = pyrogen.data.binarized_mnist(DATA_ROOT / "binarized_mnist", "train")[:TRAIN_ROWS]
    test = pyrogen.data.binarized_mnist(DATA_ROOT / "binarized_mnist", "test")[:TEST_ROWS]
    DATASET = "binarized MNIST"
except FileNotFoundError:
    print(f"binarized MNIST not found in {DATA_ROOT}: using binary discs instead")
    generator = torch.Generator().manual_seed(1)
    train, test = binary_blobs(TRAIN_ROWS, generator), binary_blobs(TEST_ROWS, generator)
    DATASET = "binary discs"
print(f"{DATASET}: {len(train)} training and {len(test)} test images of 784 binary pixels")

# %%
# The masks
# ---------
# MADE gives every input a *degree* (its position in an ordering) and every hidden unit
# one too; a hidden unit sees the inputs of degree up to its own, and output i the hidden
# units of degree below its own. The product of the masks says which inputs each output
# can reach: a strictly triangular pattern in the ordering's coordinates. Below, a MADE on
# 8 values with two masks: the natural order and a random one. The second row is the
# same thing measured by gradients: output i has a non-zero gradient only for inputs that
# come before it.

tiny = MADE(8, params=1, hidden=(16,), num_masks=2)
fig, axes = plt.subplots(2, 2, figsize=(6, 6))
for mask in range(2):
    hidden, output, direct = tiny.masks(mask)
    reach = ((output @ hidden) + direct).clamp(max=1)
    axes[0, mask].imshow(reach.detach(), cmap="Greys")
    axes[0, mask].set_title(f"mask {mask}: ordering {tiny.ordering(mask).tolist()}", fontsize=8)
    x = torch.rand(16, 8, requires_grad=True)
    out = tiny(x, mask=mask)[..., 0]
    rows = [torch.autograd.grad(out[:, i].sum(), x, retain_graph=True)[0] for i in range(8)]
    grads = torch.stack([row.abs().sum(0) for row in rows])
    axes[1, mask].imshow(grads > 0, cmap="Greys")
    axes[1, mask].set_title("measured by gradients", fontsize=8)
for ax in axes.flat:
    ax.set_xlabel("input")
    ax.set_ylabel("output")
fig.tight_layout()

# %%
# A PixelCNN's receptive field: the gradient of one output pixel with respect to the input
# image. A plain stack of masked 3 x 3 convolutions misses a wedge above and to the right
# (its *blind spot*); the gated PixelCNN's vertical stack sees every row above, on both
# sides, and its horizontal stack the pixels to the left.

net = GatedPixelCNN(1, params=1, hidden_channels=16, layers=4, kernel_size=3)
image = torch.rand(32, 1, 12, 12, requires_grad=True)
(grad,) = torch.autograd.grad(net(image)[:, 0, 6, 6, 0].sum(), image)
field = (grad.abs().sum(0)[0] > 0).float()
field[6, 6] = 0.5  # the pixel predicted
fig, ax = plt.subplots(figsize=(3, 3))
ax.imshow(field, cmap="Greys")
ax.set_title("what pixel (6, 6) sees", fontsize=9)
ax.set_axis_off()

# %%
# Training
# --------
# Three models, each trained by :func:`pyrogen.fit` on the same images: MADE with its one
# natural ordering, MADE with an ensemble of orderings (one drawn per batch:
# order-agnostic training), and a gated PixelCNN on the images as (1, 28, 28).


def train_model(model: pyrogen.models.GenerativeModel, x: torch.Tensor, steps: int) -> float:
    started = time.perf_counter()
    pyrogen.fit(model, x, steps=steps, batch_size=100, lr=1e-3, progress=False, seed=0)
    return time.perf_counter() - started


made = pyrogen.AutoregressiveDensity((784,), "made", hidden=MADE_HIDDEN)
ensemble = pyrogen.AutoregressiveDensity((784,), "made", hidden=MADE_HIDDEN, num_masks=NUM_MASKS)
pixelcnn = pyrogen.AutoregressiveDensity(
    (1, 28, 28), "pixelcnn", channels=PIXELCNN_CHANNELS, layers=PIXELCNN_LAYERS
)
seconds = {
    "MADE, 1 ordering": train_model(made, train, MADE_STEPS),
    f"MADE, {NUM_MASKS} orderings": train_model(ensemble, train, MADE_STEPS),
    "PixelCNN": train_model(pixelcnn, train.reshape(-1, 1, 28, 28), PIXELCNN_STEPS),
}

# %%
# Exact test NLL
# --------------
# ``log_prob`` is exact: the sum of the 784 conditionals' log probabilities. For the
# ensemble it is the log of the *mean* of the orderings' probabilities, which is again a
# normalized distribution; ``ordering_log_probs`` gives each ordering's value, so we can
# watch the NLL fall as orderings are added. A VAE trained on the same images reports an
# importance-weighted *bound* (below its log-likelihood in expectation), for comparison.

nll = {
    "MADE, 1 ordering": -made.log_prob(test).mean().item(),
    f"MADE, {NUM_MASKS} orderings": -ensemble.log_prob(test).mean().item(),
    "PixelCNN": -pixelcnn.log_prob(test.reshape(-1, 1, 28, 28)).mean().item(),
}
vae = pyrogen.VAE((784,), latent_dim=32)
seconds["VAE (IWAE bound, K = 100)"] = train_model(vae, train, VAE_STEPS)
nll["VAE (IWAE bound, K = 100)"] = -vae.log_likelihood(test, num_samples=100).mean().item()
# The other explicit-density families on the same images, each with its own number: the
# flow's dequantization bound (a lower bound on the binary data's log-likelihood) and the
# diffusion model's ELBO.
others = {
    "flow (dequantization bound)": pyrogen.FlowDensity((784,), dequantize=2, hidden=OTHER_HIDDEN),
    "diffusion (ELBO)": pyrogen.DiffusionVAE(
        (784,), DIFFUSION_STEPS, likelihood="bernoulli", hidden=OTHER_HIDDEN
    ),
}
for name, model in others.items():
    seconds[name] = train_model(model, train, OTHER_STEPS)
    nll[name] = -model.log_likelihood(test).mean().item()
for name, value in nll.items():
    bits = value / (784 * math.log(2))
    print(f"{name:30s} {value:8.2f} nats  {bits:.4f} bits/dim  ({seconds[name]:.0f} s training)")

with torch.no_grad():
    orderings = ensemble.ordering_log_probs(test)  # (K, N)
counts = range(1, NUM_MASKS + 1)
by_count = [-(orderings[:k].logsumexp(0) - math.log(k)).mean().item() for k in counts]
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(list(counts), by_count, marker="o")
ax.set_xlabel("orderings in the ensemble")
ax.set_ylabel("test NLL (nats)")
ax.set_title("the order ensemble: log of the mean probability", fontsize=9)
fig.tight_layout()

# %%
# Published figures on the full data, for context: MADE with one hidden layer 88.40 nats
# (one mask) and 86.64 (32 masks); NADE 88.33; PixelCNN 81.30. The models here are trained
# for minutes on a CPU, on part of the training set.
#
# Samples and what they cost
# --------------------------
# Sampling goes pixel by pixel: 784 network passes for a batch of images, whatever the
# network. MADE's pass is one small MLP; PixelCNN's is a stack of convolutions over the
# rows up to the current one. The times below are for one batch of draws on this machine.

fig, axes = plt.subplots(1, 3, figsize=(9, 3.4))
for ax, (name, model) in zip(
    axes, [("MADE, 1 ordering", made), (f"MADE, {NUM_MASKS} orderings", ensemble),
           ("PixelCNN", pixelcnn)], strict=True
):  # fmt: skip
    started = time.perf_counter()
    draws = model.sample(SAMPLES, progress=False).reshape(SAMPLES, 28, 28)
    rate = SAMPLES / (time.perf_counter() - started)
    print(f"{name:28s} {rate:8.1f} images/s")
    columns = int(math.sqrt(SAMPLES))
    grid = draws.reshape(-1, columns, 28, 28).permute(0, 2, 1, 3).reshape(-1, columns * 28)
    ax.imshow(grid, cmap="Greys_r")
    ax.set_title(f"{name}\n{rate:.1f} images/s", fontsize=9)
    ax.set_axis_off()
fig.tight_layout()

# %%
# Takeaways
# ---------
# * The chain rule makes the likelihood exact; a masked network makes it one pass.
# * An ensemble over orderings is a mixture, so it stays a normalized density and its NLL
#   can only improve on the average ordering's; averaging logits would not be a density.
# * The price is sampling: one pass per value, where a VAE or a flow needs one pass per
#   image.
