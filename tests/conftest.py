"""Shared test set-up: a clean Pyro state before every test, data paths, device marks."""

from __future__ import annotations

import os
from pathlib import Path

import pyro
import pytest
import torch

# Unit tests run many tiny tensor operations, for which one thread is fastest and immune to
# oversubscription when the machine is busy; benchmarks measure with the default threads.
torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PYROGEN_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def clean_pyro_state():
    """Every test starts from an empty param store with validation on (as Pyro's own suite)."""
    pyro.clear_param_store()
    pyro.enable_validation(True)
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()


@pytest.fixture
def shared_data() -> Path:
    """The folder of real data sets kept beside the repository; skips where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DATA} (set PYROGEN_SHARED_DATA)")
    return SHARED_DATA


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_cuda = pytest.mark.skip(reason="no CUDA device present")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip_cuda)
