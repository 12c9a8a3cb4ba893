"""Neighbour lists inside compiled MD: a skin, a fixed capacity, in-jit rebuilds and overflow detection.

The list holds every unordered pair closer than cutoff + skin (each pair once, the Graph convention) and is
rebuilt inside the compiled step only when some atom has moved more than skin / 2 since the last build, which
guarantees that no pair within the cutoff is ever missing. Its capacity (number of pair slots) is static. When a
rebuild finds more pairs than slots, the list keeps what fits and sets a sticky `overflow` flag; the driver
checks the flag after each chunk, reallocates a larger capacity and reruns the chunk from its saved start,
so no step is lost and no force computed with a truncated list is ever kept.

Two ways to build it, chosen once per system by `cell_grid`:
- all pairs over the periodic images that can lie within range: O(N^2) per rebuild, the fastest for small
  systems and the only way for periodic cells narrower than three times the range;
- a cell list (binning): atoms are sorted into bins at least `reach` wide, and each atom looks only at the 27
  bins around its own, so a rebuild costs O(N) (with N * 27 * bin_capacity candidates). Fully periodic cells
  (any triclinic shape) are binned in fractional coordinates; free molecules in a fixed Cartesian box around the
  start geometry, atoms that wander outside it falling into the edge bins (still correct: clipping never
  separates two atoms within range by more than one bin). Bins have a static capacity too; a fuller bin sets
  the same sticky `overflow` flag and the driver grows it.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct


@struct.dataclass
class NeighbourList:
    """A skin neighbour list with a fixed number of pair slots P (a JAX pytree, carried in the MD state).

    receivers, senders: (P,) the pairs; cell_shifts: (P, 3) lattice-vector offsets; pair_mask: (P,) which slots
    hold a pair; reference: (N, 3) positions (Angstrom) at the last build; n_pairs: pairs found at the last build
    (may exceed P: then `overflow` is set, sticky until the driver reallocates); builds: builds so far;
    max_bin_count, bin_capacity: the fullest bin and the atom slots per bin of a cell list (0 for all pairs).
    """

    receivers: jax.Array  # (P,) int32
    senders: jax.Array  # (P,) int32
    cell_shifts: jax.Array  # (P, 3) lattice-vector offsets
    pair_mask: jax.Array  # (P,) bool
    reference: jax.Array  # (N, 3) positions at the last build
    n_pairs: jax.Array  # () int32 pairs found at the last build (may exceed the capacity)
    overflow: jax.Array  # () bool, sticky until the driver reallocates
    builds: jax.Array  # () int32 number of builds so far
    max_bin_count: jax.Array  # () int32 fullest bin at the last build (cell list; 0 for all pairs)
    bin_capacity: int = struct.field(pytree_node=False, default=0)  # atom slots per bin (0: all pairs)

    @property
    def capacity(self) -> int:
        """P, the number of pair slots."""
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


@dataclasses.dataclass(frozen=True)
class CellGrid:
    """Static binning for the cell list: `counts` bins per direction, each at least the search range wide.

    periodic: bins are slices of fractional coordinates of a fully periodic cell (bin indices wrap around);
    otherwise Cartesian bins of `width` (Angstrom) starting at `origin`, indices clipped at the edges.
    """
    counts: tuple[int, int, int]
    periodic: bool
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    width: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @property
    def n_bins(self) -> int:
        """The total number of bins."""
        return int(np.prod(self.counts))


# 27 neighbouring bin offsets, own bin included
_STENCIL = np.array(list(itertools.product((-1, 0, 1), repeat=3)), np.int32)


def cell_grid(positions, cell, pbc, reach: float, min_atoms: int = 400) -> CellGrid | None:
    """The binning for a cell list, or None where all pairs is the right choice: fewer than `min_atoms` atoms,
    a partly periodic cell, or a periodic cell less than three bins of `reach` wide in some direction (then the
    27 neighbouring bins would not be distinct).

    positions: (N, 3) Angstrom; cell: (3, 3) Angstrom or None; pbc: (3,) bool; reach: the search range, cutoff +
    skin (Angstrom).

    >>> import numpy as np
    >>> grid = cell_grid(np.zeros((500, 3)), 12.0 * np.eye(3), (True, True, True), reach=4.0)
    >>> grid.counts, grid.periodic, grid.n_bins
    ((3, 3, 3), True, 27)
    >>> cell_grid(np.zeros((500, 3)), 11.0 * np.eye(3), (True, True, True), reach=4.0) is None  # 2 bins wide
    True
    """
    positions = np.asarray(positions, float)
    if len(positions) < min_atoms:
        return None
    periodic = np.asarray(pbc, bool) if cell is not None else np.zeros(3, bool)
    if periodic.all():
        cell = np.asarray(cell, float)
        volume = abs(np.linalg.det(cell))
        widths = [volume / np.linalg.norm(np.cross(cell[(k + 1) % 3], cell[(k + 2) % 3])) for k in range(3)]
        counts = tuple(int(w // reach) for w in widths)
        return CellGrid(counts, True) if min(counts) >= 3 else None
    if periodic.any():
        return None
    # Free space: a box around the start geometry with one bin of margin on each side; the molecule may drift or
    # expand beyond it (clipping keeps the search correct, only the bins at the edges fill up).
    low = positions.min(axis=0) - reach
    extent = positions.max(axis=0) + reach - low
    counts = tuple(max(1, int(e // reach)) for e in extent)
    width = tuple(float(e / c) for e, c in zip(extent, counts))
    return CellGrid(counts, False, tuple(float(x) for x in low), width)


def _bin_of(search, cell, grid: CellGrid):
    """(N, 3) integer bin indices of (wrapped) positions."""
    counts = jnp.asarray(grid.counts)
    if grid.periodic:
        scaled = (search @ jnp.linalg.inv(cell)) * counts
    else:
        scaled = (search - jnp.asarray(grid.origin, search.dtype)) / jnp.asarray(grid.width, search.dtype)
    return jnp.clip(jnp.floor(scaled).astype(jnp.int32), 0, counts - 1)


def _flat(bins, counts):
    return (bins[..., 0] * counts[1] + bins[..., 1]) * counts[2] + bins[..., 2]


def _cell_list_candidates(search, cell, grid: CellGrid, reach: float, bin_capacity: int):
    """Candidates from the 27 bins around each atom.

    Returns (mask (N, 27, M), j (N, 27, M), image shift (N, 27, 3), fullest bin count). A pair (i, j, s) is
    seen from both ends, as (i, j, s) and (j, i, -s); only the one with s > 0, or s = 0 and i < j, is kept.
    """
    n = search.shape[0]
    counts = np.asarray(grid.counts)
    bins = _bin_of(search, cell, grid)
    own = _flat(bins, counts)
    order = jnp.argsort(own).astype(jnp.int32)
    sorted_bins = own[order]
    first = jnp.searchsorted(sorted_bins, jnp.arange(grid.n_bins, dtype=jnp.int32)).astype(jnp.int32)
    rank = jnp.arange(n, dtype=jnp.int32) - first[sorted_bins]
    table = jnp.full((grid.n_bins, bin_capacity), n, jnp.int32).at[sorted_bins, rank].set(order, mode="drop")
    fullest = jnp.max(jnp.bincount(own, length=grid.n_bins)).astype(jnp.int32)

    around = bins[:, None, :] + jnp.asarray(_STENCIL)[None]  # (N, 27, 3)
    if grid.periodic:
        image = jnp.floor_divide(around, jnp.asarray(counts))
        around = around - image * jnp.asarray(counts)
        inside = jnp.ones(around.shape[:2], bool)
    else:
        image = jnp.zeros_like(around)
        inside = jnp.all((around >= 0) & (around < jnp.asarray(counts)), axis=-1)
        around = jnp.clip(around, 0, jnp.asarray(counts) - 1)
    j = table[_flat(around, counts)]  # (N, 27, M); n marks an empty slot
    offset = image.astype(search.dtype) @ cell  # (N, 27, 3)
    r = search[jnp.minimum(j, n - 1)] + offset[:, :, None, :] - search[:, None, None, :]
    d2 = jnp.sum(r * r, axis=-1)
    i = jnp.arange(n)[:, None, None]
    s0, s1, s2 = image[..., 0], image[..., 1], image[..., 2]
    positive = (s0 > 0) | ((s0 == 0) & ((s1 > 0) | ((s1 == 0) & (s2 > 0))))
    zero = (s0 == 0) & (s1 == 0) & (s2 == 0)
    once = positive[..., None] | (zero[..., None] & (i < j))
    mask = (j < n) & inside[..., None] & once & (d2 < reach * reach)
    return mask, j, image, fullest


def build(positions, cell, shifts: np.ndarray, reach: float, capacity: int, pbc=(False, False, False),
          builds=0, grid: CellGrid | None = None, bin_capacity: int = 0) -> NeighbourList:
    """A fresh list of pairs within `reach` (cutoff + skin) with `capacity` slots (jittable).

    grid: a `cell_grid` for the cell list (then `bin_capacity` atom slots per bin), or None for all pairs over the
    image `shifts`. Positions may be unwrapped (MD never wraps them): candidates are searched among positions
    wrapped into the cell, and each pair's shift is corrected by the atoms' wrap offsets so that it applies to
    the unwrapped positions: r_ij = R_j - R_i + shift @ cell.
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
    if grid is None:
        mask = _candidate_pairs(search, cell, shifts, reach)
        s_idx, i_idx, j_idx = jnp.nonzero(mask, size=capacity, fill_value=0)
        image = jnp.asarray(shifts)[s_idx]
        fullest, bin_capacity = jnp.zeros((), jnp.int32), 0
    else:
        if bin_capacity < 1:
            raise ValueError("a cell list needs bin_capacity >= 1 atom slots per bin")
        mask, j_all, image_all, fullest = _cell_list_candidates(search, cell, grid, reach, bin_capacity)
        i_idx, k_idx, m_idx = jnp.nonzero(mask, size=capacity, fill_value=0)
        j_idx = j_all[i_idx, k_idx, m_idx]
        image = image_all[i_idx, k_idx]
    count = jnp.sum(mask).astype(jnp.int32)
    valid = jnp.arange(capacity) < count
    last = n - 1  # padding: masked self-pairs of the last atom, as in Graph
    j_idx = jnp.where(valid, j_idx, last)
    shift = image + (wraps[i_idx] - wraps[j_idx]).astype(jnp.int32)
    return NeighbourList(
        receivers=jnp.where(valid, i_idx, last).astype(jnp.int32),
        senders=j_idx.astype(jnp.int32),
        cell_shifts=jnp.where(valid[:, None], shift, 0).astype(jnp.int32),
        pair_mask=valid, reference=positions, n_pairs=count,
        overflow=(count > capacity) | (fullest > bin_capacity if grid is not None else False),
        builds=jnp.asarray(builds, jnp.int32) + 1, max_bin_count=fullest, bin_capacity=bin_capacity,
    )


