"""MD integrators on a smooth analytic potential (a 7-atom Morse cluster, `so3krates_lab.MorsePotential` on the
potential protocol): NVE conserves energy with the expected dt^2 scaling, momentum stays zero, the thermostats
reach their temperature, the Nose-Hoover chain conserves its extended energy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from so3krates_lab import MorsePotential, System
from so3krates_lab.md import (
    ForceFunction, degrees_of_freedom, force_function, kinetic_energy, langevin_baoab, maxwell_boltzmann,
    nose_hoover_chain, temperature, velocity_verlet,
)

N = 7
NUMBERS = np.array([6, 1, 8, 6, 1, 7, 1])
MASSES = np.array([12.0, 1.0, 16.0, 12.0, 1.0, 14.0, 1.0])
# depth 0.5 eV, a 1.6 1/A, r0 1.5 A; the 10 A cutoff holds the whole cluster (no pair ever crosses it here)
MORSE = MorsePotential(depth=0.5, a=1.6, r0=1.5, cutoff=10.0, dtype="float64")


def cluster_positions():
    """A compact 7-atom cluster near the Morse minimum (pentagonal bipyramid, edge 1.5 A)."""
    ring = 1.5 / (2 * np.sin(np.pi / 5))
    ang = 2 * np.pi * np.arange(5) / 5
    pts = np.c_[ring * np.cos(ang), ring * np.sin(ang), np.zeros(5)]
    h = np.sqrt(1.5**2 - ring**2)
    return np.vstack([pts, [[0, 0, h], [0, 0, -h]]])


def cluster_system() -> System:
    return System(numbers=NUMBERS, positions=cluster_positions())


def morse_force_fn(potential=MORSE) -> ForceFunction:
    """The Morse cluster's force function (the fixed graph of all 21 pairs: aux None)."""
    return force_function(potential, cluster_system())


def morse_energy(pos, depth=0.5, a=1.6, r0=1.5):
    """The same Morse pair sum written out by hand (the reference for the potential)."""
    iu = np.triu_indices(N, 1)
    d = jnp.linalg.norm(pos[iu[0]] - pos[iu[1]], axis=-1)
    return jnp.sum(depth * (1.0 - jnp.exp(-a * (d - r0))) ** 2 - depth)


def run(step, state, n):
    def body(s, _):
        s = step(s)
        return s, (s.potential, kinetic_energy(s.velocities, s.masses), s.velocities)

    return jax.jit(lambda s: jax.lax.scan(body, s, None, length=n))(state)


def test_morse_potential_on_the_protocol_is_the_hand_written_pair_sum():
    ff = morse_force_fn()
    assert ff.pairs == "fixed" and ff.aux is None and ff.n_pairs == 21
    rng = np.random.default_rng(4)
    pos = cluster_positions() + 0.1 * rng.normal(size=(N, 3))
    e, f, aux = jax.jit(ff)(jnp.asarray(pos), None)
    assert aux is None
    e_ref, g_ref = jax.value_and_grad(morse_energy)(jnp.asarray(pos))
    assert float(e) == pytest.approx(float(e_ref), abs=1e-12)
    np.testing.assert_allclose(np.asarray(f), -np.asarray(g_ref), atol=1e-12)
    # and the host evaluation of the protocol agrees with the compiled force function
    pred = MORSE.evaluate(cluster_system().replace(positions=pos))
    assert pred.energies[0] == pytest.approx(float(e_ref), abs=1e-10)
    np.testing.assert_allclose(pred.forces[0], -np.asarray(g_ref), atol=1e-10)


def test_nve_conserves_energy_with_dt_squared_error_and_zero_momentum():
    force_fn = morse_force_fn()
    r0 = cluster_positions()
    v0 = maxwell_boltzmann(MASSES, 300.0, seed=1, positions=r0)
    assert np.allclose((MASSES[:, None] * v0).sum(0), 0, atol=1e-12)
    fluctuation = {}
    for dt in (0.5, 0.25):
        integ = velocity_verlet(force_fn, dt)
        state = integ.init(jnp.asarray(r0), jnp.asarray(v0), MASSES)
        n = int(400 / dt)  # 400 fs
        _, (pot, kin, vel) = run(integ.step, state, n)
        total = np.asarray(pot + kin)
        fluctuation[dt] = np.std(total)
        momentum = np.einsum("i,tij->tj", MASSES, np.asarray(vel))
        assert np.abs(momentum).max() < 1e-10
        # no secular drift: the last quarter's mean equals the first quarter's within the fluctuation
        q = len(total) // 4
        assert abs(total[-q:].mean() - total[:q].mean()) < 3 * fluctuation[dt] + 1e-9
        assert np.ptp(np.asarray(pot)) > 20 * fluctuation[dt]  # energy really flows between pot and kin
    assert 3.0 < fluctuation[0.5] / fluctuation[0.25] < 5.0  # velocity Verlet: error ~ dt^2


