"""Checking model minima against a reference method, and against the training data.

`reference_relax` re-relaxes model minima with any ASE calculator (e.g. `so3krates_lab.reference.gfn2_xtb()`)
and an ASE optimiser and reports, per minimum: energies, the RMSD between the model's and the reference's minimum
(symmetric, Angstrom), and whether the structure relaxed away (not a minimum of the reference: RMSD above a
tolerance or a changed bond graph). `reached_by` tells which database minima a set of other minima (e.g. the
training frames relaxed with the model) reaches: a minimum nobody reaches lies outside the training data.
`reference_neb` checks a model barrier: the model's band, re-converged as a climbing-image NEB on the reference.
"""

from __future__ import annotations

import numpy as np

from .alignment import bond_graph, symmetric_rmsd
from .minima import MinimaDatabase


def reference_relax(calculator, numbers, positions, model_energies, groups=(), fmax: float = 0.01,
                    max_steps: int = 500, rmsd_tol: float = 0.25, progress: bool = True):
    """Relax each model minimum (positions (M, N, 3) Angstrom, model_energies (M,) eV) with `calculator` (ASE
    BFGS to fmax eV/A, at most max_steps); numbers: (N,) atomic numbers. Returns an xarray Dataset over
    `minimum`:

    model_energy, reference_energy_at_model (the reference at the model's geometry), reference_energy (after
    relaxing), model_relative / reference_relative (each relative to its own lowest over this subset), error
    (model_relative - reference_relative), all eV; rmsd (Angstrom, model vs reference minimum, symmetric),
    steps, converged, relaxed_away (rmsd > rmsd_tol or a bond formed or broke), reference_positions.
    The attributes hold the summary: relative-energy MAE and RMSE (meV), median RMSD, relaxed-away count.
    """
    import xarray as xr
    from ase import Atoms
    from ase.optimize import BFGS
    from tqdm.auto import tqdm

    numbers = np.asarray(numbers)
    positions = np.asarray(positions, dtype=np.float64)
    model_energies = np.asarray(model_energies, dtype=np.float64)
    if positions.ndim != 3 or positions.shape[1:] != (len(numbers), 3):
        raise ValueError(f"positions: expected shape (M, {len(numbers)}, 3), got {positions.shape}")
    if model_energies.shape != (len(positions),):
        raise ValueError(f"model_energies: expected shape ({len(positions)},), got {model_energies.shape}")
    m = len(positions)
    e_at, e_ref, rmsd = np.zeros(m), np.zeros(m), np.zeros(m)
    steps, converged, away = np.zeros(m, np.int64), np.zeros(m, bool), np.zeros(m, bool)
    ref_pos = np.zeros_like(positions)
    for k in tqdm(range(m), desc="reference relax", disable=not progress):
        atoms = Atoms(numbers=numbers, positions=positions[k])
        atoms.calc = calculator
        e_at[k] = atoms.get_potential_energy()
        opt = BFGS(atoms, logfile=None)
        converged[k] = bool(opt.run(fmax=fmax, steps=max_steps))
        steps[k] = opt.get_number_of_steps()
        e_ref[k] = atoms.get_potential_energy()
        ref_pos[k] = atoms.get_positions()
        rmsd[k], _ = symmetric_rmsd(positions[k], ref_pos[k], groups)
        away[k] = rmsd[k] > rmsd_tol or not np.array_equal(bond_graph(numbers, positions[k]),
                                                           bond_graph(numbers, ref_pos[k]))
    model_rel = model_energies - model_energies.min()
    ref_rel = e_ref - e_ref.min()
    error = model_rel - ref_rel
    return xr.Dataset(
        {"model_energy": ("minimum", model_energies, {"units": "eV"}),
         "reference_energy_at_model": ("minimum", e_at, {"units": "eV"}),
         "reference_energy": ("minimum", e_ref, {"units": "eV"}),
         "model_relative": ("minimum", model_rel, {"units": "eV"}),
         "reference_relative": ("minimum", ref_rel, {"units": "eV"}),
         "error": ("minimum", error, {"units": "eV"}),
         "rmsd": ("minimum", rmsd, {"units": "Angstrom"}),
         "steps": ("minimum", steps), "converged": ("minimum", converged), "relaxed_away": ("minimum", away),
         "reference_positions": (("minimum", "atom", "xyz"), ref_pos, {"units": "Angstrom"})},
        attrs={"relative_energy_mae_meV": float(np.mean(np.abs(error)) * 1e3),
               "relative_energy_rmse_meV": float(np.sqrt(np.mean(error**2)) * 1e3),
               "median_rmsd_A": float(np.median(rmsd)), "relaxed_away": int(away.sum()),
               "not_converged": int((~converged).sum()), "n": m, "fmax_eV_A": fmax, "rmsd_tol_A": rmsd_tol})


