"""Is the data in the units it claims? A physical plausibility check run by every reader on every load.

The commonest unit mistakes give data that load without complaint: kcal/mol values declared as eV (energies and
forces 23.06 x too large), eV declared as kcal/mol (23.06 x too small), Hartree declared as eV (27.21 x too
small; forces in Hartree/Bohr read as eV/Angstrom: 51.4 x too small) and Bohr declared as Angstrom (positions
1.89 x too long, forces per Bohr read as per Angstrom). `unit_evidence` measures physical scales that do not
depend on the system, the temperature or how the frames were sampled, and `check_units` raises `UnitError`
when one of them is clearly off by such a factor. Everything is computed after the readers' conversion, in eV
and Angstrom; the readers call `check_units` from `_common.assemble` unless given check_units=False.

Evidence (each is inconclusive, value None with a `*_note`, when the data cannot support it)
--------------------------------------------------------------------------------------------
1. Bond length. For every atom, the distance to its nearest neighbour divided by the sum of the two covalent
   radii (ase.data.covalent_radii), minimum image with the cell for periodic frames; the median over the atoms
   of up to 32 frames (1,000 atoms). Real bonded matter gives 0.8-1.25 (organics 0.91-1.03; ionic solids ~0.9-1.1
   since the covalent radii of Li, Na, ... are large; metals 0.97-1.2: Cu 0.97, Na 1.12, Al and Li 1.18); Bohr
   read as Angstrom multiplies it by 1.89. Noble-gas atoms are left out (a rare-gas solid sits at 1.8 x its
   covalent radii in the right units); a median above 2.6 means the atoms are not bonded (an atomic gas) and
   frames of fewer than 3 atoms are not used (a diatomic scan stretches its only bond): inconclusive.
2. Bond stiffness. For each covalent bond between two non-metal atoms, at least one of them from H, B, C, N, O,
   F (found in the first sampled frame of each composition, d < 1.2 x the radii sum, kept if it stays below
   1.35 x in every frame): bond length d and bond force f = (F_b - F_a) . u_ab / 2 over the frames of that
   composition, slope k = -cov(f, d) / var(d) in eV/A^2; the median over bonds. For canonical sampling
   <x_i dU/dx_j> = kT delta_ij gives cov(f, d) = -kT and var(d) = kT / k_relaxed: k is the relaxed
   (compliance) stretching constant of the bond, independent of the temperature (sampling the ethanol PBE
   Hessian at 50 / 300 / 1000 K gives 28 / 27 / 22, the last one softened by the linear Cartesian modes),
   with no need for close frame pairs or alignment, for shuffled, periodic and many-molecule files alike.
   Textbook stretching constants of such bonds are 10-150 eV/A^2 (1.6-24 mdyn/A; C-I 14, Si-H 18, C-H 31,
   O-H 48, C=O 75, N#N 143). The same covariance gives kT = -cov(f, d), reported as `bond_temperature` (K) but
   not used to decide: sets that are not thermal (QM7-X, Li3PO4) have no meaningful temperature.
   Inconclusive with fewer than 3 such bonds in compositions of at least 5 labelled frames, or when the bond
   forces do not follow the bond lengths (median correlation above -0.5: random forces, as in test fixtures;
   real data -0.74 to -0.99).
3. Absolute energy. E / sum of free-atom total energies (-0.7687 Z^(7/3) + Z^2/2 - 0.2699 Z^(5/3) Hartree:
   Thomas-Fermi with the Scott and Schwinger terms, within 1.5% of the exact non-relativistic energies for
   Z >= 5; exact values for H, He, Li, Be). All-electron total energies (rMD17, MD22, QM7-X, pyscf) give
   1.01-1.02 (relativity or hydrogen-rich binding can raise it towards 1.2); pseudopotential and semi-empirical
   energies, atomisation or shifted energies give anything else (water 0.23, Li3PO4 0.0025, GFN2-xTB 0.066),
   so a match confirms a unit but a mismatch says nothing. Never decisive alone: a pseudopotential file could
   fall on 1/27.2 by chance.
4. RMS force over all labelled frames (eV/A): real data sets about 0.3-3.

Decision (conservative: raise only on clear evidence)
----------------------------------------------------
* length: bond-length ratio in [1.42, 2.6] -> positions too long (Bohr read as Angstrom). Measured: correct
  0.89-1.04, Bohr 1.69-1.96; 1.42 is 1.37 x above the largest correct value and 1.19 x below the smallest Bohr
  case (1.14 x above the loosest real metal, 1.25).
* energy, decisive alone: bond stiffness outside [4, 200] eV/A^2. Measured: correct 13.9-38.7; kcal/mol as eV
  320-892; eV as kcal/mol 0.60-1.68; Hartree as eV 0.51-1.42 (0.27-0.75 with Hartree/Bohr forces). Margins:
  correct >= 3.5 x above 4 and >= 5 x below 200 (1.33 x below the stiffest bond, N#N); relabelled >= 1.6 x
  above 200 and >= 2.4 x below 4.
* energy, two indicators agreeing: bond stiffness outside the typical 8-150 (or, without a stiffness, RMS force
  above 15 eV/A) together with an absolute energy that matches a unit whose factor makes them typical.
* RMS force above MAX_RMS_FORCE = 50 eV/A: raises on its own (the former check_force_scale).
The likely unit named in the message is the unit of so3krates_lab.units whose factor brings the stiffness into
[4, 200] and the RMS force below 15 eV/A, preferring one the absolute energy confirms, then the one closest to
the middle of the typical range; for lengths, the unit that brings the ratio into 0.8-1.25.

Measured on every file of ../shared/data and the shipped data (`python -m so3krates_lab.data.plausibility
DIR` prints it; rMD17: range over all 10 files of a molecule). Every relabelling raises and names the true
unit; no correctly labelled file raises; "-": inconclusive.

  L: bond-length ratio, E: energy ratio, F: RMS force (eV/A), T: bond temperature (K), r: bond correlation
  file                         L correct  L Bohr-as-A  E       F       T          r
  rMD17 aspirin                0.95       1.79-1.80    1.01    1.27    551-593    -0.89..-0.91
  rMD17 benzene                0.95-0.96  1.80-1.82    1.01    0.91    281-313    -0.89..-0.91
  rMD17 ethanol                1.01-1.02  1.90-1.92    1.01    1.20    630-707    -0.91..-0.93
  rMD17 malonaldehyde          0.96-0.98  1.82-1.86    1.01    1.30    634-721    -0.88..-0.91
  rMD17 naphthalene            0.93-0.94  1.76-1.77    1.01    1.32    568-639    -0.89..-0.91
  rMD17 salicylic              0.93-0.94  1.76-1.78    1.01    1.30    581-620    -0.90..-0.91
  rMD17 toluene                0.98-0.99  1.86-1.87    1.01    1.25    555-623    -0.89..-0.91
  rMD17 uracil                 0.91-0.92  1.73         1.01    1.37    571-688    -0.86..-0.88
  MD17 ethanol trajectory      1.01       1.91         1.01    0.93    306        -0.87
  MD22 Ac-Ala3-NHMe 5 frames   0.99       1.87         1.01    0.82    48         -0.99
  MD22 Ac-Ala3-NHMe 98 frames  1.00       1.88         -       -       -          -     (positions only)
  Li3PO4 periodic, 50 frames   0.894      1.69         0.0025  2.29    2184       -0.88
  water 64 H2O periodic        1.01       1.90         0.23    0.81    327        -0.92
  QM7-X C6H12 100 conformers   1.03       1.94         1.02    1.55    496        -0.84
  QM7-X 2500 frames, many mol. 1.02       1.92         1.01    1.69    604        -0.74
  geometries at-at / catcher / dha   0.92 / 0.92 / 1.01   Bohr-as-A 1.74 / 1.73 / 1.90   (no forces)
  shipped ethanol PBE 500 K    1.00       1.89         1.01    1.15    568        -0.94
  shipped Ac-Ala3-NHMe xTB     0.99       1.87         0.066   1.05    460        -0.92
  shipped ethanol harmonic     1.04       1.96         1.01    0.0003  -          -     (1 frame)

  k: bond stiffness (eV/A^2), correct and relabelled; "Ha/Bohr": Hartree energies with Hartree/Bohr forces
  file                         correct  kcal/mol as eV  eV as kcal/mol  Hartree as eV  Ha/Bohr as eV, eV/A
  rMD17 aspirin                33-35    756-804         1.42-1.51       1.20-1.28      0.64-0.68
  rMD17 benzene                37-39    846-892         1.59-1.68       1.35-1.42      0.71-0.75
  rMD17 ethanol                30-31    693-721         1.30-1.36       1.10-1.15      0.58-0.61
  rMD17 malonaldehyde          28-30    641-688         1.21-1.29       1.02-1.10      0.54-0.58
  rMD17 naphthalene            35-37    817-849         1.54-1.60       1.30-1.35      0.69-0.72
  rMD17 salicylic              35-37    811-858         1.52-1.61       1.29-1.37      0.68-0.72
  rMD17 toluene                32-35    738-795         1.39-1.50       1.18-1.27      0.62-0.67
  rMD17 uracil                 35-38    796-869         1.50-1.63       1.27-1.39      0.67-0.73
  MD17 ethanol trajectory      28       650             1.22            1.04           0.55
  MD22 Ac-Ala3-NHMe 5 frames   35       806             1.52            1.29           0.68
  Li3PO4 (P-O bonds)           30       682 (F 52.8)    1.28            1.09           0.58
  water                        39       890             1.67            1.42           0.75
  QM7-X C6H12                  17       397             0.75            0.63           0.34
  QM7-X many molecules         14       320             0.60            0.51           0.27
  shipped ethanol PBE 500 K    34       791             1.49            1.26           0.67
  shipped Ac-Ala3-NHMe xTB     30       684             1.29            1.09           0.58
  (the harmonic file's single frame and the position-only files: no stiffness, energy relabellings not caught)

Considered and not used: the frame-pair Rayleigh quotient -(F_i - F_j).(R_i - R_j) / |R_i - R_j|^2 after Kabsch
alignment weighs the Hessian eigenvalues by how the displacements were sampled (thermal pairs: the harmonic
mean, 3.0 eV/A^2 for the ethanol PBE Hessian, whose eigenvalues span 0.3-103; consecutive MD frames: the
velocity-weighted mean, ~40) and measured 0.56-14 on these files depending on the spacing of the frames, a
spread as wide as the factor it should detect (the bond slope spreads by 2.8). The energy-vs-force-work ratio of
nearest frame pairs (which would catch forces per Bohr with positions in Angstrom) measured 0.07-1.0 on correct
shuffled files: too far apart for the trapezoidal rule. The energy-fluctuation temperature is 300-700 K for
rMD17 but 6,000-29,000 K for QM7-X and Li3PO4: no bound separates it from a 23 x error.

Cost (CPU time on the 2-core development machine): 10-40 ms per file, about 10-20% of the reading time (rMD17
1,000 frames: 10-18 ms of ~120 ms; 2,500 QM7-X frames: 36 ms; 3,000 xTB frames: 23 ms; 192-atom periodic
frames: 15-16 ms); bounded by the length sample (32 frames, 1,000 atoms) and the bond sample (256 frames or
25,000 atom-frames per composition, 32 compositions, 200,000 atom-frames in all).
"""

