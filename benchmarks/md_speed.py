#!/usr/bin/env python
"""MD speed: the compiled engine against one energy+forces evaluation and against ASE, side by side.

For each system, in one process and interleaved (these machines are noisy; compare ratios, quote medians):
  eval   median ms of one jitted energy+forces call on a fixed graph (no neighbour list);
  engine median ms per step of compiled velocity-Verlet chunks (skin 0.5 A neighbour list rebuilt in-jit,
         one frame recorded per chunk), after a warm-up chunk;
  ase    median ms per step of ase.md.VelocityVerlet with so3krates_lab's ASE calculator, after warm-up.
The model is the default configuration with random parameters whose forces are scaled down (energy_scale
0.01) so that atoms move ballistically at thermal speed (300 K start) and the list is rebuilt at a realistic
rate; speed does not depend on the parameter values. float32.

    .venv/bin/python benchmarks/md_speed.py                       # ethanol, aspirin, water-192
    .venv/bin/python benchmarks/md_speed.py --systems water-192,water-1536,water-5184,water-12288   # scaling

Steps per timed block shrink with system size (`--atom-steps` / atoms, between 4 and `--steps`) so that large
boxes finish. The neighbour list switches to the cell list (O(N) rebuilds) from a few hundred atoms on where the
cell allows it; the `list` column says which one ran.
"""

from __future__ import annotations

import argparse
import sys
import time
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
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp
    from ase import Atoms, units
    from ase.md.verlet import VelocityVerlet

    from so3krates_lab.autodiff import compiler_options, energy_and_forces
    from so3krates_lab.graph import graph_from_system
    from so3krates_lab.interop import So3kratesCalculator
    from so3krates_lab.md import (
        Simulation, degrees_of_freedom, masses_of, maxwell_boltzmann, model_force_fn, velocity_verlet,
    )
    from so3krates_lab.model import So3kratesConfig, init_variables, make_energy_fn, with_constants

    config = So3kratesConfig()
    energy_fn = make_energy_fn(config)
    rows = []
    for name in args.systems.split(","):
        try:
            system, source, _ = load_system(name, args.data_dir, 0)
        except FileNotFoundError as err:
            print(f"skipping {name}: {err} not found", file=sys.stderr)
            continue
        n = system.n_atoms
        graph = graph_from_system(system, config.cutoff)
        variables = with_constants(init_variables(config, graph), element_energy=np.zeros(119), energy_scale=0.01)
        evaluate = jax.jit(lambda v, g: energy_and_forces(energy_fn, v, g), compiler_options=compiler_options())
        jax.block_until_ready(evaluate(variables, graph))

        cell, pbc = system.box_and_pbc() if system.periodic else (None, (False,) * 3)
        force_fn, nbrs = model_force_fn(energy_fn, variables, config.cutoff, system.numbers, system.positions,
                                        cell, pbc, skin=0.5)
        masses = masses_of(system.numbers)
        v0 = maxwell_boltzmann(masses, 300.0, 0, None if system.periodic else system.positions)
        steps = max(4, min(args.steps, args.atom_steps // n))
        init, step = velocity_verlet(force_fn, 0.5)
        state = init(jnp.asarray(system.positions, jnp.float32), jnp.asarray(v0, jnp.float32), masses, aux=nbrs)
        sim = Simulation(step, state, timestep_fs=0.5, dof=degrees_of_freedom(n, system.periodic),
                         record_every=steps, chunk_steps=steps, watchdogs=None, force_fn=force_fn,
                         periodic=system.periodic)
        chunks = sim.chunks(steps * (args.repeats + 1), progress=False)
        next(chunks)  # compile + warm-up

        atoms = Atoms(numbers=system.numbers, positions=system.positions, cell=cell, pbc=pbc)
        atoms.calc = So3kratesCalculator(config, variables)
        atoms.set_velocities(v0 / units.fs)
        dyn = VelocityVerlet(atoms, 0.5 * units.fs)
        ase_steps = max(2, min(20, steps // 5))
        dyn.run(ase_steps)  # compile + warm-up

        t_eval, t_engine, t_ase = [], [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            n_eval = max(2, min(20, steps // 5))
            for _ in range(n_eval):
                jax.block_until_ready(evaluate(variables, graph))
            t_eval.append((time.perf_counter() - t0) / n_eval)
            t0 = time.perf_counter()
            next(chunks)
            t_engine.append((time.perf_counter() - t0) / steps)
            t0 = time.perf_counter()
            dyn.run(ase_steps)
            t_ase.append((time.perf_counter() - t0) / ase_steps)
        e, s, a = (1e3 * float(np.median(t)) for t in (t_eval, t_engine, t_ase))
        kind = "cell" if force_fn.grid is not None else "all"
        rows.append((name, n, e, s, a, s / e, a / s, int(sim.state.aux.builds), sim.reallocations, kind, steps))
        print(f"{name}: done ({source})", file=sys.stderr)

    print(f"MD speed, default SO3krates config, float32, velocity Verlet 0.5 fs, median of {args.repeats} "
          f"blocks (steps per engine chunk in `steps`)")
    print(f"{'system':<12}{'atoms':>6}{'steps':>6}{'eval ms':>10}{'engine ms/step':>16}{'ASE ms/step':>13}"
          f"{'engine/eval':>12}{'ASE/engine':>11}{'us/atom':>9}{'list':>5}{'builds':>7}{'reallocs':>9}")
    for name, n, e, s, a, r1, r2, builds, re, kind, steps in rows:
        print(f"{name:<12}{n:>6}{steps:>6}{e:>10.2f}{s:>16.2f}{a:>13.2f}{r1:>12.2f}{r2:>11.2f}{1e3 * s / n:>9.1f}"
              f"{kind:>5}{builds:>7}{re:>9}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
