"""Many independent replicas of one system in one compiled call (vmap), for stability statistics and sampling.

    states = stack_states([init(positions, maxwell_boltzmann(masses, T, seed=s, positions=positions), masses,
                                aux=nbrs) for s in range(8)])
    sim = ReplicaSimulation(step, states, timestep_fs=0.5, dof=..., watchdogs=Watchdogs().with_bonds(...))
    frames = sim.run(200_000)           # Frames with a replica axis: positions (K, R, N, 3), potential (K, R)
    sim.stop_time_fs                    # per replica: when its watchdog tripped (inf: never)

Each chunk advances every active replica with `vmap(step)`; a replica whose watchdog trips is rolled back to its
state at the start of that chunk (its last good state) and frozen, while the others go on. The run ends when the
steps are done or no replica is active. Neighbour-list overflow in any replica reallocates all of them (one shape)
and reruns the chunk. No trajectory store here: keep what you need from the yielded frames. A stopped replica's
frames after its stop time repeat its frozen last good state.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from ..autodiff import compiler_options
from .driver import Frames, Simulation
from .integrators import KB_EV_PER_K, kinetic_energy
from .neighbours import grown_capacities


def stack_states(states):
    """A list of states of the same shapes -> one state with a leading replica axis on every leaf."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *states)


def where_rows(mask, new, old):
    """Per leading-axis row: `new` where mask (R,) is True, else `old`, on every leaf of two same-shaped states."""
    return jax.tree.map(lambda a, b: jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b), new, old)


class ReplicaSimulation(Simulation):
    def __init__(self, step, states, **kw):
        if kw.get("store") is not None:
            raise ValueError("ReplicaSimulation has no trajectory store; consume the yielded frames")
        super().__init__(step, states, **kw)
        self.n_replicas = int(jax.tree.leaves(states.positions)[0].shape[0])
        self.active = np.ones(self.n_replicas, bool)
        self.stop_time_fs = np.full(self.n_replicas, np.inf)
        self.stop_reasons: list[str | None] = [None] * self.n_replicas
        self._chunk = jax.jit(self._replica_chunk_fn, compiler_options=compiler_options())

    def _replica_chunk_fn(self, state, active):
        vstep = jax.vmap(self.step)

        def inner(s, _):
            return where_rows(active, vstep(s), s), None

        def outer(s, _):
            s, _ = jax.lax.scan(inner, s, None, length=self.record_every)
            ke = jax.vmap(kinetic_energy)(s.velocities, s.masses)
            return s, (s.step, s.positions, s.velocities, s.potential, ke, jax.vmap(self.conserved)(s))

        return jax.lax.scan(outer, state, None, length=self.chunk_steps // self.record_every)

    def _overflowed(self, state) -> bool:
        aux = state.aux
        return aux is not None and hasattr(aux, "overflow") and bool(np.any(np.asarray(aux.overflow)))

    def _run_replica_chunk(self, start):
        while True:
            end, out = self._chunk(start, np.array(self.active))  # a copy: self.active is updated in place later
            if not self._overflowed(end):
                return end, out
            if self.force_fn is None or not hasattr(self.force_fn, "reallocate"):
                raise RuntimeError("the neighbour list overflowed; pass force_fn=... to reallocate it")
            capacity, bins = grown_capacities(start.aux, end.aux, self.headroom)
            aux = jax.vmap(lambda a, r: self.force_fn.reallocate(a, r, capacity, bins))(start.aux, start.positions)
            potential, forces, aux = jax.vmap(self.force_fn)(start.positions, aux)
            start = start.replace(aux=aux, potential=potential, forces=forces.astype(start.velocities.dtype))
            self.reallocations += 1

    def _chunks(self, steps: int, progress: bool) -> Iterator[Frames]:
        from tqdm.auto import tqdm

        n_chunks = -(-steps // self.chunk_steps)
        if self._e0 is None:
            n_atoms = self.state.positions.shape[1]
            self._e0 = np.asarray(jax.vmap(self.conserved)(self.state)) / n_atoms
        with tqdm(total=n_chunks * self.chunk_steps, desc=f"MD x{self.n_replicas}", unit="step",
                  disable=not progress, mininterval=0.5) as bar:
            for _ in range(n_chunks):
                if not self.active.any():
                    break
                if self._stop_requested:
                    self.stop_reason = "stopped on request"
                    return
                start = self.state
                end, (steps_, pos, vel, pot, ke, cons) = self._run_replica_chunk(start)
                ke = np.asarray(ke, np.float64)
                frames = Frames(time_fs=np.asarray(steps_) * self.timestep_fs, positions=np.asarray(pos),
                                velocities=np.asarray(vel), potential=np.asarray(pot, np.float64), kinetic=ke,
                                temperature=2.0 * ke / (self.dof * KB_EV_PER_K),
                                conserved=np.asarray(cons, np.float64))
                rollback = np.zeros(self.n_replicas, bool)
                for r in np.nonzero(self.active)[0]:
                    one = Frames(**{f.name: (getattr(frames, f.name) if f.name == "time_fs"
                                             else getattr(frames, f.name)[:, r]) for f in dataclasses.fields(Frames)})
                    one.time_fs = np.asarray(steps_)[:, r] * self.timestep_fs
                    bad = self.watchdogs.first_violation(one, float(self._e0[r]), self.periodic) \
                        if self.watchdogs else None
                    if bad is not None:
                        k, what = bad
                        self.stop_time_fs[r] = float(one.time_fs[k])
                        self.stop_reasons[r] = f"stopped at t = {one.time_fs[k]:.1f} fs: {what}"
                        rollback[r] = True
                self.active &= ~rollback
                self.state = where_rows(jnp.asarray(rollback), start, end)
                frames.time_fs = np.asarray(steps_).max(1) * self.timestep_fs  # the active replicas' time
                bar.update(self.chunk_steps)
                bar.set_postfix(active=int(self.active.sum()), refresh=False)
                yield frames
        if not self.active.any():
            self.stop_reason = "every replica stopped"
