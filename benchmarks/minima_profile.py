#!/usr/bin/env python
"""Where the time of the minima exploration goes, and why it finds few minima (Ac-Ala3-NHMe, shipped model).

Four independent stages (pick with --stage; each prints a table and writes a JSON under --out):

- speed: one jitted energy+forces call with the skin neighbour list (capacity = every pair, as
  benchmarks/minima.py used it) and with the fixed all-pairs graph (`md.force_function(..., all_pairs=True)`),
  compile time and median call time; then `BatchRelaxer` structure-steps per second for each --slots value
  (all slots busy, chunks of --chunk steps), with its compile time.
- minimizers: the same --frames training frames relaxed to --fmax by our batched L-BFGS (several memories),
  FIRE, and by ASE's LBFGS, BFGS and FIRE on the same force function: steps to converge (median, max).
- diversity: (a) backbone torsions (phi/psi) along the shipped GFN2-xTB MD (the model's training data, 20 fs a
  frame, four 15 ps blocks at 300-600 K): how many backbone states (Ramachandran regions of the three
  residues) each block visits and how many a 0.4 ps window sees; (b) --frames training frames relaxed with the
  model and deduplicated: how many unique minima, their backbone states and phi/psi, and whether a merge ever
  joins frames of different backbone states.
- chunks: does `hop_minima` run its minimiser chunks slower than a bare refill loop? The seconds of every
  `BatchRelaxer.run_chunk` call (first, compiling chunk left out), split by whether the chunk initialised freshly
  loaded slots: a bare loop relaxing --frames one-turn torsion kicks of the shipped minima (`relax_all`,
  `hop_minima`'s default L-BFGS), then `hop_minima` for --hops hops (8 walkers), then the bare loop again, so that
  a drift of the machine's speed shows as a difference between the two bare rows. evaluations/s covers each whole
  run, its compilation included (each run builds its own relaxer).

    .venv/bin/python benchmarks/minima_profile.py --stage speed --slots 1,8,16,32
    .venv/bin/python benchmarks/minima_profile.py --stage minimizers --frames 8
    .venv/bin/python benchmarks/minima_profile.py --stage diversity --frames 30
    .venv/bin/python benchmarks/minima_profile.py --stage chunks --frames 32 --hops 60 \
        --model so3krates_lab/shipped/models/ac_ala3_nhme_xtb_hop.npz
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
    from so3krates_lab.data import shipped_path

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stage", choices=["speed", "minimizers", "diversity", "chunks"], required=True)
    p.add_argument("--model", type=Path, default=shipped_path("models/ac_ala3_nhme_xtb.npz"))
    p.add_argument("--data", type=Path, default=shipped_path("ac_ala3_nhme_gfn2xtb.npz"))
    p.add_argument("--out", type=Path, default=ROOT / "results" / "minima_profile")
    p.add_argument("--slots", default="1,8,16,32", help="batch sizes for the speed stage")
    p.add_argument("--chunk", type=int, default=25, help="minimiser steps per compiled call")
    p.add_argument("--frames", type=int, default=8, help="training frames (minimizers, diversity)")
    p.add_argument("--fmax", type=float, default=1e-3, help="eV/A")
    p.add_argument("--max-steps", type=int, default=2000)
    p.add_argument("--hops", type=int, default=60, help="hop_minima hops for the chunks stage")
    p.add_argument("--memories", default="10,30", help="L-BFGS memories to compare")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jax-cache", default=str(ROOT / "results" / "jax_cache"),
                   help="persistent compilation cache shared with benchmarks/minima.py ('' to switch off); compile "
                        "times are only meaningful on a cold cache")
    return p.parse_args(argv)


def setup(args):
    """(force functions {name: md.ForceFunction}, numbers, start positions, training frames in MD order)."""
    from so3krates_lab import Potential
    from so3krates_lab.data import Split, load
    from so3krates_lab.md import force_function

    potential = Potential.load(args.model, dtype="float32")  # also tunes the allocator before JAX runs
    data = load(args.data)
    system = data[0]
    numbers, start = np.asarray(system.numbers), np.asarray(system.positions, np.float64)
    n = len(numbers)
    fns = {"neighbour list": force_function(potential, system, capacity=n * (n - 1) // 2, all_pairs=False),
           "all pairs": force_function(potential, system, all_pairs=True)}
    split = Split.from_dict(potential.metadata["split"])
    train_idx = np.sort(np.asarray(split.train))
    return fns, numbers, start, data, train_idx


def spread(train_idx, k: int) -> np.ndarray:
    """k training-frame indices spread evenly over the MD (so over all four temperature blocks)."""
    return train_idx[np.linspace(0, len(train_idx) - 1, k).round().astype(int)]


def stage_speed(args, fns, numbers, data, train_idx):
    import jax
    import jax.numpy as jnp

    from so3krates_lab.autodiff import compiler_options
    from so3krates_lab.md import BatchRelaxer

    frames = np.stack([data[int(i)].positions for i in spread(train_idx, 32)])
    rows = {"single_call": {}, "relaxer": []}
    print(f"{len(numbers)} atoms, float32, device {jax.devices()[0]}, load average {os.getloadavg()[0]:.1f}")
    print(f"{'force function':>16} {'compile s':>10} {'ms/call':>8}")
    for name, force_fn in fns.items():
        f, aux = jax.jit(force_fn.fn, compiler_options=compiler_options()), force_fn.aux
        pos = jnp.asarray(frames[0], jnp.float32)
        t0 = time.perf_counter()
        jax.block_until_ready(f(pos, aux))
        compile_s = time.perf_counter() - t0
        times = []
        for k in range(20):
            t0 = time.perf_counter()
            jax.block_until_ready(f(jnp.asarray(frames[k % len(frames)], jnp.float32), aux))
            times.append(time.perf_counter() - t0)
        ms = 1e3 * float(np.median(times))
        rows["single_call"][name] = {"compile_s": compile_s, "ms": ms}
        print(f"{name:>16} {compile_s:10.1f} {ms:8.1f}", flush=True)
    print(f"\nBatchRelaxer (L-BFGS, chunks of {args.chunk} steps, all slots busy): compile = construction + first "
          "chunk; speed = mean of 2 further chunks")
    print(f"{'force function':>16} {'slots':>6} {'compile s':>10} {'s/chunk':>8} {'structure-steps/s':>18}")
    for b in [int(x) for x in args.slots.split(",")]:
        for name, force_fn in fns.items():
            if name == "neighbour list" and b not in (1, 16):
                continue  # the side-by-side needs only the benchmark's setting and the single structure
            t0 = time.perf_counter()
            relaxer = BatchRelaxer(force_fn, frames[0], b, fmax=1e-9, max_steps=10**6, chunk_steps=args.chunk,
                                   minimizer="lbfgs")
            relaxer.load([(k, frames[k % len(frames)]) for k in range(b)])
            init_s = time.perf_counter() - t0
            relaxer.run_chunk()
            compile_s = time.perf_counter() - t0
            times = []
            for _ in range(2):
                t0 = time.perf_counter()
                relaxer.run_chunk()
                times.append(time.perf_counter() - t0)
            s = float(np.median(times))
            rows["relaxer"].append({"force_fn": name, "slots": b, "compile_s": compile_s, "init_s": init_s,
                                    "s_per_chunk": s,
                                    "structure_steps_per_s": b * args.chunk / s})
            print(f"{name:>16} {b:6d} {compile_s:10.1f} {s:8.2f} {b * args.chunk / s:18.1f}   (of the compile: "
                  f"{init_s:.1f} s construction + load)", flush=True)
    return rows


class _Calculator:
    """A minimal ASE calculator around a jitted force function (float32 model, float64 to ASE)."""

    def __new__(cls, force_fn):
        import jax
        import jax.numpy as jnp
        from ase.calculators.calculator import Calculator, all_changes

        from so3krates_lab.autodiff import compiler_options

        f = jax.jit(lambda p: force_fn(p, None)[:2], compiler_options=compiler_options())

        class JaxCalculator(Calculator):
            implemented_properties = ["energy", "forces"]

            def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
                super().calculate(atoms, properties, system_changes)
                e, forces = f(jnp.asarray(atoms.positions, jnp.float32))
                self.results = {"energy": float(e), "forces": np.asarray(forces, np.float64)}

        return JaxCalculator()


def _steps_ours(make, force_fn, frames, fmax, max_steps):
    """Steps until each frame's fmax < fmax with our (init, step) run batched: vmapped, jitted."""
    import jax
    import jax.numpy as jnp

    from so3krates_lab.autodiff import compiler_options

    init, step = make(force_fn)
    options = compiler_options()
    vinit = jax.jit(jax.vmap(init), compiler_options=options)
    vstep = jax.jit(jax.vmap(step), compiler_options=options)
    states = vinit(jnp.asarray(frames, jnp.float32), None)
    done = np.full(len(frames), -1)
    looser = {t: np.full(len(frames), -1) for t in LOOSER}  # first step below each looser threshold
    for k in range(max_steps + 1):
        f = np.asarray(jax.vmap(lambda s: s.fmax)(states))
        done[(done < 0) & (f < fmax)] = k
        for t, first in looser.items():
            first[(first < 0) & (f < t)] = k
        if np.all(done >= 0):
            break
        states = vstep(states)
    summary = ", ".join(f"{t:g}: {np.median(first[first >= 0]) if (first >= 0).any() else -1:.0f}"
                        for t, first in looser.items())
    return done, np.asarray(states.energy, np.float64), np.asarray(states.positions, np.float64), summary


