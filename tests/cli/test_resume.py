"""``pyrogen fit`` runs that are stopped -- by SIGTERM, Ctrl-C or ``kill -9`` -- and continued
with ``pyrogen fit --resume``: the resumed run's parameters are bit for bit those of a run
that was never stopped, and nothing is left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pyrogen.cli import main
from pyrogen.cli.resume import CHECKPOINT_FILE, COMMAND_FILE, partial_folder
from tests.cli.helpers import summary

# Long enough that a stop lands mid-training (a few seconds), short enough for CI.
STEPS = 800
EVERY = 10


def _command(data: Path, out: Path) -> list[str]:
    return ["fit", "vae", "--data", str(data), "--likelihood", "gaussian", "--latent-dim", "2",
            "--steps", str(STEPS), "--batch-size", "16", "--checkpoint-every", str(EVERY),
            "--out", str(out), "--quiet"]  # fmt: skip


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("resume") / "rows.csv"
    np.savetxt(path, np.random.default_rng(0).normal(size=(120, 3)), delimiter=",")
    return path


@pytest.fixture(scope="module")
def uninterrupted(table) -> Path:
    """The run that was never stopped."""
    out = table.parent / "uninterrupted"
    assert main(_command(table, out)) == 0
    return out


def _stopped_run(table: Path, out: Path, how: signal.Signals) -> subprocess.CompletedProcess:
    """Start ``pyrogen fit`` in another process and send it ``how`` once its first
    checkpoint is written."""
    process = subprocess.Popen(
        [sys.executable, "-m", "pyrogen", *_command(table, out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # One thread, as this process (tests/conftest.py): the same bits need the same
        # order of floating-point sums.
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2]), "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    checkpoint = partial_folder(out) / CHECKPOINT_FILE
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(how)
    stdout, stderr = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _same_parameters(run: Path, other: Path) -> bool:
    ours = torch.load(run / "model.pt", weights_only=True)["state_dict"]
    theirs = torch.load(other / "model.pt", weights_only=True)["state_dict"]
    return ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def _saved_step(out: Path) -> int:
    return torch.load(partial_folder(out) / CHECKPOINT_FILE, weights_only=True)["step"]


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_run_saves_its_state_and_resumes_bit_for_bit(table, uninterrupted, how, capsys):
    out = table.parent / f"stopped-{how.name}"
    stopped = _stopped_run(table, out, how)
    assert stopped.returncode == 130, stopped.stderr
    last = stopped.stderr.strip().splitlines()[-1]
    assert last.startswith("pyrogen: interrupted after step ")
    assert last.endswith(f"continue with: pyrogen fit --resume {out}")
    assert "Traceback" not in stopped.stderr
    assert 0 < _saved_step(out) < STEPS and not out.exists()
    assert main(["fit", "--resume", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)  # the run's own --quiet
    assert _same_parameters(out, uninterrupted)
    final_loss = [summary(run)["training"]["final_loss"] for run in (out, uninterrupted)]
    assert final_loss[0] == final_loss[1]
    assert not partial_folder(out).exists()


def test_a_run_killed_by_sigkill_resumes_bit_for_bit(table, uninterrupted, capsys):
    out = table.parent / "killed"
    killed = _stopped_run(table, out, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    step = _saved_step(out)
    assert 0 < step < STEPS and step % EVERY == 0
    # The same command again is refused (it would lose the training), naming the resume.
    assert main(_command(table, out)) == 2
    assert f"pyrogen fit --resume {out}" in capsys.readouterr().err
    # Resumed from the checkpoint file itself, from another folder: paths are the run's.
    cwd = os.getcwd()
    try:
        os.chdir(table.parent.parent)
        assert main(["fit", "--resume", str(partial_folder(out) / CHECKPOINT_FILE)]) == 0
    finally:
        os.chdir(cwd)
    assert _same_parameters(out, uninterrupted)
    leftovers = [p.name for p in table.parent.iterdir() if p.name.endswith((".tmp", ".partial"))]
    assert leftovers == []


def test_resume_refuses_what_is_not_a_run_in_progress(table, uninterrupted, tmp_path, capsys):
    assert main(["fit", "--resume", str(tmp_path / "nothing")]) == 2
    assert "expected a run in progress" in capsys.readouterr().err
    assert main(["fit", "--resume", str(uninterrupted)]) == 2
    assert "is finished; nothing to resume" in capsys.readouterr().err
    assert main(["fit", "vae", "--resume", str(uninterrupted)]) == 2
    capsys.readouterr()
    assert main(["fit"]) == 2
    assert "expected a FAMILY" in capsys.readouterr().err
    partial = partial_folder(tmp_path / "run")
    partial.mkdir()
    for text in ("{", "[]", '{"argv": [1], "cwd": "/", "out": "x"}',
                 '{"argv": ["banana"], "cwd": "/", "out": "x"}'):  # fmt: skip
        (partial / COMMAND_FILE).write_text(text)
        assert main(["fit", "--resume", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err
        assert str(partial / COMMAND_FILE) in err and len(err.strip().splitlines()) == 1


def test_a_failed_run_leaves_no_folder_in_progress(table, tmp_path, capsys):
    out = tmp_path / "failed"
    assert main(["fit", "vae", "--data", str(table), "--steps", "2", "--out", str(out)]) == 2
    assert "bernoulli" in capsys.readouterr().err  # real-valued rows, default likelihood
    assert list(tmp_path.iterdir()) == []
