#!/usr/bin/env python
"""Minima exploration showcase: Ac-Ala3-NHMe (42 atoms) with the shipped SO3krates model.

Three stages, each resumable (rerun the same command; finished stages are read back from --out):

1. explore: hot Langevin replicas, a frame every --sample-fs, every frame quenched with a continuous-batching
   minimiser (--minimizer: L-BFGS by default, or FIRE) to --fmax, minima deduplicated (energy within --energy-tol, symmetric RMSD below --rmsd-tol) into the minima
   graph. --minutes is the total exploration budget over all calls (a rerun with a larger value extends it).
2. train: the model's training frames (the shipped model's split; --train-frames of them, seeded) relaxed with
   the model; the minima of the exploration that none of them reaches lie outside the training data.
3. validate: --validate minima drawn at random (seeded) re-relaxed with GFN2-xTB (ASE BFGS to --ref-fmax).

    .venv/bin/python benchmarks/minima.py --minutes 25 --train-frames 100 --validate 20

Writes under --out: explore.json/.npz (the minima database, sequences and graph: `analysis.load_minima`),
minima.nc (geometries and energies, xarray), train_minima.npz, validation.nc, minima_vs_time.html (plotly),
summary.json; prints the unique-minima-versus-time table and the validation table.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def parse(argv=None):
    from so3krates_lab.data import shipped_dir, shipped_path

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=shipped_path("models/ac_ala3_nhme_xtb.npz"))
    p.add_argument("--so3lr", action="store_true",
                   help="explore with the pretrained SO3LR (neutral, pretrained.so3lr) instead of --model "
                        "(no training-frame stage: use --train-frames 0)")
    p.add_argument("--start", type=Path, default=shipped_path("ac_ala3_nhme_gfn2xtb.npz"),
                   help="data file whose frame 0 starts every replica")
    p.add_argument("--data-dir", type=Path, default=shipped_dir(),
                   help="folder holding the model's training data file (named in its checkpoint; default the "
                        "shipped data)")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "minima")
    p.add_argument("--minutes", type=float, default=25.0, help="total exploration wall time over all calls")
    p.add_argument("--max-frames", type=int, default=0, metavar="K",
                   help="also stop after K quenched frames (0: no frame budget): compares methods at equal frames")
    p.add_argument("--replicas", type=int, default=8)
    p.add_argument("--slots", type=int, default=16, help="structures relaxed at once")
    p.add_argument("--temperature", type=float, default=500.0, help="K")
    p.add_argument("--sample-fs", type=float, default=50.0, help="fs between frames of one replica")
    p.add_argument("--timestep", type=float, default=0.5, help="fs")
    p.add_argument("--method", choices=["md", "hop"], default="md",
                   help="md: hot Langevin replicas, frames quenched (analysis.explore_minima); hop: torsion-move "
                        "minima hopping / basin hopping walkers (analysis.hop_minima)")
    p.add_argument("--walkers", type=int, default=8, help="hop: walkers (one minimiser slot each)")
    p.add_argument("--acceptance", choices=["window", "metropolis", "frontier"], default="frontier",
                   help="hop: launches from the least explored minima (frontier), minima hopping's self-adjusting "
                        "energy window or basin hopping's Metropolis rule")
    p.add_argument("--hop-temperature", type=float, default=1000.0, help="hop, metropolis: K")
    p.add_argument("--refine-fmax", type=float, default=0.0, metavar="F",
                   help="hop: relax minima that are new at --fmax on to F eV/A before storing them (0: off)")
    p.add_argument("--taboo-deg", type=float, default=30.0, help="hop: torsion taboo around known minima (0: off)")
    p.add_argument("--no-taboo-kicks", action="store_true",
                   help="hop: the taboo keeps kicks away from known minima only, not from earlier kicks' angles")
    p.add_argument("--library-share", type=float, default=0.7,
                   help="hop: share of turns set to a known minimum's torsion value (0: random turns only)")
    p.add_argument("--max-minima", type=int, default=0, help="hop: stop at this many unique minima (0: no limit)")
    p.add_argument("--precon", choices=["exp", "none"], default="exp",
                   help="hop with lbfgs: the Exp preconditioner (default) or plain L-BFGS")
    p.add_argument("--fmax", type=float, default=None,
                   help="eV/A, minimiser convergence (default 0.001 for --method md, 0.01 for hop)")
    p.add_argument("--minimizer", choices=["fire", "lbfgs"], default="lbfgs")
    p.add_argument("--max-relax-steps", type=int, default=3000)
    p.add_argument("--prescreen-fmax", type=float, default=0.0, metavar="F",
                   help="eV/A: two-stage quench, every frame relaxed to F first and refined only if new (0: off)")
    p.add_argument("--lbfgs-memory", type=int, default=None,
                   help="L-BFGS history length (step pairs; default: hop_minima's for hop, 10 otherwise)")
    p.add_argument("--chunk", type=int, default=50, help="minimiser steps per compiled call")
    p.add_argument("--energy-tol", type=float, default=0.01, help="eV")
    p.add_argument("--rmsd-tol", type=float, default=0.1, help="Angstrom")
    p.add_argument("--train-frames", type=int, default=100, help="training frames to relax (0: skip)")
    p.add_argument("--validate", type=int, default=20, help="minima re-relaxed with GFN2-xTB (0: skip)")
    p.add_argument("--barriers", type=int, default=0, metavar="K",
                   help="climbing-image NEB barriers on K graph edges (most transitions first; 0: skip), and the "
                        "disconnectivity graph of the minima they join")
    p.add_argument("--check-barriers", type=int, default=0, metavar="K",
                   help="re-converge K of the converged bands with GFN2-xTB (climbing-image NEB) and compare")
    p.add_argument("--neb-images", type=int, default=8, help="inner images per band")
    p.add_argument("--neb-fmax", type=float, default=0.05, help="eV/A, NEB convergence")
    p.add_argument("--ref-fmax", type=float, default=0.01, help="eV/A, reference BFGS convergence")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jax-cache", default=str(ROOT / "results" / "jax_cache"),
                   help="persistent JAX compilation cache folder ('' to switch off)")
    p.add_argument("--compare-minimizers", type=int, default=0, metavar="K",
                   help="only relax K training frames with FIRE and with L-BFGS and compare steps, time and minima")
    p.add_argument("--compare-prescreen", type=int, default=0, metavar="K",
                   help="only relax K training frames loosely (to --prescreen-fmax, default 0.05) and then on to "
                        "--fmax; print how far each loose structure lies from its minimum and the steps of each stage")
    p.add_argument("--compare-precon", type=int, default=0, metavar="K",
                   help="only relax K torsion kicks (one turn each, seeded) of the shipped graph's minima to --fmax "
                        "(default 0.01) with plain and with Exp-preconditioned L-BFGS (or the --variants); print "
                        "the steps per quench")
    p.add_argument("--compare-early", type=int, default=0, metavar="K",
                   help="only relax K torsion kicks of the shipped minima and print how many quenches a loose "
                        "match against the known minima could stop early, rightly or wrongly, and the steps saved")
    p.add_argument("--compare-neb-starts", type=int, default=0, metavar="K",
                   help="only run NEB from IDPP and from torsion-interpolated starts on K far edges (end points "
                        "more than 2 A apart) of the shipped graph and print both")
    p.add_argument("--variants", nargs="+", default=None, metavar="LABEL=JSON",
                   help="with --compare-precon: the L-BFGS variants to compare, each a label and md.lbfgs keyword "
                        "arguments, e.g. 'm20={\"precon\": \"exp\", \"memory\": 20}' (default: plain and exp); two "
                        "keys set the relaxer instead: chunk_steps (default --chunk) and fused_start (false: start "
                        "fresh slots by an init call of every slot, the relaxer's way before 0.4.0)")
    p.add_argument("--neighbour-list", action="store_true",
                   help="use the skin neighbour list instead of the fixed all-pairs graph (every pair slot where "
                        "this script relaxes; the exploration's list gets md.force_function's default capacity)")
    p.add_argument("--starts", type=int, default=0, metavar="K",
                   help="start the replicas from K training frames spread over the training MD (300-600 K) "
                        "instead of frame 0 of --start only")
    p.add_argument("--restart-every", type=int, default=0, metavar="N",
                   help="restart a replica from a random known minimum after N sampled frames (0: never)")
    p.add_argument("--ship", type=Path, default=None, metavar="STEM",
                   help="also write the explored graph to STEM.json/.npz with STEM.provenance.json "
                        "(e.g. data/minima/ac_ala3_nhme_hop)")
    p.add_argument("--profile-batches", default="", metavar="B1,B2,...",
                   help="only time one minimiser step (vmapped, compiled) at these batch sizes and exit")
    return p.parse_args(argv)


def profile_batches(args, force_fn, frames):
    """Median wall time of one compiled, vmapped minimiser step at each batch size (ms per step and per
    structure-step), after a warm-up call."""
    import jax

    from so3krates_lab.md import fire, lbfgs

    init, step = (lbfgs if args.minimizer == "lbfgs" else fire)(force_fn)
    vstep = jax.jit(jax.vmap(step))
    print(f"{args.minimizer} step, float32, {len(frames[0])} atoms; median of 5 calls after one warm-up")
    print(f"{'batch':>6} {'ms/step':>9} {'ms/structure-step':>18}")
    for b in [int(x) for x in args.profile_batches.split(",")]:
        batch = np.stack([frames[i % len(frames)] for i in range(b)]).astype(np.float32)
        aux = jax.tree.map(lambda x: jax.numpy.stack([x] * b), force_fn.aux)  # None: the fixed graph
        states = jax.jit(jax.vmap(init))(batch, aux)
        states = jax.block_until_ready(vstep(states))
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            states = jax.block_until_ready(vstep(states))
            times.append(time.perf_counter() - t0)
        ms = 1e3 * float(np.median(times))
        print(f"{b:6d} {ms:9.1f} {ms / b:18.1f}", flush=True)


def compare_minimizers(args, force_fn, positions, frames, groups):
    """Relax the same frames with FIRE and with L-BFGS; print steps per structure, wall time and the RMSD
    between the two minima of each frame."""
    from so3krates_lab.analysis import symmetric_rmsd
    from so3krates_lab.md import BatchRelaxer

    result = {}
    for name in ("fire", "lbfgs"):
        relaxer = BatchRelaxer(force_fn, positions, len(frames), args.fmax, args.max_relax_steps,
                               args.chunk, minimizer=name)
        t0 = time.perf_counter()
        pos, energies, ok = relaxer.relax_all(frames, progress=True, desc=name)
        result[name] = (pos, energies, ok, relaxer.steps_done, time.perf_counter() - t0)
    print(f"\n{len(frames)} training frames relaxed to fmax {args.fmax:g} eV/A (max {args.max_relax_steps} steps), "
          f"{len(frames)} slots, chunks of {args.chunk} steps; wall time includes compilation")
    print(f"{'minimiser':>9} {'steps/structure':>16} {'converged':>10} {'wall s':>8}")
    for name, (_, _, ok, steps, wall) in result.items():
        print(f"{name:>9} {steps / len(frames):16.0f} {int(ok.sum()):>10d} {wall:8.0f}")
    rmsd = [symmetric_rmsd(a, b, groups)[0] for a, b in zip(result["fire"][0], result["lbfgs"][0])]
    de = 1e3 * (result["fire"][1] - result["lbfgs"][1])
    print("per frame, FIRE vs L-BFGS minimum: RMSD (A) " + " ".join(f"{r:.3f}" for r in rmsd)
          + "; energy difference (meV) " + " ".join(f"{d:.1f}" for d in de))


def compare_prescreen(args, force_fn, frames, groups):
    """Print `analysis.prescreen_distances` of the frames: how far the loose structures lie from their minima,
    and the steps of each stage."""
    from so3krates_lab.analysis import prescreen_distances

    loose_fmax = args.prescreen_fmax or 0.05
    r = prescreen_distances(force_fn, frames, loose_fmax, args.fmax, groups, minimizer=args.minimizer,
                            max_steps=args.max_relax_steps, chunk_steps=args.chunk, progress=True)
    rmsd, de, k = r["rmsd"], 1e3 * r["energy_above"], len(frames)
    ls, ts = r["loose_steps"], r["tail_steps"]
    print(f"\n{k} training frames, {args.minimizer}: to {loose_fmax:g} eV/A in {ls / k:.0f} steps per frame, then "
          f"on to {args.fmax:g} eV/A in {ts / k:.0f} more ({int(r['converged'].sum())} converged); the tight tail "
          f"is {ts / max(ls + ts, 1):.0%} of the steps")
    print("loose structure to its minimum: RMSD (A) median {:.3f}, 90th percentile {:.3f}, max {:.3f}; energy above "
          "it (meV) median {:.1f}, max {:.1f}".format(np.median(rmsd), np.percentile(rmsd, 90), rmsd.max(),
                                                       np.median(de), de.max()))
    for tol in (0.1, 0.2, 0.3, 0.5):
        print(f"  within RMSD {tol:.1f} A and 10 meV: {int(np.sum((rmsd < tol) & (np.abs(de) < 10))):3d} of {k}")


def shipped_kicks(numbers, k: int, seed: int):
    """The shipped graph's database and k one-turn torsion kicks of its minima (each of a random minimum, seeded)."""
    from so3krates_lab.analysis import kicks_of_minima, load_minima, rotatable_bonds
    from so3krates_lab.data import shipped_path

    db = load_minima(shipped_path("minima/ac_ala3_nhme_hop.npz").with_suffix(""))[0]
    minima = [db.geometry(i) for i in range(len(db))]
    return db, list(kicks_of_minima(minima, rotatable_bonds(numbers, minima[0]), np.random.default_rng(seed), k,
                                    numbers=numbers))


