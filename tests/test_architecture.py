"""The shape of the package, checked: layers import only downwards, functions stay small,
and the layers above the models know families only through the model contract.

These read the source (no imports run), so they fail the moment a change breaks the rules
that ``docs/architecture.rst`` states.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pyrogen"

#: Layer of each top-level part of the package, bottom (0) to top; a module may import
#: modules of its own layer or below, never above.
LAYERS: dict[str, int] = {
    "version": 0,
    "checks": 0,
    "io": 0,
    "nn": 0,
    "data": 1,
    "models": 2,
    "guides": 2,
    "infer": 3,
    "diagnostics": 4,
    "ood": 4,
    "cli": 5,
    "__init__": 5,
    "__main__": 6,
}

#: Longest function allowed anywhere in the package, in lines (def line to the last line
#: of its body, docstring included).
MAX_FUNCTION_LINES = 80

SOURCES = sorted(PACKAGE.rglob("*.py"))


def _part(module: str) -> str:
    """``pyrogen.models.vae`` -> ``models``; ``pyrogen`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) of every import of ``pyrogen`` in ``path``, lazy ones included."""
    package = _module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "pyrogen":
                    found.append((node.lineno, alias.name, []))
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([module] if module else []))
            if module.split(".")[0] == "pyrogen":
                found.append((node.lineno, module, [alias.name for alias in node.names]))
    return found


def _targets(module: str, names: list[str]) -> list[str]:
    """The modules an import reaches: ``from pyrogen import data`` reaches ``pyrogen.data``."""
    if module != "pyrogen" or not names:
        return [module]
    return [
        f"pyrogen.{name}" if name in LAYERS and name != "__init__" else "pyrogen"
        for name in names
    ]


def test_every_part_of_the_package_has_a_layer():
    parts = {_part(_module_name(path)) for path in SOURCES}
    assert parts <= set(LAYERS), f"no layer for {sorted(parts - set(LAYERS))}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path: Path):
    layer = LAYERS[_part(_module_name(path))]
    upward = [
        f"line {line}: {target} (layer {LAYERS[_part(target)]} > {layer})"
        for line, module, names in _imports(path)
        for target in _targets(module, names)
        if LAYERS[_part(target)] > layer
    ]
    assert not upward, f"{path.name} imports upwards: {upward}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_functions_are_short(path: Path):
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines, line {node.lineno})"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_private_names_from_other_packages(path: Path):
    own = _part(_module_name(path))
    private = [
        f"line {line}: {name} from {module}"
        for line, module, names in _imports(path)
        for name in names
        if name.startswith("_") and not name.startswith("__") and _part(module) != own
    ]
    assert not private, f"{path.name} imports private names: {private}"


ABOVE_THE_MODELS = [
    path for path in SOURCES if _part(_module_name(path)) in ("diagnostics", "ood", "cli")
]


@pytest.mark.parametrize(
    "path", ABOVE_THE_MODELS, ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_reports_and_command_line_know_families_only_through_the_contract(path: Path):
    """No concrete family imported, and no hasattr on a model, above the models."""
    from pyrogen.models import REGISTRY

    families = {cls.__name__ for cls in REGISTRY.values()}
    tree = ast.parse(path.read_text())
    imported = [
        f"line {line}: {name}"
        for line, module, names in _imports(path)
        for name in names
        if name in families
    ]
    probes = [
        f"line {node.lineno}: hasattr({ast.unparse(node.args[0])}, ...)"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "hasattr"
        and "model" in ast.unparse(node.args[0])
    ]
    assert not imported + probes, f"{path.name}: {imported + probes}"
