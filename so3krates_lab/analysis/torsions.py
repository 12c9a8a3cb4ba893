"""Torsion moves: rotate a molecule about its rotatable bonds to jump from one minimum's basin into another's.

A conformer of a flexible molecule (a peptide, a fatty acid) is set mostly by its torsions, so the cheapest way
out of a basin is to turn one or a few of them, not to heat the whole molecule. This module finds the bonds worth
turning from the covalent bond graph alone and applies random turns that keep atoms apart.

- `rotatable_bonds(numbers, positions)`: `Torsion`s (axis atoms b -> c and the atoms on c's side, the smaller
  side) for every bond that is not in a ring, joins two non-terminal atoms, is not planar (C=C between two
  three-coordinated carbons, the amide C(=O)-N) and does not just spin a rotor of equivalent atoms (a methyl or
  NH2 group: the turn would give the same minimum back).
- `rotate(positions, torsion, angle)`: positions with the moving side turned by `angle` (radians) about b -> c.
- `torsion_angles(positions, torsions)`: the dihedral that measures each torsion (degrees).
- `torsion_kick(positions, torsions, rng, n_turns, ...)`: turn `n_turns` random torsions by random angles,
  retrying until no two atoms three or more bonds apart come closer than `clash` x the sum of their covalent
  radii.

All positions in Angstrom, angles in radians; everything runs on the host (NumPy).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .alignment import _as_positions, bond_graph


@dataclasses.dataclass(frozen=True)
class Torsion:
    """A rotatable bond: axis atoms b -> c (indices) and `moving`, the atoms turned with c (c's side of the bond,
    c itself included; the smaller side). a, d: the outer atoms of the dihedral a-b-c-d that measures it (the
    heaviest neighbour of b other than c, and of c other than b; the lowest index among equals), or -1."""

    b: int
    c: int
    moving: tuple
    a: int = -1
    d: int = -1

    def __post_init__(self):
        if self.b in self.moving or self.c not in self.moving:
            raise ValueError(f"moving side {self.moving} must hold c={self.c} and not b={self.b}")


def _side(bonded: np.ndarray, start: int, blocked: int) -> set[int]:
    """Atoms reachable from `start` without passing through `blocked` (breadth-first over the bond graph)."""
    seen, frontier = {start}, [start]
    while frontier:
        nxt = []
        for a in frontier:
            for j in np.nonzero(bonded[a])[0]:
                j = int(j)
                if j != blocked and j not in seen:
                    seen.add(j)
                    nxt.append(j)
        frontier = nxt
    return seen


def _is_carbonyl_carbon(numbers, bonded, degree, a) -> bool:
    return numbers[a] == 6 and degree[a] == 3 and any(
        numbers[o] == 8 and degree[o] == 1 for o in np.nonzero(bonded[a])[0])


def rotatable_bonds(numbers, positions, factor: float = 1.2) -> list[Torsion]:
    """The rotatable bonds of the molecule (N,) atomic numbers at positions (N, 3) Angstrom, as `Torsion`
    objects; bonds from `bond_graph(numbers, positions, factor)`. See the module docstring for what counts as
    rotatable.

    Hydrogen peroxide has one, the O-O bond:

    >>> h2o2 = [[0.0, 0.0, 0.0], [1.45, 0.0, 0.0], [-0.3, 0.92, 0.0], [1.75, -0.92, 0.0]]  # O, O, H, H
    >>> rotatable_bonds([8, 8, 1, 1], h2o2)
    [Torsion(b=0, c=1, moving=(1, 3), a=2, d=3)]
    """
    numbers = np.asarray(numbers)
    pos = _as_positions(positions, "positions", len(numbers))
    bonded = bond_graph(numbers, pos, factor)
    degree = bonded.sum(1)
    out = []
    for b, c in zip(*np.nonzero(np.triu(bonded))):
        b, c = int(b), int(c)
        if degree[b] < 2 or degree[c] < 2:
            continue  # a terminal atom: nothing to turn
        side_c = _side(bonded, c, b)
        if b in side_c:
            continue  # the bond lies in a ring
        carbons3 = numbers[b] == 6 and numbers[c] == 6 and degree[b] == 3 and degree[c] == 3
        amide = any(_is_carbonyl_carbon(numbers, bonded, degree, x) and numbers[y] == 7 for x, y in ((b, c), (c, b)))
        if carbons3 or amide:
            continue  # planar (a double bond, conjugated or amide): turning it makes another isomer
        side_b = set(range(len(numbers))) - side_c
        if len(side_c) > len(side_b):
            b, c, side_c = c, b, side_b
        rotor = [j for j in side_c if j != c]
        if len(rotor) >= 2 and all(degree[j] == 1 and numbers[j] == numbers[rotor[0]] for j in rotor):
            continue  # a rotor of equivalent terminal atoms (methyl, NH2): the turn gives the same minimum
        a, d = (_outer(numbers, bonded, x, y) for x, y in ((b, c), (c, b)))
        out.append(Torsion(b, c, tuple(sorted(side_c)), a, d))
    return out


def _outer(numbers, bonded, x: int, other: int) -> int:
    """The heaviest neighbour of x other than `other` (lowest index among equals)."""
    partners = [int(j) for j in np.nonzero(bonded[x])[0] if j != other]
    return min(partners, key=lambda j: (-int(numbers[j]), j))


def torsion_angles(positions, torsions) -> np.ndarray:
    """The dihedrals a-b-c-d (degrees, (-180, 180]) of `torsions` in positions (N, 3) or (K, N, 3) Angstrom: the
    coordinates `hop_minima`'s taboo compares.

    >>> h2o2 = [[0.0, 0.0, 0.0], [1.45, 0.0, 0.0], [-0.3, 0.92, 0.0], [1.75, -0.92, 0.0]]  # O, O, H, H (anti)
    >>> torsion_angles(h2o2, rotatable_bonds([8, 8, 1, 1], h2o2)).round(6).tolist()
    [180.0]
    """
    from .peptide import dihedrals

    quads = np.array([(t.a, t.b, t.c, t.d) for t in torsions], dtype=np.int64).reshape(-1, 4)
    if np.any(quads < 0):
        raise ValueError("a torsion without outer atoms a, d (build torsions with rotatable_bonds)")
    pos = np.asarray(positions, dtype=np.float64)
    return dihedrals(pos, quads) if pos.ndim == 3 else dihedrals(pos[None], quads)[0]


def rotate(positions, torsion: Torsion, angle: float) -> np.ndarray:
    """positions (N, 3) Angstrom with torsion.moving turned by `angle` radians about the axis b -> c (Rodrigues'
    formula; bond lengths and angles unchanged).

    >>> import numpy as np
    >>> h2o2 = np.array([[0.0, 0.0, 0.0], [1.45, 0.0, 0.0], [-0.3, 0.92, 0.0], [1.75, -0.92, 0.0]])
    >>> torsions = rotatable_bonds([8, 8, 1, 1], h2o2)
    >>> turned = rotate(h2o2, torsions[0], np.pi / 2)
    >>> torsion_angles(turned, torsions).round(6).tolist()  # anti (180) turned by +90 degrees: -90
    [-90.0]
    >>> round(float(np.linalg.norm(turned[3] - turned[1])), 6) == round(float(np.linalg.norm(h2o2[3] - h2o2[1])), 6)
    True
    """
    pos = np.array(positions, dtype=np.float64)
    axis = pos[torsion.c] - pos[torsion.b]
    axis = axis / np.linalg.norm(axis)
    idx = np.asarray(torsion.moving)
    v = pos[idx] - pos[torsion.c]
    cos, sin = np.cos(angle), np.sin(angle)
    pos[idx] = (pos[torsion.c] + v * cos + np.cross(axis, v) * sin
                + np.outer(v @ axis, axis) * (1.0 - cos))
    return pos


def far_pairs(numbers, positions, min_bonds: int = 3, factor: float = 1.2) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays (i, j), i < j, of atom pairs at least `min_bonds` bonds apart (or in different fragments): the
    pairs `torsion_kick` keeps apart. numbers: (N,) atomic numbers; positions: (N, 3) Angstrom; factor: as
    `bond_graph`.

    >>> h2o2 = [[0.0, 0.0, 0.0], [1.45, 0.0, 0.0], [-0.3, 0.92, 0.0], [1.75, -0.92, 0.0]]  # H-O-O-H: 3 bonds
    >>> [a.tolist() for a in far_pairs([8, 8, 1, 1], h2o2)]
    [[2], [3]]
    """
    numbers = np.asarray(numbers)
    bonded = bond_graph(numbers, positions, factor).astype(np.int64)
    n = len(numbers)
    near = np.eye(n, dtype=bool)
    reach = np.eye(n, dtype=np.int64)
    for _ in range(min_bonds - 1):
        reach = np.minimum(reach + reach @ bonded, 1)
        near |= reach.astype(bool)
    i, j = np.nonzero(np.triu(~near, 1))
    return i, j


