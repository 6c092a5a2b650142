"""The command's one error boundary: one ``pyrogen: error:`` line and a documented exit code
for every failure, tracebacks only with --debug."""

from __future__ import annotations

import json
import random
import re
import shutil

import numpy as np
import pytest

from pyrogen.cli import main
from pyrogen.models import REGISTRY
from tests.cli.helpers import exits_2_with


def _error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


@pytest.mark.parametrize("argv", [[], ["fit"], ["sample"], ["evaluate"]] + [
    ["fit", name] for name in REGISTRY
])  # fmt: skip
def test_help_of_every_command_and_family_exits_0(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--help"])
    assert exited.value.code == 0
    if not argv:
        assert "exit codes: 0 success" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize(
    ("raised", "code", "words"),
    [
        (RuntimeError("boom"), 3, "internal error (RuntimeError: boom); rerun with --debug"),
        (KeyboardInterrupt(), 130, "pyrogen: error: interrupted"),
        (FloatingPointError("loss is nan"), 1, "training failed: loss is nan"),
        (ValueError("--seed: expected an integer"), 2, "pyrogen: error: --seed: expected"),
    ],
)
def test_every_failure_is_one_line_and_its_exit_code(raised, code, words, monkeypatch, capsys):
    def fail(args):
        raise raised

    monkeypatch.setattr("pyrogen.cli.options.load_run", fail)
    monkeypatch.delenv("PYROGEN_DEBUG", raising=False)
    capsys.readouterr()
    assert main(["evaluate", "somewhere"]) == code
    lines = _error_lines(capsys)
    assert lines == [lines[0]] and words in lines[0]


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_debug_shows_the_traceback(how, monkeypatch, capsys):
    def fail(args):
        raise RuntimeError("boom")

    monkeypatch.setattr("pyrogen.cli.options.load_run", fail)
    monkeypatch.setenv("PYROGEN_DEBUG", "1" if how == "environment" else "0")
    argv = ["--debug"] * (how == "flag") + ["sample", "somewhere", "-n", "3"]
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: boom" in err


def _mutations() -> list[tuple[str, object]]:
    """Bad values of the keys sample and evaluate read, and broken files."""
    bad = {
        "seed": ["abc", -1, 2**70, 1.5, True, None, [1]],
        "image_shape": ["abc", [8], [8, "8"], [0, 8], [8, 8, 8, 8], 1e9, {"a": 1}, [8.0, 8.0]],
        "test.iw_samples": [1e9, 10**9, 0, -5, "10", None, True, 100_001],
        "test": ["x", [1]],
        "preprocessing": ["x", {"binarize": 3}],
        "columns": ["abc", [1, 2]],
        "dataset": [5, ["mnist"]],
        "family": [5, None],
        "config": [[], "vae", None],
    }
    rows = [(key, value) for key, values in bad.items() for value in values]
    rows += [("delete", "family"), ("delete", "config")]
    rows += [("file", text) for text in ("[1, 2]", '"abc"', "", "{", "nan", "\x00\xff")]
    return rows


def test_a_tampered_summary_is_one_line_naming_the_file(npy_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(npy_run, run)
    original = (run / "summary.json").read_text()
    mutations = _mutations()
    random.Random(0).shuffle(mutations)
    for _ in range(10):  # and broken JSON: the file cut at seeded places
        mutations.append(
            ("file", original[: random.Random(len(mutations)).randrange(len(original))])
        )
    assert len(mutations) >= 30
    for key, value in mutations:
        summary = json.loads(original)
        if key == "file":
            text = value
        else:
            if key == "delete":
                del summary[value]
            elif key.startswith("test."):
                summary["test"][key.removeprefix("test.")] = value
            else:
                summary[key] = value
            text = json.dumps(summary)
        (run / "summary.json").write_text(text)
        capsys.readouterr()
        for argv in (["evaluate", str(run)], ["sample", str(run), "-n", "2", "--out", "x.npy"]):
            assert main(argv) == 2, (key, value)
            lines = _error_lines(capsys)
            assert len(lines) == 1 and "summary.json" in lines[0], (key, value, lines)
            assert "Traceback" not in lines[0]


def test_evaluate_prints_a_score_that_is_not_finite(grey_images, tmp_path, capsys):
    run = tmp_path / "gaussian"
    argv = ["fit", "vae", "--data", str(grey_images), "--likelihood", "gaussian", "--quiet"]
    assert (
        main([*argv, "--epochs", "1", "--latent-dim", "2", "--iw-samples", "2", "--out", str(run)])
        == 0
    )
    huge = tmp_path / "huge.npy"
    np.save(huge, np.load(grey_images) * 1e19)
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data", str(huge)]) == 0
    out = capsys.readouterr().out
    assert "the score is not finite" in out
    assert re.search(r"log p\(x\) +(nan|-?inf) nats per example", out), out


def test_sample_refuses_rows_that_do_not_fit_in_memory(npy_run, tmp_path, capsys):
    argv = ["sample", str(npy_run), "-n", "10000000000", "--out", str(tmp_path / "x.npy")]
    exits_2_with(argv, r"-n: expected at most \d+ rows, got 10000000000 \(rows of 64 values: "
                 r"about \d+ GiB", tmp_path, capsys, once=True)  # fmt: skip


def test_data_parallel_fit_checks_the_data_before_spawning(tmp_path, capsys):
    argv = ["fit", "vae", "--data", str(tmp_path), "--devices", "2", "--strategy", "ddp"]
    exits_2_with([*argv, "--out", str(tmp_path / "run")],
                 r"^pyrogen: error: --data: expected a data file, got .* \(not a file\)\n$",
                 tmp_path, capsys)  # fmt: skip


def test_a_data_parallel_process_error_is_the_one_process_line(grey_images, tmp_path, capsys):
    argv = ["fit", "vae", "--data", str(grey_images), "--devices", "2", "--strategy", "ddp"]
    argv += ["--columns", "a", "--epochs", "1", "--out", str(tmp_path / "run")]
    exits_2_with(argv, r"(?m)^pyrogen: error: --columns: expected None for .*images.npy \(not a "
                 r"text table\), got \['a'\]$", tmp_path, capsys, once=True)  # fmt: skip


def test_no_message_of_the_command_line_is_an_f_string_missing_its_f():
    import ast
    from pathlib import Path

    import pyrogen.cli

    for path in Path(pyrogen.cli.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        parts = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr)
                 for v in node.values}  # fmt: skip
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if id(node) not in parts and re.search(r"\{[a-z_][\w.\[\]']*\}", node.value):
                    raise AssertionError(f"{path.name}:{node.lineno}: {node.value!r} lacks its f")


def test_key_chooses_the_array_of_an_npz_with_several(tmp_path, capsys):
    from pyrogen.data.datasets import old_faithful

    np.savez(tmp_path / "two.npz", table=old_faithful().numpy(), other=np.zeros((3, 5)))
    images = np.random.default_rng(0).random((40, 8, 8), dtype=np.float32)
    np.savez(tmp_path / "images.npz", first=images, second=np.zeros((4, 2)))
    run, data = tmp_path / "gmm", str(tmp_path / "two.npz")
    argv = ["fit", "gmm", "--data", data, "--key", "table", "--steps", "30", "--num-samples", "20"]
    assert main([*argv, "--out", str(run), "--quiet"]) == 0
    assert main(["evaluate", str(run), "--data", data, "--key", "table"]) == 0
    assert "BIC" in capsys.readouterr().out
    assert main(["evaluate", str(run), "--data", data, "--key", "nope"]) == 2
    assert "unknown key: expected one of 'table', 'other', got 'nope'" in capsys.readouterr().err
    argv = ["fit", "vae", "--data", str(tmp_path / "images.npz"), "--epochs", "1", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "none")]) == 2
    assert "name the images' array with --key NAME" in capsys.readouterr().err
    argv += ["--key", "first", "--latent-dim", "2", "--iw-samples", "2"]
    assert main([*argv, "--out", str(tmp_path / "vae")]) == 0


def test_a_warning_is_one_line(tmp_path, capsys):
    """Training that diverges warns in the command's words, without Python's source line."""
    data = tmp_path / "bits.csv"
    np.savetxt(data, np.random.default_rng(0).random((64, 4)) > 0.5, delimiter=",", fmt="%d")
    argv = ["fit", "vae", "--data", str(data), "--steps", "40", "--lr", "1e6", "--hidden", "8"]
    assert main([*argv, "--out", str(tmp_path / "run"), "--quiet"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pyrogen: warning: fit: training diverged")


def test_an_out_folder_that_cannot_be_made_is_named_before_training(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    argv = ["fit", "gmm", "--data", str(blocker), "--out", str(blocker / "run")]
    assert main(argv) == 2
    assert f"--out: expected a folder that can be created, got '{blocker / 'run'}'" in (
        capsys.readouterr().err
    )