LOOSER = (0.05, 0.01, 0.003)  # eV/A


def stage_minimizers(args, fns, numbers, data, train_idx):
    from ase import Atoms
    from ase.optimize import BFGS, FIRE, LBFGS

    from so3krates_lab.analysis import equivalent_groups, symmetric_rmsd
    from so3krates_lab.md import fire, lbfgs

    force_fn = fns["all pairs"]
    pick = spread(train_idx, args.frames)
    frames = np.stack([data[int(i)].positions for i in pick]).astype(np.float64)
    groups = equivalent_groups(numbers, frames[0])
    results = {}
    variants = {f"ours L-BFGS m={m}": (lambda ff, m=m: lbfgs(ff, memory=m)) for m in map(int, args.memories.split(","))}
    variants["ours FIRE"] = fire
    for name, make in variants.items():
        t0 = time.perf_counter()
        steps, energies, positions, looser = _steps_ours(make, force_fn, frames, args.fmax, args.max_steps)
        results[name] = {"steps": steps.tolist(), "energies": energies.tolist(), "wall_s": time.perf_counter() - t0,
                         "positions": positions, "median_steps_to_looser_fmax": looser}
        print(f"{name}: steps {steps.tolist()} ({time.perf_counter() - t0:.0f} s incl. compile); median steps to "
              f"fmax {looser}", flush=True)
    calc = _Calculator(force_fn)
    for name, opt_cls, kw in (("ASE LBFGS", LBFGS, {}), ("ASE BFGS", BFGS, {}), ("ASE FIRE", FIRE, {})):
        t0 = time.perf_counter()
        steps, energies, positions = [], [], []
        for frame in frames:
            atoms = Atoms(numbers=numbers, positions=frame)
            atoms.calc = calc
            opt = opt_cls(atoms, logfile=None, **kw)
            ok = opt.run(fmax=args.fmax, steps=args.max_steps)
            steps.append(opt.get_number_of_steps() if ok else -1)
            energies.append(atoms.get_potential_energy())
            positions.append(atoms.get_positions())
        results[name] = {"steps": steps, "energies": energies, "wall_s": time.perf_counter() - t0,
                         "positions": np.asarray(positions)}
        print(f"{name}: steps {steps} ({time.perf_counter() - t0:.0f} s)", flush=True)
    base = results["ASE BFGS"]
    print(f"\n{len(frames)} training frames (spread over 300-600 K) relaxed to fmax {args.fmax:g} eV/A, max "
          f"{args.max_steps} steps (-1: not converged); RMSD / energy vs ASE BFGS's minimum of the same frame")
    print(f"{'minimiser':>18} {'median steps':>13} {'max steps':>10} {'not conv':>9} {'max RMSD A':>11} "
          f"{'max |dE| meV':>13}")
    table = []
    for name, r in results.items():
        s = np.asarray(r["steps"])
        ok = s >= 0
        rmsd = max(symmetric_rmsd(a, b, groups)[0] for a, b in zip(base["positions"], r["positions"]))
        de = 1e3 * float(np.max(np.abs(np.asarray(r["energies"]) - np.asarray(base["energies"]))))
        med = float(np.median(s[ok])) if ok.any() else float("nan")
        print(f"{name:>18} {med:13.0f} {int(s[ok].max()) if ok.any() else -1:10d} {int((~ok).sum()):9d} "
              f"{rmsd:11.3f} {de:13.1f}")
        table.append({"minimizer": name, "steps": r["steps"], "median": med, "rmsd_vs_bfgs_max": rmsd,
                      "energy_diff_max_meV": de, "wall_s": r["wall_s"]})
    return {"frames": pick.tolist(), "fmax": args.fmax, "table": table}


