"""`Trajectory`, the frames of an MD run: shape checks, selection (take, since, replica, concatenate) and every
round trip it offers (xarray, the trajectory store, ASE and extended XYZ). Synthetic frames only: no MD here."""

from __future__ import annotations

import numpy as np
import pytest

from so3krates_lab import StructureError, Trajectory
from so3krates_lab.md import TrajectoryStore

NUMBERS = np.array([8, 1, 1])
CELL = np.array([[6.0, 0.0, 0.0], [0.5, 6.5, 0.0], [0.0, 0.3, 7.0]])


def make(k: int = 6, replicas: int | None = None, t0: float = 0.0, seed: int = 0, **kw) -> Trajectory:
    """k frames 2.5 fs apart of a 3-atom system with random (distinct) values in every field."""
    rng = np.random.default_rng(seed)
    lead = (k,) if replicas is None else (k, replicas)
    return Trajectory(numbers=NUMBERS, time_fs=t0 + 2.5 * np.arange(1, k + 1),
                      positions=rng.normal(size=lead + (3, 3)), velocities=rng.normal(size=lead + (3, 3)),
                      potential=rng.normal(size=lead), kinetic=rng.uniform(size=lead),
                      temperature=rng.uniform(100, 400, size=lead), conserved=rng.normal(size=lead),
                      timestep_fs=0.5, **kw)


FIELDS = ("time_fs", "positions", "velocities", "potential", "kinetic", "temperature", "conserved")


def assert_same(a: Trajectory, b: Trajectory, meta: bool = True):
    for name in FIELDS + ("numbers",):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    if meta:
        assert a.timestep_fs == b.timestep_fs and a.stop_reason == b.stop_reason and a.integrator == b.integrator
        np.testing.assert_array_equal(a.pbc, b.pbc)
        assert (a.cell is None) == (b.cell is None)
        if a.cell is not None:
            np.testing.assert_array_equal(a.cell, b.cell)
        assert (a.stop_time_fs is None) == (b.stop_time_fs is None)
        if a.stop_time_fs is not None:
            np.testing.assert_array_equal(a.stop_time_fs, b.stop_time_fs)


def test_shapes_properties_and_bad_shapes():
    one = make()
    assert len(one) == 6 and one.n_atoms == 3 and one.n_replicas is None and not one.periodic
    np.testing.assert_allclose(one.total, one.potential + one.kinetic)
    assert one.frame_spacing_fs == 2.5
    assert "6 frames of 3 atoms" in repr(one) and "replicas" not in repr(one)
    reps = make(replicas=4)
    assert reps.n_replicas == 4 and reps.positions.shape == (6, 4, 3, 3) and "4 replicas" in repr(reps)
    periodic = make(cell=CELL, pbc=[True, True, True])
    assert periodic.periodic and periodic.cell.shape == (3, 3)
    good = dict(numbers=NUMBERS, time_fs=np.arange(2.0), positions=np.zeros((2, 3, 3)),
                velocities=np.zeros((2, 3, 3)), potential=np.zeros(2), kinetic=np.zeros(2),
                temperature=np.zeros(2), conserved=np.zeros(2))
    with pytest.raises(StructureError, match="positions must have shape"):
        Trajectory(**{**good, "positions": np.zeros((3, 3, 3))})  # 3 frames of positions, 2 times
    with pytest.raises(StructureError, match="velocities must have shape"):
        Trajectory(**{**good, "velocities": np.zeros((2, 2, 3))})
    with pytest.raises(StructureError, match=r"potential must have shape \(2,\)"):
        Trajectory(**{**good, "potential": np.zeros((2, 1))})
    with pytest.raises(ValueError, match="fewer than 2 frames"):
        one.take(slice(0, 1)).frame_spacing_fs
    with pytest.raises(ValueError, match="evenly spaced"):
        one.take([0, 1, 3]).frame_spacing_fs


def test_take_since_and_concatenate():
    traj = make(k=8)
    part = traj.take(slice(2, 5))
    assert len(part) == 3 and part.timestep_fs == 0.5
    np.testing.assert_array_equal(part.positions, traj.positions[2:5])
    np.testing.assert_array_equal(traj.take(3).positions, traj.positions[[3]])  # an integer keeps the frame axis
    mask = traj.temperature > 250
    np.testing.assert_array_equal(traj.take(mask).temperature, traj.temperature[mask])
    later = traj.since(5.0)  # frames from 5 fs after the first (2.5 fs) on: t >= 7.5 fs
    assert later.time_fs[0] == 7.5 and len(later) == 6
    assert len(traj.take(slice(0, 0)).since(10.0)) == 0
    joined = Trajectory.concatenate([traj.take(slice(0, 3)), traj.take(slice(3, 8))])
    assert_same(joined, traj)
    with pytest.raises(ValueError, match="nothing to concatenate"):
        Trajectory.concatenate([])


