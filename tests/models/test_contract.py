"""The model contract, checked for every family in the registry (see DESIGN.md).

Each family contributes a small instance and data in ``EXAMPLES``; a family missing from it
fails ``test_every_family_has_an_example``, so new families cannot skip the contract.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine

import pyrogen
from pyrogen.models import REGISTRY, GenerativeModel


def _gmm_example(inference: str, covariance: str):
    def make():
        rng = np.random.default_rng(0)
        x = np.concatenate([rng.normal(-2, 0.5, (40, 3)), rng.normal(2, 1.0, (60, 3))])
        model = pyrogen.GaussianMixture(2, covariance=covariance, inference=inference)
        return model, torch.as_tensor(x, dtype=torch.float32)

    return make


def _vae_example(data_shape: tuple[int, ...], **options):
    def make():
        generator = torch.Generator().manual_seed(0)
        x = (torch.rand(40, *data_shape, generator=generator) > 0.5).float()
        return pyrogen.VAE(data_shape, latent_dim=3, hidden=(16,), **options), x

    return make


EXAMPLES = {
    **{
        f"gmm-{inference}-{covariance}": ("gmm", _gmm_example(inference, covariance))
        for inference in ("map", "variational")
        for covariance in ("full", "diag", "spherical", "tied")
    },
    "vae-mlp-bernoulli": ("vae", _vae_example((12,))),
    "vae-mlp-gaussian-iwae": (
        "vae",
        _vae_example((12,), likelihood="gaussian", objective="iwae", num_particles=3),
    ),
    "vae-conv-continuous-bernoulli": (
        "vae",
        _vae_example((1, 8, 8), likelihood="continuous_bernoulli", encoder="conv", decoder="conv"),
    ),
}


def test_every_family_has_an_example():
    covered = {family for family, _ in EXAMPLES.values()}
    assert covered == set(REGISTRY), (
        f"families without a contract example: {set(REGISTRY) - covered}"
    )


@pytest.fixture(params=sorted(EXAMPLES))
def example(request) -> tuple[GenerativeModel, torch.Tensor]:
    family, make = EXAMPLES[request.param]
    model, x = make()
    assert isinstance(model, REGISTRY[family])
    model.setup(x)
    return model, x


def _latent_sites(trace) -> set[str]:
    """Sample sites that are neither observed nor plates (plates record their indices)."""
    return {
        name
        for name, site in trace.nodes.items()
        if site["type"] == "sample"
        and not site["is_observed"]
        and type(site["fn"]).__name__ != "_Subsample"
    }


def _traces(model, x):
    guide = poutine.trace(model.guide).get_trace(x)
    enumerated = poutine.enum(poutine.replay(model.model, trace=guide), first_available_dim=-2)
    return poutine.trace(enumerated).get_trace(x), guide


def test_site_names_match(example):
    model, x = example
    model_trace, guide_trace = _traces(model, x)
    model_latent, guide_latent = _latent_sites(model_trace), _latent_sites(guide_trace)
    enumerated = {
        n for n in model_latent if model_trace.nodes[n]["infer"].get("enumerate") == "parallel"
    }
    assert guide_latent == model_latent - enumerated
    assert guide_latent, "the guide must cover at least one latent site"


def test_elbo_is_finite_and_every_parameter_gets_a_gradient(example):
    model, x = example
    with torch.no_grad():  # move off the initial optimum, where some gradients are exactly 0
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    loss = model.loss.differentiable_loss(model.model, model.guide, x)
    assert math.isfinite(loss.item())
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, f"{name} gets no gradient"
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, f"{name} has a zero gradient"


def test_raw_svi_runs(example):
    model, x = example
    svi = pyro.infer.SVI(model.model, model.guide, pyro.optim.Adam({"lr": 1e-3}), model.loss)
    assert all(math.isfinite(svi.step(x)) for _ in range(3))


def test_save_load_round_trip(example, tmp_path):
    model, x = example
    pyrogen.fit(model, x, steps=3, progress=False)
    path = tmp_path / "model.pt"
    model.save(path)
    loaded = pyrogen.load(path)
    assert type(loaded) is type(model)
    assert json.loads(json.dumps(loaded.config)) == model.config
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    if hasattr(model, "log_prob"):
        assert torch.equal(loaded.log_prob(x), model.log_prob(x))
    assert not list(tmp_path.glob(".*.tmp")), "no temporary files left behind"


def test_checkpoints_load_without_unpickling_code(example, tmp_path):
    model, _ = example
    path = tmp_path / "model.pt"
    model.save(path)
    torch.load(path, weights_only=True)  # raises if anything but tensors and plain data


def test_sample_shapes(example):
    model, x = example
    draws = model.sample(7)
    assert draws.shape == (7, *x.shape[1:])
    assert torch.isfinite(draws).all()


def test_moves_with_dtype_conversion(example):
    # every parameter and buffer is registered, so .to() converts them all
    model, x = example
    model.double()
    assert all(t.dtype == torch.float64 for t in [*model.parameters(), *model.buffers()])
    loss = model.loss.loss(model.model, model.guide, x.double())
    assert math.isfinite(loss)


@pytest.mark.cuda
def test_moves_to_cuda(example):
    model, x = example
    model.to("cuda")
    assert all(t.is_cuda for t in [*model.parameters(), *model.buffers()])
    assert math.isfinite(model.loss.loss(model.model, model.guide, x.cuda()))
    assert model.sample(3).is_cuda