def stage_diversity(args, fns, numbers, data, train_idx):
    from so3krates_lab.analysis import MinimaDatabase, backbone_torsions, dihedrals
    from so3krates_lab.analysis.peptide import ramachandran_regions as ramachandran_state
    from so3krates_lab.md import BatchRelaxer

    start = np.asarray(data[0].positions, np.float64)
    quads = np.array([q for _, q in backbone_torsions(numbers, start)])
    out = {}
    # (a) the xTB MD (training data), in MD order: 4 blocks of 750 frames, 20 fs apart
    all_pos = np.stack([data[i].positions for i in range(len(data))]).astype(np.float64)
    angles = dihedrals(all_pos, quads)  # (frames, 6): phi1 psi1 phi2 psi2 phi3 psi3
    states = ramachandran_state(angles)
    block = len(data) // 4
    window = 20  # frames = 0.4 ps at 20 fs
    print("(a) backbone states along the GFN2-xTB MD (training data; 20 fs a frame; regions A/B/L per residue)")
    print(f"{'block':>6} {'states in 15 ps':>16} {'state changes':>14} {'mean states per 0.4 ps':>23}")
    rows = []
    temps = (300, 400, 500, 600)
    for b in range(4):
        s = states[b * block:(b + 1) * block]
        changes = int(np.sum(s[1:] != s[:-1]))
        per_window = [len(set(s[k:k + window])) for k in range(0, len(s) - window + 1, window)]
        rows.append({"temperature_K": temps[b], "states": sorted(set(s.tolist())), "changes": changes,
                     "mean_states_per_window": float(np.mean(per_window))})
        print(f"{temps[b]:5d}K {len(set(s)):16d} {changes:14d} {np.mean(per_window):23.2f}   "
              f"{dict(zip(*np.unique(s, return_counts=True)))}")
    out["md"] = rows
    # (b) relax training frames with the model and deduplicate
    force_fn = fns["all pairs"]
    pick = spread(train_idx, args.frames)
    frames = np.stack([data[int(i)].positions for i in pick]).astype(np.float64)
    t0 = time.perf_counter()
    relaxer = BatchRelaxer(force_fn, start, min(16, len(frames)), args.fmax, args.max_steps, args.chunk,
                           minimizer="lbfgs")
    pos, energies, ok = relaxer.relax_all(frames, progress=True, desc="training frames")
    wall = time.perf_counter() - t0
    print(f"\n(b) {len(frames)} training frames relaxed with the model (L-BFGS, fmax {args.fmax:g} eV/A): "
          f"{int(ok.sum())} converged, {relaxer.steps_done / len(frames):.0f} steps each, {wall:.0f} s")
    db = MinimaDatabase(numbers, start)
    assigned = [db.add(p, e)[0] if good else -1 for p, e, good in zip(pos, energies, ok)]
    min_angles = dihedrals(pos, quads)
    min_states = ramachandran_state(min_angles)
    frame_states = ramachandran_state(dihedrals(frames, quads))
    e0 = min(db.energies)
    print(f"unique minima (10 meV, 0.1 A): {len(db)}; per frame: frame index, MD state -> minimum, its energy (meV "
          "above the lowest), its state, phi/psi")
    for k, (i, m) in enumerate(zip(pick, assigned)):
        print(f"  frame {int(i):5d} {frame_states[k]} -> min {m:3d} {1e3 * (db.energies[m] - e0):7.1f} meV "
              f"{min_states[k]}  " + " ".join(f"{a:7.1f}" for a in min_angles[k]))
    mixed = [m for m in range(len(db)) if len({min_states[k] for k in range(len(pick)) if assigned[k] == m}) > 1]
    spread_deg = [float(np.max(np.ptp(min_angles[[k for k in range(len(pick)) if assigned[k] == m]], axis=0)))
                  for m in range(len(db))]
    print(f"minima whose merged frames have different backbone states: {mixed}; largest phi/psi spread inside one "
          f"minimum: {max(spread_deg):.1f} degrees")
    for e_tol, r_tol in ((0.005, 0.05), (0.02, 0.2), (0.05, 0.5)):
        other = MinimaDatabase(numbers, start, energy_tol=e_tol, rmsd_tol=r_tol)
        for p, e, good in zip(pos, energies, ok):
            if good:
                other.add(p, e)
        print(f"  with energy_tol {1e3 * e_tol:.0f} meV, rmsd_tol {r_tol} A: {len(other)} unique minima")
    out["relaxed"] = {"frames": pick.tolist(), "unique": len(db), "assigned": assigned,
                      "states": min_states.tolist(), "energies_meV": [1e3 * (e - e0) for e in energies],
                      "mixed_state_minima": mixed, "max_spread_deg": max(spread_deg), "wall_s": wall}
    return out