def _mean_temperature(integ, key=None, n=40_000):
    r0 = cluster_positions()
    v0 = maxwell_boltzmann(MASSES, 300.0, seed=2, positions=r0)
    state = integ.init(jnp.asarray(r0), jnp.asarray(v0), MASSES, key=key)
    final, (pot, kin, vel) = run(integ.step, state, n)
    t = 2 * np.asarray(kin) / (degrees_of_freedom(N) * 8.617333262e-5)
    return t[n // 4:], final, np.asarray(pot + kin)


def test_langevin_reaches_the_target_temperature():
    integ = langevin_baoab(morse_force_fn(), 0.5, temperature_K=500.0, friction_per_fs=0.05)
    t, _, _ = _mean_temperature(integ, key=jax.random.key(0))
    # Langevin thermalises all 3N degrees of freedom (momentum is not conserved): <T_15dof> = 500 * 21/15
    assert np.mean(t) == pytest.approx(500.0 * 3 * N / degrees_of_freedom(N), rel=0.08)


def test_nose_hoover_chain_temperature_and_conserved_energy():
    integ = nose_hoover_chain(morse_force_fn(), 0.5, temperature_K=500.0, n_atoms=N, tau_fs=20.0)
    t, final, total = _mean_temperature(integ)
    assert np.mean(t) == pytest.approx(500.0, rel=0.1)
    momentum = (MASSES[:, None] * np.asarray(final.velocities)).sum(0)
    assert np.abs(momentum).max() < 1e-10
    # The physical energy changes under the thermostat; the extended energy is conserved up to the
    # integrator's O(dt^2) error.
    r0 = cluster_positions()
    spread = {}
    for dt in (0.5, 0.25):
        integ = nose_hoover_chain(morse_force_fn(), dt, temperature_K=500.0, n_atoms=N, tau_fs=20.0)
        state = integ.init(jnp.asarray(r0), jnp.asarray(maxwell_boltzmann(MASSES, 300.0, 2, r0)), MASSES)

        def body(c, _):
            c = integ.step(c)
            return c, (integ.conserved(c), c.potential + kinetic_energy(c.velocities, c.masses))

        _, (extended, physical) = jax.jit(lambda s: jax.lax.scan(body, s, None, length=int(1000 / dt)))(state)
        spread[dt] = np.ptp(np.asarray(extended))
        assert spread[dt] < 0.05 * np.ptp(np.asarray(physical))
    assert 3.0 < spread[0.5] / spread[0.25] < 5.5


def test_instantaneous_temperature_of_maxwell_boltzmann_start():
    r0 = cluster_positions()
    v = maxwell_boltzmann(MASSES, 300.0, seed=5, positions=r0)
    assert float(temperature(jnp.asarray(v), jnp.asarray(MASSES), degrees_of_freedom(N))) == pytest.approx(300.0)


def test_fire_relaxes_a_batch_to_minima_with_small_forces():
    from so3krates_lab.md.minimize import fire, relax_batch

    force_fn = morse_force_fn()
    init, step = fire(force_fn)
    rng = np.random.default_rng(0)
    starts = cluster_positions()[None] + 0.25 * rng.normal(size=(4, N, 3))
    final, converged = relax_batch(init, step, starts, fmax=1e-4, max_steps=3000)
    assert bool(np.all(np.asarray(converged)))
    energies = np.asarray(final.energy)
    start_energies = np.array([float(morse_energy(jnp.asarray(s))) for s in starts])
    assert np.all(energies < start_energies)
    # a true minimum: the Hessian at the relaxed geometry has no negative curvature beyond the 6 zero modes
    eig = np.linalg.eigvalsh(np.asarray(jax.hessian(lambda x: morse_energy(x.reshape(N, 3)))(
        final.positions[0].reshape(-1))))
    assert eig[0] > -1e-3 and np.sum(eig > 1e-2) == 3 * N - 6


def test_a_plain_force_function_drives_the_integrators_too():
    """Low-level route: an analytic positions -> forces function wrapped with ForceFunction.from_callable gives
    the same trajectory as the Morse potential through md.force_function."""
    grad = jax.value_and_grad(morse_energy)

    def plain(positions, aux):
        e, g = grad(positions)
        return e, -g, aux

    wrapped = ForceFunction.from_callable(plain, dtype=jnp.float64)
    assert wrapped.pairs == "custom" and wrapped.neighbours is None and wrapped.aux is None
    r0 = cluster_positions()
    v0 = maxwell_boltzmann(MASSES, 300.0, seed=3, positions=r0)
    out = {}
    for name, ff in (("plain", wrapped), ("potential", morse_force_fn())):
        integ = velocity_verlet(ff, 0.5)
        _, (pot, _, vel) = run(integ.step, integ.init(jnp.asarray(r0), jnp.asarray(v0), MASSES), 200)
        out[name] = (np.asarray(pot), np.asarray(vel))
    np.testing.assert_allclose(out["plain"][0], out["potential"][0], atol=1e-10)
    np.testing.assert_allclose(out["plain"][1], out["potential"][1], atol=1e-10)
