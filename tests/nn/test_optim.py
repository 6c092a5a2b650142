"""The default optimizer: torch's Adam, fused where the parameters allow."""

from __future__ import annotations

import copy

import pytest
import torch

import pyrogen
from pyrogen.nn.optim import adam


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))


def test_fused_on_cpu_and_options_kept():
    net = _net()
    assert adam(net.parameters()).defaults["fused"] is True
    assert adam([{"params": list(net.parameters())}], lr=0.1).defaults["fused"] is True
    explicit = adam(net.parameters(), foreach=True)
    assert explicit.defaults["fused"] is None and explicit.defaults["foreach"] is True
    assert adam(net.parameters(), betas=(0.5, 0.9)).defaults["betas"] == (0.5, 0.9)
    assert adam(net.parameters(), differentiable=True).defaults["fused"] is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_same_steps_as_unfused_adam(dtype):
    """The fused kernel computes Adam's update: 100 steps on the same gradients end where
    torch's default (unfused) Adam ends, to float rounding (a few ulps per step)."""
    nets = [_net().to(dtype), None]
    nets[1] = copy.deepcopy(nets[0])
    optimizers = [
        adam(nets[0].parameters(), lr=1e-2),
        torch.optim.Adam(nets[1].parameters(), lr=1e-2),
    ]
    x = torch.randn(64, 3, dtype=dtype, generator=torch.Generator().manual_seed(1))
    for _ in range(100):
        for net, optimizer in zip(nets, optimizers, strict=True):
            optimizer.zero_grad()
            net(x).square().mean().backward()
            optimizer.step()
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=tolerance, atol=tolerance)


def test_fit_makes_it_by_default():
    """fit's optimizer is the fused Adam unless ``optim`` (or the family) says otherwise."""
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(0))
    fused = []

    class Record(pyrogen.infer.callbacks.Callback):
        def on_fit_start(self, loop):
            fused.append(loop.optimizer.defaults["fused"])

    model = pyrogen.FlowDensity(2, transforms=1, hidden=(8,))
    pyrogen.fit(model, x, steps=2, progress=False, callbacks=[Record()])
    pyrogen.fit(model, x, steps=2, progress=False, callbacks=[Record()], optim=torch.optim.Adam)
    assert fused == [True, None]