from __future__ import annotations

import time
from typing import Iterable, Sequence

import numpy as np
import vesin
from ase.data import covalent_radii

from so3krates_lab.structures import Dataset, System
from so3krates_lab.units import (ENERGY_UNITS, HARTREE, LENGTH_UNITS, UnitError, canonical_energy_unit,
                                 canonical_length_unit)

__all__ = ["MAX_RMS_FORCE", "check_units", "free_atom_energy", "unit_evidence"]

# Above this RMS force (eV/Angstrom, whole data set) the unit conversion is wrong: real molecular and materials
# data sets have RMS forces of about 0.3 to 3 eV/Angstrom. Raises on its own.
MAX_RMS_FORCE = 50.0
# Above this RMS force, a too-large energy unit is suspected (needs the absolute energy to agree).
TYPICAL_MAX_RMS_FORCE = 15.0

NOBLE_GASES = frozenset({2, 10, 18, 36, 54, 86, 118})
LIGHT = frozenset({1, 5, 6, 7, 8, 9})  # H B C N O F
NONMETALS = LIGHT | frozenset({14, 15, 16, 17, 33, 34, 35, 53})  # + Si P S Cl As Se Br I

# bond-length ratio (nearest neighbour / covalent radii sum)
REAL_RATIO = (0.8, 1.25)  # real bonded matter
LONG_RATIO = (1.42, 2.6)  # too long by a unit factor (Bohr read as Angstrom: 1.5-2.4); above: not bonded
LENGTH_FRAMES = 32
MIN_LENGTH_ATOMS = 3  # frames with fewer non-noble atoms are not used (a diatomic scan stretches its only bond)
LENGTH_ATOM_BUDGET = 1000

