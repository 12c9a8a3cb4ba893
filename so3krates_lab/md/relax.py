"""Relax many structures at once: a minimiser (FIRE or L-BFGS from `minimize`) in fixed slots with continuous
refilling, for minima searches and for relaxing a stream of frames.

`BatchRelaxer` advances a fixed number of slots together (vmap) in compiled chunks of minimiser steps; between
chunks, converged slots hand their minimum back and are refilled with new structures at once (initialised inside
the next compiled chunk), so a batch never waits for its slowest member (which `minimize.relax_batch` does).
"""

from __future__ import annotations

import collections
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ..autodiff import compiler_options
from .driver import overflowed, blank_like, stack_states, where_rows
from .minimize import fire, lbfgs


#: The minimisers by name ("fire", "lbfgs"), as `BatchRelaxer` and `relax` accept them: name -> (init, step) maker.
MINIMIZERS = {"fire": fire, "lbfgs": lbfgs}


class BatchRelaxer:
    """A minimiser (FIRE or L-BFGS from `md.minimize`) on `n_slots` structures at once with continuous refilling.

    force_fn: a `ForceFunction` (`md.force_function(potential, system)`, or `ForceFunction.from_callable`); every
    slot starts with a copy of its aux (the neighbour list). template: (N, 3) positions (Angstrom) of one structure (it fixes the shape of a slot). fmax:
    convergence threshold on the largest atomic force (eV/A), the default of `load` (which may give each item its
    own). max_steps: minimiser steps after which a slot is
    given up (reported as not converged). chunk_steps: steps per compiled call. minimizer: "fire", "lbfgs" or any
    function force_fn -> (init, step) whose states are dataclasses (e.g. flax structs) with positions, energy,
    step, aux and a `fmax` property; options: its keyword arguments. Freshly loaded slots are initialised inside
    the same compiled call as the chunk, so the model is compiled once: with FIRE and L-BFGS (whose `fresh` state
    is evaluated by the next step, `md.minimize.Minimizer`) as the first step of their own slot, so that loading
    costs no extra evaluation of the other slots; with another minimiser by one `init` call of every slot at the
    start of a chunk that loads any. `steps_done` counts minimiser steps (a fused start is not one),
    `evaluations` every energy + forces evaluation of every slot.
    """

    def __init__(self, force_fn, template, n_slots: int, fmax: float = 1e-3, max_steps: int = 3000,
                 chunk_steps: int = 50, minimizer="fire", **options):
        if n_slots < 1 or chunk_steps < 1 or max_steps < 1:
            raise ValueError(f"n_slots, chunk_steps and max_steps must be >= 1, got {n_slots}, {chunk_steps}, "
                             f"{max_steps}")
        if fmax <= 0:
            raise ValueError(f"fmax must be positive (eV/A), got {fmax}")
        self.n_slots, self.fmax, self.max_steps = int(n_slots), float(fmax), int(max_steps)
        if isinstance(minimizer, str):
            if minimizer not in MINIMIZERS:
                raise ValueError(f"minimizer must be one of {sorted(MINIMIZERS)} or a function, got {minimizer!r}")
            minimizer = MINIMIZERS[minimizer]
        pair = minimizer(force_fn, **options)
        init, step = pair
        vinit, vstep = jax.vmap(init), jax.vmap(step)
        # a minimiser with `fresh` (md.minimize.Minimizer: FIRE and L-BFGS) starts a slot inside the chunk: its first
        # step evaluates the new structure, the other slots step on; without it, every slot is evaluated once more
        vfresh = jax.vmap(pair.fresh) if getattr(pair, "fresh", None) is not None else None
        self.fused_start = vfresh is not None
        fmax_of = jax.vmap(lambda s: s.fmax)

        def advance(states, positions, fresh, active, thresholds):
            """(Re)start the fresh slots at `positions`, then one chunk; a slot stops moving once its largest force is
            below its threshold."""
            if vfresh is not None:  # no model call: the slots' first step of the chunk evaluates them
                restarted = jax.tree.map(lambda new, old: new.astype(old.dtype), vfresh(positions, states.aux), states)
                states = where_rows(fresh, restarted, states)
            else:  # one extra evaluation of every slot, skipped when no slot is fresh
                states = jax.lax.cond(jnp.any(fresh), lambda s: where_rows(fresh, vinit(positions, s.aux), s),
                                      lambda s: s, states)

            def body(s, _):
                frozen = ((fmax_of(s) < thresholds) & (s.step >= 0)) | ~active  # step -1: not evaluated yet
                return where_rows(frozen, s, vstep(s)), None

            states = jax.lax.scan(body, states, None, length=chunk_steps)[0]
            return states, fmax_of(states)

        # one compiled program holds both the initialisation of freshly loaded slots and the chunk of steps:
        # the model is compiled once per relaxer
        self._advance = jax.jit(advance, compiler_options=compiler_options())
        aux, dtype = getattr(force_fn, "aux", None), getattr(force_fn, "dtype", jnp.float32)
        template = jnp.asarray(np.asarray(template, dtype=np.float64), dtype)
        stacked = jnp.stack([template] * self.n_slots)
        aux_stacked = stack_states([aux] * self.n_slots)
        shapes = jax.eval_shape(vinit, stacked, aux_stacked)  # the state layout, without running the model
        # empty slots sit at the template (finite), not at blank zeros: they are evaluated with the busy ones
        self.states = dataclasses.replace(blank_like(shapes), aux=aux_stacked, positions=stacked)
        self._positions = np.array(stacked)  # positions waiting to be loaded into fresh slots (Angstrom)
        self._fresh = np.zeros(self.n_slots, bool)
        self.active = np.zeros(self.n_slots, bool)
        self.tags: list = [None] * self.n_slots
        # per-slot thresholds, float32 on both sides of the device/host boundary: the compiled chunk freezes a slot
        # exactly when run_chunk reports it converged (a slot frozen but not reported would never finish)
        self._thresholds = np.full(self.n_slots, self.fmax, np.float32)
        self.chunk_steps = int(chunk_steps)
        self.steps_done = 0  # minimiser steps summed over busy slots (the work done)
        self.evaluations = 0  # energy + forces evaluations computed, idle slots included (every slot runs each step)

    @property
    def n_free(self) -> int:
        """How many slots are free for `load`."""
        return int((~self.active).sum())

    def load(self, items, fmax: float | None = None):
        """Put (tag, positions (N, 3) Angstrom) items into free slots; returns how many were taken. The slots are
        initialised (one force call each) at the start of the next `run_chunk`. fmax: their convergence
        threshold (eV/A; default the relaxer's)."""
        if fmax is not None and not fmax > 0:
            raise ValueError(f"fmax must be positive (eV/A), got {fmax}")
        free = np.nonzero(~self.active)[0][: len(items)]
        for slot, (tag, pos) in zip(free, items):
            self._positions[slot] = pos
            self._thresholds[slot] = self.fmax if fmax is None else float(fmax)
            self._fresh[slot] = True
            self.tags[slot] = tag
            self.active[slot] = True
        return len(free)

    def run_chunk(self):
        """Advance busy slots one chunk; returns finished items [(tag, positions, energy eV, converged, steps)]."""
        before = np.where(self._fresh, 0, np.asarray(self.states.step))
        # Copies: on the CPU, JAX may use a NumPy argument's memory without copying it while the call runs
        # asynchronously, and these arrays are written right after (`_fresh` below, the others on the next load).
        self.evaluations += self.n_slots * (self.chunk_steps + int(self._fresh.any() and not self.fused_start))
        self.states, fmax = self._advance(self.states, np.array(self._positions), np.array(self._fresh),
                                          np.array(self.active), self._thresholds.copy())
        self._fresh[:] = False
        if overflowed(self.states.aux):
            raise RuntimeError("the neighbour list overflowed during relaxation; build the force function with a "
                               "larger capacity (for a small molecule: md.force_function(..., all_pairs=True))")
        fmax = np.asarray(fmax)
        steps = np.asarray(self.states.step)
        self.steps_done += int((steps - before)[self.active].sum())
        converged = self.active & (fmax < self._thresholds)
        given_up = self.active & ~converged & (steps >= self.max_steps)
        finished = []
        if (converged | given_up).any():
            positions, energies = np.asarray(self.states.positions), np.asarray(self.states.energy)
            for slot in np.nonzero(converged | given_up)[0]:
                finished.append((self.tags[slot], positions[slot].astype(np.float64), float(energies[slot]),
                                 bool(converged[slot]), int(steps[slot])))
                self.tags[slot] = None
            self.active &= ~(converged | given_up)
        return finished

    def in_flight(self) -> list:
        """[(tag, current positions (N, 3) Angstrom)] of the busy slots: unfinished work to save and reload."""
        positions = np.where(self._fresh[:, None, None], self._positions, np.asarray(self.states.positions, np.float64))
        return [(self.tags[slot], positions[slot]) for slot in np.nonzero(self.active)[0]]

    def relax_all(self, structures, progress: bool = False, desc: str = "relax"):
        """Relax a list of (N, 3) structures; returns (positions (M, N, 3), energies (M,) eV, converged (M,))."""
        from tqdm.auto import tqdm

        pending = collections.deque(enumerate(np.asarray(structures, dtype=np.float64)))
        n = len(pending)
        out_pos = np.zeros((n,) + np.shape(structures)[1:])
        out_e, out_ok = np.zeros(n), np.zeros(n, bool)
        with tqdm(total=n, desc=desc, disable=not progress, mininterval=1.0) as bar:
            while pending or self.active.any():
                take = [pending.popleft() for _ in range(min(self.n_free, len(pending)))]
                self.load(take)
                for tag, pos, energy, ok, _ in self.run_chunk():
                    out_pos[tag], out_e[tag], out_ok[tag] = pos, energy, ok
                    bar.update(1)
        return out_pos, out_e, out_ok





