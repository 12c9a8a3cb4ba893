"""Neighbour lists inside compiled MD: a skin, a fixed capacity, in-jit rebuilds and overflow detection.

The list holds every unordered pair closer than cutoff + skin (each pair once, the Graph convention) and is
rebuilt inside the compiled step only when some atom has moved more than skin / 2 since the last build, which
guarantees that no pair within the cutoff is ever missing. Its capacity (number of pair slots) is static. When a
rebuild finds more pairs than slots, the list keeps what fits and sets a sticky `overflow` flag; the driver
checks the flag after each chunk, reallocates a larger capacity and reruns the chunk from its saved start,
so no step is lost and no force computed with a truncated list is ever kept.

Construction is all-pairs (O(N^2) memory and time per rebuild) over the periodic images that can lie within
range; fine to a few thousand atoms.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct


@struct.dataclass
class NeighbourList:
    receivers: jax.Array  # (P,) int32
    senders: jax.Array  # (P,) int32
    cell_shifts: jax.Array  # (P, 3) lattice-vector offsets
    pair_mask: jax.Array  # (P,) bool
    reference: jax.Array  # (N, 3) positions at the last build
    n_pairs: jax.Array  # () int32 pairs found at the last build (may exceed the capacity)
    overflow: jax.Array  # () bool, sticky until the driver reallocates
    builds: jax.Array  # () int32 number of builds so far

    @property
    def capacity(self) -> int:
        return int(self.receivers.shape[0])


def image_shifts(cell: np.ndarray | None, pbc, reach: float) -> np.ndarray:
    """Integer lattice shifts (S, 3) of every periodic image that can hold an atom within `reach` of an atom in
    the home cell, the zero shift first, and for each pair of opposite shifts only the lexicographically
    positive one (with the zero shift, pairs i < j; with s > 0, all i, j: each unordered pair once)."""
    if cell is None or not np.any(pbc):
        return np.zeros((1, 3), np.int32)
    cell = np.asarray(cell, float)
    volume = abs(np.linalg.det(cell))
    widths = [volume / np.linalg.norm(np.cross(cell[(k + 1) % 3], cell[(k + 2) % 3])) for k in range(3)]
    n = [int(np.ceil(reach / w)) if p else 0 for w, p in zip(widths, pbc)]
    shifts = [s for s in itertools.product(*(range(-m, m + 1) for m in n)) if s > (0, 0, 0)]
    return np.array([(0, 0, 0)] + shifts, np.int32)


def _candidate_pairs(positions, cell, shifts, reach):
    """All (shift, i, j) candidates within reach; returns (mask (S, N, N), shift index grid)."""
    n = positions.shape[0]
    offsets = jnp.asarray(shifts, positions.dtype) @ cell  # (S, 3)
    r = positions[None, None, :, :] + offsets[:, None, None, :] - positions[None, :, None, :]  # (S, N(i), N(j), 3)
    d2 = jnp.sum(r * r, axis=-1)
    i_idx = jnp.arange(n)[:, None]
    j_idx = jnp.arange(n)[None, :]
    upper = (i_idx < j_idx)[None]  # zero shift: i < j only
    allowed = jnp.concatenate([upper[:1], jnp.ones((len(shifts) - 1, n, n), bool)], axis=0) if len(shifts) > 1 \
        else upper
    return (d2 < reach * reach) & allowed


def build(positions, cell, shifts: np.ndarray, reach: float, capacity: int, pbc=(False, False, False),
          builds=0) -> NeighbourList:
    """A fresh list of pairs within `reach` (cutoff + skin) with `capacity` slots (jittable).

    Positions may be unwrapped (MD never wraps them): candidates are searched among positions wrapped into the
    cell, and each pair's shift is corrected by the atoms' wrap offsets so that it applies to the unwrapped
    positions: r_ij = R_j - R_i + shift @ cell.
    """
    n = positions.shape[0]
    periodic = np.asarray(pbc, bool)
    if periodic.any():
        frac = positions @ jnp.linalg.inv(cell)
        wraps = jnp.where(jnp.asarray(periodic), jnp.floor(frac), 0.0)
        search = positions - wraps @ cell
    else:
        wraps = jnp.zeros_like(positions)
        search = positions
    mask = _candidate_pairs(search, cell, shifts, reach)
    count = jnp.sum(mask).astype(jnp.int32)
    s_idx, i_idx, j_idx = jnp.nonzero(mask, size=capacity, fill_value=0)
    valid = jnp.arange(capacity) < count
    last = n - 1  # padding: masked self-pairs of the last atom, as in Graph
    shift = jnp.asarray(shifts)[s_idx] + (wraps[i_idx] - wraps[j_idx]).astype(jnp.int32)
    return NeighbourList(
        receivers=jnp.where(valid, i_idx, last).astype(jnp.int32),
        senders=jnp.where(valid, j_idx, last).astype(jnp.int32),
        cell_shifts=jnp.where(valid[:, None], shift, 0).astype(jnp.int32),
        pair_mask=valid, reference=positions, n_pairs=count, overflow=count > capacity,
        builds=jnp.asarray(builds, jnp.int32) + 1,
    )


def update(nbrs: NeighbourList, positions, cell, shifts: np.ndarray, reach: float, skin: float,
           pbc=(False, False, False)) -> NeighbourList:
    """Rebuild (inside jit) only when an atom moved more than skin / 2 since the last build; keep overflow sticky."""
    moved = jnp.max(jnp.sum((positions - nbrs.reference) ** 2, axis=-1))
    needed = moved > (0.5 * skin) ** 2

    def rebuild(_):
        fresh = build(positions, cell, shifts, reach, nbrs.capacity, pbc, nbrs.builds)
        return fresh.replace(overflow=fresh.overflow | nbrs.overflow)

    return jax.lax.cond(needed, rebuild, lambda _: nbrs, None)
