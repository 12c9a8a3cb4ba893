"""One internal unit system and converters used only at the edges.

Internal units: energy in eV, length in Angstrom, forces in eV/Angstrom, time in fs, mass in amu.
Readers convert file units to these once; nothing else in the package multiplies by unit factors.
"""

from __future__ import annotations

# 1 kcal/mol in eV (CODATA 2018 via 4.184 kJ/mol / N_A / e); the rMD17 README quotes 0.0433641043.
KCAL_PER_MOL = 0.0433641043
KJ_PER_MOL = 0.0103642697
HARTREE = 27.211386245988
BOHR = 0.529177210903

ENERGY_UNITS: dict[str, float] = {
    "eV": 1.0,
    "meV": 1e-3,
    "kcal/mol": KCAL_PER_MOL,
    "kJ/mol": KJ_PER_MOL,
    "Hartree": HARTREE,
}
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
    """Multiply an energy in `unit` by this to get eV."""
    return ENERGY_UNITS[_canonical(unit, ENERGY_UNITS, "energy")]


def length_factor(unit: str) -> float:
    """Multiply a length in `unit` by this to get Angstrom."""
    return LENGTH_UNITS[_canonical(unit, LENGTH_UNITS, "length")]


def canonical_energy_unit(unit: str) -> str:
    return _canonical(unit, ENERGY_UNITS, "energy")


def canonical_length_unit(unit: str) -> str:
    return _canonical(unit, LENGTH_UNITS, "length")


def force_factor(energy_unit: str, length_unit: str = "Angstrom") -> float:
    """Multiply a force in `energy_unit`/`length_unit` by this to get eV/Angstrom."""
    return energy_factor(energy_unit) / length_factor(length_unit)
