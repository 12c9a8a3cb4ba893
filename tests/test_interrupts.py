"""Ctrl-C and SIGTERM: every long workflow (MD, minima exploration, reference labelling, the training CLI) stops
at a safe point, saves, and resumes; a second Ctrl-C stops at once; nested contexts all see the request."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from ase.calculators.calculator import Calculator, all_changes

from test_md import MORSE, cluster_system
from so3krates_lab import md
from so3krates_lab.interrupts import Interrupted, deferred_interrupts
from so3krates_lab.reference.sampling import label_frames
from so3krates_lab.reference.store import FrameStore


def _signal_self(sig=signal.SIGINT):
    os.kill(os.getpid(), sig)
    time.sleep(0.05)  # the handler runs in the main thread at its next bytecode


def test_a_first_signal_is_recorded_a_second_ctrl_c_raises_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with deferred_interrupts() as outer:
        with deferred_interrupts() as inner:
            _signal_self(signal.SIGTERM)
            assert inner.requested == "SIGTERM" and outer.requested == "SIGTERM"
            _signal_self(signal.SIGINT)  # another signal than the first: recorded, not raised
        with deferred_interrupts() as later:  # opened after the request: it applies here too
            assert later.requested == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):
            with deferred_interrupts():
                os.kill(os.getpid(), signal.SIGINT)  # an interrupt is pending: this one raises
                time.sleep(1.0)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    with deferred_interrupts() as fresh:
        assert fresh.requested is None
        with pytest.raises(Interrupted, match="saved"):
            _signal_self()
            fresh.raise_if_requested("saved")


def test_ctrl_c_during_md_stores_the_chunk_stops_and_resumes_to_the_uninterrupted_run(tmp_path):
    settings = md.Langevin(timestep_fs=0.5, temperature_K=400.0, friction_per_fs=0.02)
    # no watchdogs: at 400 K the cluster stretches a bond by 0.5 A within ~5 ps, which a warm run reaches in
    # about 0.5 s, before the signal (the run would then end on the watchdog, not the interrupt)
    kw = dict(record_every=5, chunk_steps=50, seed=3, watchdogs=None)
    sim = md.simulate(MORSE, cluster_system(), settings, store=tmp_path / "run", **kw)
    timer = threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGINT))
    backstop = threading.Timer(120.0, sim.request_stop)  # if the signal were lost, the test fails, not hangs
    timer.start(), backstop.start()
    try:
        got = sim.run(10**8, progress=False)
    finally:
        timer.cancel(), backstop.cancel()
    assert sim.interrupted == "SIGINT" and "interrupted (SIGINT)" in got.stop_reason
    stored = md.TrajectoryStore(tmp_path / "run").open()
    n = len(stored)
    assert n == len(got) and n % 10 == 0 and n > 0  # whole chunks only, every one stored
    assert np.all(np.diff(stored.time_fs) > 0)
    np.testing.assert_array_equal(stored.positions, got.positions)
    # a new process would resume from the store; here: a new simulation on the same folder
    again = md.simulate(MORSE, cluster_system(), settings, store=tmp_path / "run", **kw)
    again.run(200, progress=False)
    assert again.interrupted is None and again.stop_reason is None
    full = md.simulate(MORSE, cluster_system(), settings, **kw).run(n * 5 + 200, progress=False)
    resumed = md.TrajectoryStore(tmp_path / "run").open()
    np.testing.assert_array_equal(resumed.time_fs, full.time_fs)
    np.testing.assert_array_equal(resumed.positions, full.positions)
    np.testing.assert_array_equal(resumed.velocities, full.velocities)


class _SignalsAtCall(Calculator):
    """A harmonic toy calculator that sends SIGINT to its own process at its `at`-th call (if given)."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, at: int | None = None):
        super().__init__()
        self.at, self.calls = at, 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.calls += 1
        if self.at is not None and self.calls == self.at:
            os.kill(os.getpid(), signal.SIGINT)
        r = self.atoms.positions
        self.results = {"energy": float(0.5 * np.sum(r ** 2)), "forces": -r.copy()}


