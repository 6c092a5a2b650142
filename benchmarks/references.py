"""Hand-written PyTorch references that the benchmarks compare pyrogen against.

Each reference works on deep copies of a pyrogen model's own networks (same weights), so a
difference in time or quality is the library's, not the networks'. Also here: the
hand-written training loop with ``pyrogen.fit``'s minibatch order, and ``pyrogen.fit`` as a
user calls it with a clock stamp after every step.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pyrogen.infer.noise import seed_device, step_seed

LR = 1e-3
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)

# --- training loops ----------------------------------------------------------------------------


def train_loop(
    module: nn.Module,
    loss_fn: Callable[[nn.Module, torch.Tensor, int], torch.Tensor],
    x: torch.Tensor,
    *,
    steps: int,
    batch_size: int,
    seed: int,
    lr: float = LR,
    stamps: list | None = None,
) -> list[float]:
    """The hand-written loop: a new Adam, ``pyrogen.fit``'s shuffling (a ``randperm`` per epoch
    from a generator seeded like fit's), ``loss.item()`` every step (as pytorch/examples do).

    ``loss_fn(module, batch, num_data)`` is the loss of a batch scaled to the data set;
    ``stamps`` gets ``time.perf_counter()`` after every step. Returns losses per example.
    """
    torch.manual_seed(seed)
    order = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    num_data = x.shape[0]
    per_epoch = math.ceil(num_data / batch_size)
    losses = []
    for step in range(steps):
        if step % per_epoch == 0:
            permutation = torch.randperm(num_data, generator=order)
        position = step % per_epoch
        index = permutation[position * batch_size : (position + 1) * batch_size]
        optimizer.zero_grad(set_to_none=True)
        # The step's noise as pyrogen.fit draws it (one seed per step), so both sides take
        # the same steps and only the per-step overhead differs.
        seed_device(step_seed(seed, step), x.device)
        loss = loss_fn(module, x[index.to(x.device)], num_data)
        loss.backward()
        optimizer.step()
        losses.append(loss.item() / num_data)
        if stamps is not None:
            stamps.append(time.perf_counter())
    return losses


def pyrogen_fit(model: Any, x: torch.Tensor, *, stamps: list | None = None, **options: Any):
    """``pyrogen.fit(model, x, progress=False, **options)`` with a callback that appends
    ``time.perf_counter()`` to ``stamps`` after every step. Returns the FitResult."""
    import pyrogen

    def stamp(step, loss, model) -> None:
        stamps.append(time.perf_counter())

    callbacks = () if stamps is None else (stamp,)
    return pyrogen.fit(model, x, progress=False, callbacks=callbacks, **options)


def fit_one_epoch(
    model: Any, x: torch.Tensor, epoch: int, checkpoint, *, batch_size: int, seed: int, stamps=None
):
    """``pyrogen.fit`` through epoch ``epoch`` on this epoch's data ``x``, resuming from
    ``checkpoint`` (parameters, Adam state, random state and minibatch order carry over), as
    ``pyrogen fit --binarize dynamic`` trains. Returns the FitResult."""
    return pyrogen_fit(
        model,
        x,
        steps=epoch * math.ceil(x.shape[0] / batch_size),
        batch_size=batch_size,
        lr=LR,
        seed=seed,
        early_stopping=None,
        restore_best=False,
        checkpoint=checkpoint,
        resume=True,
        stamps=stamps,
    )


def burda_vae(seed: int, **options: Any):
    """A pyrogen VAE on Burda et al.'s (2016) networks: 50 latents, 784-200-200 tanh MLPs,
    Bernoulli logits; ``options`` go to ``pyrogen.VAE`` (objective, posterior, ...)."""
    import pyrogen
    from pyrogen.nn import GaussianEncoder, MLPDecoder

    torch.manual_seed(seed)
    encoder = GaussianEncoder((784,), 50, hidden=(200, 200), activation=nn.Tanh)
    decoder = MLPDecoder(50, (784,), hidden=(200, 200), activation=nn.Tanh)
    return pyrogen.VAE(
        data_shape=(784,),
        latent_dim=50,
        likelihood="bernoulli",
        encoder=encoder,
        decoder=decoder,
        **options,
    )


def binarized_mnist_test(args: Any, rows: int | None = None) -> torch.Tensor:
    """MNIST test images (M, 784) binarized once with a generator seeded with ``args.seed``."""
    from benchmarks import harness

    test, _, _ = harness.mnist(args, "test")
    generator = torch.Generator().manual_seed(args.seed)
    return torch.bernoulli(test.flatten(1), generator=generator)[:rows]


def fixed_batch(x: torch.Tensor, batch_size: int, seed: int) -> torch.Tensor:
    """``batch_size`` rows of ``x`` in a seeded random order."""
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    return x[order[:batch_size].to(x.device)]


def step_fn(
    params, loss: Callable[[], torch.Tensor], lr: float = LR, optim: Callable = torch.optim.Adam
) -> Callable[[], None]:
    """One raw training step on a fixed batch: zero_grad, loss, backward, ``optim``'s step
    (default: torch's Adam as a hand-written loop makes it)."""
    optimizer = optim([p for p in params if p.requires_grad], lr=lr)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss().backward()
        optimizer.step()

    return step


def pyro_loss(model: Any, batch: torch.Tensor, num_data: int) -> torch.Tensor:
    """A pyrogen model's training loss on ``batch``: what ``pyrogen.fit`` differentiates."""
    return model.loss.differentiable_loss(model.model, model.guide, batch, None, num_data=num_data)


def same_loss(a: Callable[[], torch.Tensor], b: Callable[[], torch.Tensor], params_a, params_b):
    """Both losses and their gradients once, from the current weights: relative differences.

    Seed before each loss yourself where both draw noise in the same shapes.
    """
    loss_a, loss_b = a(), b()
    grad_a = torch.autograd.grad(loss_a, [p for p in params_a if p.requires_grad])
    grad_b = torch.autograd.grad(loss_b, [p for p in params_b if p.requires_grad])
    flat_a = torch.cat([g.reshape(-1) for g in grad_a])
    flat_b = torch.cat([g.reshape(-1) for g in grad_b])
    return {
        "loss_rel_diff": abs(loss_a.item() - loss_b.item()) / abs(loss_b.item()),
        "grad_rel_diff": float((flat_a - flat_b).norm() / flat_b.norm()),
    }


# --- VAE ---------------------------------------------------------------------------------------


def vae_networks(vae: Any) -> nn.ModuleDict:
    """Deep copies of a VAE's encoder (x -> loc, scale) and decoder (z -> logits)."""
    return nn.ModuleDict(
        {"encoder": copy.deepcopy(vae.encoder), "decoder": copy.deepcopy(vae.decoder)}
    )


def vae_loss(
    nets: nn.ModuleDict,
    x: torch.Tensor,
    num_data: int,
    particles: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Negative ELBO (one reparameterized sample, analytic KL, Bernoulli logits) or, with
    ``particles`` > 1, the negative IWAE bound; scaled by N / B.

    The noise is one ``normal_`` of shape (B, L) or (K, B, L), as Pyro's guide draws it.
    """
    loc, scale = nets["encoder"](x)
    if particles == 1:
        eps = torch.randn(loc.shape, generator=generator, dtype=loc.dtype, device=loc.device)
        logits = nets["decoder"](loc + scale * eps)
        reconstruction = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
        kl = 0.5 * (loc.pow(2) + scale.pow(2) - 1.0).sum() - scale.log().sum()
        return (reconstruction + kl) * (num_data / x.shape[0])
    shape = (particles, *loc.shape)
    eps = torch.randn(shape, generator=generator, dtype=loc.dtype, device=loc.device)
    z = loc + scale * eps
    logits = nets["decoder"](z)
    log_px = (
        -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none")
        .flatten(2)
        .sum(-1)
    )
    log_pz = (-0.5 * z.pow(2) - HALF_LOG_2PI).sum(-1)
    log_qz = (-0.5 * eps.pow(2) - scale.log() - HALF_LOG_2PI).sum(-1)
    bound = torch.logsumexp(log_px + log_pz - log_qz, dim=0) - math.log(particles)
    return -bound.sum() * (num_data / x.shape[0])


def vae_log_likelihood(
    nets: Any,
    x: torch.Tensor,
    num_samples: int,
    generator: torch.Generator | None = None,
    *,
    batch_rows: int = 100,
    max_elements: int = 2**23,
) -> torch.Tensor:
    """Importance-sampling estimate of log p(x) per row, (N,), for a Bernoulli-logits VAE:
    log (1/K) sum_k p(x, z_k) / q(z_k | x), z_k from the encoder.

    Chunked over rows and samples (at most ``max_elements`` decoder outputs at once: 32 MiB
    in float32); the Bernoulli term as ``x . logits - sum softplus(logits)``.
    """
    out = []
    with torch.no_grad():
        for batch in x.split(batch_rows):
            loc, scale = nets["encoder"](batch)
            rows, latent = loc.shape
            flat = batch.reshape(rows, -1)
            per_chunk = max(1, min(num_samples, max_elements // flat.numel()))
            log_norm_q = scale.log().sum(-1) + latent * HALF_LOG_2PI
            running = torch.full((rows,), -math.inf, dtype=loc.dtype, device=loc.device)
            for start in range(0, num_samples, per_chunk):
                count = min(per_chunk, num_samples - start)
                eps = torch.randn(
                    (count, rows, latent), generator=generator, dtype=loc.dtype, device=loc.device
                )
                z = loc + scale * eps
                logits = nets["decoder"](z).reshape(count, rows, -1)
                log_px = torch.einsum("krd,rd->kr", logits, flat) - F.softplus(logits).sum(-1)
                log_pz = -0.5 * z.pow(2).sum(-1) - latent * HALF_LOG_2PI
                log_qz = -0.5 * eps.pow(2).sum(-1) - log_norm_q
                chunk = torch.logsumexp(log_px + log_pz - log_qz, dim=0)
                running = torch.logaddexp(running, chunk)
            out.append(running - math.log(num_samples))
    return torch.cat(out)


# --- flows ------------------------------------------------------------------------------------


def flow_loss(flow: nn.Module, batch: torch.Tensor, num_data: int) -> torch.Tensor:
    """zuko used directly: -(N / B) sum_b log p(x_b)."""
    return -(num_data / batch.shape[0]) * flow().log_prob(batch).sum()


# --- diffusion ---------------------------------------------------------------------------------


def autoregressive_loss(network: nn.Module, batch: torch.Tensor, num_data: int) -> torch.Tensor:
    """-log p of binary rows under an autoregressive network's Bernoulli conditionals, by
    hand: the network reads 2x - 1 and returns one logit per value (MADE: (B, D, 1); a
    PixelCNN: (B, C, H, W, 1)); the sum over the batch, scaled to ``num_data`` rows."""
    logits = network(2 * batch - 1)[..., 0]
    nll = F.binary_cross_entropy_with_logits(logits, batch, reduction="sum")
    return nll * num_data / batch.shape[0]


class FullyVisibleLogistic(nn.Module):
    """The fully visible sigmoid belief net: one logistic regression per value on the values
    before it, p(x_i = 1 | x_<i) = sigmoid(b_i + sum_{j < i} W_ij x_j), written by hand.

    Shapes: x (B, D) (read as 2x - 1, as :func:`autoregressive_loss` passes it) -> logits
    (B, D, 1).
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(features, features)
        nn.init.zeros_(self.linear.weight)
        self.register_buffer("mask", torch.ones(features, features).tril(-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.linear.weight * self.mask, self.linear.bias)[..., None]


def train_for(
    module: nn.Module,
    loss_fn: Callable[[nn.Module, torch.Tensor, int], torch.Tensor],
    x: torch.Tensor,
    *,
    seconds: float,
    batch_size: int,
    seed: int,
) -> int:
    """:func:`train_loop` for about ``seconds`` of training: the steps a 50-step trial of a
    copy takes that long for; returns the steps taken."""
    trial = copy.deepcopy(module)
    started = time.perf_counter()
    train_loop(trial, loss_fn, x, steps=50, batch_size=batch_size, seed=seed)
    steps = max(1, int(seconds / ((time.perf_counter() - started) / 50)))
    train_loop(module, loss_fn, x, steps=steps, batch_size=batch_size, seed=seed)
    return steps


def diffusion_loss(model: Any, objective: str) -> tuple[nn.Module, Callable]:
    """A copy of a ``DiffusionVAE``'s denoiser and the hand-written loss on it.

    ``simple``: DDPM's loss, (N / B) sum ||eps - net(z_t, t / T)||^2 / 2 with
    z_t = alpha_t x + sigma_t eps. ``elbo``: the unbiased ELBO estimate written out,
    T (SNR_{t-1} - SNR_t) / 2 ||x - x_hat||^2 + KL(q(z_T | x) || N(0, I)) - log p(x | z_0),
    with the discretized (256 levels) or Gaussian likelihood. The model's schedule
    (gamma_t) and data scaling are read once, after ``model.setup``.

    Returns ``(network, loss_fn(network, batch, num_data))``.
    """
    network = copy.deepcopy(model.denoiser)
    gamma = model.schedule().detach().clone()
    timesteps = gamma.shape[0] - 1
    alpha, sigma = torch.sigmoid(-gamma).sqrt(), torch.sigmoid(gamma).sqrt()
    snr = torch.exp(-gamma)
    discretized = model.likelihood == "discretized"
    shape = tuple(model.data_shape)
    shift = model.data_shift.detach().reshape(shape)
    scale = model.data_scale.detach().reshape(shape)
    view = (-1,) + (1,) * len(shape)

    def loss(net: nn.Module, batch: torch.Tensor, num_data: int) -> torch.Tensor:
        xs = 2 * batch - 1 if discretized else (batch - shift) / scale
        dims = tuple(range(1, xs.dim()))
        t = torch.randint(1, timesteps + 1, (batch.shape[0],), device=batch.device)
        eps = torch.randn_like(xs)
        a_t, s_t = alpha[t].reshape(view), sigma[t].reshape(view)
        z = a_t * xs + s_t * eps
        out = net(z, t.to(xs.dtype) / timesteps)
        if objective == "simple":
            return num_data / batch.shape[0] * 0.5 * ((eps - out) ** 2).sum()
        x_hat = (z - s_t * out) / a_t
        kl = 0.5 * (snr[t - 1] - snr[t]) * ((xs - x_hat) ** 2).sum(dims)
        a_T, s_T = alpha[timesteps], sigma[timesteps]
        prior = 0.5 * (a_T**2 * xs**2 + s_T**2 - 1 - 2 * torch.log(s_T)).sum(dims)
        z0 = alpha[0] * xs + sigma[0] * torch.randn_like(xs)
        if discretized:
            levels = torch.linspace(-1, 1, 256, device=batch.device)
            logits = -((z0.unsqueeze(-1) - alpha[0] * levels) ** 2) / (2 * sigma[0] ** 2)
            index = (batch * 255).round().long().unsqueeze(-1)
            recon = (logits.gather(-1, index).squeeze(-1) - logits.logsumexp(-1)).sum(dims)
        else:
            ratio = sigma[0] / alpha[0]
            recon = (
                torch.distributions.Normal(shift + scale * z0 / alpha[0], scale * ratio)
                .log_prob(batch)
                .sum(dims)
            )
        return num_data / batch.shape[0] * (timesteps * kl + prior - recon).sum()

    return network, loss


# --- mixed precision ------------------------------------------------------------------------------


def autocast_forward(module: nn.Module, device_type: str) -> nn.Module:
    """Run ``module``'s forward under ``torch.autocast(device_type, bfloat16)`` from now on,
    floating outputs cast back to float32 (what ``precision="bf16-mixed"`` does in pyrogen)."""
    forward = module.forward

    def to_float32(out: Any) -> Any:
        if isinstance(out, torch.Tensor):
            return out.float() if out.is_floating_point() else out
        if isinstance(out, (tuple, list)):
            return type(out)(to_float32(o) for o in out)
        return out

    def run(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast(device_type, dtype=torch.bfloat16):
            return to_float32(forward(*args, **kwargs))

    module.forward = run
    return module


# --- GANs -----------------------------------------------------------------------------------------


def gan_train_loop(
    generator: nn.Module,
    discriminator: nn.Module,
    x: torch.Tensor,
    *,
    latent_dim: int,
    steps: int,
    batch_size: int,
    seed: int,
    lr: float = 2e-4,
    discriminator_lr_scale: float = 2.0,
    ema: float = 0.999,
    stamps: list | None = None,
) -> Callable[[int], torch.Tensor]:
    """The hand-written nonsaturating GAN (Goodfellow et al. 2014) on standardized rows x
    (N, D): at every step one Adam(betas=(0.5, 0.999)) step of the discriminator on
    softplus(-D(x)) + softplus(D(G(z))) at ``discriminator_lr_scale * lr``, then one of the
    generator on softplus(-D(G(z))), each loss summed over the batch and scaled to N rows;
    batches and noise drawn as ``pyrogen.fit`` draws them; a moving average of the
    generator's weights (decay min(ema, (1 + n) / (10 + n)) after n updates).

    ``generator`` and ``discriminator`` are trained in place (pass copies); ``stamps`` gets
    ``time.perf_counter()`` after every step. Returns ``draw(n)``: n rows (n, D) in the data's
    units from the averaged generator.
    """
    shift, scale = x.mean(0), x.std(0).clamp(min=1e-6)
    real_rows = (x - shift) / scale
    average = copy.deepcopy(generator).requires_grad_(False)
    optimizers = [
        torch.optim.Adam(
            discriminator.parameters(), lr=lr * discriminator_lr_scale, betas=(0.5, 0.999)
        ),
        torch.optim.Adam(generator.parameters(), lr=lr, betas=(0.5, 0.999)),
    ]
    order = torch.Generator().manual_seed(seed)
    num_data = x.shape[0]
    per_epoch = math.ceil(num_data / batch_size)
    for step in range(steps):
        if step % per_epoch == 0:
            permutation = torch.randperm(num_data, generator=order)
        position = step % per_epoch
        real = real_rows[permutation[position * batch_size : (position + 1) * batch_size]]
        seed_device(step_seed(seed, step), x.device)
        weight = num_data / len(real)
        for turn, optimizer in enumerate(optimizers):
            optimizer.zero_grad(set_to_none=True)
            fake = generator(torch.randn(len(real), latent_dim, device=x.device))
            if turn == 0:
                rows = F.softplus(-discriminator(real)) + F.softplus(discriminator(fake.detach()))
            else:
                rows = F.softplus(-discriminator(fake))
            (rows.sum() * weight).backward()
            optimizer.step()
        with torch.no_grad():
            decay = min(ema, (1 + step) / (10 + step))
            for mean, current in zip(average.parameters(), generator.parameters(), strict=True):
                mean.lerp_(current, 1 - decay)
        if stamps is not None:
            stamps.append(time.perf_counter())

    @torch.no_grad()
    def draw(n: int) -> torch.Tensor:
        return average(torch.randn(n, latent_dim, device=x.device)) * scale + shift

    return draw
