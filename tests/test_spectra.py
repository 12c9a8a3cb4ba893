"""Vibrational spectra: VACF and power spectrum against analytic trajectories, normal modes against analytic
frequencies, the rigid-body projection, selections, bad input, and the shipped PBE reference frequencies."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest

from so3krates_lab import MorsePotential, System, Trajectory
from so3krates_lab.analysis import (
    EIGENVALUE_TO_CM1, PER_FS_TO_CM1, as_trajectory, normal_modes, normal_modes_from_energy, normal_modes_of,
    power_spectrum, spectrum_peaks, vacf, vacf_by_element, vacf_from_trajectory,
)
from so3krates_lab.data import shipped_dir

REFERENCE = shipped_dir() / "ethanol_pbe_harmonic.npz"


def oscillator_velocities(nu_cm1: float, n_frames: int, dt_fs: float, amplitude: float = 0.1, phase: float = 0.3):
    """Velocity (Angstrom/fs) of x(t) = A sin(w t + phase) for one atom along x, as (time, 1, 3)."""
    omega = 2 * np.pi * nu_cm1 / PER_FS_TO_CM1          # rad/fs
    t = np.arange(n_frames) * dt_fs
    v = np.zeros((n_frames, 1, 3))
    v[:, 0, 0] = amplitude * omega * np.cos(omega * t + phase)
    return v


# --- VACF -------------------------------------------------------------------------------------------------------
def test_vacf_of_harmonic_oscillator_is_a_cosine_and_its_spectrum_peaks_at_the_frequency():
    nu, dt = 1234.0, 1.0
    ds = vacf(oscillator_velocities(nu, 4000, dt), dt)
    omega = 2 * np.pi * nu / PER_FS_TO_CM1
    np.testing.assert_allclose(ds.vacf_normalized.values, np.cos(omega * ds.lag.values), atol=5e-3)
    assert ds.lag.attrs["units"] == "fs" and ds.vacf.attrs["units"] == "Angstrom^2/fs^2"
    spec = power_spectrum(ds)
    assert spec.frequency.attrs["units"] == "cm^-1"
    peak = float(spec.frequency.values[np.argmax(spec.intensity.values)])
    assert abs(peak - nu) < 5.0, peak
    np.testing.assert_allclose(spectrum_peaks(spec, n_peaks=1), [peak])


def test_two_oscillators_give_two_peaks_with_every_window():
    dt = 0.5
    v = oscillator_velocities(800.0, 6000, dt) + oscillator_velocities(2900.0, 6000, dt, amplitude=0.03)
    for window in ("hann", "blackman", "none"):
        peaks = spectrum_peaks(power_spectrum(vacf(v, dt), window=window), n_peaks=2)
        np.testing.assert_allclose(peaks, [800.0, 2900.0], atol=6.0)


def test_vacf_equals_direct_average_over_time_origins():
    """No circular wrap-around: the FFT result equals the explicit double loop, each lag over its T - tau origins."""
    rng = np.random.default_rng(0)
    v = rng.normal(size=(50, 3, 3))
    ds = vacf(v, 2.0, max_lag_fs=2.0 * 49)
    direct = [np.mean(np.sum(v[: 50 - k] * v[k:], axis=(1, 2))) for k in range(50)]
    np.testing.assert_allclose(ds.vacf.values, direct, rtol=1e-10)
    assert ds.sizes["lag"] == 50 and vacf(v, 2.0).sizes["lag"] == 25    # default: half the trajectory


def test_mass_weighting_and_element_selection():
    rng = np.random.default_rng(1)
    v = rng.normal(size=(64, 3, 3))
    numbers = np.array([8, 1, 1])
    masses = np.array([15.999, 1.008, 1.008])
    plain = [vacf(v, 1.0, atoms=[i]).vacf.values for i in range(3)]
    weighted = vacf(v, 1.0, numbers=numbers, mass_weighted=True)
    np.testing.assert_allclose(weighted.vacf.values, sum(m * c for m, c in zip(masses, plain)), rtol=1e-3)
    assert weighted.vacf.attrs["units"] == "amu Angstrom^2/fs^2"
    hydrogens = vacf(v, 1.0, numbers=numbers, element="H")
    np.testing.assert_allclose(hydrogens.vacf.values, plain[1] + plain[2], rtol=1e-12)
    np.testing.assert_allclose(vacf(v, 1.0, numbers=numbers, element=1).vacf.values, hydrogens.vacf.values)
    np.testing.assert_allclose(vacf(v, 1.0, atoms=[False, True, True]).vacf.values, hydrogens.vacf.values)
    by_element = vacf_by_element(v, 1.0, numbers)
    assert list(by_element.element.values) == ["H", "O"]
    np.testing.assert_allclose(by_element.vacf.sum("element").values, vacf(v, 1.0).vacf.values, rtol=1e-12)
    spec = power_spectrum(by_element)
    assert spec.intensity.dims == ("element", "frequency")


def _trajectory(velocities, time_fs, numbers, **kw) -> Trajectory:
    """A Trajectory with the given velocities (positions and energies zero: a VACF reads only velocities)."""
    zeros = np.zeros(velocities.shape[:-2])  # (time,) or (time, replica)
    return Trajectory(numbers=numbers, time_fs=time_fs, positions=np.zeros_like(velocities), velocities=velocities,
                      potential=zeros, kinetic=zeros, temperature=zeros, conserved=zeros, **kw)


def test_vacf_from_trajectory_dataset():
    v = oscillator_velocities(1500.0, 2000, 5.0)
    time = np.arange(2000) * 5.0
    traj = _trajectory(v, time, [6])
    out = vacf_from_trajectory(traj, skip_fs=100.0)
    assert out.attrs["n_frames"] == 1980 and out.attrs["timestep_fs"] == 5.0
    peak = float(spectrum_peaks(power_spectrum(out), n_peaks=1)[0])
    assert abs(peak - 1500.0) < 10.0
    # the same trajectory as an xarray Dataset in the to_xarray layout gives the same VACF
    np.testing.assert_array_equal(vacf_from_trajectory(traj.to_xarray(), skip_fs=100.0).vacf.values,
                                  out.vacf.values)
    uneven = _trajectory(v, time + np.r_[0.0, 0.5, np.zeros(1998)], [6])
    with pytest.raises(ValueError, match="evenly spaced"):
        vacf_from_trajectory(uneven)
    with pytest.raises(ValueError, match="evenly spaced"):
        vacf_from_trajectory(uneven.to_xarray())
    with pytest.raises(ValueError, match="too short"):
        vacf_from_trajectory(traj, skip_fs=time[-2])
    # a replica trajectory has no single VACF; anything that is not a trajectory is refused by type
    replicas = _trajectory(np.stack([v, v], axis=1), time, [6])
    assert replicas.n_replicas == 2
    with pytest.raises(ValueError, match="replica"):
        vacf_from_trajectory(replicas)
    np.testing.assert_array_equal(vacf_from_trajectory(replicas.replica(1), skip_fs=100.0).vacf.values,
                                  out.vacf.values)
    with pytest.raises(TypeError, match="expected a Trajectory"):
        as_trajectory(v)


def test_vacf_from_a_trajectory_store_equals_the_array_route(tmp_path):
    from so3krates_lab.md import TrajectoryStore

    rng = np.random.default_rng(2)
    store = TrajectoryStore(tmp_path / "run", numbers=[8, 1, 1], timestep_fs=0.5)
    velocities = rng.normal(size=(60, 3, 3))
    for part in (slice(0, 30), slice(30, 60)):                # two chunk files, as the MD driver writes them
        store.append(_trajectory(velocities[part], 2.0 * np.arange(60)[part], [8, 1, 1], timestep_fs=0.5))
    from_store = vacf_from_trajectory(store, mass_weighted=True, element="H")
    direct = vacf(velocities, 2.0, numbers=[8, 1, 1], mass_weighted=True, element="H")
    np.testing.assert_allclose(from_store.vacf.values, direct.vacf.values, rtol=1e-12)
    assert from_store.attrs["timestep_fs"] == 2.0
    # the store's Trajectory (store.open()) is the same input
    np.testing.assert_array_equal(vacf_from_trajectory(store.open(), mass_weighted=True, element="H").vacf.values,
                                  from_store.vacf.values)


@pytest.mark.parametrize("velocities, kwargs, message", [
    (np.zeros((100, 3)), {}, "shape \\(time, atom, 3\\)"),
    (np.zeros((100, 2, 2)), {}, "shape \\(time, atom, 3\\)"),
    (np.zeros((3, 2, 3)), {}, "too short"),
    (np.where(np.arange(600).reshape(100, 2, 3) == 7, np.nan, 1.0), {}, "non-finite velocity at frame 1, atom 0"),
    (np.ones((100, 2, 3)), {"numbers": [1, 1], "element": "C"}, "no atom of element"),
    (np.ones((100, 2, 3)), {"element": "H"}, "needs numbers"),
    (np.ones((100, 2, 3)), {"mass_weighted": True}, "needs numbers= or masses="),
    (np.ones((100, 2, 3)), {"atoms": [5]}, "out of range"),
    (np.ones((100, 2, 3)), {"numbers": [1, 1, 1]}, "numbers must have shape"),
    (np.ones((100, 2, 3)), {"max_lag_fs": 1e6}, "lags"),
])
def test_vacf_rejects_bad_input(velocities, kwargs, message):
    with pytest.raises(ValueError, match=message):
        vacf(velocities, 1.0, **kwargs)


def test_bad_timestep_and_window():
    with pytest.raises(ValueError, match="timestep_fs"):
        vacf(np.ones((10, 1, 3)), 0.0)
    with pytest.raises(ValueError, match="unknown window"):
        power_spectrum(vacf(np.ones((10, 1, 3)), 1.0), window="hamming")


# --- normal modes ---------------------------------------------------------------------------------------------
def morse(d: float, a: float, r0: float):
    def energy(positions):
        r = jnp.linalg.norm(positions[1] - positions[0])
        return d * (1 - jnp.exp(-a * (r - r0))) ** 2
    return energy


def test_diatomic_morse_gives_the_analytic_frequency_and_removes_five_modes():
    d, a, r0 = 4.6, 1.9, 1.27                       # eV, 1/Angstrom, Angstrom (HCl-like)
    numbers = np.array([1, 17])
    direction = np.array([0.3, -0.5, 0.81]) / np.linalg.norm([0.3, -0.5, 0.81])
    positions = np.array([[0.2, 0.1, -0.4], [0.2, 0.1, -0.4] + r0 * direction])
    nm = normal_modes_from_energy(morse(d, a, r0), jnp.asarray(positions, jnp.float64), numbers)
    m1, m2 = nm.masses.values
    expected = EIGENVALUE_TO_CM1 * np.sqrt(2 * d * a**2 * (m1 + m2) / (m1 * m2))
    assert nm.sizes["mode"] == 1 and nm.attrs["n_rigid_body_modes_removed"] == 5
    np.testing.assert_allclose(nm.frequency.values, [expected], rtol=1e-10)
    assert 2800 < expected < 3100                      # a real HCl-like stretch, sanity of the unit conversion
    mode = nm.modes.values[0]
    np.testing.assert_allclose(np.abs(mode @ direction), np.linalg.norm(mode, axis=1), rtol=1e-10)  # along bond
    # the reduced mass of the normalised Cartesian mode (as quantum-chemistry codes print it): 1 / sum_i |l_i|^2 / m_i
    np.testing.assert_allclose(nm.reduced_mass.values, [m1 * m2 * (m1 + m2) / (m1**2 + m2**2)], rtol=1e-10)
    unprojected = normal_modes_from_energy(morse(d, a, r0), jnp.asarray(positions), numbers, project=False)
    assert unprojected.sizes["mode"] == 6 and np.sum(np.abs(unprojected.frequency.values) < 1e-3) == 5


def test_normal_modes_of_a_potential_give_the_analytic_morse_frequency():
    """normal_modes_of(potential, system): the same diatomic Morse as above, as MorsePotential on the protocol
    (its energy is the pair term shifted by -depth, which changes no frequency)."""
    d, a, r0 = 4.6, 1.9, 1.27
    direction = np.array([0.3, -0.5, 0.81]) / np.linalg.norm([0.3, -0.5, 0.81])
    positions = np.array([[0.2, 0.1, -0.4], [0.2, 0.1, -0.4] + r0 * direction])
    system = System(numbers=[1, 17], positions=positions)
    nm = normal_modes_of(MorsePotential(depth=d, a=a, r0=r0, cutoff=5.0, dtype="float64"), system)
    reference = normal_modes_from_energy(morse(d, a, r0), jnp.asarray(positions, jnp.float64), system.numbers)
    m1, m2 = nm.masses.values
    expected = EIGENVALUE_TO_CM1 * np.sqrt(2 * d * a**2 * (m1 + m2) / (m1 * m2))
    assert nm.sizes["mode"] == 1 and nm.attrs["n_rigid_body_modes_removed"] == 5
    np.testing.assert_allclose(nm.frequency.values, [expected], rtol=1e-8)
    np.testing.assert_allclose(nm.frequency.values, reference.frequency.values, rtol=1e-8)
    with pytest.raises(ValueError, match="periodic"):
        normal_modes_of(MorsePotential(dtype="float64"), system.replace(cell=np.eye(3) * 10.0, pbc=[True] * 3))


def water_energy(k_bond=40.0, r0=0.96, k_angle=4.0, theta0=np.deg2rad(104.5)):
    """Harmonic valence force field of H2O (eV, Angstrom, radians): rotation and translation invariant."""
    def energy(positions):
        o, h1, h2 = positions
        b1, b2 = h1 - o, h2 - o
        r1, r2 = jnp.linalg.norm(b1), jnp.linalg.norm(b2)
        theta = jnp.arccos(jnp.dot(b1, b2) / (r1 * r2))
        return 0.5 * k_bond * ((r1 - r0) ** 2 + (r2 - r0) ** 2) + 0.5 * k_angle * (theta - theta0) ** 2
    return energy


def water_minimum(rotation=np.eye(3), shift=np.zeros(3)):
    half = np.deg2rad(104.5) / 2
    local = np.array([[0, 0, 0], [0.96 * np.sin(half), 0.96 * np.cos(half), 0],
                      [-0.96 * np.sin(half), 0.96 * np.cos(half), 0]])
    return local @ rotation.T + shift


def test_nonlinear_molecule_has_3n_minus_6_modes_free_of_rigid_motion():
    numbers = np.array([8, 1, 1])
    angle = 0.7
    rotation = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    positions = water_minimum(rotation, np.array([1.0, -2.0, 0.5]))
    nm = normal_modes_from_energy(water_energy(), jnp.asarray(positions), numbers)
    assert nm.sizes["mode"] == 3 and nm.attrs["n_rigid_body_modes_removed"] == 6
    assert np.all(nm.frequency.values > 500) and nm.attrs["rigid_body_residual_cm1"] < 1e-3
    masses = nm.masses.values
    centred = positions - masses @ positions / masses.sum()
    for mode in nm.modes.values:
        np.testing.assert_allclose(masses @ mode, 0, atol=1e-10)                             # no translation
        np.testing.assert_allclose(np.sum(masses[:, None] * np.cross(centred, mode), 0), 0, atol=1e-10)  # no rotation
        np.testing.assert_allclose(np.linalg.norm(mode), 1.0, rtol=1e-12)
    same = normal_modes_from_energy(water_energy(), jnp.asarray(water_minimum()), numbers)
    np.testing.assert_allclose(nm.frequency.values, same.frequency.values, rtol=1e-9)
    full = normal_modes_from_energy(water_energy(), jnp.asarray(positions), numbers, project=False)
    np.testing.assert_allclose(np.sort(full.frequency.values)[-3:], nm.frequency.values, rtol=1e-6)
    assert np.sum(np.abs(full.frequency.values) < 1e-2) == 6


def test_projection_removes_rotational_contamination_and_saddles_are_negative():
    """A Hessian with a spurious rotational part (as from a not-quite-relaxed geometry or a coarse DFT grid)
    gives the same vibrations after projection; a negative curvature is reported as a negative frequency."""
    numbers = np.array([8, 1, 1])
    positions = water_minimum()
    clean = normal_modes_from_energy(water_energy(), jnp.asarray(positions), numbers)
    import jax
    h = np.asarray(jax.hessian(lambda x: water_energy()(x.reshape(3, 3)))(jnp.asarray(positions).ravel()))
    rotation_z = np.cross(np.array([0, 0, 1.0]), positions - positions.mean(0)).ravel()
    contaminated = h + 0.05 * np.outer(rotation_z, rotation_z)
    np.testing.assert_allclose(normal_modes(contaminated, positions, numbers).frequency.values,
                               clean.frequency.values, rtol=1e-2)
    saddle = normal_modes_from_energy(water_energy(k_angle=-4.0), jnp.asarray(positions), numbers)
    assert saddle.frequency.values[0] < 0 and np.all(saddle.frequency.values[1:] > 0)


def test_normal_modes_rejects_bad_input():
    positions = water_minimum()
    with pytest.raises(ValueError, match="hessian must have shape"):
        normal_modes(np.eye(8), positions, [8, 1, 1])
    with pytest.raises(ValueError, match="positions must have shape"):
        normal_modes(np.eye(9), positions.ravel(), [8, 1, 1])
    with pytest.raises(ValueError, match="finite"):
        normal_modes(np.full((9, 9), np.nan), positions, [8, 1, 1])
    with pytest.raises(ValueError, match="numbers= .* or masses="):
        normal_modes(np.eye(9), positions)


# --- the shipped reference -------------------------------------------------------------------------------------
def test_shipped_pbe_reference_has_21_real_frequencies():
    if not REFERENCE.exists():
        pytest.skip(f"{REFERENCE} not generated yet: python -m so3krates_lab.reference ethanol-pbe-harmonic")
    with np.load(REFERENCE) as f:
        ref = dict(f)
    assert ref["frequencies_cm1"].shape == (21,) and ref["modes"].shape == (21, 9, 3)
    assert np.all(np.isfinite(ref["frequencies_cm1"])) and np.all(ref["frequencies_cm1"] > 100)
    assert np.all(np.diff(ref["frequencies_cm1"]) >= 0) and ref["frequencies_cm1"][-1] < 4000
    np.testing.assert_allclose(ref["hessian"], ref["hessian"].T, atol=1e-6)
    assert np.abs(ref["forces"]).max() <= 1e-3 + 1e-9                  # a relaxed geometry
    again = normal_modes(ref["hessian"], ref["positions"], ref["numbers"])
    np.testing.assert_allclose(again.frequency.values, ref["frequencies_cm1"], rtol=1e-10)
    provenance = json.loads(str(ref["provenance"]))
    assert "PBE/def2-SVP" in provenance["method"]["level"]
    assert REFERENCE.with_suffix(".provenance.json").exists()


def test_finite_difference_hessian_of_the_reference_recipe_matches_autodiff_and_resumes(tmp_path):
    """The recipe's --hessian fd route on an ASE calculator with analytic forces (the water force field)."""
    import jax
    from ase.calculators.calculator import Calculator, all_changes

    from so3krates_lab.reference.harmonic import finite_difference_hessian

    energy = water_energy()
    value_and_grad = jax.jit(jax.value_and_grad(energy))

    class WaterFF(Calculator):
        implemented_properties = ["energy", "forces"]

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            e, g = value_and_grad(jnp.asarray(self.atoms.positions))
            self.results = {"energy": float(e), "forces": -np.asarray(g)}

    numbers, positions = np.array([8, 1, 1]), water_minimum()
    h_fd = finite_difference_hessian(numbers, positions, WaterFF, tmp_path, step=1e-3, progress=False)
    h_exact = np.asarray(jax.hessian(lambda x: energy(x.reshape(3, 3)))(jnp.asarray(positions).ravel()))
    np.testing.assert_allclose(h_fd, h_exact, atol=1e-4 * np.abs(h_exact).max())
    assert len(list(tmp_path.glob("fd_*.npy"))) == 18

    def no_calculator():
        raise AssertionError("a resumed run must read the cached displaced forces")
    np.testing.assert_array_equal(finite_difference_hessian(numbers, positions, lambda: _Unused(no_calculator),
                                                            tmp_path, step=1e-3, progress=False), h_fd)


