#!/usr/bin/env python
"""Margins of the default watchdogs (`md.Watchdogs()`, limits fitted to each run) over the project's own runs.

For every trajectory store under --stores (those of benchmarks/stability.py: <model>_<T>K/replica_<r>, finished or
still running), resolves the default watchdogs as `md.simulate` does for that run (start geometry: the model's
first test frame, as stability.py uses; a Nose-Hoover chain at the store's temperature), evaluates them over every
stored frame (`md.watchdogs.watchdog_margins`) and prints, per check, the extreme seen, the limit and seen / limit
(min distance: limit / seen); a ratio above 1 would have stopped the run.

--nve-ps P also runs P ps of NVE (velocity Verlet, 0.5 fs, start 500 K) of the shipped ethanol model with the
default watchdogs into --nve-store, resuming what that store already holds, and reports it with the energy drift
extrapolated to 300 ps.

    .venv/bin/python benchmarks/watchdog_margins.py                  # the stability stores as they are now
    .venv/bin/python benchmarks/watchdog_margins.py --nve-ps 10      # and 10 ps of NVE (resumable)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def start_system(model_path: str):
    """The start geometry of benchmarks/stability.py: the first test frame of the model's own split."""
    from so3krates_lab import Potential
    from so3krates_lab.data import Split, load, shipped_path

    path = Path(model_path)
    potential = Potential.load(path if path.is_absolute() else ROOT / path)
    data_file = shipped_path(Path(potential.metadata["data_file"]).name)
    _, _, test = Split.from_dict(potential.metadata["split"]).apply(load(data_file))
    return test[0]


def print_margins(label: str, margins: dict, extrapolate_ps: float | None = None) -> None:
    from so3krates_lab.md.watchdogs import margin_rows

    fired = margins["first_violation"]
    verdict = f"WOULD STOP at {fired[0] / 1e3:.3f} ps: {fired[1]}" if fired else "never fires"
    print(f"\n{label}: {margins['frames']} frames, {margins['t_end_ps']:.1f} ps; {verdict}")
    print(f"  {'check':<20}{'extreme seen':>16}{'limit':>16}{'seen/limit':>12}")
    for name, seen, limit, ratio in margin_rows(margins, extrapolate_ps):
        print(f"  {name:<20}{seen:>16}{limit:>16}{ratio:>12}")
    slope = margins.get("drift_slope_meV_per_atom_ps")
    if slope is not None:
        print(f"  drift slope {slope:.4f} meV/atom/ps")


def stability_margins(stores: Path) -> None:
    from so3krates_lab.md import TrajectoryStore, Watchdogs, degrees_of_freedom
    from so3krates_lab.md.watchdogs import watchdog_margins

    systems = {}
    for folder in sorted(stores.glob("*/replica_*")):
        store = TrajectoryStore(folder)
        if not store.chunk_paths():
            continue
        model, temperature = store.meta.get("model"), store.meta.get("temperature_K")
        if model is None or temperature is None:
            print(f"\n{folder}: no model or temperature in meta.json, skipped")
            continue
        if model not in systems:
            systems[model] = start_system(model)
        system = systems[model]
        dogs = Watchdogs().for_run(system.numbers, system.positions, temperature_K=temperature,
                                   start_temperature_K=temperature, energy_conserving=False,
                                   dof=degrees_of_freedom(system.n_atoms))
        traj = store.open()
        print_margins(f"{folder.relative_to(stores)} (Nose-Hoover chain {temperature:g} K)",
                      watchdog_margins(dogs, traj))
        print("  " + dogs.summary().replace("\n", "\n  "))


def nve_margins(ps: float, folder: Path, temperature_K: float = 500.0, timestep_fs: float = 0.5) -> None:
    from so3krates_lab import md, pretrained
    from so3krates_lab.data import Split, load, shipped_path
    from so3krates_lab.md.watchdogs import watchdog_margins

    potential = pretrained.load("ethanol_pbe", dtype="float32")
    data_file = shipped_path(Path(potential.metadata["data_file"]).name)
    _, _, test = Split.from_dict(potential.metadata["split"]).apply(load(data_file))
    system = test[0]
    store = md.TrajectoryStore(folder, numbers=system.numbers, timestep_fs=timestep_fs,
                               start_temperature_K=temperature_K, integrator="NVE", model="ethanol_pbe")
    sim = md.simulate(potential, system, md.NVE(timestep_fs=timestep_fs), temperature_K=temperature_K, seed=0,
                      store=store, record_every=20, chunk_steps=2000)
    remaining = int(round(ps * 1000 / timestep_fs)) - int(sim.state.step)
    if remaining > 0 and sim.active.all():
        for _ in sim.chunks(remaining, progress=True):
            pass
    e0 = float(store.load_driver_state()["e0_per_atom"].reshape(-1)[0])
    margins = watchdog_margins(sim.watchdogs, store.open(), e0)
    print_margins(f"NVE ethanol_pbe {timestep_fs:g} fs from {temperature_K:g} K ({folder})", margins,
                  extrapolate_ps=300.0)
    print("  " + sim.watchdogs.summary().replace("\n", "\n  "))
    if sim.stop_reason:
        print(f"  the run stopped: {sim.stop_reason}")
    (folder / "margins.json").write_text(json.dumps(margins, indent=1))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stores", type=Path, default=ROOT / "results" / "stability")
    p.add_argument("--nve-ps", type=float, default=0.0, help="ps of NVE of the shipped ethanol model (0: none)")
    p.add_argument("--nve-store", type=Path, default=ROOT / "results" / "watchdog_margins" / "nve_ethanol_500K")
    args = p.parse_args(argv)
    stability_margins(args.stores)
    if args.nve_ps > 0:
        nve_margins(args.nve_ps, args.nve_store)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
