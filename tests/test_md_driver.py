"""The chunked MD driver and trajectory store: frames on disk equal frames returned, a stopped run resumes to
the uninterrupted trajectory, watchdogs stop an exploding run cleanly, overflow reallocation changes nothing."""

import jax
import jax.numpy as jnp
import numpy as np

from test_md import MASSES, N, cluster_positions, morse_force_fn
from so3krates_lab.md import degrees_of_freedom, maxwell_boltzmann, velocity_verlet, langevin_baoab
from so3krates_lab.md.driver import Simulation, Watchdogs
from so3krates_lab.md.store import TrajectoryStore

NUMBERS = [6, 1, 8, 6, 1, 7, 1]


def _start(init, key=None):
    r0 = cluster_positions()
    return init(jnp.asarray(r0), jnp.asarray(maxwell_boltzmann(MASSES, 300.0, 1, r0)), MASSES, key=key)


def test_store_matches_run_and_a_stopped_run_resumes_exactly(tmp_path):
    init, step = langevin_baoab(morse_force_fn(), 0.5, 400.0, 0.02)
    kw = dict(timestep_fs=0.5, dof=degrees_of_freedom(N), record_every=5, chunk_steps=50)
    full = Simulation(step, _start(init, jax.random.key(0)), **kw).run(200, progress=False)
    assert len(full) == 40 and np.allclose(full.time_fs[:2], [2.5, 5.0])

    store = TrajectoryStore(tmp_path / "run", numbers=NUMBERS, timestep_fs=0.5)
    first = Simulation(step, _start(init, jax.random.key(0)), store=store, **kw)
    for k, _ in enumerate(first.chunks(200, progress=False)):
        if k == 1:
            break  # the process "dies" after two chunks
    (store.directory / ".frames_00002.nc.junk.tmp").write_bytes(b"partial")  # a write cut short
    reopened = TrajectoryStore(tmp_path / "run")
    template = _start(init, jax.random.key(99))
    second = Simulation(step, reopened.load_state(template), store=reopened, **kw)
    second.run(100, progress=False)
    ds = reopened.open()
    assert ds.sizes["time"] == 40
    np.testing.assert_array_equal(ds.positions.values, full.positions)
    np.testing.assert_array_equal(ds.temperature.values, full.temperature)
    frames = reopened.to_ase()
    assert len(frames) == 40 and frames[0].info["time_fs"] == 2.5
    reopened.to_extxyz(tmp_path / "traj.extxyz", stride=10)
    from ase.io import read

    assert len(read(tmp_path / "traj.extxyz", ":")) == 4


def test_nve_driver_conserves_energy_and_zero_momentum():
    init, step = velocity_verlet(morse_force_fn(), 0.5)
    sim = Simulation(step, _start(init), timestep_fs=0.5, dof=degrees_of_freedom(N), record_every=10,
                     chunk_steps=500, watchdogs=Watchdogs(max_energy_drift=1e-3))
    frames = sim.run(2000, progress=False)
    assert sim.stop_reason is None
    assert np.ptp(frames.total) < 0.02 * np.ptp(frames.potential)
    assert np.abs(np.einsum("i,tij->tj", MASSES, frames.velocities)).max() < 1e-10


def test_watchdog_stops_an_exploding_run_and_keeps_the_good_frames(tmp_path):
    init, step = velocity_verlet(morse_force_fn(), 0.5)
    r0 = cluster_positions()
    hot = init(jnp.asarray(r0), jnp.asarray(maxwell_boltzmann(MASSES, 3e4, 1, r0)), MASSES)  # it flies apart
    store = TrajectoryStore(tmp_path / "boom", numbers=NUMBERS, timestep_fs=0.5)
    dogs = Watchdogs().with_bonds(NUMBERS, r0, max_bond_deviation=0.5)
    sim = Simulation(step, hot, timestep_fs=0.5, dof=degrees_of_freedom(N), record_every=5, chunk_steps=100,
                     watchdogs=dogs, store=store)
    frames = sim.run(5000, progress=False)
    assert sim.stop_reason is not None and "bond length deviates" in sim.stop_reason
    assert (store.directory / "offending.nc").exists()
    assert "bond" in (store.directory / "stop_reason.txt").read_text()
    kept = store.open()
    assert kept.sizes["time"] == (0 if frames is None else len(frames))
    assert store.has_state()
    if frames is not None:
        b = dogs.bonds
        lengths = np.linalg.norm(frames.positions[:, b[:, 0]] - frames.positions[:, b[:, 1]], axis=-1)
        assert np.abs(lengths - dogs.bond_lengths).max() <= 0.5