class _Unused:
    """A calculator stand-in that fails if it is ever asked for forces."""

    def __init__(self, fail):
        self.fail = fail

    def get_forces(self, atoms=None):
        self.fail()


def test_potential_hessian_on_the_cutoff_graph_equals_jax_hessian_on_every_pair():
    """The blocked forward-mode Hessian on the pairs within the cutoff equals jax.hessian of the energy on the graph
    of every pair (pairs beyond the cutoff contribute nothing, not even curvature), for a SO3krates model."""
    import jax

    from so3krates_lab.analysis import potential_hessian
    from so3krates_lab.analysis.spectra import hessian_of
    from so3krates_lab.data import builtin
    from so3krates_lab.graph import all_pairs_graph
    from so3krates_lab.model import Potential, So3kratesConfig

    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        system = builtin.ethanol()
        config = So3kratesConfig.preset("small", cutoff=2.2, dtype="float64")  # some pairs lie beyond the cutoff
        pot = Potential.init(config, system, seed=1)
        full = hessian_of(lambda r: pot.energy(all_pairs_graph(system.numbers, r[None], np.float64))[0],
                          system.positions)
        blocked = potential_hessian(pot, system, block=7)
        d = np.linalg.norm(system.positions[:, None] - system.positions[None], axis=-1)
        assert (d > 2.2).any()
        np.testing.assert_allclose(blocked, full, atol=1e-9 * np.abs(full).max())
    finally:
        jax.config.update("jax_enable_x64", previous)
