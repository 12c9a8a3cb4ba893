"""The main job: the toolkit end to end on the shipped ethanol data (README: `bash tools/run.sh main`).

    python -m so3krates_lab.demo                 # load the shipped model, test it, run a short MD
    python -m so3krates_lab.demo --train 3       # first train a fresh model for 3 minutes on the shipped data

1. Load the shipped PBE/def2-SVP ethanol data (data/ethanol_pbe_500K.npz) and model (data/models/ethanol_pbe.npz).
   The model's checkpoint records the split it was trained with; its test frames are evaluated here.
2. Print the test errors (energy and per-element force MAE/RMSE) and write a parity plot.
3. Run NVE molecular dynamics with the model in the compiled MD engine (so3krates_lab.md), Maxwell-Boltzmann
   start, with watchdogs.
4. Write results/demo/: trajectory/ (append-safe netCDF store), ethanol_nve.extxyz, md.html (energies and
   temperature), parity.html, summary.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "ethanol_pbe_500K.npz"
MODEL = ROOT / "data" / "models" / "ethanol_pbe.npz"


def run_md(config, variables, start_positions, numbers, *, temperature_K: float, steps: int, timestep_fs: float,
           seed: int, store_dir: Path):
    """Compiled NVE (velocity Verlet, skin neighbour list, chunks of 1000 steps recorded every 10) from
    Maxwell-Boltzmann velocities with zero momenta. Returns (frames, ms per step after the first chunk, reason
    the run stopped or None)."""
    import shutil

    import jax.numpy as jnp

    from .md import (
        Simulation, TrajectoryStore, Watchdogs, degrees_of_freedom, masses_of, maxwell_boltzmann, model_force_fn,
        velocity_verlet,
    )
    from .model import make_energy_fn

    dtype = jnp.float64 if config.dtype == "float64" else jnp.float32
    force_fn, nbrs = model_force_fn(make_energy_fn(config), variables, config.cutoff, numbers, start_positions,
                                    dtype=dtype)
    masses = masses_of(numbers)
    velocities = maxwell_boltzmann(masses, temperature_K, seed=seed, positions=start_positions)
    init, step = velocity_verlet(force_fn, timestep_fs)
    state = init(jnp.asarray(start_positions, dtype), jnp.asarray(velocities, dtype), masses, aux=nbrs)
    shutil.rmtree(store_dir, ignore_errors=True)
    store = TrajectoryStore(store_dir, numbers=numbers, timestep_fs=timestep_fs)
    sim = Simulation(step, state, timestep_fs=timestep_fs, dof=degrees_of_freedom(len(numbers)), record_every=10,
                     chunk_steps=1000, store=store, force_fn=force_fn,
                     watchdogs=Watchdogs().with_bonds(numbers, start_positions, max_bond_deviation=0.5))
    parts, t_first = [], None
    for frames in sim.chunks(steps):
        parts.append(frames)
        if t_first is None:
            t_first, steps_first = time.perf_counter(), int(sim.state.step)
    timed_steps = int(sim.state.step) - steps_first
    ms = 1e3 * (time.perf_counter() - t_first) / timed_steps if timed_steps > 0 else float("nan")
    return store, ms, sim.stop_reason


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m so3krates_lab.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--model", type=Path, default=MODEL)
    p.add_argument("--train", type=float, default=None, metavar="MINUTES",
                   help="train a new model on --data for this many minutes instead of loading --model")
    p.add_argument("--steps", type=int, default=10_000, help="MD steps (rounded up to chunks of 1000)")
    p.add_argument("--timestep", type=float, default=0.5, help="fs")
    p.add_argument("--temperature", type=float, default=500.0,
                   help="K of the Maxwell-Boltzmann start (the start geometry is itself a 500 K sample)")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "demo")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    from .memory import tune_malloc

    tune_malloc()  # before JAX runs: no page faults on every call (memory.py)

    from .data import Split, load
    from .model import make_energy_fn
    from .train import error_report, error_table, load_checkpoint
    from .widgets.plots import md_energy_plot, parity_plot

    t_start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    data = load(args.data)
    if args.train is not None:
        from .cli import main as train_main

        run = args.out / "trained"
        code = train_main([str(args.data), "--out", str(run), "--n-train", "400", "--n-valid", "50",
                           "--minutes", str(args.train), "--batch-size", "5", "--eval-every", "200"])
        if code:
            return code
        args.model = run / "model_best.npz"
    if not args.model.exists():
        raise SystemExit(f"no model at {args.model}; pass --model PATH or --train MINUTES")
    saved = load_checkpoint(args.model)
    if "split" not in saved.metadata:
        raise SystemExit(f"{args.model} records no data split, so its test frames are unknown")
    split = Split.from_dict(saved.metadata["split"], where=str(args.model))
    _, _, test = split.apply(data)
    print(f"model {args.model.name}: step {saved.step}, {saved.config.layers} layers, F={saved.config.features}, "
          f"degrees {saved.config.degrees}; data {args.data.name}: {len(data)} frames, {len(test)} in the test set")
    dtype = np.float64 if saved.config.dtype == "float64" else np.float32
    report = error_report(make_energy_fn(saved.config), saved.variables, test, saved.config.cutoff, dtype,
                          name=f"ethanol PBE/def2-SVP test set ({len(test)} frames)")
    print(error_table(report))
    parity_plot(report).write_html(args.out / "parity.html", include_plotlyjs=True)

    store, ms_per_step, stop_reason = run_md(
        saved.config, saved.variables, test[0].positions, test[0].numbers, temperature_K=args.temperature,
        steps=args.steps, timestep_fs=args.timestep, seed=args.seed, store_dir=args.out / "trajectory")
    traj = store.open()
    store.to_extxyz(args.out / "ethanol_nve.extxyz")
    times = traj.time.values
    potential, kinetic = traj.potential_energy.values, traj.kinetic_energy.values
    temperature = traj.temperature.values
    total = potential + kinetic
    md_energy_plot(times, potential, kinetic, temperature, "ethanol NVE with the shipped SO3krates model").write_html(args.out / "md.html", include_plotlyjs=True)
    summary = {
        "test_errors": {k: report.attrs[k] for k in ("energy_mae_meV", "energy_rmse_meV", "force_mae_meV_A",
                                                     "force_rmse_meV_A", "n_structures")},
        "md": {"steps": int(len(times) * 10), "timestep_fs": args.timestep, "start_temperature_K": args.temperature,
               "stopped": stop_reason,
               "mean_temperature_K": float(np.mean(temperature[len(temperature) // 4:])),
               "total_energy_std_meV": float(1e3 * np.std(total)),
               "total_energy_drift_meV_per_ps": float(1e3 * np.polyfit(times / 1e3, total, 1)[0]),
               "ms_per_step": ms_per_step},
        "wall_seconds": time.perf_counter() - t_start,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    md = summary["md"]
    print(f"\nNVE {md['steps']} steps x {args.timestep} fs: mean T {md['mean_temperature_K']:.0f} K, total-energy "
          f"fluctuation {md['total_energy_std_meV']:.2f} meV (std), drift {md['total_energy_drift_meV_per_ps']:.3g}"
          f" meV/ps, {md['ms_per_step']:.2f} ms/step (compiled velocity Verlet, after the first chunk)")
    if stop_reason:
        print(f"the MD stopped early: {stop_reason}")
    print(f"wrote {args.out}/: ethanol_nve.extxyz and trajectory/ (netCDF), md.html, parity.html, summary.json "
          f"[{summary['wall_seconds']:.0f} s in all]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
