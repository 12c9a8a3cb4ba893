"""Neighbour pairs within a cutoff, for free molecules and periodic cells (host side, NumPy).

Each unordered pair is stored ONCE, as (i, j, S) with r_ij = R_j - R_i + S @ cell; its reverse (j, i, -S) is
implied. The model uses both directions (the spec's directed pairs i <- j); storing half of them lets it evaluate
the symmetric pair filters once per unordered pair. Cells smaller than twice the cutoff are handled: an atom then
sees several images of the same neighbour (and possibly its own images, stored as (i, i, S) once, with -S implied).
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from ..structures import StructureError, System


@dataclasses.dataclass(frozen=True)
class Pairs:
    """Neighbour pairs of one structure, each unordered pair once (H of them; 2H directed pairs).

    Fields::

        receivers: (H,) int32, i
        senders:   (H,) int32, j
        shifts:    (H, 3) int32 image offsets in units of the lattice vectors
    """

    receivers: np.ndarray
    senders: np.ndarray
    shifts: np.ndarray

    def __len__(self) -> int:
        return int(self.receivers.shape[0])

    @property
    def n_directed(self) -> int:
        """2H: the number of directed pairs, both directions of every stored pair."""
        return 2 * len(self)

    def directed(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(receivers, senders, shifts) of all 2H directed pairs: the stored ones, then their reverses."""
        return (
            np.concatenate([self.receivers, self.senders]),
            np.concatenate([self.senders, self.receivers]),
            np.concatenate([self.shifts, -self.shifts]),
        )


def _check_distances(d: np.ndarray, i: np.ndarray, j: np.ndarray, min_distance: float) -> None:
    if d.size and d.min() < min_distance:
        k = int(np.argmin(d))
        raise StructureError(
            f"atoms {int(i[k])} and {int(j[k])} overlap: distance {d[k]:.3g} A < {min_distance} A"
        )


def neighbour_pairs(system: System, cutoff: float, min_distance: float = 0.1) -> Pairs:
    """All pairs with distance < cutoff (Angstrom), each unordered pair once (vesin cell lists: linear in atom
    count).

    Raises StructureError when two atoms (or an atom and an image) are closer than `min_distance` Angstrom.

    Water within 1.2 Angstrom: the two O-H bonds, not the H-H pair (1.51 Angstrom apart):

    >>> from so3krates_lab.structures import System
    >>> water = System([8, 1, 1], [[0.0, 0.0, 0.0], [0.9572, 0.0, 0.0], [-0.24, 0.927, 0.0]])
    >>> pairs = neighbour_pairs(water, cutoff=1.2)
    >>> sorted(sorted(p) for p in zip(pairs.receivers.tolist(), pairs.senders.tolist())), pairs.n_directed
    ([[0, 1], [0, 2]], 4)
    >>> len(neighbour_pairs(water, cutoff=2.0))
    3
    """
    from vesin import NeighborList

    if not cutoff > 0:
        raise ValueError(f"cutoff must be positive, got {cutoff}")
    box, pbc = system.box_and_pbc()
    nl = NeighborList(cutoff=float(cutoff), full_list=False)
    i, j, s, d = nl.compute(points=system.positions, box=box, periodic=pbc, quantities="ijSd")
    _check_distances(d, i, j, min_distance)
    # vesin may return pairs at exactly the cutoff distance; the model's cutoff is strict.
    keep = d < cutoff
    i, j, s = i[keep], j[keep], s[keep]
    # Canonical orientation (i < j, or i == j with the first non-zero shift component positive), then sorted:
    # the list does not depend on the order in which vesin happens to report pairs.
    flip = (i > j) | ((i == j) & (_first_nonzero(s) < 0))
    i, j = np.where(flip, j, i), np.where(flip, i, j)
    s = np.where(flip[:, None], -s, s)
    order = np.lexsort((s[:, 2], s[:, 1], s[:, 0], j, i))
    return Pairs(receivers=i[order].astype(np.int32), senders=j[order].astype(np.int32),
                 shifts=s[order].astype(np.int32))


def _first_nonzero(shifts: np.ndarray) -> np.ndarray:
    """(H,) the first non-zero component of each shift (0 for a zero shift)."""
    nz = shifts != 0
    first = np.argmax(nz, axis=1)
    return np.where(nz.any(axis=1), shifts[np.arange(len(shifts)), first], 0)


def brute_force_pairs(system: System, cutoff: float) -> Pairs:
    """Reference implementation by enumerating all images within `cutoff` (Angstrom); O(N^2 * images). For tests
    and small systems.

    Returns every DIRECTED pair (i, j, S), sorted; compare with `Pairs.directed()` of `neighbour_pairs`.
    """
    box, pbc = system.box_and_pbc()
    pos = system.positions
    n = pos.shape[0]
    ranges = []
    if pbc.any():
        volume = abs(np.linalg.det(box))
        # Positions need not lie inside the cell (unwrapped MD): widen the search by their fractional spread.
        frac = pos @ np.linalg.inv(box)
        for k in range(3):
            if not pbc[k]:
                ranges.append(range(0, 1))
                continue
            # distance between the lattice planes spanned by the other two vectors
            height = volume / np.linalg.norm(np.cross(box[(k + 1) % 3], box[(k + 2) % 3]))
            m = int(np.ceil(cutoff / height + np.ptp(frac[:, k])))
            ranges.append(range(-m, m + 1))
    else:
        ranges = [range(0, 1)] * 3
    rec, sen, shi = [], [], []
    diff = pos[None, :, :] - pos[:, None, :]  # (i, j, 3) = R_j - R_i
    for shift in itertools.product(*ranges):
        shift = np.array(shift)
        r = diff + shift @ box
        d = np.linalg.norm(r, axis=-1)
        mask = d < cutoff
        if not shift.any():
            mask[np.arange(n), np.arange(n)] = False
        ii, jj = np.nonzero(mask)
        rec.append(ii)
        sen.append(jj)
        shi.append(np.repeat(shift[None], ii.size, axis=0))
    rec, sen, shi = np.concatenate(rec), np.concatenate(sen), np.concatenate(shi)
    order = np.lexsort((shi[:, 2], shi[:, 1], shi[:, 0], sen, rec))
    return Pairs(rec[order].astype(np.int32), sen[order].astype(np.int32), shi[order].astype(np.int32))
