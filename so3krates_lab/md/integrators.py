"""Molecular-dynamics integrators as pure (init, step) pairs over a frozen state.

Units: positions Angstrom, velocities Angstrom/fs, time fs, masses amu, energies eV, temperatures K.
`force_fn(positions, aux) -> (potential energy eV, forces eV/Angstrom, aux)` is any JAX-traceable function (the
model's, or an analytic test potential); `aux` is state the force function carries along the trajectory (the
neighbour list of the model's force function; None for analytic potentials). Each integrator returns an
`Integrator`: `init(positions, velocities, masses, key=None, aux=None)` and `step(state) -> state`, both
jittable, with its time step, force function and conserved quantity, so a driver needs nothing else; it scans
`step` over many steps in one compiled call.

`NVE`, `Langevin` and `NoseHoover` are the same integrators as settings only (no force function yet), for
`md.simulate(potential, system, Langevin(0.5, 300.0))`, which builds the force function from the system.

- `velocity_verlet`: NVE.
- `langevin_baoab`: NVT, BAOAB splitting (Leimkuhler and Matthews), friction in 1/fs.
- `nose_hoover_chain`: NVT, a Nose-Hoover chain (Martyna, Klein, Tuckerman 1992) with the Trotter scheme of
  Martyna et al. (1996) (a chain half-step around each velocity-Verlet step). Its extended energy is conserved,
  which `Integrator.conserved` returns for checking.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from ..structures import degrees_of_freedom  # noqa: F401  (defined there: structures may not import md)

KB_EV_PER_K = 8.617333262e-5  #: Boltzmann constant, eV/K (CODATA 2018)
ACCEL = 9.648533212e-3  #: 1 eV/(Angstrom amu) in Angstrom/fs^2; 1/ACCEL = 1 amu Angstrom^2/fs^2 in eV

ForceFn = Callable[[jax.Array, object], tuple[jax.Array, jax.Array, object]]


def masses_of(numbers) -> np.ndarray:
    """Atomic masses (amu) of the elements `numbers` (N,), standard atomic weights as tabulated by ASE.

    >>> masses_of([1, 6, 8]).round(3).tolist()
    [1.008, 12.011, 15.999]
    """
    from ase.data import atomic_masses

    return np.asarray(atomic_masses)[np.asarray(numbers)]


def kinetic_energy(velocities, masses):
    """0.5 sum m v^2 in eV, of velocities (N, 3) Angstrom/fs and masses (N,) amu.

    >>> import numpy as np
    >>> round(float(kinetic_energy(np.array([[1.0, 0.0, 0.0]]), np.array([1.0]))), 2)  # 1 amu at 1 Angstrom/fs
    51.82
    """
    return 0.5 * jnp.sum(masses[:, None] * velocities**2) / ACCEL


def temperature(velocities, masses, dof: int):
    """Instantaneous kinetic temperature (K) of velocities (N, 3) Angstrom/fs and masses (N,) amu for `dof`
    degrees of freedom: 2 E_kin / (dof k_B).

    >>> import numpy as np
    >>> v = maxwell_boltzmann(masses_of([8, 1, 1]), 300.0, positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    >>> round(float(temperature(v, masses_of([8, 1, 1]), degrees_of_freedom(3))), 3)  # float32: 1e-7 relative
    300.0
    """
    return 2.0 * kinetic_energy(velocities, masses) / (dof * KB_EV_PER_K)


@dataclasses.dataclass(frozen=True, eq=False)
class Integrator:
    """An integrator as one typed value (Optax's init/update pair idea).

    init(positions, velocities, masses, key=None, aux=None) -> MDState; step(state) -> state (both jittable);
    timestep_fs: the step; force_fn: what it integrates; conserved(state) -> eV: the quantity it conserves
    (potential + kinetic, or an extended energy); temperature_K: a thermostat's target (None for NVE);
    needs_key: init needs a PRNG key (stochastic integrators).
    """

    init: Callable
    step: Callable
    timestep_fs: float
    force_fn: Callable
    conserved: Callable
    name: str
    temperature_K: float | None = None
    needs_key: bool = False


def _mechanical_energy(state):
    return state.potential + kinetic_energy(state.velocities, state.masses)


@struct.dataclass
class MDState:
    """The dynamic state of one system (replicas stacked by `md.stack_states` add a leading (R,) axis).

    positions: (N, 3) Angstrom; velocities: (N, 3) Angstrom/fs; forces: (N, 3) eV/Angstrom; potential: the
    potential energy, eV; masses: (N,) amu; step: steps taken. thermostat: integrator-specific arrays (empty for
    NVE); aux: the force function's own state (e.g. its neighbour list)."""

    positions: jax.Array
    velocities: jax.Array
    forces: jax.Array
    potential: jax.Array
    masses: jax.Array
    step: jax.Array
    thermostat: dict = struct.field(default_factory=dict)
    aux: object = None


def _kick(state: MDState, dt: float) -> MDState:
    return state.replace(velocities=state.velocities + dt * ACCEL * state.forces / state.masses[:, None])


def _drift(state: MDState, dt: float) -> MDState:
    return state.replace(positions=state.positions + dt * state.velocities)


def _new_forces(state: MDState, force_fn: ForceFn) -> MDState:
    potential, forces, aux = force_fn(state.positions, state.aux)
    return state.replace(potential=potential, forces=forces.astype(state.velocities.dtype), aux=aux)


def _init_state(force_fn: ForceFn, positions, velocities, masses, thermostat=None, aux=None) -> MDState:
    positions = jnp.asarray(positions)
    velocities = jnp.asarray(velocities, positions.dtype)
    # Compiled: run eagerly, op by op, the first force call of a large model costs several times its compile time.
    potential, forces, aux = jax.jit(force_fn)(positions, aux)
    return MDState(positions=positions, velocities=velocities, forces=forces.astype(positions.dtype),
                   potential=potential, masses=jnp.asarray(masses, positions.dtype), step=jnp.zeros((), jnp.int32),
                   thermostat=thermostat or {}, aux=aux)


def velocity_verlet(force_fn: ForceFn, timestep_fs: float):
    """NVE velocity Verlet: (init(positions, velocities, masses), step(state))."""
    dt = float(timestep_fs)

    def init(positions, velocities, masses, key=None, aux=None):
        return _init_state(force_fn, positions, velocities, masses, aux=aux)

    def step(state: MDState) -> MDState:
        state = _drift(_kick(state, 0.5 * dt), dt)
        state = _kick(_new_forces(state, force_fn), 0.5 * dt)
        return state.replace(step=state.step + 1)

    return Integrator(init, step, dt, force_fn, _mechanical_energy, "velocity Verlet (NVE)")


def langevin_baoab(force_fn: ForceFn, timestep_fs: float, temperature_K: float, friction_per_fs: float = 0.01):
    """NVT Langevin dynamics, BAOAB splitting. init needs a PRNG `key` (jax.random.key)."""
    dt = float(timestep_fs)
    c1 = float(np.exp(-friction_per_fs * dt))
    c2 = float(np.sqrt(1.0 - c1 * c1))
    kt = KB_EV_PER_K * float(temperature_K)

    def init(positions, velocities, masses, key=None, aux=None):
        if key is None:
            raise ValueError("langevin_baoab needs a PRNG key: init(..., key=jax.random.key(seed))")
        return _init_state(force_fn, positions, velocities, masses, {"key": key}, aux)

    def step(state: MDState) -> MDState:
        state = _drift(_kick(state, 0.5 * dt), 0.5 * dt)
        key, sub = jax.random.split(state.thermostat["key"])
        noise = jax.random.normal(sub, state.velocities.shape, state.velocities.dtype)
        sigma = jnp.sqrt(kt * ACCEL / state.masses)[:, None]
        state = state.replace(velocities=c1 * state.velocities + c2 * sigma * noise, thermostat={"key": key})
        state = _kick(_new_forces(_drift(state, 0.5 * dt), force_fn), 0.5 * dt)
        return state.replace(step=state.step + 1)

    return Integrator(init, step, dt, force_fn, _mechanical_energy, f"Langevin BAOAB ({temperature_K:g} K)",
                      float(temperature_K), needs_key=True)


def nose_hoover_chain(force_fn: ForceFn, timestep_fs: float, temperature_K: float, n_atoms: int,
                      tau_fs: float = 50.0, chain_length: int = 3, periodic: bool = False):
    """NVT Nose-Hoover chain of `chain_length` thermostats with relaxation time tau_fs.

    Thermostat masses Q_1 = N_f kT tau^2 and Q_j = kT tau^2 (N_f: `degrees_of_freedom`). The thermostat
    state holds positions xi (dimensionless) and velocities v_xi (1/fs) of the chain.
    """
    dt = float(timestep_fs)
    kt = KB_EV_PER_K * float(temperature_K)
    dof = degrees_of_freedom(n_atoms, periodic)
    q = np.full(chain_length, kt * tau_fs**2)
    q[0] *= dof
    q = jnp.asarray(q)

    def half_chain(state: MDState, h: float) -> MDState:
        """Propagate the chain and scale the velocities over a time h (half a step), MTK ordering."""
        xi, vxi = state.thermostat["xi"], state.thermostat["vxi"]
        ke2 = 2.0 * kinetic_energy(state.velocities, state.masses)
        m = chain_length

        def force_on(j, vxi, ke2):
            return jnp.where(j == 0, (ke2 - dof * kt) / q[0], (q[j - 1] * vxi[j - 1] ** 2 - kt) / q[j])

        # backward sweep: top of the chain down to the first thermostat
        vxi = vxi.at[m - 1].add(0.5 * h * force_on(m - 1, vxi, ke2))
        for j in range(m - 2, -1, -1):
            damp = jnp.exp(-0.25 * h * vxi[j + 1])
            vxi = vxi.at[j].set((vxi[j] * damp + 0.5 * h * force_on(j, vxi, ke2)) * damp)
        scale = jnp.exp(-h * vxi[0])
        velocities = state.velocities * scale
        ke2 = ke2 * scale**2
        xi = xi + h * vxi
        # forward sweep
        for j in range(m - 1):
            damp = jnp.exp(-0.25 * h * vxi[j + 1])
            vxi = vxi.at[j].set((vxi[j] * damp + 0.5 * h * force_on(j, vxi, ke2)) * damp)
        vxi = vxi.at[m - 1].add(0.5 * h * force_on(m - 1, vxi, ke2))
        return state.replace(velocities=velocities, thermostat={"xi": xi, "vxi": vxi})

    def init(positions, velocities, masses, key=None, aux=None):
        dtype = jnp.asarray(positions).dtype
        chain = {"xi": jnp.zeros(chain_length, dtype), "vxi": jnp.zeros(chain_length, dtype)}
        return _init_state(force_fn, positions, velocities, masses, chain, aux)

    def step(state: MDState) -> MDState:
        state = half_chain(state, 0.5 * dt)
        state = _drift(_kick(state, 0.5 * dt), dt)
        state = _kick(_new_forces(state, force_fn), 0.5 * dt)
        state = half_chain(state, 0.5 * dt)
        return state.replace(step=state.step + 1)

    def conserved_energy(state: MDState):
        """Potential + kinetic + thermostat energy (eV): constant along an exact trajectory."""
        xi, vxi = state.thermostat["xi"], state.thermostat["vxi"]
        return (state.potential + kinetic_energy(state.velocities, state.masses)
                + 0.5 * jnp.sum(q * vxi**2) + dof * kt * xi[0] + kt * jnp.sum(xi[1:]))

    return Integrator(init, step, dt, force_fn, conserved_energy, f"Nose-Hoover chain ({temperature_K:g} K)",
                      float(temperature_K))


def maxwell_boltzmann(masses, temperature_K: float, seed: int = 0, positions=None, *,
                      periodic: bool = False) -> np.ndarray:
    """Velocities (N, 3) Angstrom/fs drawn at temperature_K, with zero linear momentum and, for a free molecule
    (periodic=False; its `positions` (N, 3) Angstrom are then required), zero angular momentum; then rescaled to
    exactly temperature_K for the remaining degrees of freedom (`degrees_of_freedom(N, periodic)`).

    masses: (N,) amu; seed: NumPy random seed.

    >>> import numpy as np
    >>> masses = masses_of([6, 8])
    >>> v = maxwell_boltzmann(masses, 500.0, periodic=True)  # CO; periodic: only the momentum is removed
    >>> bool(np.allclose(masses @ v, 0.0)), round(float(temperature(v, masses, degrees_of_freedom(2, True))), 3)
    (True, 500.0)
    """
    masses = np.asarray(masses, np.float64)
    if not periodic and positions is None and len(masses) > 2:
        raise ValueError("a free molecule's velocities need its positions (to remove the angular momentum); "
                         "pass positions=..., or periodic=True for a periodic system")
    n = len(masses)
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, 3)) * np.sqrt(KB_EV_PER_K * temperature_K * ACCEL / masses)[:, None]
    v -= (masses[:, None] * v).sum(0) / masses.sum()
    if not periodic and n > 2:
        r = np.asarray(positions, np.float64)
        r = r - (masses[:, None] * r).sum(0) / masses.sum()
        angular = (masses[:, None] * np.cross(r, v)).sum(0)
        inertia = np.einsum("i,ij->", masses, r**2) * np.eye(3) - np.einsum("i,ij,ik->jk", masses, r, r)
        omega = np.linalg.solve(inertia, angular)
        v -= np.cross(omega, r)
    dof = degrees_of_freedom(n, periodic)
    current = (masses[:, None] * v**2).sum() / ACCEL / (dof * KB_EV_PER_K)
    return v * np.sqrt(temperature_K / current) if current > 0 else v


