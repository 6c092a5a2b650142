"""fit checks what it can before the first step, and a resume is exact or refused."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch

import pyrogen
from pyrogen.infer.inference_data import to_inference_data
from pyrogen.io import load_checkpoint, save_checkpoint
from pyrogen.models.gmm import GaussianMixture


def rows(n: int = 200, dim: int = 2) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("clip_norm", [0, -1, -1.0, float("nan"), float("inf"), "1", True])
def test_clip_norm_must_be_positive_and_finite(clip_norm):
    with pytest.raises(ValueError, match="clip_norm: expected a positive number"):
        pyrogen.fit(GaussianMixture(2), rows(), steps=2, clip_norm=clip_norm, progress=False)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"lr": "abc"}, "lr: expected a positive number, got 'abc'"),
        ({"lr": -1}, "lr: expected a positive number, got -1"),
        ({"lr": float("nan")}, "lr: expected a positive number, got nan"),
        ({"lr": 0}, "lr: expected a positive number"),
        ({"device": "tpu"}, "device: expected a device such as 'cpu' or 'cuda', got 'tpu'"),
        ({"device": 1.5}, "device: expected .* got 1.5"),
        ({"seed": -1}, "seed: expected a non-negative integer, got -1"),
        ({"seed": 1.5}, "seed: expected a non-negative integer, got 1.5"),
        ({"seed": "x"}, "seed: expected a non-negative integer, got 'x'"),
        ({"steps": 2.5}, "steps: expected a positive integer, got 2.5"),
        ({"steps": None, "epochs": 0}, "epochs: expected a positive integer, got 0"),
        ({"batch_size": "8"}, "batch_size: expected a positive integer, got '8'"),
        ({"micro_batch_size": 0}, "micro_batch_size: expected a positive integer, got 0"),
        ({"checkpoint_every": -3}, "checkpoint_every: expected a positive integer, got -3"),
        ({"min_delta": -0.1}, "min_delta: expected a non-negative number, got -0.1"),
        ({"min_delta": "small"}, "min_delta: expected a non-negative number, got 'small'"),
        ({"early_stopping": 0}, "early_stopping: expected a positive integer, got 0"),
        ({"precision": "16"}, "precision: expected one of '32', 'bf16-mixed', got '16'"),
        ({"strategy": "fsdp"}, "strategy: expected one of 'auto', 'ddp', got 'fsdp'"),
        ({"devices": 0}, "devices: expected a positive integer, got 0"),
        ({"num_nodes": 1.0}, "num_nodes: expected a positive integer, got 1.0"),
        ({"optim": "adam"}, "optim: expected an optimizer class .*got 'adam'"),
    ],
)
def test_every_option_error_names_the_option(options, message):
    with pytest.raises(ValueError, match=message):
        pyrogen.fit(GaussianMixture(2), rows(), progress=False, **{"steps": 2, **options})


def test_valid_numbers_of_other_types_are_accepted():
    import numpy as np

    result = pyrogen.fit(
        GaussianMixture(2),
        rows(),
        steps=2,
        lr=np.float32(0.01),
        clip_norm=5,
        seed=np.int64(3),
        precision=32,
        device="cpu",
        progress=False,
        early_stopping=None,  # both steps, past the MAP-EM mode's one-step check
    )
    assert result.steps == 2


def test_a_checkpoint_in_a_missing_folder_is_refused_before_training(tmp_path):
    calls = []
    folder = tmp_path / "missing" / "dir"
    with pytest.raises(ValueError, match=f"checkpoint: .*no folder '{folder}'"):
        pyrogen.fit(
            GaussianMixture(2),
            rows(),
            steps=5,
            checkpoint=folder / "ck.pt",
            callbacks=[lambda step, loss, model: calls.append(step)],
            progress=False,
        )
    assert calls == []
    with pytest.raises(ValueError, match="checkpoint: expected a file path, got the folder"):
        pyrogen.fit(GaussianMixture(2), rows(), steps=1, checkpoint=tmp_path, progress=False)


@pytest.mark.skipif(
    sys.platform == "win32" or (hasattr(os, "geteuid") and os.geteuid() == 0),
    reason="permissions do not stop this user",
)
def test_a_checkpoint_in_a_read_only_folder_is_refused_and_leaves_nothing(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(
            ValueError, match=f"checkpoint: expected a writable folder, got '{folder}'"
        ):
            pyrogen.fit(GaussianMixture(2), rows(), steps=1, checkpoint=folder / "a.pt")
    finally:
        folder.chmod(0o700)
    assert list(folder.iterdir()) == []


def test_the_probe_file_is_removed(tmp_path):
    path = tmp_path / "run.pt"
    pyrogen.fit(GaussianMixture(2), rows(), steps=1, checkpoint=path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt"]


def _checkpointed(tmp_path, x, **options):
    path = tmp_path / "run.pt"
    pyrogen.fit(GaussianMixture(2), x, steps=3, checkpoint=path, progress=False, **options)
    return path


@pytest.mark.parametrize(
    "change, message",
    [
        ({"x": rows(300)}, "was written for 600 rows, got 300 rows"),
        ({"x": rows(600, 3)}, r"was written for rows of shape \(2,\), got rows of shape \(3,\)"),
        ({"x": rows(600).double()}, "data of dtype torch.float32, got data of dtype torch.float64"),
        ({"batch_size": 64}, "was written for batch_size 32, got batch_size 64"),
        ({"batch_size": None}, "was written for batch_size 32, got the full batch"),
        ({"seed": 4}, "was written for seed 0, got seed 4"),
        (
            {"optim": torch.optim.SGD},
            "optimizer torch.optim.adam.Adam, got optimizer torch.optim.sgd.SGD",
        ),
    ],
)
def test_resume_refuses_other_data_or_settings(tmp_path, change, message):
    options = {"x": rows(600), "batch_size": 32, "seed": 0}
    saved_options = dict(options)
    path = _checkpointed(tmp_path, saved_options.pop("x"), **saved_options)
    options.update(change)
    x = options.pop("x")
    if options["batch_size"] is None:
        options.pop("batch_size")
        options["batch_size"] = 10_000
    with pytest.raises(ValueError, match=message):
        pyrogen.fit(
            GaussianMixture(2), x, steps=6, checkpoint=path, resume=True, progress=False, **options
        )


def test_resume_names_everything_that_differs(tmp_path):
    path = _checkpointed(tmp_path, rows(600), batch_size=32)
    with pytest.raises(ValueError) as error:
        pyrogen.fit(
            GaussianMixture(2),
            rows(300, 3),
            steps=6,
            batch_size=16,
            checkpoint=path,
            resume=True,
            progress=False,
        )
    text = str(error.value)
    assert text.startswith(f"resume: the checkpoint '{path}' was written for 600 rows, rows of")
    assert "got 300 rows, rows of shape (3,), batch_size 16" in text


def test_resume_of_an_older_checkpoint_skips_the_comparison(tmp_path):
    path = _checkpointed(tmp_path, rows(600), batch_size=32)
    saved = load_checkpoint(path)
    del saved["run"]
    save_checkpoint(path, saved)
    result = pyrogen.fit(
        GaussianMixture(2),
        rows(600),
        steps=5,
        batch_size=32,
        checkpoint=path,
        resume=True,
        progress=False,
    )
    assert result.steps == 5


@pytest.mark.parametrize(
    "entry, value",
    [
        ("step", "3"),
        ("step", -1),
        ("permutation", torch.arange(10.0)),
        ("permutation", torch.arange(1000)),
        ("permutation", "no"),
        ("order_rng", torch.zeros(3, dtype=torch.uint8)),
        ("rng_by_rank", "x"),
        ("rng_by_rank", [{"torch": torch.zeros(2)}]),
        ("losses", ["a"]),
    ],
)
def test_a_tampered_training_state_names_the_file(tmp_path, entry, value):
    path = _checkpointed(tmp_path, rows(600), batch_size=32)
    saved = load_checkpoint(path)
    saved[entry] = value
    save_checkpoint(path, saved)
    with pytest.raises(ValueError, match=f"checkpoint '{path}': expected a training state"):
        pyrogen.fit(
            GaussianMixture(2),
            rows(600),
            steps=6,
            batch_size=32,
            checkpoint=path,
            resume=True,
            progress=False,
        )


@pytest.mark.parametrize("devices", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_diverged_training_warns(devices):
    """In the caller's process, also when training ran in spawned processes."""
    vae = pyrogen.VAE((4,), latent_dim=2, hidden=(8,))
    x = (torch.rand(64, 4, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    with pytest.warns(RuntimeWarning, match="training diverged.*smaller lr"):
        pyrogen.fit(vae, x, steps=40, lr=1e6, progress=False, devices=devices)


def test_converging_training_does_not_warn(recwarn):
    pyrogen.fit(GaussianMixture(2), rows(), steps=20, lr=0.01, progress=False)
    assert not [w for w in recwarn if "diverged" in str(w.message)]


def test_inference_data_of_a_vae_says_what_to_use_instead():
    vae = pyrogen.VAE((4,), latent_dim=2, hidden=(8,))
    x = torch.rand(16, 4)
    result = pyrogen.fit(vae, x, steps=1, progress=False)
    for source in (result, vae):
        with pytest.raises(ValueError, match="global latent sites.*pyrogen.diagnostics.score"):
            to_inference_data(source, x, num_samples=3)


def test_a_draw_too_large_for_memory_is_refused_naming_n(monkeypatch):
    from pyrogen.infer import distributed

    gmm = GaussianMixture(2)
    pyrogen.fit(gmm, rows(), steps=2, progress=False)
    with pytest.raises(ValueError, match=r"n: expected a number of rows .*rows of shape \(2,\)"):
        distributed.sample(gmm, 10**13)
    # Sizing a large draw leaves the random state as it was.
    torch.manual_seed(5)
    plain = distributed.sample(gmm, 50, seed=None)
    monkeypatch.setattr(distributed, "_LARGE_DRAW", 0)
    torch.manual_seed(5)
    assert torch.equal(distributed.sample(gmm, 50, seed=None), plain)


@pytest.mark.parametrize("labels", [["a"] * 10, np.array(["0"] * 10), [object()] * 10])
def test_labels_that_are_not_numbers_are_refused_naming_y(labels):
    # Before: torch's "can't convert np.ndarray of type numpy.str_" TypeError.
    model = pyrogen.ConditionalVAE((2,), num_classes=2)
    with pytest.raises(ValueError, match=r"^y: expected integer class labels, got values"):
        pyrogen.fit(model, torch.rand(10, 2), labels, steps=1, progress=False)


def test_resume_refuses_a_model_with_other_settings_naming_only_those(tmp_path):
    path = _checkpointed(tmp_path, rows(600), batch_size=32)
    with pytest.raises(ValueError) as error:
        pyrogen.fit(GaussianMixture(2, covariance="diag"), rows(600), steps=6, batch_size=32,
                    checkpoint=path, resume=True, progress=False)  # fmt: skip
    assert "the model's settings {'covariance': 'full'}, got the model's settings " in str(
        error.value
    )
    assert "{'covariance': 'diag'}" in str(error.value)
