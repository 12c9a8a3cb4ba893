"""The default watchdogs: `Watchdogs()` resolves to limits fitted to the run (covalent bonds of the start geometry,
a temperature ceiling relative to the run's temperature, an NVE energy-drift limit) that stop an exploding run of
the shipped ethanol model at once and leave a normal 500 K run alone; explicit values and None override them."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from so3krates_lab import System, Trajectory, md
from so3krates_lab.md import KB_EV_PER_K, NVE, Watchdogs, degrees_of_freedom
from so3krates_lab.md.watchdogs import (
    AUTO, bond_lengths, covalent_bonds, margin_rows, reference_temperature, start_temperature, temperature_factor,
    watchdog_margins,
)

WATER = np.array([8, 1, 1])
WATER_POS = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])


def _frames(positions, temperature=300.0, total=0.0, numbers=WATER) -> Trajectory:
    """Frames (K, N, 3) with constant temperature and potential + kinetic = total per frame (scalars or (K,))."""
    pos = np.asarray(positions, float)
    k = len(pos)
    return Trajectory(numbers=numbers, time_fs=np.arange(1, k + 1) * 10.0, positions=pos,
                      velocities=np.zeros_like(pos), potential=np.broadcast_to(total, (k,)).astype(float),
                      kinetic=np.zeros(k), temperature=np.broadcast_to(temperature, (k,)).astype(float),
                      conserved=np.zeros(k))


@pytest.fixture(scope="module")
def ethanol():
    from so3krates_lab import pretrained
    from so3krates_lab.data import load_shipped

    return pretrained.load("ethanol_pbe"), load_shipped("ethanol_pbe_500K")[0]


# --- the shipped model: an explosion stops, a normal run does not ---------------------------------------------
def test_default_watchdogs_stop_a_50_fs_nve_explosion_of_ethanol_in_the_first_chunk(ethanol, tmp_path):
    potential, system = ethanol
    sim = md.simulate(potential, system, NVE(timestep_fs=50.0), temperature_K=500.0, record_every=5,
                      chunk_steps=10, store=tmp_path / "boom")
    traj = sim.run(40, progress=False)
    assert sim.stop_reason is not None and sim.stop_time_fs[0] <= 10 * 50.0  # in the first chunk
    assert "bond length deviates" in sim.stop_reason and "automatic" in sim.stop_reason
    assert "max_bond_deviation" in sim.stop_reason and len(traj) < 2
    dogs = sim.watchdogs  # the resolved limits
    assert dogs.resolved and len(dogs.bonds) == 8 and dogs.max_bond_deviation == 0.5
    assert dogs.max_temperature == pytest.approx(temperature_factor(21) * 500.0, rel=1e-6)
    assert dogs.max_energy_drift == pytest.approx(2.0 * KB_EV_PER_K * 500.0, rel=1e-6)
    # each automatic limit on its own catches it too (the offending frames the store kept)
    import xarray as xr

    with xr.open_dataset(tmp_path / "boom" / "offending.nc", engine="scipy") as ds:
        bad = Trajectory.from_xarray(ds.load())
    e0 = float(sim.integrator.conserved(sim.state)) / system.n_atoms  # the state at the start of the chunk
    no_bonds = dataclasses.replace(dogs, max_bond_deviation=None)
    k, why = no_bonds.first_violation(bad, e0, False)
    assert k == 0 and "max_temperature" in why and "automatic" in why
    k, why = dataclasses.replace(no_bonds, max_temperature=None).first_violation(bad, e0, False)
    assert k == 0 and "max_energy_drift" in why and "automatic" in why


def test_default_watchdogs_leave_a_normal_500K_nve_run_of_ethanol_alone(ethanol):
    potential, system = ethanol
    sim = md.simulate(potential, system, NVE(timestep_fs=0.5), temperature_K=500.0, replicas=2, record_every=10,
                      chunk_steps=200)
    e0 = np.asarray(jax.vmap(sim.integrator.conserved)(sim.state)) / system.n_atoms
    traj = sim.run(400, progress=False)
    assert sim.stop_reason is None and sim.active.all() and len(traj) == 40
    dogs = sim.watchdogs
    assert len(dogs.bonds) == 8 and set(dogs.automatic) == {"max_bond_deviation", "max_temperature",
                                                             "max_energy_drift"}
    assert dogs.max_energy_drift is not None and "start temperature" in dogs.automatic["max_energy_drift"]
    for r in range(2):
        m = watchdog_margins(dogs, traj.replica(r), float(e0[r]))
        assert m["first_violation"] is None
        assert m["max_bond_deviation"][0] < 0.5 * dogs.max_bond_deviation
        assert m["max_temperature"][0] < 0.5 * dogs.max_temperature
        assert m["max_energy_drift"][0] < 0.05 * dogs.max_energy_drift


# --- for_run: what the automatic limits become -----------------------------------------------------------------
def test_for_run_fills_bonds_from_the_start_geometry_of_one_structure_or_replica_0():
    dogs = Watchdogs().for_run(WATER, WATER_POS, temperature_K=300.0, dof=3)
    assert dogs.resolved and dogs.max_bond_deviation == 0.5 and dogs.cell is None
    np.testing.assert_array_equal(dogs.bonds, [[0, 1], [0, 2]])
    np.testing.assert_allclose(dogs.bond_lengths, [0.96, np.hypot(0.24, 0.93)])
    assert "2 covalent bonds" in dogs.automatic["max_bond_deviation"]
    replicas = np.stack([WATER_POS, WATER_POS + 0.3])
    again = Watchdogs().for_run(WATER, replicas, temperature_K=300.0, dof=3)
    np.testing.assert_array_equal(again.bonds, dogs.bonds)
    # no bonds (argon; unknown elements) -> the bond check is off, and says so
    argon = Watchdogs().for_run([18, 18], [[0, 0, 0], [3.8, 0, 0]], temperature_K=100.0)
    assert argon.max_bond_deviation is None and "no covalent bonds" in argon.automatic["max_bond_deviation"]
    unknown = Watchdogs().for_run([0, 0, 0], WATER_POS * 0.3, temperature_K=100.0)
    assert unknown.max_bond_deviation is None and len(unknown.bonds) == 0
    # a bond that stretches by more than 0.5 A stops the run, and the reason names the atoms
    stretched = WATER_POS.copy()
    stretched[1, 0] = 1.6
    k, why = dogs.first_violation(_frames([WATER_POS, stretched]), None, False)
    assert k == 1 and "O0-H1" in why and "0.640 A" in why and "automatic" in why


def test_for_run_bonds_of_a_periodic_system_use_the_minimum_image():
    cell = np.eye(3) * 4.0
    pos = np.array([[0.3, 2.0, 2.0], [3.34, 2.0, 2.0]])  # O-H 0.96 A across the x boundary, 3.04 A in the cell
    dogs = Watchdogs().for_run([8, 1], pos, cell=cell, periodic=True, temperature_K=300.0)
    np.testing.assert_array_equal(dogs.bonds, [[0, 1]])
    np.testing.assert_allclose(dogs.bond_lengths, [0.96], atol=1e-12)
    np.testing.assert_allclose(dogs.cell, cell)
    assert "minimum image" in dogs.automatic["max_bond_deviation"]
    wrapped = pos.copy()
    wrapped[1, 0] -= 4.0  # the H atom wrapped into the cell on the other side: the same bond
    vibrating = pos.copy()
    vibrating[1, 0] = 3.5  # 0.8 A
    broken = pos.copy()
    broken[1, 0] = 2.6  # 1.7 A through the boundary, 2.3 A in the cell
    frames = _frames([pos, wrapped, vibrating, broken], numbers=[8, 1])
    np.testing.assert_allclose(bond_lengths(frames.positions, dogs.bonds, cell)[:, 0], [0.96, 0.96, 0.8, 1.7],
                               atol=1e-12)
    k, why = dogs.first_violation(frames, None, True)
    assert k == 3 and "0.740 A" in why
    # with_bonds of a periodic System takes its cell
    system = System(numbers=[8, 1], positions=pos, cell=cell, pbc=[True] * 3)
    np.testing.assert_allclose(Watchdogs().with_bonds(system).bond_lengths, [0.96], atol=1e-12)
    # a skewed cell: the minimum image is the shortest of all images, not just rounded fractional coordinates
    skewed = np.array([[4.0, 0.0, 0.0], [3.6, 1.5, 0.0], [0.0, 0.0, 5.0]])
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 4, size=(50, 2, 3))
    shifts = np.array([[a, b, c] for a in range(-3, 4) for b in range(-3, 4) for c in range(-3, 4)], float)
    brute = np.linalg.norm((p[:, 1] - p[:, 0])[:, None] + shifts @ skewed, axis=-1).min(1)
    np.testing.assert_allclose(bond_lengths(p, [[0, 1]], skewed)[:, 0], brute, atol=1e-12)
    i_j, lengths = covalent_bonds([1, 1], [[0.1, 0.1, 0.1], [3.95, 1.6, 0.1]], skewed)  # 0.25 A via a skewed image
    assert len(i_j) == 1 and lengths[0] == pytest.approx(0.25, abs=1e-9)


def test_for_run_temperature_ceiling_is_relative_to_the_run_and_the_drift_limit_to_its_kT():
    # a thermostat: its target (also far hotter than the start); no drift limit
    hot = Watchdogs().for_run(WATER, WATER_POS, temperature_K=3000.0, start_temperature_K=300.0, dof=3)
    assert hot.max_temperature == pytest.approx(temperature_factor(3) * 3000.0)
    assert "thermostat's target" in hot.automatic["max_temperature"] and hot.max_energy_drift is None
    assert hot.first_violation(_frames([WATER_POS] * 3, temperature=[300.0, 3000.0, 20000.0]), None, False) is None
    # a thermostat far colder than the start velocities: the start temperature
    cooling = Watchdogs().for_run(WATER, WATER_POS, temperature_K=10.0, start_temperature_K=800.0, dof=3)
    assert cooling.max_temperature == pytest.approx(temperature_factor(3) * 800.0)
    # NVE: the start temperature, at least 300 K (a start at 0 K from a displaced geometry), and 2 kT per atom
    nve = Watchdogs().for_run(WATER, WATER_POS, energy_conserving=True, start_temperature_K=500.0, dof=21)
    assert nve.max_temperature == pytest.approx(temperature_factor(21) * 500.0)
    assert nve.max_energy_drift == pytest.approx(2.0 * KB_EV_PER_K * 500.0)
    cold = Watchdogs().for_run(WATER, WATER_POS, energy_conserving=True, start_temperature_K=0.0, dof=21)
    assert cold.max_temperature == pytest.approx(temperature_factor(21) * 300.0)
    assert "300 K floor" in cold.automatic["max_temperature"]
    assert cold.max_energy_drift == pytest.approx(2.0 * KB_EV_PER_K * 300.0)
    # the drift check: |E_total/N - e0| per atom, energies (K,) in eV for 3 atoms
    e0 = -10.0
    totals = 3 * (e0 + np.array([0.0, 0.02, -0.05, 0.06]))
    k, why = cold.first_violation(_frames([WATER_POS] * 4, total=totals), e0, False)
    assert k == 3 and "60.00 meV/atom" in why and "max_energy_drift 51.70 meV/atom" in why
    # dof defaults to 3N - 6 (3N - 3 periodic)
    assert Watchdogs().for_run(WATER, WATER_POS, temperature_K=300.0).max_temperature == pytest.approx(
        temperature_factor(degrees_of_freedom(3)) * 300.0)


def test_temperature_factor_covers_the_canonical_tail_of_small_molecules():
    from scipy.stats import gamma

    assert temperature_factor(21) == pytest.approx(4.89, abs=0.01)  # ethanol
    factors = [temperature_factor(d) for d in (1, 3, 21, 120, 3000)]
    assert factors == sorted(factors, reverse=True) and factors[-1] == 2.0  # never below 2
    for dof in (1, 3, 21, 120):
        # a frame of a canonical run exceeds it with probability <= 1e-12: 1e12 frames before one false alarm
        assert gamma.sf(temperature_factor(dof), dof / 2, scale=2 / dof) <= 1.0001e-12
    assert reference_temperature(500.0, 500.0000001) == (500.0000001, "the thermostat's target")
    assert reference_temperature(None, 20.0) == (300.0, "the 300 K floor")
    masses = np.array([16.0, 1.0, 1.0])
    v = md.maxwell_boltzmann(masses, 400.0, seed=1, positions=WATER_POS)
    assert start_temperature(v, masses, 3) == pytest.approx(400.0)
    assert start_temperature(np.stack([v, 2 * v]), np.stack([masses] * 2), 3) == pytest.approx(1600.0)


def test_explicit_values_and_none_override_the_automatic_limits():
    dogs = Watchdogs(max_temperature=1234.0, max_energy_drift=None, max_bond_deviation=0.2)
    run = dogs.for_run(WATER, WATER_POS, energy_conserving=True, start_temperature_K=500.0, dof=3)
    assert run.max_temperature == 1234.0 and run.max_energy_drift is None and run.max_bond_deviation == 0.2
    assert len(run.bonds) == 2 and run.automatic == {}  # bonds of the start geometry for the explicit deviation
    k, why = run.first_violation(_frames([WATER_POS] * 2, temperature=[300.0, 2000.0]), None, False)
    assert k == 1 and "max_temperature 1234 K" in why and "automatic" not in why
    off = Watchdogs(max_bond_deviation=None).for_run(WATER, WATER_POS, temperature_K=300.0, dof=3)
    assert off.max_bond_deviation is None and off.bonds is None and "max_bond_deviation" not in off.automatic
    # bonds given with with_bonds stay (another reference geometry), the other limits are still automatic
    ref = WATER_POS * 1.05
    given = Watchdogs().with_bonds(WATER, ref).for_run(WATER, WATER_POS, temperature_K=300.0, dof=3)
    np.testing.assert_allclose(given.bond_lengths, covalent_bonds(WATER, ref)[1])
    assert set(given.automatic) == {"max_temperature", "max_energy_drift"}
    finite = Watchdogs.finite_only().for_run(WATER, WATER_POS, energy_conserving=True, dof=3)
    assert (finite.min_distance, finite.max_bond_deviation, finite.max_temperature, finite.max_energy_drift) == (
        None, None, None, None)
    # unresolved limits cannot be checked; resolving twice changes nothing
    with pytest.raises(ValueError, match="for_run"):
        Watchdogs().first_violation(_frames([WATER_POS]), None, False)
    assert Watchdogs().max_temperature == AUTO
    twice = run.for_run(WATER, WATER_POS * 2, temperature_K=5000.0, dof=3)
    assert twice.max_temperature == 1234.0 and np.array_equal(twice.bonds, run.bonds)
    assert "max_temperature: 1234 K" in run.summary()


def test_simulation_resolves_its_watchdogs_from_the_integrator_and_the_start_state():
    from test_md import MASSES, NUMBERS, cluster_positions, morse_force_fn

    r0 = cluster_positions()
    nve = md.velocity_verlet(morse_force_fn(), 0.5)
    state = nve.init(r0, md.maxwell_boltzmann(MASSES, 600.0, 1, r0), MASSES)
    sim = md.Simulation(nve, state, dof=degrees_of_freedom(7), numbers=NUMBERS)
    assert sim.watchdogs.max_temperature == pytest.approx(temperature_factor(15) * 600.0)
    assert sim.watchdogs.max_energy_drift == pytest.approx(2 * KB_EV_PER_K * 600.0)
    assert len(sim.watchdogs.bonds) > 0
    thermostat = md.langevin_baoab(morse_force_fn(), 0.5, 900.0)
    sim = md.Simulation(thermostat, thermostat.init(r0, np.zeros((7, 3)), MASSES, key=jax.random.key(0)),
                        dof=degrees_of_freedom(7))  # no numbers: elements unknown, no bonds
    assert sim.watchdogs.max_temperature == pytest.approx(temperature_factor(15) * 900.0)
    assert sim.watchdogs.max_energy_drift is None and sim.watchdogs.max_bond_deviation is None
    assert md.Simulation(nve, state, dof=15, watchdogs=None).watchdogs is None


def test_watchdog_margins_combine_chunks_and_extrapolate_the_drift():
    dogs = Watchdogs().for_run(WATER, WATER_POS, energy_conserving=True, start_temperature_K=300.0, dof=3)
    e0 = -10.0
    t_ps = np.arange(1, 9) * 0.01
    totals = 3 * (e0 + 1e-3 * 0.5 * t_ps)  # drifts 0.5 meV/atom/ps
    stretched = np.stack([WATER_POS] * 8)
    stretched[5, 1, 0] += 0.1
    frames = _frames(stretched, temperature=np.linspace(100, 800, 8), total=totals)
    whole = watchdog_margins(dogs, frames, e0)
    first = watchdog_margins(dogs, frames.take(slice(0, 4)), e0)
    both = watchdog_margins(dogs, frames.take(slice(4, 8)), e0, previous=first)
    for m in (whole, both):
        assert m["frames"] == 8 and m["t_end_ps"] == pytest.approx(0.08)
        assert m["max_bond_deviation"][0] == pytest.approx(0.1) and m["max_bond_deviation"][1] == 0.5
        assert m["max_temperature"] == [800.0, dogs.max_temperature]
        assert m["max_energy_drift"][0] == pytest.approx(0.5e-3 * 0.08)
        assert m["drift_slope_meV_per_atom_ps"] == pytest.approx(0.5, rel=1e-6)
        assert m["first_violation"] is None
        assert m["min_distance"] == [pytest.approx(0.96), 0.5]
    rows = {r[0]: r for r in margin_rows(both, extrapolate_ps=300.0)}
    assert rows["temperature"][3] == f"{800.0 / dogs.max_temperature:.3f}"
    assert rows["drift at 300 ps"][1] == f"{0.5 * 300 + 0.04 - 0.5 * 0.08:.4g} meV/atom"
    # a violation is recorded with its time and kept when later chunks are added
    hot = _frames([WATER_POS] * 2, temperature=[300.0, 1e5], total=3 * e0)
    tripped = watchdog_margins(dogs, hot, e0, previous=both)
    assert tripped["first_violation"][0] == 20.0 and "max_temperature" in tripped["first_violation"][1]
    assert watchdog_margins(dogs, frames, e0, previous=tripped)["first_violation"] == tripped["first_violation"]
