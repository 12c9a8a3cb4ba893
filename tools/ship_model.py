"""Copy a trained model into the shipped models (so3krates_lab/shipped/models/, which data/models/ links to)
with a provenance file (what the project ships; `so3krates_lab.pretrained.load(NAME)` then loads it).

    .venv/bin/python tools/ship_model.py results/models/ethanol_pbe ethanol_pbe

Reads RUN/model_best.npz and RUN/test_errors.json written by `so3krates-train --out RUN` and writes
models/NAME.npz (a byte copy) and models/NAME.provenance.json under `so3krates_lab.data.shipped_dir()`: the
training command, data file and its sha256, split sizes, model config, steps, the measured test errors, date,
package versions and machine.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import shutil
from importlib import metadata
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="the --out folder of so3krates-train")
    p.add_argument("name", help="file stem under the shipped models/ (data/models/)")
    p.add_argument("--note", default=None, help="free text stored in the provenance (e.g. how training was split)")
    args = p.parse_args(argv)

    from so3krates_lab.data import shipped_dir
    from so3krates_lab.model import load_checkpoint

    best = args.run / "model_best.npz"
    ckpt = load_checkpoint(best)
    last = load_checkpoint(args.run / "model.npz")
    errors = json.loads((args.run / "test_errors.json").read_text())
    meta = last.metadata
    out_dir = shipped_dir() / "models"  # the package data (data/ links here)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{args.name}.npz"
    shutil.copyfile(best, target)
    split = meta["split"]
    versions = {}
    for pkg in ("jax", "flax", "optax", "numpy"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    provenance = {
        "file": target.name,
        "sha256": hashlib.sha256(target.read_bytes()).hexdigest(),
        "training_command": meta.get("command"),
        "data_file": Path(meta["data_file"]).name,
        "data_sha256": meta["data_sha256"],
        "split": {"seed": split["seed"], "n_train": len(split["train"]), "n_valid": len(split["valid"]),
                  "n_test": len(split["test"]), "stored_in": "the checkpoint's metadata (full index lists)"},
        "model_config": json.loads(ckpt.config.to_json()),
        "train_config": meta.get("train_config"),
        "steps_trained": last.step,
        "element_energies": ckpt.metadata.get("element_energies", "as trained"),
        "best_step": meta.get("best_step"),
        "test_errors": {k: errors[k] for k in ("energy_mae_meV", "energy_rmse_meV", "force_mae_meV_A",
                                               "force_rmse_meV_A", "n_structures", "element_force_mae_meV_A")},
        "training_wall_seconds_last_call": errors.get("wall_seconds_this_call"),
        "note": args.note,
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "versions": versions,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }
    side = out_dir / f"{args.name}.provenance.json"
    side.write_text(json.dumps(provenance, indent=2) + "\n")
    print(f"wrote {target} ({target.stat().st_size / 1e6:.1f} MB) and {side}")
    print(json.dumps(provenance["test_errors"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
