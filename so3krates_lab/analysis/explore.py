"""Minima exploration: hot Langevin replicas, frames taken at intervals, every frame quenched with batched FIRE or
L-BFGS, the minima deduplicated into a `MinimaDatabase` and the sequence of minima recorded per trajectory.

    exploration = explore_minima(potential, system, minutes=10)

The replicas run on the MD driver (`md.Simulation`, restartable replicas), the quenches in `md.BatchRelaxer`;
the potential is anything following the potential protocol; nothing here imports the model.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from pathlib import Path

import numpy as np

from ..md import (
    BatchRelaxer, Simulation, degrees_of_freedom, force_function, langevin_baoab, masses_of, maxwell_boltzmann,
)
from ..md.watchdogs import Watchdogs
from ..fileio import holds_writer_lock
from ..interrupts import deferred_interrupts, guarded
from ..memory import ensure_tuned
from ..structures import System
from .alignment import bond_graph
from .minima import MinimaDatabase, load_minima, minima_graph, save_minima


MAX_FAILED_MD_ROUNDS = 20  # explore_minima gives up when no replica survives this many MD rounds in a row
PRESCREEN, FINAL = 1, 2  # the stages of a two-stage quench (explore_minima's prescreen_fmax)


@dataclasses.dataclass
class Exploration:
    """The result of `explore_minima` or `hop_minima`. sequences: {replica label: [(frame index, minimum index)]};
    history: rows (wall seconds, unique minima, quenched frames or hops, evaluations) after each chunk; stats: counts of frames sampled, quenches
    converged / not converged, minima rejected because the bond graph changed (a rearranged molecule), and the
    energy + forces evaluations computed: "md_evaluations" (every replica, every MD step), "relax_evaluations"
    (every minimiser slot, busy or idle, every step), "evaluations" their sum; "relax_steps" counts the busy
    slots' minimiser steps only; "prescreen_matches" the quenches settled by the loose first stage."""

    database: MinimaDatabase
    sequences: dict
    history: list
    stats: dict

    @property
    def evaluations_per_minimum(self) -> float:
        """Energy + forces evaluations computed (MD and minimiser, see `stats`) per unique minimum found."""
        return self.stats.get("evaluations", 0) / max(len(self.database), 1)

    @property
    def graph(self):
        """The minima graph (networkx), see `minima.minima_graph`."""
        return minima_graph(self.database, self.sequences)


