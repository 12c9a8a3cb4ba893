"""Reading reference data into Datasets (eV, Angstrom, eV/Angstrom), checks, splits and element shifts."""

from so3krates_lab.data import builtin  # built-in start geometries: builtin.ethanol(), builtin.dha(), ...
from so3krates_lab.data._common import FormatError
from so3krates_lab.data.checks import check_overlaps
from so3krates_lab.data.plausibility import MAX_RMS_FORCE, check_units, unit_evidence
from so3krates_lab.data.readers import (
    READERS,
    detect_format,
    load,
    read_ase,
    read_md17_npz,
    read_md22_xyz,
    read_padded_npz,
    read_rmd17,
)
from so3krates_lab.data.shipped import load_shipped, shipped_dir, shipped_models, shipped_path
from so3krates_lab.data.shifts import element_energy_sum, fit_element_energies
from so3krates_lab.data.splits import Split, random_split

__all__ = [
    "load_shipped", "shipped_dir", "shipped_models", "shipped_path",
    "MAX_RMS_FORCE",
    "READERS",
    "builtin",
    "FormatError",
    "Split",
    "check_overlaps",
    "check_units",
    "detect_format",
    "element_energy_sum",
    "fit_element_energies",
    "load",
    "random_split",
    "read_ase",
    "read_md17_npz",
    "read_md22_xyz",
    "read_padded_npz",
    "read_rmd17",
    "unit_evidence",
]