def compare_precon(args, force_fn, numbers, k: int):
    """Relax the same k torsion kicks of the shipped minima with plain and Exp-preconditioned L-BFGS."""
    from so3krates_lab.analysis import MinimaDatabase
    from so3krates_lab.analysis.hopping import DEFAULT_MINIMIZER_OPTIONS
    from so3krates_lab.md import BatchRelaxer, lbfgs

    db, kicks = shipped_kicks(numbers, k, args.seed)
    fmax = args.fmax or 0.01
    print(f"\n{k} one-turn torsion kicks of the {len(db)} shipped minima relaxed to {fmax:g} eV/A, 8 slots, "
          f"chunks of {args.chunk}")
    variants = [("plain", {}), ("Exp preconditioner", {"precon": "exp"}),
                ("hop_minima default", dict(DEFAULT_MINIMIZER_OPTIONS["lbfgs"]))]
    if args.variants:
        variants = [(v.split("=", 1)[0], json.loads(v.split("=", 1)[1])) for v in args.variants]
    print(f"{'L-BFGS':>18} {'steps/quench':>13} {'median':>7} {'evals/quench':>12} {'converged':>10} "
          f"{'same minimum':>13} {'wall s':>7} {'ms/step':>8}  options")
    first = None  # the first variant's minima: does a variant reach the same ones (10 meV, 0.1 A)?
    for label, variant in variants:
        options = dict(variant)
        chunk = int(options.pop("chunk_steps", args.chunk))
        minimizer = "lbfgs" if options.pop("fused_start", True) else (lambda ff, **kw: tuple(lbfgs(ff, **kw)))
        relaxer = BatchRelaxer(force_fn, kicks[0], 8, fmax, args.max_relax_steps, chunk, minimizer,
                               **{"memory": args.lbfgs_memory or 10, **options})
        t0 = time.perf_counter()
        queue, steps, converged, ends, chunk_s = list(enumerate(kicks)), [], 0, {}, []
        while queue or relaxer.active.any():
            take, queue = queue[:relaxer.n_free], queue[relaxer.n_free:]
            relaxer.load(take)
            t_chunk = time.perf_counter()
            done = relaxer.run_chunk()
            chunk_s.append(time.perf_counter() - t_chunk)
            for i, pos, energy, ok, n in done:
                steps.append(n)
                converged += ok
                ends[i] = (pos, energy) if ok else None
        wall = time.perf_counter() - t0
        if first is None:
            first = MinimaDatabase(numbers, kicks[0])
            refs = {i: first.add(*end)[0] for i, end in ends.items() if end is not None}
        same = sum(end is not None and i in refs and first.find(*end) == refs[i] for i, end in ends.items())
        step_ms = 1e3 * np.median(chunk_s[1:]) / chunk  # a step of all 8 slots; the first chunk compiles
        print(f"{label:>18} {relaxer.steps_done / k:13.0f} {np.median(steps):7.0f} {relaxer.evaluations / k:12.0f} "
              f"{converged:>10d} {same:>13d} {wall:7.0f} {step_ms:8.1f}  {json.dumps(variant)}")