# one exploration per checkpoint: another process on the same path gets StoreBusyError (lock <checkpoint>.lock)
@holds_writer_lock("checkpoint", lambda path: path.with_suffix(""))
@guarded  # a Ctrl-C during set-up and compilation is kept for the loop, which stops at once
def explore_minima(potential, system: System, *, n_replicas: int = 8, temperature_K: float = 500.0,
                   timestep_fs: float = 0.5, friction_per_fs: float = 0.01, sample_every_fs: float = 50.0,
                   n_slots: int | None = None, fmax: float = 1e-3, max_relax_steps: int = 3000,
                   chunk_steps: int = 50, minimizer="fire", energy_tol: float = 0.01, rmsd_tol: float = 0.1,
                   minutes: float | None = None, max_frames: int | None = None, checkpoint=None,
                   save_every_s: float = 60.0, seed: int = 0, progress: bool = True,
                   starts=None, restart_every: int | None = None, minimizer_options: dict | None = None,
                   all_pairs: bool | None = None, prescreen_fmax: float | None = None) -> Exploration:
    """Explore the minima of one molecule and return an `Exploration` (database, sequences, history, stats).

    potential: anything following the potential protocol (cutoff, dtype, energy(graph)); system: the molecule and
    its start geometry (free, not periodic), which also defines the bond graph
    (minima whose covalent bond graph differs are counted as rearranged and dropped; their replica restarts
    from a start geometry). n_replicas Langevin replicas at temperature_K (timestep fs, friction 1/fs) each
    give one frame every sample_every_fs; frames are quenched with `minimizer` ("fire" or "lbfgs", see
    `BatchRelaxer`; minimizer_options: its keyword arguments, e.g. {"memory": 30}) to fmax (eV/A) in n_slots
    slots (default 4 x n_replicas). energy_tol (eV), rmsd_tol (Angstrom): the `MinimaDatabase` tolerances that
    tell two minima apart. A replica whose MD produces non-finite positions also restarts from a start
    geometry (counted in stats["md_resets"]). Stops after `minutes` of wall time (compilation included) or
    `max_frames` quenched frames (at least one must be given). checkpoint: a path; progress is saved there
    (`save_minima`) every save_every_s and at the end, and a later call with the same path resumes: the
    database, sequences, counters and the unfinished frames (in the relaxer, from their partly relaxed
    positions, or still queued) are loaded, and every replica restarts from its last sampled frame with new
    thermal velocities after a one-frame gap in its numbering (no
    transition is counted across a restart). Frames sampled after the last save of a killed run are lost.
    Ctrl-C or SIGTERM lets the MD or minimiser chunk in progress finish, saves the checkpoint and returns
    (stats["interrupted"] names the signal); nothing sampled is lost.

    Sampling diversity (a replica at 500-600 K stays in one backbone basin for picoseconds):
    starts: optional (K, N, 3) Angstrom start geometries with the same bond graph as `positions` (e.g. frames of
    the training data at different temperatures); replica r starts from starts[r % K] and a replica restarted
    after a rearrangement or non-finite MD takes a random one of them. Default: `positions` only.
    restart_every: after this many sampled frames since its last start, a replica restarts from a minimum drawn
    uniformly from the unique minima found so far (from `starts` while there are none), with fresh thermal
    velocities: a cheap way to spread the sampling over the growing graph. Every restart leaves a gap in the
    replica's frame numbering, so no graph edge is ever drawn across it.

    prescreen_fmax: a two-stage quench (eV/A, above fmax, e.g. 0.01): every frame is first relaxed only to
    this loose threshold and compared with the database (its energy and RMSD tolerances); a match counts as a
    visit of that known minimum at once, and only frames that match nothing are relaxed on to fmax and added. It
    saves the tight tail of the quenches that end in known minima (most of them, late in an exploration). Too
    loose a threshold settles nothing: on a flat landscape (a peptide at 0.05 eV/A) a structure is still far
    from its minimum (`prescreen_distances` measures how far; `benchmarks/minima.py --compare-prescreen K`).
    """
    ensure_tuned()
    if minutes is None and max_frames is None:
        raise ValueError("give a time budget (minutes=...) or a frame budget (max_frames=...)")
    if not isinstance(system, System):
        raise TypeError(f"system must be a so3krates_lab.System, got {type(system).__name__}")
    if system.periodic:
        raise ValueError("explore_minima is for free molecules; the system is periodic")
    numbers = system.numbers
    start = np.asarray(system.positions, dtype=np.float64)
    if n_replicas < 1 or sample_every_fs < timestep_fs:
        raise ValueError(f"need n_replicas >= 1 and sample_every_fs >= timestep_fs, got {n_replicas}, "
                         f"{sample_every_fs}, {timestep_fs}")
    reference_bonds, pool = start_pool(numbers, start, starts)
    if prescreen_fmax is not None and not prescreen_fmax > fmax:
        raise ValueError(f"prescreen_fmax must be above fmax ({fmax:g} eV/A) or None, got {prescreen_fmax}")
    if restart_every is not None and restart_every < 1:
        raise ValueError(f"restart_every must be >= 1 frame (or None), got {restart_every}")
    stride = int(round(sample_every_fs / timestep_fs))
    labels = [str(r) for r in range(n_replicas)]

    db = MinimaDatabase(numbers, start, energy_tol=energy_tol, rmsd_tol=rmsd_tol)
    sequences = {label: [] for label in labels}
    stats = {"frames": 0, "converged": 0, "not_converged": 0, "rearranged": 0, "md_resets": 0, "relax_steps": 0,
             "restarts": 0, "elapsed_s": 0.0, "minimum_restarts": 0, "md_evaluations": 0, "relax_evaluations": 0,
             "evaluations": 0, "prescreen_matches": 0}
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
        for key in ("minimum_restarts", "md_evaluations", "relax_evaluations", "evaluations", "prescreen_matches"):
            stats.setdefault(key, 0)  # checkpoints written before these counters existed
        if minutes is not None and stats["elapsed_s"] >= 60.0 * minutes:
            return Exploration(db, sequences, history, stats)  # the budget is spent: nothing to compile or run
        stats["restarts"] += 1

    masses = masses_of(numbers)
    force_fn = force_function(potential, system, all_pairs=all_pairs)
    base_seed = seed + 1000 * stats["restarts"]

    t0 = time.perf_counter() - stats["elapsed_s"]  # the wall time includes every compilation
    rng = np.random.default_rng(base_seed)
    # One frame per chunk: a chunk is sample_every_fs of MD. Only non-finite values stop a replica (it is then
    # restarted from a start geometry); hot MD may pass through close contacts.
    sim = Simulation(langevin_baoab(force_fn, timestep_fs, temperature_K, friction_per_fs), None,
                     dof=degrees_of_freedom(len(numbers)), record_every=stride, chunk_steps=stride,
                     watchdogs=Watchdogs.finite_only(), numbers=numbers, restartable=True,
                     n_replicas=n_replicas, masses=masses, template=start, progress_label="minima MD")

    def prepare(r, pos):
        """Replica r restarts at pos with thermal velocities in the next MD round; seeds differ per replica,
        restart and frame."""
        seed_r = base_seed + 7919 * r + int(next_frame[r])
        velocities = maxwell_boltzmann(masses, temperature_K, seed=seed_r, positions=pos)
        sim.restart([r], [pos], [velocities], [seed_r])

    for r in range(n_replicas):
        prepare(r, replica_positions[r])

    relaxer = BatchRelaxer(force_fn, start, n_slots or 4 * n_replicas, fmax, max_relax_steps, chunk_steps,
                           minimizer, **(minimizer_options or {}))
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
        # frames in the relaxer (tags ((r, f), stage)) and queued ones ((r, f)) are saved alike: a resumed
        # exploration quenches them again from their current positions, from the first stage
        in_flight = [(tag, p) for (tag, _), p in relaxer.in_flight()]
        unfinished = [[r, f, p.tolist()] for (r, f), p in in_flight + list(queue)]
        extra = {"stats": stats, "history": history, "replica_positions": replica_positions.tolist(),
                 "pending": unfinished,
                 "next_frame": next_frame.tolist(), "since_start": since_start.tolist(), "settings": {
                     "temperature_K": temperature_K, "timestep_fs": timestep_fs, "sample_every_fs": sample_every_fs,
                     "n_replicas": n_replicas, "fmax": fmax, "friction_per_fs": friction_per_fs,
                     "minimizer": minimizer if isinstance(minimizer, str) else getattr(minimizer, "__name__", "?"),
                     "n_starts": len(pool), "restart_every": restart_every,
                     "minimizer_options": minimizer_options or {}, "prescreen_fmax": prescreen_fmax}}
        save_minima(checkpoint, db, sequences, extra)

    from tqdm.auto import tqdm

    steps_before, relax_evaluations_before = stats["relax_steps"], stats["relax_evaluations"]

    def out_of_time():
        return minutes is not None and time.perf_counter() - t0 > 60.0 * minutes

    # Ctrl-C / SIGTERM: the MD chunk or minimiser chunk in progress finishes, then everything is saved and the
    # exploration returns (stats["interrupted"]); a later call with the same checkpoint resumes.
    stats.pop("interrupted", None)
    with tqdm(total=max_frames, desc="minima", unit="frame", disable=not progress, mininterval=1.0,
              initial=stats["converged"] + stats["not_converged"] + stats["rearranged"]) as bar, \
            deferred_interrupts() as interrupt:
        while not out_of_time() and not interrupt.requested:
            sampling = max_frames is None or stats["frames"] < max_frames
            if not (sampling or queue or relaxer.active.any()):
                break  # frame budget reached and every sampled frame quenched
            while len(queue) < relaxer.n_free and (max_frames is None or stats["frames"] < max_frames) \
                    and not interrupt.requested:
                for r, kind in reset.items():  # restart; the frame gap keeps the old chain apart
                    next_frame[r] += 1
                    since_start[r] = 0
                    prepare(r, restart_geometry(kind))
                reset.clear()
                sim.run(stride, progress=False)  # the driver copies its arrays before each compiled call
                stats["md_evaluations"] += stride * n_replicas  # every replica is evaluated at every step
                replica_positions = np.asarray(sim.state.positions, np.float64)
                finite = sim.active.copy()  # a replica whose MD went non-finite was stopped by its watchdog
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
            if interrupt.requested:
                break  # the sampled frames wait in the queue, which is saved
            first_stage = FINAL if prescreen_fmax is None else PRESCREEN
            relaxer.load([((tag, first_stage), pos) for tag, pos in
                          (queue.popleft() for _ in range(min(relaxer.n_free, len(queue))))],
                         fmax=prescreen_fmax)
            refine = []
            for ((r, frame), stage), pos, energy, ok, _ in relaxer.run_chunk():
                if not ok:
                    bar.update(1)
                    stats["not_converged"] += 1
                    continue
                if stage == PRESCREEN:
                    known = db.find(pos, energy)
                    if known is None:
                        refine.append((((r, frame), FINAL), pos))  # new: relax on to fmax
                        continue
                    bar.update(1)
                    stats["converged"] += 1
                    stats["prescreen_matches"] += 1
                    db.revisit(known, trajectory=labels[r])
                    sequences[labels[r]].append((frame, known))
                    continue
                bar.update(1)
                if not np.array_equal(bond_graph(numbers, pos), reference_bonds):
                    stats["rearranged"] += 1
                    reset[r] = "start"
                    continue
                stats["converged"] += 1
                k, _ = db.add(pos, energy, trajectory=labels[r])
                sequences[labels[r]].append((frame, k))
            relaxer.load(refine)  # slots were freed by these very frames, so every one finds a slot
            tally(stats, relaxer, steps_before, relax_evaluations_before)
            history.append((time.perf_counter() - t0, len(db), stats["converged"] + stats["not_converged"]
                            + stats["rearranged"], stats["evaluations"]))
            bar.set_postfix(unique=len(db), not_conv=stats["not_converged"], refresh=False)
            if checkpoint is not None and time.perf_counter() - last_save > save_every_s:
                save()
                last_save = time.perf_counter()
    return finish(Exploration(db, sequences, history, stats), t0, interrupt, save if checkpoint is not None else None)


