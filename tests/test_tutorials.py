"""Every tutorial runs end to end in smoke mode, so the tutorials never rot.

As in Pyro's ``tests/test_examples.py``: each tutorial must be listed in ``TUTORIALS``, and
each is run as a script in a fresh process (``PYROGEN_SMOKE=1``, the Agg backend, an empty
working directory), exactly as the docs build runs it, only with tiny step counts.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIALS_DIR = Path(__file__).resolve().parents[1] / "tutorials"

#: Every tutorial, in reading order. A new ``tutorials/plot_*.py`` must be added here.
TUTORIALS = [
    "plot_gaussian_mixtures.py",
    "plot_vae.py",
    "plot_conditional_vae.py",
    "plot_semisupervised_vae.py",
    "plot_generative_classifiers.py",
    "plot_flow_guides.py",
    "plot_flow_densities.py",
    "plot_energy.py",
    "plot_autoregressive.py",
    "plot_gan.py",
    "plot_diffusion.py",
    "plot_ood.py",
]

# Smoke runs take well under a minute; this only stops a hung run from hanging the suite.
TIMEOUT_S = 600


def test_every_tutorial_is_listed():
    found = sorted(path.name for path in TUTORIALS_DIR.glob("*.py"))
    unlisted = sorted(set(found) - set(TUTORIALS))
    missing = sorted(set(TUTORIALS) - set(found))
    assert not unlisted, f"tutorials not listed in tests/test_tutorials.py TUTORIALS: {unlisted}"
    assert not missing, f"TUTORIALS lists files that do not exist in tutorials/: {missing}"


@pytest.mark.parametrize("name", TUTORIALS)
def test_tutorial_is_a_gallery_script(name):
    source = (TUTORIALS_DIR / name).read_text()
    # sphinx-gallery executes only files matching filename_pattern "/plot_" in docs/conf.py,
    # and takes the page title from the module docstring.
    assert name.startswith("plot_"), f"{name}: sphinx-gallery would not execute it"
    assert source.lstrip().startswith('"""'), f"{name}: expected a docstring title first"
    # Without the flag the smoke run below would run at full length.
    assert "PYROGEN_SMOKE" in source, f"{name}: expected it to read PYROGEN_SMOKE"


def test_gallery_has_a_readme():
    assert (TUTORIALS_DIR / "README.txt").is_file(), "sphinx-gallery needs tutorials/README.txt"


@pytest.mark.parametrize("name", TUTORIALS)
def test_tutorial_runs_in_smoke_mode(name, tmp_path):
    env = {**os.environ, "PYROGEN_SMOKE": "1", "MPLBACKEND": "Agg"}
    completed = subprocess.run(
        [sys.executable, str(TUTORIALS_DIR / name)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert completed.returncode == 0, (
        f"{name} failed (exit {completed.returncode}):\n{completed.stderr[-5000:]}"
    )
