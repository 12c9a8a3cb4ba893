#!/usr/bin/env bash
# Test the Binder setup as far as possible without mybinder.org:
#   1. copy the working tree (tracked and untracked-but-not-ignored files, as a clone would have) to /tmp,
#   2. build a fresh virtual environment there from binder/requirements.txt alone, run binder/postBuild,
#   3. execute notebooks/01_quickstart.ipynb in smoke mode (SO3KRATES_SMOKE=1) with nbclient in it,
#   4. with --browser: also open it in JupyterLab from that environment in headless Chromium
#      (tests/browser, run by $TEST_PYTHON, default the project's .venv/bin/python, which has Playwright).
# Usage: bash tools/check_binder.sh [--browser] [--keep]      (needs network access to the package index)
# Python: $PYTHON, else python3.11 when present (binder/runtime.txt asks for python-3.11), else python3.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
browser=0; keep=0
for arg in "$@"; do
    case "$arg" in
        --browser) browser=1 ;;
        --keep) keep=1 ;;
        *) echo "unknown option '$arg' (use: --browser --keep)" >&2; exit 2 ;;
    esac
done
py="${PYTHON:-$(command -v python3.11 || command -v python3)}"
want="$(sed -n 's/^python-//p' "$repo/binder/runtime.txt" 2>/dev/null || true)"
have="$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
[ -z "$want" ] || [ "$want" = "$have" ] || echo "warning: binder/runtime.txt asks for python-$want, using $have ($py)" >&2

work="$(mktemp -d /tmp/so3k-binder.XXXXXX)"
cleanup() { if [ "$keep" = 1 ]; then echo "kept $work" >&2; else rm -rf "$work"; fi; }
trap cleanup EXIT
start=$SECONDS
step() { echo "[check_binder $((SECONDS - start)) s] $*" >&2; }

step "copying the working tree to $work/repo"
mkdir "$work/repo"
(cd "$repo" && git ls-files -co --exclude-standard -z | tar --null -T - -cf -) | tar -xf - -C "$work/repo"

step "building $work/venv from binder/requirements.txt ($py, Python $have)"
"$py" -m venv "$work/venv"
export PATH="$work/venv/bin:$PATH" JUPYTER_DATA_DIR="$work/jupyter-data" JUPYTER_CONFIG_DIR="$work/jupyter-config"
unset PYTHONPATH VIRTUAL_ENV
python -m pip install -q --upgrade pip
python -m pip install -q -r "$work/repo/binder/requirements.txt"

step "running binder/postBuild"
(cd "$work/repo" && bash binder/postBuild)

step "executing notebooks/01_quickstart.ipynb (SO3KRATES_SMOKE=1) with nbclient"
(cd "$work/repo/notebooks" && SO3KRATES_SMOKE=1 python - <<'PY'
import time
import nbformat
from nbclient import NotebookClient

notebook = nbformat.read("01_quickstart.ipynb", as_version=4)
t0 = time.monotonic()
NotebookClient(notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": "."}}).execute()
errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
print(f"01_quickstart.ipynb executed in {time.monotonic() - t0:.1f} s, {len(notebook.cells)} cells, "
      f"{len(errors)} error outputs")
PY
)
(cd "$work" && python -c "import so3krates_lab, sys; print('so3krates_lab from', so3krates_lab.__file__, 'python', sys.version.split()[0]); print('shipped models (package data):', so3krates_lab.pretrained.available(), 'in', so3krates_lab.data.shipped_dir())")

if [ "$browser" = 1 ]; then
    step "opening the quickstart in JupyterLab from the Binder environment, in headless Chromium"
    rc=0
    (cd "$work/repo" && SO3KRATES_LAB_PYTHON="$work/venv/bin/python" \
        "${TEST_PYTHON:-$repo/.venv/bin/python}" -m pytest -q -p no:xdist -p no:cacheprovider tests/browser \
        -k 01_quickstart -s) || rc=$?
    mkdir -p "$repo/results" && rm -rf "$repo/results/binder-browser"
    cp -r "$work/repo/results/browser" "$repo/results/binder-browser" && step "screenshots in $repo/results/binder-browser"
    if [ "$rc" != 0 ]; then step "FAILED: the browser test in the Binder environment (exit $rc)"; exit "$rc"; fi
fi
step "OK: the Binder environment runs the quickstart"
