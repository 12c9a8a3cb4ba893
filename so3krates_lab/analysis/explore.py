"""Minima exploration: hot Langevin replicas, frames taken at intervals, every frame quenched with batched FIRE or
L-BFGS, the minima deduplicated into a `MinimaDatabase` and the sequence of minima recorded per trajectory.

The energy arrives as an MD force function `force_fn(positions, aux) -> (energy eV, forces eV/A, aux)` (e.g.
`so3krates_lab.md.model_force_fn(...)`, or an analytic potential with aux=None); nothing here imports the model.

`BatchRelaxer` relaxes a stream of structures with continuous batching: a fixed number of slots advance together
(vmap) in compiled chunks of minimiser steps; between chunks, converged slots hand their minimum back and are refilled
with new frames at once (initialised inside the next compiled chunk), so a batch never waits for its slowest
member (which `md.relax_batch` does).
"""

from __future__ import annotations

import collections
import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ..autodiff import compiler_options
from ..md import fire, langevin_baoab, lbfgs, masses_of, maxwell_boltzmann, stack_states, where_rows
from .alignment import bond_graph
from .minima import MinimaDatabase, load_minima, minima_graph, save_minima


def _blank(shapes):
    """Arrays of the given shapes (`jax.eval_shape` output): zeros, and valid PRNG keys for key leaves."""
    def leaf(x):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            keys = jax.random.split(jax.random.key(0), max(int(np.prod(x.shape)), 1))
            return keys.reshape(x.shape)
        return jnp.zeros(x.shape, x.dtype)

    return jax.tree.map(leaf, shapes)


def _check_overflow(aux, where: str):
    if aux is not None and hasattr(aux, "overflow") and bool(np.any(np.asarray(aux.overflow))):
        raise RuntimeError(f"the neighbour list overflowed during {where}; build the force function with a larger "
                           "capacity (for a small molecule: capacity = N (N - 1) / 2, every pair)")


MINIMIZERS = {"fire": fire, "lbfgs": lbfgs}
MAX_FAILED_MD_ROUNDS = 20  # explore_minima gives up when no replica survives this many MD rounds in a row


class BatchRelaxer:
    """A minimiser (FIRE or L-BFGS from `md.minimize`) on `n_slots` structures at once with continuous refilling.

    force_fn, aux: the force function and one structure's aux (None for analytic potentials); every slot starts
    with a copy. template: (N, 3) positions (Angstrom) of one structure (it fixes the shape of a slot). fmax:
    convergence threshold on the largest atomic force (eV/A). max_steps: minimiser steps after which a slot is
    given up (reported as not converged). chunk_steps: steps per compiled call. minimizer: "fire", "lbfgs" or any
    function force_fn -> (init, step) whose states are dataclasses (e.g. flax structs) with positions, energy,
    step, aux and a `fmax` property; options: its keyword arguments. Freshly loaded slots are initialised inside
    the same compiled call as the chunk, so the model is compiled once.
    """

    def __init__(self, force_fn, aux, template, n_slots: int, fmax: float = 1e-3, max_steps: int = 3000,
                 chunk_steps: int = 50, dtype=jnp.float32, minimizer="fire", **options):
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
        init, step = minimizer(force_fn, **options)
        vinit, vstep = jax.vmap(init), jax.vmap(step)
        fmax_of = jax.vmap(lambda s: s.fmax)

        def advance(states, positions, fresh, active):
            """(Re)initialise the fresh slots at `positions` (skipped when there are none), then one chunk."""
            states = jax.lax.cond(jnp.any(fresh), lambda s: where_rows(fresh, vinit(positions, s.aux), s),
                                  lambda s: s, states)

            def body(s, _):
                frozen = (fmax_of(s) < fmax) | ~active
                return where_rows(frozen, s, vstep(s)), None

            states = jax.lax.scan(body, states, None, length=chunk_steps)[0]
            return states, fmax_of(states)

        # one compiled program holds both the initialisation of freshly loaded slots and the chunk of steps:
        # the model is compiled once per relaxer
        self._advance = jax.jit(advance, compiler_options=compiler_options())
        template = jnp.asarray(np.asarray(template, dtype=np.float64), dtype)
        stacked = jnp.stack([template] * self.n_slots)
        aux_stacked = stack_states([aux] * self.n_slots)
        shapes = jax.eval_shape(vinit, stacked, aux_stacked)  # the state layout, without running the model
        self.states = dataclasses.replace(_blank(shapes), aux=aux_stacked)
        self._positions = np.array(stacked)  # positions waiting to be loaded into fresh slots (Angstrom)
        self._fresh = np.zeros(self.n_slots, bool)
        self.active = np.zeros(self.n_slots, bool)
        self.tags: list = [None] * self.n_slots
        self.steps_done = 0  # minimiser steps summed over busy slots (the work done)

    @property
    def n_free(self) -> int:
        return int((~self.active).sum())

    def load(self, items):
        """Put (tag, positions (N, 3) Angstrom) items into free slots; returns how many were taken. The slots are
        initialised (one force call each) at the start of the next `run_chunk`."""
        free = np.nonzero(~self.active)[0][: len(items)]
        for slot, (tag, pos) in zip(free, items):
            self._positions[slot] = pos
            self._fresh[slot] = True
            self.tags[slot] = tag
            self.active[slot] = True
        return len(free)

    def run_chunk(self):
        """Advance busy slots one chunk; returns finished items [(tag, positions, energy eV, converged, steps)]."""
        before = np.where(self._fresh, 0, np.asarray(self.states.step))
        # Copies: on the CPU, JAX may use a NumPy argument's memory without copying it while the call runs
        # asynchronously, and these arrays are written right after (`_fresh` below, the others on the next load).
        self.states, fmax = self._advance(self.states, np.array(self._positions), np.array(self._fresh),
                                          np.array(self.active))
        self._fresh[:] = False
        _check_overflow(self.states.aux, "relaxation")
        fmax = np.asarray(fmax)
        steps = np.asarray(self.states.step)
        self.steps_done += int((steps - before)[self.active].sum())
        converged = self.active & (fmax < self.fmax)
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


