"""Sphinx configuration of the so3krates_lab documentation (build: `bash tools/run.sh docs`)."""

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import so3krates_lab  # noqa: E402

project = "so3krates_lab"
author = "so3krates_lab developers"
copyright = "2026, so3krates_lab developers (MIT licence)"
release = so3krates_lab.__version__
version = release

extensions = [
    "myst_nb",  # Markdown pages and the tutorial notebooks
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.viewcode",
    "sphinx.ext.mathjax",
    "sphinx_copybutton",
    "sphinx_design",
]

# The tutorials are the repository's notebooks (stored without outputs), copied here at build time and rendered
# without executing them: the build stays fast and needs no trained model. tutorials/index.md says so.
_NOTEBOOKS = ROOT / "notebooks"
_RENDERED = Path(__file__).parent / "tutorials" / "notebooks"
_RENDERED.mkdir(exist_ok=True)
for _nb in sorted(_NOTEBOOKS.glob("*.ipynb")):
    shutil.copyfile(_nb, _RENDERED / _nb.name)
nb_execution_mode = "off"

myst_enable_extensions = ["colon_fence", "dollarmath", "amsmath", "deflist"]
myst_heading_anchors = 3

autodoc_default_options = {"members": True, "show-inheritance": False, "member-order": "bysource"}
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autosummary_generate = False

default_role = "py:obj"  # `name` in a docstring links to that object where it can
exclude_patterns = ["_build"]
html_theme = "furo"
html_title = f"so3krates_lab {release}"
nitpicky = False