class ShardedRelaxer:
    """A `BatchRelaxer` whose slots are spread over the processes of a multi-process job
    (`so3krates_lab.distributed`), seen alike from every process: for explorations whose bookkeeping runs on every
    process in step (the same items loaded, the same results returned, in the same order, everywhere).

    One slot per tag owner: `owner(tag)` names the process whose local relaxer relaxes an item (minima hopping:
    walker w's quench runs on the process that owns walker w); `n_owned` is how many owners this process has
    (its local slots). `load` takes every item on every process, relaxes only this process's; `run_chunk`
    advances the local slots one chunk and returns the finished items of every process (a collective: every
    process calls it at the same point), process 0's first. `steps_done` and `evaluations` count the whole job,
    `steps_by_process` each process's share of the steps.
    Other arguments as `BatchRelaxer` (template: (N, 3) positions in Angstrom; fmax: eV/Å). A process with
    several devices splits its slots over them (`distributed.split_over_local_devices`).
    """

    def __init__(self, force_fn, template, n_owned: int, owner, fmax: float = 1e-3, max_steps: int = 3000,
                 chunk_steps: int = 50, minimizer="fire", **options):
        import jax as _jax

        from ..distributed import split_over_local_devices

        self.local = BatchRelaxer(force_fn, template, max(int(n_owned), 1), fmax, max_steps, chunk_steps, minimizer,
                                  **options)
        # a process with several devices spreads its slots over them
        self.local.states = split_over_local_devices(self.local.states, self.local.n_slots)
        self.owner, self.me, self.n_atoms = owner, _jax.process_index(), int(np.shape(template)[0])
        self.fmax, self.chunk_steps = self.local.fmax, self.local.chunk_steps
        self.steps_done = self.evaluations = 0
        self.steps_by_process: list[int] = []  # each process's minimiser steps (busy slots), after a run_chunk

    @property
    def n_free(self) -> int:
        """Items `load` takes now: every tag has its own slot, so as many as are given."""
        return 1 << 30

    def load(self, items, fmax: float | None = None):
        """Items (tag, positions (N, 3) Angstrom) on every process; this process's are loaded into its slots.
        fmax: their convergence threshold (eV/Å). Returns how many were taken (all)."""
        mine = [(tag, pos) for tag, pos in items if self.owner(tag) == self.me]
        if len(mine) > self.local.n_free:
            raise RuntimeError(f"process {self.me} was given {len(mine)} items for {self.local.n_free} free slots")
        self.local.load(mine, fmax=fmax)
        return len(items)

    def _gather(self, rows: list, counters=()):
        """Every process's rows [(tag (w, stage), positions, energy, converged, steps)] and counters, process 0's
        rows first (a collective)."""
        from jax.experimental import multihost_utils

        width = self.local.n_slots
        tags = np.full((width, 2), -1, np.int64)
        pos = np.zeros((width, self.n_atoms, 3))
        num = np.zeros((width, 3))
        for i, (tag, p, energy, ok, steps) in enumerate(rows):
            tags[i], pos[i], num[i] = tag, p, (energy, ok, steps)
        every = multihost_utils.process_allgather(
            {"tags": tags, "pos": pos, "num": num, "counters": np.asarray(counters, np.int64).reshape(-1)})
        out = []
        for proc in range(len(every["tags"])):
            for i in range(width):
                if every["tags"][proc][i][0] >= 0:
                    energy, ok, steps = every["num"][proc][i]
                    out.append((tuple(int(x) for x in every["tags"][proc][i]),
                                np.asarray(every["pos"][proc][i], np.float64), float(energy), bool(ok), int(steps)))
        return out, np.asarray(every["counters"])

    def run_chunk(self):
        """Advance this process's busy slots one chunk (none: nothing is computed); every process's finished
        items [(tag, positions, energy eV, converged, steps)], the same list on every process."""
        local = self.local.run_chunk() if self.local.active.any() else []
        finished, counters = self._gather(local, (self.local.steps_done, self.local.evaluations))
        self.steps_done, self.evaluations = (int(x) for x in counters.sum(0))
        self.steps_by_process = [int(x) for x in counters[:, 0]]
        return finished

    def in_flight(self) -> list:
        """[(tag, current positions (N, 3) Angstrom)] of every process's busy slots (a collective)."""
        rows = [(tag, pos, 0.0, False, 0) for tag, pos in self.local.in_flight()]
        return [(tag, pos) for tag, pos, *_ in self._gather(rows)[0]]


