"""The package works when installed as a wheel, outside the repository: the main job and the quick-start notebook
run from another directory, finding the shipped data and models as package data.

The wheel is built from the working tree and installed (without dependencies) into a fresh virtual environment
whose dependencies come from the test's own environment through a path file; the repository is not on the path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python of a fresh venv holding the wheel, a work directory outside the repository)."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"  # a copy of the tracked tree: building must not write into the repository
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, files):
        rel = Path(os.fsdecode(name))
        target = src / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if (REPO / rel).is_symlink():
            os.symlink(os.readlink(REPO / rel), target)
        elif (REPO / rel).is_file():
            shutil.copy2(REPO / rel, target)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(root / "dist"),
                            str(src)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = next((root / "dist").glob("so3krates_lab-*.whl"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                              str(wheel)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    # the dependencies: this environment's site-packages, appended as a plain path (its .pth files, among them
    # an editable install of the repository, are not processed)
    (site / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    work = root / "work"
    work.mkdir()
    return python, work


def _env():
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["SO3KRATES_SMOKE"] = "1"
    return env


def test_installed_package_is_the_wheel_with_its_data(installed):
    python, work = installed
    code = ("import so3krates_lab as sl; print(sl.__file__); print(sl.data.shipped_path('ethanol_pbe_500K.npz')); "
            "print(sl.pretrained.available())")
    out = subprocess.run([str(python), "-c", code], cwd=work, capture_output=True, text=True, env=_env(), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    module, data, models = out.stdout.strip().splitlines()
    assert str(REPO) not in module and "site-packages" in module, module
    assert str(REPO) not in data and Path(data).is_file(), data
    assert "ethanol_pbe" in models and "ac_ala3_nhme_xtb" in models


def test_main_job_runs_from_another_directory(installed):
    python, work = installed
    out = subprocess.run([str(python), "-m", "so3krates_lab", "--steps", "1000", "--out", "demo"], cwd=work,
                         capture_output=True, text=True, env=_env(), timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    summary = json.loads((work / "demo" / "summary.json").read_text())
    assert summary["test_errors"]["n_structures"] > 0 and summary["md"]["steps"] == 1000
    assert (work / "demo" / "ethanol_nve.extxyz").stat().st_size > 0


def test_quickstart_notebook_runs_from_another_directory(installed):
    python, work = installed
    notebook = work / "01_quickstart.ipynb"
    shutil.copy(REPO / "notebooks" / "01_quickstart.ipynb", notebook)
    code = ("import nbformat, nbclient; nb = nbformat.read('01_quickstart.ipynb', as_version=4); "
            "nbclient.NotebookClient(nb, timeout=600, kernel_name='python3').execute(); print('executed')")
    out = subprocess.run([str(python), "-c", code], cwd=work, capture_output=True, text=True, env=_env(), timeout=900)
    assert out.returncode == 0 and "executed" in out.stdout, out.stdout[-2000:] + out.stderr[-4000:]
