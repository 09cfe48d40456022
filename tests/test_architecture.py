"""The package's layers: core -> data -> methods -> studies, with no import pointing back up."""

from __future__ import annotations

import ast
from pathlib import Path

import clipnb

PACKAGE = Path(clipnb.__file__).parent
LAYERS = ("core", "data", "methods", "studies")


def imports_of(path: Path) -> set[str]:
    """Every clipnb module a file imports, lazily or not."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("clipnb")}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: use absolute clipnb imports"
            if node.module and node.module.startswith("clipnb"):
                found.add(node.module)
    return found


def layer_of(module: str) -> int:
    """0 core … 3 studies; 4 for the top level (the API, the CLI, the runner, the registry)."""
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else len(LAYERS)


def test_no_import_points_up_the_layers():
    arrows_up = []
    for layer in LAYERS:
        for path in sorted((PACKAGE / layer).glob("*.py")):
            for module in imports_of(path):
                if layer_of(module) > LAYERS.index(layer):
                    arrows_up.append(f"{layer}/{path.name} imports {module}")
    assert not arrows_up, "\n".join(arrows_up)


def test_the_check_sees_a_lazy_import_pointing_up(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from clipnb.studies.clipood import run_trial\n")
    assert {layer_of(m) for m in imports_of(bad)} == {LAYERS.index("studies")}


def test_every_module_lives_in_a_layer():
    top = {p.name for p in PACKAGE.glob("*.py")}
    assert top == {"__init__.py", "__main__.py", "runner.py", "registry.py"}, top
