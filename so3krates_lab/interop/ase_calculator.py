"""An ASE calculator for any potential: energy (eV), forces (eV/A) and, for periodic cells, stress (eV/A^3).

    atoms.calc = potential.calculator()          # or PotentialCalculator(potential)

Compiled code is reused across structures of similar size: each structure is padded to capacities from the
same geometric ladder as the batches (`graph.ladder_rung`), so a new structure compiles only when it crosses a
rung (and the neighbour list of a moving structure rarely changes rung).
"""

from __future__ import annotations

import jax
import numpy as np
from ase.calculators.calculator import Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from ..autodiff import compiler_options, energy_and_forces, energy_forces_stress
from ..graph import Capacity, ladder_rung, neighbour_pairs, pack
from ..potential_base import check_potential, check_system, float_dtype, graph_energy
from ..structures import System


def system_from_atoms(atoms) -> System:
    """ase.Atoms -> System (positions and cell in Angstrom; no labels)."""
    pbc = np.asarray(atoms.pbc, dtype=bool)
    return System(numbers=atoms.numbers, positions=atoms.positions,
                  cell=atoms.cell.array if pbc.any() else None, pbc=pbc)



class PotentialCalculator(Calculator):
    """ASE calculator around a potential (anything with cutoff, dtype and energy(graph), e.g. a `Potential`)."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, potential, **kwargs):
        super().__init__(**kwargs)
        check_potential(potential)
        self.potential = potential
        options = compiler_options()
        self._forces = jax.jit(lambda p, g: energy_and_forces(graph_energy, p, g), compiler_options=options)
        self._stress = jax.jit(lambda p, g: energy_forces_stress(graph_energy, p, g), compiler_options=options)
        self._dtype = float_dtype(potential)

    @classmethod
    def from_file(cls, path, **kwargs) -> "PotentialCalculator":
        """The calculator of a checkpoint file (`so3krates_lab.Potential.load`)."""
        from ..model import Potential  # the model is needed only to read its file

        return cls(Potential.load(path), **kwargs)

    @property
    def compiled_shapes(self) -> int:
        """How many programs have been compiled so far (one per capacity rung used)."""
        return self._forces._cache_size() + self._stress._cache_size()

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        system = system_from_atoms(self.atoms)
        check_system(self.potential, system)
        pairs = neighbour_pairs(system, self.potential.cutoff)
        capacity = Capacity(ladder_rung(system.n_atoms + 1), ladder_rung(len(pairs) + 1), 1)
        graph = pack([system], [pairs], capacity, self._dtype)
        n = system.n_atoms
        if system.periodic:
            energies, forces, stress = self._stress(self.potential, graph)
            self.results["stress"] = full_3x3_to_voigt_6_stress(np.asarray(stress[0], dtype=np.float64))
        else:
            energies, forces = self._forces(self.potential, graph)
        self.results["energy"] = self.results["free_energy"] = float(energies[0])
        self.results["forces"] = np.asarray(forces, dtype=np.float64)[:n]