def start_pool(numbers, start: np.ndarray, starts) -> tuple[np.ndarray, np.ndarray]:
    """(bond graph of `start`, start geometries (K, N, 3) Angstrom): `starts` checked to be the same molecule as
    `start` (the same covalent bond graph), or `start` alone when starts is None."""
    reference_bonds = bond_graph(numbers, start)
    pool = start[None] if starts is None else np.asarray(starts, dtype=np.float64)
    if pool.ndim != 3 or pool.shape[1:] != start.shape or len(pool) == 0:
        raise ValueError(f"starts: expected shape (K, {len(numbers)}, 3) with K >= 1, got {pool.shape}")
    for k, geometry in enumerate(pool):
        if not np.array_equal(bond_graph(numbers, geometry), reference_bonds):
            raise ValueError(f"starts[{k}] has a different covalent bond graph from positions (another molecule or "
                             "a broken bond); every start must be the same molecule")
    return reference_bonds, pool


def tally(stats: dict, relaxer: BatchRelaxer, steps_before: int, evaluations_before: int) -> None:
    """Update an exploration's minimiser counters from `relaxer`'s totals in this call (the counts of earlier,
    checkpointed calls are steps_before and evaluations_before) and the evaluations overall."""
    stats["relax_steps"] = steps_before + relaxer.steps_done
    stats["relax_evaluations"] = evaluations_before + relaxer.evaluations
    stats["evaluations"] = stats["md_evaluations"] + stats["relax_evaluations"]