def torsion_kick(positions, torsions, rng, n_turns: int = 1, *, numbers=None, pairs=None, clash: float = 1.5,
                 min_angle: float = np.pi / 3, tries: int = 50, library=None, library_share: float = 0.7,
                 library_spread_deg: float = 10.0) -> np.ndarray | None:
    """Turn `n_turns` distinct random torsions of `torsions` by random angles of magnitude min_angle..pi (radians,
    either sign) and return the new positions (N, 3) Angstrom, or None when every one of `tries` attempts put two
    atoms of `pairs` (default `far_pairs(numbers, positions)`) closer than `clash` x the sum of their covalent
    radii. numbers: (N,) atomic numbers (required, for the clash test); rng: a numpy Generator.

    library: optional (M, T) degrees, the `torsion_angles` of M known minima (T = len(torsions)). Then each turn,
    with probability library_share, sets its torsion to the value of a random known minimum (plus Gaussian noise of
    library_spread_deg degrees) instead of turning it by a random angle: a torsion that has stable values lands
    near one of them, so the quench that follows is shorter. A library draw that would turn it by less than
    min_angle falls back to a random turn."""
    from ase.data import covalent_radii

    if not torsions:
        raise ValueError("the molecule has no rotatable bonds: torsion moves cannot change its conformation")
    if numbers is None:
        raise ValueError("give numbers (the atomic numbers, for the clash test)")
    numbers = np.asarray(numbers)
    pos0 = _as_positions(positions, "positions", len(numbers))
    i, j = far_pairs(numbers, pos0) if pairs is None else pairs
    limit = clash * (np.asarray(covalent_radii)[numbers][i] + np.asarray(covalent_radii)[numbers][j])
    n_turns = int(min(max(n_turns, 1), len(torsions)))
    library = None if library is None or len(library) == 0 else np.asarray(library, dtype=np.float64)
    if library is not None and library.shape[1] != len(torsions):
        raise ValueError(f"library: expected (M, {len(torsions)}) torsion angles, got {library.shape}")
    for _ in range(tries):
        pos = pos0
        for k in rng.choice(len(torsions), n_turns, replace=False):
            k = int(k)
            angle = rng.uniform(min_angle, np.pi) * rng.choice((-1.0, 1.0))
            if library is not None and rng.random() < library_share:
                current = torsion_angles(pos, [torsions[k]])[0]
                target = library[rng.integers(len(library)), k] + rng.normal(0.0, library_spread_deg)
                turn = np.radians((target - current + 180.0) % 360.0 - 180.0)
                if abs(turn) >= min_angle:
                    angle = turn
            pos = rotate(pos, torsions[k], angle)
        if np.all(np.linalg.norm(pos[i] - pos[j], axis=-1) > limit):
            return pos
    return None