def update(nbrs: NeighbourList, positions, cell, shifts: np.ndarray, reach: float, skin: float,
           pbc=(False, False, False), grid: CellGrid | None = None) -> NeighbourList:
    """Rebuild (inside jit) only when an atom moved more than skin / 2 since the last build; keep overflow sticky.

    A non-finite displacement also rebuilds: a list whose reference holds NaN (built at NaN positions, e.g. a
    start structure with a NaN coordinate) would otherwise never be rebuilt, since `NaN > x` is False, and every
    later step would use its empty pair set. NaN positions themselves give an empty list, so they stay visible
    as NaN energies rather than as forces from a stale list.
    """
    moved = jnp.max(jnp.sum((positions - nbrs.reference) ** 2, axis=-1))
    needed = ~(moved <= (0.5 * skin) ** 2)  # True for NaN

    def rebuild(_):
        fresh = build(positions, cell, shifts, reach, nbrs.capacity, pbc, nbrs.builds, grid, nbrs.bin_capacity)
        return fresh.replace(overflow=fresh.overflow | nbrs.overflow)

    return jax.lax.cond(needed, rebuild, lambda _: nbrs, None)


def grown_capacities(start: NeighbourList, overflowed: NeighbourList, headroom: float) -> tuple[int, int]:
    """(pair slots, slots per bin) for a list that will hold what `overflowed` (the end of a chunk started from
    `start`; either may be stacked over replicas) found, with `headroom`, and always more than before."""
    pairs = int(np.max(np.asarray(overflowed.n_pairs)))
    fullest = int(np.max(np.asarray(overflowed.max_bin_count)))
    capacity = max(int(np.ceil(pairs * headroom)), start.capacity + 1)
    bins = max(int(np.ceil(fullest * headroom)), start.bin_capacity) if start.bin_capacity else 0
    return capacity, bins


