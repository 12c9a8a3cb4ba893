"""Text / ASE readers: raw MD22 xyz (parsed here) and anything ase.io.read understands.

Every reader returns a Dataset in eV, Angstrom, eV/Angstrom.
"""

from __future__ import annotations

import re

import numpy as np
from ase.data import atomic_numbers as _SYMBOL_TO_Z

from so3krates_lab.data._common import FormatError, assemble, read_bytes, resolve_unit
from so3krates_lab.structures import Dataset, StructureError
from so3krates_lab.units import energy_factor, length_factor

_FLOAT = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eEdD][-+]?\d+)?"
ENERGY_RE = re.compile(r"(?:^|\s)energy\s*=\s*\"?(" + _FLOAT + r")", re.IGNORECASE)
_PROPERTIES_RE = re.compile(r"(?:^|\s)properties\s*=\s*\"?([^\s\"]+)", re.IGNORECASE)
_MD22_COLUMNS = (["species", "pos"], ["species", "pos", "forces"])


def _element(symbol: str, path, k: int, atom: int) -> int:
    if symbol.lstrip("+-").isdigit():
        return int(symbol)
    z = _SYMBOL_TO_Z.get(symbol.capitalize())
    if z is None or z == 0:
        raise StructureError(f"{path}: frame {k}: unknown element symbol {symbol!r} at atom {atom}")
    return z


def _check_properties(comment: str, path, k: int) -> None:
    match = _PROPERTIES_RE.search(comment)
    if match is None:
        return
    fields = match.group(1).split(":")
    names = [n.lower() for n in fields[0::3]]
    if names not in _MD22_COLUMNS:
        raise FormatError(f"{path}: frame {k}: columns {match.group(1)!r} are not the MD22 layout "
                          f"(species, pos[, forces]); read this file with read_ase / format='ase'")


def _md22_frames(text: str, path, ef: float, lf: float):
    """Yield System keyword dicts from MD22 xyz text (atom count, comment with Energy=, El x y z [fx fy fz])."""
    lines = text.splitlines()
    pos, k = 0, 0
    while True:
        while pos < len(lines) and not lines[pos].strip():
            pos += 1
        if pos >= len(lines):
            return
        head = lines[pos].split()
        if len(head) != 1 or not head[0].isdigit():
            raise FormatError(f"{path}: line {pos + 1}: expected the atom count of frame {k}, got {lines[pos]!r}")
        n = int(head[0])
        body = lines[pos + 2: pos + 2 + n]
        if n == 0 or len(body) < n:
            raise StructureError(f"{path}: frame {k}: the count line says {n} atoms but "
                                 f"{len(body)} atom lines follow")
        comment = lines[pos + 1]
        _check_properties(comment, path, k)
        energy = ENERGY_RE.search(comment)
        rows = [line.split() for line in body]
        widths = {len(r) for r in rows}
        if len(widths) != 1 or widths.pop() not in (4, 7):
            bad = next(i for i, r in enumerate(rows) if len(r) != len(rows[0]) or len(r) not in (4, 7))
            raise FormatError(f"{path}: line {pos + 3 + bad}: expected 'El x y z' or 'El x y z fx fy fz', "
                              f"got {body[bad]!r}")
        try:
            values = np.array([r[1:] for r in rows], dtype=np.float64)
        except ValueError as err:
            raise FormatError(f"{path}: frame {k}: non-numeric coordinate or force ({err})") from err
        yield {
            "numbers": np.array([_element(r[0], path, k, i) for i, r in enumerate(rows)]),
            "positions": values[:, :3] * lf,
            "energy": None if energy is None else float(energy.group(1).replace("d", "e").replace("D", "e")) * ef,
            "forces": values[:, 3:] * (ef / lf) if values.shape[1] == 6 else None,
        }
        pos += 2 + n
        k += 1


def read_md22_xyz(path, energy_unit: str | None = None, length_unit: str | None = None,
                  min_distance: float | None = 0.1, check_units: bool = True) -> Dataset:
    """Read a raw MD22 xyz file: per frame an atom count line, a comment line with `Energy=<float>`
    (kcal/mol; may also carry Properties=species:S:1:pos:R:3:forces:R:3), then `El x y z fx fy fz`
    lines (Angstrom, kcal/mol/Angstrom). A frame without Energy= or force columns gets None for them.
    energy_unit / length_unit only validate (UnitError if they contradict kcal/mol, Angstrom).
    min_distance: Angstrom, overlap check threshold (None disables).
    """
    p, data, sha = read_bytes(path)
    eu = resolve_unit("energy", energy_unit, "kcal/mol", p)
    lu = resolve_unit("length", length_unit, "Angstrom", p)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise FormatError(f"{p}: not a text (UTF-8) xyz file ({err})") from err
    frames = _md22_frames(text, p, energy_factor(eu), length_factor(lu))
    return assemble(p, sha, frames, (eu, lu), min_distance=min_distance, check_units=check_units)


