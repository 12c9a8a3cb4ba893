"""Helpers shared by the readers: file bytes and hash, unit resolution, frames -> checked Dataset.

Frames handed to `assemble` are already in internal units (eV, Angstrom, eV/Angstrom).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

import numpy as np

from so3krates_lab.data import plausibility
from so3krates_lab.data.checks import check_overlaps
from so3krates_lab.structures import Dataset, StructureError, System
from so3krates_lab.units import UnitError, canonical_energy_unit, canonical_length_unit


class FormatError(ValueError):
    """A file cannot be read or its format / key layout is not recognised."""


def read_bytes(path) -> tuple[Path, bytes, str]:
    """Return (resolved path, file bytes, sha256 hex digest of the bytes); reject missing or empty files."""
    p = Path(path).expanduser().resolve()
    if not p.exists():
        raise FileNotFoundError(f"no such file: {p}")
    if not p.is_file():
        raise FormatError(f"{p} is not a regular file")
    data = p.read_bytes()
    if not data:
        raise StructureError(f"{p}: file is empty (0 bytes)")
    return p, data, hashlib.sha256(data).hexdigest()


def resolve_unit(kind: str, given: str | None, declared: str | None, path, hint: str = "",
                 default: str | None = None) -> str:
    """Pick the canonical `kind` ("energy" or "length") unit of a file.

    given:    what the caller passed (None: not passed)
    declared: what the file or its format is known to store (None: unknown)
    default:  used when neither is known (None: the unit is required)
    A given unit that contradicts a declared one raises UnitError; nothing is silently overridden.
    """
    canon = canonical_energy_unit if kind == "energy" else canonical_length_unit
    given_c = canon(given) if given is not None else None
    if declared is not None:
        declared_c = canon(declared)
        if given_c is not None and given_c != declared_c:
            raise UnitError(
                f"{path}: this file stores {kind} in {declared_c!r} but {kind}_unit={given!r} was passed; "
                f"leave {kind}_unit out or pass {declared_c!r} (no silent override)"
            )
        return declared_c
    if given_c is not None:
        return given_c
    if default is not None:
        return canon(default)
    raise UnitError(f"{path}: the {kind} unit of this file is not known; pass {kind}_unit=... {hint}".rstrip())


def npz_string(value) -> str:
    """Decode a string stored in an npz (0-d or 1-element str/bytes array)."""
    item = np.asarray(value).reshape(-1)[0].item()
    return item.decode() if isinstance(item, bytes) else str(item)


def assemble(path: Path, sha: str, frames: Iterable[dict], units: tuple[str, str], *,
             min_distance: float | None = 0.1, name: str | None = None, check_units: bool = True) -> Dataset:
    """Build checked Systems from frame dicts (System keyword arguments, internal units) into a Dataset.

    Every error is prefixed with the path and the 0-based frame index. `units` = (energy, length) unit
    the file stored, recorded in Dataset.file_units. Overlap check skipped when min_distance is None or 0.
    check_units: run the unit-plausibility check (so3krates_lab.data.plausibility.check_units), which raises
    UnitError when the values are clearly not in `units` (e.g. kcal/mol data declared as eV).
    """
    systems = []
    for k, frame in enumerate(frames):
        try:
            system = System(**frame)
            if min_distance:
                check_overlaps(system, min_distance)
        except StructureError as err:
            raise StructureError(f"{path}: frame {k}: {err}") from err
        systems.append(system)
    if not systems:
        raise StructureError(f"{path}: file is empty (0 frames)")
    if check_units:
        plausibility.check_units(systems, units, source=path)
    return Dataset(
        systems=tuple(systems),
        name=name if name is not None else path.stem,
        source=str(path),
        sha256=sha,
        file_units={"energy": units[0], "length": units[1]},
    )