def relax(potential, systems, *, fmax: float = 1e-3, max_steps: int = 5000, minimizer="fire", n_slots: int = 8,
          progress: bool = False, **options):
    """Relax one System, or several of the same molecule, with `potential` until the largest atomic force is below
    fmax (eV/A). Returns (relaxed Systems (labelled with the final energy and forces), converged (M,) bool);
    for a single System, (System, bool). options: the minimiser's keyword arguments (e.g. max_step)."""
    from ..structures import System
    from .forces import force_function

    single = isinstance(systems, System)
    systems = [systems] if single else list(systems)
    first = systems[0]
    if any(s.n_atoms != first.n_atoms or not np.array_equal(s.numbers, first.numbers) for s in systems):
        raise ValueError("relax needs structures of one molecule (same atoms in the same order)")
    ff = force_function(potential, first)
    relaxer = BatchRelaxer(ff, first.positions, min(n_slots, len(systems)), fmax, max_steps, minimizer=minimizer,
                           **options)
    positions, energies, converged = relaxer.relax_all([s.positions for s in systems], progress=progress)
    fn = jax.jit(ff.fn)
    out = []
    for s, p, e in zip(systems, positions, energies):
        _, forces, _ = fn(jnp.asarray(p, ff.dtype), ff.aux)
        out.append(s.replace(positions=p, energy=float(e), forces=np.asarray(forces, np.float64)))
    return (out[0], bool(converged[0])) if single else (out, converged)
__all__ = ["BatchRelaxer", "MINIMIZERS", "relax"]
