"""The MD driver: compiled chunks of many steps for one structure or many replicas, with host-side recording,
watchdogs, overflow repair and the trajectory store in one place.

    sim = Simulation(velocity_verlet(force_fn, 0.5), state, dof=degrees_of_freedom(n), store=TrajectoryStore("run"))
    for frames in sim.chunks(20_000):        # a generator of `Trajectory` chunks: a notebook or widget watches live
        print(frames.time_fs[-1], frames.temperature[-1])
    traj = sim.run(10_000)                   # or all frames of a call as one `Trajectory`
    sim.stop_reason                          # None, or what a watchdog saw

Most users start a run with `md.simulate(potential, system, integrator)`, which builds all of this.

One structure or many: a state whose positions are (R, N, 3) is R replicas advanced together by `vmap(step)`.
Each chunk is one `lax.scan` over `chunk_steps` steps (recording every `record_every`), compiled once. Between
chunks the host
1. checks the neighbour list for overflow; if it overflowed, reallocates a larger list and reruns the chunk from
   its start, so no step is lost and no force from a truncated list is kept;
2. runs the watchdogs over the recorded frames of every active replica. One structure: the run stops, the frames
   before the offending one are kept, the offending ones are written to the store separately, and the state at the
   start of the chunk is the last good state. Replicas: the offending replica is rolled back to its state at the
   start of the chunk and frozen (`stop_time_fs`, `stop_reasons`), the others go on; the run ends when none is
   active. (A stopped replica's frames after its stop time repeat its frozen state or, within the chunk it
   stopped in, show its offending frames; `Trajectory.replica(r)` cuts them off.)
3. appends the frames and the state to the store.

Ctrl-C (SIGINT) or SIGTERM while a chunk runs or compiles does not cut it short: the chunk finishes, its frames
and state are stored, its frames are handed out, and the run stops with `interrupted` = the signal's name and a
`stop_reason` that says so (a second Ctrl-C stops at once; `so3krates_lab.interrupts`). Running again (or
`md.simulate(..., store=same folder)` in a new process) continues from the stored state.

A replica driver built with `restartable=True` can restart replicas from new positions and velocities between
chunks (`restart`): they are initialised inside the next compiled chunk, so the model compiles once. Minima
exploration uses this to send replicas to new starting points.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from ..autodiff import compiler_options
from ..graph.skin import grown_capacities
from ..interrupts import deferred_interrupts
from ..structures import Trajectory
from .integrators import KB_EV_PER_K, Integrator, MDState, kinetic_energy
from .watchdogs import Watchdogs


def stack_states(states):
    """A list of states of the same shapes -> one state with a leading replica axis on every leaf."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *states)


def where_rows(mask, new, old):
    """Per leading-axis row: `new` where mask (R,) is True, else `old`, on every leaf of two same-shaped states."""
    return jax.tree.map(lambda a, b: jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b), new, old)


def blank_like(shapes):
    """Arrays of the given shapes (`jax.eval_shape` output): zeros, and valid PRNG keys for key leaves."""
    def leaf(x):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            keys = jax.random.split(jax.random.key(0), max(int(np.prod(x.shape)), 1))
            return keys.reshape(x.shape)
        return jnp.zeros(x.shape, x.dtype)

    return jax.tree.map(leaf, shapes)


def overflowed(aux) -> bool:
    return aux is not None and hasattr(aux, "overflow") and bool(np.any(np.asarray(aux.overflow)))