def test_overflow_reallocation_reproduces_the_ample_capacity_trajectory():
    from so3krates_lab.data import builtin
    from so3krates_lab.graph import graph_from_system
    from so3krates_lab.md import masses_of
    from so3krates_lab.md.forces import model_force_fn
    from so3krates_lab.model import So3kratesConfig, init_variables, make_energy_fn, with_constants

    config = So3kratesConfig.preset("small", dtype="float64", features=8, layers=1, heads=1, degrees=(1,),
                                    radial_basis=8, cutoff=2.5)
    system = builtin.ethanol()
    variables = init_variables(config, graph_from_system(system, config.cutoff, dtype=np.float64), seed=0)
    # An untrained model's forces are arbitrary; scaled down, atoms move almost freely (they may pass close to
    # each other, hence no watchdogs) and the neighbour pairs keep changing.
    variables = with_constants(variables, element_energy=np.zeros(119), energy_scale=0.02)
    masses = masses_of(system.numbers)
    v0 = maxwell_boltzmann(masses, 500.0, 3, system.positions)
    runs = {}
    for capacity in (None, 12):
        force_fn, nbrs = model_force_fn(make_energy_fn(config), variables, config.cutoff, system.numbers,
                                        system.positions, skin=0.1, capacity=capacity, dtype=jnp.float64,
                                        all_pairs=False)
        init, step = velocity_verlet(force_fn, 0.5)
        state = init(jnp.asarray(system.positions), jnp.asarray(v0), masses, aux=nbrs)
        sim = Simulation(step, state, timestep_fs=0.5, dof=degrees_of_freedom(9), record_every=10,
                         chunk_steps=100, force_fn=force_fn, watchdogs=None)
        runs[capacity] = (sim.run(300, progress=False), sim.reallocations, int(sim.state.aux.builds))
        assert sim.stop_reason is None
    (ample, n_ample, builds), (small, n_small, _) = runs[None], runs[12]
    assert n_ample == 0 and n_small >= 1 and builds > 1  # the list was rebuilt during the run
    assert np.isfinite(ample.potential).all()
    np.testing.assert_allclose(small.positions, ample.positions, atol=1e-10)
    np.testing.assert_allclose(small.potential, ample.potential, atol=1e-10)


def test_replicas_run_in_one_call_and_a_tripped_replica_freezes_alone():
    from so3krates_lab.md import ReplicaSimulation, stack_states

    init, step = velocity_verlet(morse_force_fn(), 0.5)
    r0 = cluster_positions()
    temps = (300.0, 3e4, 300.0)  # the middle replica flies apart
    states = stack_states([init(jnp.asarray(r0), jnp.asarray(maxwell_boltzmann(MASSES, t, k, r0)), MASSES)
                           for k, t in enumerate(temps)])
    dogs = Watchdogs().with_bonds(NUMBERS, r0, max_bond_deviation=0.5)
    sim = ReplicaSimulation(step, states, timestep_fs=0.5, dof=degrees_of_freedom(N), record_every=10,
                            chunk_steps=100, watchdogs=dogs)
    frames = sim.run(600, progress=False)
    assert frames.positions.shape == (60, 3, N, 3) and frames.potential.shape == (60, 3)
    assert list(sim.active) == [True, False, True]
    assert np.isinf(sim.stop_time_fs[[0, 2]]).all() and sim.stop_time_fs[1] < 300
    assert "bond" in sim.stop_reasons[1]
    # replica 0 is the same trajectory as a single-system run
    single = Simulation(step, init(jnp.asarray(r0), jnp.asarray(maxwell_boltzmann(MASSES, 300.0, 0, r0)), MASSES),
                        timestep_fs=0.5, dof=degrees_of_freedom(N), record_every=10, chunk_steps=100,
                        watchdogs=dogs).run(600, progress=False)
    np.testing.assert_allclose(frames.positions[:, 0], single.positions, atol=1e-9)
    # the frozen replica's state is its last good one: its bonds are intact
    b = dogs.bonds
    frozen = np.asarray(sim.state.positions[1])
    assert np.abs(np.linalg.norm(frozen[b[:, 0]] - frozen[b[:, 1]], axis=-1) - dogs.bond_lengths).max() <= 0.5


