"""Convert the published SO3LR weights into this project's checkpoint format, once, with their provenance.

    python benchmarks/convert_so3lr.py [--source ../shared/so3lr] [--out data/models]

Reads SO3LR's ``params.pkl`` with an unpickler that admits only NumPy arrays (never plain ``pickle.load``) and its
``hyperparameters.json``, maps the weights onto the "so3lr" configuration (`so3krates_lab.interop.so3lr`),
checks that the float64 model reproduces SO3LR's own float64 energies and forces (its JAX-MD reference
outputs, when they are there) and writes:

* ``so3lr.npz``: the checkpoint (float32 weights, exactly the published values),
* ``so3lr.LICENSE``: SO3LR's MIT licence, which must travel with anything derived from the weights,
* ``so3lr.provenance.json``: source repository and commit, sha256 of the original files, this command.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SOURCE_REPOSITORY = "https://github.com/general-molecular-simulations/so3lr"
SOURCE_COMMIT = "5ec39b9"  # the commit ../shared/so3lr/README.md names (2026-01-31)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv=None) -> int:
    default_source = Path(os.environ.get("SO3KRATES_SHARED_DIR", ROOT.parent / "shared")) / "so3lr"
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", type=Path, default=default_source, help="folder with params.pkl, "
                   "hyperparameters.json, LICENSE (and reference_outputs/ for the check)")
    p.add_argument("--out", type=Path, default=ROOT / "data" / "models")
    args = p.parse_args(argv)

    import jax

    jax.config.update("jax_enable_x64", True)
    sys.path.insert(0, str(ROOT))
    from so3krates_lab.interop.so3lr import SO3LR_ELEMENTS, potential_from_so3lr, read_so3lr_params
    from so3krates_lab.structures import System

    src = args.source
    params_file, hyper_file, licence = src / "params.pkl", src / "hyperparameters.json", src / "LICENSE"
    for f in (params_file, hyper_file, licence):
        if not f.is_file():
            raise SystemExit(f"convert_so3lr: {f} not found (pass --source, the folder of SO3LR's files)")
    params = read_so3lr_params(params_file)
    hyper = json.loads(hyper_file.read_text())
    n_numbers = int(sum(np.size(v) for v in params.values()))
    print(f"read {params_file}: {len(params)} arrays, {n_numbers:,} numbers")

    checks = {}
    ref_dir = src / "reference_outputs"
    pot64 = potential_from_so3lr(params, hyper, dtype="float64")
    if ref_dir.is_dir():
        from ase.io import read

        for name in ("dha", "bb"):
            xyz, ref_file = ref_dir / f"{name}.xyz", ref_dir / f"{name}_jaxmd.npz"
            if not (xyz.is_file() and ref_file.is_file()):
                continue
            atoms, ref = read(xyz), np.load(ref_file)
            pred = pot64.evaluate(System(numbers=atoms.numbers, positions=atoms.positions))
            de = abs(float(pred.energies[0]) - float(ref["energy"]))
            df = float(np.abs(pred.forces[0] - ref["forces"]).max())
            checks[name] = {"abs_energy_error_eV": de, "max_force_error_eV_per_A": df}
            print(f"check {name}: |dE| {de:.2e} eV, max |dF| {df:.2e} eV/A against SO3LR's own float64 output")
            if de > 1e-5 or df > 1e-4:
                raise SystemExit(f"convert_so3lr: {name} is not reproduced (|dE| {de:.2e} eV, |dF| {df:.2e} eV/A)")

    pot = pot64.with_dtype("float32")  # the shipped file: the published float32 weights
    metadata = {
        "name": "SO3LR",
        "elements": list(SO3LR_ELEMENTS),
        "source": f"{SOURCE_REPOSITORY} (commit {SOURCE_COMMIT}), so3lr/params/params.pkl, MIT licence "
                  "(so3lr.LICENSE beside this file)",
        "reference": "A. Kabylda, J. T. Frank et al., J. Am. Chem. Soc. 147, 33723 (2025)",
        "note": "trained on forces, dipoles and Hirshfeld ratios (PBE0+MBD): only relative energies are meaningful",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    ckpt = pot.save(args.out / "so3lr.npz", metadata=metadata)
    shutil.copyfile(licence, args.out / "so3lr.LICENSE")
    provenance = {
        "file": ckpt.name,
        "sha256": _sha256(ckpt),
        "source_repository": SOURCE_REPOSITORY,
        "source_commit": SOURCE_COMMIT,
        "licence": "MIT (so3lr.LICENSE: copyright 2024 Thorben Frank)",
        "original_files": {"params.pkl": _sha256(params_file), "hyperparameters.json": _sha256(hyper_file)},
        "converter_command": "python benchmarks/convert_so3lr.py --source <folder with SO3LR's params.pkl, "
                             "hyperparameters.json and LICENSE>",
        "parameters": {"published_numbers": n_numbers, "checkpoint_parameters": pot.n_parameters,
                       "why_they_differ": "the charge and Hirshfeld heads' 100-row element tables are padded "
                                          "with zero rows to the model's 119"},
        "model_config": pot.config.to_dict(),
        "check_against_so3lr_float64": checks,
    }
    (args.out / "so3lr.provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    print(f"wrote {ckpt}, so3lr.LICENSE, so3lr.provenance.json ({pot.n_parameters:,} parameters)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