class SkinNeighbourFn(NamedTuple):
    """The neighbour-list functions of one system, as one typed value (JAX MD's NeighborFn idea).

    build(positions, capacity, bin_capacity=0) -> NeighbourList: a fresh list (jittable);
    update(nbrs, positions) -> NeighbourList: rebuild inside jit only when an atom moved more than skin / 2;
    reallocate(nbrs, positions, capacity, bin_capacity=None) -> NeighbourList: a larger list after an overflow
    (called by the MD driver between chunks; keeps the build count).
    kind: "list" (all pairs over the images) or "cell" (a cell list); grid: the cell list's binning or None.
    reach: the range of the list, cutoff + skin (Angstrom).
    """

    build: Callable
    update: Callable
    reallocate: Callable
    kind: str
    grid: CellGrid | None
    reach: float


def skin_neighbour_fn(positions, cell, pbc, cutoff: float, skin: float = 0.5, cell_list: bool | None = None,
                      dtype=jnp.float32) -> SkinNeighbourFn:
    """The typed neighbour functions for one system with a fixed cell (NVE/NVT).

    positions: (N, 3) start geometry (Angstrom), which sizes a free molecule's cell-list box. cell (3, 3)
    Angstrom or None, pbc (3,). cutoff, skin: Angstrom; the list holds the pairs within cutoff + skin. cell_list: True forces a cell list, False all pairs, None picks by `cell_grid` (from a few hundred
    atoms on, where the cell allows it).
    """
    periodic = cell is not None and any(pbc)
    pbc = tuple(bool(p) for p in pbc) if cell is not None else (False, False, False)
    cell_np = None if cell is None else np.asarray(cell, float)
    cell_arr = jnp.asarray(np.zeros((3, 3)) if cell is None else cell_np, dtype)
    reach = float(cutoff) + float(skin)
    shifts = image_shifts(cell_np, pbc, reach)
    grid = None
    if cell_list is not False:
        grid = cell_grid(positions, cell_np if periodic else None, pbc, reach, min_atoms=0 if cell_list else 400)
        if cell_list and grid is None:
            raise ValueError("no cell list possible here: the cell is partly periodic or narrower than three "
                             f"times cutoff + skin ({reach} A) in some periodic direction; use cell_list=False")

    def build_fn(positions, capacity: int, bin_capacity: int = 0, builds=0) -> NeighbourList:
        return build(jnp.asarray(positions, dtype), cell_arr, shifts, reach, int(capacity), pbc, builds, grid,
                     int(bin_capacity) if grid is not None else 0)

    def update_fn(nbrs: NeighbourList, positions) -> NeighbourList:
        return update(nbrs, positions, cell_arr, shifts, reach, skin, pbc, grid)

    def reallocate_fn(nbrs: NeighbourList, positions, capacity: int, bin_capacity: int | None = None):
        bins = max(nbrs.bin_capacity, bin_capacity or 0) if grid is not None else 0
        return build_fn(positions, capacity, bins, nbrs.builds)

    return SkinNeighbourFn(build_fn, update_fn, reallocate_fn, "list" if grid is None else "cell", grid, reach)
