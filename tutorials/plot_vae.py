"""
Variational autoencoders in Pyro
================================

A variational autoencoder (VAE) is a latent-variable model with a *continuous* latent
:math:`z` per example and a neural network decoder :math:`p_\\theta(x \\mid z)`. Its
posterior is intractable, so it is fitted with an **amortized** guide: an encoder network
that maps each :math:`x` to a Gaussian :math:`q_\\phi(z \\mid x)`. In pyrogen both are plain
Pyro programs, so the ELBO, its KL term and the reparameterization gradient all come from
Pyro itself.

This tutorial trains :class:`pyrogen.VAE` on binarized MNIST and shows:

* the model and the guide, as code;
* the ELBO as reconstruction minus KL, with the KL analytic (``TraceMeanField_ELBO``) or
  estimated by Monte Carlo (``Trace_ELBO``), and why the reparameterization matters;
* training with :func:`pyrogen.fit` on minibatches;
* the importance-weighted bound :math:`L_K` against the ELBO (the gap), and bits/dim;
* samples, reconstructions and a 2-D latent space coloured by digit;
* a short beta-VAE sweep drawn as rate (KL) against distortion.

Every number is in nats per example unless it says otherwise, and the text says which
bound each one is.
"""

# %%
# Setup
# -----
# ``PYROGEN_SMOKE=1`` (set by the test suite and CI) trains on 1,000 images for one epoch
# and uses few importance samples, so the script finishes in well under a minute; the
# numbers and pictures are then those of a barely trained model. Without it the tutorial uses
# all 60,000 training images and takes several minutes.

import inspect
import math
import os
from pathlib import Path

import matplotlib.pyplot as plt
import pyro
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

import pyrogen
from pyrogen.models.vae import LATENT

SMOKE = os.environ.get("PYROGEN_SMOKE") == "1"

NUM_TRAIN = 1_000 if SMOKE else 60_000
NUM_TEST = 200 if SMOKE else 1_000
EPOCHS = 1 if SMOKE else 10  # the main model and the 2-D one
SWEEP_EPOCHS = 1 if SMOKE else 5  # each model of the beta sweep
NUM_SAMPLES = 10 if SMOKE else 1_000  # K, importance samples per test image
BETAS = (0.5, 2.0) if SMOKE else (0.25, 0.5, 1.0, 2.0, 4.0)
ELBO_REPEATS = 20 if SMOKE else 200
BATCH_SIZE = 128
LATENT_DIM = 50
HIDDEN = (400,)

pyro.clear_param_store()
pyro.set_rng_seed(0)

# %%
# The data
# --------
# MNIST is read from the IDX files in ``$PYROGEN_DATA/mnist``; ``PYROGEN_DATA`` defaults to
# ``../shared/data`` next to the repository. (sphinx-gallery runs this script from
# ``tutorials/`` without ``__file__``; the test suite runs it as a file from an empty
# folder, so the path is resolved from the script where it can be.)
#
# If MNIST is not there, the tutorial makes a small synthetic stand-in so it still runs
# end to end: grey 28 x 28 images of a bar through the centre, whose angle is set by a
# "digit" label 0-9. Everything below works the same on it, but the pictures are of bars.

TUTORIAL_DIR = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
DATA_ROOT = Path(os.environ.get("PYROGEN_DATA", TUTORIAL_DIR.parent.parent / "shared" / "data"))
MNIST_DIR = DATA_ROOT / "mnist"
IMAGE_SIZE = 28
DATA_SHAPE = (IMAGE_SIZE, IMAGE_SIZE)


