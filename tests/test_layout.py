"""Architecture rules from DESIGN.md, enforced by parsing imports (no module is executed)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "so3krates_lab"

# module (first component under so3krates_lab) -> package components it must not import
FORBIDDEN = {
    "structures": {"data", "graph", "model", "train", "md", "analysis", "widgets", "interop", "cli"},
    "units": {"data", "graph", "model", "train", "md", "analysis", "widgets", "interop", "cli"},
    "data": {"graph", "model", "train", "md", "analysis", "widgets", "interop"},
    "graph": {"model", "train", "md", "analysis", "widgets", "interop"},
    "model": {"train", "md", "analysis", "widgets", "interop"},
    "train": {"md", "widgets", "interop"},
    "md": {"model", "train", "widgets", "interop"},
    "analysis": {"model", "train", "widgets", "interop"},
    "autodiff": {"data", "graph", "model", "train", "md", "analysis", "widgets", "interop", "cli"},
}
CORE_FORBIDDEN_THIRD_PARTY = {"plotly", "nglview", "ipywidgets", "matplotlib"}


def _imports(path: Path, rel: tuple[str, ...] | None = None) -> set[str]:
    """Absolute names imported by a module; `rel` is its dotted location, e.g. ("so3krates_lab", "model", "x")."""
    tree = ast.parse(path.read_text())
    found = set()
    if rel is None:
        rel = path.relative_to(PACKAGE.parent).with_suffix("").parts
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(rel[: len(rel) - node.level])
                found.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                found.add(node.module)
    return found


def test_imports_point_one_way():
    violations = []
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        top = parts[0]
        if top not in FORBIDDEN:
            continue
        for name in _imports(path):
            pieces = name.split(".")
            if pieces[0] == "so3krates_lab" and len(pieces) > 1 and pieces[1] in FORBIDDEN[top]:
                violations.append(f"{path.relative_to(PACKAGE)} imports {name}")
            if pieces[0] in CORE_FORBIDDEN_THIRD_PARTY:
                violations.append(f"{path.relative_to(PACKAGE)} imports plotting/widget library {name}")
    assert not violations, "\n".join(violations)


def test_rule_checker_sees_a_violation(tmp_path):
    bad = tmp_path / "probe.py"
    bad.write_text("from ..train import fit\nimport plotly.graph_objects\n")
    found = _imports(bad, rel=("so3krates_lab", "model", "probe"))
    assert "so3krates_lab.train" in found and "plotly.graph_objects" in found


def test_import_has_no_side_effects():
    """Importing the package must not switch JAX to 64 bit or touch the environment."""
    code = (
        "import os, jax; before = dict(os.environ); import so3krates_lab, so3krates_lab.data, "
        "so3krates_lab.graph, so3krates_lab.model; "
        "assert not jax.config.jax_enable_x64, 'x64 switched on at import'; "
        "assert dict(os.environ) == before, 'environment changed at import'; print('clean')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "clean" in out.stdout, out.stderr
