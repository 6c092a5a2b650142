"""bf16-mixed: layers in bfloat16, everything else in the model's own precision."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import pyrogen
from pyrogen.infer.precision import mixed_precision


def network() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 64), nn.Tanh(), nn.Linear(64, 3))


def test_layers_run_in_bfloat16_and_hand_back_full_precision():
    net, x = network(), torch.randn(100, 5)
    exact = net(x)
    seen = []
    net[1].register_forward_hook(lambda module, args, out: seen.append(args[0].dtype))
    with mixed_precision(net) as layers:
        mixed = net(x)
    assert layers == 2 and seen == [torch.float32] and mixed.dtype == torch.float32
    # bfloat16 keeps 8 bits of mantissa: products are rounded to about 2^-8 relative.
    assert not torch.equal(mixed, exact)
    torch.testing.assert_close(mixed, exact, rtol=0, atol=0.05 * exact.abs().max().item())
    torch.testing.assert_close(net(x), exact, rtol=0, atol=0)  # restored after the block


def test_float64_layers_hand_back_float64_and_are_restored_after_an_error():
    net = network().double()
    with pytest.raises(RuntimeError, match="boom"), mixed_precision(net):
        assert net(torch.randn(4, 5, dtype=torch.float64)).dtype == torch.float64
        raise RuntimeError("boom")
    assert all("forward" not in vars(layer) for layer in net)


def test_the_elbo_of_a_vae_stays_float32_and_close_to_full_precision():
    torch.manual_seed(0)
    vae = pyrogen.VAE((6,), latent_dim=2, likelihood="gaussian", hidden=(32,))
    x = torch.randn(500, 6)
    vae.setup(x)
    loss = vae.loss
    draws = 200

    def mean_loss() -> torch.Tensor:
        torch.manual_seed(1)
        return torch.stack(
            [loss.differentiable_loss(vae.model, vae.guide, x, None) for _ in range(draws)]
        ).mean()

    exact = mean_loss()
    with mixed_precision(vae, "bf16-mixed"):
        mixed = mean_loss()
    assert mixed.dtype == torch.float32 and torch.isfinite(mixed)
    # Same noise, layers rounded to bf16: the bound (4383.6 nats) moves by 0.02 nats. With the
    # whole program under torch.autocast it moves by 0.39 (log-densities and their sums in
    # bf16 too), which this bound of 0.1 nats refuses.
    assert abs(mixed - exact).item() < 0.1


def test_fit_in_bf16_mixed_lowers_the_loss():
    torch.manual_seed(0)
    x = torch.randn(256, 4) @ torch.randn(4, 4)
    vae = pyrogen.VAE((4,), latent_dim=2, likelihood="gaussian", hidden=(32,))
    result = pyrogen.fit(vae, x, steps=150, lr=0.01, precision="bf16-mixed", progress=False)
    assert all(torch.isfinite(torch.tensor(result.losses)))
    assert sum(result.losses[-20:]) < sum(result.losses[:20])
    assert all(p.dtype == torch.float32 for p in vae.parameters())


def test_precision_is_checked_and_a_mixture_has_nothing_to_speed_up():
    x = torch.randn(50, 2)
    with pytest.raises(ValueError, match="precision: expected one of '32', 'bf16-mixed'"):
        pyrogen.fit(pyrogen.GaussianMixture(2), x, steps=1, precision="16")
    with pytest.raises(ValueError, match="precision: GaussianMixture has no linear"):
        pyrogen.fit(pyrogen.GaussianMixture(2), x, steps=1, precision="bf16-mixed")


@pytest.mark.cuda
def test_bf16_mixed_trains_on_cuda():
    torch.manual_seed(0)
    x = torch.rand(512, 784)
    vae = pyrogen.VAE((784,), latent_dim=8, likelihood="gaussian")
    result = pyrogen.fit(
        vae, x, steps=20, batch_size=128, device="cuda", precision="bf16-mixed", progress=False
    )
    assert result.device.startswith("cuda") and all(torch.isfinite(torch.tensor(result.losses)))
