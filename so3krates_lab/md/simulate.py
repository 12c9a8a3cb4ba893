"""`simulate(potential, system, integrator)`: a ready MD run in one call.

    sim = simulate(potential, system, Langevin(timestep_fs=0.5, temperature_K=300.0))
    traj = sim.run(10_000)                     # a Trajectory; or watch it: widgets.LiveMD(sim, steps=10_000)

The time step comes from the integrator, the degrees of freedom and the periodicity from the system, the
start velocities from a temperature (Maxwell-Boltzmann, zero linear and, for a free molecule, angular
momentum). With `replicas=R` the same system runs R times with different velocities (and noise), in one
compiled call. With `store=` a folder, frames and states are written as the run goes, and a later call with the
same folder resumes from the last stored chunk.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ..memory import ensure_tuned
from ..structures import System
from .driver import Simulation, stack_states
from .forces import force_function
from .integrators import NVE, Langevin, NoseHoover, degrees_of_freedom, masses_of, maxwell_boltzmann
from .store import TrajectoryStore
from .watchdogs import Watchdogs

_DEFAULT = object()


def simulate(potential, system: System, integrator: NVE | Langevin | NoseHoover, *,
             temperature_K: float | None = None, velocities=None, seed: int = 0, replicas: int | None = None,
             store=None, resume: bool = True, watchdogs: Watchdogs | None = _DEFAULT, record_every: int = 10,
             chunk_steps: int = 1000, skin: float = 0.5, all_pairs: bool | None = None,
             cell_list: bool | None = None) -> Simulation:
    """An MD `Simulation` of `system` with `potential` (anything following the potential protocol).

    integrator: `NVE`, `Langevin` or `NoseHoover` settings (time step in fs, temperature in K).
    temperature_K: of the Maxwell-Boltzmann start velocities; default the thermostat's, required for NVE
    (unless `velocities` (N, 3) Angstrom/fs are given). seed: of the velocities and the Langevin noise (replica
    r uses seed + r). store: a folder (or `TrajectoryStore`) that receives every chunk; resume: continue from
    it if it already holds a state.
    watchdogs: default `Watchdogs()`, whose automatic limits are fitted to this run when it starts (see
    `md.watchdogs`; the resolved limits are `sim.watchdogs`, `print(sim.watchdogs.summary())` explains them): a
    covalent bond of the start geometry changing by more than 0.5 A, a temperature far above the thermostat's
    target (NVE: the start temperature; at least 300 K), for NVE a total-energy drift of 2 kT per atom, atoms
    closer than 0.5 A, and non-finite values stop the run. `Watchdogs(max_temperature=...)` etc. override one
    limit (None turns it off), `Watchdogs.finite_only()` keeps only the non-finite check; watchdogs=None
    disables them all.
    record_every, chunk_steps: steps between recorded frames and per compiled chunk. skin, all_pairs,
    cell_list: the neighbour list (`md.force_function`).
    """
    ensure_tuned()
    if not isinstance(system, System):
        raise TypeError(f"system must be a so3krates_lab.System, got {type(system).__name__}")
    if not hasattr(integrator, "build"):
        raise TypeError("integrator must be md.NVE(...), md.Langevin(...) or md.NoseHoover(...), got "
                        f"{type(integrator).__name__}")
    ff = force_function(potential, system, skin=skin, all_pairs=all_pairs, cell_list=cell_list)
    integ = integrator.build(ff, system.n_atoms, system.periodic)
    dtype = ff.dtype
    masses = masses_of(system.numbers)
    temperature = temperature_K if temperature_K is not None else integ.temperature_K
    n_rep = 1 if replicas is None else int(replicas)
    if n_rep < 1:
        raise ValueError(f"replicas must be >= 1, got {replicas}")
    if velocities is None:
        if temperature is None:
            raise ValueError("NVE needs start velocities: pass temperature_K=... (Maxwell-Boltzmann) or velocities=")
        v0 = [maxwell_boltzmann(masses, temperature, seed=seed + r, positions=system.positions,
                                periodic=system.periodic) for r in range(n_rep)]
    else:
        v = np.asarray(velocities, float)
        if v.shape != (system.n_atoms, 3):
            raise ValueError(f"velocities must have shape ({system.n_atoms}, 3), got {v.shape}")
        v0 = [v] * n_rep
    keys = [jax.random.key(seed + r) if integ.needs_key else None for r in range(n_rep)]
    positions = jnp.asarray(system.positions, dtype)
    states = [integ.init(positions, jnp.asarray(v, dtype), masses, key=k, aux=ff.aux) for v, k in zip(v0, keys)]
    state = states[0] if replicas is None else stack_states(states)
    if store is not None and not isinstance(store, TrajectoryStore):
        store = TrajectoryStore(Path(store), numbers=system.numbers, timestep_fs=integ.timestep_fs,
                                cell=system.cell if system.periodic else None, pbc=system.pbc,
                                integrator=integ.name, replicas=replicas)
    sim = Simulation(integ, state, dof=degrees_of_freedom(system.n_atoms, system.periodic),
                     record_every=record_every, chunk_steps=chunk_steps,
                     watchdogs=Watchdogs() if watchdogs is _DEFAULT else watchdogs, store=store,
                     numbers=system.numbers, cell=system.cell, periodic=system.periodic)
    if resume and store is not None:
        sim.resume_from_store(state)
    return sim


__all__ = ["simulate"]