def synthetic_bars(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n grey images (n, 28, 28) of a bar whose angle is label * 18 degrees, and the labels."""
    labels = torch.randint(10, (n,), generator=generator)
    angle = labels * math.pi / 10 + 0.05 * torch.randn(n, generator=generator)
    shift = 1.5 * torch.randn(n, 2, 1, 1, generator=generator)
    coords = torch.arange(IMAGE_SIZE) - (IMAGE_SIZE - 1) / 2
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")
    rows, cols = rows - shift[:, 0], cols - shift[:, 1]
    sin, cos = angle.sin()[:, None, None], angle.cos()[:, None, None]
    across = (rows * cos - cols * sin).abs()  # distance from the bar's centre line
    along = (rows * sin + cols * cos).abs()
    images = torch.sigmoid(3 * (1.5 - across)) * torch.sigmoid(3 * (9 - along))
    return images, labels


try:
    train_images, train_labels = pyrogen.data.mnist(MNIST_DIR, "train")
    test_images, test_labels = pyrogen.data.mnist(MNIST_DIR, "test")
    DATASET = "MNIST"
except FileNotFoundError:
    print(f"MNIST not found in {MNIST_DIR}: using synthetic bar images instead")
    generator = torch.Generator().manual_seed(1)
    train_images, train_labels = synthetic_bars(NUM_TRAIN, generator)
    test_images, test_labels = synthetic_bars(NUM_TEST, generator)
    DATASET = "synthetic bars"

# %%
# The pixels are grey levels in [0, 1]. A Bernoulli likelihood is a density for *binary*
# pixels, so the images are binarized: each pixel is drawn once from a Bernoulli with its
# grey level as probability (stochastic binarization), with a fixed seed. Doing it once
# gives a fixed data set, so the log-likelihoods below are of well-defined data.

binarizer = torch.Generator().manual_seed(0)
x_train = torch.bernoulli(train_images[:NUM_TRAIN], generator=binarizer)
x_test = torch.bernoulli(test_images[:NUM_TEST], generator=binarizer)
y_test = test_labels[:NUM_TEST]
print(f"{DATASET}: train {tuple(x_train.shape)}, test {tuple(x_test.shape)}")


def show_grid(images: torch.Tensor, ncols: int, title: str, ax: plt.Axes | None = None) -> None:
    """Tile images (n, 28, 28) into a grid with ncols columns."""
    images = images.detach().cpu()
    nrows = math.ceil(len(images) / ncols)
    canvas = torch.ones(nrows * IMAGE_SIZE, ncols * IMAGE_SIZE)
    for i, image in enumerate(images):
        row, col = divmod(i, ncols)
        canvas[
            row * IMAGE_SIZE : (row + 1) * IMAGE_SIZE, col * IMAGE_SIZE : (col + 1) * IMAGE_SIZE
        ] = image
    if ax is None:
        _, ax = plt.subplots(figsize=(ncols * 0.6, nrows * 0.6))
    ax.imshow(canvas, cmap="gray_r", vmin=0, vmax=1)
    ax.set_title(title)
    ax.axis("off")


fig, axes = plt.subplots(1, 2, figsize=(8, 2.2))
show_grid(train_images[:16], 8, "grey levels", ax=axes[0])
show_grid(x_train[:16], 8, "binarized (the data)", ax=axes[1])

# %%
# The model and the guide
# -----------------------
# The generative model draws a latent code from a standard Normal prior and decodes it
# into one Bernoulli logit per pixel:
#
# .. math::
#
#    z_n \sim \mathcal{N}(0, I_L), \qquad
#    x_n \mid z_n \sim \mathrm{Bernoulli}\big(\mathrm{logits} = \mathrm{decoder}_\theta(z_n)\big).
#
# Here is :meth:`pyrogen.VAE.model`, verbatim. The ``poutine.scale`` around ``z`` is the
# beta of a beta-VAE (1 by default, see the sweep at the end); the data plate scales a
# minibatch to stand for the whole data set.

vae = pyrogen.VAE(DATA_SHAPE, latent_dim=LATENT_DIM, hidden=HIDDEN)
print(inspect.getsource(pyrogen.VAE.model))

# %%
# The guide is the encoder: a network that outputs a mean and a standard deviation for
# every example, :math:`q_\phi(z_n \mid x_n) = \mathcal{N}(\mu_\phi(x_n),
# \mathrm{diag}\,\sigma_\phi(x_n)^2)`. It is *amortized*: one set of weights :math:`\phi`
# serves every image, instead of free variational parameters per image. It samples the
# same site name, ``z``, as the model.

print(inspect.getsource(pyrogen.VAE.guide))
print(vae.encoder)
print(vae.decoder)

# %%
# Running the guide, then the model with ``z`` replayed from the guide, is exactly what
# the ELBO does. The trace shows the shapes: a batch of 5 images gives ``z`` of shape
# (5, 50) in the data plate, and one Bernoulli over the 28 x 28 pixels of each image (an
# event of shape (28, 28)).

batch = x_train[:5]
guide_trace = poutine.trace(vae.guide).get_trace(batch)
model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(batch)
model_trace.compute_log_prob()
print(model_trace.format_shapes())

# %%
# The ELBO: reconstruction minus KL
# ---------------------------------
# For each example the evidence lower bound is
#
# .. math::
#
#    \mathrm{ELBO}(x) = \underbrace{\mathbb{E}_{q_\phi(z \mid x)}[\log p_\theta(x \mid z)]}
#    _{\text{reconstruction}}
#    - \underbrace{\mathrm{KL}\big(q_\phi(z \mid x) \,\|\, p(z)\big)}_{\text{KL}}
#    = \log p_\theta(x) - \mathrm{KL}\big(q_\phi(z \mid x) \,\|\, p_\theta(z \mid x)\big)
#    \le \log p_\theta(x).
#
# Pyro can compute the KL term two ways:
#
# * ``TraceMeanField_ELBO`` (``vae.loss``, ``objective="mean_field"``, the default) uses the
#   **analytic** KL between the two Normals, because ``z`` is the only latent site and the
#   guide is mean-field;
# * ``Trace_ELBO`` (``objective="elbo"``) estimates it by **Monte Carlo**, as
#   :math:`\log q_\phi(z \mid x) - \log p(z)` at the sampled :math:`z`.
#
# Both are unbiased estimates of the same ELBO; the analytic KL removes part of the noise.
# The reconstruction term is a Monte Carlo estimate either way.
#
# Reparameterization
# ^^^^^^^^^^^^^^^^^^
# To train :math:`\phi` we need the gradient of an expectation under :math:`q_\phi`. The
# guide's Normal is *reparameterizable*: a draw is
# :math:`z = \mu_\phi(x) + \sigma_\phi(x)\,\varepsilon` with
# :math:`\varepsilon \sim \mathcal{N}(0, I)`, a differentiable function of :math:`\phi`, so
# the gradient flows through the sample into the encoder (the "pathwise" gradient). Pyro
# sees ``has_rsample`` on the distribution and uses ``rsample`` automatically; for a
# non-reparameterizable site it would fall back to much noisier score-function gradients.

z_site = guide_trace.nodes[LATENT]
print("guide's z is reparameterized:", z_site["fn"].has_rsample)
print("and differentiable in the encoder's weights:", z_site["value"].requires_grad)

# %%
# Training
# --------
# :func:`pyrogen.fit` runs SVI on ``vae.model``/``vae.guide`` with ``vae.loss`` and Adam,
# on minibatches of 128 images (``VAE.fit_defaults`` has ``batch_size=128`` too). The
# loss it records is the negative ELBO per example of each minibatch, with the analytic
# KL. (Raw ``pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam(...), vae.loss)``
# trains the same model.)

result = pyrogen.fit(vae, x_train, epochs=EPOCHS, batch_size=BATCH_SIZE, seed=0, progress=False)
print(f"{result.steps} steps in {result.time_s:.1f} s")
print(f"final minibatch loss: {result.final_loss:.2f} nats per example (negative ELBO)")

losses = torch.tensor(result.losses)
window = min(50, len(losses))
smoothed = losses.unfold(0, window, 1).mean(-1)
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(losses, alpha=0.3, label="minibatch")
ax.plot(torch.arange(window - 1, len(losses)), smoothed, label=f"mean of {window}")
ax.set_xlabel("step")
ax.set_ylabel("negative ELBO (nats per example)")
ax.set_yscale("log")
ax.legend()

# %%
# Analytic against Monte Carlo KL
# -------------------------------
# Evaluate both Pyro ELBOs many times on the same 100 test images, for the trained model
# and for an untrained one of the same shape. ``loss`` returns the negative ELBO summed
# over the batch, so divide by its size.

batch = x_test[:100]
untrained = pyrogen.VAE(DATA_SHAPE, latent_dim=LATENT_DIM, hidden=HIDDEN)
estimates = {}
for state, model in (("untrained", untrained), ("trained", vae)):
    for kl, elbo in (("analytic KL", TraceMeanField_ELBO()), ("Monte Carlo KL", Trace_ELBO())):
        with torch.no_grad():
            negative = [elbo.loss(model.model, model.guide, batch) for _ in range(ELBO_REPEATS)]
        values = -torch.tensor(negative) / len(batch)
        estimates[state, kl] = values
        print(f"{state:9s} {kl:14s} ELBO {values.mean():8.3f} nats, sd {values.std():.3f}")

fig, axes = plt.subplots(1, 2, figsize=(9, 3))
for ax, state in zip(axes, ("untrained", "trained"), strict=True):
    for kl in ("analytic KL", "Monte Carlo KL"):
        ax.hist(estimates[state, kl], bins=20, alpha=0.6, label=kl)
    ax.set_title(f"{state} model")
    ax.set_xlabel("ELBO estimate (nats per example)")
axes[0].legend()

# %%
# The means agree: both estimate the same ELBO. Which estimate is less noisy depends on
# the guide. The analytic KL removes the KL's sampling noise, which helps when the guide
# is far from the posterior, as for the untrained model. But the Monte Carlo estimate
# :math:`\log p(x, z) - \log q(z \mid x)` would have *zero* variance if :math:`q` were the
# exact posterior (it would equal :math:`\log p(x)` for every :math:`z`): its sampled KL
# partly cancels the noise of the reconstruction term. So for a well-trained guide the
# Monte Carlo version can be the less noisy one, as it is for the trained model in a full
# run. pyrogen's default, ``objective="mean_field"``, is the analytic one;
# ``objective="elbo"`` trains with the Monte Carlo one.

# %%
# The two terms can also be computed directly from the networks, with no Pyro in the loop.
# :meth:`~pyrogen.VAE.encode` gives the guide's mean and standard deviation, and
# ``torch.distributions`` the analytic KL to the prior. :meth:`~pyrogen.VAE.elbo` is the
# ELBO per example (analytic KL, always at beta = 1), so the reconstruction term is
# ``elbo + KL``. The KL is the **rate** (nats the code carries about each image) and minus
# the reconstruction term the **distortion**; the negative ELBO is their sum.


def rate_and_distortion(model: pyrogen.VAE, x: torch.Tensor) -> tuple[float, float]:
    """Mean KL(q(z|x) || p(z)) and mean -E_q[log p(x|z)] over the rows of x, in nats."""
    loc, scale = model.encode(x)
    posterior = torch.distributions.Normal(loc, scale)
    prior = torch.distributions.Normal(torch.zeros_like(loc), torch.ones_like(scale))
    kl = torch.distributions.kl_divergence(posterior, prior).sum(-1)
    elbo = model.elbo(x, num_samples=10)
    # ELBO = reconstruction - KL, so distortion = -reconstruction = -(ELBO + KL).
    return kl.mean().item(), (-elbo - kl).mean().item()


rate, distortion = rate_and_distortion(vae, batch)
print(f"rate (KL):  {rate:8.3f} nats")
print(f"distortion: {distortion:8.3f} nats")
print(f"ELBO = -(rate + distortion) = {-(rate + distortion):8.3f} nats")

# %%
# The importance-weighted bound, and the gap
# ------------------------------------------
# The ELBO is below :math:`\log p_\theta(x)` by the KL from the guide to the true
# posterior. :meth:`~pyrogen.VAE.log_likelihood` tightens it with :math:`K` importance
# samples from the guide (Burda et al., 2016):
#
# .. math::
#
#    L_K(x) = \log \frac1K \sum_{k=1}^K \frac{p_\theta(x, z_k)}{q_\phi(z_k \mid x)},
#    \qquad z_k \sim q_\phi(z \mid x),
#
# with :math:`L_1` an ELBO estimate, :math:`\mathbb{E}[L_K]` increasing in :math:`K` and
# :math:`L_K \to \log p_\theta(x)` as :math:`K \to \infty`. It is still a lower bound in
# expectation, so the gap to the ELBO is a *lower* bound on how loose the ELBO is. Rows and
# samples are processed in chunks, so large test sets and large :math:`K` fit in memory.

torch.manual_seed(0)
elbo_test = vae.elbo(x_test, num_samples=10)
log_likelihood = vae.log_likelihood(x_test, num_samples=NUM_SAMPLES)
gap = log_likelihood - elbo_test
print(f"test images: {len(x_test)}")
print(f"ELBO:                   {elbo_test.mean():8.2f} nats per example")
print(f"L_K, K = {NUM_SAMPLES:<5d}:        {log_likelihood.mean():8.2f} nats per example")
print(f"gap L_K - ELBO:         {gap.mean():8.2f} nats (sd over images {gap.std():.2f})")

# %%
# The bound grows with :math:`K`, quickly at first:

ks = [k for k in (1, 10, 100) if k < NUM_SAMPLES] + [NUM_SAMPLES]
bounds = [vae.log_likelihood(x_test, num_samples=k).mean().item() for k in ks]
for k, bound in zip(ks, bounds, strict=True):
    print(f"L_{k:<5d} = {bound:8.2f} nats per example")

fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(ks, bounds, "o-", label="$L_K$")
ax.axhline(elbo_test.mean().item(), color="k", linestyle="--", label="ELBO")
ax.set_xscale("log")
ax.set_xlabel("K (importance samples)")
ax.set_ylabel("nats per example")
ax.legend()

# %%
# Bits per dimension
# ^^^^^^^^^^^^^^^^^^
# Image models are often compared in bits per dimension: the negative log-likelihood
# divided by the number of pixels :math:`D = 784` and by :math:`\log 2`.
# :meth:`~pyrogen.VAE.bits_per_dim` does this with :math:`L_K`, so it is an upper bound on
# the true bits/dim (in expectation). Results on binarized MNIST are usually quoted in
# nats per image instead: Burda et al. (2016) report about 87 for a VAE of this shape
# trained for thousands of epochs; the ten epochs of a full run here give about 95.

bits = vae.bits_per_dim(x_test, num_samples=NUM_SAMPLES)
print(
    f"{bits.mean():.4f} bits/dim = {bits.mean() * IMAGE_SIZE**2 * math.log(2):.2f} nats per image"
)

# %%
# Samples and reconstructions
# ---------------------------
# :meth:`~pyrogen.VAE.sample` draws :math:`z \sim p(z)` and then :math:`x \sim p(x \mid z)`;
# with ``mean=True`` it returns the Bernoulli probabilities instead of binary draws, which
# is what VAE samples usually show.

torch.manual_seed(0)
fig, axes = plt.subplots(1, 2, figsize=(9, 4.5))
show_grid(vae.sample(64, mean=True), 8, "p(x | z), z ~ p(z)", ax=axes[0])
show_grid(vae.sample(64), 8, "x ~ p(x | z) (binary draws)", ax=axes[1])

# %%
# :meth:`~pyrogen.VAE.reconstruct` encodes an image, takes the guide's mean :math:`\mu(x)`
# and decodes it: top, test images; bottom, their reconstructions.

originals = x_test[:10]
show_grid(torch.cat([originals, vae.reconstruct(originals)]), 10, "test images / reconstructions")

# %%
# A two-dimensional latent space
# ------------------------------
# With ``latent_dim=2`` the codes can be drawn directly. Each test image is placed at its
# posterior mean :math:`\mu_\phi(x)` and coloured by its digit: the encoder, never shown a
# label, puts digits of one class together.

vae_2d = pyrogen.VAE(DATA_SHAPE, latent_dim=2, hidden=HIDDEN)
pyrogen.fit(vae_2d, x_train, epochs=EPOCHS, batch_size=BATCH_SIZE, seed=0, progress=False)
print(f"ELBO with L = 2: {vae_2d.elbo(x_test, num_samples=10).mean():.2f} nats per example")

# %%
# Two numbers cannot say as much about an image as fifty: in a full run this model's ELBO
# is about 50 nats per image below the main model's. But the map of the codes is readable:


loc, _ = vae_2d.encode(x_test)
fig, ax = plt.subplots(figsize=(5.5, 4.5))
points = ax.scatter(loc[:, 0], loc[:, 1], c=y_test, cmap="tab10", s=6, vmin=-0.5, vmax=9.5)
fig.colorbar(points, ax=ax, ticks=range(10), label="digit")
ax.set_xlabel("$z_1$")
ax.set_ylabel("$z_2$")
ax.set_title("posterior means of test images")

# %%
# The decoder's view of the same plane: decode a grid of codes placed at the prior's
# quantiles (so each cell covers the same prior probability).

cells = 8 if SMOKE else 15
quantiles = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, cells))
grid = torch.cartesian_prod(quantiles.flip(0), quantiles).flip(-1)  # rows: z_2 from top
with torch.no_grad():
    decoded = torch.sigmoid(vae_2d.decoder(grid))  # the decoder outputs Bernoulli logits
show_grid(decoded, cells, "decoder means over the latent plane")

# %%
# Beta: trading rate for distortion
# ---------------------------------
# A beta-VAE multiplies the KL term by :math:`\beta`; in pyrogen it is
# ``VAE(..., beta=...)``, applied with ``poutine.scale`` on the ``z`` site in both model
# and guide, so *any* Pyro ELBO scales exactly the KL part. The objective becomes
# distortion + :math:`\beta` rate: :math:`\beta < 1` buys better reconstructions with more
# nats in the code, :math:`\beta > 1` a simpler code with blurrier reconstructions.
# Only :math:`\beta = 1` is a bound on :math:`\log p(x)`.
#
# Each model is evaluated at :math:`\beta = 1` (``elbo()`` always is), and its rate and
# distortion are computed as above. Lines of constant rate + distortion are lines of
# constant ELBO; the :math:`\beta = 1` model should be on the best one. (These models train
# for fewer epochs than the main one, so their :math:`\beta = 1` ELBO is a little lower.)

sweep = []
for beta in BETAS:
    beta_vae = pyrogen.VAE(DATA_SHAPE, latent_dim=LATENT_DIM, hidden=HIDDEN, beta=beta)
    pyrogen.fit(
        beta_vae, x_train, epochs=SWEEP_EPOCHS, batch_size=BATCH_SIZE, seed=0, progress=False
    )
    rate, distortion = rate_and_distortion(beta_vae, x_test)
    sweep.append((beta, rate, distortion))
    print(
        f"beta = {beta:<4g}  rate {rate:7.2f}  distortion {distortion:7.2f}  "
        f"ELBO {-(rate + distortion):8.2f} nats per example"
    )

fig, ax = plt.subplots(figsize=(5, 4))
rates = [rate for _, rate, _ in sweep]
distortions = [distortion for _, _, distortion in sweep]
ax.plot(rates, distortions, "o-")
for beta, rate, distortion in sweep:
    ax.annotate(f"β = {beta:g}", (rate, distortion), textcoords="offset points", xytext=(5, 5))
best = min(rate + distortion for _, rate, distortion in sweep)
span = torch.linspace(0, max(rates) * 1.1, 2)
for offset in (0, 10, 20):
    ax.plot(span, best + offset - span, ":", color="grey", linewidth=0.8)
ax.set_xlim(0, max(rates) * 1.1)
ax.set_ylim(min(distortions) * 0.95, max(distortions) * 1.05)
ax.set_xlabel("rate: KL(q(z|x) || p(z)) (nats)")
ax.set_ylabel("distortion: -E_q log p(x|z) (nats)")
ax.set_title("beta sweep (dotted: constant ELBO)")

# %%
# Summary
# -------
# * ``VAE.model`` and ``VAE.guide`` are ordinary Pyro programs: a prior and a decoder, an
#   encoder as amortized guide, sharing the site ``z``. Pyro supplies the ELBO, the KL
#   (analytic with ``TraceMeanField_ELBO``) and the reparameterization gradient.
# * :meth:`~pyrogen.VAE.elbo` is the ELBO at beta = 1;
#   :meth:`~pyrogen.VAE.log_likelihood` is the tighter importance-weighted bound
#   :math:`L_K`; their difference is a lower bound on how loose the ELBO is;
#   :meth:`~pyrogen.VAE.bits_per_dim` converts :math:`L_K` to bits per pixel.
# * ``beta`` moves a model along the rate-distortion curve; only beta = 1 gives a bound on
#   :math:`\log p(x)`.
#
# The :doc:`VAE page <../vae>` documents the likelihoods, objectives (including training
# on :math:`L_K` with ``objective="iwae"``), networks and saving.
