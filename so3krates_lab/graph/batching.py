"""Pad structures into fixed-capacity `Graph` batches, with bucketed capacities and overflow detection.

XLA compiles one program per distinct input shape. Capacities are therefore drawn from a geometric ladder
(each rung about `growth` times the previous one, rounded up to a multiple of 8), so a data set of many
molecule sizes compiles only once per rung it visits: a second pass in the same order compiles nothing new, and
any reshuffle can only visit rungs between those of the smallest and the largest possible batch.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterator, Sequence

import numpy as np
from flax import struct

from ..structures import Dataset, Graph, StructureError, System
from .neighbours import Pairs, neighbour_pairs


class CapacityOverflow(RuntimeError):
    """A batch needs more atoms, pairs or structures than the capacity it was asked to fit into."""


@dataclasses.dataclass(frozen=True)
class Capacity:
    """The fixed size of a padded batch: atom slots, pair slots and structure slots (a compiled shape).

    >>> Capacity(atoms=32, pairs=256, graphs=4).fits(atoms=30, pairs=260, graphs=4)
    False
    """

    atoms: int
    pairs: int
    graphs: int

    def fits(self, atoms: int, pairs: int, graphs: int) -> bool:
        """Whether a batch of that many atoms, pairs and structures fits into this capacity."""
        return atoms <= self.atoms and pairs <= self.pairs and graphs <= self.graphs


def ladder_rung(n: int, growth: float = 1.25, minimum: int = 8, multiple: int = 8) -> int:
    """Smallest rung of the capacity ladder that is >= n (rungs: minimum, then x growth rounded up to `multiple`).

    >>> [ladder_rung(n) for n in (1, 8, 9, 100)]
    [8, 8, 16, 120]
    >>> sorted({ladder_rung(n) for n in range(1, 121)})  # the rungs: +8 at first, then x 1.25 rounded up
    [8, 16, 24, 32, 40, 56, 72, 96, 120]
    """
    if growth <= 1.0:
        raise ValueError(f"growth must be > 1, got {growth}")
    rung = minimum
    while rung < n:
        rung = max(rung + multiple, int(math.ceil(rung * growth / multiple)) * multiple)
    return rung


@struct.dataclass
class Labels:
    """Reference labels aligned with a Graph: energy (G,) eV, forces (A, 3) eV/A (zeros on padding)."""

    energy: np.ndarray
    forces: np.ndarray


def pack(
    systems: Sequence[System],
    pairs: Sequence[Pairs],
    capacity: Capacity | None = None,
    dtype=np.float32,
) -> Graph:
    """Concatenate systems and their pairs into one padded Graph.

    capacity None chooses the exact size plus one padding atom. A given capacity that is too small raises
    CapacityOverflow (nothing is ever silently dropped).
    """
    if len(systems) == 0:
        raise StructureError("cannot pack an empty list of structures")
    if len(systems) != len(pairs):
        raise ValueError(f"got {len(systems)} systems but {len(pairs)} pair lists")
    n_atoms = sum(s.n_atoms for s in systems)
    n_pairs = sum(len(p) for p in pairs)
    n_graphs = len(systems)
    if capacity is None:
        capacity = Capacity(n_atoms + 1, n_pairs, n_graphs)
    if not capacity.fits(n_atoms, n_pairs, n_graphs):
        raise CapacityOverflow(
            f"batch needs atoms={n_atoms}, pairs={n_pairs}, graphs={n_graphs} but capacity is "
            f"atoms={capacity.atoms}, pairs={capacity.pairs}, graphs={capacity.graphs}"
        )
    A, P, G = capacity.atoms, capacity.pairs, capacity.graphs
    numbers = np.zeros(A, np.int32)
    positions = np.zeros((A, 3), np.float64)
    atom_graph = np.full(A, G - 1, np.int32)
    pad_atom = A - 1  # padding pairs: masked self-pairs of the last slot (a real atom only if A is exactly full)
    receivers = np.full(P, pad_atom, np.int32)
    senders = np.full(P, pad_atom, np.int32)
    shifts = np.zeros((P, 3), np.float64)
    cell = np.zeros((G, 3, 3), np.float64)
    a0 = p0 = 0
    for g, (s, pr) in enumerate(zip(systems, pairs)):
        n, m = s.n_atoms, len(pr)
        numbers[a0:a0 + n] = s.numbers
        positions[a0:a0 + n] = s.positions
        atom_graph[a0:a0 + n] = g
        receivers[p0:p0 + m] = pr.receivers + a0
        senders[p0:p0 + m] = pr.senders + a0
        shifts[p0:p0 + m] = pr.shifts
        if s.cell is not None and s.periodic:
            cell[g] = s.cell
        a0 += n
        p0 += m
    return Graph(
        numbers=numbers,
        positions=positions.astype(dtype),
        atom_graph=atom_graph,
        receivers=receivers,
        senders=senders,
        cell_shifts=shifts.astype(dtype),
        cell=cell.astype(dtype),
        atom_mask=np.arange(A) < n_atoms,
        pair_mask=np.arange(P) < n_pairs,
        graph_mask=np.arange(G) < n_graphs,
    )


def pack_labels(systems: Sequence[System], capacity: Capacity, dtype=np.float32) -> Labels:
    """The energy and force labels of `systems`, padded to `capacity` in the order `pack` lays them out."""
    energy = np.zeros(capacity.graphs, np.float64)
    forces = np.zeros((capacity.atoms, 3), np.float64)
    a0 = 0
    for g, s in enumerate(systems):
        if s.energy is None or s.forces is None:
            raise StructureError(f"structure {g} of the batch has no energy/forces labels")
        energy[g] = s.energy
        forces[a0:a0 + s.n_atoms] = s.forces
        a0 += s.n_atoms
    return Labels(energy=energy.astype(dtype), forces=forces.astype(dtype))


def graph_from_system(system: System, cutoff: float, capacity: Capacity | None = None, dtype=np.float32) -> Graph:
    """One structure as a Graph of its pairs within `cutoff` (Angstrom): exact size plus one padding atom unless a
    capacity is given."""
    return pack([system], [neighbour_pairs(system, cutoff)], capacity, dtype)


class Batcher:
    """Split a Dataset into padded batches of `batch_size` structures with bucketed capacities.

    Neighbour pairs are computed once per structure. The capacity of a batch depends only on the ladder rung
    of its atom count: pairs capacity = rung * (largest pairs-per-atom ratio in the data set), so the number
    of distinct shapes is bounded by the number of rungs between the smallest and largest batch.

    cutoff: the neighbour cutoff, Angstrom; growth: the ratio of successive ladder rungs (`ladder_rung`).
    """

    def __init__(self, dataset: Dataset, cutoff: float, batch_size: int, growth: float = 1.25, dtype=np.float32):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.dataset = dataset
        self.cutoff = float(cutoff)
        self.batch_size = int(batch_size)
        self.growth = growth
        self.dtype = dtype
        self.pairs = [neighbour_pairs(s, cutoff) for s in dataset]
        ratios = [max(len(p), 1) / s.n_atoms for s, p in zip(dataset, self.pairs)]
        self.pairs_per_atom = max(ratios)

    def capacity_for(self, n_atoms: int) -> Capacity:
        """The capacity of a batch of `n_atoms` atoms in all (one padding atom added, then the ladder rung)."""
        atoms = ladder_rung(n_atoms + 1, self.growth)
        pairs = ladder_rung(int(math.ceil(atoms * self.pairs_per_atom)), self.growth)
        return Capacity(atoms, pairs, self.batch_size)

    def batch(self, indices: Sequence[int], labels: bool = True):
        """The structures `indices` of the data set as one Graph, with their `Labels` when `labels` (a pair)."""
        systems = [self.dataset[int(k)] for k in indices]
        pairs = [self.pairs[int(k)] for k in indices]
        cap = self.capacity_for(sum(s.n_atoms for s in systems))
        graph = pack(systems, pairs, cap, self.dtype)
        return (graph, pack_labels(systems, cap, self.dtype)) if labels else graph

    def __iter__(self) -> Iterator:
        return self.iterate()

    def iterate(self, shuffle: bool = False, seed: int = 0, labels: bool = True) -> Iterator:
        """Every batch of the data set in turn (`batch`), in order or shuffled with `seed`; the last may be
        smaller."""
        order = np.arange(len(self.dataset))
        if shuffle:
            order = np.random.default_rng(seed).permutation(order)
        for start in range(0, len(order), self.batch_size):
            yield self.batch(order[start:start + self.batch_size], labels=labels)


def all_pairs_graph(numbers, positions, dtype=np.float32) -> Graph:
    """The fixed graph of every pair i < j of B copies of one free molecule, as one Graph of B disjoint structures
    (traceable: `positions` may be a tracer). numbers (N,); positions (B, N, 3) Angstrom. No padding."""
    import jax.numpy as jnp

    z = np.asarray(numbers, np.int32)
    n, b = len(z), positions.shape[0]
    i, j = np.triu_indices(n, 1)
    offsets = (np.arange(b) * n)[:, None]
    return Graph(numbers=jnp.asarray(np.tile(z, b)), positions=positions.reshape(b * n, 3).astype(dtype),
                 atom_graph=jnp.asarray(np.repeat(np.arange(b, dtype=np.int32), n)),
                 receivers=jnp.asarray((i[None] + offsets).reshape(-1), jnp.int32),
                 senders=jnp.asarray((j[None] + offsets).reshape(-1), jnp.int32),
                 cell_shifts=jnp.zeros((b * len(i), 3), jnp.int32), cell=jnp.zeros((b, 3, 3), dtype),
                 atom_mask=jnp.ones(b * n, bool), pair_mask=jnp.ones(b * len(i), bool), graph_mask=jnp.ones(b, bool))
