"""Every tensor of every family moves with the model, so that it trains, evaluates and samples
on a GPU with nothing left behind on the CPU.

The examples are the model contract's (``tests/models/test_contract.py``), one or more per
family. Without a GPU, three proxies catch a tensor that ``model.to("cuda")`` would leave on
the CPU:

* no module holds a tensor as a plain attribute (``.to()`` moves parameters and buffers only);
* ``.to(torch.float64)`` converts every floating parameter and buffer;
* a float64 model never meets a float32 tensor while it trains, evaluates, scores or samples:
  such a tensor was made with torch's defaults (float32, and on the CPU) instead of from the
  model or its data. Zero-dim tensors are exempt, as CUDA exempts CPU scalars.

With a GPU, the tests parametrized by ``device`` also run on it (marked ``cuda``): through
the API (``pyrogen.fit(..., device=...)``) and the command line (``--device``); their CPU runs
check the same calls everywhere.
"""

from __future__ import annotations

import json
import math
import sys
import traceback
import types
from collections.abc import Iterator
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

import pyrogen
from pyrogen.cli import main
from pyrogen.data.datasets import old_faithful
from pyrogen.diagnostics import score
from pyrogen.guides import AutoFlow, psis_khat
from pyrogen.models import REGISTRY

# The contract's examples and its fixture (every example, set up), not a copy of them.
sys.path.insert(0, str(Path(__file__).parent / "models"))
import test_contract as contract  # noqa: E402

Example = contract.Example
example = contract.example

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]
# Nesting followed inside plain attributes (lists, dicts, objects such as distributions).
_MAX_DEPTH = 4
# Importance samples of the bounds the evaluations compute.
_SCORE_SAMPLES = 8
_ATOMS = (type, types.ModuleType, types.FunctionType, types.MethodType, types.BuiltinFunctionType)


def _loose_tensors(root: nn.Module) -> list[str]:
    """Where ``root`` holds a tensor that ``root.to()`` does not move: a plain attribute of one
    of its modules, or inside one (a list, a dict, an object such as a distribution), or in a
    module that is not registered (kept in a list, say)."""
    registered = {id(module) for module in root.modules()}
    seen: set[int] = set()
    found: list[str] = []

    def visit(value: Any, path: str, depth: int) -> None:
        if id(value) in seen or depth > _MAX_DEPTH or isinstance(value, _ATOMS):
            return
        seen.add(id(value))
        if isinstance(value, torch.Tensor):
            found.append(path)
        elif isinstance(value, nn.Module):
            if id(value) not in registered:
                tensors = chain(value.named_parameters(), value.named_buffers())
                found.extend(f"{path}.{name}" for name, _ in tensors)
        elif isinstance(value, dict):
            for key, item in value.items():
                visit(item, f"{path}[{key!r}]", depth + 1)
        elif isinstance(value, (list, tuple, set, frozenset)):
            for index, item in enumerate(value):
                visit(item, f"{path}[{index}]", depth + 1)
        elif hasattr(value, "__dict__"):
            for key, item in vars(value).items():
                visit(item, f"{path}.{key}", depth + 1)

    for name, module in root.named_modules():
        for key, value in vars(module).items():
            if key not in ("_parameters", "_buffers", "_modules"):  # what .to() moves
                visit(value, f"{name or type(root).__name__}.{key}", 0)
    return found


class _DtypeMixing(TorchFunctionMode):
    """Records the torch calls given floating tensors of more than one dtype (0-d excepted),
    with the last frames of their call stack."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def __torch_function__(self, func, _types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [
            t
            for value in (*args, *kwargs.values())
            for t in (value if isinstance(value, (list, tuple)) else (value,))
            if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dim() > 0
        ]
        if len({t.dtype for t in tensors}) > 1:
            frames = traceback.extract_stack(limit=5)[:-1]
            where = " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in reversed(frames))
            self.found.append(f"{getattr(func, '__name__', func)} at {where}")
        return func(*args, **kwargs)


def _on(device: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: value.to(device) for name, value in tensors.items()}


def _sample_kwargs(example: Example, n: int, device: str = "cpu") -> dict[str, torch.Tensor]:
    return _on(device, {name: value[:n] for name, value in example.sample_kwargs.items()})


def _model_tensors(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    return chain(model.named_parameters(), model.named_buffers())


# --- without a GPU ----------------------------------------------------------------------
def test_no_module_holds_a_tensor_as_a_plain_attribute(example):
    found = _loose_tensors(example.model)
    assert not found, f"left behind by .to() (register them as buffers): {found}"


def test_to_converts_every_floating_parameter_and_buffer(example):
    model = example.model.to(torch.float64)
    left = [
        n for n, t in _model_tensors(model) if t.is_floating_point() and t.dtype != torch.float64
    ]
    assert not left, f"not converted by .to(): {left}"


def _training_loss(model, x, y) -> float:
    """What ``fit`` differentiates: the ELBO, or every player's loss of a GAN, summed."""
    if model.players():
        return sum(model.player_loss(p.name, x, y, len(x)).item() for p in model.players())
    return model.loss.loss(model.model, model.guide, x, y)