def compare_early(args, force_fn, numbers, k: int):
    """Could a quench stop early once it is near a known minimum? k one-turn kicks of the shipped minima relaxed to
    --fmax (default 0.01) with the default L-BFGS; at every chunk boundary each quench's structure is matched
    loosely against the shipped database (the nearest minimum by symmetric RMSD among those at most 0.3 eV below
    it). The quench: Exp-preconditioned L-BFGS with md.lbfgs's memory 10 (or --lbfgs-memory) and r_nn 1.1 A. For each rule (largest force below F, RMSD below R) prints how many quenches it stops, how many of those
    end in the minimum it named (the rest would be wrong: a new minimum missed or another one named) and the share
    of all steps it saves."""
    from so3krates_lab.analysis import symmetric_rmsd
    from so3krates_lab.analysis.alignment import distance_fingerprint, fingerprint_distance
    from so3krates_lab.md import BatchRelaxer

    db, kicks = shipped_kicks(numbers, k, args.seed + 7)
    fmax = args.fmax or 0.01
    relaxer = BatchRelaxer(force_fn, kicks[0], 8, fmax, args.max_relax_steps, args.chunk, "lbfgs", precon="exp",
                           memory=args.lbfgs_memory or 10)  # as measured in benchmarks/README.md
    energies, fps = np.asarray(db.energies), [distance_fingerprint(db.geometry(i)) for i in range(len(db))]

    def nearest(pos, energy):
        fp, best = distance_fingerprint(pos), (np.inf, None)
        for i in np.nonzero((energies <= energy + db.energy_tol) & (energies >= energy - 0.3))[0]:
            if fingerprint_distance(fp, fps[i]) < 2 * min(best[0], 0.5):
                rmsd = symmetric_rmsd(db.geometry(int(i)), pos, db.groups)[0]
                best = min(best, (rmsd, int(i)))
        return best

    snaps = {i: [] for i in range(k)}  # quench -> [(step, fmax, rmsd to the nearest known, its index)]
    ends, queue = {}, list(enumerate(kicks))
    while queue or relaxer.active.any():
        take, queue = queue[:relaxer.n_free], queue[relaxer.n_free:]
        relaxer.load(take)
        for i, pos, energy, ok, n in relaxer.run_chunk():
            ends[i] = (db.find(pos, energy) if ok else -2, n)
        st = relaxer.states
        pos_all, e_all, steps = np.asarray(st.positions, np.float64), np.asarray(st.energy), np.asarray(st.step)
        f_all = np.sqrt(np.max(np.sum(np.asarray(st.forces) ** 2, -1), -1))
        for slot in np.nonzero(relaxer.active)[0]:
            snaps[relaxer.tags[slot]].append((int(steps[slot]), float(f_all[slot]),
                                              *nearest(pos_all[slot], float(e_all[slot]))))
    total = sum(n for _, n in ends.values())
    n_new = sum(end is None for end, _ in ends.values())
    print(f"\n{k} one-turn kicks of the {len(db)} shipped minima to {fmax:g} eV/A: {n_new} end in a minimum the "
          f"database lacks, {sum(end == -2 for end, _ in ends.values())} not converged; {total / k:.0f} steps each")
    print(f"{'fmax below':>10} {'RMSD below':>10} {'stopped':>8} {'right':>6} {'wrong':>6} {'steps saved':>12}")
    for f_gate in (0.2, 0.1, 0.05, 0.03, 0.02):
        for r_gate in (0.1, 0.15, 0.2, 0.3):
            stopped = right = saved = 0
            for i, rows in snaps.items():
                hit = next((row for row in rows if row[1] < f_gate and row[2] < r_gate), None)
                if hit is None:
                    continue
                stopped += 1
                right += ends[i][0] == hit[3]
                saved += ends[i][1] - hit[0]
            print(f"{f_gate:10.2f} {r_gate:10.2f} {stopped:8d} {right:6d} {stopped - right:6d} "
                  f"{100 * saved / total:11.1f}%")


