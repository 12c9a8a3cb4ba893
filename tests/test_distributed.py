"""Several processes as one job (so3krates_lab.distributed, on jax.distributed): two CPU processes on 127.0.0.1,
each started and stopped by this test (by PID), train together and must equal one process training alone."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from so3krates_lab.distributed import free_local_port, replica_share

HERE = Path(__file__).parent
WORKER = HERE / "_distributed_worker.py"


def slurm_port() -> tuple[int, int]:
    """A SLURM job id whose coordinator port (JAX: job id mod 4096 + 61440) is free on 127.0.0.1, and the port."""
    for job_id in range(4096):
        port = job_id + 61440
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return job_id, port
    raise RuntimeError("no free port in 61440-65535")


def run_job(args: list[str], n_processes: int, logs: Path, timeout_s: float = 400, slurm: bool = False) -> list[str]:
    """Start n_processes workers (one CPU device each) on a free port of 127.0.0.1, wait for all, and return
    their stderr + stdout; any process still running at the timeout (or after a failure) is killed by its PID.
    slurm: describe the job as `srun` would, in SLURM's environment variables, instead of on the command line."""
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(HERE), JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)  # one CPU device per process
    port = free_local_port() if n_processes > 1 and not slurm else None
    job_id = slurm_port()[0] if slurm else None
    procs = []
    try:
        for i in range(n_processes):
            extra = [] if port is None else [str(port), str(n_processes), str(i)]
            if slurm:
                env.update(SLURM_JOB_ID=str(job_id), SLURM_STEP_NODELIST="127.0.0.1", SLURM_NTASKS=str(n_processes),
                           SLURM_PROCID=str(i), SLURM_LOCALID=str(i), SLURM_STEP_NUM_NODES="1")
            err = open(logs / f"stderr-{i}.txt", "w")
            procs.append((subprocess.Popen([sys.executable, str(WORKER), *args, *extra], env=dict(env), stderr=err,
                                           stdout=err), err))
        deadline = time.monotonic() + timeout_s
        for proc, _ in procs:
            proc.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        for proc, err in procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
            err.close()
    texts = [(logs / f"stderr-{i}.txt").read_text() for i in range(n_processes)]
    for (proc, _), text in zip(procs, texts):
        assert proc.returncode == 0, text[-3000:]
    return texts


def start_job(args: list[str], n_processes: int, logs: Path) -> list[subprocess.Popen]:
    """The processes of a job on a free port of 127.0.0.1, started and returned (the caller stops them)."""
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(HERE), JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    port = free_local_port()
    return [subprocess.Popen([sys.executable, str(WORKER), *args, str(port), str(n_processes), str(i)], env=env,
                             stderr=open(logs / f"stderr-{i}.txt", "w"), stdout=subprocess.DEVNULL)
            for i in range(n_processes)]


def read(out: Path, i: int = 0) -> dict:
    return json.loads((out / f"process-{i}.json").read_text())


def test_replica_share_splits_every_replica_once():
    for n_rep, n_proc in [(8, 2), (5, 2), (7, 3), (3, 3)]:
        shares = [list(replica_share(n_rep, n_proc, i)) for i in range(n_proc)]
        assert sum(shares, []) == list(range(n_rep))
        assert max(map(len, shares)) - min(map(len, shares)) <= 1
    with pytest.raises(ValueError, match="at least one each"):
        replica_share(1, 2, 0)


def test_initialize_names_what_is_missing():
    from so3krates_lab import distributed

    with pytest.raises(ValueError, match="coordinator"):
        distributed.initialize("127.0.0.1:1234", num_processes=2)
    with pytest.raises(ValueError, match="host:port"):
        distributed.initialize("localhost", num_processes=2, process_id=0)
    with pytest.raises(ValueError, match="process_id"):
        distributed.initialize("127.0.0.1:1234", num_processes=2, process_id=2)