# --- integrators as settings, for md.simulate ----------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class NVE:
    """Velocity Verlet (microcanonical) with a time step in fs."""

    timestep_fs: float = 0.5

    def build(self, force_fn, n_atoms: int, periodic: bool) -> Integrator:
        """The `velocity_verlet` integrator of `force_fn` (n_atoms and periodic are not needed here)."""
        return velocity_verlet(force_fn, self.timestep_fs)


@dataclasses.dataclass(frozen=True)
class Langevin:
    """Langevin dynamics (BAOAB) at temperature_K with friction in 1/fs."""

    timestep_fs: float = 0.5
    temperature_K: float = 300.0
    friction_per_fs: float = 0.01

    def build(self, force_fn, n_atoms: int, periodic: bool) -> Integrator:
        """The `langevin_baoab` integrator of `force_fn` (n_atoms and periodic are not needed here)."""
        return langevin_baoab(force_fn, self.timestep_fs, self.temperature_K, self.friction_per_fs)


@dataclasses.dataclass(frozen=True)
class NoseHoover:
    """A Nose-Hoover chain at temperature_K with relaxation time tau_fs."""

    timestep_fs: float = 0.5
    temperature_K: float = 300.0
    tau_fs: float = 50.0
    chain_length: int = 3

    def build(self, force_fn, n_atoms: int, periodic: bool) -> Integrator:
        """The `nose_hoover_chain` integrator of `force_fn` for `n_atoms` atoms (periodic: 3 fewer degrees of
        freedom removed than for a free molecule, see `degrees_of_freedom`)."""
        return nose_hoover_chain(force_fn, self.timestep_fs, self.temperature_K, n_atoms, self.tau_fs,
                                 self.chain_length, periodic)
