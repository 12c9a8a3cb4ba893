"""so3krates_lab.workflows.benchmarking.md_speed: the three timings come back for the structure asked for, and bad
arguments are refused before any compilation."""

import math

import pytest

from so3krates_lab.data import builtin
from so3krates_lab.graph import graph_from_system
from so3krates_lab.model import Potential, So3kratesConfig, init_variables
from so3krates_lab.workflows.benchmarking import md_speed

TINY = So3kratesConfig.preset("small", features=8, layers=1, radial_basis=8)


def test_md_speed_times_eval_engine_and_ase_on_the_given_structure():
    mol = builtin.ethanol()
    potential = Potential.create(TINY, init_variables(TINY, graph_from_system(mol, TINY.cutoff), seed=0))
    row = md_speed(mol, potential, steps=10, repeats=1, temperature_K=50.0)
    assert row["atoms"] == 9 and row["pairs"] == 36  # every pair of ethanol's 9 atoms is within 5 A
    # ethanol's 36 pairs fit in fewer slots than a list would get: the engine runs on the fixed graph, and the
    # list engine is timed beside it
    assert row["neighbour_list"] == "fixed" and row["capacity"] == 36
    for key in ("eval_ms", "engine_ms_per_step", "list_ms_per_step", "ase_ms_per_step", "compile_s"):
        assert math.isfinite(row[key]) and row[key] > 0, (key, row[key])
    # forced onto a tight list (small skin and headroom): no side timing; ase_steps=0 skips ASE
    tight = md_speed(mol, potential, steps=10, repeats=1, temperature_K=50.0, ase_steps=0, skin=0.1,
                     headroom=1.0, all_pairs=False)
    assert tight["neighbour_list"] == "list" and math.isnan(tight["list_ms_per_step"])
    assert math.isnan(tight["ase_ms_per_step"]) and math.isfinite(tight["engine_ms_per_step"])
    assert tight["skin"] == 0.1 and tight["capacity"] == 36 and tight["list_builds"] >= 1


def test_md_speed_refuses_empty_runs():
    # a potential without variables: any compilation before the check would fail with another error
    with pytest.raises(ValueError, match="steps"):
        md_speed(builtin.ethanol(), Potential.create(TINY, {}), steps=0)


def test_stability_report_reads_finished_unfinished_and_unstable_runs(tmp_path, capsys):
    """benchmarks/stability.py --report: the stable time comes from what each replica's store holds now."""
    import importlib.util
    import json
    from pathlib import Path

    import numpy as np

    from so3krates_lab import Trajectory
    from so3krates_lab.md import TrajectoryStore

    spec = importlib.util.spec_from_file_location(
        "stability_script", Path(__file__).resolve().parents[1] / "benchmarks" / "stability.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)

    def store(name, t_end_fs):
        s = TrajectoryStore(tmp_path / "mol_500K" / name, numbers=[1, 1], timestep_fs=0.5)
        t = np.linspace(t_end_fs / 4, t_end_fs, 4)
        z = np.zeros(4)
        s.append(Trajectory(numbers=[1, 1], time_fs=t, positions=np.zeros((4, 2, 3)), velocities=np.zeros((4, 2, 3)), potential=z,
                        kinetic=z, temperature=np.full(4, 500.0), conserved=z))
        return s

    store("replica_0", 20_000.0)
    (tmp_path / "mol_500K" / "replica_0" / "verdict.json").write_text(json.dumps({"simulated_ps": 20.0}))
    store("replica_1", 7_000.0)  # killed part-way: no verdict
    store("replica_2", 3_500.0).save_stop_reason("stopped at t = 3510.0 fs: a bond length deviates by 0.6 A")
    assert script.main(["--report", "--out", str(tmp_path)]) == 0
    rows = {line.split()[1]: line for line in capsys.readouterr().out.splitlines() if line.startswith("mol_500K")}
    assert "20.00" in rows["0"] and "finished (cap 20 ps)" in rows["0"]
    assert "7.00" in rows["1"] and "unfinished" in rows["1"]
    assert "3.50" in rows["2"] and "UNSTABLE" in rows["2"]
    assert script.main(["--report", "--out", str(tmp_path / "nothing")]) == 1


def test_machine_info_names_the_cpu_class_and_measures_matmul_speed():
    from so3krates_lab.workflows.benchmarking import machine_info, machine_line

    quick = machine_info(calibrate=False)
    assert quick["matmul_gflops"] is None and quick["cores"] >= 1 and isinstance(quick["avx512"], bool)
    info = machine_info(size=256, repeats=3)
    assert info["matmul_gflops"] > 0.1  # any working CPU does a 256^3 product faster than 0.1 GFLOP/s
    line = machine_line(info)
    assert "GFLOP/s" in line and ("no AVX-512" in line) != info["avx512"]


def test_speed_benchmark_prints_its_table_and_the_machine(tmp_path):
    """benchmarks/speed.py end to end on the smallest system: the header names the machine class and the
    table has a finite timing for ethanol."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "speed.py"
    out = tmp_path / "speed.json"
    proc = subprocess.run([sys.executable, str(script), "--systems", "ethanol", "--repeats", "5", "--budget", "0.2",
                           "--warmup", "1", "--nl-repeats", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "machine:" in proc.stdout and "GFLOP/s" in proc.stdout
    payload = json.loads(out.read_text())
    (row,) = payload["rows"]
    assert row["system"] == "ethanol" and row["atoms"] == 9 and row["median_ms"] > 0
    assert payload["machine"]["matmul_gflops"] > 0
