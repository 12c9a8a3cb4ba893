"""The SO3krates force function for compiled MD: one structure, a skin neighbour list carried in the MD state."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ..autodiff import energy_and_forces
from ..structures import Graph
from . import neighbours as nl


def model_force_fn(energy_fn, variables, cutoff: float, numbers, positions, cell=None,
                   pbc=(False, False, False), skin: float = 0.5, capacity: int | None = None, headroom: float = 1.3,
                   dtype=jnp.float32):
    """(force_fn, neighbour list) for one structure and any energy_fn(variables, graph) -> (G,) energies.

    force_fn(positions, nbrs) -> (energy eV, forces (N, 3) eV/A, nbrs) updates the list in-jit when needed;
    force_fn.reallocate(nbrs, positions, capacity) builds a larger list (the driver calls it on overflow).
    cutoff: the model's cutoff (Angstrom). capacity: pair slots (default: pairs at the start geometry times
    `headroom`). dtype: the model's float type. The cell is fixed (NVE/NVT).
    """
    numbers = np.asarray(numbers)
    n = len(numbers)
    pbc = tuple(bool(p) for p in pbc) if cell is not None else (False, False, False)
    cell_arr = jnp.asarray(np.zeros((3, 3)) if cell is None else np.asarray(cell, float), dtype)
    reach = cutoff + skin
    shifts = nl.image_shifts(None if cell is None else np.asarray(cell), pbc, reach)
    if capacity is None:
        probe = nl.build(jnp.asarray(positions, dtype), cell_arr, shifts, reach, 1, pbc)
        capacity = max(int(np.ceil(int(probe.n_pairs) * headroom)), 8)
    nbrs = nl.build(jnp.asarray(positions, dtype), cell_arr, shifts, reach, capacity, pbc)
    z = jnp.asarray(numbers, jnp.int32)

    def force_fn(positions, nbrs):
        nbrs = nl.update(nbrs, positions, cell_arr, shifts, reach, skin, pbc)
        graph = Graph(numbers=z, positions=positions.astype(dtype), atom_graph=jnp.zeros(n, jnp.int32),
                      receivers=nbrs.receivers, senders=nbrs.senders, cell_shifts=nbrs.cell_shifts,
                      cell=cell_arr[None], atom_mask=jnp.ones(n, bool), pair_mask=nbrs.pair_mask,
                      graph_mask=jnp.ones(1, bool))
        energies, forces = energy_and_forces(energy_fn, variables, graph)
        return energies[0], forces, nbrs

    def reallocate(nbrs, positions, capacity: int):
        return nl.build(jnp.asarray(positions, dtype), cell_arr, shifts, reach, capacity, pbc, nbrs.builds)

    force_fn.reallocate = reallocate
    return force_fn, nbrs
