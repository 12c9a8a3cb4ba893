"""Neighbour pairs within a cutoff, for free molecules and periodic cells (host side, NumPy).

Pairs are directed (i <- j, both directions listed), i != j, and carry the integer image shift S_ij such that
r_ij = R_j - R_i + S_ij @ cell. Cells smaller than twice the cutoff are handled: an atom then sees several images
of the same neighbour (and possibly its own images), each listed once.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from ..structures import StructureError, System


@dataclasses.dataclass(frozen=True)
class Pairs:
    """Directed neighbour pairs of one structure.

    receivers: (P,) int32, i
    senders:   (P,) int32, j
    shifts:    (P, 3) int32 image offsets in units of the lattice vectors
    """

    receivers: np.ndarray
    senders: np.ndarray
    shifts: np.ndarray

    def __len__(self) -> int:
        return int(self.receivers.shape[0])


def _box_and_pbc(system: System):
    pbc = np.asarray(system.pbc, dtype=bool)
    if system.cell is None or not pbc.any():
        return np.zeros((3, 3)), np.zeros(3, dtype=bool)
    return np.asarray(system.cell, dtype=np.float64), pbc


def _check_distances(d: np.ndarray, i: np.ndarray, j: np.ndarray, min_distance: float) -> None:
    if d.size and d.min() < min_distance:
        k = int(np.argmin(d))
        raise StructureError(
            f"atoms {int(i[k])} and {int(j[k])} overlap: distance {d[k]:.3g} A < {min_distance} A"
        )


def neighbour_pairs(system: System, cutoff: float, min_distance: float = 0.1) -> Pairs:
    """All directed pairs with distance < cutoff (vesin cell lists: linear in the number of atoms).

    Raises StructureError when two atoms (or an atom and an image) are closer than `min_distance` Angstrom.
    """
    from vesin import NeighborList

    if not cutoff > 0:
        raise ValueError(f"cutoff must be positive, got {cutoff}")
    box, pbc = _box_and_pbc(system)
    nl = NeighborList(cutoff=float(cutoff), full_list=True)
    i, j, s, d = nl.compute(points=system.positions, box=box, periodic=pbc, quantities="ijSd")
    _check_distances(d, i, j, min_distance)
    # vesin may return pairs at exactly the cutoff distance; the model's cutoff is strict.
    keep = d < cutoff
    order = np.lexsort((j[keep], i[keep]))  # sorted by receiver: helps segment sums
    return Pairs(
        receivers=i[keep][order].astype(np.int32),
        senders=j[keep][order].astype(np.int32),
        shifts=s[keep][order].astype(np.int32),
    )


def brute_force_pairs(system: System, cutoff: float) -> Pairs:
    """Reference implementation by enumerating all images; O(N^2 * images). For tests and small systems."""
    box, pbc = _box_and_pbc(system)
    pos = system.positions
    n = pos.shape[0]
    ranges = []
    if pbc.any():
        volume = abs(np.linalg.det(box))
        for k in range(3):
            if not pbc[k]:
                ranges.append(range(0, 1))
                continue
            # distance between the lattice planes spanned by the other two vectors
            height = volume / np.linalg.norm(np.cross(box[(k + 1) % 3], box[(k + 2) % 3]))
            m = int(np.ceil(cutoff / height))
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
