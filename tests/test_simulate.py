"""The one-call MD entry point and its pieces: `md.simulate` (time step from the integrator, degrees of freedom
and periodicity from the system, replicas, store and resume), the unified driver's replica rollback, `md.relax`,
the typed `md.Integrator`, the Maxwell-Boltzmann start rule, and the stability analyses of a run. All on the
analytic Morse cluster of test_md (a potential on the protocol), so every test takes seconds."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from test_md import MASSES, MORSE, N, NUMBERS, cluster_positions, cluster_system, morse_force_fn
from so3krates_lab import MorsePotential, System, Trajectory, md
from so3krates_lab.analysis import energy_conservation, stable_times_ps
from so3krates_lab.md import (
    KB_EV_PER_K, Integrator, Langevin, NoseHoover, NVE, Simulation, TrajectoryStore, Watchdogs, degrees_of_freedom,
    kinetic_energy, langevin_baoab, maxwell_boltzmann, nose_hoover_chain, simulate, stack_states, velocity_verlet,
)


def _angular_momentum(positions, velocities, masses=MASSES):
    r = positions - masses @ positions / masses.sum()
    return (masses[:, None] * np.cross(r, velocities)).sum(0)


def _instantaneous_temperature(sim) -> float:
    state = sim.state
    return float(2.0 * kinetic_energy(state.velocities, state.masses) / (sim.dof * KB_EV_PER_K))


def crystal() -> System:
    """8 atoms on a simple-cubic lattice (spacing 2 A) in a periodic 4 A box."""
    grid = np.array(list(np.ndindex(2, 2, 2)), float) * 2.0 + 0.3
    return System(numbers=[18] * 8, positions=grid, cell=np.eye(3) * 4.0, pbc=[True, True, True])


# --- simulate: what comes from where -------------------------------------------------------------------------
def test_simulate_takes_the_time_step_from_the_integrator_and_dof_from_the_system():
    sim = simulate(MORSE, cluster_system(), NVE(timestep_fs=0.25), temperature_K=300.0, record_every=10,
                   chunk_steps=20)
    assert isinstance(sim, Simulation) and sim.timestep_fs == 0.25 and sim.integrator.timestep_fs == 0.25
    assert sim.dof == degrees_of_freedom(N) == 3 * N - 6 and not sim.periodic and not sim.replicas
    # the start velocities: exactly 300 K over 3N - 6 degrees of freedom, no linear or angular momentum
    assert _instantaneous_temperature(sim) == pytest.approx(300.0, rel=1e-9)
    v, m = np.asarray(sim.state.velocities), np.asarray(sim.state.masses)
    np.testing.assert_allclose(m, md.masses_of(NUMBERS))  # the elements' masses
    np.testing.assert_allclose(m @ v, 0.0, atol=1e-12)
    np.testing.assert_allclose(_angular_momentum(cluster_positions(), v, m), 0.0, atol=1e-10)
    traj = sim.run(40, progress=False)
    assert isinstance(traj, Trajectory) and traj.timestep_fs == 0.25 and traj.n_replicas is None
    np.testing.assert_allclose(traj.time_fs, [2.5, 5.0, 7.5, 10.0])  # every 10 steps of 0.25 fs
    np.testing.assert_allclose(traj.temperature, 2.0 * traj.kinetic / ((3 * N - 6) * KB_EV_PER_K))
    np.testing.assert_array_equal(traj.numbers, NUMBERS)
    assert traj.cell is None and not traj.periodic
    # a thermostat's temperature is the default start temperature
    hot = simulate(MORSE, cluster_system(), Langevin(timestep_fs=0.5, temperature_K=450.0))
    assert hot.timestep_fs == 0.5 and hot.integrator.temperature_K == 450.0 and hot.integrator.needs_key
    assert _instantaneous_temperature(hot) == pytest.approx(450.0, rel=1e-9)
    chain = simulate(MORSE, cluster_system(), NoseHoover(timestep_fs=0.5, temperature_K=200.0, tau_fs=20.0))
    assert "Nose-Hoover" in chain.integrator.name and chain.integrator.temperature_K == 200.0
    assert _instantaneous_temperature(chain) == pytest.approx(200.0, rel=1e-9)
    # given velocities are used as they are
    v0 = maxwell_boltzmann(MASSES, 123.0, seed=7, positions=cluster_positions())
    given = simulate(MORSE, cluster_system(), NVE(0.5), velocities=v0)
    np.testing.assert_allclose(np.asarray(given.state.velocities), v0)


def test_simulate_of_a_periodic_system_uses_its_cell_and_3n_minus_3_degrees_of_freedom():
    system = crystal()
    pot = MorsePotential(depth=0.3, a=1.5, r0=2.0, cutoff=3.5, dtype="float64")
    sim = simulate(pot, system, NVE(0.5), temperature_K=300.0, record_every=5, chunk_steps=10, watchdogs=None)
    assert sim.periodic and sim.dof == 3 * 8 - 3 == degrees_of_freedom(8, periodic=True)
    assert sim.integrator.force_fn.pairs == "list"  # a periodic cell never gets the fixed free-molecule graph
    # Maxwell-Boltzmann for a periodic system: exactly 300 K over 3N - 3, only the linear momentum removed
    assert _instantaneous_temperature(sim) == pytest.approx(300.0, rel=1e-9)
    np.testing.assert_allclose(np.asarray(sim.state.masses), 39.948, rtol=1e-4)  # argon
    np.testing.assert_allclose(np.asarray(sim.state.masses) @ np.asarray(sim.state.velocities), 0.0, atol=1e-12)
    traj = sim.run(20, progress=False)
    assert traj.periodic and traj.pbc.all()
    np.testing.assert_allclose(traj.cell, system.cell)
    np.testing.assert_allclose(traj.temperature, 2.0 * traj.kinetic / (21 * KB_EV_PER_K))
    assert np.isfinite(traj.potential).all() and traj.potential[0] < 0  # the lattice is bound


def test_simulate_and_the_driver_reject_bad_arguments():
    system = cluster_system()
    with pytest.raises(ValueError, match="NVE needs start velocities"):
        simulate(MORSE, system, NVE(0.5))
    with pytest.raises(ValueError, match=r"velocities must have shape \(7, 3\)"):
        simulate(MORSE, system, NVE(0.5), velocities=np.zeros((6, 3)))
    with pytest.raises(ValueError, match="replicas must be >= 1"):
        simulate(MORSE, system, Langevin(0.5, 300.0), replicas=0)
    with pytest.raises(TypeError, match="System"):
        simulate(MORSE, cluster_positions(), NVE(0.5), temperature_K=300.0)
    with pytest.raises(TypeError, match=r"md.NVE\(...\)"):
        simulate(MORSE, system, velocity_verlet(morse_force_fn(), 0.5), temperature_K=300.0)
    with pytest.raises(TypeError, match="is not a potential"):
        simulate(object(), system, NVE(0.5), temperature_K=300.0)
    integ = velocity_verlet(morse_force_fn(), 0.5)
    state = integ.init(jnp.asarray(cluster_positions()), jnp.zeros((N, 3)), MASSES)
    with pytest.raises(TypeError, match="md.Integrator"):
        Simulation(integ.step, state, dof=15)  # the old (step function, state) call
    with pytest.raises(ValueError, match="multiple of record_every"):
        Simulation(integ, state, dof=15, record_every=7, chunk_steps=50)


# --- replicas -------------------------------------------------------------------------------------------------
def test_replicas_run_together_and_each_equals_its_own_single_run():
    """replicas=R: R copies with seeds seed, seed + 1, ... (velocities and Langevin noise) in one compiled
    call; replica r is the trajectory a single run with seed + r gives."""
    settings = Langevin(timestep_fs=0.5, temperature_K=400.0, friction_per_fs=0.02)
    kw = dict(record_every=10, chunk_steps=50)
    sim = simulate(MORSE, cluster_system(), settings, seed=5, replicas=3, **kw)
    assert sim.replicas and sim.n_replicas == 3 and sim.state.positions.shape == (3, N, 3)
    traj = sim.run(100, progress=False)
    assert traj.n_replicas == 3 and traj.positions.shape == (10, 3, N, 3) and traj.temperature.shape == (10, 3)
    np.testing.assert_array_equal(traj.stop_time_fs, np.full(3, np.inf))
    for r in range(3):
        single = simulate(MORSE, cluster_system(), settings, seed=5 + r, **kw).run(100, progress=False)
        np.testing.assert_allclose(traj.replica(r).positions, single.positions, atol=1e-9)
        np.testing.assert_allclose(traj.replica(r).potential, single.potential, atol=1e-9)
    assert np.abs(traj.positions[-1, 0] - traj.positions[-1, 1]).max() > 1e-3  # the replicas really differ


# --- store and resume -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("replicas", [None, 2])
def test_a_stored_run_resumed_by_simulate_equals_the_uninterrupted_run(tmp_path, replicas):
    settings = Langevin(timestep_fs=0.5, temperature_K=400.0, friction_per_fs=0.02)
    kw = dict(replicas=replicas, record_every=5, chunk_steps=50)
    full = simulate(MORSE, cluster_system(), settings, seed=3, **kw).run(200, progress=False)
    assert len(full) == 40

    first = simulate(MORSE, cluster_system(), settings, seed=3, store=tmp_path / "run", **kw)
    for k, _ in enumerate(first.chunks(200, progress=False)):
        if k == 1:
            break  # the process "dies" after two chunks
    # another seed: the stored state (positions, velocities, the noise's PRNG key) wins over fresh velocities
    second = simulate(MORSE, cluster_system(), settings, seed=99, store=tmp_path / "run", **kw)
    assert np.all(np.asarray(second.state.step) == 100)
    rest = second.run(100, progress=False)
    np.testing.assert_array_equal(rest.positions, full.positions[20:])
    stored = TrajectoryStore(tmp_path / "run").open()
    assert len(stored) == 40 and stored.n_replicas == replicas and stored.stop_reason is None
    np.testing.assert_array_equal(stored.time_fs, full.time_fs)
    np.testing.assert_array_equal(stored.positions, full.positions)
    np.testing.assert_array_equal(stored.velocities, full.velocities)
    np.testing.assert_array_equal(stored.temperature, full.temperature)
    np.testing.assert_array_equal(second.trajectory().positions, full.positions)
    assert stored.timestep_fs == 0.5
    # resume=False into a folder that holds a run would write a second run from t = 0 behind the first one (an
    # unreadable store): refused, naming the folder; into a new folder it starts afresh from the system
    with pytest.raises(ValueError, match="already holds a run"):
        simulate(MORSE, cluster_system(), settings, seed=99, store=tmp_path / "run", resume=False, **kw)
    assert TrajectoryStore(tmp_path / "run").open().time_fs[-1] == full.time_fs[-1]  # untouched
    fresh = simulate(MORSE, cluster_system(), settings, seed=99, store=tmp_path / "new", resume=False, **kw)
    unstored = simulate(MORSE, cluster_system(), settings, seed=99, **kw)
    assert np.all(np.asarray(fresh.state.step) == 0)
    np.testing.assert_array_equal(np.asarray(fresh.state.velocities), np.asarray(unstored.state.velocities))
    np.testing.assert_array_equal(np.asarray(fresh.state.positions), np.asarray(unstored.state.positions))


# --- the unified driver: replica watchdog rollback ------------------------------------------------------------
def _hot_and_cold(integ):
    r0 = cluster_positions()
    return stack_states([integ.init(jnp.asarray(r0), jnp.asarray(maxwell_boltzmann(MASSES, t, k, r0)), MASSES)
                         for k, t in enumerate((300.0, 3e4))])  # replica 1 flies apart


def test_a_tripped_replica_is_rolled_back_frozen_stored_and_restored_on_resume(tmp_path):
    integ = velocity_verlet(morse_force_fn(), 0.5)
    dogs = Watchdogs().with_bonds(cluster_system(), max_bond_deviation=0.5)
    kw = dict(dof=degrees_of_freedom(N), record_every=10, chunk_steps=40, watchdogs=dogs, numbers=NUMBERS)
    chunk_fs = 40 * 0.5
    full_sim = Simulation(integ, _hot_and_cold(integ), **kw)
    full = full_sim.run(240, progress=False)  # 6 chunks, 120 fs
    assert list(full_sim.active) == [True, False] and full_sim.stop_reason is None  # replica 0 goes on
    t_stop = full_sim.stop_time_fs[1]
    assert np.isinf(full_sim.stop_time_fs[0]) and 0 < t_stop <= 2 * chunk_fs  # stopped in the first two chunks
    assert "bond length deviates" in full_sim.stop_reasons[1] and full_sim.stop_reasons[0] is None
    np.testing.assert_array_equal(full.stop_time_fs, full_sim.stop_time_fs)
    # rollback: the frozen state is the replica's state at the start of the chunk it tripped in
    t_begun = np.floor((t_stop - 1e-9) / chunk_fs) * chunk_fs
    frozen = np.asarray(full_sim.state.positions[1])
    at_begin = cluster_positions() if t_begun == 0 else full.positions[np.isclose(full.time_fs, t_begun), 1][0]
    np.testing.assert_allclose(frozen, at_begin, atol=1e-12)
    assert int(full_sim.state.step[1]) == round(t_begun / 0.5) and int(full_sim.state.step[0]) == 240
    b = dogs.bonds
    assert np.abs(np.linalg.norm(frozen[b[:, 0]] - frozen[b[:, 1]], axis=-1) - dogs.bond_lengths).max() <= 0.5
    # after that chunk its frames repeat the frozen state; its own trajectory ends before the stop time
    later = full.time_fs > t_begun + chunk_fs
    assert later.sum() >= 8
    np.testing.assert_allclose(full.positions[later, 1], np.broadcast_to(frozen, (later.sum(), N, 3)), atol=1e-12)
    one = full.replica(1)
    assert len(one) == np.sum(full.time_fs < t_stop) and one.time_fs[-1] < t_stop
    lengths = np.linalg.norm(one.positions[:, b[:, 0]] - one.positions[:, b[:, 1]], axis=-1)
    assert np.abs(lengths - dogs.bond_lengths).max() <= 0.5
    assert len(full.replica(0)) == len(full) == 24
    # stable times: the full run for replica 0, the stop time for replica 1
    np.testing.assert_allclose(stable_times_ps(full, duration_fs=120.0), [0.12, t_stop / 1e3])

    # the same with a store, interrupted after three chunks and resumed from it
    store = TrajectoryStore(tmp_path / "reps", numbers=NUMBERS, timestep_fs=0.5)
    first = Simulation(integ, _hot_and_cold(integ), store=store, **kw)
    first.run(120, progress=False)
    assert list(first.active) == [True, False]
    second = Simulation(integ, _hot_and_cold(integ), store=TrajectoryStore(tmp_path / "reps"), **kw)
    assert second.resume_from_store(_hot_and_cold(integ))
    assert list(second.active) == [True, False] and second.stop_reasons == full_sim.stop_reasons
    np.testing.assert_array_equal(second.stop_time_fs, full_sim.stop_time_fs)
    second.run(120, progress=False)
    stored = store.open()
    np.testing.assert_allclose(stored.positions, full.positions, atol=1e-12)
    np.testing.assert_array_equal(stored.stop_time_fs, full_sim.stop_time_fs)
    np.testing.assert_allclose(np.asarray(second.state.positions), np.asarray(full_sim.state.positions), atol=1e-12)


def test_every_replica_stopped_ends_the_run():
    integ = velocity_verlet(morse_force_fn(), 0.5)
    r0 = cluster_positions()
    states = stack_states([integ.init(jnp.asarray(r0), jnp.asarray(maxwell_boltzmann(MASSES, 3e4, k, r0)), MASSES)
                           for k in range(2)])
    sim = Simulation(integ, states, dof=degrees_of_freedom(N), record_every=10, chunk_steps=40,
                     watchdogs=Watchdogs().with_bonds(cluster_system()))
    traj = sim.run(4000, progress=False)
    assert not sim.active.any() and sim.stop_reason == "every replica stopped"
    assert np.isfinite(sim.stop_time_fs).all() and traj.time_fs[-1] < 4000 * 0.5  # it ended early
    np.testing.assert_allclose(stable_times_ps(traj), sim.stop_time_fs / 1e3)


# --- relax ----------------------------------------------------------------------------------------------------
def test_relax_one_structure_and_several():
    rng = np.random.default_rng(0)
    starts = [cluster_system().replace(positions=cluster_positions() + 0.2 * rng.normal(size=(N, 3)))
              for _ in range(3)]
    start_energy = MORSE.evaluate(starts[0]).energies[0]
    relaxed, converged = md.relax(MORSE, starts[0], fmax=1e-4)
    assert isinstance(relaxed, System) and converged is True
    assert relaxed.energy < start_energy - 0.01
    assert np.linalg.norm(relaxed.forces, axis=1).max() < 1e-4
    check = MORSE.evaluate(relaxed)  # the labels are the potential's at the relaxed geometry
    assert relaxed.energy == pytest.approx(check.energies[0], abs=1e-9)
    np.testing.assert_allclose(relaxed.forces, check.forces[0], atol=1e-9)
    np.testing.assert_array_equal(relaxed.numbers, NUMBERS)
    # L-BFGS from the same start reaches the same minimum
    other, ok = md.relax(MORSE, starts[0], fmax=1e-4, minimizer="lbfgs")
    assert ok and other.energy == pytest.approx(relaxed.energy, abs=1e-7)
    many, ok_many = md.relax(MORSE, starts, fmax=1e-4, n_slots=2)
    assert isinstance(many, list) and len(many) == 3 and ok_many.shape == (3,) and ok_many.all()
    assert many[0].energy == pytest.approx(relaxed.energy, abs=1e-7)
    for s, r in zip(starts, many):
        assert r.energy < MORSE.evaluate(s).energies[0]
    _, not_yet = md.relax(MORSE, starts[0], fmax=1e-4, max_steps=3)
    assert not_yet is False
    with pytest.raises(ValueError, match="one molecule"):
        md.relax(MORSE, [starts[0], System(numbers=[6, 6], positions=[[0, 0, 0], [1.5, 0, 0]])])


# --- the typed integrator and its settings --------------------------------------------------------------------
def test_integrators_are_typed_values_with_their_time_step_force_function_and_conserved_quantity():
    ff = morse_force_fn()
    r0 = jnp.asarray(cluster_positions())
    v0 = jnp.asarray(maxwell_boltzmann(MASSES, 300.0, seed=1, positions=cluster_positions()))
    nve = velocity_verlet(ff, 0.5)
    assert isinstance(nve, Integrator) and nve.timestep_fs == 0.5 and nve.force_fn is ff
    assert not nve.needs_key and nve.temperature_K is None and "NVE" in nve.name
    with pytest.raises(dataclasses.FrozenInstanceError):
        nve.timestep_fs = 1.0
    state = nve.init(r0, v0, MASSES)
    assert float(nve.conserved(state)) == pytest.approx(float(state.potential + kinetic_energy(v0, MASSES)))
    later = jax.jit(nve.step)(state)
    assert int(later.step) == 1 and not np.allclose(np.asarray(later.positions), np.asarray(r0))

    langevin = langevin_baoab(ff, 0.25, 350.0, 0.02)
    assert langevin.needs_key and langevin.temperature_K == 350.0 and langevin.timestep_fs == 0.25
    with pytest.raises(ValueError, match="PRNG key"):
        langevin.init(r0, v0, MASSES)
    assert "key" in langevin.init(r0, v0, MASSES, key=jax.random.key(0)).thermostat

    chain = nose_hoover_chain(ff, 0.5, 300.0, n_atoms=N, tau_fs=20.0)
    assert not chain.needs_key and chain.temperature_K == 300.0
    s = chain.init(r0, v0, MASSES)
    mechanical = float(s.potential + kinetic_energy(s.velocities, s.masses))
    assert float(chain.conserved(s)) == pytest.approx(mechanical)  # a resting thermostat adds nothing
    s = jax.jit(lambda s: jax.lax.fori_loop(0, 200, lambda _, x: chain.step(x), s))(s)
    mechanical = float(s.potential + kinetic_energy(s.velocities, s.masses))
    assert abs(float(chain.conserved(s)) - mechanical) > 1e-4  # the thermostat's energy is counted

    # the settings for simulate build the same integrators around a force function
    built = {"nve": NVE(0.5).build(ff, N, False), "langevin": Langevin(0.25, 350.0, 0.02).build(ff, N, False),
             "chain": NoseHoover(0.5, 300.0, tau_fs=20.0).build(ff, N, False)}
    assert all(isinstance(i, Integrator) and i.force_fn is ff for i in built.values())
    assert built["nve"].timestep_fs == 0.5 and built["langevin"].needs_key and built["langevin"].timestep_fs == 0.25
    assert built["chain"].temperature_K == 300.0
    a = jax.jit(built["nve"].step)(built["nve"].init(r0, v0, MASSES))
    np.testing.assert_array_equal(np.asarray(a.positions), np.asarray(later.positions))


# --- maxwell_boltzmann: periodic and positions ----------------------------------------------------------------
def test_maxwell_boltzmann_needs_a_free_molecules_positions_and_knows_periodic_systems():
    with pytest.raises(ValueError, match="positions"):
        maxwell_boltzmann(MASSES, 300.0, seed=0)  # a free molecule of 7 atoms: the angular momentum needs them
    r0 = cluster_positions()
    free = maxwell_boltzmann(MASSES, 300.0, seed=0, positions=r0)
    np.testing.assert_allclose(MASSES @ free, 0.0, atol=1e-12)
    np.testing.assert_allclose(_angular_momentum(r0, free), 0.0, atol=1e-10)
    assert float(2 * kinetic_energy(free, MASSES) / ((3 * N - 6) * KB_EV_PER_K)) == pytest.approx(300.0)
    periodic = maxwell_boltzmann(MASSES, 300.0, seed=0, periodic=True)  # no positions needed
    np.testing.assert_allclose(MASSES @ periodic, 0.0, atol=1e-12)
    assert float(2 * kinetic_energy(periodic, MASSES) / ((3 * N - 3) * KB_EV_PER_K)) == pytest.approx(300.0)
    assert np.abs(_angular_momentum(r0, periodic)).max() > 1e-6  # only the linear momentum is removed
    # the same draw with positions: periodic=True still keeps the angular momentum
    np.testing.assert_allclose(maxwell_boltzmann(MASSES, 300.0, seed=0, positions=r0, periodic=True), periodic)
    pair = maxwell_boltzmann(MASSES[:2], 300.0, seed=0)  # two atoms: nothing to derive from positions
    assert pair.shape == (2, 3) and np.allclose(MASSES[:2] @ pair, 0.0, atol=1e-12)


# --- stability analyses ---------------------------------------------------------------------------------------
def _synthetic(conserved, time_fs, **kw) -> Trajectory:
    k = len(time_fs)
    return Trajectory(numbers=[1, 1, 8], time_fs=time_fs, positions=np.zeros((k, 3, 3)),
                      velocities=np.zeros((k, 3, 3)), potential=-3.0 + 0.5 * np.sin(time_fs),
                      kinetic=0.2 + 0.001 * time_fs, temperature=np.full(k, 300.0), conserved=conserved, **kw)


def test_energy_conservation_measures_the_conserved_quantity():
    t = np.arange(101) * 10.0  # 0..1000 fs
    wiggle = 1e-4 * np.sin(2 * np.pi * t / 50.0)
    conserved = -5.0 + 0.002 * t / 1e3 + wiggle  # a drift of 2 meV/ps
    report = energy_conservation(_synthetic(conserved, t))
    assert report["frames"] == 101 and report["duration_ps"] == pytest.approx(1.0)
    assert report["drift_meV_per_ps"] == pytest.approx(2.0, rel=1e-2)
    assert report["drift_meV_per_atom_ps"] == pytest.approx(2.0 / 3, rel=1e-2)
    assert report["std_meV"] == pytest.approx(1e3 * np.std(conserved))
    assert report["max_deviation_meV"] == pytest.approx(1e3 * np.max(np.abs(conserved - conserved[0])))
    # the kinetic energy above drifts by 1 eV/ps: only the conserved quantity counts
    flat = energy_conservation(_synthetic(np.full(101, -5.0), t))
    assert flat["drift_meV_per_ps"] == pytest.approx(0.0, abs=1e-9) and flat["std_meV"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="two frames"):
        energy_conservation(_synthetic(np.zeros(1), t[:1]))
    reps = simulate(MORSE, cluster_system(), NVE(0.5), temperature_K=300.0, replicas=2, record_every=10,
                    chunk_steps=20).run(20, progress=False)
    with pytest.raises(ValueError, match="replica"):
        energy_conservation(reps)
    # a real NVE run: the drift and noise are a small part of the energy that flows between potential and kinetic
    traj = simulate(MORSE, cluster_system(), NVE(0.25), temperature_K=300.0, record_every=4,
                    chunk_steps=400).run(1600, progress=False)
    real = energy_conservation(traj)
    assert real["frames"] == 400 and real["duration_ps"] == pytest.approx(0.399)
    assert real["std_meV"] < 0.01 * 1e3 * np.ptp(traj.potential)
    assert abs(real["drift_meV_per_ps"]) * real["duration_ps"] < 3 * real["std_meV"] + 1e-6
    assert real["std_meV"] == pytest.approx(1e3 * np.std(traj.conserved))
    # a thermostatted run knows its integrator: Langevin warns, Nose-Hoover (extended energy) does not
    import warnings

    assert traj.integrator == "velocity Verlet (NVE)"
    hot = simulate(MORSE, cluster_system(), Langevin(timestep_fs=0.5, temperature_K=300.0), temperature_K=300.0, record_every=4,
                   chunk_steps=40).run(40, progress=False)
    assert hot.integrator.startswith("Langevin")
    with pytest.warns(UserWarning, match="Langevin thermostat exchanges energy"):
        energy_conservation(hot)
    chain = simulate(MORSE, cluster_system(), NoseHoover(timestep_fs=0.5, temperature_K=300.0), temperature_K=300.0, record_every=4,
                     chunk_steps=40).run(40, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        energy_conservation(chain)
        energy_conservation(_synthetic(conserved, t))  # unknown integrator: no warning


def test_stable_times_of_replicas_and_of_one_structure():
    t = np.arange(1, 51) * 10.0  # 10..500 fs
    k = len(t)
    reps = Trajectory(numbers=[1, 1, 8], time_fs=t, positions=np.zeros((k, 3, 3, 3)),
                      velocities=np.zeros((k, 3, 3, 3)), potential=np.zeros((k, 3)), kinetic=np.zeros((k, 3)),
                      temperature=np.zeros((k, 3)), conserved=np.zeros((k, 3)), stop_time_fs=[np.inf, 120.0, np.inf])
    np.testing.assert_allclose(stable_times_ps(reps), [0.5, 0.12, 0.5])
    np.testing.assert_allclose(stable_times_ps(reps, duration_fs=1000.0), [1.0, 0.12, 1.0])
    never = dataclasses.replace(reps, stop_time_fs=None)
    np.testing.assert_allclose(stable_times_ps(never, duration_fs=800.0), [0.8, 0.8, 0.8])
    one = _synthetic(np.zeros(k), t)
    np.testing.assert_allclose(stable_times_ps(one), [0.5])
    np.testing.assert_allclose(stable_times_ps(one, duration_fs=1000.0), [1.0])
    tripped = dataclasses.replace(one, stop_reason="stopped at t = 510.0 fs: temperature 9000 K > 5000 K")
    np.testing.assert_allclose(stable_times_ps(tripped, duration_fs=1000.0), [0.5])  # its last good frame
    asked = dataclasses.replace(one, stop_reason="stopped on request")  # not an instability
    np.testing.assert_allclose(stable_times_ps(asked, duration_fs=1000.0), [1.0])