def compare_neb_starts(args, potential, start, k: int):
    """IDPP against torsion-interpolated starting bands on the k most visited edges of the shipped graph whose end
    points lie more than 2 A apart (symmetric RMSD): converged, barrier (the lower direction), steps."""
    from so3krates_lab.analysis import load_minima, neb_many, symmetric_rmsd
    from so3krates_lab.data import shipped_path

    db, _, graph, _ = load_minima(shipped_path("minima/ac_ala3_nhme_hop.npz").with_suffix(""))
    edges = sorted((tuple(sorted(e)) for e in graph.edges), key=lambda e: -graph.edges[e].get("count", 0))
    far = []
    for u, v in edges:
        rmsd = symmetric_rmsd(db.geometry(u), db.geometry(v), db.groups)[0]
        if rmsd > 2.0:
            far.append((u, v, rmsd))
        if len(far) == k:
            break
    print(f"\nNEB ({args.neb_images} inner images, FIRE to {args.neb_fmax:g} eV/A, at most 1,000 steps) on the {k} "
          "most visited edges of the shipped graph with end points more than 2 A apart")
    print(f"{'edge':>10} {'RMSD A':>7} {'start':>8} {'converged':>9} {'barrier meV':>11} {'steps':>6}")
    for interpolation in ("idpp", "torsion"):
        t0 = time.perf_counter()
        bands = neb_many(potential, start, [(db.geometry(u), db.geometry(v)) for u, v, _ in far],
                         n_images=args.neb_images, fmax=args.neb_fmax, interpolation=interpolation, groups=db.groups)
        for (u, v, rmsd), band in zip(far, bands):
            low = 1000 * min(band.barrier, band.reverse_barrier)
            print(f"{f'{u}-{v}':>10} {rmsd:7.2f} {interpolation:>8} {str(band.converged):>9} {low:11.0f} "
                  f"{band.steps:6d}")
        print(f"{interpolation}: {time.perf_counter() - t0:.0f} s for {len(far)} bands, compilation included",
              flush=True)