def test_float64_never_meets_a_float32_tensor(example):
    model, y = example.model.double(), example.y
    x = example.x.double()
    options = {key: value.double() for key, value in _sample_kwargs(example, 3).items()}
    with _DtypeMixing() as mixing:
        _training_loss(model, x, y)
        if getattr(model, "generates_data", True):  # not a discriminative family
            model.sample(3, **options)
        score(model, x, labels=y, iw_samples=2)
    assert not mixing.found, "tensors made with torch's defaults:\n" + "\n".join(mixing.found)


def test_the_checks_find_what_they_look_for():
    class Leaky(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(2))  # registered: fine
            self.scale = torch.ones(2)
            self.priors = [dist.Normal(torch.zeros(2), 1.0)]
            self.heads = [nn.Linear(2, 1)]  # a module kept in a list is not registered

    found = _loose_tensors(Leaky())
    assert {"Leaky.scale", "Leaky.priors[0].loc", "Leaky.heads[0].weight"} <= set(found)
    assert not _loose_tensors(nn.Sequential(nn.Linear(2, 2)))
    with _DtypeMixing() as mixing:
        torch.ones(2, dtype=torch.float64) * torch.tensor(2.0)  # a scalar: allowed
    assert not mixing.found
    with _DtypeMixing() as mixing:
        torch.ones(2, dtype=torch.float64) * torch.ones(2)
    assert len(mixing.found) == 1 and mixing.found[0].startswith("mul")


# --- on every device (the CUDA runs need a GPU) -----------------------------------------
@pytest.mark.parametrize("device", DEVICES)
def test_trains_evaluates_scores_and_samples_on(device, example, tmp_path):
    model, x, y = example.model, example.x, example.y
    # early_stopping=None: two updates even where a MAP-EM mode's check would stop at one
    options = {"steps": 2, "device": device, "progress": False, "early_stopping": None}
    result = pyrogen.fit(model, x, y, **options)
    assert result.device.startswith(device) and result.steps == 2
    left = [name for name, t in _model_tensors(model) if t.device.type != device]
    assert not left, f"on another device than {device}: {left}"

    labels = None if y is None else y.to(device)
    # Every per-example score of the model contract, and bits/dim from them.
    outputs = {}
    if model.has_likelihood:
        outputs.update(model.score_examples(x.to(device), labels, num_samples=_SCORE_SAMPLES))
        outputs["bits_per_dim"] = model.bits_per_dim(
            x.to(device), labels, num_samples=_SCORE_SAMPLES
        )
    if model.exact_likelihood:
        condition = {} if y is None else {"y": labels}
        outputs["log_prob"] = model.log_prob(x.to(device), **condition)
    if getattr(model, "generates_data", True):  # not a discriminative family
        outputs["sample"] = model.sample(3, **_sample_kwargs(example, 3, device))
        assert outputs["sample"].shape == (3, *x.shape[1:])
    for name, value in outputs.items():
        assert value.device.type == device, name
        assert torch.isfinite(value).all(), name
    stats = score(model, x, labels=y, iw_samples=8)  # data on the CPU, as in run reports
    assert math.isfinite(stats["log_likelihood_per_example" if model.has_likelihood else "mmd"])

    path = tmp_path / "model.pt"
    model.save(path)
    loaded = pyrogen.load(path)  # on the CPU, whatever it was trained on
    state = loaded.state_dict()
    for name, value in model.state_dict().items():
        assert state[name].device.type == "cpu" and torch.equal(state[name], value.cpu()), name
    assert math.isfinite(_training_loss(loaded, x, y))
    if getattr(model, "generates_data", True):
        draws = loaded.sample(3, **_sample_kwargs(example, 3))
        assert draws.device.type == "cpu" and torch.isfinite(draws).all()


@pytest.mark.parametrize("device", DEVICES)
def test_psis_khat_of_a_flow_guide_on(device):
    def model(x: torch.Tensor) -> None:
        loc = pyro.sample("loc", dist.Normal(x.new_zeros(()), 10.0))
        with pyro.plate("rows", x.shape[0]):
            pyro.sample("obs", dist.Normal(loc, 1.0), obs=x)

    x = torch.randn(50, device=device) + 3
    guide = AutoFlow(model, "maf", transforms=1, hidden=(8,)).setup(x)
    assert all(t.device.type == device for t in chain(guide.parameters(), guide.buffers()))
    assert not math.isnan(psis_khat(model, guide, x, num_samples=200))


