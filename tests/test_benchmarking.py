"""so3krates_lab.benchmarking.md_speed: the three timings come back for the structure asked for, and bad
arguments are refused before any compilation."""

import math

import pytest

from so3krates_lab.benchmarking import md_speed
from so3krates_lab.data import builtin
from so3krates_lab.graph import graph_from_system
from so3krates_lab.model import So3kratesConfig, init_variables

TINY = So3kratesConfig.preset("small", features=8, layers=1, radial_basis=8)


def test_md_speed_times_eval_engine_and_ase_on_the_given_structure():
    mol = builtin.ethanol()
    variables = init_variables(TINY, graph_from_system(mol, TINY.cutoff), seed=0)
    row = md_speed(mol, TINY, variables, steps=10, repeats=1, temperature_K=50.0)
    assert row["atoms"] == 9 and row["pairs"] == 36  # every pair of ethanol's 9 atoms is within 5 A
    for key in ("eval_ms", "engine_ms_per_step", "ase_ms_per_step", "compile_s"):
        assert math.isfinite(row[key]) and row[key] > 0, (key, row[key])
    # a tighter list (smaller skin and headroom) has fewer pair slots; ase_steps=0 skips ASE
    tight = md_speed(mol, TINY, variables, steps=10, repeats=1, temperature_K=50.0, ase_steps=0, skin=0.1,
                     headroom=1.0)
    assert math.isnan(tight["ase_ms_per_step"]) and math.isfinite(tight["engine_ms_per_step"])
    assert tight["skin"] == 0.1 and tight["capacity"] <= row["capacity"]


def test_md_speed_refuses_empty_runs():
    with pytest.raises(ValueError, match="steps"):
        md_speed(builtin.ethanol(), TINY, {}, steps=0)
