"""README.md stays true: its set-up commands, its example and the names it mentions.

The two set-up commands are what a newcomer copies first, so they are checked against
``.ci/run`` (which must run the same tests after the same torch pin) and against the docs'
installation page, and the Python example is executed.
"""

from __future__ import annotations

import importlib
import os
import re
import stat
from pathlib import Path

import pytest

import pyrogen

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
CI_SCRIPT = REPO / ".ci" / "run"
INSTALLATION_PAGE = REPO / "docs" / "installation.rst"

FENCE = re.compile(r"^```(?P<lang>[\w-]*)[ \t]*\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
SETUP_PREFIX = "python3 -m venv .venv && . .venv/bin/activate && "
TORCH_PIN = re.compile(r"pip install (?:-q )?torch==(?P<version>[\w.+]+)")
EXTRAS = re.compile(r'pip install (?:-q )?-e "?\.(?:\[(?P<extras>[\w,-]+)\])?"?')
PYTEST_PART = "python -m pytest -q --doctest-modules pyrogen tests"


def fenced_blocks(text: str, languages: set[str]) -> list[str]:
    return [m["body"] for m in FENCE.finditer(text) if m["lang"] in languages]


def setup_commands() -> list[str]:
    """Every line of a README shell fence that creates the virtual environment."""
    text = README.read_text()
    return [
        line.strip()
        for body in fenced_blocks(text, SHELL_LANGUAGES)
        for line in body.splitlines()
        if line.strip().startswith("python3 -m venv")
    ]


def readme_test_command() -> str:
    return next(c for c in setup_commands() if c.endswith(PYTEST_PART))


def extras(command: str) -> set[str]:
    match = EXTRAS.search(command)
    assert match, f"expected 'pip install -e .[...]' in {command!r}"
    return set(filter(None, (match["extras"] or "").split(",")))


def test_readme_has_exactly_two_setup_commands():
    commands = setup_commands()
    assert len(commands) == 2, f"expected two set-up commands in README.md, got {commands}"
    for command in commands:
        assert command.startswith(SETUP_PREFIX), command
        assert "\\" not in command, f"expected a single line, got {command!r}"
        parts = command.split(" && ")
        assert TORCH_PIN.fullmatch(parts[2]), f"expected torch installed first, pinned: {command!r}"
        assert parts[3].startswith("pip install -e "), command
    assert any(c.endswith(" && pyrogen fit gmm") for c in commands), commands
    assert any(c.endswith(" && " + PYTEST_PART) for c in commands), commands


def test_setup_commands_are_alone_in_their_fences():
    """Copy-paste takes the whole block: each set-up command is the only line of its fence."""
    blocks = [
        [line for line in body.splitlines() if line.strip()]
        for body in fenced_blocks(README.read_text(), SHELL_LANGUAGES)
    ]
    for command in setup_commands():
        assert [command] in blocks, f"expected {command!r} alone in a ```bash fence"


def test_both_commands_pin_the_same_torch():
    versions = {TORCH_PIN.search(c)["version"] for c in setup_commands()}
    assert len(versions) == 1, versions


def test_ci_runs_the_readme_test_command():
    """.ci/run and the README cannot drift: same torch pin, extras, pytest invocation."""
    ci = CI_SCRIPT.read_text()
    readme_test = readme_test_command()
    ci_pin = TORCH_PIN.search(ci)
    assert ci_pin, ".ci/run: expected 'pip install torch==...'"
    assert ci_pin["version"] == TORCH_PIN.search(readme_test)["version"]
    assert ci.index(ci_pin[0]) < ci.index("pip install -q -e"), ".ci/run: torch must come first"
    assert extras(readme_test) <= extras(ci), ".ci/run must install the README's test extras"
    ci_lines = [line.strip() for line in ci.splitlines()]
    assert PYTEST_PART in ci_lines, f".ci/run: expected the line {PYTEST_PART!r}"
    assert readme_test.split(" && ")[-1] == PYTEST_PART


def test_ci_script_is_strict_and_builds_the_docs():
    ci = CI_SCRIPT.read_text()
    assert ci.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in ci
    assert 'cd "$(dirname "$0")/.."' in ci
    assert "python3 -m venv" in ci
    assert "PYROGEN_SMOKE=1 python -m sphinx -b html" in ci
    assert os.stat(CI_SCRIPT).st_mode & stat.S_IXUSR, ".ci/run must be executable"


def test_installation_page_repeats_the_readme_commands():
    page = INSTALLATION_PAGE.read_text()
    for command in setup_commands():
        assert command in page, f"docs/installation.rst: expected {command!r}"


def test_readme_links_point_to_files():
    for target in re.findall(r"\]\(([^)\s]+)\)", README.read_text()):
        if target.startswith(("http://", "https://", "#")):
            continue
        assert (REPO / target.split("#")[0]).exists(), f"README.md links to missing {target}"


def resolve(dotted: str):
    """``pyrogen.a.b`` as an attribute chain, importing submodules where needed."""
    parts = dotted.split(".")
    obj = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], start=1):
        if not hasattr(obj, part):
            importlib.import_module(".".join(parts[: i + 1]))
        obj = getattr(obj, part)
    return obj


def test_every_pyrogen_name_in_readme_exists():
    names = set(re.findall(r"\bpyrogen(?:\.[A-Za-z_]\w*)+", README.read_text()))
    assert "pyrogen.GaussianMixture" in names
    for name in sorted(names):
        resolve(name)  # raises AttributeError / ImportError naming what is missing


def test_every_model_attribute_in_readme_exists():
    text = README.read_text()
    for attribute in sorted(set(re.findall(r"(?<![/\w])gmm\.([A-Za-z_]\w*)", text))):
        assert hasattr(pyrogen.GaussianMixture, attribute), f"README.md uses gmm.{attribute}"
    if "`losses` of a `FitResult`" in text:
        assert "losses" in pyrogen.FitResult.__dataclass_fields__


def test_readme_example_runs(capsys):
    blocks = fenced_blocks(README.read_text(), {"python"})
    assert len(blocks) == 1, "expected one Python example in README.md"
    namespace: dict = {"__name__": "readme_example"}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    gmm = namespace["gmm"]
    assert isinstance(gmm, pyrogen.GaussianMixture)
    assert gmm.predict(pyrogen.data.old_faithful()).shape == (272,)
    assert namespace["loss"] > 0  # a negative log joint of 272 rows, in nats
    assert capsys.readouterr().out.strip()


@pytest.mark.parametrize("page", ["gmm", "api", "architecture", "benchmarks", "installation"])
def test_readme_docs_pages_exist(page):
    assert (REPO / "docs" / f"{page}.rst").is_file()