# bond stiffness (eV/Angstrom^2) of covalent bonds between non-metals with at least one of H B C N O F
STIFFNESS_DECISIVE = (4.0, 200.0)
STIFFNESS_TYPICAL = (8.0, 150.0)
BOND_CUT = 1.2  # a bond: d < BOND_CUT x radii sum in the first frame of its composition ...
BOND_PERSIST = 1.35  # ... and below BOND_PERSIST x in every frame
MIN_GROUP_FRAMES = 5
MIN_BONDS = 3
MAX_BOND_CORRELATION = -0.5
GROUP_FRAMES = 256  # at most this many frames of one composition (and GROUP_ATOM_FRAMES atoms x frames) ...
GROUP_ATOM_FRAMES = 25_000
MAX_GROUPS = 32  # ... of at most this many compositions (the largest) ...
BOND_ATOM_FRAMES = 200_000  # ... and at most this many atoms x frames in all

# absolute energy: E / sum of free-atom energies, window around a unit factor that counts as a match
ENERGY_RATIO_MATCH = (0.93, 1.25)

KB_EV = 8.617333262e-5  # Boltzmann constant, eV/K
_EXACT_ATOM_HARTREE = {1: -0.5, 2: -2.903724, 3: -7.478060, 4: -14.66736}
_RADII = np.asarray(covalent_radii, dtype=np.float64)
_Z_MAX = len(_RADII)
_IS_NOBLE = np.isin(np.arange(_Z_MAX), list(NOBLE_GASES))
_IS_LIGHT = np.isin(np.arange(_Z_MAX), list(LIGHT))
_IS_NONMETAL = np.isin(np.arange(_Z_MAX), list(NONMETALS))


