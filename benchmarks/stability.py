#!/usr/bin/env python
"""MD stability protocol (spec section 6, Fu et al. TMLR 2023): Nose-Hoover chain NVT, 0.5 fs, up to 300 ps.

A replica is unstable from the first recorded frame where any covalent bond length (bonds of the start
geometry, 1.2 x covalent radii) deviates from its start value by more than 0.5 A; its stable time is the time
until then, capped at --ps. Replicas differ in their Maxwell-Boltzmann seed. Each replica writes an
append-safe trajectory store under --out and resumes from it when the command is run again, so long runs can
be done in pieces (--ps can be raised between runs).

    .venv/bin/python benchmarks/stability.py --model data/models/ethanol_pbe.npz --ps 10 --replicas 3
    .venv/bin/python benchmarks/stability.py --model results/rmd17_aspirin_zeros_seed0_best.npz \
        --start ../shared/data/rmd17/rmd17_aspirin_train_01.npz --temperature 500 --ps 300

Prints one row per replica: stable ps, simulated ps, mean temperature, wall time, ms per step.
`--report --out DIR` runs nothing and prints every run stored under DIR, unfinished ones included.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, help="checkpoint to run (required unless --report)")
    p.add_argument("--report", action="store_true",
                   help="run nothing: print every run stored under --out (also unfinished ones) and exit")
    p.add_argument("--start", type=Path, default=None,
                   help="data file whose first frame starts the runs (default: the model's own test frames)")
    p.add_argument("--temperature", type=float, default=500.0)
    p.add_argument("--ps", type=float, default=300.0)
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--timestep", type=float, default=0.5)
    p.add_argument("--tau", type=float, default=50.0, help="Nose-Hoover relaxation time (fs)")
    p.add_argument("--chunk", type=int, default=2000, help="steps per compiled chunk")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "stability")
    args = p.parse_args(argv)
    from so3krates_lab.memory import tune_malloc

    tune_malloc()  # before JAX runs: no page faults on every call (so3krates_lab/memory.py)
    if args.report:
        return report(args.out)
    if args.model is None:
        p.error("--model is required (or --report)")

    import jax.numpy as jnp

    from so3krates_lab.data import Split, load
    from so3krates_lab.md import (
        Simulation, TrajectoryStore, Watchdogs, degrees_of_freedom, masses_of, maxwell_boltzmann, model_force_fn,
        nose_hoover_chain,
    )
    from so3krates_lab.model import make_energy_fn
    from so3krates_lab.train import energy_fn_from_checkpoint, load_checkpoint

    saved = load_checkpoint(args.model)
    _, config, variables = energy_fn_from_checkpoint(saved, dtype="float32")
    if args.start is not None:
        system = load(args.start)[0]
    else:
        data_file = ROOT / "data" / Path(saved.metadata["data_file"]).name
        _, _, test = Split.from_dict(saved.metadata["split"]).apply(load(data_file))
        system = test[0]
    n = system.n_atoms
    masses = masses_of(system.numbers)
    dogs = Watchdogs(min_distance=None).with_bonds(system.numbers, system.positions, max_bond_deviation=0.5)
    total_steps = int(round(args.ps * 1000 / args.timestep))
    rows = []
    for r in range(args.replicas):
        folder = args.out / f"{args.model.stem}_{args.temperature:g}K" / f"replica_{r}"
        force_fn, nbrs = model_force_fn(make_energy_fn(config), variables, config.cutoff, system.numbers,
                                        system.positions)
        init, step = nose_hoover_chain(force_fn, args.timestep, args.temperature, n_atoms=n, tau_fs=args.tau)
        v0 = maxwell_boltzmann(masses, args.temperature, seed=r, positions=system.positions)
        state = init(jnp.asarray(system.positions, jnp.float32), jnp.asarray(v0, jnp.float32), masses, aux=nbrs)
        store = TrajectoryStore(folder, numbers=system.numbers, timestep_fs=args.timestep,
                                temperature_K=args.temperature, model=str(args.model))
        verdict = folder / "verdict.json"
        if verdict.exists():
            rows.append(json.loads(verdict.read_text()))
            if rows[-1]["unstable"] or rows[-1]["simulated_ps"] >= args.ps:
                continue
            rows.pop()
        if store.has_state():
            state = store.load_state(state)
            if state.aux is not None:  # the neighbour list is not stored: rebuild it at the restored positions
                _, _, aux = force_fn(state.positions, force_fn.reallocate(state.aux, state.positions,
                                                                          state.aux.capacity))
                state = state.replace(aux=aux)
        sim = Simulation(step, state, timestep_fs=args.timestep, dof=degrees_of_freedom(n), record_every=20,
                         chunk_steps=args.chunk, watchdogs=dogs, store=store, force_fn=force_fn,
                         conserved=step.conserved_energy)
        remaining = total_steps - int(state.step)
        t0 = time.perf_counter()
        steps_before = int(state.step)
        if remaining > 0:
            for _ in sim.chunks(remaining, progress=True):
                pass
        wall = time.perf_counter() - t0
        done_steps = int(sim.state.step) - steps_before
        ds = store.open() if store.chunk_paths() else None
        simulated = float(ds.time.values[-1]) / 1000 if ds is not None else 0.0
        unstable = sim.stop_reason is not None and "bond" in sim.stop_reason
        row = {"replica": r, "stable_ps": simulated if unstable else min(simulated, args.ps),
               "simulated_ps": simulated, "unstable": unstable, "reason": sim.stop_reason,
               "mean_T": float(ds.temperature.values.mean()) if ds is not None else float("nan"),
               "wall_s": wall, "ms_per_step": 1e3 * wall / done_steps if done_steps else float("nan")}
        verdict.write_text(json.dumps(row, indent=1))
        rows.append(row)
    print(f"stability: {args.model.name}, Nose-Hoover chain {args.temperature:g} K, {args.timestep} fs, "
          f"cap {args.ps:g} ps, bond deviation > 0.5 A = unstable")
    print(f"{'replica':>7}{'stable ps':>11}{'simulated ps':>14}{'mean T K':>10}{'wall s':>9}{'ms/step':>9}  verdict")
    for row in rows:
        print(f"{row['replica']:>7}{row['stable_ps']:>11.2f}{row['simulated_ps']:>14.2f}{row['mean_T']:>10.0f}"
              f"{row['wall_s']:>9.0f}{row['ms_per_step']:>9.2f}  {'UNSTABLE: ' + row['reason'] if row['unstable'] else 'stable'}")
    return 0


def report(out: Path) -> int:
    """One row per replica folder under out/<model>_<T>K/: what its trajectory store holds now, so runs that were
    stopped part-way (killed, or still going) are reported with the time they reached. The stable time is the
    time of the last stored frame: an unstable run stores frames up to its last good one."""
    from so3krates_lab.md import TrajectoryStore

    folders = sorted(out.glob("*/replica_*"))
    if not folders:
        print(f"no stability runs under {out}")
        return 1
    print(f"stability runs under {out} (unstable: a covalent bond deviates by > 0.5 A from its start length)")
    print(f"{'run':<46}{'replica':>8}{'stable ps':>11}{'mean T K':>10}  state")
    for folder in folders:
        store = TrajectoryStore(folder)
        if not store.chunk_paths():
            continue
        ds = store.open()
        simulated = float(ds.time.values[-1]) / 1000
        reason = store.stop_reason()
        unstable = reason is not None and "bond" in reason
        verdict = folder / "verdict.json"
        cap = json.loads(verdict.read_text())["simulated_ps"] if verdict.exists() else None
        if unstable:
            state = "UNSTABLE: " + reason
        elif cap is not None and abs(cap - simulated) < 1e-6:
            state = f"stable, finished (cap {cap:g} ps)"
        else:
            state = "stable so far, unfinished (rerun with the same --ps to resume)"
        print(f"{folder.parent.name:<46}{folder.name.split('_')[-1]:>8}{simulated:>11.2f}"
              f"{float(ds.temperature.values.mean()):>10.0f}  {state}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