def kicks_of_minima(minima, torsions, rng, k: int, *, numbers, n_turns: int = 1, **kick_options) -> np.ndarray:
    """(k, N, 3) Angstrom: k torsion kicks (`torsion_kick` with n_turns turns), each of a minimum drawn at random
    from `minima` ((M, N, 3) Angstrom, or a sequence of (N, 3) arrays); kicks that clash are drawn again. The test
    set for comparing minimisers or quench rules on one molecule's landscape (benchmarks/minima.py).
    numbers: (N,) atomic numbers; rng: a numpy Generator; kick_options: `torsion_kick`'s other keywords.

    >>> import numpy as np
    >>> h2o2 = np.array([[0.0, 0.0, 0.0], [1.45, 0.0, 0.0], [-0.3, 0.92, 0.0], [1.75, -0.92, 0.0]])
    >>> kicks_of_minima([h2o2], rotatable_bonds([8, 8, 1, 1], h2o2), np.random.default_rng(0), 3,
    ...                 numbers=[8, 8, 1, 1]).shape
    (3, 4, 3)
    """
    if k < 1 or len(minima) == 0:
        raise ValueError(f"need k >= 1 kicks of at least one minimum, got k={k} and {len(minima)} minima")
    kicks = []
    for _ in range(100 * k):
        kicked = torsion_kick(minima[int(rng.integers(len(minima)))], torsions, rng, n_turns, numbers=numbers,
                              **kick_options)
        if kicked is not None:
            kicks.append(kicked)
        if len(kicks) == k:
            return np.stack(kicks)
    raise ValueError(f"only {len(kicks)} of {k} kicks kept their atoms apart in {100 * k} tries")