def test_ctrl_c_during_reference_labelling_keeps_every_finished_chunk_and_resumes(tmp_path):
    rng = np.random.default_rng(0)
    numbers, positions = np.array([8, 1, 1]), rng.normal(size=(35, 3, 3))
    full = label_frames(numbers, positions, _SignalsAtCall(), FrameStore(tmp_path / "full"), chunk_frames=10,
                        progress=False).arrays()
    store = FrameStore(tmp_path / "cut")
    with pytest.raises(Interrupted, match="labelling stopped after 20 of 35 frames"):
        label_frames(numbers, positions, _SignalsAtCall(at=15), store, chunk_frames=10, progress=False)
    assert len(store) == 20  # the chunk the signal landed in was finished and stored
    resumed = label_frames(numbers, positions, _SignalsAtCall(), store, chunk_frames=10, progress=False).arrays()
    for key in ("positions", "energy", "forces"):
        np.testing.assert_array_equal(resumed[key], full[key])


def sigint_after(seconds: float, call):
    """call() with a SIGINT sent to this process after `seconds`; returns what call returned."""
    timer = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        return call()
    finally:
        timer.cancel()


def test_ctrl_c_during_minima_exploration_saves_and_the_same_call_resumes(tmp_path):
    from test_minima import TORSION, _butane_system
    from so3krates_lab.analysis import explore_minima, load_minima

    kw = dict(n_replicas=2, temperature_K=1200.0, timestep_fs=1.0, sample_every_fs=100.0, fmax=1e-4,
              minimizer="lbfgs", checkpoint=tmp_path / "explore", progress=False, seed=3)
    first = sigint_after(4.0, lambda: explore_minima(TORSION, _butane_system(180.0), max_frames=10**6, minutes=2.0,
                                                     **kw))
    assert first.stats["interrupted"] == "SIGINT"
    db, _, _, extra = load_minima(tmp_path / "explore")  # saved at the interrupt
    assert len(db) == len(first.database) and extra["stats"]["frames"] == first.stats["frames"]
    done = first.stats["converged"] + first.stats["not_converged"] + first.stats["rearranged"]
    assert done + len(extra["pending"]) == first.stats["frames"]  # every sampled frame quenched or kept
    more = explore_minima(TORSION, _butane_system(180.0), max_frames=first.stats["frames"] + 8, **kw)
    assert "interrupted" not in more.stats and more.stats["restarts"] == 1
    assert more.stats["converged"] + more.stats["not_converged"] + more.stats["rearranged"] \
        == first.stats["frames"] + 8


_MD_WORKER = """
import sys
from so3krates_lab import MorsePotential, System, md
from so3krates_lab.interrupts import deferred_interrupts
import numpy as np
with deferred_interrupts() as interrupt:   # a workflow guards everything, model set-up and compilation included
    print("starting", flush=True)
    pot = MorsePotential(depth=0.5, a=1.6, r0=1.5, cutoff=10.0, dtype="float64")
    system = System(numbers=np.array([1, 1]), positions=np.array([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0]]))
    sim = md.simulate(pot, system, md.NVE(timestep_fs=0.5), temperature_K=300.0, store=sys.argv[1],
                      chunk_steps=100, record_every=10)
    sim.run(10**8, progress=False)
print(sim.stop_reason, flush=True)
sys.exit(130 if sim.interrupted else 0)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_a_script_compiles_its_md_exits_cleanly_with_a_resumable_store(tmp_path, sig):
    proc = subprocess.Popen([sys.executable, "-c", _MD_WORKER, str(tmp_path / "run")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "starting"
        time.sleep(0.3)  # importing JAX, building the potential, compiling: well before the first chunk ends
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-3000:]
    assert f"interrupted ({signal.Signals(sig).name})" in out and "Traceback" not in err, err[-3000:]
    store = md.TrajectoryStore(tmp_path / "run")
    assert store.has_state()  # resumable: a state is committed (the start state, or the last chunk's)
    if store.chunk_paths():
        assert np.all(np.diff(store.open().time_fs) > 0)


def test_ctrl_c_while_the_training_cli_loads_and_compiles_exits_130_without_a_traceback(tmp_path):
    from test_cli import SPLIT, write_data

    data = write_data(tmp_path / "ethanol.npz")
    argv = [sys.executable, "-m", "so3krates_lab.cli", str(data), "--out", str(tmp_path / "run"), *SPLIT,
            "--preset", "small", "--steps", "100000", "--batch-size", "1", "--no-progress"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = proc.stdout.readline()  # "<data>: 30 frames -> train 20, ...": fit (and its compilation) starts now
        assert "frames -> train" in line, line + proc.stderr.read()[-3000:]
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, out[-2000:] + err[-3000:]
    assert "interrupted (SIGINT) at step" in out and "Traceback" not in err, err[-3000:]