def free_atom_energy(numbers) -> np.ndarray:
    """Total energy (eV) of free neutral atoms: exact for Z <= 4, else the Thomas-Fermi-Scott-Schwinger series
    -0.7687 Z^(7/3) + Z^2/2 - 0.2699 Z^(5/3) Hartree (non-relativistic, within 1.5% for Z >= 5)."""
    z = np.asarray(numbers, dtype=np.float64)
    e = -0.7687 * z ** (7.0 / 3.0) + 0.5 * z ** 2 - 0.2699 * z ** (5.0 / 3.0)
    for zz, value in _EXACT_ATOM_HARTREE.items():
        e = np.where(z == zz, value, e)
    return e * HARTREE


_ATOM_ENERGY = free_atom_energy(np.arange(_Z_MAX))


# ---------------------------------------------------------------- geometry helpers


def _pairs(system: System, cutoff: float):
    """(i, j, vectors (P, 3), distances (P,)) of all pairs i < j (and periodic images, i == j allowed)
    within cutoff; free molecules of up to 300 atoms with numpy, everything else with vesin."""
    pos = system.positions
    n = system.n_atoms
    if not system.periodic and n <= 300:
        i, j = np.triu_indices(n, 1)
        v = pos[j] - pos[i]
        d = np.sqrt(np.einsum("pk,pk->p", v, v))
        keep = d < cutoff
        return i[keep], j[keep], v[keep], d[keep]
    box, periodic = system.box_and_pbc()
    nl = vesin.NeighborList(cutoff=float(cutoff), full_list=False)
    i, j, shifts, d = nl.compute(pos, box, periodic, quantities="ijSd")
    v = pos[j] - pos[i] + shifts @ box
    keep = d > 1e-8
    return i[keep].astype(np.int64), j[keep].astype(np.int64), v[keep], d[keep]


def _evenly(n: int, k: int) -> np.ndarray:
    return np.arange(n) if n <= k else np.unique(np.linspace(0, n - 1, k).round().astype(np.int64))


# ---------------------------------------------------------------- the three measurements


def _min_ratios(s: System, counted: np.ndarray, rc: np.ndarray, reach: float) -> np.ndarray:
    """Per atom: min over neighbours of distance / radii sum, for neighbours with ratio <= reach (else inf)."""
    best = np.full(s.n_atoms, np.inf)
    if s.n_atoms > 1 or s.periodic:
        i, j, _, d = _pairs(s, reach * 2.0 * float(rc[counted].max()))
        ok = counted[i] & counted[j]
        i, j, d = i[ok], j[ok], d[ok]
        r = d / (rc[i] + rc[j])
        np.minimum.at(best, i, r)
        np.minimum.at(best, j, r)
    return best[counted]


