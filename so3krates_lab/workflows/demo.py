"""The main job: the toolkit end to end on the shipped ethanol data (README: `bash tools/run.sh main`).

    python -m so3krates_lab                      # load the shipped model, test it, run a short MD
    python -m so3krates_lab --train 3            # first train a fresh model for 3 minutes on the shipped data

1. Load the shipped PBE/def2-SVP ethanol data (ethanol_pbe_500K) and model (ethanol_pbe), package data found
   wherever the package is installed (so3krates_lab.data.shipped_path).
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
import shutil
import sys
import time
from pathlib import Path

import numpy as np

DATA = "ethanol_pbe_500K"  # shipped data set (so3krates_lab.data.load_shipped)
MODEL = "ethanol_pbe"  # shipped model (so3krates_lab.pretrained.load)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m so3krates_lab", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=None, help="data file (default: the shipped ethanol PBE data)")
    p.add_argument("--model", type=Path, default=None, help="checkpoint (default: the shipped ethanol model)")
    p.add_argument("--train", type=float, default=None, metavar="MINUTES",
                   help="train a new model on --data for this many minutes instead of loading --model")
    p.add_argument("--steps", type=int, default=10_000, help="MD steps (rounded up to chunks of 1000)")
    p.add_argument("--timestep", type=float, default=0.5, help="fs")
    p.add_argument("--temperature", type=float, default=500.0,
                   help="K of the Maxwell-Boltzmann start (the start geometry is itself a 500 K sample)")
    p.add_argument("--out", type=Path, default=Path("results") / "demo", help="output folder (default: "
                   "results/demo in the current directory)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    from ..interrupts import deferred_interrupts

    # Ctrl-C or SIGTERM at any moment: the step in progress finishes, what is done is kept, exit status 130
    with deferred_interrupts():
        try:
            return _run(args)
        except KeyboardInterrupt:  # a second Ctrl-C
            print("python -m so3krates_lab: stopped at once (second Ctrl-C)", file=sys.stderr)
            return 130


def _run(args) -> int:
    from .. import md
    from ..analysis import energy_conservation
    from ..data import Split, load, shipped_path
    from ..model import Potential
    from ..train import error_report, error_table
    from ..widgets.plots import md_energy_plot, parity_plot

    t_start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    data_path = args.data or shipped_path(f"{DATA}.npz")
    data = load(data_path)
    if args.train is not None:
        from ..cli import main as train_main

        run = args.out / "trained"
        code = train_main([str(data_path), "--out", str(run), "--n-train", "400", "--n-valid", "50",
                           "--minutes", str(args.train), "--batch-size", "5", "--eval-every", "200"])
        if code:
            return code
        args.model = run / "model_best.npz"
    model_path = args.model or shipped_path(f"models/{MODEL}.npz")
    if not Path(model_path).exists():
        raise SystemExit(f"no model at {model_path}; pass --model PATH or --train MINUTES")
    potential = Potential.load(model_path)
    if "split" not in potential.metadata:
        raise SystemExit(f"{model_path} records no data split, so its test frames are unknown")
    split = Split.from_dict(potential.metadata["split"], where=str(model_path))
    _, _, test = split.apply(data)
    c = potential.config
    print(f"model {Path(model_path).name}: {c.layers} layers, F={c.features}, degrees {c.degrees}; "
          f"data {Path(data_path).name}: {len(data)} frames, {len(test)} in the test set")
    report = error_report(potential, test, name=f"ethanol PBE/def2-SVP test set ({len(test)} frames)")
    print(error_table(report))
    parity_plot(report).write_html(args.out / "parity.html", include_plotlyjs=True)

    # Compiled NVE (velocity Verlet, chunks of 1000 steps recorded every 10) from Maxwell-Boltzmann velocities with
    # zero momenta, watched by the automatic watchdogs.
    start = test[0]
    store_dir = args.out / "trajectory"
    shutil.rmtree(store_dir, ignore_errors=True)
    sim = md.simulate(potential, start, md.NVE(args.timestep), temperature_K=args.temperature, seed=args.seed,
                      store=store_dir)  # default watchdogs: bonds of the start, temperature ceiling, NVE drift
    t_first = steps_first = None
    for _ in sim.chunks(args.steps):
        if t_first is None:
            t_first, steps_first = time.perf_counter(), int(sim.state.step)
    if sim.interrupted:
        print(f"python -m so3krates_lab: {sim.stop_reason} ({store_dir})", file=sys.stderr)
        return 130
    timed_steps = int(sim.state.step) - (steps_first or 0)
    ms_per_step = 1e3 * (time.perf_counter() - t_first) / timed_steps if timed_steps > 0 else float("nan")
    traj = sim.trajectory()
    traj.to_extxyz(args.out / "ethanol_nve.extxyz")
    md_energy_plot(traj.time_fs, traj.potential, traj.kinetic, traj.temperature,
                   "ethanol NVE with the shipped SO3krates model").write_html(args.out / "md.html",
                                                                              include_plotlyjs=True)
    conservation = energy_conservation(traj)
    summary = {
        "test_errors": {k: report.attrs[k] for k in ("energy_mae_meV", "energy_rmse_meV", "force_mae_meV_A",
                                                     "force_rmse_meV_A", "n_structures")},
        "md": {"steps": int(len(traj) * 10), "timestep_fs": args.timestep, "start_temperature_K": args.temperature,
               "stopped": sim.stop_reason,
               "mean_temperature_K": float(np.mean(traj.temperature[len(traj) // 4:])),
               "total_energy_std_meV": conservation["std_meV"],
               "total_energy_drift_meV_per_ps": conservation["drift_meV_per_ps"],
               "ms_per_step": ms_per_step},
        "wall_seconds": time.perf_counter() - t_start,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    md = summary["md"]
    print(f"\nNVE {md['steps']} steps x {args.timestep} fs: mean T {md['mean_temperature_K']:.0f} K, total-energy "
          f"fluctuation {md['total_energy_std_meV']:.2f} meV (std), drift {md['total_energy_drift_meV_per_ps']:.3g}"
          f" meV/ps, {md['ms_per_step']:.2f} ms/step (compiled velocity Verlet, after the first chunk)")
    if sim.stop_reason:
        print(f"the MD stopped early: {sim.stop_reason}")
    print(f"wrote {args.out}/: ethanol_nve.extxyz and trajectory/ (netCDF), md.html, parity.html, summary.json "
          f"[{summary['wall_seconds']:.0f} s in all]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
