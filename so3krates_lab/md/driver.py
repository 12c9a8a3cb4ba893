"""The chunked MD driver: compiled chunks of many steps, host-side recording, watchdogs and overflow repair.

    sim = Simulation(step, state, timestep_fs=0.5, dof=degrees_of_freedom(n), store=TrajectoryStore("run"))
    for frames in sim.chunks(20_000):        # a generator: a notebook or widget can consume frames live
        print(frames.time_fs[-1], frames.temperature[-1])
    sim.stop_reason                          # None, or what a watchdog saw

Each chunk is one `lax.scan` over `chunk_steps` steps (recording every `record_every`) compiled once. Between
chunks the host (1) checks the force function's neighbour list for overflow, and if it overflowed reallocates a
larger list and reruns the chunk from its start, so no step is lost and no force from a truncated list is kept;
(2) runs the watchdogs over the recorded frames; (3) appends the frames and the state to the store.
When a watchdog trips, the run stops: the frames before the offending one are kept, the offending frames are
written to the store separately, the state at the start of the chunk is the last good state, and
`stop_reason` says what happened.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterator

import jax
import numpy as np

from ..autodiff import compiler_options
from .integrators import KB_EV_PER_K, MDState, kinetic_energy
from .neighbours import grown_capacities


@dataclasses.dataclass(frozen=True)
class Watchdogs:
    """Limits checked on every recorded frame (None disables one). Non-finite values always stop a run.

    min_distance: smallest interatomic distance (Angstrom); max_bond_deviation: largest change of a covalent
    bond length from its value in `bonds_reference` (Angstrom; spec section 6 uses 0.5); max_temperature (K);
    max_energy_drift: |E_total - E_total(start)| per atom (eV), for NVE.
    """

    min_distance: float | None = 0.5
    max_bond_deviation: float | None = None
    max_temperature: float | None = None
    max_energy_drift: float | None = None
    bonds: np.ndarray | None = None  # (B, 2) atom index pairs, set with `with_bonds`
    bond_lengths: np.ndarray | None = None  # (B,) reference lengths

    def with_bonds(self, numbers, positions, max_bond_deviation: float = 0.5, scale: float = 1.2) -> "Watchdogs":
        """Covalent bonds of a reference geometry: pairs closer than `scale` x the sum of covalent radii."""
        from ase.data import covalent_radii

        r = np.asarray(positions, float)
        d = np.linalg.norm(r[:, None] - r[None], axis=-1)
        radii = covalent_radii[np.asarray(numbers)]
        i, j = np.nonzero(np.triu(d < scale * (radii[:, None] + radii[None]), 1))
        return dataclasses.replace(self, max_bond_deviation=max_bond_deviation, bonds=np.c_[i, j],
                                   bond_lengths=d[i, j])

    def first_violation(self, frames: "Frames", e0_per_atom: float | None, periodic: bool) -> tuple[int, str] | None:
        """(index of the first offending frame, description) or None."""
        n_atoms = frames.positions.shape[1]
        checks = []
        finite = np.isfinite(frames.positions).all((1, 2)) & np.isfinite(frames.potential) \
            & np.isfinite(frames.velocities).all((1, 2))
        checks.append((~finite, lambda k: "non-finite positions, velocities or energy"))
        if self.min_distance is not None and not periodic and n_atoms > 1:
            iu = np.triu_indices(n_atoms, 1)
            dmin = np.linalg.norm(frames.positions[:, iu[0]] - frames.positions[:, iu[1]], axis=-1).min(1)
            checks.append((dmin < self.min_distance,
                           lambda k: f"atoms {dmin[k]:.3f} A apart (min_distance {self.min_distance} A)"))
        if self.max_bond_deviation is not None and self.bonds is not None and len(self.bonds):
            b = self.bonds
            lengths = np.linalg.norm(frames.positions[:, b[:, 0]] - frames.positions[:, b[:, 1]], axis=-1)
            dev = np.abs(lengths - self.bond_lengths).max(1)
            checks.append((dev > self.max_bond_deviation,
                           lambda k: f"a bond length deviates by {dev[k]:.3f} A "
                                     f"(max_bond_deviation {self.max_bond_deviation} A)"))
        if self.max_temperature is not None:
            checks.append((frames.temperature > self.max_temperature,
                           lambda k: f"temperature {frames.temperature[k]:.0f} K > {self.max_temperature} K"))
        if self.max_energy_drift is not None and e0_per_atom is not None:
            drift = np.abs(frames.total / n_atoms - e0_per_atom)
            checks.append((drift > self.max_energy_drift,
                           lambda k: f"total energy drifted {1e3 * drift[k]:.2f} meV/atom "
                                     f"(max_energy_drift {1e3 * self.max_energy_drift} meV/atom)"))
        first = None
        for bad, describe in checks:
            hits = np.nonzero(bad)[0]
            if len(hits) and (first is None or hits[0] < first[0]):
                first = (int(hits[0]), describe(int(hits[0])))
        return first


@dataclasses.dataclass
class Frames:
    """Recorded frames of one chunk (host numpy arrays): time (fs), positions (K, N, 3) A, velocities A/fs,
    potential / kinetic / conserved energies (K,) eV, temperature (K,) K."""

    time_fs: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray
    potential: np.ndarray
    kinetic: np.ndarray
    temperature: np.ndarray
    conserved: np.ndarray

    @property
    def total(self) -> np.ndarray:
        return self.potential + self.kinetic

    def __len__(self) -> int:
        return len(self.time_fs)

    def take(self, index) -> "Frames":
        return Frames(**{f.name: getattr(self, f.name)[index] for f in dataclasses.fields(self)})


class Simulation:
    """Runs `step` (from an integrator) in compiled chunks starting from `state`.

    dof: degrees of freedom for the temperature. conserved: optional fn(state) -> the quantity the integrator
    conserves (default: potential + kinetic). force_fn: the integrator's force function; needed when state.aux
    is a neighbour list, to reallocate it (`force_fn.reallocate`) and recompute the chunk's starting forces.
    """

    def __init__(self, step: Callable[[MDState], MDState], state: MDState, *, timestep_fs: float, dof: int,
                 record_every: int = 10, chunk_steps: int = 1000, watchdogs: Watchdogs | None = Watchdogs(),
                 store=None, conserved: Callable | None = None, force_fn: Callable | None = None,
                 periodic: bool = False, headroom: float = 1.3):
        if chunk_steps % record_every:
            raise ValueError(f"chunk_steps ({chunk_steps}) must be a multiple of record_every ({record_every})")
        self.step, self.state = step, state
        self.timestep_fs, self.dof = float(timestep_fs), int(dof)
        self.record_every, self.chunk_steps = int(record_every), int(chunk_steps)
        self.watchdogs, self.store, self.periodic = watchdogs, store, periodic
        self.conserved = conserved or (lambda s: s.potential + kinetic_energy(s.velocities, s.masses))
        self.force_fn, self.headroom = force_fn, headroom
        self.stop_reason: str | None = None
        self.reallocations = 0
        self._stop_requested = False
        self._e0 = None
        self._chunk = jax.jit(self._chunk_fn, compiler_options=compiler_options())

    def _chunk_fn(self, state: MDState):
        def inner(s, _):
            return self.step(s), None

        def outer(s, _):
            s, _ = jax.lax.scan(inner, s, None, length=self.record_every)
            ke = kinetic_energy(s.velocities, s.masses)
            return s, (s.step, s.positions, s.velocities, s.potential, ke, self.conserved(s))

        return jax.lax.scan(outer, state, None, length=self.chunk_steps // self.record_every)

    def request_stop(self) -> None:
        """Ask the run to stop after the current chunk (thread-safe enough for a widget's stop button). Asked
        while no run is going on, the next run stops before its first chunk. Every run clears the request when
        it ends."""
        self._stop_requested = True

    def _overflowed(self, state) -> bool:
        aux = state.aux
        return aux is not None and hasattr(aux, "overflow") and bool(aux.overflow)

    def _run_chunk(self, start: MDState):
        while True:
            end, (steps, pos, vel, pot, ke, cons) = self._chunk(start)
            if not self._overflowed(end):
                return end, steps, pos, vel, pot, ke, cons
            if self.force_fn is None or not hasattr(self.force_fn, "reallocate"):
                raise RuntimeError("the neighbour list overflowed; pass Simulation(force_fn=...) to reallocate it")
            capacity, bins = grown_capacities(start.aux, end.aux, self.headroom)
            aux = self.force_fn.reallocate(start.aux, start.positions, capacity, bins)
            # The start state's forces may themselves come from a truncated list (an overflow at init): redo them.
            potential, forces, aux = self.force_fn(start.positions, aux)
            start = start.replace(aux=aux, potential=potential, forces=forces.astype(start.velocities.dtype))
            self.reallocations += 1

    def chunks(self, steps: int, progress: bool = True) -> Iterator[Frames]:
        """Run `steps` more steps (rounded up to whole chunks), yielding the frames of each chunk."""
        self.stop_reason = None
        try:
            yield from self._chunks(int(steps), progress)
        finally:
            self._stop_requested = False

    def _chunks(self, steps: int, progress: bool) -> Iterator[Frames]:
        from tqdm.auto import tqdm

        n_chunks = -(-steps // self.chunk_steps)
        if self.store is not None and not self._stop_requested:
            self.store.clear_stop_reason()  # an earlier stop no longer describes this run
        if self._e0 is None:
            self._e0 = float(self.conserved(self.state)) / self.state.positions.shape[0]
        with tqdm(total=n_chunks * self.chunk_steps, desc="MD", unit="step", disable=not progress,
                  mininterval=0.5) as bar:
            for _ in range(n_chunks):
                if self._stop_requested:
                    self.stop_reason = "stopped on request"
                    if self.store is not None:
                        self.store.save_stop_reason(self.stop_reason)
                    return
                start = self.state
                end, steps_, pos, vel, pot, ke, cons = self._run_chunk(start)
                ke = np.asarray(ke, np.float64)
                frames = Frames(time_fs=np.asarray(steps_) * self.timestep_fs, positions=np.asarray(pos),
                                velocities=np.asarray(vel), potential=np.asarray(pot, np.float64), kinetic=ke,
                                temperature=2.0 * ke / (self.dof * KB_EV_PER_K),
                                conserved=np.asarray(cons, np.float64))
                bad = self.watchdogs.first_violation(frames, self._e0, self.periodic) if self.watchdogs else None
                if bad is not None:
                    k, what = bad
                    good = frames.take(slice(0, k))
                    self.stop_reason = f"stopped at t = {frames.time_fs[k]:.1f} fs: {what}"
                    if self.store is not None:
                        if len(good):
                            self.store.append(good)
                        self.store.save_offending(frames.take(slice(k, None)), self.stop_reason)
                        self.store.save_state(start)
                    bar.set_postfix_str(self.stop_reason[:60])
                    if len(good):
                        yield good
                    return
                self.state = end
                if self.store is not None:
                    self.store.append(frames)
                    self.store.save_state(end)
                bar.update(self.chunk_steps)
                bar.set_postfix(T=f"{frames.temperature[-1]:.0f}K", refresh=False)
                yield frames

    def run(self, steps: int, progress: bool = True) -> Frames | None:
        """Run and return all frames of this call concatenated (None if none were recorded)."""
        parts = list(self.chunks(steps, progress))
        if not parts:
            return None
        return Frames(**{f.name: np.concatenate([getattr(p, f.name) for p in parts])
                         for f in dataclasses.fields(Frames)})
