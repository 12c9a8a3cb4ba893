"""The main job on the shipped data and model: its test errors reproduce the shipped provenance figures, the MD
runs without tripping a watchdog and conserves energy, and the result files are written."""

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "data" / "models" / "ethanol_pbe.npz"


@pytest.mark.skipif(not MODEL.exists(), reason="shipped ethanol model not present")
def test_main_job_on_shipped_data(tmp_path, capsys):
    import jax

    from so3krates_lab.demo import main

    x64 = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", False)  # as in a user's process: float32 throughout
    try:
        assert main(["--steps", "1000", "--out", str(tmp_path)]) == 0
    finally:
        jax.config.update("jax_enable_x64", x64)
    summary = json.loads((tmp_path / "summary.json").read_text())
    shipped = json.loads(MODEL.with_suffix(".provenance.json").read_text())["test_errors"]
    for key in ("energy_mae_meV", "force_mae_meV_A", "force_rmse_meV_A"):
        assert summary["test_errors"][key] == pytest.approx(shipped[key], rel=1e-3)
    md = summary["md"]
    assert md["stopped"] is None and md["steps"] == 1000
    assert md["total_energy_std_meV"] < 10.0
    for name in ("ethanol_nve.extxyz", "md.html", "parity.html", "trajectory/frames_00000.nc"):
        assert (tmp_path / name).stat().st_size > 0
    assert "F (meV/A)" in capsys.readouterr().out