def _drop_vacuum(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, vacuum_gap: float) -> np.ndarray:
    """pbc with directions switched off where the empty gap between periodic images exceeds vacuum_gap (A)."""
    pbc = pbc.copy()
    volume = abs(np.linalg.det(cell))
    if volume < 1e-6:
        return pbc
    for i in range(3):
        if not pbc[i]:
            continue
        normal = np.cross(cell[(i + 1) % 3], cell[(i + 2) % 3])
        normal /= np.linalg.norm(normal)
        height = abs(cell[i] @ normal)
        extent = np.ptp(positions @ normal) if len(positions) else 0.0
        if height - extent > vacuum_gap:
            pbc[i] = False
    return pbc


def _ase_labels(atoms):
    results = atoms.calc.results if atoms.calc is not None else {}
    energy = results.get("energy")
    if energy is None:
        energy = next((atoms.info[k] for k in ("energy", "Energy") if k in atoms.info), None)
    forces = results.get("forces")
    if forces is None:
        forces = atoms.arrays.get("forces")
    return energy, forces


def _ase_frames(images, ef: float, lf: float, labels: bool, vacuum_gap: float | None):
    for atoms in images:
        positions = atoms.positions * lf
        pbc = np.asarray(atoms.pbc, dtype=bool)
        cell = atoms.cell.array * lf if pbc.any() else None
        if cell is not None and vacuum_gap is not None:
            pbc = _drop_vacuum(positions, cell, pbc, vacuum_gap)
            cell = cell if pbc.any() else None
        energy, forces = _ase_labels(atoms) if labels else (None, None)
        yield {
            "numbers": atoms.numbers,
            "positions": positions,
            "cell": cell,
            "pbc": pbc,
            "energy": None if energy is None else float(energy) * ef,
            "forces": None if forces is None else np.asarray(forces, dtype=np.float64) * (ef / lf),
        }


def read_ase(path, index=":", energy_unit: str = "eV", length_unit: str = "Angstrom", labels: bool = True,
             vacuum_gap: float | None = 50.0, min_distance: float | None = 0.1, check_units: bool = True,
             **ase_kw) -> Dataset:
    """Read anything ase.io.read understands (extxyz, ASE .db, ...), with cells and pbc.

    index: ASE index string or int (":" = all frames). Units default to ASE's eV / Angstrom.
    Energies from atoms.calc, else atoms.info['energy' or 'Energy']; forces from atoms.calc, else
    atoms.arrays['forces']; missing labels give None. labels=False drops them (e.g. model predictions).
    A periodic cell is dropped when pbc is all False. vacuum_gap (Angstrom): a periodic direction whose
    empty gap between the atoms and their next image exceeds it is made non-periodic (e.g. a molecule in
    a fake 999.9 A box becomes a free molecule, cell None); None keeps the file's pbc. min_distance: Angstrom
    (after conversion), overlap check threshold (None disables).
    check_units (all readers): False skips the unit-plausibility check (so3krates_lab.data.plausibility), which
    raises UnitError when bond lengths, bond stiffness or forces show the data are not in the stated units.
    """
    import ase.io

    p, _, sha = read_bytes(path)
    eu = resolve_unit("energy", energy_unit, None, p)
    lu = resolve_unit("length", length_unit, None, p)
    try:
        images = ase.io.read(str(p), index=index, **ase_kw)
    except StopIteration:
        images = []
    except Exception as err:  # ASE raises many types for unreadable files
        raise FormatError(f"{p}: ASE could not read this file ({type(err).__name__}: {err}); "
                          f"pass format= to so3krates_lab.data.load if the extension is misleading") from err
    if not isinstance(images, list):
        images = [images]
    frames = _ase_frames(images, energy_factor(eu), length_factor(lu), labels, vacuum_gap)
    return assemble(p, sha, frames, (eu, lu), min_distance=min_distance, check_units=check_units)
