"""so3krates-train resume pitfalls: a rerun into the same --out with another split, another data file or another
model configuration stops with a clear message (no traceback) instead of silently reusing or crashing."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from so3krates_lab import MorsePotential
from so3krates_lab.cli import main
from so3krates_lab.data import builtin
from so3krates_lab.model import load_checkpoint
from so3krates_lab.structures import System

FAST = ["--preset", "small", "--steps", "2", "--eval-every", "1", "--batch-size", "1", "--no-progress",
        "--no-refit-energies"]
SPLIT = ["--n-train", "20", "--n-valid", "5", "--n-test", "5", "--seed", "3"]


def write_data(path, n: int = 30, seed: int = 0):
    """An sGDML-style npz of n perturbed ethanols labelled by a Morse potential (eV, Angstrom)."""
    ref = builtin.ethanol()
    rng = np.random.default_rng(seed)
    systems = [System(numbers=ref.numbers, positions=ref.positions + 0.05 * rng.normal(size=ref.positions.shape))
               for _ in range(n)]
    pred = MorsePotential(cutoff=6.0).evaluate(systems)
    np.savez(path, R=np.stack([s.positions for s in systems]), z=ref.numbers, E=pred.energies[:, None],
             F=np.stack(pred.forces), e_unit="eV", r_unit="Ang")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(data file, a finished 2-step run into out/) made once; tests work on copies of out/."""
    root = tmp_path_factory.mktemp("cli")
    data = write_data(root / "ethanol.npz")
    assert main([str(data), "--out", str(root / "run"), *SPLIT, *FAST]) == 0
    return data, root / "run"


@pytest.fixture
def run(trained, tmp_path):
    data, out = trained
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    return data, copy


def state(out):
    return (out / "split.json").read_text(), load_checkpoint(out / "model.npz").step


@pytest.mark.parametrize("changed, expected", [
    (["--n-train", "18"], ["--n-train 20 -> 18"]),
    (["--n-valid", "4", "--n-test", "6"], ["--n-valid 5 -> 4", "--n-test 5 -> 6"]),
    (["--seed", "4"], ["--seed 3 -> 4"]),
])
def test_other_split_options_stop_with_a_message(run, capsys, changed, expected):
    data, out = run
    before = state(out)
    capsys.readouterr()
    argv = [str(data), "--out", str(out), *SPLIT, *FAST]
    for i in range(0, len(changed), 2):
        argv[argv.index(changed[i]) + 1] = changed[i + 1]
    assert main(argv) == 2
    err = capsys.readouterr().err
    for text in expected:
        assert text in err
    assert "--fresh" in err and "--out" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert state(out) == before  # nothing was overwritten


def test_same_or_no_split_options_resume_with_the_saved_split(run):
    data, out = run
    split_before, _ = state(out)
    steps3 = [a if a != "2" else "3" for a in FAST]
    assert main([str(data), "--out", str(out), *SPLIT, *steps3]) == 0
    assert state(out) == (split_before, 3)
    # No split options at all: the saved 20/5/5 split is kept (not the 80%/10% default).
    steps4 = [a if a != "2" else "4" for a in FAST]
    assert main([str(data), "--out", str(out), *steps4]) == 0
    assert state(out) == (split_before, 4)


def test_fresh_starts_a_new_run_with_the_new_split(run):
    data, out = run
    argv = [str(data), "--out", str(out), *SPLIT, *FAST, "--fresh"]
    argv[argv.index("--n-train") + 1] = "18"
    assert main(argv) == 0
    assert len(json.loads((out / "split.json").read_text())["train"]) == 18


def test_split_of_another_data_file_stops_with_a_message(run, tmp_path, capsys):
    data, out = run
    other = write_data(tmp_path / "other.npz", seed=1)
    before = state(out)
    capsys.readouterr()
    assert main([str(other), "--out", str(out), *FAST]) == 2
    err = capsys.readouterr().err
    assert "another data file" in err and "sha256" in err
    assert "--fresh" in err and "--out" in err and "Traceback" not in err
    assert state(out) == before


def test_other_model_config_stops_with_a_cli_message(run, capsys):
    data, out = run
    before = state(out)
    capsys.readouterr()
    argv = [str(data), "--out", str(out), *SPLIT, *FAST]
    argv[argv.index("small")] = "invariant"
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "model.npz" in err and "--fresh" in err and "--out" in err
    assert "resume=False" not in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert state(out) == before


def test_init_fine_tunes_a_trained_model_from_its_parameters(trained, tmp_path, capsys):
    """--init MODEL starts from that model's parameters and configuration (the preset is ignored): with a zero
    learning rate the new run's parameters stay the old best model's; a missing model is named in one line."""
    import jax

    data, out = trained
    argv = [str(data), "--out", str(tmp_path / "tuned"), *SPLIT, *FAST, "--init", str(out / "model_best.npz")]
    argv[argv.index("small")] = "invariant"  # ignored: the configuration comes from --init
    assert main(argv + ["--lr", "0"]) == 0
    start, tuned = load_checkpoint(out / "model_best.npz"), load_checkpoint(tmp_path / "tuned" / "model.npz")
    assert tuned.config == start.config and tuned.step == 2
    for a, b in zip(jax.tree.leaves(start.variables["params"]), jax.tree.leaves(tuned.variables["params"])):
        np.testing.assert_array_equal(a, b)
    capsys.readouterr()
    assert main([str(data), "--out", str(tmp_path / "x"), *SPLIT, *FAST, "--init", str(tmp_path / "none.npz")]) == 2
    err = capsys.readouterr().err
    assert "--init" in err and "none.npz" in err and "Traceback" not in err


def test_ctrl_c_during_training_saves_a_resumable_checkpoint(tmp_path):
    """Issue 17, item 1: SIGINT while the compiled step owns its donated parameters used to crash with
    "Array has been deleted" and save nothing. Now the first Ctrl-C stops after the current step, saves, and the
    CLI exits with 130; the checkpoint loads and the same command resumes from it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    data = write_data(tmp_path / "ethanol.npz")
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "so3krates_lab.cli", str(data), "--out", str(out), *SPLIT, "--preset", "small",
            "--steps", "100000", "--eval-every", "20", "--batch-size", "1", "--no-progress", "--no-refit-energies"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 300
        while not (out / "model.npz").exists():  # training is under way, past its first validation
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.2)
        time.sleep(1.0)
        os.kill(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stdout[-2000:] + stderr[-3000:]
    assert "interrupted (SIGINT) at step" in stdout and "Traceback" not in stderr, stderr[-3000:]
    saved = load_checkpoint(out / "model.npz")
    assert saved.step >= 20 and saved.opt_state_leaves is not None
    step = saved.step
    # the same command resumes from the interrupted step
    more = [a if a != "100000" else str(step + 2) for a in argv[3:]]
    assert main(more) == 0
    assert load_checkpoint(out / "model.npz").step == step + 2


def test_the_preset_help_names_every_preset():
    from so3krates_lab.cli import PRESET_NAMES
    from so3krates_lab.model import PRESETS

    assert sorted(PRESET_NAMES) == sorted(PRESETS)
