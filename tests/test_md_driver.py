"""The chunked MD driver and trajectory store: frames on disk equal frames returned, a stopped run resumes to
the uninterrupted trajectory, watchdogs stop an exploding run cleanly, overflow reallocation changes nothing."""

import jax
import jax.numpy as jnp
import numpy as np

from test_md import MASSES, N, NUMBERS, cluster_positions, morse_force_fn
from so3krates_lab import Potential, Trajectory
from so3krates_lab.md import (
    Simulation, TrajectoryStore, Watchdogs, degrees_of_freedom, force_function, langevin_baoab, maxwell_boltzmann,
    stack_states, velocity_verlet,
)


def _start(integ, key=None):
    r0 = cluster_positions()
    return integ.init(jnp.asarray(r0), jnp.asarray(maxwell_boltzmann(MASSES, 300.0, 1, r0)), MASSES, key=key)


def test_store_matches_run_and_a_stopped_run_resumes_exactly(tmp_path):
    integ = langevin_baoab(morse_force_fn(), 0.5, 400.0, 0.02)
    kw = dict(dof=degrees_of_freedom(N), record_every=5, chunk_steps=50)
    full = Simulation(integ, _start(integ, jax.random.key(0)), **kw).run(200, progress=False)
    assert len(full) == 40 and np.allclose(full.time_fs[:2], [2.5, 5.0])
    assert full.timestep_fs == 0.5  # the time step comes from the integrator

    store = TrajectoryStore(tmp_path / "run", numbers=NUMBERS, timestep_fs=0.5)
    first = Simulation(integ, _start(integ, jax.random.key(0)), store=store, **kw)
    for k, _ in enumerate(first.chunks(200, progress=False)):
        if k == 1:
            break  # the process "dies" after two chunks
    (store.directory / ".frames_00002.nc.junk.tmp").write_bytes(b"partial")  # a write cut short
    reopened = TrajectoryStore(tmp_path / "run")
    template = _start(integ, jax.random.key(99))
    second = Simulation(integ, reopened.load_state(template), store=reopened, **kw)
    second.run(100, progress=False)
    traj = reopened.open()
    assert isinstance(traj, Trajectory) and len(traj) == 40
    assert full.integrator == traj.integrator == "Langevin BAOAB (400 K)"  # recorded with the frames
    np.testing.assert_array_equal(traj.positions, full.positions)
    np.testing.assert_array_equal(traj.temperature, full.temperature)
    np.testing.assert_array_equal(traj.time_fs, full.time_fs)
    frames = reopened.to_ase()
    assert len(frames) == 40 and frames[0].info["time_fs"] == 2.5
    reopened.to_extxyz(tmp_path / "traj.extxyz", stride=10)
    from ase.io import read

    assert len(read(tmp_path / "traj.extxyz", ":")) == 4


def test_nve_driver_conserves_energy_and_zero_momentum():
    integ = velocity_verlet(morse_force_fn(), 0.5)
    sim = Simulation(integ, _start(integ), dof=degrees_of_freedom(N), record_every=10, chunk_steps=500,
                     watchdogs=Watchdogs(max_energy_drift=1e-3))
    frames = sim.run(2000, progress=False)
    assert sim.stop_reason is None and len(frames) == 200
    assert np.ptp(frames.total) < 0.02 * np.ptp(frames.potential)
    assert np.abs(np.einsum("i,tij->tj", MASSES, frames.velocities)).max() < 1e-10


