"""All data readers and the `load` dispatcher.

Every reader returns a Dataset (so3krates_lab.structures) in eV, Angstrom, eV/Angstrom, with name,
source (resolved path), sha256 (of the file bytes) and file_units filled. The readers live in
npz.py (rMD17, MD17/sGDML, padded/QM7-X) and xyz.py (MD22 xyz, ASE); this module picks one.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from so3krates_lab.data._common import FormatError
from so3krates_lab.data.npz import read_md17_npz, read_padded_npz, read_rmd17
from so3krates_lab.data.xyz import ENERGY_RE, read_ase, read_md22_xyz
from so3krates_lab.fileio import not_npz_reason, read_head
from so3krates_lab.structures import Dataset

#: Format name -> reader function, for `load(path, format=...)` (`detect_format` picks one from the file).
READERS = {
    "rmd17": read_rmd17,
    "md17": read_md17_npz,
    "md22": read_md22_xyz,
    "padded": read_padded_npz,
    "ase": read_ase,
}

__all__ = ["READERS", "detect_format", "load", "read_ase", "read_md17_npz", "read_md22_xyz",
           "read_padded_npz", "read_rmd17"]


def _detect_npz(path: Path) -> str:
    reason = not_npz_reason(read_head(path)) if path.is_file() else None
    if reason is not None:
        raise FormatError(f"{path}: not a readable .npz archive ({reason})")
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            z = archive["z"] if "z" in keys else None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, AttributeError) as err:
        raise FormatError(f"{path}: not a readable .npz archive ({err})") from err
    if {"nuclear_charges", "coords"} <= keys:
        return "rmd17"
    if "atXYZ" in keys:
        return "padded"
    if z is not None and z.ndim == 2 and (z == 0).any():
        return "padded"
    if {"R", "z"} <= keys or {"positions", "atomic_numbers"} <= keys:
        return "md17"
    raise FormatError(f"{path}: unrecognised .npz key layout {sorted(keys)}; pass format= one of {sorted(READERS)}")


def _detect_xyz(path: Path) -> str:
    """MD22 raw xyz: the first comment line carries `Energy=` (capital E, MD22's spelling) and no Lattice=."""
    with open(path, "rb") as fh:
        fh.readline()
        comment = fh.readline().decode("utf-8", errors="replace")
    if "Energy=" in comment and ENERGY_RE.search(comment) and "lattice=" not in comment.lower():
        return "md22"
    return "ase"


def detect_format(path) -> str:
    """Name of the reader for `path` (a key of READERS), from its extension and content."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".npz":
        return _detect_npz(p)
    if suffix == ".xyz":
        return _detect_xyz(p)
    return "ase"


def load(path, energy_unit: str | None = None, length_unit: str | None = None, format: str | None = None,
         check_units: bool = True, **kw) -> Dataset:
    """Read a data set into a Dataset in eV, Angstrom, eV/Angstrom.

    Detection: .npz with nuclear_charges + coords -> rMD17; atXYZ -> QM7-X (padded); a 2-D z with zeros ->
    padded; R/z or positions/atomic_numbers -> MD17 style; .xyz whose first comment line has `Energy=`
    (and no Lattice=) -> MD22 raw xyz (kcal/mol); anything else -> ASE (eV unless energy_unit says otherwise).
    format: "rmd17", "md17", "md22", "padded" or "ase" overrides detection. Units left as None use the
    reader's own rule (known file units, or ASE's eV/Angstrom); extra keywords go to the reader.
    check_units: every reader checks that the values are physically plausible in the stated units (bond lengths
    vs covalent radii, bond stiffness, absolute energies, forces: so3krates_lab.data.plausibility) and raises
    UnitError naming the likely unit, e.g. for kcal/mol data declared as eV; False skips that check.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"no such file: {p}")
    if format is None:
        format = detect_format(p)
    if format not in READERS:
        raise ValueError(f"unknown format {format!r} for {p}; choose one of {sorted(READERS)}")
    units = {k: v for k, v in (("energy_unit", energy_unit), ("length_unit", length_unit)) if v is not None}
    return READERS[format](p, **units, check_units=check_units, **kw)
