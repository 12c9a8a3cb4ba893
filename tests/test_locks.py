"""One writer per store or checkpoint (`so3krates_lab.fileio.WriterLock`): a second process that writes the same
MD trajectory store, frame store, checkpoint, training output or minima checkpoint gets `StoreBusyError` naming
the writing process; reading stays allowed, the same process never conflicts with itself, and a killed writer
leaves no stale lock. Every test starts its writer as a subprocess and stops it by PID in a finally."""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from so3krates_lab import So3kratesConfig, fit
from so3krates_lab.analysis import explore_minima
from so3krates_lab.cli import main
from so3krates_lab.fileio import StoreBusyError, WriterLock
from so3krates_lab.md import TrajectoryStore
from so3krates_lab.model import load_checkpoint, save_checkpoint
from so3krates_lab.reference import FrameStore

ROOT = Path(__file__).resolve().parents[1]
NUMBERS = [8, 1, 1]

FRAMES = '''
import numpy as np
from so3krates_lab import Trajectory

def frames(t0, k=2):
    """k frames 1 fs apart of a water molecule, after time t0."""
    shape = (k, 3, 3)
    return Trajectory(numbers=[8, 1, 1], time_fs=t0 + np.arange(1.0, k + 1), positions=np.full(shape, t0),
                      velocities=np.zeros(shape), potential=np.zeros(k), kinetic=np.zeros(k),
                      temperature=np.zeros(k), conserved=np.zeros(k), timestep_fs=0.5)
'''
exec(FRAMES)  # defines frames() here too

# A writer that holds its locks and sleeps: argv[1] says what it writes, the rest are paths.
WRITER = FRAMES + '''
import sys, time
from so3krates_lab.fileio import WriterLock
kind, paths = sys.argv[1], sys.argv[2:]
if kind == "trajectory":
    from so3krates_lab.md import TrajectoryStore
    store = TrajectoryStore(paths[0], numbers=[8, 1, 1], timestep_fs=0.5)
    store.append(frames(0.0))
    locks = [WriterLock(p, folder=True) for p in paths[1:]]  # store folders not created yet
elif kind == "frames":
    from so3krates_lab.reference import FrameStore
    store = FrameStore(paths[0])
    store.append([8, 1, 1], np.zeros((2, 3, 3)), np.zeros(2), np.zeros((2, 3, 3)))
elif kind == "folder":
    locks = [WriterLock(p, folder=True) for p in paths]
else:
    locks = [WriterLock(p) for p in paths]
print("ready", flush=True)
time.sleep(600)
'''