def test_watchdog_stops_an_exploding_run_and_keeps_the_good_frames(tmp_path):
    integ = velocity_verlet(morse_force_fn(), 0.5)
    r0 = cluster_positions()
    hot = integ.init(jnp.asarray(r0), jnp.asarray(maxwell_boltzmann(MASSES, 3e4, 1, r0)), MASSES)  # it flies apart
    store = TrajectoryStore(tmp_path / "boom", numbers=NUMBERS, timestep_fs=0.5)
    dogs = Watchdogs().with_bonds(NUMBERS, r0, max_bond_deviation=0.5)
    sim = Simulation(integ, hot, dof=degrees_of_freedom(N), record_every=5, chunk_steps=100, watchdogs=dogs,
                     store=store)
    frames = sim.run(5000, progress=False)
    assert isinstance(frames, Trajectory) and frames.stop_reason == sim.stop_reason
    assert sim.stop_reason is not None and "bond length deviates" in sim.stop_reason
    assert (store.directory / "offending.nc").exists()
    assert "bond" in (store.directory / "stop_reason.txt").read_text()
    kept = store.open()
    assert len(kept) == len(frames) and kept.stop_reason == sim.stop_reason
    assert store.has_state()
    b = dogs.bonds
    lengths = np.linalg.norm(frames.positions[:, b[:, 0]] - frames.positions[:, b[:, 1]], axis=-1)
    assert np.abs(lengths - dogs.bond_lengths).max() <= 0.5
    # the stopped run stays stopped: another call runs nothing and neither forgets nor rewrites why
    reason = sim.stop_reason
    again = sim.run(500, progress=False)
    assert len(again) == 0 and sim.stop_reason == again.stop_reason == reason
    assert store.stop_reason() == reason and len(store.open()) == len(frames)
    # and so does a driver resumed from the store
    resumed = Simulation(integ, hot, dof=degrees_of_freedom(N), record_every=5, chunk_steps=100, watchdogs=dogs,
                         store=TrajectoryStore(tmp_path / "boom"))
    assert resumed.resume_from_store(hot) and list(resumed.active) == [False]
    assert resumed.stop_reasons == [reason] and resumed.stop_time_fs[0] == sim.stop_time_fs[0]
    assert len(resumed.run(500, progress=False)) == 0 and resumed.stop_reason == reason
    assert store.stop_reason() == reason


def _tiny_model(system, cutoff=2.5):
    """An untrained float64 SO3krates potential with its forces scaled down (energy_scale 0.02)."""
    from so3krates_lab.graph import graph_from_system
    from so3krates_lab.model import So3kratesConfig, init_variables

    config = So3kratesConfig.preset("small", dtype="float64", features=8, layers=1, heads=1, degrees=(1,),
                                    radial_basis=8, cutoff=cutoff)
    variables = init_variables(config, graph_from_system(system, config.cutoff, dtype=np.float64), seed=0)
    return Potential.create(config, variables).with_constants(element_energy=np.zeros(119), energy_scale=0.02)


def test_overflow_reallocation_reproduces_the_ample_capacity_trajectory():
    from so3krates_lab.data import builtin
    from so3krates_lab.md import masses_of

    system = builtin.ethanol()
    # An untrained model's forces are arbitrary; scaled down, atoms move almost freely (they may pass close to
    # each other, hence no watchdogs) and the neighbour pairs keep changing.
    pot = _tiny_model(system)
    masses = masses_of(system.numbers)
    v0 = maxwell_boltzmann(masses, 500.0, 3, system.positions)
    runs = {}
    for capacity in (None, 12):
        ff = force_function(pot, system, skin=0.1, capacity=capacity, all_pairs=False)
        assert ff.pairs == "list" and ff.aux.capacity == (12 if capacity else ff.aux.capacity)
        integ = velocity_verlet(ff, 0.5)
        state = integ.init(jnp.asarray(system.positions), jnp.asarray(v0), masses, aux=ff.aux)
        sim = Simulation(integ, state, dof=degrees_of_freedom(9), record_every=10, chunk_steps=100,
                         watchdogs=None)
        runs[capacity] = (sim.run(300, progress=False), sim.reallocations, int(sim.state.aux.builds))
        assert sim.stop_reason is None
    (ample, n_ample, builds), (small, n_small, _) = runs[None], runs[12]
    assert n_ample == 0 and n_small >= 1 and builds > 1  # the list was rebuilt during the run
    assert np.isfinite(ample.potential).all()
    np.testing.assert_allclose(small.positions, ample.positions, atol=1e-10)
    np.testing.assert_allclose(small.potential, ample.potential, atol=1e-10)