def test_replica_cuts_at_its_stop_time():
    traj = make(k=6, replicas=3, stop_time_fs=[np.inf, 7.5, np.inf])
    first = traj.replica(0)
    assert first.n_replicas is None and first.stop_time_fs is None and len(first) == 6
    np.testing.assert_array_equal(first.positions, traj.positions[:, 0])
    np.testing.assert_array_equal(first.conserved, traj.conserved[:, 0])
    stopped = traj.replica(1)
    assert list(stopped.time_fs) == [2.5, 5.0]  # frames before the stop time only
    np.testing.assert_array_equal(stopped.velocities, traj.velocities[:2, 1])
    with pytest.raises(ValueError, match="no replica axis"):
        make().replica(0)


@pytest.mark.parametrize("kind", ["one", "replicas", "periodic"])
def test_xarray_round_trip(kind):
    if kind == "one":
        traj = make(stop_reason="stopped at t = 15.0 fs: temperature", integrator="Langevin BAOAB (300 K)")
    elif kind == "replicas":
        traj = make(replicas=2, stop_time_fs=[np.inf, 10.0])
    else:
        traj = make(cell=CELL, pbc=[True, True, True])
    ds = traj.to_xarray()
    lead = ("time",) if kind != "replicas" else ("time", "replica")
    assert ds.positions.dims == lead + ("atom", "xyz") and ds.potential_energy.dims == lead
    assert set(ds.data_vars) >= {"positions", "velocities", "potential_energy", "kinetic_energy",
                                 "conserved_energy", "temperature"}
    assert ds.positions.attrs["units"] == "Angstrom" and ds.time.attrs["units"] == "fs"
    np.testing.assert_array_equal(ds.atomic_number.values, NUMBERS)
    np.testing.assert_array_equal(ds.time.values, traj.time_fs)
    assert_same(Trajectory.from_xarray(ds), traj)
    with pytest.raises(StructureError, match="not a trajectory dataset"):
        Trajectory.from_xarray(ds.drop_vars("temperature"))


def test_a_dataset_without_conserved_energy_reads_with_the_total(tmp_path):
    traj = make()
    back = Trajectory.from_xarray(traj.to_xarray().drop_vars("conserved_energy"))
    np.testing.assert_array_equal(back.conserved, traj.total)


@pytest.mark.parametrize("replicas", [None, 2])
def test_store_round_trip_in_chunks(tmp_path, replicas):
    periodic = replicas is None
    cell_kw = dict(cell=CELL, pbc=[True, True, True]) if periodic else {}
    store = TrajectoryStore(tmp_path / "run", numbers=NUMBERS, timestep_fs=0.5, **cell_kw)
    parts = [make(k=4, replicas=replicas, seed=s, t0=10.0 * s, **cell_kw) for s in range(3)]
    for part in parts:
        store.append(part)
    assert len(store.chunk_paths()) == 3
    opened = TrajectoryStore(tmp_path / "run").open()  # a fresh handle: everything comes from the files
    assert isinstance(opened, Trajectory) and len(opened) == 12 and opened.n_replicas == replicas
    assert_same(opened, Trajectory.concatenate(parts))
    assert opened.stop_reason is None
    if periodic:
        np.testing.assert_allclose(opened.cell, CELL)
        assert opened.periodic and opened.pbc.all()
    else:
        assert opened.cell is None and not opened.periodic
    store.save_stop_reason("stopped on request")
    assert store.open().stop_reason == "stopped on request"
    store.clear_stop_reason()
    assert store.open().stop_reason is None
    with pytest.raises(ValueError, match="different atoms"):
        TrajectoryStore(tmp_path / "run", numbers=[1, 1, 8])
    with pytest.raises(ValueError, match="no frames stored"):
        TrajectoryStore(tmp_path / "empty", numbers=NUMBERS).open()
    with pytest.raises(ValueError, match="not a trajectory store yet"):
        TrajectoryStore(tmp_path / "nothing")


