"""How exactly the shipped SO3LR reproduces SO3LR's own energies and forces, in float64 and float32.

    python benchmarks/so3lr_reproduction.py [--dtypes float64,float32]

For DHA (56 atoms), the buckyball catcher (148) and 1536-atom periodic water (../shared/so3lr/reference_outputs,
README there): |dE| (eV) and max |dF| (eV/A) of `pretrained.so3lr()` against the outputs of SO3LR's ASE
calculator (`*_ase.npz`; these files hold float32-rounded numbers) and of its float64 JAX-MD path
(`*_jaxmd.npz`), at long-range cutoff 12 A and dispersion damping 2 A. The upstream tests accept energies within
1e-5 eV + 1e-6 relative and forces within 1e-4 eV/A (water 5e-4).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REF = Path(os.environ.get("SO3KRATES_SHARED_DIR", ROOT.parent / "shared")) / "so3lr" / "reference_outputs"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dtypes", default="float64,float32")
    args = p.parse_args(argv)
    import jax

    jax.config.update("jax_enable_x64", True)
    sys.path.insert(0, str(ROOT))
    from ase.io import read

    from so3krates_lab import pretrained
    from so3krates_lab.structures import System

    systems = {}
    for name in ("dha", "bb", "water"):
        if name == "water":
            atoms = read(REF / "water_64.xyz") * [2, 2, 2]
            systems[name] = System(numbers=atoms.numbers, positions=atoms.positions, cell=np.array(atoms.cell),
                                   pbc=atoms.pbc)
        else:
            atoms = read(REF / f"{name}.xyz")
            systems[name] = System(numbers=atoms.numbers, positions=atoms.positions)
    print(f"{'dtype':8s} {'system':6s} {'atoms':>5s} | {'|dE| ASE':>9s} {'|dF| ASE':>9s} | {'|dE| JAX-MD':>11s} "
          f"{'|dF| JAX-MD':>11s} | upstream tolerance met")
    for dtype in args.dtypes.split(","):
        pot = pretrained.so3lr(dtype=dtype)
        for name, system in systems.items():
            pred = pot.evaluate(system, stress=False)
            e, f = float(pred.energies[0]), pred.forces[0]
            row, ok = [], True
            for kind in ("ase", "jaxmd"):
                with np.load(REF / f"{name}_{kind}.npz") as ref:
                    de, df = abs(e - float(ref["energy"])), float(np.abs(f - ref["forces"]).max())
                    ok &= de <= 1e-5 + 1e-6 * abs(float(ref["energy"])) and df <= (5e-4 if name == "water" else 1e-4)
                row += [de, df]
            print(f"{dtype:8s} {name:6s} {system.n_atoms:5d} | {row[0]:9.1e} {row[1]:9.1e} | {row[2]:11.1e} "
                  f"{row[3]:11.1e} | {'yes' if ok else 'no'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
