"""The SO3krates force function for compiled MD: one structure, a skin neighbour list carried in the MD state."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..autodiff import energy_and_forces
from ..structures import Graph
from . import neighbours as nl


def model_force_fn(energy_fn, variables, cutoff: float, numbers, positions, cell=None,
                   pbc=(False, False, False), skin: float = 0.5, capacity: int | None = None, headroom: float = 1.3,
                   dtype=jnp.float32, cell_list: bool | None = None, all_pairs: bool | None = None):
    """(force_fn, neighbour list) for one structure and any energy_fn(variables, graph) -> (G,) energies.

    force_fn(positions, nbrs) -> (energy eV, forces (N, 3) eV/A, nbrs) updates the list in-jit when needed;
    force_fn.reallocate(nbrs, positions, capacity, bin_capacity=None) builds a larger list (the driver calls it
    on overflow). cutoff: the model's cutoff (Angstrom). capacity: pair slots (default: pairs at the start
    geometry times `headroom`). dtype: the model's float type. The cell is fixed (NVE/NVT).
    cell_list: build the list with a cell list (O(N)) instead of all pairs (O(N^2)); None picks by
    `neighbours.cell_grid` (a cell list from a few hundred atoms on, where the cell allows one).
    all_pairs: for a free molecule of a few dozen atoms, a fixed graph of every pair i < j and no neighbour list
    at all: the returned aux is None and force_fn(positions, None) -> (energy, forces, None). Pairs beyond the
    cutoff cost compute but contribute exactly zero (the cutoff function vanishes there), so the energy is the
    same as with a list; what it saves is the per-step list check and the occasional rebuild (and, under
    `jax.vmap` (batched relaxation, replicas), a full list rebuild on every step, because both branches of the
    `lax.cond` are evaluated there). None (default) chooses it for a free structure whenever the fixed graph has
    no more pair slots than the list would get (`capacity`, or the pairs within cutoff + skin at the start
    times `headroom`): then it is never slower, and it cannot overflow. False always uses a list.
    force_fn.pairs says which ran: "fixed" (every pair), "list" (all-pairs list builds) or "cell" (cell list);
    force_fn.n_pairs is the fixed graph's pair slots (None for a list: its slots are `nbrs.capacity`).
    """
    numbers = np.asarray(numbers)
    n = len(numbers)
    periodic = cell is not None and any(pbc)
    if all_pairs:
        if periodic:
            raise ValueError("all_pairs=True is for free molecules (no periodic cell); use the neighbour list")
        return _all_pairs_force_fn(energy_fn, variables, numbers, dtype), None
    pbc = tuple(bool(p) for p in pbc) if cell is not None else (False, False, False)
    cell_arr = jnp.asarray(np.zeros((3, 3)) if cell is None else np.asarray(cell, float), dtype)
    reach = cutoff + skin
    shifts = nl.image_shifts(None if cell is None else np.asarray(cell), pbc, reach)
    grid = None
    if cell_list is not False:
        grid = nl.cell_grid(positions, None if cell is None else np.asarray(cell), pbc, reach,
                            min_atoms=0 if cell_list else 400)
        if cell_list and grid is None:
            raise ValueError("no cell list possible here: the cell is partly periodic or narrower than three "
                             f"times cutoff + skin ({reach} A) in some periodic direction; use cell_list=False")
    start = jnp.asarray(positions, dtype)
    bin_capacity = 0
    if grid is not None:
        probe = nl.build(start, cell_arr, shifts, reach, 1, pbc, grid=grid, bin_capacity=1)
        bin_capacity = max(int(np.ceil(int(probe.max_bin_count) * headroom)), 4)
    if capacity is None:
        probe = nl.build(start, cell_arr, shifts, reach, 1, pbc, grid=grid, bin_capacity=bin_capacity)
        capacity = max(int(np.ceil(int(probe.n_pairs) * headroom)), 8)
    if all_pairs is None and not cell_list and not periodic and n >= 2 and n * (n - 1) // 2 <= capacity:
        return _all_pairs_force_fn(energy_fn, variables, numbers, dtype), None
    nbrs = nl.build(start, cell_arr, shifts, reach, capacity, pbc, grid=grid, bin_capacity=bin_capacity)
    z = jnp.asarray(numbers, jnp.int32)

    def force_fn(positions, nbrs):
        nbrs = nl.update(nbrs, positions, cell_arr, shifts, reach, skin, pbc, grid)
        graph = Graph(numbers=z, positions=positions.astype(dtype), atom_graph=jnp.zeros(n, jnp.int32),
                      receivers=nbrs.receivers, senders=nbrs.senders, cell_shifts=nbrs.cell_shifts,
                      cell=cell_arr[None], atom_mask=jnp.ones(n, bool), pair_mask=nbrs.pair_mask,
                      graph_mask=jnp.ones(1, bool))
        energies, forces = energy_and_forces(energy_fn, variables, graph)
        return energies[0], forces, nbrs

    def reallocate(nbrs, positions, capacity: int, bin_capacity: int | None = None):
        """A list with `capacity` pair slots (and, for a cell list, at least `bin_capacity` slots per bin)."""
        bins = max(nbrs.bin_capacity, bin_capacity or 0) if grid is not None else 0
        return nl.build(jnp.asarray(positions, dtype), cell_arr, shifts, reach, capacity, pbc, nbrs.builds, grid,
                        bins)

    force_fn.reallocate = reallocate
    force_fn.grid = grid
    force_fn.pairs = "list" if grid is None else "cell"
    force_fn.n_pairs = None  # the list's slots are nbrs.capacity, which grows on reallocation
    return force_fn, nbrs


def _all_pairs_force_fn(energy_fn, variables, numbers, dtype):
    """force_fn(positions, aux=None) on the fixed graph of every pair i < j of a free molecule.

    Under `jax.vmap` (batched minimisers, MD replicas) it does not batch the model's gathers and scatters over a
    new axis: a custom batching rule evaluates the B structures as one graph of B disjoint copies (the layout
    the model uses for training batches), which XLA compiles into the same kernels as a single structure."""
    n = len(numbers)
    if n < 2:
        raise ValueError(f"all_pairs needs at least 2 atoms, got {n}")
    i, j = np.triu_indices(n, 1)
    z = np.asarray(numbers, np.int32)

    def packed(positions):
        """energies (B,) eV and forces (B, N, 3) eV/A of B copies of the molecule, as one disjoint graph."""
        b = positions.shape[0]
        offsets = (np.arange(b) * n)[:, None]
        graph = Graph(numbers=jnp.asarray(np.tile(z, b)), positions=positions.reshape(b * n, 3).astype(dtype),
                      atom_graph=jnp.asarray(np.repeat(np.arange(b, dtype=np.int32), n)),
                      receivers=jnp.asarray((i[None] + offsets).reshape(-1), jnp.int32),
                      senders=jnp.asarray((j[None] + offsets).reshape(-1), jnp.int32),
                      cell_shifts=jnp.zeros((b * len(i), 3), jnp.int32), cell=jnp.zeros((b, 3, 3), dtype),
                      atom_mask=jnp.ones(b * n, bool), pair_mask=jnp.ones(b * len(i), bool),
                      graph_mask=jnp.ones(b, bool))
        energies, forces = energy_and_forces(energy_fn, variables, graph)
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

    def force_fn(positions, aux=None):
        energy, forces = evaluate(positions)
        return energy, forces, aux

    force_fn.grid = None
    force_fn.pairs = "fixed"
    force_fn.n_pairs = len(i)  # the fixed graph's slots (stored once per pair i < j)
    return force_fn
