#!/usr/bin/env bash
# One entry point for a fresh machine: creates the project-local virtual environment .venv (once),
# installs the package with what the task needs, then runs it.
#   bash tools/run.sh main    # the main job on the shipped data: test errors, MD, result files (python -m so3krates_lab)
#   bash tools/run.sh test    # the test suite
#   bash tools/run.sh docs    # the documentation site, docs/_build/html (Sphinx; warnings are errors)
set -euo pipefail
cd "$(dirname "$0")/.."
task="${1:-main}"; shift || true
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
fi
stamp=".venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -f "$stamp" ]; then
    .venv/bin/python -m pip install -q -e ".[dev,reference,docs]"
    touch "$stamp"
fi
case "$task" in
    main) exec .venv/bin/python -m so3krates_lab "$@" ;;
    # loadgroup: tests marked xdist_group("browser") share one worker (one JupyterLab, one Chromium)
    test) exec .venv/bin/python -m pytest -q -n 2 --dist loadgroup "$@" ;;
    docs) exec .venv/bin/python -m sphinx -W --keep-going -q -b html docs docs/_build/html "$@" ;;
    *) echo "unknown task '$task' (use: main | test | docs)" >&2; exit 2 ;;
esac
