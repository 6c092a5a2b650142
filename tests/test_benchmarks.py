"""Every benchmark script runs: its ``--quick`` mode, a tiny smoke run of the same code, in a
subprocess as a user would start it, must exit 0 and write its JSON.

The list is explicit (as Pyro's examples tests are), and a separate test fails when a script
in ``benchmarks/`` is missing from it, so that no benchmark can rot unseen.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Modules of ``benchmarks/`` that scripts import; everything else there is a script.
LIBRARY_MODULES = {"__init__", "harness", "references"}
#: (script, extra options, result stem): every script once, and the modes that write
#: results of their own.
RUNS = [
    ("autoregressive_density", (), "autoregressive_density"),
    ("diffusion_overhead", (), "diffusion_overhead"),
    ("diffusion_quality", (), "diffusion_quality"),
    ("diffusion_quality", ("--sets", "2d"), "diffusion_quality_2d"),
    ("diffusion_sampling", (), "diffusion_sampling"),
    ("energy_density", (), "energy_density"),
    ("energy_noise_level", (), "energy_noise_level"),
    ("flows_density", (), "flows_density"),
    ("flows_overhead", (), "flows_overhead"),
    ("flows_posterior", (), "flows_posterior"),
    ("flows_posterior", ("--models", "hier_logistic"), "flows_posterior_hier_logistic"),
    ("flows_posterior", ("--models", "funnel_neutra"), "flows_posterior_funnel_neutra"),
    ("flows_vae_posterior", (), "flows_vae_posterior"),
    ("generative_classifiers", (), "generative_classifiers"),
    ("gan_modes", (), "gan_modes"),
    ("gmm_vs_sklearn", (), "gmm_vs_sklearn"),
    ("gmm_vs_sklearn", ("--scale",), "scale_gmm"),
    ("gmm_vs_sklearn", ("--profile",), "gmm_profile"),
    ("gmm_vs_sklearn", ("--stages",), "gmm_stages"),
    ("ood", (), "ood"),
    ("scale_ddp", (), "scale_ddp"),
    ("scale_gpu", (), "scale_gpu"),
    ("step_overhead", (), "step_overhead"),
    ("vae_clustering", (), "vae_clustering"),
    ("vae_memory", (), "vae_memory"),
    ("vae_overhead", (), "vae_overhead"),
    ("vae_quality", (), "vae_quality"),
    ("vae_semisupervised", (), "vae_semisupervised"),
]
#: Scripts that read MNIST from the shared data folder (the others make their own data).
NEEDS_DATA = {
    "autoregressive_density",
    "diffusion_quality",
    "flows_density",
    "flows_vae_posterior",
    "ood",
    "vae_clustering",
    "vae_quality",
    "vae_semisupervised",
}


def test_every_script_is_listed():
    scripts = {path.stem for path in (REPO / "benchmarks").glob("*.py")} - LIBRARY_MODULES
    listed = {script for script, _, _ in RUNS}
    assert scripts - listed == set(), "benchmark scripts missing from RUNS"
    assert listed - scripts == set(), "RUNS names scripts that do not exist"


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, options, stem", RUNS, ids=[" ".join((s, *o)) for s, o, _ in RUNS]
)
def test_quick_mode_runs(script, options, stem, tmp_path, request):
    command = [sys.executable, "-m", f"benchmarks.{script}", "--quick", "--out", str(tmp_path)]
    command += ["--threads", "1", *options]
    if script in NEEDS_DATA:
        command += ["--data-dir", str(request.getfixturevalue("shared_data"))]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / f"{stem}.json").read_text())
    assert result["quick"] is True
    assert result["command"].startswith(f"python -m benchmarks.{script} --quick")
    assert (tmp_path / f"{stem}.md").read_text().startswith("# ")
