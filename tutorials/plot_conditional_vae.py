"""
Conditional VAEs: digits on demand and image completion
=======================================================

A :doc:`conditional VAE <../conditional_vae>` is a VAE whose prior, decoder and encoder
all see a **context** :math:`c` that is given, not modelled. This tutorial trains two
:class:`pyrogen.ConditionalVAE` models on binarized MNIST:

* one conditioned on the **digit label**, which then draws any digit you ask for, with the
  latent :math:`z` left to carry the handwriting style;
* one conditioned on the **top half** of each image, which fills in the bottom half
  (image completion), several different ways.

Both are the VAE's model and guide with :math:`c` added to every network, so Pyro computes
the ELBO exactly as for :class:`pyrogen.VAE`. What changes is what the ELBO is a bound
*on*: a conditional log-likelihood, :math:`\\log p(x \\mid y)` or
:math:`\\log p(x_{\\text{bottom}} \\mid x_{\\text{top}})`. Every number is in nats per
example, and the text says which bound each one is.
"""

# %%
# Setup
# -----
# ``PYROGEN_SMOKE=1`` (set by the test suite and CI) trains on 1,000 images for one epoch,
# so the script finishes in well under a minute and the pictures are those of a barely
# trained model. Without it the tutorial uses all 60,000 training images and takes a few
# minutes.

import math
import os
from pathlib import Path

import matplotlib.pyplot as plt
import pyro
import torch
import torch.nn.functional as F
from pyro import poutine

import pyrogen
from pyrogen.diagnostics import plot_image_grid

SMOKE = os.environ.get("PYROGEN_SMOKE") == "1"

NUM_TRAIN = 1_000 if SMOKE else 60_000
NUM_TEST = 200 if SMOKE else 1_000
EPOCHS = 1 if SMOKE else 8  # each of the two models
NUM_SAMPLES = 10 if SMOKE else 100  # K, importance samples per test image
BATCH_SIZE = 128
LABEL_LATENT_DIM = 8  # part 1: small, so that the label carries the digit
COMPLETION_LATENT_DIM = 16  # part 2
HIDDEN = (400,)

pyro.clear_param_store()
pyro.set_rng_seed(0)

# %%
# The data
# --------
# As in the :doc:`VAE tutorial <plot_vae>`: MNIST from ``$PYROGEN_DATA/mnist``
# (``PYROGEN_DATA`` defaults to ``../shared/data`` next to the repository), or, if it is
# not there, a synthetic stand-in of bars whose angle is set by a "digit" 0-9. The grey
# levels are binarized once with a fixed seed, so the data are binary and fixed.

HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
MNIST_DIR = Path(os.environ.get("PYROGEN_DATA", HERE.parent.parent / "shared" / "data")) / "mnist"