class Simulation:
    """Runs an `Integrator` in compiled chunks from `state` (one structure, or replicas on a leading axis).

    dof: degrees of freedom for the temperature. numbers: (N,) atomic numbers (for the frames; default: the
    store's). cell: the system's (3, 3) cell in Angstrom, or None (frames and watchdogs); periodic: whether it is
    periodic. restartable: replicas can be restarted (`restart`); then `state` may be None and every replica
    starts inactive until restarted (masses: (N,) amu, and template: (N, 3) positions in Angstrom, plus the force
    function's aux, shape the blank state).
    """

    def __init__(self, integrator: Integrator, state: MDState | None, *, dof: int, record_every: int = 10,
                 chunk_steps: int = 1000, watchdogs: Watchdogs | None = Watchdogs(), store=None, numbers=None,
                 cell=None, periodic: bool = False, headroom: float = 1.3, restartable: bool = False,
                 n_replicas: int | None = None, masses=None, template=None, progress_label: str = "MD"):
        if not isinstance(integrator, Integrator):
            raise TypeError(f"integrator must be an md.Integrator (e.g. md.velocity_verlet(force_fn, dt)), got "
                            f"{type(integrator).__name__}")
        if chunk_steps % record_every:
            raise ValueError(f"chunk_steps ({chunk_steps}) must be a multiple of record_every ({record_every})")
        self.integrator = integrator
        self.timestep_fs = float(integrator.timestep_fs)
        self.dof = int(dof)
        self.record_every, self.chunk_steps = int(record_every), int(chunk_steps)
        self.watchdogs, self.store, self.periodic, self.cell = watchdogs, store, bool(periodic), cell
        self.headroom, self.restartable = headroom, bool(restartable)
        self.progress_label = progress_label
        if state is None:
            if not restartable or n_replicas is None or masses is None or template is None:
                raise ValueError("state=None needs restartable=True, n_replicas, masses and template")
            state = self._blank_state(int(n_replicas), masses, template)
            active = np.zeros(int(n_replicas), bool)
        else:
            active = None
        self.state = state
        self.replicas = state.positions.ndim == 3
        if restartable and not self.replicas:
            raise ValueError("restartable=True needs replicas (positions of shape (R, N, 3))")
        self.n_replicas = int(state.positions.shape[0]) if self.replicas else 1
        self.n_atoms = int(state.positions.shape[-2])
        if numbers is None and store is not None:
            numbers = store.numbers
        self.numbers = np.zeros(self.n_atoms, np.int32) if numbers is None else np.asarray(numbers, np.int32)
        if watchdogs is not None:  # "auto" limits fitted to this run: start geometry, temperature, ensemble
            from .watchdogs import start_temperature

            self.watchdogs = watchdogs.for_run(
                self.numbers, np.asarray(state.positions), cell=cell, periodic=periodic,
                temperature_K=integrator.temperature_K, energy_conserving=integrator.temperature_K is None,
                dof=self.dof, start_temperature_K=start_temperature(state.velocities, state.masses, self.dof))
        self.active = np.ones(self.n_replicas, bool) if active is None else active
        self.stop_time_fs = np.full(self.n_replicas, np.inf)
        self.stop_reasons: list[str | None] = [None] * self.n_replicas
        self.stop_reason: str | None = None
        self.reallocations = 0
        self._stop_requested = False
        self.interrupted: str | None = None  # "SIGINT"/"SIGTERM" if the last run stopped on one
        self._e0 = None  # conserved energy per atom at the start (R,)
        self._fresh = np.zeros(self.n_replicas, bool)
        if self.restartable:
            n = self.n_atoms
            self._new_positions = np.zeros((self.n_replicas, n, 3))
            self._new_velocities = np.zeros((self.n_replicas, n, 3))
            self._new_keys = np.zeros((self.n_replicas,) + jax.random.key_data(jax.random.key(0)).shape, np.uint32)
        self._chunk = jax.jit(self._chunk_fn, compiler_options=compiler_options())
        self._conserved = jax.jit(jax.vmap(integrator.conserved) if self.replicas else integrator.conserved)

    # state ----------------------------------------------------------------------------------------------------
    def _init_rows(self, positions, velocities, keys, aux):
        masses = self._masses
        init = self.integrator.init

        def one(p, v, k, a):
            return init(p, v, masses, key=jax.random.wrap_key_data(k) if self.integrator.needs_key else None,
                        aux=a)

        return jax.vmap(one)(positions, velocities, keys, aux)

    def _blank_state(self, n_replicas: int, masses, template):
        dtype = self.integrator.force_fn.dtype if hasattr(self.integrator.force_fn, "dtype") else jnp.float32
        self._dtype = dtype
        self._masses = jnp.asarray(masses, dtype)
        aux = stack_states([getattr(self.integrator.force_fn, "aux", None)] * n_replicas)
        pos = jnp.asarray(np.broadcast_to(np.asarray(template, float), (n_replicas,) + np.shape(template)), dtype)
        keys = np.zeros((n_replicas,) + jax.random.key_data(jax.random.key(0)).shape, np.uint32)
        shapes = jax.eval_shape(self._init_rows, pos, pos, keys, aux)
        return blank_like(shapes).replace(aux=aux)

    def restart(self, rows, positions, velocities, seeds) -> None:
        """Restart replicas `rows` from positions (K, N, 3) Angstrom and velocities (K, N, 3) Angstrom/fs (PRNG
        seeds (K,) for a stochastic integrator) at the start of the next chunk; they become active again."""
        if not self.restartable:
            raise RuntimeError("this Simulation was not built with restartable=True")
        if not hasattr(self, "_masses"):
            self._masses = jnp.asarray(self.state.masses[0])
        for r, p, v, s in zip(np.atleast_1d(rows), positions, velocities, seeds):
            self._new_positions[r], self._new_velocities[r] = p, v
            self._new_keys[r] = np.asarray(jax.random.key_data(jax.random.key(int(s))))
            self._fresh[r] = True
            self.active[r] = True
            self.stop_time_fs[r], self.stop_reasons[r] = np.inf, None
            if self._e0 is not None:
                self._e0[r] = np.nan  # set from the restarted state after its first chunk

    # the compiled chunk -----------------------------------------------------------------------------------------
    def _chunk_fn(self, state: MDState, active, fresh, positions, velocities, keys):
        step, conserved = self.integrator.step, self.integrator.conserved
        if self.restartable:
            dtype = state.positions.dtype
            state = jax.lax.cond(jnp.any(fresh), lambda s: where_rows(fresh, self._init_rows(
                positions.astype(dtype), velocities.astype(dtype), keys, s.aux), s), lambda s: s, state)
        if self.replicas:
            vstep = jax.vmap(step)

            def advance(s):
                return where_rows(active, vstep(s), s)

            ke_of, conserved_of = jax.vmap(kinetic_energy), jax.vmap(conserved)
        else:
            advance, ke_of, conserved_of = step, kinetic_energy, conserved

        def inner(s, _):
            return advance(s), None

        def outer(s, _):
            s, _ = jax.lax.scan(inner, s, None, length=self.record_every)
            return s, (s.step, s.positions, s.velocities, s.potential, ke_of(s.velocities, s.masses),
                       conserved_of(s))

        end, out = jax.lax.scan(outer, state, None, length=self.chunk_steps // self.record_every)
        return state, end, out

    def _call_chunk(self, start):
        if self.restartable:
            # Copies: on the CPU, JAX may use a NumPy argument's memory without copying it while the call runs,
            # and these arrays are written right after.
            args = (self._new_positions.copy(), self._new_velocities.copy(), self._new_keys.copy())
        else:
            args = (None, None, None)
        return self._chunk(start, np.array(self.active), np.array(self._fresh), *args)

    def _run_chunk(self, start: MDState):
        """(start state as run, end state, recorded outputs), repairing neighbour-list overflows."""
        while True:
            begun, end, out = self._call_chunk(start)
            if not overflowed(end.aux):
                self._fresh[:] = False
                return begun, end, out
            neighbours = getattr(self.integrator.force_fn, "neighbours", None)
            if neighbours is None:
                raise RuntimeError("the neighbour list overflowed, and the integrator's force function has no "
                                   "neighbour functions to reallocate it (build it with md.force_function)")
            capacity, bins = grown_capacities(begun.aux, end.aux, self.headroom)
            force_fn = self.integrator.force_fn
            if self.replicas:
                aux = jax.vmap(lambda a, r: neighbours.reallocate(a, r, capacity, bins))(begun.aux, begun.positions)
                potential, forces, aux = jax.vmap(force_fn)(begun.positions, aux)
            else:
                aux = neighbours.reallocate(begun.aux, begun.positions, capacity, bins)
                potential, forces, aux = force_fn(begun.positions, aux)
            start = begun.replace(aux=aux, potential=potential, forces=forces.astype(begun.velocities.dtype))
            self._fresh[:] = False  # the rerun starts from the initialised rows
            self.reallocations += 1

    # running --------------------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Ask the run to stop after the current chunk (thread-safe enough for a widget's stop button). Asked
        while no run is going on, the next run stops before its first chunk. Every run clears the request when
        it ends."""
        self._stop_requested = True

    def _frames(self, steps, pos, vel, pot, ke, cons, stop_reason=None) -> Trajectory:
        ke = np.asarray(ke, np.float64)
        steps = np.asarray(steps)
        time = (steps.max(1) if self.replicas else steps) * self.timestep_fs
        cell = np.asarray(self.cell) if self.cell is not None and self.periodic else None
        return Trajectory(numbers=self.numbers, time_fs=time, positions=np.asarray(pos), velocities=np.asarray(vel),
                          potential=np.asarray(pot, np.float64), kinetic=ke,
                          temperature=2.0 * ke / (self.dof * KB_EV_PER_K), conserved=np.asarray(cons, np.float64),
                          cell=cell, pbc=np.full(3, self.periodic), timestep_fs=self.timestep_fs,
                          stop_reason=stop_reason, stop_time_fs=self.stop_time_fs.copy() if self.replicas else None,
                          integrator=self.integrator.name)

    def _save(self, state) -> None:
        if self.store is None:
            return
        self.store.save_state(state, active=self.active, stop_time_fs=self.stop_time_fs,
                              e0_per_atom=np.asarray(self._e0, np.float64),
                              stop_reasons=np.array([r or "" for r in self.stop_reasons], str))

    def resume_from_store(self, template: MDState) -> bool:
        """Continue from the store's saved state, if it has one (template: a fresh state from the same
        integrator's init). Returns whether it resumed."""
        if self.store is None or not self.store.has_state():
            return False
        self.state = self.store.load_state(template)
        saved = self.store.load_driver_state()
        if "active" in saved and len(saved["active"]) == self.n_replicas:
            self.active = np.asarray(saved["active"], bool).copy()
            self.stop_time_fs = np.asarray(saved["stop_time_fs"], np.float64).copy()
        if "stop_reasons" in saved and len(saved["stop_reasons"]) == self.n_replicas:
            self.stop_reasons = [str(r) or None for r in saved["stop_reasons"]]
        if "e0_per_atom" in saved and np.size(saved["e0_per_atom"]) == self.n_replicas:
            self._e0 = np.asarray(saved["e0_per_atom"], np.float64).reshape(-1).copy()
        return True

    def chunks(self, steps: int, progress: bool = True) -> Iterator[Trajectory]:
        """Run `steps` more steps (rounded up to whole chunks), yielding the frames of each chunk."""
        self.stop_reason = None
        try:
            yield from self._chunks(int(steps), progress)
        finally:
            self._stop_requested = False

    def _chunks(self, steps: int, progress: bool) -> Iterator[Trajectory]:
        from tqdm.auto import tqdm

        self.interrupted = None
        n_chunks = -(-steps // self.chunk_steps)
        idle = not self.active.any() and not self._fresh.any()  # stopped by a watchdog earlier: nothing to run
        # Ctrl-C / SIGTERM while a chunk runs or compiles (or while the start is committed) waits for the chunk's
        # frames and state to be stored; the run then stops with `interrupted` set. Between chunks (while the
        # caller handles the frames just yielded) a Ctrl-C is the caller's KeyboardInterrupt: nothing is lost.
        with deferred_interrupts() as interrupt:
            if self.store is not None and not self._stop_requested and not idle:
                self.store.clear_stop_reason()  # an earlier stop no longer describes this run
            if self._e0 is None and not self.restartable:
                self._e0 = np.asarray(self._conserved(self.state), np.float64).reshape(-1) / self.n_atoms
            if self.store is not None and not self.store.has_state() and not self.restartable:
                # commit an empty store with the start state: a run killed before its first state resumes here
                self._save(self.state)
        if interrupt.requested:
            self._interrupted(interrupt.requested)
            return
        label = self.progress_label if not self.replicas else f"{self.progress_label} x{self.n_replicas}"
        with tqdm(total=n_chunks * self.chunk_steps, desc=label, unit="step", disable=not progress,
                  mininterval=0.5) as bar:
            for _ in range(n_chunks):
                if self._stop_requested:
                    self.stop_reason = "stopped on request"
                    if self.store is not None:
                        self.store.save_stop_reason(self.stop_reason)
                    return
                if not self.active.any() and not self._fresh.any():
                    # one structure: its watchdog's finding still describes it
                    earlier = None if self.replicas else self.stop_reasons[0]
                    self.stop_reason = self.stop_reason or earlier or "every replica stopped"
                    return
                with deferred_interrupts() as interrupt:
                    # a request that reached an enclosing context (a workflow's) stops before the chunk
                    frames, finished = (None, False) if interrupt.requested else self._advance(bar)
                if frames is not None and len(frames):
                    yield frames
                if finished:
                    return
                if interrupt.requested:
                    self._interrupted(interrupt.requested)
                    return

    def _interrupted(self, signal_name: str) -> None:
        self.interrupted = signal_name
        self.stop_reason = (f"interrupted ({signal_name}) at step {int(np.max(np.asarray(self.state.step)))}; "
                            "everything up to here is stored: run again to continue")
        if self.store is not None:
            self.store.save_stop_reason(self.stop_reason)

    def _advance(self, bar) -> tuple[Trajectory | None, bool]:
        """One chunk: run it, check it, store it. Returns (the frames to hand out, whether the run is over)."""
        fresh = self._fresh.copy()
        begun, end, (steps_, pos, vel, pot, ke, cons) = self._run_chunk(self.state)
        if self._e0 is None or fresh.any() or np.isnan(self._e0).any():
            e_begun = np.asarray(self._conserved(begun), np.float64).reshape(-1) / self.n_atoms
            self._e0 = e_begun if self._e0 is None else np.where(fresh | np.isnan(self._e0), e_begun, self._e0)
        frames = self._frames(steps_, pos, vel, pot, ke, cons)
        if self.replicas:
            frames = self._replica_chunk(frames, begun, end, bar)
            if not self.active.any():
                self.stop_reason = "every replica stopped"
                if self.store is not None:
                    self.store.save_stop_reason(self.stop_reason)
                return frames, True
            return frames, False
        bad = self.watchdogs.first_violation(frames, float(self._e0[0]), self.periodic) if self.watchdogs else None
        if bad is not None:
            k, what = bad
            self.stop_reason = f"stopped at t = {frames.time_fs[k]:.1f} fs: {what}"
            self.stop_time_fs[0], self.stop_reasons[0] = float(frames.time_fs[k]), self.stop_reason
            self.active[0] = False
            good = dataclasses.replace(frames.take(slice(0, k)), stop_reason=self.stop_reason)
            self.state = begun
            if self.store is not None:
                if len(good):
                    self.store.append(good)
                self.store.save_offending(frames.take(slice(k, None)), self.stop_reason)
                self._save(begun)
            bar.set_postfix_str(self.stop_reason[:60])
            return good, True
        self.state = end
        if self.store is not None:
            self.store.append(frames)
            self._save(end)
        bar.update(self.chunk_steps)
        bar.set_postfix(T=f"{frames.temperature[-1]:.0f}K", refresh=False)
        return frames, False

    def _replica_chunk(self, frames: Trajectory, begun, end, bar) -> Trajectory:
        rollback = np.zeros(self.n_replicas, bool)
        if self.watchdogs:
            for r in np.nonzero(self.active)[0]:
                one = Trajectory(numbers=self.numbers, time_fs=frames.time_fs, positions=frames.positions[:, r],
                                 velocities=frames.velocities[:, r], potential=frames.potential[:, r],
                                 kinetic=frames.kinetic[:, r], temperature=frames.temperature[:, r],
                                 conserved=frames.conserved[:, r])
                bad = self.watchdogs.first_violation(one, float(self._e0[r]), self.periodic)
                if bad is not None:
                    k, what = bad
                    self.stop_time_fs[r] = float(one.time_fs[k])
                    self.stop_reasons[r] = f"stopped at t = {one.time_fs[k]:.1f} fs: {what}"
                    rollback[r] = True
        self.active &= ~rollback
        self.state = where_rows(jnp.asarray(rollback), begun, end)
        frames = dataclasses.replace(frames, stop_time_fs=self.stop_time_fs.copy())
        if self.store is not None:
            self.store.append(frames)
            self._save(self.state)
        bar.update(self.chunk_steps)
        bar.set_postfix(active=int(self.active.sum()), refresh=False)
        return frames

    def run(self, steps: int, progress: bool = True) -> Trajectory:
        """Run and return all frames of this call as one Trajectory (no frames: an empty one)."""
        parts = list(self.chunks(steps, progress))
        if not parts:
            lead = (0, self.n_replicas) if self.replicas else (0,)
            empty = np.zeros(lead)
            parts = [Trajectory(numbers=self.numbers, time_fs=np.zeros(0), positions=np.zeros(lead + (self.n_atoms, 3)),
                                velocities=np.zeros(lead + (self.n_atoms, 3)), potential=empty, kinetic=empty,
                                temperature=empty, conserved=empty, timestep_fs=self.timestep_fs,
                                stop_time_fs=self.stop_time_fs.copy() if self.replicas else None,
                                integrator=self.integrator.name)]
        return dataclasses.replace(Trajectory.concatenate(parts), stop_reason=self.stop_reason)

    def trajectory(self) -> Trajectory | None:
        """Everything the store holds (all runs of this simulation and earlier ones resumed from it)."""
        return self.store.open() if self.store is not None else None


__all__ = ["Simulation", "blank_like", "stack_states", "where_rows"]
