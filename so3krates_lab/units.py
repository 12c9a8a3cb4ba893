"""One internal unit system and converters used only at the edges.

Internal units: energy in eV, length in Angstrom, forces in eV/Angstrom, time in fs, mass in amu.
Readers convert file units to these once; nothing else in the package multiplies by unit factors.

Unit names are case-insensitive and have aliases ("kcal/mol", "kcal mol-1"; "Hartree", "Ha"; "Angstrom", "A",
"Å"; "Bohr", "a0"):

>>> round(1 / energy_factor("kcal/mol"), 4)  # 1 eV in kcal/mol
23.0605
>>> round(energy_factor("Hartree"), 6), round(length_factor("bohr"), 6)
(27.211386, 0.529177)
>>> round(force_factor("Hartree", "Bohr"), 4)  # 1 Hartree/Bohr in eV/Angstrom
51.4221
"""

from __future__ import annotations

#: 1 kcal/mol in eV (CODATA 2018 via 4.184 kJ/mol / N_A / e); the rMD17 README quotes 0.0433641043.
KCAL_PER_MOL = 0.0433641043
#: 1 kJ/mol in eV.
KJ_PER_MOL = 0.0103642697
#: 1 Hartree in eV (CODATA 2018).
HARTREE = 27.211386245988
#: 1 Bohr in Angstrom (CODATA 2018).
BOHR = 0.529177210903

#: Energy unit name -> eV per unit (the canonical names; `energy_factor` also takes aliases).
ENERGY_UNITS: dict[str, float] = {
    "eV": 1.0,
    "meV": 1e-3,
    "kcal/mol": KCAL_PER_MOL,
    "kJ/mol": KJ_PER_MOL,
    "Hartree": HARTREE,
}
#: Length unit name -> Angstrom per unit (the canonical names; `length_factor` also takes aliases).
LENGTH_UNITS: dict[str, float] = {
    "Angstrom": 1.0,
    "Bohr": BOHR,
    "nm": 10.0,
}
_ALIASES = {
    "ev": "eV", "mev": "meV", "kcal/mol": "kcal/mol", "kcal mol-1": "kcal/mol", "kcal_per_mol": "kcal/mol",
    "kj/mol": "kJ/mol", "hartree": "Hartree", "ha": "Hartree", "eh": "Hartree",
    "angstrom": "Angstrom", "ang": "Angstrom", "a": "Angstrom", "å": "Angstrom",
    "bohr": "Bohr", "a0": "Bohr", "nm": "nm",
}


class UnitError(ValueError):
    """A unit is missing, unknown, or contradicts what the file format is known to store."""


def _canonical(unit: str, table: dict[str, float], kind: str) -> str:
    if unit is None:
        raise UnitError(f"{kind} unit is required but was not given; choose one of {sorted(table)}")
    if not isinstance(unit, str):
        raise UnitError(f"{kind} unit must be a string, got {type(unit).__name__}")
    name = _ALIASES.get(unit.strip().lower(), unit.strip())
    if name not in table:
        raise UnitError(f"unknown {kind} unit {unit!r}; known {kind} units: {sorted(table)}")
    return name


def energy_factor(unit: str) -> float:
    """Multiply an energy in `unit` by this to get eV; raises `UnitError` for a missing or unknown unit.

    >>> energy_factor("meV"), energy_factor("eV")
    (0.001, 1.0)
    >>> round(100 * energy_factor("kJ/mol"), 6)  # 100 kJ/mol in eV
    1.036427
    """
    return ENERGY_UNITS[_canonical(unit, ENERGY_UNITS, "energy")]


def length_factor(unit: str) -> float:
    """Multiply a length in `unit` by this to get Angstrom; raises `UnitError` for a missing or unknown unit.

    >>> length_factor("nm"), length_factor("Å")
    (10.0, 1.0)
    """
    return LENGTH_UNITS[_canonical(unit, LENGTH_UNITS, "length")]


def canonical_energy_unit(unit: str) -> str:
    """The canonical name (a key of `ENERGY_UNITS`) of an energy unit or alias; `UnitError` if unknown.

    >>> canonical_energy_unit("kcal mol-1"), canonical_energy_unit("Ha"), canonical_energy_unit(" EV ")
    ('kcal/mol', 'Hartree', 'eV')
    """
    return _canonical(unit, ENERGY_UNITS, "energy")


def canonical_length_unit(unit: str) -> str:
    """The canonical name (a key of `LENGTH_UNITS`) of a length unit or alias; `UnitError` if unknown.

    >>> canonical_length_unit("a0"), canonical_length_unit("ang")
    ('Bohr', 'Angstrom')
    >>> canonical_length_unit("furlong")
    Traceback (most recent call last):
    ...
    so3krates_lab.units.UnitError: unknown length unit 'furlong'; known length units: ['Angstrom', 'Bohr', 'nm']
    """
    return _canonical(unit, LENGTH_UNITS, "length")


def force_factor(energy_unit: str, length_unit: str = "Angstrom") -> float:
    """Multiply a force in `energy_unit`/`length_unit` by this to get eV/Angstrom.

    >>> round(force_factor("kcal/mol"), 6)  # 1 kcal/mol/Angstrom in eV/Angstrom
    0.043364
    """
    return energy_factor(energy_unit) / length_factor(length_unit)


__all__ = [
    "BOHR", "ENERGY_UNITS", "HARTREE", "KCAL_PER_MOL", "KJ_PER_MOL", "LENGTH_UNITS", "UnitError",
    "canonical_energy_unit", "canonical_length_unit", "energy_factor", "force_factor", "length_factor",
]