def test_cell_list_md_with_full_bins_repaired_equals_all_pairs_md():
    """A periodic water box run with the cell list, starting from bins far too small (overflow at once), gives
    the same trajectory as the all-pairs list: the driver grows the bins and redoes the chunk."""
    from so3krates_lab.data import builtin
    from so3krates_lab.graph import graph_from_system
    from so3krates_lab.md import masses_of
    from so3krates_lab.md.forces import model_force_fn
    from so3krates_lab.model import So3kratesConfig, init_variables, make_energy_fn, with_constants

    config = So3kratesConfig.preset("small", dtype="float64", features=8, layers=1, heads=1, degrees=(1,),
                                    radial_basis=8, cutoff=2.5)
    system = builtin.water_box(3, seed=2)  # 9.3 A cell: three bins of 2.6 A per direction
    variables = init_variables(config, graph_from_system(system, config.cutoff, dtype=np.float64), seed=0)
    variables = with_constants(variables, element_energy=np.zeros(119), energy_scale=0.02)
    masses = masses_of(system.numbers)
    v0 = maxwell_boltzmann(masses, 500.0, 3)
    runs = {}
    for cell_list in (False, True):
        force_fn, nbrs = model_force_fn(make_energy_fn(config), variables, config.cutoff, system.numbers,
                                        system.positions, system.cell, system.pbc, skin=0.1,
                                        dtype=jnp.float64, cell_list=cell_list)
        assert (force_fn.grid is not None) == cell_list
        if cell_list:  # two slots per bin and a stale reference: the first build overflows
            nbrs = nbrs.replace(bin_capacity=2, reference=nbrs.reference + 100.0)
        init, step = velocity_verlet(force_fn, 0.5)
        state = init(jnp.asarray(system.positions), jnp.asarray(v0), masses, aux=nbrs)
        sim = Simulation(step, state, timestep_fs=0.5, dof=degrees_of_freedom(system.n_atoms, True),
                         record_every=10, chunk_steps=100, force_fn=force_fn, watchdogs=None, periodic=True)
        runs[cell_list] = (sim.run(200, progress=False), sim.reallocations, sim.state.aux)
    (pairs, _, _), (binned, n_realloc, aux) = runs[False], runs[True]
    assert n_realloc >= 1 and aux.bin_capacity > 2 and int(aux.builds) > 2
    np.testing.assert_allclose(binned.positions, pairs.positions, atol=1e-10)
    np.testing.assert_allclose(binned.potential, pairs.potential, atol=1e-10)


def test_stop_requests_end_the_run_after_the_current_chunk_and_do_not_outlive_it(tmp_path):
    init, step = velocity_verlet(morse_force_fn(), 0.5)
    r0 = cluster_positions()
    state = init(jnp.asarray(r0), jnp.asarray(maxwell_boltzmann(MASSES, 300.0, 0, r0)), MASSES)
    store = TrajectoryStore(tmp_path / "stop", numbers=NUMBERS, timestep_fs=0.5)
    sim = Simulation(step, state, timestep_fs=0.5, dof=degrees_of_freedom(N), record_every=10, chunk_steps=50,
                     store=store)
    # asked before the run starts (a widget's Stop pressed early): no chunk runs
    sim.request_stop()
    assert list(sim.chunks(500, progress=False)) == [] and sim.stop_reason == "stopped on request"
    assert int(sim.state.step) == 0
    # the request ended with that run: the next one goes the whole way
    assert len(list(sim.chunks(100, progress=False))) == 2 and sim.stop_reason is None
    assert store.stop_reason() is None
    # asked during a chunk: that chunk is kept, the run ends before the next one
    seen = []
    for frames in sim.chunks(500, progress=False):
        seen.append(frames)
        sim.request_stop()
    assert len(seen) == 1 and sim.stop_reason == "stopped on request" and int(sim.state.step) == 150
    assert store.open().sizes["time"] == 15 and "request" in (store.directory / "stop_reason.txt").read_text()
