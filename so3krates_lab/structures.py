"""Frozen data structures shared by every part of the package.

* `System`  -- one structure on the host (NumPy), in internal units (eV, Angstrom).
* `Dataset` -- an ordered collection of Systems plus where they came from.
* `Graph`   -- a padded batch of structures on the device (a JAX pytree), the model's only input.

Shapes use these names: N atoms of one system; A atom capacity, P pair capacity, G structure capacity of a
padded Graph.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

import numpy as np
from flax import struct

MAX_ATOMIC_NUMBER = 118


class StructureError(ValueError):
    """A structure is malformed: wrong shapes, non-finite values, unknown elements, overlapping atoms."""


def _as_float_array(name: str, value, shape_tail: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 1 + len(shape_tail) or arr.shape[1:] != shape_tail:
        expected = "(N, " + ", ".join(map(str, shape_tail)) + ")" if shape_tail else "(N,)"
        raise StructureError(f"{name} must have shape {expected}, got {arr.shape}")
    return arr


@dataclasses.dataclass(frozen=True, eq=False)
class System:
    """One structure in internal units.

    numbers:   (N,)   atomic numbers, 1..118
    positions: (N, 3) Angstrom
    cell:      (3, 3) Angstrom, rows are lattice vectors; None for a free molecule
    pbc:       (3,)   periodic along each lattice vector; all False when cell is None
    energy:    total energy in eV, or None when unlabelled
    forces:    (N, 3) eV/Angstrom, or None when unlabelled
    """

    numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray | None = None
    pbc: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(3, dtype=bool))
    energy: float | None = None
    forces: np.ndarray | None = None

    def __post_init__(self):
        numbers = np.asarray(self.numbers)
        if numbers.ndim != 1:
            raise StructureError(f"numbers must have shape (N,), got {numbers.shape}")
        if numbers.size == 0:
            raise StructureError("a System needs at least one atom, got 0")
        if not np.issubdtype(numbers.dtype, np.integer):
            if not np.all(np.equal(np.mod(numbers, 1), 0)):
                raise StructureError(f"atomic numbers must be integers, got {numbers.dtype}")
        numbers = numbers.astype(np.int32)
        bad = (numbers < 1) | (numbers > MAX_ATOMIC_NUMBER)
        if bad.any():
            k = int(np.argmax(bad))
            raise StructureError(f"unknown element: atomic number {int(numbers[k])} at atom {k} (valid: 1..118)")
        n = numbers.shape[0]
        positions = _as_float_array("positions", self.positions, (3,))
        if positions.shape[0] != n:
            raise StructureError(f"positions has {positions.shape[0]} atoms but numbers has {n}")
        if not np.isfinite(positions).all():
            k = int(np.argmax(~np.isfinite(positions).all(axis=1)))
            raise StructureError(f"non-finite (NaN or inf) position at atom {k}")
        pbc = np.broadcast_to(np.asarray(self.pbc, dtype=bool), (3,)).copy()
        cell = None
        if self.cell is not None:
            cell = np.asarray(self.cell, dtype=np.float64)
            if cell.shape != (3, 3):
                raise StructureError(f"cell must have shape (3, 3), got {cell.shape}")
            if not np.isfinite(cell).all():
                raise StructureError("cell contains non-finite values")
            if pbc.any() and abs(np.linalg.det(cell)) < 1e-6:
                raise StructureError("cell is singular (zero volume) but pbc is set")
        elif pbc.any():
            raise StructureError("pbc is set but no cell was given")
        forces = None
        if self.forces is not None:
            forces = _as_float_array("forces", self.forces, (3,))
            if forces.shape[0] != n:
                raise StructureError(f"forces has {forces.shape[0]} atoms but numbers has {n}")
            if not np.isfinite(forces).all():
                raise StructureError("forces contain non-finite values")
        energy = None
        if self.energy is not None:
            energy = float(np.asarray(self.energy).reshape(()))
            if not np.isfinite(energy):
                raise StructureError("energy is not finite")
        object.__setattr__(self, "numbers", numbers)
        object.__setattr__(self, "positions", positions)
        object.__setattr__(self, "cell", cell)
        object.__setattr__(self, "pbc", pbc)
        object.__setattr__(self, "forces", forces)
        object.__setattr__(self, "energy", energy)

    @property
    def n_atoms(self) -> int:
        return int(self.numbers.shape[0])

    @property
    def periodic(self) -> bool:
        return bool(self.pbc.any())

    def box_and_pbc(self) -> tuple[np.ndarray, np.ndarray]:
        """(box (3, 3), pbc (3,)) for neighbour searches: zeros and all False for a free molecule."""
        if self.cell is None or not self.periodic:
            return np.zeros((3, 3)), np.zeros(3, dtype=bool)
        return self.cell, self.pbc

    def replace(self, **changes) -> "System":
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """An ordered, immutable collection of Systems with provenance.

    name:   short label (e.g. "rmd17_ethanol_train_01")
    source: path the data came from ("" when built in memory)
    sha256: hash of the source file ("" when built in memory)
    file_units: the units the file stored, e.g. {"energy": "kcal/mol", "length": "Angstrom"}
    """

    systems: tuple[System, ...]
    name: str = ""
    source: str = ""
    sha256: str = ""
    file_units: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        systems = tuple(self.systems)
        if len(systems) == 0:
            raise StructureError(f"dataset {self.name or self.source or '<memory>'} is empty (0 structures)")
        object.__setattr__(self, "systems", systems)

    def __len__(self) -> int:
        return len(self.systems)

    def __iter__(self) -> Iterator[System]:
        return iter(self.systems)

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            return self.systems[int(index)]
        if isinstance(index, slice):
            picked = self.systems[index]
        else:
            picked = tuple(self.systems[int(k)] for k in np.asarray(index).reshape(-1))
        return dataclasses.replace(self, systems=picked)

    @property
    def energies(self) -> np.ndarray:
        """(S,) total energies in eV; raises if any structure is unlabelled."""
        if any(s.energy is None for s in self.systems):
            raise StructureError(f"dataset {self.name!r} has structures without energies")
        return np.array([s.energy for s in self.systems])

    @property
    def n_atoms(self) -> np.ndarray:
        return np.array([s.n_atoms for s in self.systems])

    @property
    def elements(self) -> np.ndarray:
        """Sorted unique atomic numbers present."""
        return np.unique(np.concatenate([s.numbers for s in self.systems]))

    @classmethod
    def from_systems(cls, systems: Sequence[System], **meta) -> "Dataset":
        return cls(systems=tuple(systems), **meta)


@struct.dataclass
class Graph:
    """A padded batch of structures: the model's single input (a JAX pytree).

    numbers:    (A,)      int32 atomic numbers, 0 marks a padding atom
    positions:  (A, 3)    Angstrom
    atom_graph: (A,)      int32 index of the structure each atom belongs to
    receivers:  (P,)      int32 i of each pair (i, j)
    senders:    (P,)      int32 j of each pair (i, j)
    cell_shifts:(P, 3)    image offsets in units of the lattice vectors: r_ij = R_j - R_i + shift @ cell

    Each unordered neighbour pair is stored once; the model uses it in both directions (i <- j and j <- i), so
    a Graph with P real pairs has 2P directed pairs.
    cell:       (G, 3, 3) Angstrom (zeros for free molecules)
    atom_mask, pair_mask, graph_mask: (A,), (P,), (G,) bool, True for real entries

    Padding pairs are masked self-pairs of the last atom slot (a padding atom unless the atom capacity is
    exactly full); padding atoms carry no energy. Always apply the masks.
    """

    numbers: np.ndarray
    positions: np.ndarray
    atom_graph: np.ndarray
    receivers: np.ndarray
    senders: np.ndarray
    cell_shifts: np.ndarray
    cell: np.ndarray
    atom_mask: np.ndarray
    pair_mask: np.ndarray
    graph_mask: np.ndarray

    @property
    def capacity(self) -> tuple[int, int, int]:
        """(atoms, pairs, graphs) capacity: the static shape that decides compilation."""
        return (int(self.numbers.shape[0]), int(self.receivers.shape[0]), int(self.cell.shape[0]))
