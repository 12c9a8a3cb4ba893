"""Readers for NumPy .npz data sets: rMD17, MD17 / sGDML style, and zero-padded multi-molecule (QM7-X).

Shapes: S frames, N atoms per frame (Nmax for padded files). Every reader returns a Dataset in eV,
Angstrom, eV/Angstrom, converting once with the factors of so3krates_lab.units.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np

from so3krates_lab.data._common import FormatError, assemble, npz_string, read_bytes, resolve_unit
from so3krates_lab.fileio import not_npz_reason
from so3krates_lab.structures import Dataset, StructureError
from so3krates_lab.units import energy_factor, length_factor

_UNKNOWN_ENERGY_HINT = (
    "(original MD17 files store 'kcal/mol'; files from other sources, e.g. DeePMD or QM7-X exports, "
    "often store 'eV')"
)
QM7X_KEYS = {"positions": "atXYZ", "numbers": "atNUM", "energy": "ePBE0+MBD", "forces": "totFOR"}
PLAIN_KEYS = {"positions": "R", "numbers": "z", "energy": "E", "forces": "F"}


def open_npz(path):
    """Return (path, sha256, {key: array}) for an .npz archive; arrays are loaded without pickle."""
    p, data, sha = read_bytes(path)
    reason = not_npz_reason(data[:64])
    if reason is not None:
        raise FormatError(f"{p}: not a readable .npz archive ({reason})")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise FormatError(f"{p}: not a readable .npz archive ({err})") from err
    return p, sha, arrays


def _require(arrays: dict, keys, path) -> None:
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise FormatError(f"{path}: missing key(s) {missing}; the file has keys {sorted(arrays)}")


def _declared_units(arrays: dict) -> tuple[str | None, str | None]:
    """Units a file declares itself (sGDML files carry 'e_unit' and 'r_unit' strings)."""
    e = npz_string(arrays["e_unit"]) if "e_unit" in arrays else None
    r = npz_string(arrays["r_unit"]) if "r_unit" in arrays else None
    return e, r


def _frames(path, names: dict, R, Z, E, F, cell, pbc, ef: float, lf: float, padded: bool):
    """Validate array shapes and yield System keyword dicts in internal units.

    R (S, N, 3) length; Z (N,) or (S, N); E None, (S,) or (S, 1); F None or (S, N, 3);
    cell None, (3, 3) or (S, 3, 3); pbc None, (3,) or (S, 3). names maps role -> key for messages.
    padded: atoms with Z == 0 are padding and dropped frame by frame.
    """
    R = np.asarray(R, dtype=np.float64)
    if R.ndim != 3 or R.shape[2] != 3:
        raise StructureError(f"{path}: {names['positions']} must have shape (S, N, 3), got {R.shape}")
    S, N = R.shape[:2]
    if S == 0:
        raise StructureError(f"{path}: file is empty (0 frames: {names['positions']} has shape {R.shape})")

    def mismatch(role, arr, expected):
        return StructureError(
            f"{path}: shape mismatch: {names[role]} has shape {arr.shape} but {names['positions']} has shape "
            f"{R.shape} (expected {names[role]} {expected})"
        )

    Z = np.asarray(Z)
    if Z.shape == (N,):
        Z = np.broadcast_to(Z, (S, N))
    elif Z.shape != (S, N):
        raise mismatch("numbers", Z, f"({N},) or ({S}, {N})")
    if E is not None:
        E = np.asarray(E, dtype=np.float64)
        if E.shape not in ((S,), (S, 1)):
            raise mismatch("energy", E, f"({S},) or ({S}, 1)")
        E = E.reshape(S) * ef
    if F is not None:
        F = np.asarray(F, dtype=np.float64)
        if F.shape != (S, N, 3):
            raise mismatch("forces", F, f"({S}, {N}, 3)")
        F = F * (ef / lf)
    if cell is not None:
        cell = np.asarray(cell, dtype=np.float64)
        if cell.shape == (3, 3):
            cell = np.broadcast_to(cell, (S, 3, 3))
        elif cell.shape != (S, 3, 3):
            raise mismatch("cell", cell, f"(3, 3) or ({S}, 3, 3)")
        cell = cell * lf
        pbc = np.ones(3, dtype=bool) if pbc is None else np.asarray(pbc, dtype=bool)
        pbc = np.broadcast_to(pbc, (S, 3)) if pbc.shape in ((), (3,)) else pbc
        if pbc.shape != (S, 3):
            raise mismatch("pbc", pbc, f"(3,) or ({S}, 3)")
    R = R * lf
    for k in range(S):
        keep = Z[k] != 0 if padded else slice(None)
        yield {
            "numbers": Z[k][keep],
            "positions": R[k][keep],
            "cell": None if cell is None else cell[k],
            "pbc": np.zeros(3, dtype=bool) if cell is None else pbc[k],
            "energy": None if E is None else E[k],
            "forces": None if F is None else F[k][keep],
        }


def _labels_and_units(arrays: dict, names: dict, energy_unit, length_unit, e_decl, r_decl, path):
    """(E, F, energy unit, length unit): labels may be absent; an unlabelled file needs no energy unit."""
    E, F = arrays.get(names["energy"]), arrays.get(names["forces"])
    labelled = E is not None or F is not None
    eu = resolve_unit("energy", energy_unit, e_decl, path, _UNKNOWN_ENERGY_HINT,
                      default=None if labelled else "eV")
    lu = resolve_unit("length", length_unit, r_decl, path, default="Angstrom")
    return E, F, eu, lu


def _reject_zero_numbers(path, Z, key: str) -> None:
    Z = np.asarray(Z)
    zero = Z == 0
    if zero.any():
        if Z.ndim == 1:
            where = f"atom {int(np.argmax(zero))}"
        else:
            k, a = np.unravel_index(int(np.argmax(zero)), Z.shape)
            where = f"frame {k}: atom {a}"
        raise StructureError(
            f"{path}: {where}: unknown element: atomic number 0 in {key!r}; if zeros mark padding atoms, "
            f"read the file with read_padded_npz"
        )


def read_rmd17(path, energy_unit: str | None = None, length_unit: str | None = None, labels: str = "new",
               min_distance: float | None = 0.1, check_units: bool = True) -> Dataset:
    """Read a revised MD17 file (keys nuclear_charges (N,), coords (S, N, 3), energies (S,), forces (S, N, 3)).

    The file stores Angstrom and kcal/mol (kcal/mol/Angstrom); energy_unit / length_unit need not be given
    and raise UnitError if they contradict that. labels="new" reads energies/forces (rMD17 PBE/def2-SVP),
    labels="old" reads old_energies/old_forces (the original MD17 labels of the same geometries).
    min_distance: Angstrom, overlap check threshold (None disables). check_units=False skips the
    unit-plausibility check (so3krates_lab.data.plausibility; every reader has this keyword).
    """
    if labels not in ("new", "old"):
        raise ValueError(f"labels must be 'new' or 'old', got {labels!r}")
    p, sha, arrays = open_npz(path)
    e_key, f_key = ("energies", "forces") if labels == "new" else ("old_energies", "old_forces")
    _require(arrays, ["nuclear_charges", "coords", e_key, f_key], p)
    eu = resolve_unit("energy", energy_unit, "kcal/mol", p)
    lu = resolve_unit("length", length_unit, "Angstrom", p)
    _reject_zero_numbers(p, arrays["nuclear_charges"], "nuclear_charges")
    names = {"positions": "coords", "numbers": "nuclear_charges", "energy": e_key, "forces": f_key}
    frames = _frames(p, names, arrays["coords"], arrays["nuclear_charges"], arrays[e_key], arrays[f_key],
                     None, None, energy_factor(eu), length_factor(lu), padded=False)
    return assemble(p, sha, frames, (eu, lu), min_distance=min_distance, check_units=check_units)


def read_md17_npz(path, energy_unit: str | None = None, length_unit: str | None = None,
                  min_distance: float | None = 0.1, check_units: bool = True) -> Dataset:
    """Read an original MD17 / sGDML style npz.

    Key sets: R (S, N, 3), z (N,) or (S, N), E (S,) or (S, 1), F (S, N, 3), optional cell ((3, 3) or
    (S, 3, 3)) and pbc ((3,) or (S, 3); all True when only a cell is given); or the original MD17
    trajectory layout positions, atomic_numbers, energy, forces (kcal/mol, Angstrom).
    Units: those the file declares (sGDML 'e_unit' / 'r_unit' keys) or its layout implies; a bare
    R/z/E/F file does not say, so energy_unit is required (UnitError otherwise). length_unit defaults to
    Angstrom when the file does not declare one. Contradicting a declared unit raises UnitError.
    min_distance: Angstrom (after conversion), overlap check threshold (None disables).
    """
    p, sha, arrays = open_npz(path)
    e_decl, r_decl = _declared_units(arrays)
    if "R" in arrays:
        names = dict(PLAIN_KEYS, cell="cell", pbc="pbc")
    elif "positions" in arrays:
        names = {"positions": "positions", "numbers": "atomic_numbers", "energy": "energy", "forces": "forces",
                 "cell": "cell", "pbc": "pbc"}
        e_decl = e_decl or "kcal/mol"
    else:
        raise FormatError(f"{p}: expected keys R, z, E, F or positions, atomic_numbers, energy, forces; "
                          f"the file has keys {sorted(arrays)}")
    _require(arrays, [names["positions"], names["numbers"]], p)
    E, F, eu, lu = _labels_and_units(arrays, names, energy_unit, length_unit, e_decl, r_decl, p)
    _reject_zero_numbers(p, arrays[names["numbers"]], names["numbers"])
    frames = _frames(p, names, arrays[names["positions"]], arrays[names["numbers"]], E, F, arrays.get("cell"),
                     arrays.get("pbc"), energy_factor(eu), length_factor(lu), padded=False)
    return assemble(p, sha, frames, (eu, lu), min_distance=min_distance, check_units=check_units)


def read_padded_npz(path, energy_unit: str | None = None, length_unit: str | None = None,
                    keys: dict | None = None, min_distance: float | None = 0.1, check_units: bool = True) -> Dataset:
    """Read a zero-padded multi-molecule npz; each frame keeps only its real atoms (atomic number > 0).

    Default keys R (S, Nmax, 3), z (S, Nmax) with 0 = padding, E (S,) or (S, 1), F (S, Nmax, 3): units
    unknown unless declared ('e_unit' / 'r_unit'), so energy_unit is required. Files with the native QM7-X
    keys (atXYZ, atNUM, ePBE0+MBD, totFOR) are read as QM7-X: eV and Angstrom. `keys` maps any of
    "positions", "numbers", "energy", "forces" to other key names (e.g. {"energy": "eAT"} for QM7-X).
    min_distance: Angstrom (after conversion), overlap check threshold (None disables).
    """
    p, sha, arrays = open_npz(path)
    e_decl, r_decl = _declared_units(arrays)
    if "atXYZ" in arrays:
        names = dict(QM7X_KEYS)
        e_decl, r_decl = e_decl or "eV", r_decl or "Angstrom"
    else:
        names = dict(PLAIN_KEYS)
    names.update(keys or {})
    unknown_roles = set(names) - set(PLAIN_KEYS)
    if unknown_roles:
        raise ValueError(f"keys may only name {sorted(PLAIN_KEYS)}, got {sorted(unknown_roles)}")
    _require(arrays, [names["positions"], names["numbers"]], p)
    E, F, eu, lu = _labels_and_units(arrays, names, energy_unit, length_unit, e_decl, r_decl, p)
    frames = _frames(p, names, arrays[names["positions"]], arrays[names["numbers"]], E, F, None, None,
                     energy_factor(eu), length_factor(lu), padded=True)
    return assemble(p, sha, frames, (eu, lu), min_distance=min_distance, check_units=check_units)