@pytest.mark.slow
def test_two_processes_train_like_one_and_resume(tmp_path):
    single, job = tmp_path / "single", tmp_path / "job"
    run_job(["train", str(single), "6"], 1, single)
    first = run_job(["train", str(job), "3"], 2, job)  # the job stops at step 3 ...
    halfway = [read(job, i) for i in (0, 1)]
    again = run_job(["train", str(job), "6"], 2, job)  # ... and the same job resumes to step 6

    alone = read(single)
    assert alone["processes"] == 1 and alone["devices"] == 1
    for i in (0, 1):
        seen = read(job, i)
        assert seen["processes"] == 2 and seen["devices"] == 2
        assert halfway[i]["step"] == 3 and seen["step"] == 6
        # the batch of 4 is split 2 + 2 over the processes; summing the gradients across them gives the
        # single-process losses (a missing cross-process sum changes them at 1e-3)
        np.testing.assert_allclose(np.array(halfway[i]["history"]), np.array(alone["history"][:1]), rtol=1e-6)
        np.testing.assert_allclose(np.array(seen["history"]), np.array(alone["history"]), rtol=1e-6)
        # parameters to Adam's noise: it divides by the root of squared gradients that are zero up to rounding
        np.testing.assert_allclose(seen["params_abs_sum"], alone["params_abs_sum"], rtol=1e-4)
    for errs in (first, again):
        assert "fit" in errs[0] and "fit:" not in errs[1], "progress is shown by process 0 only"
    from so3krates_lab.model import load_checkpoint

    assert load_checkpoint(job / "model.npz").step == 6  # written (by process 0 alone) and readable
    assert not list(job.glob("*.tmp*")), "no temporary file left behind"


@pytest.mark.slow
def test_so3krates_train_runs_as_a_two_process_job_found_in_slurms_variables(tmp_path):
    """so3krates-train --cluster under (a stand-in for) `srun --ntasks 2`: JAX reads the job from SLURM_*."""
    from so3krates_lab.reference import write_npz
    from test_train import CONFIG, toy_dataset

    ds = toy_dataset(16, seed=3)
    write_npz(tmp_path / "toy.npz", {"numbers": ds[0].numbers, "positions": np.stack([s.positions for s in ds]),
                                     "energy": ds.energies, "forces": np.stack([s.forces for s in ds])},
              {"method": "harmonic bonds"})
    (tmp_path / "config.json").write_text(CONFIG.to_json())
    logs = run_job(["cli", str(tmp_path), "4"], 2, tmp_path, slurm=True)
    report = json.loads((tmp_path / "run" / "test_errors.json").read_text())
    assert report["steps"] == 4 and report["n_structures"] == 3
    assert "F H" in logs[0] and "F H" not in logs[1], "process 0 alone prints the error table"
    assert "train 10, valid 3" in logs[0] and "train 10" not in logs[1]
    from so3krates_lab.model import load_checkpoint

    assert load_checkpoint(tmp_path / "run" / "model.npz").step == 4


def test_the_command_line_refuses_half_a_job_description(tmp_path, capsys):
    from so3krates_lab.cli import main

    assert main(["x.npz", "--out", str(tmp_path), "--coordinator", "127.0.0.1:1"]) == 2
    assert "--num-processes" in capsys.readouterr().err


@pytest.mark.slow
def test_replicas_sharded_over_two_processes_equal_one_process_running_them_all(tmp_path):
    from so3krates_lab import md

    single, job = tmp_path / "single", tmp_path / "job"
    run_job(["md", str(single), "200"], 1, single)
    run_job(["md", str(job), "200"], 2, job)
    assert read(single)["replica_ids"] == [0, 1, 2]
    assert [read(job, i)["replica_ids"] for i in (0, 1)] == [[0, 1], [2]]  # 3 replicas: 2 + 1
    assert sorted(p.name for p in (job / "store").iterdir()) == ["part-000-of-002", "part-001-of-002"]
    alone, shared = md.open_replica_parts(single / "store"), md.open_replica_parts(job / "store")
    assert shared.positions.shape == alone.positions.shape == (20, 3, 7, 3)
    # each replica keeps its own velocities and Langevin noise (seed + global index), wherever it runs
    np.testing.assert_allclose(shared.positions, alone.positions, atol=1e-9)
    np.testing.assert_allclose(shared.potential, alone.potential, atol=1e-9)
    assert np.ptp(alone.positions[-1], axis=0).max() > 1e-3  # the replicas differ from each other
    with pytest.raises(ValueError, match="expected the parts of one job"):
        import shutil

        shutil.rmtree(job / "store" / "part-001-of-002")
        md.open_replica_parts(job / "store")


