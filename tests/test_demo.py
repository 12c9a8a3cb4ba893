"""The main job on the shipped data and model: its test errors reproduce the shipped provenance figures, the MD
runs without tripping a watchdog and conserves energy, and the result files are written."""

import json
import subprocess
import sys

import pytest

from so3krates_lab.data import shipped_path


def test_main_job_on_shipped_data(tmp_path, capsys):
    """`python -m so3krates_lab` with its defaults: the shipped data and model, found as package data."""
    import jax

    from so3krates_lab.workflows.demo import main

    model = shipped_path("models/ethanol_pbe.npz")  # raises when the package lacks its shipped model
    x64 = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", False)  # as in a user's process: float32 throughout
    try:
        assert main(["--steps", "1000", "--out", str(tmp_path)]) == 0
    finally:
        jax.config.update("jax_enable_x64", x64)
    summary = json.loads((tmp_path / "summary.json").read_text())
    shipped = json.loads(model.with_suffix(".provenance.json").read_text())["test_errors"]
    for key in ("energy_mae_meV", "force_mae_meV_A", "force_rmse_meV_A"):
        assert summary["test_errors"][key] == pytest.approx(shipped[key], rel=1e-3)
    md = summary["md"]
    assert md["stopped"] is None and md["steps"] == 1000
    assert md["total_energy_std_meV"] < 10.0
    for name in ("ethanol_nve.extxyz", "md.html", "parity.html", "trajectory/frames_00000.nc"):
        assert (tmp_path / name).stat().st_size > 0
    assert "F (meV/A)" in capsys.readouterr().out


def test_python_dash_m_runs_the_main_job():
    """`python -m so3krates_lab` is the main job's command line (checked with --help: no computation)."""
    out = subprocess.run([sys.executable, "-m", "so3krates_lab", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("usage: python -m so3krates_lab")
    for option in ("--data", "--model", "--train", "--steps", "--out"):
        assert option in out.stdout
