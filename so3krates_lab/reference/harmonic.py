"""Reference harmonic frequencies: relax with a reference method, then its Hessian (recipe ethanol-pbe-harmonic).

    python -m so3krates_lab.reference ethanol-pbe-harmonic     # -> data/ethanol_pbe_harmonic.npz (+ provenance)

1. Start: the built-in anti ethanol, pre-relaxed with GFN2-xTB (milliseconds per step) so that few PBE steps
   remain.
2. Relax at PBE/def2-SVP (density fitting, the `PyscfDFT` settings of the shipped ethanol data) with ASE's BFGS
   to fmax (default 1e-3 eV/Angstrom), with the grid response in the forces (without it the forces carry a
   spurious net force and torque of about 2e-3 eV/A at grid level 3, and BFGS stalls near 2e-3 eV/A). Every
   step is appended to `relax.traj` in the work folder; a rerun continues from its last geometry.
3. Hessian: pyscf's analytic density-fitted RKS Hessian (auxiliary-basis response included, no grid response),
   or, with --hessian fd, central finite differences of analytic gradients with grid response (each displaced
   gradient cached, so a killed run resumes).
4. Frequencies and normal modes with `so3krates_lab.analysis.normal_modes` (Eckart projection).

Output npz: numbers (N,), positions (N, 3) Angstrom, energy (eV), forces (N, 3) eV/Angstrom at the minimum,
hessian (3N, 3N) eV/Angstrom^2 (symmetrised), frequencies_cm1 (3N-6,), modes (3N-6, N, 3) normalised Cartesian
displacements, masses (N,) amu, provenance (JSON string); the same provenance beside it as .provenance.json.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from so3krates_lab.fileio import atomic_write
from so3krates_lab.units import BOHR, HARTREE

PBE_SETTINGS = dict(xc="PBE", basis="def2-svp", density_fit=True, conv_tol=1e-9, grids_level=3)


def _savez(path: str, arrays: dict) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def _save_npy(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.save(fh, array)


def _pyscf_scf(numbers, positions, settings: dict):
    """A converged pyscf (DF-)RKS object at positions (Angstrom)."""
    from pyscf import dft, gto

    mol = gto.M(atom=[(int(z), tuple(p)) for z, p in zip(numbers, positions)], basis=settings["basis"],
                unit="Angstrom", verbose=0)
    mf = dft.RKS(mol, xc=settings["xc"])
    if settings["density_fit"]:
        mf = mf.density_fit()
    mf.conv_tol = settings["conv_tol"]
    mf.grids.level = settings["grids_level"]
    mf.kernel()
    if not mf.converged:
        raise RuntimeError("pyscf SCF did not converge at the Hessian geometry")
    return mf


def _count_frames(traj: Path) -> int:
    from ase.io import read

    return len(read(traj, index=":")) if traj.exists() else 0


def xtb_prerelax(numbers, positions, fmax: float = 0.01):
    """GFN2-xTB minimum near `positions` (a cheap start for the DFT relaxation)."""
    from ase import Atoms
    from ase.optimize import BFGS

    from so3krates_lab.reference.calculators import gfn2_xtb

    atoms = Atoms(numbers=numbers, positions=positions, calculator=gfn2_xtb())
    BFGS(atoms, logfile=None).run(fmax=fmax, steps=500)
    return atoms.positions.copy()


def relax(numbers, positions, calculator, work: Path, fmax: float, max_steps: int = 300):
    """BFGS to fmax (eV/Angstrom) with a resumable trajectory; returns (positions, energy, forces, n_steps)."""
    from ase import Atoms
    from ase.io import read
    from ase.optimize import BFGS

    traj = work / "relax.traj"
    if traj.exists() and traj.stat().st_size > 0:
        positions = read(traj, index=-1).positions
    atoms = Atoms(numbers=numbers, positions=positions, calculator=calculator)
    opt = BFGS(atoms, trajectory=str(traj), append_trajectory=True, logfile=str(work / "relax.log"), maxstep=0.1)
    converged = opt.run(fmax=fmax, steps=max_steps)
    if not converged:
        raise RuntimeError(f"relaxation did not reach fmax={fmax} eV/A in {max_steps} steps; rerun to continue")
    return atoms.positions.copy(), atoms.get_potential_energy(), atoms.get_forces(), opt.nsteps


def analytic_hessian(numbers, positions, settings: dict) -> np.ndarray:
    """pyscf analytic (DF-)RKS Hessian, (3N, 3N) in eV/Angstrom^2."""
    mf = _pyscf_scf(numbers, positions, settings)
    h = mf.Hessian().kernel()                     # (N, N, 3, 3) Hartree/Bohr^2
    n = len(numbers)
    return h.transpose(0, 2, 1, 3).reshape(3 * n, 3 * n) * (HARTREE / BOHR**2)


def finite_difference_hessian(numbers, positions, calculator_factory, work: Path, step: float = 0.005,
                              progress: bool = True) -> np.ndarray:
    """Central differences of forces, H_ij = -(F_j(x + h e_i) - F_j(x - h e_i)) / 2h, (3N, 3N) eV/Angstrom^2.

    Each displaced force is cached as work/fd_<i>_<sign>.npy, so a rerun resumes.
    """
    from ase import Atoms
    from tqdm.auto import tqdm

    n = len(numbers)
    calc = calculator_factory()
    rows = []
    for i in tqdm(range(3 * n), desc="finite-difference Hessian", disable=not progress):
        pair = []
        for sign in (+1, -1):
            cache = work / f"fd_{i:03d}_{'p' if sign > 0 else 'm'}.npy"
            if not cache.exists():
                displaced = positions.copy().reshape(-1)
                displaced[i] += sign * step
                atoms = Atoms(numbers=numbers, positions=displaced.reshape(n, 3), calculator=calc)
                forces = atoms.get_forces()
                atomic_write(cache, lambda tmp, f=forces: _save_npy(tmp, f))
            pair.append(np.load(cache))
        rows.append(-(pair[0] - pair[1]).reshape(-1) / (2 * step))
    h = np.stack(rows)
    return 0.5 * (h + h.T)


def ethanol_pbe_harmonic(out="data/ethanol_pbe_harmonic.npz", work="results/reference/ethanol-pbe-harmonic",
                         fmax: float = 1e-3, hessian: str = "analytic", fd_step: float = 0.005,
                         progress: bool = True) -> Path:
    from so3krates_lab.analysis import normal_modes
    from so3krates_lab.data.builtin import ethanol
    from so3krates_lab.reference.calculators import PyscfDFT
    from so3krates_lab.reference.recipes import _versions

    if hessian not in ("analytic", "fd"):
        raise ValueError(f"hessian must be 'analytic' or 'fd', got {hessian!r}")
    t0 = time.perf_counter()
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    start = ethanol()
    numbers = np.asarray(start.numbers)
    relaxed_path = work / "relaxed.npz"
    if relaxed_path.exists():
        saved = dict(np.load(relaxed_path))
        positions, energy, forces, n_steps = saved["positions"], float(saved["energy"]), saved["forces"], int(
            saved["n_steps"])
    else:
        pre = xtb_prerelax(numbers, np.asarray(start.positions))
        positions, energy, forces, n_steps = relax(numbers, pre, PyscfDFT(**PBE_SETTINGS, grid_response=True),
                                                    work, fmax)
        arrays = dict(positions=positions, energy=np.float64(energy), forces=forces, n_steps=np.int64(n_steps))
        atomic_write(relaxed_path, lambda tmp: _savez(tmp, arrays))
    print(f"relaxed: E = {energy:.6f} eV, max |F| = {np.abs(forces).max():.2e} eV/A after {n_steps} BFGS steps")
    hessian_path = work / f"hessian_{hessian}.npy"
    timing_path = hessian_path.with_suffix(".json")
    if hessian_path.exists():
        h = np.load(hessian_path)
    else:
        t_h = time.perf_counter()
        if hessian == "analytic":
            h = analytic_hessian(numbers, positions, PBE_SETTINGS)
        else:
            h = finite_difference_hessian(numbers, positions, lambda: PyscfDFT(**PBE_SETTINGS, grid_response=True),
                                          work, fd_step, progress)
        atomic_write(hessian_path, lambda tmp: _save_npy(tmp, h))
        seconds = round(time.perf_counter() - t_h, 1)
        atomic_write(timing_path, lambda tmp: Path(tmp).write_text(json.dumps({"seconds": seconds})))
        print(f"Hessian ({hessian}) in {seconds:.0f} s")
    asymmetry = float(np.abs(h - h.T).max())
    h = 0.5 * (h + h.T)
    nm = normal_modes(h, positions, numbers)
    provenance = {
        "name": "ethanol harmonic frequencies, PBE/def2-SVP",
        "method": {"level": "PBE/def2-SVP, density fitting (pyscf default auxiliary basis), restricted KS",
                   "program": "pyscf", **PBE_SETTINGS,
                   "hessian": ("analytic DF-RKS Hessian (pyscf df.hessian.rks, auxbasis_response=2, no grid "
                               "response)" if hessian == "analytic" else
                               f"central finite differences of analytic forces, step {fd_step} Angstrom")},
        "relaxation": {"optimizer": "ase BFGS, maxstep 0.1 A", "fmax_eV_per_A": fmax, "forces": "analytic, with "
                       "grid response", "bfgs_steps_last_invocation": n_steps,
                       "steps_in_relax_traj": _count_frames(work / "relax.traj"),
                       "start": "so3krates_lab.data.builtin.ethanol() (anti), pre-relaxed with GFN2-xTB; a rerun "
                                "continues from the last geometry of relax.traj",
                       "max_abs_force_eV_per_A": float(np.abs(forces).max())},
        "normal_modes": "so3krates_lab.analysis.normal_modes (standard atomic masses, Eckart projection)",
        "hessian_seconds": json.loads(timing_path.read_text())["seconds"] if timing_path.exists() else None,
        "hessian_max_asymmetry_eV_per_A2": asymmetry,
        "hessian_stored": "symmetrised, (H + H^T) / 2",
        "rigid_body_residual_cm1": nm.attrs["rigid_body_residual_cm1"],
        "units": {"positions": "Angstrom", "energy": "eV", "forces": "eV/Angstrom",
                  "hessian": "eV/Angstrom^2", "frequencies_cm1": "cm^-1", "masses": "amu"},
        "command": "python -m so3krates_lab.reference " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "wall_seconds_this_invocation": round(time.perf_counter() - t0, 1),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": _versions("so3krates_lab", "ase", "tblite", "pyscf", "numpy"),
    }
    arrays = dict(numbers=numbers.astype(np.int64), positions=positions, energy=np.float64(energy), forces=forces,
                  hessian=h, frequencies_cm1=nm.frequency.values, modes=nm.modes.values, masses=nm.masses.values,
                  provenance=np.array(json.dumps(provenance, sort_keys=True)))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: _savez(tmp, arrays))
    side = dict(provenance, file=out.name, sha256=hashlib.sha256(out.read_bytes()).hexdigest())
    atomic_write(out.with_suffix(".provenance.json"),
                 lambda tmp: Path(tmp).write_text(json.dumps(side, indent=2, sort_keys=True) + "\n"))
    return out