@pytest.mark.slow
def test_ctrl_c_on_one_process_stops_every_process_after_the_same_step(tmp_path):
    from so3krates_lab.model import load_checkpoint

    procs = start_job(["train", str(tmp_path), "1000000"], 2, tmp_path)
    try:
        deadline = time.monotonic() + 300
        while not (tmp_path / "model.npz").exists():  # training is under way (the first validation saved)
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "the job did not start"
            time.sleep(0.2)
        time.sleep(1.0)
        os.kill(procs[1].pid, signal.SIGINT)  # Ctrl-C on process 1 only
        for p in procs:
            p.wait(timeout=120)
    finally:
        for p in procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
                p.wait()
    assert [p.returncode for p in procs] == [0, 0], [(tmp_path / f"stderr-{i}.txt").read_text()[-2000:] for i in (0, 1)]
    steps = [read(tmp_path, i)["step"] for i in (0, 1)]
    assert steps[0] == steps[1] and 3 <= steps[0] < 1000000  # both stopped after the same step ...
    assert load_checkpoint(tmp_path / "model.npz").step == steps[0]  # ... which process 0 saved


@pytest.mark.slow
def test_minima_hopping_shared_by_two_processes_keeps_one_database(tmp_path):
    from so3krates_lab.analysis import load_minima

    run_job(["hop", str(tmp_path), "16"], 2, tmp_path)
    seen = [read(tmp_path, i) for i in (0, 1)]
    assert seen[0] == seen[1], "every process holds the same database, graph and counters"
    assert seen[0]["hops"] >= 16 and len(seen[0]["energies"]) >= 2
    # both processes quenched (walkers 0-1 on process 0, 2-3 on process 1), and the counters add them up
    assert len(seen[0]["steps_by_process"]) == 2 and min(seen[0]["steps_by_process"]) > 0
    assert sum(seen[0]["steps_by_process"]) == seen[0]["relax_steps"]
    assert sum(len(v) for v in seen[0]["sequences"].values()) > 0
    db, sequences, _, extra = load_minima(tmp_path / "explore")  # written by process 0, readable
    np.testing.assert_allclose(db.energies, seen[0]["energies"])
    assert extra["stats"]["hops"] == seen[0]["hops"]
    run_job(["hop", str(tmp_path), "24"], 2, tmp_path)  # the same job resumes from the checkpoint
    again = [read(tmp_path, i) for i in (0, 1)]
    assert again[0] == again[1] and again[0]["hops"] >= 24 and again[0]["restarts"] == 1
    assert again[0]["energies"][:len(seen[0]["energies"])] == seen[0]["energies"]  # nothing found was lost


def test_a_process_with_two_devices_splits_its_replicas_and_minimiser_slots_over_them(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(HERE), JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=2")
    out = subprocess.run([sys.executable, str(WORKER), "local", str(tmp_path), "100"], env=env, capture_output=True,
                         text=True, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = json.loads((tmp_path / "local.json").read_text())
    assert runs["False"]["devices"] == [1] and runs["True"]["devices"] == [2]  # the state stays split after a run
    np.testing.assert_allclose(np.array(runs["True"]["positions"]), np.array(runs["False"]["positions"]), atol=1e-9)
    # minima hopping with its slots split over the two devices finds what one device finds
    assert runs["True"]["hops"] == runs["False"]["hops"] >= 12
    np.testing.assert_allclose(runs["True"]["hop_energies"], runs["False"]["hop_energies"], atol=1e-9)
