"""Comparing molecular geometries: Kabsch superposition, covalent bond graphs and symmetry-equivalent atoms.

All positions are in Angstrom and all RMSDs are in Angstrom. Work is done on the host in float64 (NumPy/SciPy):
these functions compare a few structures at a time, far from any compiled loop.

- `kabsch(reference, positions, weights)`: the proper rotation and translation that superpose `positions` onto
  `reference` with the least (weighted) RMSD, and that RMSD.
- `bond_graph(numbers, positions)`: covalent bonds from covalent radii (ASE's table) times a tolerance factor.
- `equivalent_groups(numbers, positions)`: sets of atoms a permutation may exchange without changing the molecule:
  terminal atoms of one element bonded to the same atom (the three hydrogens of a methyl rotor, the two of an
  NH2 or CH2 group).
- `symmetric_rmsd(reference, positions, groups)`: Kabsch RMSD minimised also over permutations within those
  groups (Hungarian assignment inside each group, alternated with superposition until the assignment is stable).
- `distance_fingerprint(positions)`: all interatomic distances sorted; invariant to rotation, translation and any
  permutation, and a rigorous pre-filter: RMS(fingerprint difference) <= 2 x (best permuted RMSD).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def _as_positions(x, name: str, n_atoms: int | None = None) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"{name}: expected positions of shape (N, 3) in Angstrom, got {arr.shape}")
    if n_atoms is not None and arr.shape[0] != n_atoms:
        raise ValueError(f"{name}: expected {n_atoms} atoms, got {arr.shape[0]}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: positions contain NaN or infinite values")
    return arr


def _as_weights(weights, n_atoms: int) -> np.ndarray:
    if weights is None:
        return np.full(n_atoms, 1.0 / n_atoms)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n_atoms,):
        raise ValueError(f"weights: expected shape ({n_atoms},), got {w.shape}")
    if np.any(w < 0) or w.sum() <= 0:
        raise ValueError("weights must be non-negative with a positive sum (e.g. atomic masses)")
    return w / w.sum()


def kabsch(reference, positions, weights=None) -> tuple[float, np.ndarray, np.ndarray]:
    """Superpose `positions` (N, 3) onto `reference` (N, 3), both Angstrom, atoms in the same order.

    weights: optional (N,) non-negative weights (e.g. masses); the RMSD is sqrt(sum w dr^2 / sum w).
    Returns (rmsd Angstrom, rotation (3, 3), aligned positions (N, 3)); aligned = (positions - c) @ rotation.T
    + c_ref with the weighted centroids c, c_ref. Only proper rotations (det +1): mirror images stay apart.

    A rotated and shifted copy superposes exactly, and the rotation found undoes the one applied:

    >>> import numpy as np
    >>> ref = np.array([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.7]])
    >>> turn = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # 90 degrees about z
    >>> rmsd, rotation, aligned = kabsch(ref, ref @ turn.T + [2.0, -1.0, 0.5])
    >>> round(rmsd, 6), bool(np.allclose(rotation, turn.T)), bool(np.allclose(aligned, ref))
    (0.0, True, True)
    """
    ref = _as_positions(reference, "reference")
    pos = _as_positions(positions, "positions", len(ref))
    w = _as_weights(weights, len(ref))
    c_ref, c_pos = w @ ref, w @ pos
    a, b = ref - c_ref, pos - c_pos
    h = (b * w[:, None]).T @ a  # covariance (3, 3)
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(vt.T @ u.T)) or 1.0
    rotation = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    aligned = b @ rotation.T + c_ref
    rmsd = float(np.sqrt(np.sum(w * np.sum((aligned - ref) ** 2, axis=1))))
    return rmsd, rotation, aligned


def kabsch_rmsd(reference, positions, weights=None) -> float:
    """The RMSD (Angstrom) after optimal superposition of `positions` (N, 3) Angstrom onto `reference` (N, 3);
    see `kabsch`.

    >>> import numpy as np
    >>> ref = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    >>> round(kabsch_rmsd(ref, ref[:, [1, 0, 2]]), 6)  # the mirror image in x = y: a rotation by 180 degrees
    0.0
    >>> moved = ref + [[0.0, 0.0, 0.3], [0.0, 0.0, 0.0], [0.1, 0.0, 0.0]]
    >>> plain = float(np.sqrt(np.mean(np.sum((moved - ref) ** 2, axis=1))))  # the RMSD without superposition
    >>> 0.0 < kabsch_rmsd(ref, moved) < plain
    True
    """
    return kabsch(reference, positions, weights)[0]


def bond_graph(numbers, positions, factor: float = 1.2) -> np.ndarray:
    """(N, N) bool adjacency: atoms i != j are bonded when d_ij < factor * (r_cov,i + r_cov,j) (ASE's covalent
    radii, Angstrom).

    numbers: (N,) atomic numbers; positions: (N, 3) Angstrom; factor: the tolerance (dimensionless).

    >>> water = [[0.0, 0.0, 0.0], [0.9572, 0.0, 0.0], [-0.24, 0.927, 0.0]]  # O, H, H
    >>> bond_graph([8, 1, 1], water).astype(int)
    array([[0, 1, 1],
           [1, 0, 0],
           [1, 0, 0]])
    """
    from ase.data import covalent_radii

    numbers = np.asarray(numbers)
    pos = _as_positions(positions, "positions", len(numbers))
    if numbers.ndim != 1 or np.any(numbers < 1) or np.any(numbers >= len(covalent_radii)):
        raise ValueError(f"numbers: expected (N,) atomic numbers >= 1, got {numbers!r}")
    radii = np.asarray(covalent_radii)[numbers]
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    bonded = d < factor * (radii[:, None] + radii[None])
    np.fill_diagonal(bonded, False)
    return bonded


def equivalent_groups(numbers, positions, factor: float = 1.2) -> list[np.ndarray]:
    """Groups (each a sorted index array, size >= 2) of terminal atoms of one element bonded to the same atom:
    e.g. the hydrogens of each methyl rotor. Permuting atoms inside a group gives the same molecule.

    numbers: (N,) atomic numbers; positions: (N, 3) Angstrom; factor: as `bond_graph`.

    >>> water = [[0.0, 0.0, 0.0], [0.9572, 0.0, 0.0], [-0.24, 0.927, 0.0]]  # O, H, H
    >>> [g.tolist() for g in equivalent_groups([8, 1, 1], water)]
    [[1, 2]]
    """
    numbers = np.asarray(numbers)
    bonded = bond_graph(numbers, positions, factor)
    degree = bonded.sum(1)
    groups = []
    for centre in range(len(numbers)):
        terminal = [j for j in np.nonzero(bonded[centre])[0] if degree[j] == 1]
        for element in sorted({int(numbers[j]) for j in terminal}):
            members = np.array(sorted(j for j in terminal if numbers[j] == element))
            if len(members) >= 2:
                groups.append(members)
    return groups


def symmetric_rmsd(reference, positions, groups=(), weights=None, max_rounds: int = 10
                   ) -> tuple[float, np.ndarray]:
    """Kabsch RMSD (Angstrom) minimised over permutations of `positions` (N, 3) Angstrom within each group of
    `groups` (index arrays, e.g. from `equivalent_groups`), compared with `reference` (N, 3) Angstrom.

    Alternates superposition and, inside each group, the assignment of atoms that minimises the summed squared
    distances (Hungarian algorithm), until the permutation no longer changes. Returns (rmsd, permutation) with
    positions[permutation] the best-matching order. A local search: exact when the groups are rotors that the
    first superposition already lines up, which holds for the small residual differences deduplication tests.

    Swapping the two hydrogens of CH2FCl is a mirror image, which no rotation undoes, unless they may be
    exchanged:

    >>> import numpy as np
    >>> chfcl = np.array([[0.0, 0.0, 0.0], [0.63, 0.63, 0.63], [0.63, -0.63, -0.63],  # C, H, H
    ...                   [-0.78, 0.78, -0.78], [-1.02, -1.02, 1.02]])               # F, Cl
    >>> swapped = chfcl[[0, 2, 1, 3, 4]]
    >>> kabsch_rmsd(chfcl, swapped) > 0.1
    True
    >>> rmsd, permutation = symmetric_rmsd(chfcl, swapped, groups=[[1, 2]])
    >>> round(rmsd, 6), permutation.tolist()
    (0.0, [0, 2, 1, 3, 4])
    """
    ref = _as_positions(reference, "reference")
    pos = _as_positions(positions, "positions", len(ref))
    perm = np.arange(len(ref))
    rmsd, _, aligned = kabsch(ref, pos, weights)  # aligned[k]: the atom matched to ref atom k
    for _ in range(max_rounds):
        new = perm.copy()
        for group in groups:
            group = np.asarray(group)
            cost = np.sum((ref[group][:, None] - aligned[group][None]) ** 2, axis=-1)  # (ref atom, candidate)
            _, cols = linear_sum_assignment(cost)
            new[group] = perm[group[cols]]
        if np.array_equal(new, perm):
            break
        perm = new
        rmsd, _, aligned = kabsch(ref, pos[perm], weights)  # aligned[k]: the atom now matched to ref atom k
    return rmsd, perm


def distance_fingerprint(positions) -> np.ndarray:
    """All N(N-1)/2 interatomic distances (Angstrom), sorted ascending, of `positions` (N, 3) Angstrom: the same
    for any rotation, translation or permutation of the atoms.

    >>> distance_fingerprint([[0.0, 0.0, 0.0], [3.0, 0.0, 0.0], [0.0, 4.0, 0.0]])  # a 3-4-5 triangle
    array([3., 4., 5.])
    """
    pos = _as_positions(positions, "positions")
    i, j = np.triu_indices(len(pos), 1)
    return np.sort(np.linalg.norm(pos[i] - pos[j], axis=-1))


def fingerprint_distance(a: np.ndarray, b: np.ndarray) -> float:
    """RMS difference (Angstrom) of two `distance_fingerprint`s. Never more than 2 x the unweighted RMSD under
    the best permutation and rotation, so ``fingerprint_distance > 2 * tol`` proves RMSD > tol.

    >>> import numpy as np
    >>> triangle = np.array([[0.0, 0.0, 0.0], [3.0, 0.0, 0.0], [0.0, 4.0, 0.0]])
    >>> turned = triangle[[2, 0, 1]] @ np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    >>> round(fingerprint_distance(distance_fingerprint(triangle), distance_fingerprint(turned)), 6)
    0.0
    >>> round(fingerprint_distance(distance_fingerprint(triangle), distance_fingerprint(1.1 * triangle)), 6)
    0.408248
    """
    if a.shape != b.shape:
        raise ValueError(f"fingerprints of different sizes: {a.shape} vs {b.shape}")
    return float(np.sqrt(np.mean((a - b) ** 2))) if a.size else 0.0