def synthetic_digits(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Grey 28 x 28 bars through the centre at label x 18 degrees, and the labels."""
    labels = torch.randint(10, (n,), generator=generator)
    angle = (labels * math.pi / 10 + 0.1 * torch.randn(n, generator=generator))[:, None, None]
    rows, cols = torch.meshgrid(torch.arange(28.0) - 13.5, torch.arange(28.0) - 13.5, indexing="ij")
    return torch.sigmoid(3 * (1.5 - (rows * angle.cos() - cols * angle.sin()).abs())), labels


try:
    train_images, train_labels = pyrogen.data.mnist(MNIST_DIR, "train")
    test_images, test_labels = pyrogen.data.mnist(MNIST_DIR, "test")
except FileNotFoundError:
    print(f"MNIST not found in {MNIST_DIR}: using synthetic bar images instead")
    generator = torch.Generator().manual_seed(1)
    train_images, train_labels = synthetic_digits(NUM_TRAIN, generator)
    test_images, test_labels = synthetic_digits(NUM_TEST, generator)

binarizer = torch.Generator().manual_seed(0)
x_train = torch.bernoulli(train_images[:NUM_TRAIN], generator=binarizer)
y_train = train_labels[:NUM_TRAIN]
x_test = torch.bernoulli(test_images[:NUM_TEST], generator=binarizer)
y_test = test_labels[:NUM_TEST]
print(f"train {tuple(x_train.shape)}, test {tuple(x_test.shape)}")

# %%
# Part 1: digits on demand
# ------------------------
# With ``num_classes=10`` the context is the one-hot label, :math:`c = \mathrm{onehot}(y)`,
# and the model is
#
# .. math::
#
#    z_n \sim \mathcal{N}(0, I_L), \qquad
#    x_n \mid z_n, y_n \sim \mathrm{Bernoulli}\big(\mathrm{logits} =
#    \mathrm{decoder}_\theta(z_n, \mathrm{onehot}(y_n))\big),
#
# with the guide :math:`q_\phi(z \mid x, y)`, an encoder that sees the label too. The
# labels are not modelled: they are given to ``model`` and ``guide`` as ``y`` (and to
# :func:`pyrogen.fit` as its third argument). The networks simply take 10 more inputs.
#
# The latent is small here, :math:`L = 8`. Nothing forces the decoder to take the digit
# from the label: :math:`z` could encode it too, and then a draw of :math:`z` can override
# the label you ask for. The KL term makes every nat in :math:`z` cost, while the label
# is free, so a decoder with little room in :math:`z` leaves the digit to the label. (With
# :math:`L = 16`, eight epochs gave a higher ELBO, but several draws of :math:`z` made the
# same digit whatever the label.)

cvae = pyrogen.ConditionalVAE((28, 28), latent_dim=LABEL_LATENT_DIM, num_classes=10, hidden=HIDDEN)
print("context_dim:", cvae.context_dim)
print(cvae.decoder)

# %%
# The sites are the VAE's, ``z`` and ``obs``. Tracing the guide and then the model (with
# ``z`` replayed from the guide) on four labelled images shows their shapes: one
# :math:`z` of size :math:`L` per image, one Bernoulli per pixel.

batch_x, batch_y = x_train[:4], y_train[:4]
guide_trace = poutine.trace(cvae.guide).get_trace(batch_x, batch_y)
model_trace = poutine.trace(poutine.replay(cvae.model, trace=guide_trace)).get_trace(
    batch_x, batch_y
)
model_trace.compute_log_prob()
print(model_trace.format_shapes())

# %%
# Training is :func:`pyrogen.fit` with the labels; ``cvae.loss`` is the VAE's default
# objective, the ELBO with the KL term computed analytically (the value and gradients of
# Pyro's ``TraceMeanField_ELBO``), and the loss it records is the negative ELBO per example
# of each minibatch.

result = pyrogen.fit(
    cvae, x_train, y_train, epochs=EPOCHS, batch_size=BATCH_SIZE, seed=0, progress=False
)
print(
    f"{result.steps} steps in {result.time_s:.0f} s, final minibatch loss {result.final_loss:.1f}"
)

# %%
# Every digit, in ten styles
# ^^^^^^^^^^^^^^^^^^^^^^^^^^
# :meth:`~pyrogen.ConditionalVAE.sample` draws :math:`z \sim p(z)` and decodes it with the
# labels you give: ``cvae.sample(10, y=torch.arange(10), mean=True)`` is one of each
# digit. To see what :math:`z` carries, hold it fixed and change only the label: below,
# each **column** decodes one draw of :math:`z` with each label 0-9 (one per **row**). The
# decoder outputs Bernoulli logits, so ``sigmoid`` gives the pixel means. If the model
# works as intended, the rows are the digits and a column keeps one style (slant, stroke
# width) across them.

torch.manual_seed(0)
styles = torch.randn(10, LABEL_LATENT_DIM)  # ten draws from the prior p(z) = N(0, I)
digits = torch.arange(10)
z = styles[None, :, :].expand(10, 10, LABEL_LATENT_DIM)  # (label, style, L)
one_hot = F.one_hot(digits, 10).float()[:, None, :].expand(10, 10, 10)
with torch.no_grad():
    grid = torch.sigmoid(cvae.decoder(z, one_hot))  # (10, 10, 28, 28)
fig, ax = plt.subplots(figsize=(6, 6))
plot_image_grid(grid.reshape(100, 28, 28), ax, ncols=10, title="rows: label 0-9; columns: z")

# %%
# The numbers: bounds on log p(x | y)
# ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
# :meth:`~pyrogen.ConditionalVAE.elbo` is the ELBO at beta = 1 with the analytic KL; for
# this model it is a lower bound on :math:`\log p(x \mid y)`, the log-probability of the
# image **given its label**. :meth:`~pyrogen.ConditionalVAE.log_likelihood` is the tighter
# importance-weighted bound :math:`L_K` on the same quantity.
#
# These are not comparable with a plain VAE's bounds on :math:`\log p(x)`: knowing the
# label is worth something. With the uniform label prior :math:`p(y) = 1/10`, however,
# :math:`\log p(x) \ge \log p(x, y) = \log p(x \mid y) - \log 10`, so subtracting
# :math:`\log 10 \approx 2.3` nats turns either bound into a lower bound on
# :math:`\log p(x)` under the model :math:`\frac{1}{10}\sum_y p(x \mid y)`, which *is*
# comparable with the :doc:`VAE tutorial <plot_vae>`'s numbers.

torch.manual_seed(0)
elbo = cvae.elbo(x_test, y_test, num_samples=10)
bound = cvae.log_likelihood(x_test, y_test, num_samples=NUM_SAMPLES)
print(f"ELBO            {elbo.mean():8.2f}   (bound on log p(x | y))")
print(f"L_K, K = {NUM_SAMPLES:<4d}   {bound.mean():8.2f}   (bound on log p(x | y))")
print(f"L_K - log 10    {bound.mean() - math.log(10):8.2f}   (bound on log p(x))")

# %%
# Does the decoder use the label?
# ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
# If it does, the same image must be much less probable under a wrong label. Score every
# test image under each of the ten labels: by Bayes' rule,
# :math:`p(y \mid x) \propto p(x \mid y)`, so the label with the highest bound is a
# (generative) classification of the image. The ELBO's gap to :math:`\log p(x \mid y)`
# differs between labels, so this is only an approximation of Bayes' rule.

with torch.no_grad():
    per_label = torch.stack(
        [cvae.elbo(x_test, torch.full_like(y_test, k), num_samples=10) for k in range(10)]
    )  # (10, N)
true_label = per_label.gather(0, y_test[None]).squeeze(0)
others = per_label.masked_fill(F.one_hot(y_test, 10).T.bool(), -math.inf)
print(f"ELBO with the true label:       {true_label.mean():8.2f}")
print(f"ELBO with the best wrong label: {others.max(0).values.mean():8.2f}")
print(f"generative classification accuracy: {(per_label.argmax(0) == y_test).float().mean():.3f}")

# %%
# Part 2: completing the bottom half
# ----------------------------------
# With ``observed="top"`` the context is the top 14 rows of each image,
# :math:`c = x_{\text{top}}`, and the model describes only the bottom rows:
#
# .. math::
#
#    z_n \sim p_\psi(z \mid x_{n,\text{top}}), \qquad
#    x_{n,\text{bottom}} \mid z_n \sim \mathrm{Bernoulli}\big(\mathrm{logits} =
#    \mathrm{decoder}_\theta(z_n, x_{n,\text{top}})\big)_{\text{bottom}}.
#
# The decoder still outputs all 784 logits, but the likelihood is masked so that only the
# bottom half is scored: the model is never charged for the half it was given. The prior
# is now learned, a small network from the top half to a Normal over :math:`z`
# (``conditional_prior`` defaults to True when ``observed`` is given): to fill in an image
# :math:`z` must be drawn *given* the top half, before the bottom half is seen.

completer = pyrogen.ConditionalVAE(
    (28, 28), latent_dim=COMPLETION_LATENT_DIM, observed="top", hidden=HIDDEN
)
print("context_dim:", completer.context_dim, "(the 14 x 28 given pixels)")
result = pyrogen.fit(
    completer, x_train, epochs=EPOCHS, batch_size=BATCH_SIZE, seed=0, progress=False
)
print(
    f"{result.steps} steps in {result.time_s:.0f} s, final minibatch loss {result.final_loss:.1f}"
)

# %%
# :meth:`~pyrogen.ConditionalVAE.complete` draws :math:`z \sim p_\psi(z \mid x_{\text{top}})`,
# decodes it, and copies the given top half into the result; the bottom half of its input
# is ignored (here it is blanked to grey to show so). Each call draws a new :math:`z`, so
# calling it several times gives several completions: where the top half is ambiguous (a
# 7 or a 9? a 3 or a 5?) they should differ.

originals = x_test[:10]
given = originals.clone()
given[:, 14:, :] = 0.5  # the bottom half: not used
torch.manual_seed(0)
completions = [completer.complete(given) for _ in range(3)]
assert torch.equal(completions[0][:, :14], originals[:, :14])  # the given half is kept
rows = torch.cat([originals, given, *completions])
fig, ax = plt.subplots(figsize=(7, 3.6))
plot_image_grid(rows, ax, ncols=10, title="original / given top half / three completions")

# %%
# The numbers: bounds on log p(bottom | top)
# ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
# For this model :meth:`~pyrogen.ConditionalVAE.elbo` and
# :meth:`~pyrogen.ConditionalVAE.log_likelihood` bound
# :math:`\log p(x_{\text{bottom}} \mid x_{\text{top}})`: nats for **half** the pixels,
# given the other half. They are larger than any bound on :math:`\log p(x)` for the whole
# image, and cannot be compared with one; they measure how well the bottom half is
# predicted. (``bits_per_dim`` divides by the 392 pixels of the bottom half, the ones
# scored: bits per predicted pixel.)

torch.manual_seed(0)
elbo = completer.elbo(x_test, num_samples=10)
bound = completer.log_likelihood(x_test, num_samples=NUM_SAMPLES)
print(f"ELBO            {elbo.mean():8.2f}   (bound on log p(bottom | top))")
print(f"L_K, K = {NUM_SAMPLES:<4d}   {bound.mean():8.2f}   (bound on log p(bottom | top))")

# %%
# Summary
# -------
# * ``ConditionalVAE(num_classes=C)`` conditions every network on the one-hot label;
#   ``sample(n, y=...)`` then draws digits on demand, and fixing :math:`z` while changing
#   :math:`y` shows that :math:`z` carries the style.
# * ``ConditionalVAE(observed="top")`` conditions on half of each image, scores only the
#   other half and learns the prior :math:`p(z \mid x_{\text{top}})`;
#   :meth:`~pyrogen.ConditionalVAE.complete` fills in the rest, differently each time.
# * The ELBO and :math:`L_K` of a conditional model bound a **conditional**
#   log-likelihood: :math:`\log p(x \mid y)` (subtract :math:`\log C` for a bound on
#   :math:`\log p(x)`) or :math:`\log p(x_{\text{bottom}} \mid x_{\text{top}})`.
#
# The :doc:`conditional VAE page <../conditional_vae>` lists the options and pitfalls;
# the :doc:`semi-supervised tutorial <plot_semisupervised_vae>` treats the label as a
# latent variable when most images have none.