def reference_neb(calculator, numbers, band, *, fmax: float = 0.05, max_steps: int = 300, relax_ends: bool = True,
                  end_fmax: float = 0.01, k_spring: float = 1.0):
    """A model barrier checked with a reference method: the model's `barriers.Band` (its images, Angstrom) of
    the molecule with atomic numbers `numbers` (N,) as the start of a climbing-image NEB on `calculator`, run by
    ASE (`ase.mep.NEB`, improved tangent, climbing image from the start since the band already lies near the
    model's path; FIRE to fmax eV/A, at most max_steps). relax_ends: first relax both end points with the
    reference (ASE BFGS to end_fmax, eV/A), so the barrier is measured from the reference's own minima; False keeps the
    model's end points. k_spring: eV/A^2, as `barriers.neb`. calculator: a function that makes an ASE calculator
    (e.g. `reference.gfn2_xtb`): one per image, so each keeps its own SCF guess from step to step; or one ASE
    calculator instance, shared by the images. Returns the reference `Band` (float64; converged: FIRE met fmax;
    evaluations: reference energy + forces calls); compare `band.barrier` / `band.reverse_barrier` with the
    model's.
    """
    from ase.calculators.calculator import BaseCalculator

    from ase import Atoms
    from ase.mep import NEB
    from ase.optimize import BFGS, FIRE

    from .barriers import Band

    numbers = np.asarray(numbers)
    positions = np.array(band.positions, dtype=np.float64)
    if positions.ndim != 3 or positions.shape[1:] != (len(numbers), 3) or len(positions) < 3:
        raise ValueError(f"band.positions: expected (M >= 3, {len(numbers)}, 3) Angstrom, got {positions.shape}")
    evaluations = 0
    images = [Atoms(numbers=numbers, positions=p) for p in positions]
    shared = isinstance(calculator, BaseCalculator)
    for atoms in images:
        atoms.calc = calculator if shared else calculator()
    if relax_ends:
        for atoms in (images[0], images[-1]):
            opt = BFGS(atoms, logfile=None)
            opt.run(fmax=end_fmax, steps=max_steps)
            evaluations += opt.get_number_of_steps() + 1
    end_energies = [images[0].get_potential_energy(), images[-1].get_potential_energy()]
    evaluations += 2
    neb = NEB(images, k=k_spring, climb=True, method="improvedtangent", allow_shared_calculator=shared)
    opt = FIRE(neb, logfile=None)
    converged = bool(opt.run(fmax=fmax, steps=max_steps))
    steps = opt.get_number_of_steps()
    inner = [atoms.get_potential_energy() for atoms in images[1:-1]]  # a shared calculator recomputes these
    evaluations += (steps + 1 + shared) * (len(images) - 2)
    energies = np.asarray([end_energies[0], *inner, end_energies[1]], dtype=np.float64)
    return Band(positions=np.asarray([a.get_positions() for a in images]), energies=energies,
                climbing=1 + int(np.argmax(inner)), converged=converged, steps=int(steps), evaluations=int(evaluations))


def reached_by(db: MinimaDatabase, positions, energies) -> np.ndarray:
    """(len(db),) bool: which stored minima are matched (same dedup rule) by at least one of the given minima
    (positions (K, N, 3) Angstrom, energies (K,) eV), e.g. the training frames relaxed with the same model."""
    positions = np.asarray(positions, dtype=np.float64)
    energies = np.asarray(energies, dtype=np.float64)
    if positions.ndim != 3 or len(positions) != len(energies):
        raise ValueError(f"positions (K, N, 3) and energies (K,) must match, got {positions.shape} and "
                         f"{energies.shape}")
    hit = np.zeros(len(db), bool)
    for pos, energy in zip(positions, energies):
        k = db.find(pos, energy)
        if k is not None:
            hit[k] = True
    return hit
