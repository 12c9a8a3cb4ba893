"""`simulate(potential, system, integrator)`: a ready MD run in one call.

    sim = simulate(potential, system, Langevin(timestep_fs=0.5, temperature_K=300.0))
    traj = sim.run(10_000)                     # a Trajectory; or watch it: widgets.LiveMD(sim, steps=10_000)

The time step comes from the integrator, the degrees of freedom and the periodicity from the system, the
start velocities from a temperature (Maxwell-Boltzmann, zero linear and, for a free molecule, angular
momentum). With `replicas=R` the same system runs R times with different velocities (and noise), in one
compiled call. With `store=` a folder, frames and states are written as the run goes, and a later call with the
same folder resumes from the last stored chunk.

Across processes (`so3krates_lab.distributed`): with `replicas=R, shard_replicas=True` each process of the job
runs its own block of the R replicas (`distributed.replica_share`), with the velocities and noise those replicas
would have in one process, and writes them to its own part of the store, `<store>/part-<i>-of-<n>`.
`open_replica_parts(store)` reads the parts back as one trajectory of all R replicas. Within a process, the
replicas are split over its devices as well.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ..memory import ensure_tuned
from ..structures import System, Trajectory
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
             cell_list: bool | None = None, shard_replicas: bool = False) -> Simulation:
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
    record_every, chunk_steps: steps between recorded frames and per compiled chunk. skin (Angstrom), all_pairs,
    cell_list: the neighbour list (`md.force_function`).
    shard_replicas: in a multi-process job, run only this process's share of the replicas (global indices in
    `sim.replica_ids`) and store them under `<store>/part-<i>-of-<n>` (see the module docstring); with one
    process it runs them all, stored the same way. A process with several devices splits its replicas over
    them too (over as many devices as divide its replica count).
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
    if shard_replicas and replicas is None:
        raise ValueError("shard_replicas=True shares replicas over processes: give replicas=R too")
    ids = range(n_rep)
    if shard_replicas:
        from ..distributed import process_count, process_index, replica_share

        ids = replica_share(n_rep)
    if velocities is None:
        if temperature is None:
            raise ValueError("NVE needs start velocities: pass temperature_K=... (Maxwell-Boltzmann) or velocities=")
        v0 = [maxwell_boltzmann(masses, temperature, seed=seed + r, positions=system.positions,
                                periodic=system.periodic) for r in ids]
    else:
        v = np.asarray(velocities, float)
        if v.shape != (system.n_atoms, 3):
            raise ValueError(f"velocities must have shape ({system.n_atoms}, 3), got {v.shape}")
        v0 = [v] * len(ids)
    keys = [jax.random.key(seed + r) if integ.needs_key else None for r in ids]
    positions = jnp.asarray(system.positions, dtype)
    states = [integ.init(positions, jnp.asarray(v, dtype), masses, key=k, aux=ff.aux) for v, k in zip(v0, keys)]
    state = states[0] if replicas is None else stack_states(states)
    if store is not None and shard_replicas:
        if isinstance(store, TrajectoryStore):
            raise TypeError("shard_replicas=True writes one part of the store per process: give the store's folder")
        store = TrajectoryStore(Path(store) / _part_name(process_index(), process_count()), numbers=system.numbers,
                                timestep_fs=integ.timestep_fs, cell=system.cell if system.periodic else None,
                                pbc=system.pbc, integrator=integ.name, replicas=len(ids), replica_ids=list(ids),
                                total_replicas=n_rep)
    elif store is not None and not isinstance(store, TrajectoryStore):
        store = TrajectoryStore(Path(store), numbers=system.numbers, timestep_fs=integ.timestep_fs,
                                cell=system.cell if system.periodic else None, pbc=system.pbc,
                                integrator=integ.name, replicas=replicas)
    sim = Simulation(integ, state, dof=degrees_of_freedom(system.n_atoms, system.periodic),
                     record_every=record_every, chunk_steps=chunk_steps,
                     watchdogs=Watchdogs() if watchdogs is _DEFAULT else watchdogs, store=store,
                     numbers=system.numbers, cell=system.cell, periodic=system.periodic)
    sim.replica_ids = list(ids) if replicas is not None else None
    if not resume and store is not None and (store.has_state() or store.chunk_paths()):
        raise ValueError(f"{store.directory} already holds a run ({len(store.chunk_paths())} chunk(s) of frames); "
                         "writing a new one from t = 0 into it would make it unreadable: pass resume=True to "
                         "continue that run, or give a new folder")
    if resume and store is not None:
        sim.resume_from_store(state)
    if shard_replicas:
        from ..distributed import split_over_local_devices

        sim.state = split_over_local_devices(sim.state, len(ids))
    return sim


def _part_name(index: int, count: int) -> str:
    return f"part-{index:03d}-of-{count:03d}"


def open_replica_parts(directory) -> Trajectory:
    """The trajectory of every replica of a sharded run (`simulate(..., shard_replicas=True)`), read from the
    parts its processes wrote under `directory`, replicas in their global order: positions (K, R, N, 3).
    A part whose replicas all stopped early (a watchdog) has fewer frames than the others; its last frame is
    repeated to the common length, as one process running every replica would have kept it (frozen), and
    `stop_time_fs` says when each replica stopped. Raises ValueError when parts are missing or overlap."""
    directory = Path(directory)
    parts = sorted(p for p in directory.glob("part-*-of-*") if (p / "meta.json").exists())
    if not parts:
        raise ValueError(f"{directory}: no parts of a sharded replica run (part-<i>-of-<n> folders) found")
    counts = {p.name.rpartition("-of-")[2] for p in parts}
    if len(counts) != 1 or len(parts) != int(counts.pop()):
        raise ValueError(f"{directory}: expected the parts of one job, found {[p.name for p in parts]}")
    stores = [TrajectoryStore(p) for p in parts]
    ids = [r for st in stores for r in st.meta["replica_ids"]]
    if ids != list(range(stores[0].meta["total_replicas"])):
        raise ValueError(f"{directory}: the parts hold replicas {ids}, not each of "
                         f"0..{stores[0].meta['total_replicas'] - 1} once")
    trajs = [st.open() for st in stores]
    longest = max(trajs, key=lambda t: len(t.time_fs))
    k = len(longest.time_fs)

    def padded(t, name):
        x = np.asarray(getattr(t, name))
        if len(x) < k:
            x = np.concatenate([x, np.repeat(x[-1:], k - len(x), axis=0)])
        return x

    fields = {name: np.concatenate([padded(t, name) for t in trajs], axis=1)
              for name in ("positions", "velocities", "potential", "kinetic", "temperature", "conserved")}
    stops = [t.stop_time_fs if t.stop_time_fs is not None else np.full(len(st.meta["replica_ids"]), np.inf)
             for t, st in zip(trajs, stores)]
    reasons = sorted({t.stop_reason for t in trajs if t.stop_reason})
    return Trajectory(numbers=longest.numbers, time_fs=longest.time_fs, cell=longest.cell, pbc=longest.pbc,
                      timestep_fs=longest.timestep_fs, stop_reason="; ".join(reasons) or None,
                      stop_time_fs=np.concatenate(stops), **fields)


__all__ = ["open_replica_parts", "simulate"]
