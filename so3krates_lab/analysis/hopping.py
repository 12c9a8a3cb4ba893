"""Minima hopping and basin hopping with torsion moves: walkers that jump from minimum to minimum.

    exploration = hop_minima(potential, system, minutes=10)

Each of `n_walkers` walkers sits in a minimum. A hop turns one or a few rotatable bonds of that minimum by random
angles (`torsions.torsion_kick`: no heating, no MD), quenches the result (batched L-BFGS with the Exp
preconditioner in `md.BatchRelaxer`, every walker in its own slot) and deduplicates the minimum it reaches into a
`MinimaDatabase`. The walker then moves there or stays, by one of two rules:

- acceptance="window" (minima hopping, after Goedecker, J. Chem. Phys. 120, 9911 (2004)): move when the new
  minimum lies less than `ediff` above the current one; `ediff` shrinks by `window_factor` after a move and grows
  by it after a refusal, so each walker finds its own energy window. The size of the kick feeds back too: the
  mean number of torsions turned grows by `kick_factor` when the hop ends in a minimum already known (the
  walker's own or another one; the database is the history) and shrinks when it finds a new one.
- acceptance="metropolis" (basin hopping, Wales and Doye, J. Phys. Chem. A 101, 5111 (1997)): move with
  probability min(1, exp(-dE / kT)) at `temperature_K`; the kick size feeds back as above.
- acceptance="frontier" (the default): no walk; every hop starts from the known minimum from which the fewest
  hops have been launched, with its energy above the lowest minimum as a penalty, so the graph grows outward
  from its least explored low-energy minima. On the peptide benchmark it finds new minima in 63% of its hops,
  against about 46% for the walks, whose walkers stay home most of the time and exhaust their neighbours.

Three cheap aids, on by default: a taboo (a kick whose torsion angles all lie near a known minimum's, or near an
earlier kick's, is drawn again: that kick's quench ended in a minimum now known) and a torsion library (most
turns set a torsion to a value it has in some known minimum). The taboo on earlier kicks finds 27% more minima
for the same evaluations on the peptide benchmark (benchmarks/README.md).

Every hop is recorded as an edge of the minima graph between the walker's minimum and the one it reached (its
`sequences` entry holds (3 h, current) and (3 h + 1, reached) for hop h, so hops never chain into each other).
The result is an `Exploration`, the same as `explore_minima`'s, counting every energy + forces evaluation.
"""

from __future__ import annotations

import collections
import time
from pathlib import Path

import numpy as np

from ..fileio import holds_writer_lock
from ..interrupts import deferred_interrupts, guarded
from ..md import BatchRelaxer, force_function
from ..memory import ensure_tuned
from ..structures import System
from ..md.integrators import KB_EV_PER_K as KB_EV
from .alignment import bond_graph
from .explore import Exploration, finish, start_pool, tally
from .minima import MinimaDatabase, load_minima, save_minima
from .torsions import far_pairs, rotatable_bonds, torsion_angles, torsion_kick

ACCEPTANCE = ("window", "metropolis", "frontier")
# L-BFGS with the Exp preconditioner, a long memory (100 pairs: near full BFGS for a molecule of a few dozen atoms)
# and r_nn 1.3 A: 31-37% fewer steps per quench than memory 10 and r_nn 1.1 (benchmarks/README.md, minima.py)
DEFAULT_MINIMIZER_OPTIONS = {"lbfgs": {"precon": "exp", "memory": 100, "r_nn": 1.3}, "fire": {}}
SCREEN, FINAL = 1, 2  # the stages of a quench with a refine_fmax
# busy minimiser steps by how the quench ended: a new minimum, a known one, back in the walker's own, a walker's
# start, or not converged / rearranged (with refine_fmax, both stages of a new minimum count as "new")
OUTCOME_STEPS = ("steps_new", "steps_known", "steps_returned", "steps_start", "steps_failed")


def _walker(current=None, energy=None, n_turns=1.0, ediff=0.05, hops=0):
    return {"current": current, "energy": energy, "n_turns": n_turns, "ediff": ediff, "hops": hops}