def _bond_length_ratio(systems: Sequence[System]) -> dict:
    n_max = max(systems[int(k)].n_atoms for k in _evenly(len(systems), 4 * LENGTH_FRAMES))
    n_frames = int(np.clip(LENGTH_ATOM_BUDGET // max(n_max, 1), 1, LENGTH_FRAMES))
    frames, noble_only = [], 0
    for k in _evenly(len(systems), n_frames):
        s = systems[int(k)]
        counted = ~_IS_NOBLE[s.numbers]
        if counted.sum() >= MIN_LENGTH_ATOMS:
            frames.append((s, counted, _RADII[s.numbers]))
        elif not counted.any():
            noble_only += 1
    out = {"bond_length_ratio": None, "bond_length_atoms": 0, "bond_length_range": None}
    if not frames:
        out["bond_length_note"] = ("only noble-gas atoms: no covalent bond length to compare with" if noble_only else
                                   f"fewer than {MIN_LENGTH_ATOMS} atoms per frame (one distance of a diatomic "
                                   f"may be a stretched bond)")
        return out
    # First pass with a short search radius: every ratio up to LONG_RATIO[0] is found exactly, so when the median
    # lies below it (correct units) it is exact; otherwise search again out to LONG_RATIO[1].
    r = np.concatenate([_min_ratios(s, c, rc, LONG_RATIO[0] * 1.02) for s, c, rc in frames])
    if not np.median(r) <= LONG_RATIO[0]:
        r = np.concatenate([_min_ratios(s, c, rc, LONG_RATIO[1] * 1.02) for s, c, rc in frames])
    out["bond_length_atoms"] = int(r.size)
    finite = r[np.isfinite(r)]
    median = float(np.median(r))
    out["bond_length_ratio"] = median
    if finite.size:
        out["bond_length_range"] = (float(np.percentile(finite, 10)), float(np.percentile(finite, 90)))
    if not np.isfinite(median) or median > LONG_RATIO[1]:
        out["bond_length_note"] = "the atoms are not bonded (isolated atoms or a very sparse system)"
    return out


def _group_bonds(frames: list[System]):
    """Per-bond (cov(f, d), var(d), var(f)) over the frames of one composition, for covalent non-metal bonds."""
    s0 = frames[0]
    z = s0.numbers
    rc = _RADII[z]
    covalent = _IS_NONMETAL[z]
    light = _IS_LIGHT[z]
    if not (covalent & light).any():
        return None
    cutoff = BOND_CUT * 2.0 * float(rc[covalent].max())
    i, j, v0, d0 = _pairs(s0, cutoff)
    keep = (i != j) & covalent[i] & covalent[j] & (light[i] | light[j]) & (d0 < BOND_CUT * (rc[i] + rc[j]))
    if not keep.any():
        return None
    i, j, v0 = i[keep], j[keep], v0[keep]
    R = np.stack([s.positions for s in frames])
    F = np.stack([s.forces for s in frames])
    v = R[:, j] - R[:, i]  # (S, B, 3)
    if s0.periodic:  # the image of frame 0, followed by fractional coordinates (cells may change: NPT)
        cells = np.stack([s.cell for s in frames])
        try:
            inv = np.linalg.inv(cells)
        except np.linalg.LinAlgError:
            return None
        frac = np.einsum("sbk,skl->sbl", v, inv)
        ref = v0 @ inv[0]
        frac = frac + np.round(ref[None] - frac)
        v = np.einsum("sbk,skl->sbl", frac, cells)
    d = np.sqrt(np.einsum("sbk,sbk->sb", v, v))
    persistent = (d < BOND_PERSIST * (rc[i] + rc[j])[None]).all(axis=0)
    if not persistent.any():
        return None
    v, d, i, j = v[:, persistent], d[:, persistent], i[persistent], j[persistent]
    f = 0.5 * np.einsum("sbk,sbk->sb", F[:, j] - F[:, i], v / d[..., None])
    dc = d - d.mean(axis=0)
    fc = f - f.mean(axis=0)
    cov = (dc * fc).mean(axis=0)
    var_d = (dc * dc).mean(axis=0)
    var_f = (fc * fc).mean(axis=0)
    ok = (var_d > 1e-14) & (var_f > 0)
    return cov[ok], var_d[ok], var_f[ok]


def _bond_stiffness(systems: Sequence[System], keys: Sequence[bytes]) -> dict:
    out = {"bond_stiffness": None, "bond_stiffness_bonds": 0, "bond_correlation": None, "bond_temperature": None,
           "bond_stiffness_frames": 0}
    groups: dict[tuple, list[int]] = {}
    for k, (s, key) in enumerate(zip(systems, keys)):
        if s.forces is not None:
            groups.setdefault((key, s.periodic), []).append(k)
    usable = sorted((g for g in groups.values() if len(g) >= MIN_GROUP_FRAMES), key=len, reverse=True)
    if not usable:
        out["bond_stiffness_note"] = f"no composition with at least {MIN_GROUP_FRAMES} labelled frames"
        return out
    covs, var_ds, var_fs, n_frames, budget = [], [], [], 0, BOND_ATOM_FRAMES
    for members in usable[:MAX_GROUPS]:
        n_atoms = systems[members[0]].n_atoms
        if budget < MIN_GROUP_FRAMES * n_atoms:
            break
        cap = min(GROUP_FRAMES, GROUP_ATOM_FRAMES // n_atoms, budget // n_atoms)
        pick = _evenly(len(members), int(max(MIN_GROUP_FRAMES, cap)))
        budget -= len(pick) * n_atoms
        frames = [systems[members[int(p)]] for p in pick]
        stats = _group_bonds(frames)
        if stats is None or stats[0].size == 0:
            continue
        covs.append(stats[0])
        var_ds.append(stats[1])
        var_fs.append(stats[2])
        n_frames += len(frames)
    if not covs:
        out["bond_stiffness_note"] = "no covalent bond between non-metal atoms (H B C N O F with a non-metal)"
        return out
    cov, var_d, var_f = np.concatenate(covs), np.concatenate(var_ds), np.concatenate(var_fs)
    corr = cov / np.sqrt(var_d * var_f)
    out["bond_stiffness_bonds"] = int(cov.size)
    out["bond_stiffness_frames"] = n_frames
    out["bond_correlation"] = float(np.median(corr))
    if cov.size < MIN_BONDS:
        out["bond_stiffness_note"] = f"fewer than {MIN_BONDS} covalent bonds"
        return out
    if out["bond_correlation"] > MAX_BOND_CORRELATION:
        out["bond_stiffness_note"] = (f"bond forces do not follow the bond lengths (median correlation "
                                      f"{out['bond_correlation']:.2f}, real data below {MAX_BOND_CORRELATION})")
        return out
    out["bond_stiffness"] = float(np.median(-cov / var_d))
    out["bond_temperature"] = float(np.median(-cov) / KB_EV)
    return out


def _energy_ratio(systems: Sequence[System], keys: Sequence[bytes]) -> dict:
    reference: dict[bytes, float] = {}
    rho = []
    for s, key in zip(systems, keys):
        if s.energy is None:
            continue
        if key not in reference:
            reference[key] = float(_ATOM_ENERGY[s.numbers].sum())
        rho.append(s.energy / reference[key])
    if not rho:
        return {"energy_ratio": None, "energy_ratio_range": None}
    lo, hi = np.percentile(rho, [10, 90])
    return {"energy_ratio": float(np.median(rho)), "energy_ratio_range": (float(lo), float(hi))}


# ---------------------------------------------------------------- public API


def _systems_and_units(data, units):
    if isinstance(data, Dataset):
        systems = list(data.systems)
        if units is None and data.file_units:
            units = (data.file_units.get("energy", "eV"), data.file_units.get("length", "Angstrom"))
    elif isinstance(data, System):
        systems = [data]
    else:
        systems = list(data)
    if not systems:
        raise ValueError("no systems to check")
    energy_unit, length_unit = units if units is not None else ("eV", "Angstrom")
    return systems, (canonical_energy_unit(energy_unit), canonical_length_unit(length_unit))


def unit_evidence(data: Dataset | System | Iterable[System], units: tuple[str, str] | None = None) -> dict:
    """Measure the unit-plausibility statistics of `data` (a Dataset, a System or Systems, internal units).

    units: the (energy, length) units the file stored (default: data.file_units, else eV / Angstrom); they only
    name the candidates. Returns a dict: bond_length_ratio (median nearest-neighbour distance / covalent radii
    sum), bond_stiffness (eV/A^2, median relaxed stretching constant of covalent non-metal bonds),
    bond_correlation, bond_temperature (K), energy_ratio (E / free-atom energies), rms_force (eV/A), counts,
    `*_note` strings saying why a measurement is inconclusive (value None), `length_verdict` and
    `energy_verdict` (None, or a dict with `factor`, `unit` (or None), `measured` and `reason`), and seconds.
    """
    t0 = time.perf_counter()
    systems, units = _systems_and_units(data, units)
    energy_unit, length_unit = units
    ev: dict = {"n_frames": len(systems), "units": {"energy": energy_unit, "length": length_unit}}
    ev.update(_bond_length_ratio(systems))
    forces = [s.forces for s in systems if s.forces is not None]
    if forces:
        flat = np.concatenate(forces).reshape(-1)
        ev["rms_force"] = float(np.sqrt(np.dot(flat, flat) / flat.size))
    else:
        ev["rms_force"] = None
    keys = [s.numbers.tobytes() for s in systems]
    ev.update(_bond_stiffness(systems, keys))
    ev.update(_energy_ratio(systems, keys))
    ev["length_verdict"] = _length_verdict(ev, length_unit)
    ev["energy_verdict"] = _energy_verdict(ev, energy_unit)
    ev["seconds"] = time.perf_counter() - t0
    return ev


def _length_verdict(ev: dict, declared: str):
    ratio = ev["bond_length_ratio"]
    if ratio is None or not (LONG_RATIO[0] <= ratio <= LONG_RATIO[1]):
        return None
    factor = LENGTH_UNITS.get(declared, 1.0)
    # the unit u makes the ratio real when ratio * f(u) / f(declared) lies in REAL_RATIO
    fits = [(abs(np.log(ratio * f / factor)), u) for u, f in LENGTH_UNITS.items()
            if u != declared and REAL_RATIO[0] <= ratio * f / factor <= REAL_RATIO[1]]
    unit = min(fits)[1] if fits else None
    return {"factor": 1.0 / ratio, "unit": unit, "measured": ratio,
            "reason": f"the median nearest-neighbour distance is {ratio:.2f} x the covalent bond length "
                      f"(real bonded matter: {REAL_RATIO[0]}-{REAL_RATIO[1]}; Bohr read as Angstrom: ~1.89)"}


def _energy_candidates(declared: str) -> dict[str, float]:
    base = ENERGY_UNITS.get(declared, 1.0)
    return {u: f / base for u, f in ENERGY_UNITS.items() if u != declared}


def _confirmed(ev: dict, s: float) -> bool:
    rng = ev.get("energy_ratio_range")
    return rng is not None and ENERGY_RATIO_MATCH[0] <= rng[0] * s and rng[1] * s <= ENERGY_RATIO_MATCH[1]


def _energy_verdict(ev: dict, declared: str):
    k, force = ev["bond_stiffness"], ev["rms_force"]
    candidates = _energy_candidates(declared)

    def fits(s: float, stiffness_range: tuple[float, float]) -> bool:
        """Would the data be plausible with energies multiplied by s?"""
        if k is not None and not (stiffness_range[0] <= s * k <= stiffness_range[1]):
            return False
        return force is None or s * force <= TYPICAL_MAX_RMS_FORCE

    def typical(s: float) -> bool:
        return fits(s, STIFFNESS_TYPICAL)

    def likely():
        """The unit that makes the data plausible: confirmed by the absolute energy first, then the one bringing
        the stiffness closest to the middle of the typical range (or the smallest change, without stiffness)."""
        middle = float(np.sqrt(STIFFNESS_TYPICAL[0] * STIFFNESS_TYPICAL[1]))
        ranked = [(not _confirmed(ev, s), abs(np.log(s * k / middle)) if k is not None else abs(np.log(s)), u, s)
                  for u, s in candidates.items() if fits(s, STIFFNESS_DECISIVE)]
        return min(ranked)[2:] if ranked else (None, None)

    reasons = []
    if k is not None:
        reasons.append(f"the covalent bonds have a median stretching stiffness of {k:.3g} eV/Angstrom^2 "
                       f"(real bonds: {STIFFNESS_TYPICAL[0]:g}-{STIFFNESS_TYPICAL[1]:g}, over "
                       f"{ev['bond_stiffness_bonds']} bonds in {ev['bond_stiffness_frames']} frames)")
    if force is not None:
        reasons.append(f"the RMS force is {force:.3g} eV/Angstrom (real data: about 0.3-3)")
    if ev.get("energy_ratio") is not None:
        reasons.append(f"the energies are {ev['energy_ratio']:.3g} x the sum of free-atom total energies")

    decided = None
    if force is not None and force > MAX_RMS_FORCE:
        decided = "force"
    elif k is not None and not (STIFFNESS_DECISIVE[0] <= k <= STIFFNESS_DECISIVE[1]):
        decided = "stiffness"
    else:
        atypical = (k is not None and not (STIFFNESS_TYPICAL[0] <= k <= STIFFNESS_TYPICAL[1])) or (
            k is None and force is not None and force > TYPICAL_MAX_RMS_FORCE)
        if atypical and any(_confirmed(ev, s) and typical(s) for s in candidates.values()):
            decided = "stiffness and absolute energy" if k is not None else "force and absolute energy"
    if decided is None:
        return None
    unit, s = likely()
    if s is None:  # no known unit explains it: say by how much
        if k is not None:
            s = float(np.sqrt(STIFFNESS_TYPICAL[0] * STIFFNESS_TYPICAL[1]) / k)
        else:
            s = 1.0 / force
    return {"factor": float(s), "unit": unit, "measured": k if k is not None else force, "decided_by": decided,
            "confirmed_by_energy": unit is not None and _confirmed(ev, candidates[unit]),
            "reason": "; ".join(reasons)}


def _fmt_factor(s: float) -> str:
    return f"{1 / s:.3g} x too large" if s < 1 else f"{s:.3g} x too small"


def check_units(data: Dataset | System | Iterable[System], units: tuple[str, str] | None = None,
                source=None) -> dict:
    """Raise UnitError when `data` is clearly not in the units it was read with; return the evidence otherwise.

    units:  the (energy, length) units the file stored (default: data.file_units, else eV / Angstrom)
    source: the file, for the message (default: data.source)
    The message names the file, what was measured, the likely true unit and how to proceed (the right
    energy_unit= / length_unit=, or check_units=False on data.load and the readers to skip the check).
    """
    ev = unit_evidence(data, units)
    if source is None:
        source = getattr(data, "source", "") or getattr(data, "name", "") or "<in-memory data>"
    eu, lu = ev["units"]["energy"], ev["units"]["length"]
    skip = ("If the units are right after all (an unusual system), pass check_units=False to "
            "so3krates_lab.data.load or the reader to skip this check.")
    fix_file = ("(where the file itself declares its unit, e.g. an npz 'e_unit'/'r_unit' key or a format with "
                "fixed units, correct or convert the file instead)")
    lv = ev["length_verdict"]
    if lv is not None:
        if lv["unit"] is not None:
            likely = (f"the positions are probably in {lv['unit']}, not {lu}: read the file with "
                      f"length_unit={lv['unit']!r} {fix_file}.")
        else:
            likely = f"the positions look {1 / lv['factor']:.2f} x too long for {lu}: check the length unit {fix_file}."
        raise UnitError(f"{source}: implausible length unit: {lv['reason']}, so {likely} {skip}")
    evd = ev["energy_verdict"]
    if evd is not None:
        head = {"force": "implausible forces", "stiffness": "implausible energy unit"}.get(
            evd["decided_by"], "implausible energy unit")
        what = f"energies and forces look {_fmt_factor(evd['factor'])} for {eu}/{lu}"
        if evd["unit"] is not None:
            likely = (f"the energies and forces are probably in {evd['unit']}"
                      + (" (the absolute energies match that unit)" if evd["confirmed_by_energy"] else "")
                      + f", not {eu}: read the file with energy_unit={evd['unit']!r} {fix_file}.")
        else:
            likely = f"no known unit explains this: check energy_unit= and length_unit= {fix_file}."
        message = f"{source}: {head}: {evd['reason']}: {what}; {likely} {skip}"
        if evd["decided_by"] == "force":
            message = (f"{source}: RMS force is {ev['rms_force']:.4g} eV/Angstrom after converting from {eu}/{lu}, "
                       f"above the {MAX_RMS_FORCE} eV/Angstrom that real data never reach: the units are probably "
                       f"wrong: {likely} {skip}")
        raise UnitError(message)
    return ev


# (label, declared energy unit, declared length unit, true energy unit, true length unit) of the relabellings
RELABELLINGS = (
    ("correct", None, None, None, None),
    ("kcal/mol as eV", "eV", None, "kcal/mol", None),
    ("eV as kcal/mol", "kcal/mol", None, "eV", None),
    ("Hartree as eV", "eV", None, "Hartree", None),
    ("Ha, Ha/Bohr as eV, eV/A", "eV", None, "Hartree", "Bohr-forces"),
    ("Bohr as Angstrom", None, "Angstrom", None, "Bohr"),
)


def relabel(systems: Sequence[System], units: tuple[str, str], label: str) -> tuple[list[System], tuple[str, str]]:
    """The Systems as they would read if the file's numbers were in the true units of relabelling `label` (a
    RELABELLINGS name) but were declared in its declared units: (systems, declared (energy, length) units)."""
    _, e_decl, l_decl, e_true, l_true = next(r for r in RELABELLINGS if r[0] == label)
    e_scale = ENERGY_UNITS[units[0]] / ENERGY_UNITS[e_true] if e_true else 1.0  # numbers in the file, eV -> true
    e_read = ENERGY_UNITS[e_decl] if e_decl else ENERGY_UNITS[units[0]]
    e = e_scale * e_read / ENERGY_UNITS[units[0]]
    f_extra = LENGTH_UNITS["Bohr"] if l_true == "Bohr-forces" else 1.0  # forces per Bohr, positions in A
    ln = 1.0 / LENGTH_UNITS["Bohr"] if l_true == "Bohr" else 1.0
    out = [s.replace(positions=s.positions * ln, cell=None if s.cell is None else s.cell * ln,
                     energy=None if s.energy is None else s.energy * e,
                     forces=None if s.forces is None else s.forces * e * f_extra / ln) for s in systems]
    return out, (e_decl or units[0], l_decl or units[1])


def _table(root) -> None:  # pragma: no cover - a measuring aid, run by hand
    """Print the evidence for every data file under `root` (and the shipped data), correct and relabelled."""
    from pathlib import Path

    from so3krates_lab.data.readers import load
    from so3krates_lab.data.shipped import shipped_dir

    kw = {"water_192atoms_400frames.npz": {"energy_unit": "eV"}, "qm7x_250_small.npz": {"energy_unit": "eV"}}
    paths = sorted(p for p in Path(root).rglob("*") if p.suffix in (".npz", ".xyz", ".extxyz"))
    paths += sorted(shipped_dir().glob("*.npz"))

    def fmt(x):
        return "-" if x is None else f"{x:.3g}"

    for path in paths:
        if path.name == "ethanol_pbe_harmonic.npz":
            h = np.load(path)
            ds = Dataset((System(numbers=h["numbers"], positions=h["positions"], energy=float(h["energy"]),
                                 forces=h["forces"]),), file_units={"energy": "eV", "length": "Angstrom"})
        else:
            ds = load(path, check_units=False, **kw.get(path.name, {}))
        units = (ds.file_units["energy"], ds.file_units["length"])
        cells = []
        for label, *_ in RELABELLINGS:
            if label != "correct" and label != "Bohr as Angstrom" and all(s.forces is None for s in ds):
                continue
            systems, declared = relabel(ds.systems, units, label)
            ev = unit_evidence(systems, declared)
            verdict = ev["length_verdict"] or ev["energy_verdict"]
            flag = "ok" if verdict is None else f"RAISE({verdict['unit']})"
            cells.append(f"{label}: L {fmt(ev['bond_length_ratio'])} k {fmt(ev['bond_stiffness'])} "
                         f"E {fmt(ev['energy_ratio'])} F {fmt(ev['rms_force'])} T {fmt(ev['bond_temperature'])} "
                         f"{flag} {ev['seconds'] * 1e3:.0f}ms")
        print(path.name, len(ds), "frames\n    " + "\n    ".join(cells))


if __name__ == "__main__":  # pragma: no cover
    import sys

    _table(sys.argv[1] if len(sys.argv) > 1 else ".")
