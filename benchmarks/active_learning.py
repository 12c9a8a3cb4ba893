#!/usr/bin/env python
"""Active learning from an exploration's minima: label them with the reference, fine-tune the model on them, and
validate the new model on held-out minima of the same exploration.

The shipped Ac-Ala3-NHMe model was trained on MD around one start (300-600 K); the minima that torsion hopping
finds lie mostly outside that data, and two thirds of a random 50 of them relax away under GFN2-xTB
(benchmarks/README.md, "Validation against GFN2-xTB"). Three stages, each resumable:

1. label: every minimum of --exploration except the validation subset (--validation, the minima the benchmark
   re-relaxed with xTB), plus one copy of each displaced by --displacement Angstrom (Gaussian, seeded), labelled
   with GFN2-xTB (`reference.label_frames`, chunks under --out/labels). Writes --out/data.npz: the shipped
   training data followed by the new frames, and --out/split.json: the shipped model's own split of the old
   frames (so its test frames stay test frames) and 90/5/5 of the new ones. Prints the training command.
2. train: `so3krates-train --init <model> --split --out/split.json ...` (printed by stage 1; resumable).
3. validate --model M: the same held-out minima relaxed with M (from the geometries the old model reached,
   L-BFGS to --fmax) and re-relaxed with GFN2-xTB (as benchmarks/minima.py --validate does), beside the old
   model's validation of the same minima.

    .venv/bin/python benchmarks/active_learning.py label
    .venv/bin/so3krates-train results/active/data.npz --init ac_ala3_nhme_xtb --split results/active/split.json \
        --minutes 30 --lr 3e-4 --batch-size 5 --eval-every 500 --out results/active/model
    .venv/bin/python benchmarks/active_learning.py validate --model results/active/model/model_best.npz
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("stage", choices=["label", "validate"])
    p.add_argument("--exploration", type=Path, default=ROOT / "results" / "hop_60min" / "explore",
                   help="the minima (analysis.save_minima path) to learn from")
    p.add_argument("--validation", type=Path, default=ROOT / "results" / "hop_60min" / "validation.nc",
                   help="benchmarks/minima.py's validation of that exploration: its minima are held out")
    p.add_argument("--base-model", default="ac_ala3_nhme_xtb", help="the shipped model whose data and split extend")
    p.add_argument("--model", type=Path, default=None, help="validate: the fine-tuned model (model_best.npz)")
    p.add_argument("--displacement", type=float, default=0.04, help="Angstrom, per Cartesian component")
    p.add_argument("--fmax", type=float, default=0.01, help="eV/A: validate, the model's quench")
    p.add_argument("--ref-fmax", type=float, default=0.01, help="eV/A: validate, xTB BFGS")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "active")
    return p.parse_args(argv)


def label(args) -> None:
    import xarray as xr

    from so3krates_lab.analysis import load_minima
    from so3krates_lab.data import Split, load, shipped_path
    from so3krates_lab.model import load_checkpoint
    from so3krates_lab.reference import FrameStore, gfn2_xtb, label_frames, write_npz

    db = load_minima(args.exploration)[0]
    held_out = set(int(k) for k in xr.load_dataset(args.validation)["index"].values)
    keep = np.array([k for k in range(len(db)) if k not in held_out])
    rng = np.random.default_rng(args.seed)
    minima = db.positions[keep]
    displaced = minima + args.displacement * rng.normal(size=minima.shape)
    frames = np.concatenate([minima, displaced])
    print(f"{len(db)} minima, {len(held_out)} held out: labelling {len(keep)} minima and {len(keep)} displaced "
          f"copies ({args.displacement} A) with GFN2-xTB")
    store = FrameStore(args.out / "labels")
    label_frames(db.numbers, frames, gfn2_xtb(), store, chunk_frames=20, desc="xTB")
    new = store.arrays()

    base = load_checkpoint(shipped_path(f"models/{args.base_model}.npz"))
    data_file = shipped_path(Path(base.metadata["data_file"]).name)
    old = load(data_file)
    split = Split.from_dict(base.metadata["split"])
    arrays = {"numbers": np.asarray(old[0].numbers),
              "positions": np.concatenate([np.stack([s.positions for s in old]), new["positions"]]),
              "energy": np.concatenate([np.array([s.energy for s in old]), new["energy"]]),
              "forces": np.concatenate([np.stack([s.forces for s in old]), new["forces"]])}
    provenance = {"what": f"{data_file.name} followed by GFN2-xTB (tblite) labels of {len(keep)} minima of the "
                          f"exploration {args.exploration} and {len(keep)} copies displaced by {args.displacement} A",
                  "held_out_minima": sorted(held_out), "old_frames": len(old), "new_frames": len(frames),
                  "command": "python benchmarks/active_learning.py label"}
    out = args.out / "data.npz"
    write_npz(out, arrays, provenance)
    order = np.random.default_rng(args.seed).permutation(len(frames)) + len(old)
    n_train, n_valid = int(0.9 * len(frames)), int(0.05 * len(frames))
    combined = Split(train=np.concatenate([split.train, order[:n_train]]),
                     valid=np.concatenate([split.valid, order[n_train:n_train + n_valid]]),
                     test=np.concatenate([split.test, order[n_train + n_valid:]]), seed=args.seed,
                     n_total=len(old) + len(frames), dataset_sha256=load(out).sha256)
    combined.save(args.out / "split.json")
    print(f"wrote {out} ({len(old)} + {len(frames)} frames) and {args.out / 'split.json'} (train "
          f"{len(combined.train)}, valid {len(combined.valid)}, test {len(combined.test)})\nnext:\n"
          f"  .venv/bin/so3krates-train {out} --init {args.base_model} --split {args.out / 'split.json'} "
          f"--minutes 30 --lr 3e-4 --batch-size 5 --eval-every 500 --out {args.out / 'model'}")


def validate(args) -> None:
    import xarray as xr

    from so3krates_lab import Potential
    from so3krates_lab.analysis import load_minima, reference_relax
    from so3krates_lab.fileio import atomic_write
    from so3krates_lab.md import BatchRelaxer, force_function
    from so3krates_lab.reference import gfn2_xtb
    from so3krates_lab.structures import System

    if args.model is None:
        raise SystemExit("validate needs --model (the fine-tuned model_best.npz)")
    db = load_minima(args.exploration)[0]
    old = xr.load_dataset(args.validation)
    pick = old["index"].values
    potential = Potential.load(args.model, dtype="float32")
    cache = args.out / f"validation_{args.model.parent.name}.nc"
    if cache.exists() and np.array_equal(xr.load_dataset(cache)["index"].values, pick):
        new = xr.load_dataset(cache)
    else:
        ff = force_function(potential, System(numbers=db.numbers, positions=db.geometry(0)), all_pairs=True)
        relaxer = BatchRelaxer(ff, db.geometry(0), 8, args.fmax, 3000, 25, minimizer="lbfgs", memory=10,
                               precon="exp")
        positions, energies, ok = relaxer.relax_all(db.positions[pick], progress=True, desc="model relax")
        new = reference_relax(gfn2_xtb(), db.numbers, positions, energies, db.groups, fmax=args.ref_fmax)
        new = new.assign(index=("minimum", pick), model_converged=("minimum", ok))
        atomic_write(cache, lambda tmp: new.to_netcdf(tmp))
    print(f"\nheld-out minima of {args.exploration.name}: the old model's validation and {args.model}'s "
          f"(its own minima from the same starts), both re-relaxed with GFN2-xTB (BFGS, fmax {args.ref_fmax} eV/A)")
    print(f"{'minimum':>8} {'old error meV':>14} {'old RMSD A':>11} {'old away':>9} {'new error meV':>14} "
          f"{'new RMSD A':>11} {'new away':>9}")
    for k in range(len(pick)):
        print(f"{int(pick[k]):8d} {1e3 * float(old.error[k]):14.1f} {float(old.rmsd[k]):11.3f} "
              f"{str(bool(old.relaxed_away[k])):>9} {1e3 * float(new.error[k]):14.1f} {float(new.rmsd[k]):11.3f} "
              f"{str(bool(new.relaxed_away[k])):>9}")
    for name, ds in (("old", old), ("new", new)):
        print(f"{name}: relative-energy MAE {ds.attrs['relative_energy_mae_meV']:.1f} meV (RMSE "
              f"{ds.attrs['relative_energy_rmse_meV']:.1f}); median RMSD {ds.attrs['median_rmsd_A']:.3f} A; "
              f"{len(pick) - ds.attrs['relaxed_away']} of {len(pick)} stay minima; "
              f"{ds.attrs['not_converged']} xTB relaxations not converged")
    summary = {name: {k: (v.item() if hasattr(v, "item") else v) for k, v in ds.attrs.items()}
               for name, ds in (("old", old), ("new", new))}
    summary["test_errors"] = test_errors(args, potential)
    atomic_write(args.out / f"validation_{args.model.parent.name}.json",
                 lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=1)))


def test_errors(args, tuned) -> dict:
    """Both models on the held-out test frames of --out/data.npz, the old data's and the new minima's apart."""
    from so3krates_lab import pretrained
    from so3krates_lab.data import Split, load
    from so3krates_lab.structures import Dataset
    from so3krates_lab.train import error_report

    data = load(args.out / "data.npz")
    split = Split.load(args.out / "split.json")
    n_old = int(json.loads(str(np.load(args.out / "data.npz")["provenance"]))["old_frames"])
    parts = {"old data": Dataset(tuple(data[int(i)] for i in split.test if i < n_old), name="old"),
             "new minima": Dataset(tuple(data[int(i)] for i in split.test if i >= n_old), name="new")}
    rows = {}
    print(f"\n{'model':>12} {'test frames':>12} {'n':>4} {'E MAE meV':>10} {'F MAE meV/A':>12}")
    for name, potential in ((args.base_model, pretrained.load(args.base_model)), ("fine-tuned", tuned)):
        for part, frames in parts.items():
            report = error_report(potential, frames)
            rows[f"{name}, {part}"] = {k: float(report.attrs[k]) for k in ("energy_mae_meV", "force_mae_meV_A")}
            print(f"{name:>12} {part:>12} {len(frames):4d} {report.attrs['energy_mae_meV']:10.1f} "
                  f"{report.attrs['force_mae_meV_A']:12.1f}")
    return rows


def main(argv=None) -> int:
    args = parse(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    label(args) if args.stage == "label" else validate(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