# --- the command line ---------------------------------------------------------------------
_IMAGE_RUN = ["--epochs", "2", "--batch-size", "32", "--iw-samples", "2", "--latent-dim", "2"]
_IMAGE_RUN += ["--binarize", "dynamic"]  # a new binary draw of the images every epoch
#: ``pyrogen fit FAMILY`` options of a run of a few steps, and the data it is evaluated on:
#: {csv} is the Old Faithful table, {npz} 90 labelled 8 x 8 images (arrays x and y).
_CLI_RUNS = {
    "gmm": (
        ["--data", "{csv}", "--components", "2", "--steps", "5", "--num-samples", "5"],
        "{csv}",
    ),
    "vae": (["--data", "{npz}", *_IMAGE_RUN], "{npz}"),
    "cvae": (["--data", "{npz}", *_IMAGE_RUN], "{npz}"),
    "ssvae": (["--data", "{npz}", "--labelled", "7", *_IMAGE_RUN], "{npz}"),
    "gmvae": (
        ["--data", "{npz}", "--components", "3", "--warmup-epochs", "1", *_IMAGE_RUN],
        "{npz}",
    ),
    "flow": (["--data", "{csv}", "--steps", "5", "--transforms", "1", "--hidden", "8"], "{csv}"),
    "gan": (["--data", "{csv}", "--steps", "5", "--hidden", "8"], "{csv}"),
    "flowgan": (
        ["--data", "{csv}", "--steps", "5", "--hidden", "8", "--likelihood-weight", "0.1"],
        "{csv}",
    ),
    "energy": (["--data", "{csv}", "--steps", "5", "--hidden", "8"], "{csv}"),
    "autoregressive": (
        ["--data", "{csv}", "--likelihood", "gaussian", "--steps", "5", "--hidden", "8"]
        + ["--num-masks", "2"],
        "{csv}",
    ),
    "naive_bayes": (["--data", "{csv}", "--steps", "5"], "{csv}"),  # a latent-class model
    "logistic_regression": (["--data", "{table}", "--labels", "class", "--steps", "5"], "{table}"),
    "diffusion": (
        ["--data", "{npz}", "--likelihood", "discretized", "--conditional", "--channels", "8"]
        + ["--timesteps", "5", "--steps", "3", "--batch-size", "16"],
        "{npz}",
    ),
    "noise_classifier": (
        ["--data", "{npz}", "--diffusion", "{diffusion}", "--channels", "4", "--hidden", "8"]
        + ["--steps", "3", "--batch-size", "16"],
        "{npz}",
    ),
}


@pytest.fixture(scope="module")
def data_files(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("device_data")
    csv, npz = folder / "faithful.csv", folder / "classes.npz"
    np.savetxt(csv, old_faithful().numpy(), delimiter=",", header="eruptions,waiting", comments="")
    labels = np.arange(90) % 3
    images = 0.2 * np.random.default_rng(0).random((90, 8, 8), dtype=np.float32)
    for k in range(3):  # each class a bright vertical band
        images[labels == k, :, 2 * k : 2 * k + 3] += 0.7
    np.savez(npz, x=images, y=labels)
    table = folder / "classes.csv"  # Old Faithful with a class column: long eruptions
    faithful = old_faithful().numpy()
    rows = np.column_stack([faithful, faithful[:, 0] > 3])
    np.savetxt(table, rows, delimiter=",", header="eruptions,waiting,class", comments="")
    diffusion = folder / "diffusion.pt"  # the model a noise classifier reads the latents of
    pyrogen.DiffusionVAE((8, 8), 5, likelihood="discretized", channels=8).save(diffusion)
    files = {"{csv}": csv, "{npz}": npz, "{table}": table, "{diffusion}": diffusion}
    return {key: str(path) for key, path in files.items()}


def test_every_family_has_a_command_line_run():
    assert set(_CLI_RUNS) == set(REGISTRY)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("family", sorted(_CLI_RUNS))
def test_command_line_fits_and_evaluates_on(device, family, data_files, tmp_path):
    options, data = _CLI_RUNS[family]
    options = [data_files.get(option, option) for option in options]
    out = tmp_path / "run"
    assert main(["fit", family, *options, "--device", device, "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["training"]["device"].startswith(device)
    labels = ["--labels", "class"] if "--labels" in options else []
    evaluate = ["evaluate", str(out), "--data", data_files[data], *labels, "--device", device]
    assert main(evaluate) == 0
    if not REGISTRY[family].generates_data:  # discriminative: no x to draw
        return
    draws = tmp_path / "draws.npy"
    assert main(["sample", str(out), "-n", "3", "--out", str(draws)]) == 0
    assert np.isfinite(np.load(draws)).all()