def finish(run: Exploration, t0: float, interrupt, save) -> Exploration:
    """The end of an exploration call: its wall time (since t0, perf_counter seconds), the signal that stopped it
    (stats["interrupted"]) and a last save (save: a function, or None without a checkpoint)."""
    run.stats["elapsed_s"] = time.perf_counter() - t0
    if interrupt.requested:
        run.stats["interrupted"] = interrupt.requested
    if save is not None:
        save()
    return run


def minima_vs_time(history, marks_min=(1, 2, 5, 10, 15, 20, 25, 30, 40, 50, 60)) -> list[tuple]:
    """Rows (minutes, unique minima, quenched frames) of an exploration's `history` at the given wall-time marks
    (minutes; those the run reached) and at its end."""
    hist = np.asarray([row[:3] for row in history], dtype=float).reshape(-1, 3)
    if not len(hist):
        return []
    rows = []
    for m in marks_min:
        before = hist[hist[:, 0] <= 60 * m]
        if len(before) and 60 * m <= hist[-1, 0]:
            rows.append((m, int(before[-1, 1]), int(before[-1, 2])))
    rows.append((hist[-1, 0] / 60, int(hist[-1, 1]), int(hist[-1, 2])))
    return rows


def minima_vs_evaluations(history, marks=(1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000,
                                          500_000, 1_000_000)) -> list[tuple]:
    """Rows (energy + forces evaluations, unique minima, evaluations per unique minimum) of an exploration's
    `history` at the given evaluation counts (those the run reached) and at its end. History rows written before
    explorations counted evaluations (three columns) are skipped."""
    hist = np.asarray([row[:4] for row in history if len(row) >= 4], dtype=float).reshape(-1, 4)
    rows = []
    for m in marks:
        before = hist[hist[:, 3] <= m]
        if len(before) and m <= hist[-1, 3]:
            rows.append((int(before[-1, 3]), int(before[-1, 1]), before[-1, 3] / max(before[-1, 1], 1)))
    if len(hist):
        rows.append((int(hist[-1, 3]), int(hist[-1, 1]), hist[-1, 3] / max(hist[-1, 1], 1)))
    return rows