def barriers(args, potential, start, db, graph):
    """NEB barriers on the args.barriers most visited edges (resumable: bands.npz under --out); the table,
    barriers.json and the disconnectivity graph of the minima those edges join (disconnectivity.html); with
    --check-barriers K, K of the bands re-converged with GFN2-xTB (barrier_check.json). Returns the bands."""
    from so3krates_lab.analysis import graph_barriers, tree_from_graph
    from so3krates_lab.fileio import atomic_write

    t0 = time.perf_counter()
    graph, bands = graph_barriers(potential, start, db, graph, max_edges=args.barriers, n_images=args.neb_images,
                                  fmax=args.neb_fmax, progress=True, checkpoint=args.out / "bands.npz")
    wall = time.perf_counter() - t0
    print(f"\nbarriers: climbing-image NEB, {args.neb_images} inner images, fmax {args.neb_fmax:g} eV/A, "
          f"{len(bands)} edges ({sum(b.evaluations for b in bands.values())} evaluations; this call {wall:.0f} s)")
    from so3krates_lab.analysis import edge_report

    rows = edge_report(db, bands)
    print(f"{'edge':>10} {'E_u meV':>8} {'E_v meV':>8} {'forward meV':>12} {'backward meV':>13} {'steps':>6} "
          f"{'converged':>9} {'RMSD A':>7} {'torsions >60 deg':>16}")
    for r in rows:
        edge = f"{r['u']}-{r['v']}"
        print(f"{edge:>10} {1e3 * r['energy_u_eV']:8.0f} {1e3 * r['energy_v_eV']:8.0f} "
              f"{1e3 * r['barrier_forward_eV']:12.0f} {1e3 * r['barrier_backward_eV']:13.0f} {r['steps']:6d} "
              f"{str(r['converged']):>9} {r['rmsd_A']:7.2f} {r['torsions_turned']:16d}")
    atomic_write(args.out / "barriers.json", lambda tmp: Path(tmp).write_text(json.dumps(rows, indent=1)))
    joined = sorted({m for r in rows for m in (r["u"], r["v"])})
    tree = tree_from_graph(graph, n_levels=30, joined_only=True)
    from so3krates_lab.widgets import disconnectivity_figure

    fig = disconnectivity_figure(tree, title=f"{args.start.stem}, {args.model.stem}: disconnectivity graph of "
                                             f"{len(joined)} minima joined by {len(rows)} NEB barriers")
    atomic_write(args.out / "disconnectivity.html", lambda tmp: fig.write_html(tmp, include_plotlyjs="cdn"))
    print(f"converged {sum(r['converged'] for r in rows)} of {len(rows)}; wrote barriers.json, "
          f"disconnectivity.html")
    if args.check_barriers > 0:
        check_barriers(args, start, bands)
    return bands