@contextlib.contextmanager
def writer(kind: str, *paths):
    """A subprocess writing `paths` (see WRITER), ready once it holds its locks; stopped by PID at the end."""
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=path)
    proc = subprocess.Popen([sys.executable, "-c", WRITER, kind, *map(str, paths)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        line = proc.stdout.readline() if ready else ""
        if line.strip() != "ready":
            proc.kill()
            _, err = proc.communicate(timeout=60)
            pytest.fail(f"the writer subprocess did not start (printed {line!r}): {err[-3000:]}")
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def test_trajectory_store_refuses_a_second_writer_and_stays_readable(tmp_path):
    folder, fresh = tmp_path / "run", tmp_path / "fresh"
    fresh.mkdir()
    with writer("trajectory", folder, fresh) as proc:
        store = TrajectoryStore(folder, numbers=NUMBERS, timestep_fs=0.5)  # the folder exists: no write yet
        with pytest.raises(StoreBusyError, match=rf"run is being written by process {proc.pid} \(python -c .*\); "
                                                 "wait for it to finish, stop it, or use another folder") as err:
            store.append(frames(10.0))
        assert err.value.pid == proc.pid and err.value.path == folder
        copy = pickle.loads(pickle.dumps(err.value))  # e.g. raised in a worker process
        assert str(copy) == str(err.value) and copy.pid == proc.pid
        for write in (lambda: store.save_stop_reason("no"), store.clear_stop_reason):
            with pytest.raises(StoreBusyError, match=str(proc.pid)):
                write()
        with pytest.raises(StoreBusyError, match=str(proc.pid)):  # another object on the same folder
            TrajectoryStore(tmp_path / "run", numbers=NUMBERS, timestep_fs=0.5).append(frames(10.0))
        with pytest.raises(StoreBusyError, match=rf"fresh is being written by process {proc.pid}"):
            TrajectoryStore(fresh, numbers=NUMBERS, timestep_fs=0.5)  # creating a store (meta.json) is a write
        assert not (fresh / "meta.json").exists()
        traj = TrajectoryStore(folder).open()  # reading while the other process writes
        np.testing.assert_array_equal(traj.time_fs, [1.0, 2.0])
        assert len(store.chunk_paths()) == 1 and store.stop_reason() is None

        os.kill(proc.pid, signal.SIGKILL)  # a killed writer leaves its lock file, but no lock
        proc.wait(timeout=60)
        assert (folder / ".writer.lock").exists()
        store.append(frames(10.0))
        np.testing.assert_array_equal(store.open().time_fs, [1.0, 2.0, 11.0, 12.0])
    store.close()
    assert not (folder / ".writer.lock").exists()  # a released lock removes its file


def test_store_objects_of_one_process_share_the_lock(tmp_path):
    a = TrajectoryStore(tmp_path / "run", numbers=NUMBERS, timestep_fs=0.5)
    a.append(frames(0.0))
    with TrajectoryStore(tmp_path / "run") as b:  # reopened in-process while `a` still writes
        b.append(frames(2.0))
        b.save_stop_reason("stopped")
    assert (tmp_path / "run" / ".writer.lock").exists()  # `a` still holds it
    a.append(frames(4.0))
    np.testing.assert_array_equal(a.open().time_fs, [1, 2, 3, 4, 5, 6])
    a.close()
    assert not (tmp_path / "run" / ".writer.lock").exists()
    frames_a, frames_b = FrameStore(tmp_path / "pbe"), FrameStore(tmp_path / "pbe")
    for store in (frames_a, frames_b, frames_a):
        store.append(NUMBERS, np.zeros((1, 3, 3)), np.zeros(1), np.zeros((1, 3, 3)))
    assert len(frames_b) == 3
    del frames_a, frames_b, store  # garbage collection releases the lock too
    assert not (tmp_path / "pbe" / ".writer.lock").exists()


def test_frame_store_refuses_a_second_writer(tmp_path):
    with writer("frames", tmp_path / "pbe") as proc:
        store = FrameStore(tmp_path / "pbe")
        with pytest.raises(StoreBusyError, match=rf"pbe is being written by process {proc.pid} "):
            store.append(NUMBERS, np.ones((1, 3, 3)), np.ones(1), np.ones((1, 3, 3)))
        assert len(store) == 2 and store.n_chunks == 1  # reading is allowed
        proc.terminate()
        proc.wait(timeout=60)
        store.append(NUMBERS, np.ones((1, 3, 3)), np.ones(1), np.ones((1, 3, 3)))
        assert len(store) == 3


def test_checkpoint_fit_and_minima_refuse_a_second_writer(tmp_path):
    ckpt, minima = tmp_path / "model.npz", tmp_path / "minima"
    config = So3kratesConfig.preset("small")
    variables = {"params": {"w": np.zeros(3)}, "constants": {"energy_scale": np.ones(())}}
    with writer("file", ckpt, minima) as proc:
        with pytest.raises(StoreBusyError, match=rf"model.npz is being written by process {proc.pid} .*another path"):
            save_checkpoint(ckpt, config, variables, step=1)
        with pytest.raises(StoreBusyError, match=str(proc.pid)):
            save_checkpoint(tmp_path / "model", config, variables)  # the same file (".npz" appended)
        # fit refuses before it looks at its arguments: no data preparation, no compilation
        with pytest.raises(StoreBusyError, match=str(proc.pid)):
            fit(None, None, config, checkpoint=ckpt)
        with pytest.raises(StoreBusyError, match=str(proc.pid)):
            explore_minima(None, None, max_frames=1, checkpoint=tmp_path / "minima.json")
        assert not ckpt.exists()
        save_checkpoint(tmp_path / "other.npz", config, variables)  # other paths are free
    save_checkpoint(ckpt, config, variables, step=2)  # the writer has stopped
    assert load_checkpoint(ckpt).step == 2
    # the writer was killed (SIGTERM): its unused minima.lock stays behind, locking nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["minima.lock", "model.npz", "other.npz"]


def test_cli_on_an_output_folder_in_use_exits_2_with_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    with writer("folder", out) as proc:
        # the data file does not exist: the busy folder is reported before anything is loaded
        assert main([str(tmp_path / "missing.npz"), "--out", str(out), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"so3krates-train: error: {out} is being written by process "
                                                   f"{proc.pid} (python -c")
        assert sorted(p.name for p in out.iterdir()) == [".writer.lock"]


def test_cli_when_another_process_trains_into_its_checkpoint(tmp_path, capsys):
    rng = np.random.default_rng(0)
    data = tmp_path / "water.npz"
    np.savez(data, R=np.array([[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]) + 0.02 * rng.normal(size=(10, 3, 3)),
             z=np.array(NUMBERS), E=rng.normal(size=(10, 1)), F=rng.normal(size=(10, 3, 3)), e_unit="eV", r_unit="Ang")
    out = tmp_path / "run"
    out.mkdir()
    with writer("file", out / "model.npz") as proc:  # e.g. a notebook's fit(..., checkpoint="run/model.npz")
        assert main([str(data), "--out", str(out), "--preset", "small", "--no-progress"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"model.npz is being written by process {proc.pid}" in err[0]
    assert not (out / "model.npz").exists() and not (out / ".writer.lock").exists()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")  # JAX's warning; the child runs no JAX code
def test_a_forked_child_does_not_hold_its_parents_lock(tmp_path):
    lock = WriterLock(tmp_path / "run.npz")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: only plain Python from here on, then os._exit
        code = 1
        try:
            os.close(read_end)
            try:
                WriterLock(tmp_path / "run.npz")
            except StoreBusyError as err:
                os.write(write_end, str(err).encode())
                lock.release()  # the parent's object, inherited: must not unlock the parent
                try:
                    WriterLock(tmp_path / "run.npz")
                except StoreBusyError:
                    code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    status = None
    try:
        with os.fdopen(read_end, "rb") as fh:
            message = fh.read().decode()
    finally:
        for _ in range(600):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert f"run.npz is being written by process {os.getpid()} " in message
    assert lock.held and (tmp_path / "run.npz.lock").exists()
    lock.release()
    assert not (tmp_path / "run.npz.lock").exists()
    with WriterLock(tmp_path / "run.npz"):  # free again
        pass