def test_replicas_run_in_one_call_and_a_tripped_replica_freezes_alone():
    integ = velocity_verlet(morse_force_fn(), 0.5)
    r0 = cluster_positions()
    temps = (300.0, 3e4, 300.0)  # the middle replica flies apart
    states = stack_states([integ.init(jnp.asarray(r0), jnp.asarray(maxwell_boltzmann(MASSES, t, k, r0)), MASSES)
                           for k, t in enumerate(temps)])
    dogs = Watchdogs().with_bonds(NUMBERS, r0, max_bond_deviation=0.5)
    sim = Simulation(integ, states, dof=degrees_of_freedom(N), record_every=10, chunk_steps=100, watchdogs=dogs)
    frames = sim.run(600, progress=False)
    assert frames.positions.shape == (60, 3, N, 3) and frames.potential.shape == (60, 3)
    assert frames.n_replicas == 3
    assert list(sim.active) == [True, False, True]
    assert np.isinf(sim.stop_time_fs[[0, 2]]).all() and sim.stop_time_fs[1] < 300
    assert "bond" in sim.stop_reasons[1]
    np.testing.assert_array_equal(frames.stop_time_fs, sim.stop_time_fs)
    # replica 0 is the same trajectory as a single-system run
    single = Simulation(integ, integ.init(jnp.asarray(r0), jnp.asarray(maxwell_boltzmann(MASSES, 300.0, 0, r0)),
                                          MASSES),
                        dof=degrees_of_freedom(N), record_every=10, chunk_steps=100, watchdogs=dogs).run(
                            600, progress=False)
    np.testing.assert_allclose(frames.positions[:, 0], single.positions, atol=1e-9)
    np.testing.assert_allclose(frames.replica(0).positions, single.positions, atol=1e-9)
    # the frozen replica's state is its last good one: its bonds are intact
    b = dogs.bonds
    frozen = np.asarray(sim.state.positions[1])
    assert np.abs(np.linalg.norm(frozen[b[:, 0]] - frozen[b[:, 1]], axis=-1) - dogs.bond_lengths).max() <= 0.5


def test_cell_list_md_with_full_bins_repaired_equals_all_pairs_md():
    """A periodic water box run with the cell list, starting from bins far too small (overflow at once), gives
    the same trajectory as the all-pairs list: the driver grows the bins and redoes the chunk."""
    from so3krates_lab.data import builtin
    from so3krates_lab.md import masses_of

    system = builtin.water_box(3, seed=2)  # 9.3 A cell: three bins of 2.6 A per direction
    pot = _tiny_model(system)
    masses = masses_of(system.numbers)
    v0 = maxwell_boltzmann(masses, 500.0, 3, periodic=True)
    runs = {}
    for cell_list in (False, True):
        ff = force_function(pot, system, skin=0.1, cell_list=cell_list)
        assert (ff.neighbours.grid is not None) == cell_list and ff.pairs == ("cell" if cell_list else "list")
        nbrs = ff.aux
        if cell_list:  # two slots per bin and a stale reference: the first build overflows
            nbrs = nbrs.replace(bin_capacity=2, reference=nbrs.reference + 100.0)
        integ = velocity_verlet(ff, 0.5)
        state = integ.init(jnp.asarray(system.positions), jnp.asarray(v0), masses, aux=nbrs)
        sim = Simulation(integ, state, dof=degrees_of_freedom(system.n_atoms, True), record_every=10,
                         chunk_steps=100, watchdogs=None, periodic=True, cell=system.cell)
        runs[cell_list] = (sim.run(200, progress=False), sim.reallocations, sim.state.aux)
    (pairs, _, _), (binned, n_realloc, aux) = runs[False], runs[True]
    assert n_realloc >= 1 and aux.bin_capacity > 2 and int(aux.builds) > 2
    np.testing.assert_allclose(binned.positions, pairs.positions, atol=1e-10)
    np.testing.assert_allclose(binned.potential, pairs.potential, atol=1e-10)
    assert binned.periodic and np.allclose(binned.cell, system.cell)


