"""Architecture rules from DESIGN.md, enforced by parsing imports (no module is executed).

Every module of the package belongs to a part (its first component under so3krates_lab/), and every part has
the list of parts it may import. A new module or part that is not classified here fails the test, so the rules
always cover the whole package. Imports inside functions count too, except the few lazy adapter imports listed
in LAZY_ONLY (they may only appear inside a function). Private names (a leading underscore) are never imported
from another part.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "so3krates_lab"

CORE = {"structures", "units", "fileio", "memory", "autodiff", "potential_base"}
# part -> the parts it may import (besides itself)
ALLOWED = {
    "structures": {"fileio"},
    "units": set(),
    "fileio": set(),
    "memory": set(),
    "interrupts": set(),
    # the multi-process job (jax.distributed): training and MD ask it who they are
    "distributed": set(),
    "autodiff": {"structures"},
    "potential_base": {"structures", "autodiff", "graph", "interop"},
    "analytic": {"structures", "potential_base"},
    # data: readers, checks, plausibility (the unit-plausibility check every reader runs), splits, shifts
    "data": {"structures", "units", "fileio"},
    "graph": {"structures"},
    "model": {"structures", "autodiff", "potential_base", "memory", "graph", "fileio"},
    "train": {"structures", "autodiff", "potential_base", "memory", "interrupts", "data", "graph", "model", "fileio",
              "distributed"},
    # md and analysis receive a potential as an argument: they never import the model or training
    "md": {"structures", "autodiff", "potential_base", "memory", "interrupts", "graph", "fileio", "distributed"},
    "analysis": {"structures", "autodiff", "potential_base", "memory", "interrupts", "graph", "md", "fileio",
                 "units", "distributed"},
    "reference": {"structures", "units", "fileio", "interrupts", "data", "analysis"},
    "interop": {"structures", "autodiff", "potential_base", "graph", "model"},
    "widgets": {"structures", "analysis", "md", "train"},
    # front ends: anything
    "pretrained": {"data", "model"},
    "cli": None,
    "workflows": None,
    "shipped": set(),
    "__init__": None,
    "__main__": None,
}
# (part, imported part) pairs allowed only inside a function: adapters loaded when asked for
LAZY_ONLY = {("potential_base", "interop"), ("interop", "model")}
CORE_FORBIDDEN_THIRD_PARTY = {"plotly", "nglview", "ipywidgets", "matplotlib"}
PLOTTING_ALLOWED = {"widgets", "cli", "workflows", "__init__", "__main__"}


def _part(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("").parts
    return rel[0]


def _imports(path: Path, rel: tuple[str, ...] | None = None) -> list[tuple[str, list[str], bool]]:
    """(absolute module, imported names, inside a function?) for every import of a module; `rel` is its dotted
    location, e.g. ("so3krates_lab", "model", "x")."""
    tree = ast.parse(path.read_text())
    if rel is None:
        rel = path.relative_to(PACKAGE.parent).with_suffix("").parts
    found = []

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((a.name, [], in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = list(rel[: len(rel) - child.level])
                    module = ".".join(base + ([child.module] if child.module else []))
                else:
                    module = child.module or ""
                found.append((module, [a.name for a in child.names], in_function))
            visit(child, nested)

    visit(tree, False)
    return found


def _violations(path: Path, part: str, rel=None) -> list[str]:
    out = []
    allowed = ALLOWED[part]
    where = path.name if rel is not None else str(path.relative_to(PACKAGE))
    for module, names, in_function in _imports(path, rel):
        pieces = module.split(".")
        if pieces[0] in CORE_FORBIDDEN_THIRD_PARTY and part not in PLOTTING_ALLOWED:
            out.append(f"{where} imports plotting/widget library {module}")
        if pieces[0] != "so3krates_lab" or len(pieces) < 2:
            continue
        target = pieces[1]
        if target != part:
            if allowed is not None and target not in allowed:
                out.append(f"{where} ({part}) imports {module}: {part} may import only {sorted(allowed)}")
            elif (part, target) in LAZY_ONLY and not in_function:
                out.append(f"{where} imports {module} at module level; only a lazy import inside a function is allowed")
            private = [p for p in pieces[2:] if p.startswith("_") and p != "__init__"]
            private += [n for n in names if n.startswith("_")]
            if target.startswith("_") and target not in ("__init__", "__main__"):
                private.append(target)
            if private:
                out.append(f"{where} imports private {private} from another part ({module})")
    return out


def test_every_module_is_classified():
    parts = {_part(p) for p in PACKAGE.rglob("*.py")}
    unclassified = sorted(parts - set(ALLOWED))
    assert not unclassified, f"classify these parts in tests/test_layout.py ALLOWED: {unclassified}"


def test_imports_point_one_way():
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        violations += _violations(path, _part(path))
    assert not violations, "\n".join(violations)


def test_rule_checker_sees_violations(tmp_path):
    """The checker itself: a model module importing training, a plotting library, a private name of another part
    and a module-level adapter import are all reported; a lazy adapter import is not."""
    bad = tmp_path / "probe.py"
    bad.write_text("from ..train import fit\nimport plotly.graph_objects\nfrom ..md.driver import _private_helper\n")
    found = _violations(bad, "model", rel=("so3krates_lab", "model", "probe"))
    assert any("imports so3krates_lab.train" in v for v in found)
    assert any("plotly" in v for v in found)
    assert any("so3krates_lab.md" in v for v in found)  # md is not allowed for model at all
    private = tmp_path / "private.py"
    private.write_text("from ..md.driver import _private_helper\nfrom ..data._common import FormatError\n")
    found = _violations(private, "analysis", rel=("so3krates_lab", "analysis", "private"))
    assert len([v for v in found if "imports private" in v]) == 2, found
    eager = tmp_path / "eager.py"
    eager.write_text("from .interop import PotentialCalculator\n")
    assert _violations(eager, "potential_base", rel=("so3krates_lab", "potential_base"))
    lazy = tmp_path / "lazy.py"
    lazy.write_text("def f():\n    from .interop import PotentialCalculator\n    return PotentialCalculator\n")
    assert not _violations(lazy, "potential_base", rel=("so3krates_lab", "potential_base"))


def test_import_has_no_side_effects():
    """Importing the package must not switch JAX to 64 bit, start JAX's backends or touch the environment."""
    code = (
        "import os, jax; before = dict(os.environ); import so3krates_lab, so3krates_lab.data, "
        "so3krates_lab.graph, so3krates_lab.model, so3krates_lab.md, so3krates_lab.analysis, so3krates_lab.train; "
        "from jax._src import xla_bridge; "
        "assert not jax.config.jax_enable_x64, 'x64 switched on at import'; "
        "assert not xla_bridge.backends_are_initialized(), 'JAX backends started at import'; "
        "assert dict(os.environ) == before, 'environment changed at import'; print('clean')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "clean" in out.stdout, out.stderr