def stage_chunks(args, fns, numbers, data, train_idx):
    import sys

    from so3krates_lab import Potential
    from so3krates_lab.analysis import hop_minima, kicks_of_minima, load_minima, rotatable_bonds
    from so3krates_lab.analysis.hopping import DEFAULT_MINIMIZER_OPTIONS
    from so3krates_lab.data import shipped_path
    from so3krates_lab.md import BatchRelaxer

    relax_module = sys.modules[BatchRelaxer.__module__]
    calls = []  # (seconds, fresh slots) of every run_chunk call
    plain = relax_module.BatchRelaxer.run_chunk

    def timed(self):
        fresh, t0 = int(self._fresh.sum()), time.perf_counter()
        out = plain(self)
        calls.append((time.perf_counter() - t0, fresh))
        return out

    db = load_minima(shipped_path("minima/ac_ala3_nhme_hop.npz").with_suffix(""))[0]
    minima = [db.geometry(i) for i in range(len(db))]
    kicks = list(kicks_of_minima(minima, rotatable_bonds(numbers, minima[0]), np.random.default_rng(args.seed),
                                 args.frames, numbers=numbers))
    force_fn = fns["all pairs"]

    def bare():
        relaxer = BatchRelaxer(force_fn, kicks[0], 8, 0.01, args.max_steps, args.chunk, "lbfgs",
                               **DEFAULT_MINIMIZER_OPTIONS["lbfgs"])
        t0 = time.perf_counter()
        relaxer.relax_all(kicks)
        return relaxer.evaluations, time.perf_counter() - t0

    def hop():
        potential = Potential.load(args.model, dtype="float32")
        t0 = time.perf_counter()
        run = hop_minima(potential, data[0], n_walkers=8, max_hops=args.hops, seed=args.seed, progress=False,
                         all_pairs=True, chunk_steps=args.chunk)
        return run.stats["evaluations"], time.perf_counter() - t0

    relax_module.BatchRelaxer.run_chunk = timed
    rows = []
    print(f"seconds per run_chunk call ({args.chunk} steps of 8 slots; the first, compiling call left out), "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'run':>12} {'evaluations/s':>14} {'chunks':>7} {'median s':>9} {'fresh chunks':>13} {'median s':>9}")
    try:
        for name, run in (("bare", bare), ("hop_minima", hop), ("bare again", bare)):
            calls.clear()
            evaluations, wall = run()
            timed_calls = calls[1:]
            plain_s = [t for t, fresh in timed_calls if fresh == 0]
            fresh_s = [t for t, fresh in timed_calls if fresh > 0]
            row = {"run": name, "evaluations_per_s": evaluations / wall, "plain_chunks": len(plain_s),
                   "plain_median_s": float(np.median(plain_s)) if plain_s else None, "fresh_chunks": len(fresh_s),
                   "fresh_median_s": float(np.median(fresh_s)) if fresh_s else None}
            rows.append(row)
            fmt = lambda v: f"{v:9.3f}" if v is not None else f"{'-':>9}"
            print(f"{name:>12} {row['evaluations_per_s']:14.1f} {len(plain_s):7d} {fmt(row['plain_median_s'])} "
                  f"{len(fresh_s):13d} {fmt(row['fresh_median_s'])}", flush=True)
    finally:
        relax_module.BatchRelaxer.run_chunk = plain
    return {"rows": rows, "chunk": args.chunk, "frames": args.frames, "hops": args.hops}


def main(argv=None) -> int:
    args = parse(argv)
    if args.jax_cache:
        import jax

        jax.config.update("jax_compilation_cache_dir", str(args.jax_cache))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    import so3krates_lab

    print(f"so3krates_lab from {Path(so3krates_lab.__file__).parent}", flush=True)
    fns, numbers, start, data, train_idx = setup(args)
    stage = {"speed": stage_speed, "minimizers": stage_minimizers, "diversity": stage_diversity,
             "chunks": stage_chunks}[args.stage]
    result = stage(args, fns, numbers, data, train_idx)
    from so3krates_lab.fileio import atomic_write

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{args.stage}.json"
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=1, default=lambda o: None)))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