def test_stop_requests_end_the_run_after_the_current_chunk_and_do_not_outlive_it(tmp_path):
    integ = velocity_verlet(morse_force_fn(), 0.5)
    r0 = cluster_positions()
    state = integ.init(jnp.asarray(r0), jnp.asarray(maxwell_boltzmann(MASSES, 300.0, 0, r0)), MASSES)
    store = TrajectoryStore(tmp_path / "stop", numbers=NUMBERS, timestep_fs=0.5)
    sim = Simulation(integ, state, dof=degrees_of_freedom(N), record_every=10, chunk_steps=50, store=store)
    # asked before the run starts (a widget's Stop pressed early): no chunk runs
    sim.request_stop()
    assert list(sim.chunks(500, progress=False)) == [] and sim.stop_reason == "stopped on request"
    assert int(sim.state.step) == 0
    # the same through run(): an empty Trajectory (not None) that says why
    sim.request_stop()
    empty = sim.run(500, progress=False)
    assert isinstance(empty, Trajectory) and len(empty) == 0 and empty.positions.shape == (0, N, 3)
    assert empty.stop_reason == "stopped on request" and int(sim.state.step) == 0
    # the request ended with that run: the next one goes the whole way
    assert len(list(sim.chunks(100, progress=False))) == 2 and sim.stop_reason is None
    assert store.stop_reason() is None
    # asked during a chunk: that chunk is kept, the run ends before the next one
    seen = []
    for frames in sim.chunks(500, progress=False):
        seen.append(frames)
        sim.request_stop()
    assert len(seen) == 1 and sim.stop_reason == "stopped on request" and int(sim.state.step) == 150
    assert len(store.open()) == 15 and "request" in (store.directory / "stop_reason.txt").read_text()
    assert sim.trajectory().stop_reason == "stopped on request"


def _killed_after_chunk_write(store, after_chunks: int):
    """Make `store` die (KeyboardInterrupt) right after it has written chunk number `after_chunks` (1-based) and
    before the state that commits it: the moment a kill -9 between the two writes would hit."""
    original_save, original_append = store.save_state, store.append
    written = []

    def append(frames):
        path = original_append(frames)
        written.append(path)
        return path

    def save_state(state, **driver):
        if len(written) >= after_chunks:
            raise KeyboardInterrupt("killed between the chunk and its state")
        return original_save(state, **driver)

    store.append, store.save_state = append, save_state


def test_a_kill_between_a_chunk_and_its_state_loses_nothing_and_duplicates_nothing(tmp_path):
    """Issue 17, item 3: a run killed after writing a chunk but before the state that commits it used to resume
    from the older state and append that chunk's frames again (250 frames, 200 unique times). Now the uncommitted
    chunk is ignored and rewritten: the store opens with strictly increasing times equal to an uninterrupted run,
    at every kill point (before the first state, mid-run, at the last chunk)."""
    from test_md import MORSE, cluster_system
    from so3krates_lab import md
    from so3krates_lab.md import TrajectoryStore

    system = cluster_system()
    settings = md.Langevin(timestep_fs=0.5, temperature_K=400.0, friction_per_fs=0.02)
    kw = dict(seed=3, chunk_steps=50, record_every=5)
    full = md.simulate(MORSE, system, settings, **kw).run(250, progress=False)
    for kill_at in (1, 3, 5):
        folder = tmp_path / f"kill_{kill_at}"
        store = TrajectoryStore(folder, numbers=system.numbers, timestep_fs=0.5)
        _killed_after_chunk_write(store, kill_at)
        sim = md.simulate(MORSE, system, settings, store=store, **kw)
        try:
            sim.run(250, progress=False)
        except KeyboardInterrupt:
            pass
        assert len(list(folder.glob("frames_*.nc"))) == kill_at  # the killed chunk's file is on disk
        resumed = md.simulate(MORSE, system, settings, store=folder, **kw)
        done = int(resumed.state.step)
        assert done == 50 * (kill_at - 1)  # the state before the killed chunk
        resumed.run(250 - done, progress=False)
        traj = TrajectoryStore(folder).open()
        assert np.all(np.diff(traj.time_fs) > 0) and len(traj) == len(full)
        np.testing.assert_array_equal(traj.time_fs, full.time_fs)
        np.testing.assert_allclose(traj.positions, full.positions, rtol=0, atol=1e-12)


def test_open_refuses_a_store_whose_times_go_back(tmp_path):
    from test_md import MORSE, cluster_system
    from so3krates_lab import md
    from so3krates_lab.md import TrajectoryStore

    system = cluster_system()
    frames = md.simulate(MORSE, system, md.NVE(0.5), temperature_K=300.0, chunk_steps=50).run(100, progress=False)
    store = TrajectoryStore(tmp_path / "s", numbers=system.numbers, timestep_fs=0.5)
    store.append(frames)
    store.append(frames.take(slice(5, None)))  # overlapping times: not one run
    import pytest

    with pytest.raises(ValueError, match="frame times do not increase"):
        store.open()