@dataclasses.dataclass
class Exploration:
    """The result of `explore_minima`. sequences: {replica label: [(frame index, minimum index)]}; history: rows
    (wall seconds, unique minima, quenched frames) after each chunk; stats: counts of frames sampled, quenches
    converged / not converged, minima rejected because the bond graph changed (a rearranged molecule)."""

    database: MinimaDatabase
    sequences: dict
    history: list
    stats: dict

    @property
    def graph(self):
        """The minima graph (networkx), see `minima.minima_graph`."""
        return minima_graph(self.database, self.sequences)


def explore_minima(force_fn, aux, numbers, positions, *, n_replicas: int = 8, temperature_K: float = 500.0,
                   timestep_fs: float = 0.5, friction_per_fs: float = 0.01, sample_every_fs: float = 50.0,
                   n_slots: int | None = None, fmax: float = 1e-3, max_relax_steps: int = 3000,
                   chunk_steps: int = 50, minimizer="fire", energy_tol: float = 0.01, rmsd_tol: float = 0.1,
                   minutes: float | None = None, max_frames: int | None = None, checkpoint=None,
                   save_every_s: float = 60.0, seed: int = 0, dtype=jnp.float32, progress: bool = True,
                   starts=None, restart_every: int | None = None, minimizer_options: dict | None = None
                   ) -> Exploration:
    """Explore the minima of one molecule and return an `Exploration` (database, sequences, history, stats).

    force_fn(positions, aux) -> (energy eV, forces eV/A, aux), aux for one structure (None for analytic
    potentials); numbers (N,), positions (N, 3) Angstrom: the start geometry, which also defines the bond graph
    (minima whose covalent bond graph differs are counted as rearranged and dropped; their replica restarts
    from a start geometry). n_replicas Langevin replicas at temperature_K (timestep fs, friction 1/fs) each
    give one frame every sample_every_fs; frames are quenched with `minimizer` ("fire" or "lbfgs", see
    `BatchRelaxer`; minimizer_options: its keyword arguments, e.g. {"memory": 30}) to fmax (eV/A) in n_slots
    slots (default 4 x n_replicas). A replica whose MD produces non-finite positions also restarts from a start
    geometry (counted in stats["md_resets"]). Stops after `minutes` of wall time (compilation included) or
    `max_frames` quenched frames (at least one must be given). checkpoint: a path; progress is saved there
    (`save_minima`) every save_every_s and at the end, and a later call with the same path resumes: the
    database, sequences, counters and the unfinished frames (in the relaxer, from their partly relaxed
    positions, or still queued) are loaded, and every replica restarts from its last sampled frame with new
    thermal velocities after a one-frame gap in its numbering (no
    transition is counted across a restart). Frames sampled after the last save of a killed run are lost.

    Sampling diversity (a replica at 500-600 K stays in one backbone basin for picoseconds):
    starts: optional (K, N, 3) Angstrom start geometries with the same bond graph as `positions` (e.g. frames of
    the training data at different temperatures); replica r starts from starts[r % K] and a replica restarted
    after a rearrangement or non-finite MD takes a random one of them. Default: `positions` only.
    restart_every: after this many sampled frames since its last start, a replica restarts from a minimum drawn
    uniformly from the unique minima found so far (from `starts` while there are none), with fresh thermal
    velocities: a cheap way to spread the sampling over the growing graph. Every restart leaves a gap in the
    replica's frame numbering, so no graph edge is ever drawn across it.
    """
    if minutes is None and max_frames is None:
        raise ValueError("give a time budget (minutes=...) or a frame budget (max_frames=...)")
    numbers = np.asarray(numbers)
    start = np.asarray(positions, dtype=np.float64)
    if start.shape != (len(numbers), 3):
        raise ValueError(f"positions: expected shape ({len(numbers)}, 3), got {start.shape}")
    if n_replicas < 1 or sample_every_fs < timestep_fs:
        raise ValueError(f"need n_replicas >= 1 and sample_every_fs >= timestep_fs, got {n_replicas}, "
                         f"{sample_every_fs}, {timestep_fs}")
    reference_bonds = bond_graph(numbers, start)
    pool = start[None] if starts is None else np.asarray(starts, dtype=np.float64)
    if pool.ndim != 3 or pool.shape[1:] != start.shape or len(pool) == 0:
        raise ValueError(f"starts: expected shape (K, {len(numbers)}, 3) with K >= 1, got {pool.shape}")
    for k, geometry in enumerate(pool):
        if not np.array_equal(bond_graph(numbers, geometry), reference_bonds):
            raise ValueError(f"starts[{k}] has a different covalent bond graph from positions (another molecule or "
                             "a broken bond); every start must be the same molecule")
    if restart_every is not None and restart_every < 1:
        raise ValueError(f"restart_every must be >= 1 frame (or None), got {restart_every}")
    stride = int(round(sample_every_fs / timestep_fs))
    labels = [str(r) for r in range(n_replicas)]

    db = MinimaDatabase(numbers, start, energy_tol=energy_tol, rmsd_tol=rmsd_tol)
    sequences = {label: [] for label in labels}
    stats = {"frames": 0, "converged": 0, "not_converged": 0, "rearranged": 0, "md_resets": 0, "relax_steps": 0,
             "restarts": 0, "elapsed_s": 0.0, "minimum_restarts": 0}
    history: list = []
    pending: list = []
    replica_positions = np.stack([pool[r % len(pool)] for r in range(n_replicas)])
    next_frame = np.zeros(n_replicas, np.int64)
    since_start = np.zeros(n_replicas, np.int64)  # frames sampled since each replica's last (re)start
    checkpoint = None if checkpoint is None else Path(checkpoint)
    if checkpoint is not None and checkpoint.with_suffix(".json").exists():
        db, loaded, _, extra = load_minima(checkpoint)
        if len(extra.get("replica_positions", [])) != n_replicas or not np.array_equal(db.numbers, numbers):
            raise ValueError(f"{checkpoint} was written for another molecule or replica count; use a new path")
        sequences = {label: loaded.get(label, []) for label in labels}
        stats, history = extra["stats"], extra["history"]
        replica_positions = np.asarray(extra["replica_positions"])
        next_frame = np.asarray(extra["next_frame"], np.int64) + 1  # a gap: no transition across the restart
        pending = [((int(r), int(f)), np.asarray(p)) for r, f, p in extra.get("pending", [])]
        since_start = np.asarray(extra.get("since_start", [0] * n_replicas), np.int64)
        stats.setdefault("minimum_restarts", 0)
        if minutes is not None and stats["elapsed_s"] >= 60.0 * minutes:
            return Exploration(db, sequences, history, stats)  # the budget is spent: nothing to compile or run
        stats["restarts"] += 1

    masses = masses_of(numbers)
    md_init, md_step = langevin_baoab(force_fn, timestep_fs, temperature_K, friction_per_fs)
    base_seed = seed + 1000 * stats["restarts"]

    t0 = time.perf_counter() - stats["elapsed_s"]  # the wall time includes every compilation
    rng = np.random.default_rng(base_seed)
    md_positions = np.array(replica_positions, dtype=np.float64)  # (re)starts waiting for the next MD round
    md_velocities = np.zeros_like(md_positions)
    md_keys = np.zeros((n_replicas,) + jax.random.key_data(jax.random.key(0)).shape, np.uint32)
    md_fresh = np.zeros(n_replicas, bool)

    def prepare(r, pos):
        """Replica r restarts at pos with thermal velocities in the next MD round; seeds differ per replica,
        restart and frame."""
        seed_r = base_seed + 7919 * r + int(next_frame[r])
        md_positions[r] = pos
        md_velocities[r] = maxwell_boltzmann(masses, temperature_K, seed=seed_r, positions=pos)
        md_keys[r] = np.asarray(jax.random.key_data(jax.random.key(seed_r)))
        md_fresh[r] = True

    def md_init_all(positions, velocities, keys, aux_stacked):
        return jax.vmap(lambda p, v, k, a: md_init(p, v, masses, key=jax.random.wrap_key_data(k), aux=a))(
            positions, velocities, keys, aux_stacked)

    def md_round(states, positions, velocities, keys, fresh):
        """(Re)initialise the fresh replicas (skipped when there are none), then sample_every_fs of MD."""
        states = jax.lax.cond(jnp.any(fresh), lambda s: where_rows(fresh, md_init_all(
            positions.astype(dtype), velocities.astype(dtype), keys, s.aux), s), lambda s: s, states)
        return jax.lax.scan(lambda s, _: (jax.vmap(md_step)(s), None), states, None, length=stride)[0]

    md_round = jax.jit(md_round, compiler_options=compiler_options())  # one compilation holds init and steps
    aux_stacked = stack_states([aux] * n_replicas)
    md_states = dataclasses.replace(_blank(jax.eval_shape(
        md_init_all, jnp.asarray(md_positions, dtype), jnp.asarray(md_velocities, dtype), md_keys, aux_stacked)),
        aux=aux_stacked)
    for r in range(n_replicas):
        prepare(r, replica_positions[r])

    relaxer = BatchRelaxer(force_fn, aux, start, n_slots or 4 * n_replicas, fmax, max_relax_steps, chunk_steps,
                           dtype, minimizer, **(minimizer_options or {}))
    queue: collections.deque = collections.deque(pending)  # frames sampled but not yet quenched
    reset: dict = {}  # replica -> "start" (a random start geometry) or "minimum" (a random known minimum)

    def restart_geometry(kind: str) -> np.ndarray:
        if kind == "minimum" and len(db):
            stats["minimum_restarts"] += 1
            return db.positions[rng.integers(len(db))]
        return pool[rng.integers(len(pool))]

    last_save = time.perf_counter()
    failed_rounds = 0  # MD rounds in a row in which no replica stayed finite

    def save():
        stats["elapsed_s"] = time.perf_counter() - t0
        unfinished = [[r, f, p.tolist()] for (r, f), p in relaxer.in_flight() + list(queue)]
        extra = {"stats": stats, "history": history, "replica_positions": replica_positions.tolist(),
                 "pending": unfinished,
                 "next_frame": next_frame.tolist(), "since_start": since_start.tolist(), "settings": {
                     "temperature_K": temperature_K, "timestep_fs": timestep_fs, "sample_every_fs": sample_every_fs,
                     "n_replicas": n_replicas, "fmax": fmax, "friction_per_fs": friction_per_fs,
                     "minimizer": minimizer if isinstance(minimizer, str) else getattr(minimizer, "__name__", "?"),
                     "n_starts": len(pool), "restart_every": restart_every,
                     "minimizer_options": minimizer_options or {}}}
        save_minima(checkpoint, db, sequences, extra)

    from tqdm.auto import tqdm

    steps_before = stats["relax_steps"]

    def out_of_time():
        return minutes is not None and time.perf_counter() - t0 > 60.0 * minutes

    with tqdm(total=max_frames, desc="minima", unit="frame", disable=not progress, mininterval=1.0,
              initial=stats["converged"] + stats["not_converged"] + stats["rearranged"]) as bar:
        while not out_of_time():
            sampling = max_frames is None or stats["frames"] < max_frames
            if not (sampling or queue or relaxer.active.any()):
                break  # frame budget reached and every sampled frame quenched
            while len(queue) < relaxer.n_free and (max_frames is None or stats["frames"] < max_frames):
                for r, kind in reset.items():  # restart; the frame gap keeps the old chain apart
                    next_frame[r] += 1
                    since_start[r] = 0
                    prepare(r, restart_geometry(kind))
                reset.clear()
                # Copies, never the arrays themselves: on the CPU, JAX uses a suitably aligned NumPy argument's
                # memory without copying it while the call runs asynchronously, and md_fresh is cleared (the
                # others refilled) right after. Passing md_fresh itself lost the re-initialisation in runs where
                # its buffer happened to be aligned: every replica then ran MD from the blank all-zero state,
                # went NaN and was reset, round after round (the intermittent notebook 05 hang).
                md_states = md_round(md_states, md_positions.copy(), md_velocities.copy(), md_keys.copy(),
                                     md_fresh.copy())
                md_fresh[:] = False
                _check_overflow(md_states.aux, "MD")
                replica_positions = np.asarray(md_states.positions, np.float64)
                finite = np.isfinite(replica_positions).all(axis=(1, 2))
                failed_rounds = 0 if finite.any() else failed_rounds + 1
                if failed_rounds >= MAX_FAILED_MD_ROUNDS:
                    raise RuntimeError(f"the MD of every replica went non-finite in {failed_rounds} rounds in a row "
                                       f"(each restarted from a start geometry with new velocities): the model "
                                       f"is unstable at {temperature_K:g} K with a {timestep_fs:g} fs time step; "
                                       "lower the temperature or the time step")
                for r in range(n_replicas):
                    if not finite[r]:
                        stats["md_resets"] += 1
                        reset[r] = "start"
                        continue
                    queue.append(((r, int(next_frame[r])), replica_positions[r]))
                    next_frame[r] += 1
                    since_start[r] += 1
                    stats["frames"] += 1
                    if restart_every is not None and since_start[r] >= restart_every:
                        reset.setdefault(r, "minimum")
            relaxer.load([queue.popleft() for _ in range(min(relaxer.n_free, len(queue)))])
            for (r, frame), pos, energy, ok, _ in relaxer.run_chunk():
                bar.update(1)
                if not ok:
                    stats["not_converged"] += 1
                    continue
                if not np.array_equal(bond_graph(numbers, pos), reference_bonds):
                    stats["rearranged"] += 1
                    reset[r] = "start"
                    continue
                stats["converged"] += 1
                k, _ = db.add(pos, energy, trajectory=labels[r])
                sequences[labels[r]].append((frame, k))
            stats["relax_steps"] = steps_before + relaxer.steps_done
            history.append((time.perf_counter() - t0, len(db), stats["converged"] + stats["not_converged"]
                            + stats["rearranged"]))
            bar.set_postfix(unique=len(db), not_conv=stats["not_converged"], refresh=False)
            if checkpoint is not None and time.perf_counter() - last_save > save_every_s:
                save()
                last_save = time.perf_counter()
    stats["elapsed_s"] = time.perf_counter() - t0
    if checkpoint is not None:
        save()
    return Exploration(db, sequences, history, stats)