def test_ase_and_extxyz_export(tmp_path):
    from ase.io import read

    traj = make(k=6, cell=CELL, pbc=[True, True, True])
    frames = traj.to_ase()
    assert len(frames) == 6 and len(traj.to_ase(stride=4)) == 2
    atoms = frames[3]
    np.testing.assert_array_equal(atoms.numbers, NUMBERS)
    np.testing.assert_allclose(atoms.positions, traj.positions[3])
    np.testing.assert_allclose(np.asarray(atoms.cell), CELL)
    assert atoms.pbc.all()
    assert atoms.info["time_fs"] == traj.time_fs[3] and atoms.info["energy"] == pytest.approx(traj.potential[3])
    assert atoms.info["temperature_K"] == pytest.approx(traj.temperature[3])
    path = traj.to_extxyz(tmp_path / "traj.extxyz", stride=2)
    back = read(path, ":")
    assert path == tmp_path / "traj.extxyz" and len(back) == 3 and not list(tmp_path.glob(".*.tmp"))
    for k, a in zip((0, 2, 4), back):
        np.testing.assert_allclose(a.positions, traj.positions[k], atol=1e-6)
        assert a.info["time_fs"] == pytest.approx(traj.time_fs[k])
    np.testing.assert_allclose(np.asarray(back[0].cell), CELL, atol=1e-6)
    free = make().to_ase()[0]
    assert not free.pbc.any()
    # the store exports the same frames
    store = TrajectoryStore(tmp_path / "run", numbers=NUMBERS, timestep_fs=0.5, cell=CELL, pbc=[True] * 3)
    store.append(traj)
    assert len(store.to_ase(stride=3)) == 2
    assert len(read(store.to_extxyz(tmp_path / "store.extxyz"), ":")) == 6
    with pytest.raises(ValueError, match="one structure"):
        make(replicas=2).to_ase()


def test_extxyz_round_trip_keeps_velocities_and_energies(tmp_path):
    """to_extxyz then Trajectory.from_extxyz gives back every field (velocities through ASE's units)."""
    traj = make(k=5, cell=CELL, pbc=[True, True, True])
    back = Trajectory.from_extxyz(traj.to_extxyz(tmp_path / "traj.extxyz"), timestep_fs=0.5)
    for name in FIELDS + ("numbers",):
        np.testing.assert_allclose(getattr(back, name), getattr(traj, name), rtol=1e-6, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(back.cell, CELL, atol=1e-6)
    assert back.pbc.all() and back.timestep_fs == 0.5
    # velocities in ASE's units: Angstrom per ASE time unit, ase.units.fs of them in a fs
    from ase.units import fs

    atoms = traj.to_ase()[2]
    np.testing.assert_allclose(atoms.get_velocities() * fs, traj.velocities[2])


def test_from_ase_computes_what_the_frames_lack():
    """Frames from another code (velocities, a time step, no kinetic energy or temperature in info): kinetic
    energy 1/2 m v^2, temperature over 3N - 6 degrees of freedom, conserved = potential + kinetic; a clear error
    without velocities, with changing atoms or without a time."""
    from ase import Atoms
    from ase.units import fs, kB

    rng = np.random.default_rng(1)
    frames = []
    for k in range(3):
        atoms = Atoms(numbers=[6, 1, 1, 8], positions=rng.normal(size=(4, 3)))
        atoms.set_velocities(rng.normal(scale=0.01, size=(4, 3)) / fs)  # 0.01 Angstrom/fs
        atoms.info["energy"] = -1.0 - k
        frames.append(atoms)
    traj = Trajectory.from_ase(frames, frame_fs=2.0)
    np.testing.assert_allclose(traj.time_fs, [0.0, 2.0, 4.0])
    v = traj.velocities[1]
    m = frames[1].get_masses()
    # 1 amu (Angstrom/fs)^2 = 103.6427 eV
    kinetic = 0.5 * np.sum(m[:, None] * v**2) * 103.6427
    assert traj.kinetic[1] == pytest.approx(kinetic, rel=1e-5)
    assert traj.temperature[1] == pytest.approx(2 * kinetic / (6 * kB), rel=1e-5)  # 3 * 4 - 6 = 6
    np.testing.assert_allclose(traj.conserved, traj.potential + traj.kinetic)
    np.testing.assert_allclose(traj.potential, [-1.0, -2.0, -3.0])
    assert traj.cell is None and not traj.pbc.any()
    with pytest.raises(StructureError, match="frame_fs"):
        Trajectory.from_ase(frames)
    bare = frames[0].copy()
    bare.set_momenta(None)
    with pytest.raises(StructureError, match="frame 1 has no velocities"):
        Trajectory.from_ase([frames[0], bare], frame_fs=1.0)
    with pytest.raises(StructureError, match="frame 1 has other atoms"):
        Trajectory.from_ase([frames[0], Atoms("H2O", positions=np.zeros((3, 3)))], frame_fs=1.0)
    with pytest.raises(StructureError, match="at least one frame"):
        Trajectory.from_ase([])
