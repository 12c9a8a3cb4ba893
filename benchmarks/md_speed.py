#!/usr/bin/env python
"""MD speed: the compiled engine against one energy+forces evaluation and against ASE, side by side.

For each system, in one process and interleaved (these machines are noisy; compare ratios, quote medians):
  eval   median ms of one jitted energy+forces call on a fixed graph (no neighbour list);
  engine median ms per step of compiled velocity-Verlet chunks (one frame recorded per chunk), after a
         warm-up chunk, with `md.force_function`'s default pair set: the fixed graph of every pair for a small
         free molecule (no more pair slots than a list would have), else a skin 0.5 A neighbour list rebuilt
         in-jit; where it is the fixed graph, the list engine is timed beside it (`list ms/step`);
  ase    median ms per step of ase.md.VelocityVerlet with so3krates_lab's ASE calculator, after warm-up.
The model is the default configuration with random parameters whose forces are scaled down (energy_scale
0.01) so that atoms move ballistically at thermal speed (300 K start) and the list is rebuilt at a realistic
rate; speed does not depend on the parameter values. float32.

    .venv/bin/python benchmarks/md_speed.py                       # ethanol, aspirin, water-192
    .venv/bin/python benchmarks/md_speed.py --systems water-192,water-1536,water-5184,water-12288   # scaling

Steps per timed block shrink with system size (`--atom-steps` / atoms, between 4 and `--steps`) so that large
boxes finish. The neighbour list switches to the cell list (O(N) rebuilds) from a few hundred atoms on where the
cell allows it; the `pairs` column says which one ran.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import default_data_dir, load_system  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--systems", default="ethanol,aspirin,water-192")
    p.add_argument("--steps", type=int, default=500, help="steps per engine chunk (and per ASE block)")
    p.add_argument("--atom-steps", type=int, default=100_000,
                   help="steps per block are at most this divided by the number of atoms (at least 4)")
    p.add_argument("--repeats", type=int, default=5, help="timed chunks/blocks per method")
    p.add_argument("--data-dir", type=Path, default=default_data_dir())
    p.add_argument("--skin", type=float, default=0.5, help="engine neighbour-list skin (Angstrom)")
    p.add_argument("--headroom", type=float, default=1.3, help="engine neighbour-list capacity headroom")
    p.add_argument("--no-ase-above", type=int, default=None,
                   help="skip the ASE comparison for systems with more atoms than this (memory, time)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON (rewritten after each row)")
    args = p.parse_args(argv)
    from so3krates_lab.memory import ensure_tuned

    # The potential is built from fresh parameters (no Potential.load, which would apply the allocator tuning), so
    # apply it here, before JAX runs, as the library's entry points do (SO3KRATES_TUNE_MALLOC=0 switches it off)
    ensure_tuned()

    from so3krates_lab import Potential
    from so3krates_lab.graph import graph_from_system
    from so3krates_lab.model import So3kratesConfig, init_variables
    from so3krates_lab.workflows.benchmarking import md_speed

    import json
    import os

    config = So3kratesConfig()
    header = (f"MD speed, default SO3krates config, float32, velocity Verlet 0.5 fs, median of {args.repeats} "
              f"blocks (steps per engine chunk in `steps`), skin {args.skin} A, headroom {args.headroom}")
    columns = (f"{'system':<12}{'atoms':>6}{'steps':>6}{'eval ms':>10}{'engine ms/step':>16}{'ASE ms/step':>13}"
               f"{'engine/eval':>12}{'ASE/engine':>11}{'us/atom':>9}{'pairs':>6}{'list ms/step':>13}{'builds':>7}"
               f"{'reallocs':>9}{'load':>6}")
    print(header)
    print(columns, flush=True)
    rows = []
    for name in args.systems.split(","):
        try:
            system, source, _ = load_system(name, args.data_dir, 0)
        except FileNotFoundError as err:
            print(f"skipping {name}: {err} not found", file=sys.stderr)
            continue
        n = system.n_atoms
        graph = graph_from_system(system, config.cutoff)
        potential = Potential.create(config, init_variables(config, graph)).with_constants(
            element_energy=np.zeros(119), energy_scale=0.01)
        steps = max(4, min(args.steps, args.atom_steps // n))
        small = max(2, min(20, steps // 5))
        skip_ase = args.no_ase_above is not None and n > args.no_ase_above
        row = md_speed(system, potential, steps=steps, repeats=args.repeats,
                       ase_steps=0 if skip_ase else small, eval_calls=small, skin=args.skin, headroom=args.headroom)
        row.update(system=name, source=source, load_average=os.getloadavg()[0])
        rows.append(row)
        # one line per system as soon as it is measured, so a killed run keeps what it measured
        e, s_, a = row["eval_ms"], row["engine_ms_per_step"], row["ase_ms_per_step"]
        print(f"{name:<12}{n:>6}{steps:>6}{e:>10.2f}{s_:>16.2f}{a:>13.2f}{s_ / e:>12.2f}{a / s_:>11.2f}"
              f"{1e3 * s_ / n:>9.1f}{row['neighbour_list']:>6}{row['list_ms_per_step']:>13.2f}{row['list_builds']:>7}"
              f"{row['reallocations']:>9}{row['load_average']:>6.1f}", flush=True)
        if args.json is not None:
            args.json.write_text(json.dumps({"header": header, "rows": rows}, indent=1))
    print("pairs: the engine's pair set (fixed: every pair of a small free molecule, no list; list: skin list "
          "with all-pairs rebuilds; cell: cell list); list ms/step: the neighbour-list engine timed in the same "
          "blocks where the engine used the fixed graph (else nan); builds: that list's rebuilds; "
          "load: 1-minute load average when the row finished (2 = both cores busy); ASE nan: skipped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
