"""Fault injection, the short version of benchmarks/faults.py: per workflow (training, MD, minima exploration,
reference labelling) one kill -9 and one SIGINT landing mid-run, a resume, and the comparison with an
uninterrupted run; and `compare` itself, which must see a doctored checkpoint or store.

The workers are real processes (`python -m so3krates_lab.workflows.faults run ...`). To keep the file short,
each workflow's processes share a JAX persistent compilation cache in the test's temporary folder (only the
first one compiles), and two workflows run at a time. The faults land a fixed time after the worker reported a
fixed amount of progress (about a fifth of the job), so whatever the machine's load they land while it runs.
"""

from __future__ import annotations

import json
import shutil
import signal
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from so3krates_lab.workflows import faults

# the signal goes 0.05 s after the worker reported a commit of at least this many units (of 4000 steps, 10000
# frames, 1500 quenched frames, 400 sampled + labelled frames)
MID_RUN = {"training": 800, "md": 2000, "minima": 300, "labelling": 100}
TIMEOUT_S = 600


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")

    def one(workflow):
        env = {"JAX_COMPILATION_CACHE_DIR": str(root / "jax_cache" / workflow),
               "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
        reference = root / workflow / "reference"
        ref = faults.reference_run(workflow, reference, env=env, timeout_s=TIMEOUT_S)
        assert ref["rc"] == 0, ref["stderr"]
        rows = [faults.trial(workflow, root / workflow / name, reference, sig, 0.05, after_units=MID_RUN[workflow],
                             env=env, timeout_s=TIMEOUT_S)
                for name, sig in (("kill", signal.SIGKILL), ("sigint", signal.SIGINT))]
        return ref, rows

    with ThreadPoolExecutor(2) as pool:
        results = dict(zip(faults.WORKFLOWS, pool.map(one, faults.WORKFLOWS)))
    return root, results


@pytest.mark.parametrize("workflow", faults.WORKFLOWS)
def test_a_fault_mid_run_loses_nothing_and_resumes_to_the_uninterrupted_result(runs, workflow):
    root, results = runs
    ref, (kill, sigint) = results[workflow]
    for row in (kill, sigint):
        detail = json.dumps(row, default=str)
        assert row["phase"] == "running", detail
        assert row["opened_after_fault"] and row["opened"], detail
        assert row["committed"] >= MID_RUN[workflow] and row["lost"] == 0, detail
        assert row["after_fault"]["units"] >= row["committed"], detail
        if workflow in ("md", "labelling"):
            assert row["after_fault"]["prefix"], detail  # what was stored is the uninterrupted run's
        assert row["resume_rc"] == 0 and row["equal"], detail
    assert kill["rc"] == -signal.SIGKILL
    assert sigint["rc"] == 130 and sigint["clean_exit"] and not sigint["traceback"], sigint
    if workflow == "training":  # md's equality is bit-identity itself
        assert kill["details"]["bit_identical"] and sigint["details"]["bit_identical"]


# ------------------------------------------------------------------------------------ compare can fail


def _copy(runs, workflow, tmp_path):
    root, _ = runs
    folder = tmp_path / workflow
    shutil.copytree(root / workflow / "reference", folder)
    return folder, root / workflow / "reference"


def test_compare_accepts_the_reference_itself_and_reports_losses(runs, tmp_path):
    for workflow in faults.WORKFLOWS:
        folder, reference = _copy(runs, workflow, tmp_path)
        after = faults.snapshot(workflow, folder, reference)
        assert after["opened"] and after["units"] > 0, after
        result = faults.compare(workflow, folder, reference, after_fault=after, committed=after["units"])
        assert result["equal"] and result["opened"] and result["lost"] == 0, (workflow, result)
        short = dict(after, units=after["units"] - 7)
        assert faults.compare(workflow, folder, reference, after_fault=short, committed=after["units"])["lost"] == 7


def test_compare_sees_a_changed_training_checkpoint(runs, tmp_path):
    from so3krates_lab.model import load_checkpoint, save_checkpoint

    folder, reference = _copy(runs, "training", tmp_path)
    ck = load_checkpoint(folder / "model.npz")
    variables = ck.variables
    leaf = next(iter(variables["params"].values()))
    while isinstance(leaf, dict):
        leaf = next(iter(leaf.values()))
    leaf.flat[0] += 1e-3  # one parameter moved
    save_checkpoint(folder / "model.npz", ck.config, variables, step=ck.step, metadata=ck.metadata)
    result = faults.compare("training", folder, reference)
    assert not result["equal"] and result["opened"]
    assert result["details"]["max_abs_diff"] == pytest.approx(1e-3, rel=1e-2)
    (folder / "model.npz").write_bytes((folder / "model.npz").read_bytes()[:1000])  # a torn file
    broken = faults.compare("training", folder, reference)
    assert not broken["equal"] and not broken["opened"] and broken["error"]
    assert not faults.snapshot("training", folder)["opened"]


def test_compare_sees_one_changed_md_frame_and_a_torn_chunk(runs, tmp_path):
    import xarray as xr

    folder, reference = _copy(runs, "md", tmp_path)
    chunk = sorted(folder.glob("frames_*.nc"))[37]
    with xr.open_dataset(chunk, engine="scipy") as ds:
        ds = ds.load()
    ds["positions"].values[5, 2, 1] += 1e-9
    ds.to_netcdf(chunk, engine="scipy")
    result = faults.compare("md", folder, reference)
    assert not result["equal"] and result["opened"]
    assert result["details"]["max_abs_diff"] == pytest.approx(1e-9, rel=1e-3)
    chunk.write_bytes(chunk.read_bytes()[:300])
    broken = faults.compare("md", folder, reference)
    assert not broken["equal"] and not broken["opened"] and broken["error"]
    after = faults.snapshot("md", folder, reference)
    assert not after["opened"] and after["error"]


def test_compare_sees_a_changed_label_beyond_scf_noise(runs, tmp_path):
    folder, reference = _copy(runs, "labelling", tmp_path)
    chunk = sorted((folder / "labels").glob("chunk_*.npz"))[3]

    def shift_energy(de):
        arrays = dict(np.load(chunk))
        arrays["energy"][4] += de
        with open(chunk, "wb") as fh:
            np.savez(fh, **arrays)

    shift_energy(1e-7)  # within SCF noise: equal, but not bit-identical
    result = faults.compare("labelling", folder, reference)
    assert result["equal"] and not result["details"]["bit_identical"]
    shift_energy(1e-3)
    assert not faults.compare("labelling", folder, reference)["equal"]
    # frames stored before a fault that differ from the uninterrupted run's fail the check even within tolerance
    shutil.rmtree(folder)
    folder, reference = _copy(runs, "labelling", tmp_path)
    assert not faults.compare("labelling", folder, reference, after_fault={"units": 400, "prefix": False})["equal"]


def test_compare_sees_a_missing_minimum_a_short_budget_and_a_minimum_lost_since_the_fault(runs, tmp_path):
    from so3krates_lab.analysis import MinimaDatabase, load_minima, save_minima

    folder, reference = _copy(runs, "minima", tmp_path)
    db, sequences, _, extra = load_minima(folder / "minima")
    assert len(db) == 3  # the torsion chain's three minima
    fewer = MinimaDatabase(db.numbers, db.positions[0], energy_tol=db.energy_tol, rmsd_tol=db.rmsd_tol)
    for k in range(2):
        fewer.add(db.positions[k], db.energies[k])
    save_minima(folder / "minima", fewer, {}, extra)
    assert not faults.compare("minima", folder, reference)["equal"]

    save_minima(folder / "minima", db, sequences, dict(extra, stats=dict(extra["stats"],
                                                                           converged=extra["stats"]["converged"] - 1)))
    result = faults.compare("minima", folder, reference)
    assert not result["equal"] and result["details"]["quenched"] == faults.MINIMA_FRAMES - 1

    save_minima(folder / "minima", db, sequences, extra)
    assert faults.compare("minima", folder, reference)["equal"]
    elsewhere = (db.positions[0] * 1.3).tolist()  # a "minimum" the checkpoint held before a fault, now missing
    result = faults.compare("minima", folder, reference, after_fault={"units": 10, "minima": [[3.0, elsewhere]]})
    assert not result["equal"] and result["details"]["kept_from_before_fault"] == "0/1"
