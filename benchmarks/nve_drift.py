#!/usr/bin/env python
"""NVE energy conservation of the compiled MD engine in float32 and float64 (issue 4, benchmark 4).

Runs velocity Verlet with the shipped ethanol model (`pretrained.load("ethanol_pbe")`) from a Maxwell-Boltzmann
start at --temperature, once with the model and state in float32 and once in float64 (jax_enable_x64), and prints
the total-energy drift (slope of a straight-line fit, meV/atom/ps) and fluctuation (std, meV/atom), both from
`analysis.energy_conservation`.

    .venv/bin/python benchmarks/nve_drift.py --ps 20
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np


def run(dtype: str, args) -> dict:
    import jax

    jax.config.update("jax_enable_x64", dtype == "float64")

    from so3krates_lab import Potential, analysis, md
    from so3krates_lab.data import Split, load

    potential = Potential.load(args.model, dtype=dtype)
    _, _, test = Split.from_dict(potential.metadata["split"]).apply(load(args.data))
    system = test[0]
    sim = md.simulate(potential, system, md.NVE(timestep_fs=args.timestep), temperature_K=args.temperature, seed=0,
                      record_every=20, chunk_steps=2000, watchdogs=md.Watchdogs().with_bonds(system))
    traj = sim.run(int(args.ps * 1000 / args.timestep), progress=True)
    n = system.n_atoms
    if len(traj) >= 2:
        # NVE conserves potential + kinetic energy; sum them on the host in float64 (`traj.total`): the engine's
        # own `conserved` is summed in the run's dtype, whose float32 rounding (~0.2 meV at -4210 eV) would add
        # to the float32 row's fluctuation
        conservation = analysis.energy_conservation(dataclasses.replace(traj, conserved=traj.total))
        drift, std = conservation["drift_meV_per_atom_ps"], conservation["std_meV"] / n
    else:  # stopped before a second frame
        drift = std = float("nan")
    return {"dtype": dtype, "ps": float(traj.time_fs[-1]) / 1000 if len(traj) else 0.0, "stopped": sim.stop_reason,
            "drift": drift, "std": std,
            "mean_T": float(np.mean(traj.temperature)) if len(traj) else float("nan")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    from so3krates_lab.data import shipped_path

    p.add_argument("--model", type=Path, default=shipped_path("models/ethanol_pbe.npz"))
    p.add_argument("--data", type=Path, default=shipped_path("ethanol_pbe_500K.npz"))
    p.add_argument("--ps", type=float, default=10.0)
    p.add_argument("--timestep", type=float, default=0.5)
    p.add_argument("--temperature", type=float, default=600.0, help="K at start (about half after equipartition)")
    p.add_argument("--dtype", default="float32,float64")
    args = p.parse_args(argv)
    rows = [run(d, args) for d in args.dtype.split(",")]
    print(f"NVE, shipped ethanol model, velocity Verlet {args.timestep} fs, start {args.temperature:g} K")
    print(f"{'dtype':<9}{'ps':>7}{'mean T K':>10}{'drift meV/atom/ps':>19}{'std meV/atom':>14}  stopped")
    for r in rows:
        print(f"{r['dtype']:<9}{r['ps']:>7.1f}{r['mean_T']:>10.0f}{r['drift']:>19.4f}{r['std']:>14.4f}  "
              f"{r['stopped'] or '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
