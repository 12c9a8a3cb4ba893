"""The ``>>>`` examples in the docstrings of the small pure functions run as tests (issue 20).

Each module's examples check a real fact (a rotated copy superposes with RMSD 0, 1 eV is 23.06 kcal/mol, an
anti dihedral is 180 degrees, ...) and print rounded numbers, so they hold on every platform and with or
without float64 JAX. None of them compiles a model: the whole file runs in seconds.
"""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "so3krates_lab.units",                       # unit factors and names
    "so3krates_lab.fileio",                      # what a file that is not an .npz looks like
    "so3krates_lab.analysis.alignment",          # Kabsch, symmetric RMSD, bond graphs, fingerprints
    "so3krates_lab.analysis.spectra",            # cm^-1 conversions, VACF, power spectrum, peaks, normal modes
    "so3krates_lab.analysis.peptide",            # dihedrals, Ramachandran regions
    "so3krates_lab.analysis.torsions",           # rotatable bonds, torsion turns
    "so3krates_lab.analysis.minima",             # minima deduplication
    "so3krates_lab.analysis.disconnectivity",    # superbasins
    "so3krates_lab.analysis.stability",          # energy drift, stable times
    "so3krates_lab.md.integrators",              # masses, kinetic energy, temperature, Maxwell-Boltzmann
    "so3krates_lab.graph.batching",              # capacity ladder
    "so3krates_lab.graph.neighbours",            # neighbour pairs
    "so3krates_lab.graph.skin",                  # cell-list binning
    "so3krates_lab.model.basis",                 # cutoff function, radial basis, spherical harmonics
    "so3krates_lab.model.config",                # presets and JSON round trip
    "so3krates_lab.data.builtin",                # internal coordinates, water box
    "so3krates_lab.data.splits",                 # random splits
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, report=True)
    assert result.attempted > 0, f"{name} has no docstring examples"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name} (see the output)"
