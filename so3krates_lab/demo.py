"""The main job: the toolkit end to end on the shipped ethanol data (README: `bash tools/run.sh main`).

    python -m so3krates_lab.demo                 # load the shipped model, test it, run a short MD
    python -m so3krates_lab.demo --train 3       # first train a fresh model for 3 minutes on the shipped data

1. Load the shipped PBE/def2-SVP ethanol data (data/ethanol_pbe_500K.npz) and model (data/models/ethanol_pbe.npz).
   The model's checkpoint records the split it was trained with; its test frames are evaluated here.
2. Print the test errors (energy and per-element force MAE/RMSE) and write a parity plot.
3. Run NVE molecular dynamics with the model (through the ASE calculator), Maxwell-Boltzmann start.
4. Write results/demo/: ethanol_nve.extxyz (trajectory), md.html (energies and temperature), parity.html,
   summary.json.
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


def run_md(calculator, start, *, temperature_K: float, steps: int, timestep_fs: float, record_every: int,
           seed: int, trajectory: Path):
    """NVE (velocity Verlet, ASE) from Maxwell-Boltzmann velocities; returns times, energies, temperatures."""
    from ase import units
    from ase.io import write
    from ase.md import velocitydistribution as vd
    from ase.md.verlet import VelocityVerlet
    from tqdm.auto import tqdm

    atoms = start.copy()
    atoms.calc = calculator
    rng = np.random.default_rng(seed)
    if hasattr(vd, "thermalize_momenta"):
        vd.thermalize_momenta(atoms, temperature_K, rng=rng)
    else:
        vd.MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
    vd.Stationary(atoms)
    vd.ZeroRotation(atoms)
    trajectory.unlink(missing_ok=True)
    dyn = VelocityVerlet(atoms, timestep_fs * units.fs)
    rows = []
    with tqdm(total=steps, desc="NVE MD", unit="step", mininterval=0.5) as bar:
        for k in range(0, steps + 1, record_every):
            if k:
                dyn.run(record_every)
                bar.update(record_every)
            rows.append((k * timestep_fs, atoms.get_potential_energy(), atoms.get_kinetic_energy(),
                         atoms.get_temperature()))
            write(trajectory, atoms, format="extxyz", append=True)  # one frame appended per record
    return np.array(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m so3krates_lab.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--model", type=Path, default=MODEL)
    p.add_argument("--train", type=float, default=None, metavar="MINUTES",
                   help="train a new model on --data for this many minutes instead of loading --model")
    p.add_argument("--steps", type=int, default=4000, help="MD steps")
    p.add_argument("--timestep", type=float, default=0.5, help="fs")
    p.add_argument("--temperature", type=float, default=600.0,
                   help="K of the Maxwell-Boltzmann start (NVE equipartition halves it)")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "demo")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from ase import Atoms

    from .data import Split, load
    from .interop import So3kratesCalculator
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

    calc = So3kratesCalculator.from_checkpoint(args.model)
    start = Atoms(numbers=test[0].numbers, positions=test[0].positions, calculator=calc)
    start.get_forces()  # compile once here, so that ms_per_step measures steps only
    t_md = time.perf_counter()
    rows = run_md(calc, start, temperature_K=args.temperature, steps=args.steps, timestep_fs=args.timestep,
                  record_every=10, seed=args.seed, trajectory=args.out / "ethanol_nve.extxyz")
    md_seconds = time.perf_counter() - t_md
    times, potential, kinetic, temperature = rows.T
    total = potential + kinetic
    md_energy_plot(times, potential, kinetic, temperature, "ethanol NVE with the shipped SO3krates model").write_html(args.out / "md.html", include_plotlyjs=True)
    summary = {
        "test_errors": {k: report.attrs[k] for k in ("energy_mae_meV", "energy_rmse_meV", "force_mae_meV_A",
                                                     "force_rmse_meV_A", "n_structures")},
        "md": {"steps": args.steps, "timestep_fs": args.timestep, "start_temperature_K": args.temperature,
               "mean_temperature_K": float(np.mean(temperature[len(temperature) // 4:])),
               "total_energy_std_meV": float(1e3 * np.std(total)),
               "total_energy_drift_meV_per_ps": float(1e3 * np.polyfit(times / 1e3, total, 1)[0]),
               "ms_per_step": 1e3 * md_seconds / args.steps},
        "wall_seconds": time.perf_counter() - t_start,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    md = summary["md"]
    print(f"\nNVE {args.steps} steps x {args.timestep} fs: mean T {md['mean_temperature_K']:.0f} K, total-energy "
          f"fluctuation {md['total_energy_std_meV']:.2f} meV (std), drift {md['total_energy_drift_meV_per_ps']:.2f}"
          f" meV/ps, {md['ms_per_step']:.2f} ms/step (ASE velocity Verlet + our calculator)")
    print(f"wrote {args.out}/: ethanol_nve.extxyz (trajectory), md.html, parity.html, summary.json "
          f"[{summary['wall_seconds']:.0f} s in all]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