# one exploration per checkpoint: another process on the same path gets StoreBusyError (lock <checkpoint>.lock)
@holds_writer_lock("checkpoint", lambda path: path.with_suffix(""), main_process_only="shard_walkers")
@guarded  # a Ctrl-C during set-up and compilation is kept for the loop, which stops at once
def hop_minima(potential, system: System, *, n_walkers: int = 8, acceptance: str = "frontier",
               temperature_K: float = 1000.0, ediff_eV: float = 0.05, window_factor: float = 1.05,
               frontier_energy_eV: float = 0.1,
               kick_factor: float = 1.1, max_turns: int | None = None, torsions=None, clash: float = 1.5,
               taboo_deg: float | None = 30.0, taboo_tries: int = 20, taboo_kicks: bool = True,
               library_share: float = 0.7,
               fmax: float = 0.01, refine_fmax: float | None = None, max_relax_steps: int = 2000,
               chunk_steps: int = 25, minimizer="lbfgs", minimizer_options: dict | None = None,
               energy_tol: float = 0.01, rmsd_tol: float = 0.1, starts=None, minutes: float | None = None,
               max_hops: int | None = None, max_minima: int | None = None, checkpoint=None,
               save_every_s: float = 60.0, seed: int = 0, progress: bool = True,
               all_pairs: bool | None = None, shard_walkers: bool = False) -> Exploration:
    """Explore the minima of one free molecule by torsion-move hopping; returns an `Exploration`.

    potential: anything following the potential protocol; system: the molecule and its start geometry, which also
    defines the covalent bond graph (a quench that changes it is counted in stats["rearranged"] and dropped).
    n_walkers: walkers hopping side by side, one minimiser slot each. acceptance: "window" (minima hopping,
    initial window ediff_eV eV, scaled by window_factor), "metropolis" (basin hopping at temperature_K kelvin) or
    "frontier" (no walk: every hop starts from the known minimum with the lowest score, the hops already
    launched from it plus its energy above the lowest minimum in units of frontier_energy_eV; the graph grows
    outward from its least explored low-energy minima); see the module docstring. kick_factor: the feedback on the mean number of torsions turned per hop (1 at the
    start, at most max_turns, default all of them). torsions: the `torsions.Torsion`s to turn (default
    `rotatable_bonds` of the start geometry); clash: the closest approach allowed in a kick, in units of the sum
    of covalent radii. taboo_deg: the history that keeps walkers off known ground: a kick whose torsion angles
    (`torsions.torsion_angles`) all lie within taboo_deg degrees of those of a known minimum would most likely
    quench back into it, so it is drawn again (up to taboo_tries times, free of evaluations; stats
    "taboo_redraws"); None switches this off. taboo_kicks: also redraw a kick whose torsion angles all lie within
    taboo_deg of an earlier kick's (from any minimum): that kick's quench ended in a minimum now known, and a
    turned torsion often relaxes far from the value it was set to, which the minima's angles alone do not
    foresee. library_share: the share of turns that set a torsion to its value in
    a random known minimum (`torsion_kick`'s library: the walkers learn each torsion's stable values as they go;
    0: random turns only).

    fmax (eV/A): the quench threshold: a structure counts as a minimum when its largest force is below it. The
    default 0.01 eV/A leaves a peptide a median 0.05 A and about 1 meV from the minimum it would reach at 0.001
    (`prescreen_distances`), well inside the deduplication tolerances; refine_fmax (eV/A, below fmax, e.g. 0.001):
    minima that are new at fmax are relaxed on to refine_fmax before they are stored (known ones are not).
    minimizer: "lbfgs" (default options {"precon": "exp", "memory": 100, "r_nn": 1.3}: the Exp preconditioner and
    a long memory, `DEFAULT_MINIMIZER_OPTIONS`) or "fire"; minimizer_options override those options key by key. max_relax_steps: a quench not converged by then is dropped
    (stats["not_converged"]). energy_tol (eV), rmsd_tol (A): the `MinimaDatabase` tolerances.
    starts: optional (K, N, 3) Angstrom start geometries (same bond graph); walker w starts from starts[w % K]
    (default: the system's positions). Stops after `minutes` of wall time (compilation included), `max_hops`
    finished quenches or `max_minima` unique minima; at least one must be given.

    checkpoint: a path; progress is saved there (`save_minima`) every save_every_s and at the end, and a later
    call with the same path resumes (database, sequences, walkers, counters and the quenches in flight, from
    their partly relaxed positions). Ctrl-C or SIGTERM lets the minimiser chunk in progress finish, saves and
    returns (stats["interrupted"]).

    shard_walkers: in a multi-process job (`so3krates_lab.distributed`), share the walkers out between the
    processes (`distributed.replica_share`): each process quenches its own walkers' structures, and after every
    chunk the finished quenches of all processes are applied, in the same order, on every process, so every
    process holds the same database, graph and walkers (and returns the same `Exploration`). Process 0 alone
    writes the checkpoint and shows progress; every process reads it to resume. Stops (time budget, Ctrl-C on
    any process) are agreed, so every process stops after the same chunk.

    stats: "hops" (finished quenches), "accepted", "new" (hops that found a new minimum), "known" (hops that
    ended in a known minimum other than the walker's own), "returned" (back in the walker's own), "converged",
    "not_converged", "rearranged", "kick_failures" (kicks whose every try clashed), "taboo_redraws", "relax_steps" (busy slots'
    minimiser steps), "steps_new" / "steps_known" / "steps_returned" / "steps_start" / "steps_failed" (those
    steps by how the quench ended, where the evaluations go; the quenches in flight at the stop make the rest), "evaluations" (every energy + forces evaluation, idle slots included), "md_evaluations"
    (0: no MD), "relax_evaluations", "refined", "elapsed_s"; with shard_walkers also "relax_steps_by_process"
    (this call's minimiser steps on each process).
    """
    ensure_tuned()
    if minutes is None and max_hops is None and max_minima is None:
        raise ValueError("give a budget: minutes=..., max_hops=... or max_minima=...")
    if not isinstance(system, System):
        raise TypeError(f"system must be a so3krates_lab.System, got {type(system).__name__}")
    if system.periodic:
        raise ValueError("hop_minima is for free molecules; the system is periodic")
    if acceptance not in ACCEPTANCE:
        raise ValueError(f"acceptance must be one of {ACCEPTANCE}, got {acceptance!r}")
    if n_walkers < 1:
        raise ValueError(f"n_walkers must be >= 1, got {n_walkers}")
    if not (fmax > 0 and ediff_eV > 0 and temperature_K > 0 and window_factor >= 1 and kick_factor >= 1):
        raise ValueError(f"need fmax, ediff_eV, temperature_K > 0 and window_factor, kick_factor >= 1; got "
                         f"{fmax}, {ediff_eV}, {temperature_K}, {window_factor}, {kick_factor}")
    if refine_fmax is not None and not 0 < refine_fmax < fmax:
        raise ValueError(f"refine_fmax must lie between 0 and fmax ({fmax:g} eV/A) or be None, got {refine_fmax}")
    numbers = np.asarray(system.numbers)
    start = np.asarray(system.positions, dtype=np.float64)
    reference_bonds, pool = start_pool(numbers, start, starts)
    torsions = rotatable_bonds(numbers, start) if torsions is None else list(torsions)
    if not torsions:
        raise ValueError("the molecule has no rotatable bonds (outside rings, not planar, not a symmetric rotor): "
                         "torsion hopping cannot change its conformation; use explore_minima (hot MD) instead")
    max_turns = len(torsions) if max_turns is None else int(min(max(max_turns, 1), len(torsions)))
    pairs = far_pairs(numbers, start)
    labels = [f"w{w}" for w in range(n_walkers)]

    db = MinimaDatabase(numbers, start, energy_tol=energy_tol, rmsd_tol=rmsd_tol)
    sequences = {label: [] for label in labels}
    stats = {key: 0 for key in ("hops", "accepted", "new", "known", "returned", "converged", "not_converged",
                                "rearranged", "kick_failures", "relax_steps", "evaluations", "md_evaluations",
                                "relax_evaluations", "refined", "restarts", "taboo_redraws", *OUTCOME_STEPS)}
    stats["elapsed_s"] = 0.0
    history: list = []
    walkers = [_walker(ediff=ediff_eV) for _ in range(n_walkers)]
    pending: list = []  # [(walker, stage, positions)] to load before kicking
    checkpoint = None if checkpoint is None else Path(checkpoint)
    extra: dict = {}
    if checkpoint is not None and checkpoint.with_suffix(".json").exists():
        db, loaded, _, extra = load_minima(checkpoint)
        if len(extra.get("walkers", [])) != n_walkers or not np.array_equal(db.numbers, numbers):
            raise ValueError(f"{checkpoint} was written for another molecule or walker count; use a new path")
        sequences = {label: loaded.get(label, []) for label in labels}
        stats, history, walkers = extra["stats"], extra["history"], extra["walkers"]
        pending = [(int(w), int(stage), np.asarray(p)) for w, stage, p in extra.get("pending", [])]
        if minutes is not None and stats["elapsed_s"] >= 60.0 * minutes:
            return Exploration(db, sequences, history, stats)
        for key in ("taboo_redraws", *OUTCOME_STEPS):  # counters that older checkpoints lack
            stats.setdefault(key, 0)
        stats["restarts"] += 1
    else:
        pending = [(w, FINAL, pool[w % len(pool)]) for w in range(n_walkers)]  # first: quench the starts

    options = dict(DEFAULT_MINIMIZER_OPTIONS.get(minimizer, {}) if isinstance(minimizer, str) else {})
    options.update(minimizer_options or {})
    force_fn = force_function(potential, system, all_pairs=all_pairs)
    if shard_walkers:
        from ..distributed import agree_any, is_main_process, process_count, replica_share
        from ..md import ShardedRelaxer

        owned = replica_share(n_walkers)
        owner = {w: p for p in range(process_count()) for w in replica_share(n_walkers, index=p)}
        relaxer = ShardedRelaxer(force_fn, start, len(owned), lambda tag: owner[tag[0]], fmax, max_relax_steps,
                                 chunk_steps, minimizer, **options)
        agree, main = agree_any, is_main_process()
    else:
        relaxer = BatchRelaxer(force_fn, start, n_walkers, fmax, max_relax_steps, chunk_steps, minimizer, **options)
        agree, main = bool, True
    rng = np.random.default_rng(seed + 1000 * stats["restarts"])
    t0 = time.perf_counter() - stats["elapsed_s"]  # the wall time includes every compilation
    steps_before, evaluations_before = stats["relax_steps"], stats["relax_evaluations"]
    queue = collections.deque(pending)

    def save():
        stats["elapsed_s"] = time.perf_counter() - t0
        in_flight = [[w, stage, p.tolist()] for (w, stage), p in relaxer.in_flight()]
        extra = {"stats": stats, "history": history, "walkers": walkers, "launches": launches,
                 "kick_angles": [np.round(a, 2).tolist() for a in kick_angles],
                 "pending": in_flight + [[w, stage, p.tolist()] for w, stage, p in queue],
                 "settings": {"method": "hop_minima", "acceptance": acceptance, "n_walkers": n_walkers,
                              "temperature_K": temperature_K, "ediff_eV": ediff_eV, "window_factor": window_factor,
                              "frontier_energy_eV": frontier_energy_eV,
                              "kick_factor": kick_factor, "max_turns": max_turns, "fmax": fmax,
                              "refine_fmax": refine_fmax, "clash": clash, "taboo_deg": taboo_deg,
                              "taboo_kicks": taboo_kicks,
                              "library_share": library_share,
                              "minimizer": minimizer if isinstance(minimizer, str) else getattr(
                                  minimizer, "__name__", "?"), "minimizer_options": options,
                              "torsions": [[t.b, t.c] for t in torsions]}}
        if main:  # (with shard_walkers every process gathered the quenches in flight above; process 0 writes)
            save_minima(checkpoint, db, sequences, extra)

    known_angles = [torsion_angles(db.geometry(k), torsions) for k in range(len(db))]  # the taboo's memory
    kick_angles = [np.asarray(a) for a in extra.get("kick_angles", [])] if taboo_kicks else []  # earlier kicks
    launches = list(extra.get("launches", []))  # hops launched from each minimum

    def frontier_home(w):
        """The known minimum with the lowest score (hops launched from it + its energy above the lowest one in
        units of frontier_energy_eV; random tie-breaks) becomes walker w's home."""
        energies = np.asarray(db.energies)
        score = np.asarray(launches) + (energies - energies.min()) / frontier_energy_eV + 1e-3 * rng.random(len(db))
        k = int(np.argmin(score))
        walkers[w].update(current=k, energy=float(energies[k]))

    def near_known(pos, taboo) -> bool:
        """Whether every torsion angle of pos lies within taboo_deg of one row of taboo ((M, T) degrees)."""
        if taboo_deg is None or len(taboo) == 0:
            return False
        diff = np.abs((taboo - torsion_angles(pos, torsions) + 180.0) % 360.0 - 180.0)
        return bool(np.any(np.all(diff < taboo_deg, axis=1)))

    def kick(w):
        """Queue walker w's next candidate: its minimum with a few torsions turned, away from known minima."""
        walker = walkers[w]
        launches.extend([0] * (len(db) - len(launches)))
        if acceptance == "frontier":
            frontier_home(w)
        launches[walker["current"]] += 1
        home = db.geometry(walker["current"])
        mean = min(max(walker["n_turns"], 1.0), max_turns)
        pos = None
        library = np.asarray(known_angles) if library_share > 0 else None  # built once for all tries
        taboo = np.asarray(known_angles + kick_angles) if taboo_deg is not None else None
        for attempt in range(taboo_tries if taboo_deg is not None else 1):
            n_turns = min(1 + rng.poisson(mean - 1.0), max_turns)
            candidate = torsion_kick(home, torsions, rng, n_turns, numbers=numbers, pairs=pairs, clash=clash,
                                     library=library, library_share=library_share)
            if candidate is None and n_turns > 1:  # every try clashed: turn a single torsion
                candidate = torsion_kick(home, torsions, rng, 1, numbers=numbers, pairs=pairs, clash=clash)
            if candidate is None:
                stats["kick_failures"] += 1
                continue
            pos = candidate
            if not near_known(candidate, taboo):
                break
            stats["taboo_redraws"] += 1
        if pos is None:
            pos = home  # a crowded minimum: quench it again (counted as a return)
        if taboo_kicks:
            kick_angles.append(torsion_angles(pos, torsions))
        queue.append((w, SCREEN if refine_fmax is not None else FINAL, pos))

    def hop_done(w, k, energy):
        """Walker w's quench ended in minimum k: record the edge, apply the acceptance rule and the feedback."""
        walker = walkers[w]
        stats["hops"] += 1
        if walker["current"] is None:  # the walker's start: it moves there unconditionally
            walker.update(current=k, energy=energy)
            return
        h = walker["hops"]
        sequences[labels[w]].extend([(3 * h, walker["current"]), (3 * h + 1, k)])
        walker["hops"] = h + 1
        if k == walker["current"]:
            stats["returned"] += 1
            walker["n_turns"] = min(walker["n_turns"] * kick_factor, max_turns)
            return
        if acceptance == "frontier":
            return  # the next kick picks its own home
        de = energy - walker["energy"]
        if acceptance == "window":
            move = de < walker["ediff"]
            walker["ediff"] *= 1.0 / window_factor if move else window_factor
        else:
            move = de <= 0 or rng.random() < np.exp(-de / (KB_EV * temperature_K))
        if move:
            stats["accepted"] += 1
            walker.update(current=k, energy=energy)

    from tqdm.auto import tqdm

    def finished():
        return ((minutes is not None and time.perf_counter() - t0 > 60.0 * minutes)
                or (max_hops is not None and stats["hops"] >= max_hops)
                or (max_minima is not None and len(db) >= max_minima))

    last_save = time.perf_counter()
    stats.pop("interrupted", None)
    with tqdm(total=max_minima, desc="minima", unit="minimum", disable=not (progress and main), mininterval=1.0,
              initial=len(db)) as bar, deferred_interrupts() as interrupt:
        for w in range(n_walkers):  # walkers without work (a fresh start has none queued) get a kick
            if walkers[w]["current"] is not None and not any(item[0] == w for item in queue):
                kick(w)
        while not agree(finished() or bool(interrupt.requested)):  # (shard_walkers: any process's stop stops all)
            items = [queue.popleft() for _ in range(min(relaxer.n_free, len(queue)))]
            for stage in (SCREEN, FINAL):
                relaxer.load([((w, s), p) for w, s, p in items if s == stage],
                             fmax=refine_fmax if stage == FINAL and refine_fmax is not None else None)
            for (w, stage), pos, energy, ok, steps in relaxer.run_chunk():
                rearranged = ok and not np.array_equal(bond_graph(numbers, pos), reference_bonds)
                if not ok or rearranged:
                    stats["steps_failed"] += steps
                if not ok:
                    stats["not_converged"] += 1
                    if walkers[w]["current"] is None:  # a start that does not converge: stop here
                        raise RuntimeError(f"the start geometry of walker {w} did not converge within "
                                           f"{max_relax_steps} minimiser steps; check the structure and the model")
                    kick(w)
                    continue
                if rearranged:
                    stats["rearranged"] += 1
                    if walkers[w]["current"] is None:
                        raise RuntimeError(f"the start geometry of walker {w} changes its bonds when relaxed "
                                           "with this model")
                    kick(w)
                    continue
                if stage == SCREEN:  # refine_fmax: only minima that are new at fmax are relaxed on
                    known = db.find(pos, energy)
                    if known is None:
                        stats["refined"] += 1
                        stats["steps_new" if walkers[w]["current"] is not None else "steps_start"] += steps
                        queue.append((w, FINAL, pos))
                        continue
                    db.revisit(known, trajectory=labels[w])
                    k, is_new = known, False
                else:
                    k, is_new = db.add(pos, energy, trajectory=labels[w])
                stats["converged"] += 1
                outcome = ("start" if walkers[w]["current"] is None else "returned" if k == walkers[w]["current"]
                           else "new" if is_new else "known")
                stats[f"steps_{outcome}"] += steps
                if walkers[w]["current"] is not None and k != walkers[w]["current"]:
                    stats["new" if is_new else "known"] += 1
                    if not is_new:
                        walkers[w]["n_turns"] = min(walkers[w]["n_turns"] * kick_factor, max_turns)
                if is_new and walkers[w]["current"] is not None:
                    walkers[w]["n_turns"] = max(walkers[w]["n_turns"] / kick_factor, 1.0)
                if is_new:
                    known_angles.append(torsion_angles(pos, torsions))
                hop_done(w, k, energy)
                if is_new:
                    bar.update(1)
                kick(w)
            tally(stats, relaxer, steps_before, evaluations_before)
            if shard_walkers:  # this call's minimiser steps by process: the same list on every process
                stats["relax_steps_by_process"] = relaxer.steps_by_process
            history.append((time.perf_counter() - t0, len(db), stats["hops"], stats["evaluations"]))
            bar.set_postfix(hops=stats["hops"], per_min=round(stats["evaluations"] / max(len(db), 1)),
                            refresh=False)
            if checkpoint is not None and agree(time.perf_counter() - last_save > save_every_s):
                save()
                last_save = time.perf_counter()
    return finish(Exploration(db, sequences, history, stats), t0, interrupt, save if checkpoint is not None else None)


def evaluation_profile(stats: dict) -> list[tuple[str, int | None, int]]:
    """Where the energy + forces evaluations of a `hop_minima` run went: rows (what, quenches or None,
    evaluations), the busy minimiser steps by how each quench ended (new minimum, known one, back to the walker's
    own, walker starts, not converged or rearranged), then the steps not split by outcome (quenches in flight at
    the stop, or calls checkpointed before the split was counted) and the idle slots and fresh-chunk
    evaluations. The evaluations of all rows add up to stats["evaluations"]."""
    rows = [("to a new minimum", stats["new"], stats.get("steps_new", 0)),
            ("to a known minimum", stats["known"], stats.get("steps_known", 0)),
            ("back to its own minimum", stats["returned"], stats.get("steps_returned", 0)),
            ("walker starts", None, stats.get("steps_start", 0)),
            ("not converged or rearranged", stats["not_converged"] + stats["rearranged"], stats.get("steps_failed", 0))]
    split = sum(steps for _, _, steps in rows)
    return rows + [("not split (in flight, or before the split was counted)", None, stats["relax_steps"] - split),
                   ("idle slots and fresh-chunk evaluations", None, stats["evaluations"] - stats["relax_steps"])]

