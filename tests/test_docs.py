"""The user-facing documents stay true to the code: the README is short, the version is the same everywhere, and
every call of the toolkit's API shown in the README or on the documentation site names a function that exists,
with keyword arguments it accepts. (The site itself is built with warnings as errors by `bash tools/run.sh docs`,
which `.ci/run` runs.)"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import tomllib
from pathlib import Path

import pytest

import so3krates_lab

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(path: Path) -> list[str]:
    return FENCE.findall(path.read_text())


def test_readme_is_short():
    n = len((ROOT / "README.md").read_text().splitlines())
    assert n <= 250, f"README.md has {n} lines; the user README stays at most 250 (measurements go to benchmarks/)"


def test_version_is_the_same_in_pyproject_package_and_changelog():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert so3krates_lab.__version__ == version
    first = re.search(r"^## (\S+)", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert first and first.group(1) == version, "the newest CHANGELOG.md entry must be the package's version"


def _dotted(node) -> str | None:
    """'sl.md.simulate' for the expression sl.md.simulate, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


def _aliases(tree) -> dict[str, str]:
    """Names bound by the block's imports of this package: {'sl': 'so3krates_lab', 'LiveMD': ...}."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "so3krates_lab":
                    names[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "so3krates_lab":
            for a in node.names:
                names[a.asname or a.name] = f"{node.module}.{a.name}"
    return names


def _resolve(dotted: str):
    """The object a dotted name such as 'so3krates_lab.md.simulate' names (modules imported on the way)."""
    parts = dotted.split(".")
    obj = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], start=1):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            obj = importlib.import_module(".".join(parts[: i + 1]))
    return obj


def api_calls(source: str):
    """(dotted name in the package, keyword names) for every call of a package name in a code block. Blocks
    that are not valid Python (shell lines, elisions) are skipped by the caller."""
    tree = ast.parse(source)
    aliases = _aliases(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name is None:
                continue
            head, _, rest = name.partition(".")
            if head not in aliases:
                continue
            full = aliases[head] + (f".{rest}" if rest else "")
            yield full, [k.arg for k in node.keywords if k.arg is not None]


CASES = [(page, i, block) for page in PAGES for i, block in enumerate(python_blocks(page))]


def test_the_pages_show_python_code():
    assert len(CASES) >= 8, [p.name for p, _, _ in CASES]


@pytest.mark.parametrize("page,index,block", CASES,
                         ids=[f"{p.relative_to(ROOT)}#{i}" for p, i, _ in CASES])
def test_api_calls_in_the_documents_exist_with_their_keywords(page, index, block):
    try:
        calls = list(api_calls(block))
    except SyntaxError as error:
        pytest.fail(f"{page.relative_to(ROOT)} block {index} is not valid Python: {error}")
    problems = []
    for name, keywords in calls:
        try:
            obj = _resolve(name)
        except (AttributeError, ImportError):
            problems.append(f"{name} does not exist")
            continue
        try:
            signature = inspect.signature(obj)
        except (TypeError, ValueError):
            continue  # builtins without a signature
        params = signature.parameters.values()
        if any(p.kind is p.VAR_KEYWORD for p in params):
            continue
        accepted = {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
        problems += [f"{name}() takes no keyword {k!r}" for k in keywords if k not in accepted]
    assert not problems, f"{page.relative_to(ROOT)} block {index}: " + "; ".join(problems)


def test_the_checker_catches_a_wrong_name_and_a_wrong_keyword():
    calls = dict(api_calls("import so3krates_lab as sl\nsl.md.simulate(1, 2, temperature_K=3)\nsl.md.nope()"))
    assert set(calls) == {"so3krates_lab.md.simulate", "so3krates_lab.md.nope"}
    with pytest.raises((AttributeError, ImportError)):
        _resolve("so3krates_lab.md.nope")
    accepted = inspect.signature(_resolve("so3krates_lab.md.relax")).parameters
    assert "fmax" in accepted and "no_such_keyword" not in accepted
