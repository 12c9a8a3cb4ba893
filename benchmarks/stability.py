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
    if args.report:
        return report(args.out)
    if args.model is None:
        p.error("--model is required (or --report)")

    from so3krates_lab import Potential, analysis, md
    from so3krates_lab.data import Split, load, shipped_path

    potential = Potential.load(args.model, dtype="float32")  # also tunes the allocator before JAX runs
    if args.start is not None:
        system = load(args.start)[0]
    else:  # the model's own test frames, from the shipped data file its checkpoint names
        data_file = shipped_path(Path(potential.metadata["data_file"]).name)
        _, _, test = Split.from_dict(potential.metadata["split"]).apply(load(data_file))
        system = test[0]
    # the protocol: only the bond criterion decides (the automatic temperature and drift limits are off)
    dogs = md.Watchdogs(min_distance=None, max_temperature=None, max_energy_drift=None).with_bonds(
        system, max_bond_deviation=0.5)
    thermostat = md.NoseHoover(timestep_fs=args.timestep, temperature_K=args.temperature, tau_fs=args.tau)
    total_steps = int(round(args.ps * 1000 / args.timestep))
    rows = []
    for r in range(args.replicas):
        folder = args.out / f"{args.model.stem}_{args.temperature:g}K" / f"replica_{r}"
        verdict = folder / "verdict.json"
        if verdict.exists():
            rows.append(json.loads(verdict.read_text()))
            if rows[-1]["unstable"] or rows[-1]["simulated_ps"] >= args.ps:
                continue
            rows.pop()
        store = md.TrajectoryStore(folder, numbers=system.numbers, timestep_fs=args.timestep,
                                   temperature_K=args.temperature, model=str(args.model))
        # one replica per store, seed r; a store that holds a state is resumed from it
        sim = md.simulate(potential, system, thermostat, seed=r, store=store, watchdogs=dogs, record_every=20,
                          chunk_steps=args.chunk)
        steps_before = int(sim.state.step)
        remaining = total_steps - steps_before
        t0 = time.perf_counter()
        if remaining > 0:
            for _ in sim.chunks(remaining, progress=True):
                pass
        wall = time.perf_counter() - t0
        done_steps = int(sim.state.step) - steps_before
        traj = store.open() if store.chunk_paths() else None
        simulated = float(traj.time_fs[-1]) / 1000 if traj is not None else 0.0
        unstable = sim.stop_reason is not None and "bond" in sim.stop_reason
        # stopped: the time of the last good frame; else the time simulated, capped at --ps
        stable = float(analysis.stable_times_ps(traj, duration_fs=min(simulated, args.ps) * 1000)[0]) \
            if traj is not None else 0.0
        row = {"replica": r, "stable_ps": stable,
               "simulated_ps": simulated, "unstable": unstable, "reason": sim.stop_reason,
               "mean_T": float(traj.temperature.mean()) if traj is not None else float("nan"),
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
    from so3krates_lab.analysis import stable_times_ps
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
        traj = store.open()
        simulated = float(stable_times_ps(traj)[0])  # the last stored frame's time, stopped or not
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
              f"{float(traj.temperature.mean()):>10.0f}  {state}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
