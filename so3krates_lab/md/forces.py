"""Force functions for compiled MD and minimisation: a potential and one structure -> a typed `ForceFunction`.

    ff = force_function(potential, system)       # potential: anything with cutoff, dtype, energy(graph)
    energy, forces, aux = ff(positions, ff.aux)   # aux: the skin neighbour list carried in the MD state

Integrators and minimisers call `ff(positions, aux) -> (energy eV, forces (N, 3) eV/A, aux)`; the driver uses
`ff.neighbours.reallocate` after an overflow. Analytic force functions without a graph fit the same type:
`ForceFunction.from_callable(fn)`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ..autodiff import energy_and_forces
from ..graph.batching import all_pairs_graph
from ..graph.skin import SkinNeighbourFn, skin_neighbour_fn
from ..potential_base import check_potential, check_system, float_dtype, graph_energy
from ..structures import Graph, System


@dataclasses.dataclass(frozen=True, eq=False)
class ForceFunction:
    """fn(positions, aux) -> (energy eV, forces (N, 3) eV/A, aux), and what the driver needs around it.

    The fields besides `fn`::

        aux:        the start value of the carried state (the neighbour list), None without one
        neighbours: the typed neighbour functions (build / update / reallocate), None for a fixed graph
        pairs:      "fixed" (every pair i < j, no list), "list" (all-pairs list builds), "cell" (cell list) or
                    "custom" (a function without a graph)
        n_pairs:    pair slots of the fixed graph (None for a list: its slots are `aux.capacity`, which grows)
        dtype:      the float type it computes in
    """

    fn: Callable
    aux: object = None
    neighbours: SkinNeighbourFn | None = None
    pairs: str = "custom"
    n_pairs: int | None = None
    dtype: object = jnp.float32

    def __call__(self, positions, aux=None):
        return self.fn(positions, aux)

    @classmethod
    def from_callable(cls, fn: Callable, aux=None, dtype=jnp.float32) -> "ForceFunction":
        """Wrap an analytic fn(positions, aux) -> (energy, forces, aux)."""
        return cls(fn=fn, aux=aux, dtype=dtype)



def force_function(potential, system: System, *, skin: float = 0.5, capacity: int | None = None,
                   headroom: float = 1.3, cell_list: bool | None = None, all_pairs: bool | None = None,
                   positions=None) -> ForceFunction:
    """The force function of `potential` for one structure (its atoms, cell and periodicity; the cell is fixed).

    positions: the start geometry (N, 3) Angstrom (default: the system's), which sizes the list. skin (Angstrom): the list holds
    pairs within cutoff + skin and is rebuilt in-jit when an atom moved more than skin / 2. capacity: pair slots
    (default: pairs at the start geometry times `headroom`). cell_list: a cell list (O(N)) instead of all pairs
    (O(N^2)); None picks by `graph.cell_grid` (from a few hundred atoms on, where the cell allows one).
    all_pairs: for a free molecule of a few dozen atoms, a fixed graph of every pair i < j and no list: aux is
    None. Pairs beyond the cutoff cost compute but contribute exactly zero (the cutoff function vanishes there),
    so the energy is the same as with a list; what it saves is the per-step list check and the occasional
    rebuild (and, under `jax.vmap`, a full rebuild on every step, because both branches of the list's `lax.cond`
    are evaluated there). None (default) chooses it for a free structure whenever the fixed graph has no more
    pair slots than the list would get; then it is never slower and cannot overflow. False always uses a list.
    """
    check_potential(potential)
    check_system(potential, system)
    dtype = jnp.dtype(float_dtype(potential))
    numbers = np.asarray(system.numbers)
    n = len(numbers)
    start = np.asarray(system.positions if positions is None else positions, float)
    cell, pbc = (system.cell, tuple(system.pbc)) if system.periodic else (None, (False, False, False))
    if all_pairs:
        if system.periodic:
            raise ValueError("all_pairs=True is for free molecules (no periodic cell); use the neighbour list")
        return _all_pairs(potential, numbers, dtype)
    nfn = skin_neighbour_fn(start, cell, pbc, potential.cutoff, skin, cell_list, dtype)
    bin_capacity = 0
    if nfn.grid is not None:
        probe = nfn.build(start, 1, 1)
        bin_capacity = max(int(np.ceil(int(probe.max_bin_count) * headroom)), 4)
    if capacity is None:
        probe = nfn.build(start, 1, bin_capacity)
        capacity = max(int(np.ceil(int(probe.n_pairs) * headroom)), 8)
    if all_pairs is None and nfn.grid is None and not system.periodic and n >= 2 and n * (n - 1) // 2 <= capacity:
        return _all_pairs(potential, numbers, dtype)
    nbrs = nfn.build(start, capacity, bin_capacity)
    z = jnp.asarray(numbers, jnp.int32)
    cell_arr = jnp.asarray(np.zeros((3, 3)) if cell is None else np.asarray(cell, float), dtype)

    def fn(positions, nbrs):
        nbrs = nfn.update(nbrs, positions)
        graph = Graph(numbers=z, positions=positions.astype(dtype), atom_graph=jnp.zeros(n, jnp.int32),
                      receivers=nbrs.receivers, senders=nbrs.senders, cell_shifts=nbrs.cell_shifts,
                      cell=cell_arr[None], atom_mask=jnp.ones(n, bool), pair_mask=nbrs.pair_mask,
                      graph_mask=jnp.ones(1, bool))
        energies, forces = energy_and_forces(graph_energy, potential, graph)
        return energies[0], forces, nbrs

    return ForceFunction(fn=fn, aux=nbrs, neighbours=nfn, pairs=nfn.kind, n_pairs=None, dtype=dtype)


def _all_pairs(potential, numbers, dtype) -> ForceFunction:
    """The fixed graph of every pair i < j of a free molecule.

    Under `jax.vmap` (batched minimisers, MD replicas) it does not batch the model's gathers and scatters over a
    new axis: a custom batching rule evaluates the B structures as one graph of B disjoint copies (the layout
    the model uses for training batches), which XLA compiles into the same kernels as a single structure."""
    n = len(numbers)
    if n < 2:
        raise ValueError(f"all_pairs needs at least 2 atoms, got {n}")
    def packed(positions):
        """energies (B,) eV and forces (B, N, 3) eV/A of B copies of the molecule, as one disjoint graph."""
        b = positions.shape[0]
        graph = all_pairs_graph(numbers, positions, dtype)
        energies, forces = energy_and_forces(graph_energy, potential, graph)
        return energies, forces.reshape(b, n, 3)

    @jax.custom_batching.custom_vmap
    def evaluate(positions):
        energies, forces = packed(positions[None])
        return energies[0], forces[0]

    @evaluate.def_vmap
    def _batched(axis_size, in_batched, positions):
        if not in_batched[0]:  # the same structure for every batch member
            positions = jnp.broadcast_to(positions, (axis_size,) + positions.shape)
        return packed(positions), (True, True)

    def fn(positions, aux=None):
        energy, forces = evaluate(positions)
        return energy, forces, aux

    return ForceFunction(fn=fn, aux=None, neighbours=None, pairs="fixed", n_pairs=n * (n - 1) // 2, dtype=dtype)


__all__ = ["ForceFunction", "force_function"]