def prescreen_distances(force_fn, frames, loose_fmax: float, fmax: float, groups=(), *, minimizer="fire",
                        max_steps: int = 3000, chunk_steps: int = 50, progress: bool = False) -> dict:
    """How far a loosely relaxed structure lies from its minimum: the question behind `explore_minima`'s
    prescreen_fmax. Relaxes `frames` (K, N, 3) Angstrom to loose_fmax, then on to fmax (eV/A), with `BatchRelaxer`
    (force_fn: a `md.force_function`). Returns per frame "rmsd" (K,) Angstrom (symmetric, over `groups`) and
    "energy_above" (K,) eV between the loose structure and its minimum, "converged" (K,) bool (both stages), and
    the busy minimiser steps of each stage, "loose_steps" and "tail_steps" (ints, summed over the frames)."""
    from .alignment import symmetric_rmsd

    frames = np.asarray(frames, dtype=np.float64)
    if not fmax < loose_fmax:
        raise ValueError(f"loose_fmax ({loose_fmax}) must be above fmax ({fmax})")
    stages, start = [], frames
    for threshold, desc in ((loose_fmax, "loose"), (fmax, "tight")):
        relaxer = BatchRelaxer(force_fn, frames[0], len(frames), threshold, max_steps, chunk_steps, minimizer)
        positions, energies, ok = relaxer.relax_all(start, progress=progress, desc=desc)
        stages.append((positions, energies, ok, relaxer.steps_done))
        start = positions
    (loose, e_loose, ok_loose, loose_steps), (tight, e_tight, ok_tight, tail_steps) = stages
    rmsd = np.array([symmetric_rmsd(t, p, groups)[0] for p, t in zip(loose, tight)])
    return {"rmsd": rmsd, "energy_above": e_loose - e_tight, "converged": ok_loose & ok_tight,
            "loose_steps": int(loose_steps), "tail_steps": int(tail_steps)}
