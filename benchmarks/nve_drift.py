#!/usr/bin/env python
"""NVE energy conservation of the compiled MD engine in float32 and float64 (issue 4, benchmark 4).

Runs velocity Verlet with the shipped ethanol model (data/models/ethanol_pbe.npz) from a Maxwell-Boltzmann start
at --temperature, once with the model and state in float32 and once in float64 (jax_enable_x64), and prints the
total-energy drift (slope of a straight-line fit, meV/atom/ps) and fluctuation (std, meV/atom).

    .venv/bin/python benchmarks/nve_drift.py --ps 20
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def run(dtype: str, args) -> dict:
    import jax

    jax.config.update("jax_enable_x64", dtype == "float64")
    import jax.numpy as jnp

    from so3krates_lab.data import Split, load
    from so3krates_lab.md import (
        Simulation, Watchdogs, degrees_of_freedom, masses_of, maxwell_boltzmann, model_force_fn, velocity_verlet,
    )
    from so3krates_lab.model import make_energy_fn
    from so3krates_lab.train import energy_fn_from_checkpoint, load_checkpoint

    saved = load_checkpoint(args.model)
    _, config, variables = energy_fn_from_checkpoint(saved, dtype=dtype)
    data = load(args.data)
    _, _, test = Split.from_dict(saved.metadata["split"]).apply(data)
    system = test[0]
    jdtype = jnp.float64 if dtype == "float64" else jnp.float32
    force_fn, nbrs = model_force_fn(make_energy_fn(config), variables, config.cutoff, system.numbers,
                                    system.positions, dtype=jdtype)
    masses = masses_of(system.numbers)
    v0 = maxwell_boltzmann(masses, args.temperature, 0, system.positions)
    init, step = velocity_verlet(force_fn, args.timestep)
    state = init(jnp.asarray(system.positions, jdtype), jnp.asarray(v0, jdtype), masses, aux=nbrs)
    sim = Simulation(step, state, timestep_fs=args.timestep, dof=degrees_of_freedom(system.n_atoms),
                     record_every=20, chunk_steps=2000, force_fn=force_fn,
                     watchdogs=Watchdogs().with_bonds(system.numbers, system.positions))
    frames = sim.run(int(args.ps * 1000 / args.timestep), progress=True)
    n = system.n_atoms
    t_ps = frames.time_fs / 1000
    total = frames.total / n
    return {"dtype": dtype, "ps": float(t_ps[-1]), "stopped": sim.stop_reason,
            "drift": 1e3 * np.polyfit(t_ps, total, 1)[0], "std": 1e3 * np.std(total),
            "mean_T": float(np.mean(frames.temperature))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=ROOT / "data" / "models" / "ethanol_pbe.npz")
    p.add_argument("--data", type=Path, default=ROOT / "data" / "ethanol_pbe_500K.npz")
    p.add_argument("--ps", type=float, default=10.0)
    p.add_argument("--timestep", type=float, default=0.5)
    p.add_argument("--temperature", type=float, default=600.0, help="K at start (about half after equipartition)")
    p.add_argument("--dtype", default="float32,float64")
    args = p.parse_args(argv)
    from so3krates_lab.memory import tune_malloc

    tune_malloc()  # before JAX runs: no page faults on every call (so3krates_lab/memory.py)
    rows = [run(d, args) for d in args.dtype.split(",")]
    print(f"NVE, shipped ethanol model, velocity Verlet {args.timestep} fs, start {args.temperature:g} K")
    print(f"{'dtype':<9}{'ps':>7}{'mean T K':>10}{'drift meV/atom/ps':>19}{'std meV/atom':>14}  stopped")
    for r in rows:
        print(f"{r['dtype']:<9}{r['ps']:>7.1f}{r['mean_T']:>10.0f}{r['drift']:>19.4f}{r['std']:>14.4f}  "
              f"{r['stopped'] or '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