def check_barriers(args, start, bands):
    """The first --check-barriers converged bands with barriers below 1 eV re-converged as climbing-image NEBs with
    GFN2-xTB from the model's band (end points re-relaxed with xTB); the table and barrier_check.json (resumable,
    per band)."""
    from so3krates_lab.analysis import plausible_bands, reference_neb
    from so3krates_lab.fileio import atomic_write
    from so3krates_lab.reference import gfn2_xtb

    cache = args.out / "barrier_check.json"
    rows = json.loads(cache.read_text()) if cache.exists() else []
    done = {(r["u"], r["v"]) for r in rows}
    picked = list(plausible_bands(bands))[:args.check_barriers]  # higher bands are not worth a reference NEB
    for (u, v) in picked:
        if (u, v) in done:
            continue
        t0 = time.perf_counter()
        ref = reference_neb(gfn2_xtb, np.asarray(start.numbers), bands[u, v], fmax=args.neb_fmax)
        band = bands[u, v]
        rows.append({"u": u, "v": v, "model_forward_eV": band.barrier, "model_backward_eV": band.reverse_barrier,
                     "xtb_forward_eV": ref.barrier, "xtb_backward_eV": ref.reverse_barrier,
                     "xtb_converged": ref.converged, "xtb_steps": ref.steps, "xtb_evaluations": ref.evaluations,
                     "seconds": time.perf_counter() - t0})
        atomic_write(cache, lambda tmp: Path(tmp).write_text(json.dumps(rows, indent=1)))
        print(f"  xTB NEB of edge {u}-{v}: {ref.steps} FIRE steps, {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"\nbarriers checked with GFN2-xTB (climbing-image NEB from the model's band, end points re-relaxed with "
          f"xTB, fmax {args.neb_fmax:g} eV/A)")
    print(f"{'edge':>10} {'model fwd':>10} {'xTB fwd':>8} {'model bwd':>10} {'xTB bwd':>8} {'xTB steps':>9} "
          f"{'converged':>9}   (meV)")
    for r in rows:
        edge = f"{r['u']}-{r['v']}"
        print(f"{edge:>10} {1e3 * r['model_forward_eV']:10.0f} {1e3 * r['xtb_forward_eV']:8.0f} "
              f"{1e3 * r['model_backward_eV']:10.0f} {1e3 * r['xtb_backward_eV']:8.0f} {r['xtb_steps']:9d} "
              f"{str(r['xtb_converged']):>9}")
    if rows:
        errors = [1e3 * (r[f"model_{s}_eV"] - r[f"xtb_{s}_eV"]) for r in rows for s in ("forward", "backward")]
        print(f"barrier MAE {np.mean(np.abs(errors)):.0f} meV over {len(errors)} barriers ({len(rows)} edges, both "
              f"directions); largest error {max(errors, key=abs):.0f} meV")


def print_profile(st: dict, unique: int) -> None:
    """`analysis.evaluation_profile` of a hop run as a table."""
    from so3krates_lab.analysis import evaluation_profile

    print(f"\nwhere the {st['evaluations']} evaluations went ({st['evaluations'] / max(unique, 1):.0f} per unique minimum)")
    print(f"{'quenches':>45} {'count':>7} {'evaluations':>12} {'share':>6} {'per minimum':>12}")
    for name, count, steps in evaluation_profile(st):
        print(f"{name:>45} {'' if count is None else count:>7} {steps:12d} {steps / max(st['evaluations'], 1):6.1%} "
              f"{steps / max(unique, 1):12.0f}")


def write_plot(history, path: Path):
    import plotly.graph_objects as go

    from so3krates_lab.fileio import atomic_write

    hist = np.asarray([row[:3] for row in history], dtype=float).reshape(-1, 3)
    fig = go.Figure(go.Scatter(x=hist[:, 0] / 60, y=hist[:, 1], mode="lines", name="unique minima"))
    fig.add_trace(go.Scatter(x=hist[:, 0] / 60, y=hist[:, 2], mode="lines", name="quenched frames",
                             line={"dash": "dot"}))
    fig.update_layout(title="Ac-Ala3-NHMe, shipped SO3krates model: minima found vs wall time",
                      xaxis_title="wall time (min)", yaxis_title="count")
    atomic_write(path, lambda tmp: fig.write_html(tmp, include_plotlyjs="cdn"))


def diverse_starts(args, saved, numbers, positions, k: int):
    """k of the model's training frames covering as many backbone states as possible
    (`analysis.diverse_backbone_frames`). Returns (positions (k', N, 3) Angstrom, their states)."""
    from so3krates_lab.analysis import diverse_backbone_frames
    from so3krates_lab.data import Split, load

    data = load(args.data_dir / Path(saved.metadata["data_file"]).name)
    train_idx = np.sort(np.asarray(Split.from_dict(saved.metadata["split"]).train))
    frames = np.stack([data[int(i)].positions for i in train_idx]).astype(np.float64)
    picked, regions = diverse_backbone_frames(numbers, positions, frames, k, seed=args.seed + 2)
    return frames[picked], regions


def ship(args, run, summary, bands):
    """Write the explored database and graph (with the NEB bands of its edges, if any) to args.ship (.json/.npz,
    .bands.npz) with a provenance file beside them."""
    import datetime
    import sys

    from so3krates_lab.fileio import atomic_write
    from so3krates_lab.analysis import save_minima

    stem = Path(args.ship)
    # the bands a user can read as a barrier: converged, and below 1 eV (a higher one crossed the molecule, see
    # check_barriers); the others stay in --out/bands.npz
    from so3krates_lab.analysis import plausible_bands

    kept = plausible_bands(bands)
    summary = {**summary, "bands_shipped": f"{len(kept)} of {len(bands)} NEB bands: converged, barrier below 1 eV"}
    bands = kept
    js = save_minima(stem, run.database, run.sequences, {"stats": run.stats, "history": run.history}, bands=bands)
    files = [js, stem.with_suffix(".npz")] + ([stem.with_suffix(".bands.npz")] if bands else [])
    provenance = {
        "files": [p.name for p in files],
        "what": f"minima database and minima graph of {args.start.stem} explored with the model {args.model.name}"
                + (f", with climbing-image NEB bands on {len(bands)} edges" if bands else "")
                + " (analysis.load_minima and load_minima_bands read it; MinimaBrowser.from_file draws it)",
        "command": "python benchmarks/minima.py " + " ".join(sys.argv[1:]),
        "calls": (f"the exploration resumed {run.stats.get('restarts', 0)} time(s) from its checkpoint under "
                  f"{args.out}: earlier calls of this command (with a smaller --minutes or --max-minima, other "
                  "--validate or --barriers) built it; the command above is the last"),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "model": args.model.name, "summary": summary, "sha256": {
            p.name: __import__("hashlib").sha256(p.read_bytes()).hexdigest() for p in files},
    }
    atomic_write(stem.with_suffix(".provenance.json"),
                 lambda tmp: Path(tmp).write_text(json.dumps(provenance, indent=1)))
    print(f"shipped the graph to {js} (+ .npz, .provenance.json)")


def main(argv=None) -> int:
    args = parse(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    import jax

    if args.jax_cache:  # compiled programs persist between stages and reruns (compilation costs minutes here)
        jax.config.update("jax_compilation_cache_dir", str(args.jax_cache))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)

    from so3krates_lab import Potential
    from so3krates_lab.fileio import atomic_write
    from so3krates_lab.analysis import (
        explore_minima, hop_minima, minima_vs_evaluations, minima_vs_time, reached_by, reference_relax,
    )
    from so3krates_lab.data import Split, load
    from so3krates_lab.md import BatchRelaxer, force_function
    from so3krates_lab.model import load_checkpoint

    if args.so3lr:
        from so3krates_lab.data import shipped_path
        from so3krates_lab.pretrained import so3lr

        args.model = shipped_path("models/so3lr.npz")
        if args.train_frames:
            raise SystemExit("--so3lr: SO3LR has no training split here; use --train-frames 0")
    saved = load_checkpoint(args.model)  # the checkpoint for its step and metadata, once
    # Potential.from_checkpoint also tunes the allocator before JAX runs
    potential = so3lr(dtype="float32") if args.so3lr else Potential.from_checkpoint(saved, dtype="float32")
    start = load(args.start)[0]
    numbers, positions = np.asarray(start.numbers), np.asarray(start.positions)
    n = len(numbers)
    if args.neighbour_list:  # every pair slot: the list cannot overflow
        force_fn = force_function(potential, start, capacity=n * (n - 1) // 2, all_pairs=False)
    else:  # a fixed graph of every pair: no list to check or rebuild (the same energy, see md.force_function)
        force_fn = force_function(potential, start, all_pairs=True)
    print(f"model {args.model.name} (step {saved.step}), {n} atoms, device {jax.devices()[0]}, "
          f"cpu_count {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}", flush=True)

    if args.profile_batches:
        train, _, _ = Split.from_dict(saved.metadata["split"]).apply(load(args.data_dir / Path(
            saved.metadata["data_file"]).name))
        profile_batches(args, force_fn, [train[i].positions for i in range(8)])
        return 0
    if args.compare_minimizers:
        from so3krates_lab.analysis import equivalent_groups

        train, _, _ = Split.from_dict(saved.metadata["split"]).apply(load(args.data_dir / Path(
            saved.metadata["data_file"]).name))
        frames = np.stack([train[i].positions for i in range(args.compare_minimizers)])
        compare_minimizers(args, force_fn, positions, frames, equivalent_groups(numbers, positions))
        return 0

    if args.compare_precon:
        compare_precon(args, force_fn, numbers, args.compare_precon)
        return 0
    if args.compare_neb_starts:
        compare_neb_starts(args, potential, start, args.compare_neb_starts)
        return 0
    if args.compare_early:
        compare_early(args, force_fn, numbers, args.compare_early)
        return 0

    if args.compare_prescreen:
        from so3krates_lab.analysis import equivalent_groups

        train, _, _ = Split.from_dict(saved.metadata["split"]).apply(load(args.data_dir / Path(
            saved.metadata["data_file"]).name))
        pick = np.random.default_rng(args.seed).choice(len(train), args.compare_prescreen, replace=False)
        frames = np.stack([train[int(i)].positions for i in pick])
        compare_prescreen(args, force_fn, frames, equivalent_groups(numbers, positions))
        return 0

    # 1. exploration
    starts = None
    if args.starts > 0:
        starts, regions = diverse_starts(args, saved, numbers, positions, args.starts)
        print(f"replicas start from {len(starts)} training frames covering backbone states "
              f"{dict(zip(*np.unique(regions, return_counts=True)))}", flush=True)
    if args.fmax is None:
        args.fmax = 0.01 if args.method == "hop" else 1e-3
    if args.method == "hop":
        options = {}
        if args.minimizer == "lbfgs":
            options = {**({"memory": args.lbfgs_memory} if args.lbfgs_memory else {}),
                       **({} if args.precon == "exp" else {"precon": None})}
        run = hop_minima(potential, start, n_walkers=args.walkers, acceptance=args.acceptance,
                         temperature_K=args.hop_temperature, taboo_deg=args.taboo_deg or None,
                         taboo_kicks=not args.no_taboo_kicks,
                         library_share=args.library_share, fmax=args.fmax, refine_fmax=args.refine_fmax or None,
                         max_relax_steps=args.max_relax_steps, chunk_steps=args.chunk, minimizer=args.minimizer,
                         minimizer_options=options, energy_tol=args.energy_tol, rmsd_tol=args.rmsd_tol,
                         starts=starts, minutes=args.minutes, max_minima=args.max_minima or None,
                         max_hops=args.max_frames or None, checkpoint=args.out / "explore", seed=args.seed,
                         all_pairs=not args.neighbour_list)
    else:
        run = explore_minima(potential, start, n_replicas=args.replicas,
                             temperature_K=args.temperature, timestep_fs=args.timestep, sample_every_fs=args.sample_fs,
                             n_slots=args.slots, fmax=args.fmax, max_relax_steps=args.max_relax_steps,
                             chunk_steps=args.chunk, minimizer=args.minimizer, energy_tol=args.energy_tol, rmsd_tol=args.rmsd_tol,
                             minutes=args.minutes, max_frames=args.max_frames or None,
                             checkpoint=args.out / "explore", seed=args.seed,
                             starts=starts, restart_every=args.restart_every or None,
                             minimizer_options={"memory": args.lbfgs_memory or 10} if args.minimizer == "lbfgs"
                             else None,
                             all_pairs=not args.neighbour_list, prescreen_fmax=args.prescreen_fmax or None)
    db, stats = run.database, run.stats
    ds = db.to_xarray()
    atomic_write(args.out / "minima.nc", lambda tmp: ds.to_netcdf(tmp))
    write_plot(run.history, args.out / "minima_vs_time.html")
    graph = run.graph
    quenched = stats["converged"] + stats["not_converged"] + stats["rearranged"]
    if args.method == "hop":
        print(f"\nexploration: {args.walkers} torsion-move walkers ({args.acceptance} acceptance), {args.minimizer}"
              f"{' (Exp preconditioner)' if args.minimizer == 'lbfgs' and args.precon == 'exp' else ''} to fmax "
              f"{args.fmax:g} eV/A" + (f", new minima refined to {args.refine_fmax:g}" if args.refine_fmax else ""))
    else:
        print(f"\nexploration: {args.replicas} Langevin replicas at {args.temperature:g} K, a frame every "
              f"{args.sample_fs:g} fs, {args.minimizer} to fmax {args.fmax:g} eV/A in {args.slots} slots")
    print(f"{'minutes':>8} {'unique minima':>14} {'quenches':>9}")
    for minutes, unique, frames in minima_vs_time(run.history):
        print(f"{minutes:8.1f} {unique:14d} {frames:9d}")
    print(f"{'evaluations':>12} {'unique minima':>14} {'per minimum':>12}")
    for evaluations, unique, per in minima_vs_evaluations(run.history):
        print(f"{evaluations:12d} {unique:14d} {per:12.0f}")
    if args.method == "hop":
        st = run.stats
        print(f"hops {st['hops']}: {st['new']} to a new minimum, {st['known']} to a known one, {st['returned']} back "
              f"to their own, {st['accepted']} accepted; {st['not_converged']} not converged, {st['rearranged']} "
              f"rearranged, {st['refined']} refined; {st['relax_steps']} minimiser steps "
              f"({st['relax_steps'] / max(st['elapsed_s'], 1e-9):.1f} structure-steps/s)")
        print_profile(st, len(db))
    print(f"quenched {quenched} frames: {stats['converged']} converged, {stats['not_converged']} not converged "
          f"within {args.max_relax_steps} steps, {stats['rearranged']} rearranged (bond graph changed); "
          f"{stats['relax_steps']} minimiser steps ({stats['relax_steps'] / max(stats['elapsed_s'], 1e-9):.1f} "
          f"structure-steps/s, {stats['relax_steps'] / max(quenched, 1):.0f} per quenched frame); graph: {graph.number_of_nodes()} minima, {graph.number_of_edges()} edges, "
          f"energy range {np.ptp(db.energies) if len(db) else 0:.3f} eV")
    md_steps = stats.get("frames", 0) * int(round(args.sample_fs / args.timestep))
    if args.method == "md":
        print(f"MD: {stats['frames']} frames sampled ({md_steps} Langevin structure-steps); "
              f"{stats.get('minimum_restarts', 0)} replica restarts from known minima, {stats['md_resets']} MD resets")
    if "evaluations" in stats:  # explorations checkpointed before the counters existed lack them
        print(f"energy + forces evaluations: {stats['evaluations']} ({stats['md_evaluations']} MD, "
              f"{stats['relax_evaluations']} minimiser, idle slots included), {run.evaluations_per_minimum:.0f} per "
              f"unique minimum; {stats.get('prescreen_matches', 0)} quenches settled by the loose first stage")

    summary = {"exploration": {"stats": stats, "unique_minima": len(db), "edges": graph.number_of_edges(),
                               "table": minima_vs_time(run.history), "args": {k: str(v) for k, v in
                                                                               vars(args).items()}}}

    bands = {}
    if args.barriers > 0 and graph.number_of_edges():
        bands = barriers(args, potential, start, db, graph)

    # 2. training-data coverage
    if args.train_frames > 0 and len(db):
        cache = args.out / "train_minima.npz"
        train, _, _ = Split.from_dict(saved.metadata["split"]).apply(load(args.data_dir / Path(
            saved.metadata["data_file"]).name))
        pick = np.sort(np.random.default_rng(args.seed).choice(len(train), min(args.train_frames, len(train)),
                                                               replace=False))
        if cache.exists() and np.array_equal(np.load(cache)["frames"], pick):
            with np.load(cache) as z:
                t_pos, t_e, t_ok = z["positions"], z["energies"], z["converged"]
        else:
            t0 = time.perf_counter()
            relaxer = BatchRelaxer(force_fn, positions, args.slots, args.fmax, args.max_relax_steps,
                                   args.chunk, minimizer=args.minimizer,
                                   **({"memory": args.lbfgs_memory or 10} if args.minimizer == "lbfgs" else {}))
            t_pos, t_e, t_ok = relaxer.relax_all(np.stack([train[int(i)].positions for i in pick]), progress=True,
                                                 desc="training frames")

            def write(tmp):
                with open(tmp, "wb") as fh:
                    np.savez(fh, frames=pick, positions=t_pos, energies=t_e, converged=t_ok)

            atomic_write(cache, write)
            print(f"relaxed {len(pick)} training frames in {time.perf_counter() - t0:.0f} s")
        hit = reached_by(db, t_pos[t_ok], t_e[t_ok])
        train_db_new = sum(db.find(p, e) is None for p, e in zip(t_pos[t_ok], t_e[t_ok]))
        print(f"\ntraining coverage: {len(pick)} of {len(train)} training frames relaxed ({int(t_ok.sum())} "
              f"converged); they reach {int(hit.sum())} of the {len(db)} explored minima, so {len(db) - int(hit.sum())}"
              f" explored minima are reached by none of these frames; {train_db_new} training-frame minima are not"
              f" among the explored minima")
        summary["training"] = {"frames_relaxed": len(pick), "train_size": len(train), "converged": int(t_ok.sum()),
                               "explored_reached": int(hit.sum()), "explored": len(db),
                               "training_minima_not_explored": int(train_db_new)}

    # 3. reference validation
    if args.validate > 0 and len(db):
        from so3krates_lab.reference import gfn2_xtb

        cache = args.out / "validation.nc"
        rng = np.random.default_rng(args.seed + 1)
        pick = np.sort(rng.choice(len(db), min(args.validate, len(db)), replace=False))
        import xarray as xr

        if cache.exists() and np.array_equal(xr.load_dataset(cache)["index"].values, pick):
            val = xr.load_dataset(cache)
        else:
            val = reference_relax(gfn2_xtb(), numbers, db.positions[pick], np.asarray(db.energies)[pick],
                                  db.groups, fmax=args.ref_fmax)
            val = val.assign(index=("minimum", pick))
            atomic_write(cache, lambda tmp: val.to_netcdf(tmp))
        print(f"\nvalidation against GFN2-xTB: {len(pick)} random minima re-relaxed (BFGS, fmax {args.ref_fmax} "
              "eV/A); energies relative to the lowest of the subset")
        print(f"{'minimum':>8} {'dE model meV':>13} {'dE xTB meV':>11} {'error meV':>10} {'RMSD A':>7} "
              f"{'steps':>6} {'away':>5}")
        for k in range(len(pick)):
            print(f"{int(val['index'][k]):8d} {1e3 * float(val.model_relative[k]):13.1f} "
                  f"{1e3 * float(val.reference_relative[k]):11.1f} {1e3 * float(val.error[k]):10.1f} "
                  f"{float(val.rmsd[k]):7.3f} {int(val.steps[k]):6d} {str(bool(val.relaxed_away[k])):>5}")
        print(f"relative-energy MAE {val.attrs['relative_energy_mae_meV']:.1f} meV, RMSE "
              f"{val.attrs['relative_energy_rmse_meV']:.1f} meV; median RMSD {val.attrs['median_rmsd_A']:.3f} A; "
              f"{val.attrs['relaxed_away']} of {len(pick)} relaxed away (RMSD > {val.attrs['rmsd_tol_A']} A or bonds "
              f"changed); {val.attrs['not_converged']} reference relaxations not converged")
        summary["validation"] = {k: (v.item() if hasattr(v, "item") else v) for k, v in val.attrs.items()}

    atomic_write(args.out / "summary.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=1)))
    if args.ship is not None:
        ship(args, run, summary, bands)
    print(f"\nwrote {args.out}/: explore.json/.npz, minima.nc, minima_vs_time.html, summary.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
