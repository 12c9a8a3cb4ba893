"""Backbone torsions of peptides: the phi/psi dihedrals that tell conformers of a peptide apart.

`backbone_torsions(numbers, positions)` finds the atom quadruples from the covalent bond graph alone (no residue
names needed): amide nitrogens, carbonyl carbons (a carbon bonded to a terminal oxygen) and alpha carbons (a
carbon bonded to an amide nitrogen and to a carbonyl carbon). For each alpha carbon CA_i between N_i and C'_i:
phi_i = C'_{i-1}-N_i-CA_i-C'_i and psi_i = N_i-CA_i-C'_i-N_{i+1}, where the outer atoms exist (capped peptides
such as Ac-Ala3-NHMe have all of them). `dihedrals(positions, quads)` evaluates them in degrees in (-180, 180].
"""

from __future__ import annotations

import numpy as np

from .alignment import bond_graph


def _carbonyl_carbons(numbers, bonded) -> set[int]:
    degree = bonded.sum(1)
    return {int(c) for c in np.nonzero(numbers == 6)[0]
            if any(numbers[o] == 8 and degree[o] == 1 for o in np.nonzero(bonded[c])[0])}


def backbone_torsions(numbers, positions) -> list[tuple[str, tuple[int, int, int, int]]]:
    """[(name, (a, b, c, d))] of the backbone phi and psi torsions, ordered along the chain from the N terminus:
    names "phi1", "psi1", "phi2", ... (residue numbers counted over alpha carbons). numbers: (N,) atomic numbers;
    positions (N, 3) Angstrom of any conformer with intact bonds. Raises ValueError when no alpha carbon is found
    (not a peptide)."""
    numbers = np.asarray(numbers)
    bonded = bond_graph(numbers, positions)
    carbonyl = _carbonyl_carbons(numbers, bonded)
    amide_n = {int(n) for n in np.nonzero(numbers == 7)[0] if carbonyl & set(np.nonzero(bonded[n])[0].tolist())}
    residues = []  # (N, CA, C')
    for ca in np.nonzero(numbers == 6)[0]:
        partners = set(np.nonzero(bonded[ca])[0].tolist())
        ns, cs = sorted(partners & amide_n), sorted(partners & carbonyl - {int(ca)})
        if len(ns) == 1 and len(cs) == 1 and int(ca) not in carbonyl:
            residues.append((ns[0], int(ca), cs[0]))
    if not residues:
        raise ValueError("no alpha carbon (a carbon bonded to an amide N and to a carbonyl C) found: not a peptide")

    def previous_carbonyl(n):
        found = sorted(set(np.nonzero(bonded[n])[0].tolist()) & carbonyl)
        return found[0] if found else None

    def next_nitrogen(c):
        found = sorted(set(np.nonzero(bonded[c])[0].tolist()) & amide_n)
        return found[0] if found else None

    # order residues along the chain: follow C'_i -> N_{i+1}
    by_n = {n: (n, ca, c) for n, ca, c in residues}
    first = [r for r in residues if previous_carbonyl(r[0]) is None
             or all(previous_carbonyl(r[0]) != c for _, _, c in residues)]
    ordered, current = [], first[0] if first else residues[0]
    while current is not None and current not in ordered:
        ordered.append(current)
        current = by_n.get(next_nitrogen(current[2]))
    out = []
    for i, (n, ca, c) in enumerate(ordered, start=1):
        prev_c, next_n = previous_carbonyl(n), next_nitrogen(c)
        if prev_c is not None:
            out.append((f"phi{i}", (prev_c, n, ca, c)))
        if next_n is not None:
            out.append((f"psi{i}", (n, ca, c, next_n)))
    return out


def dihedrals(positions, quads) -> np.ndarray:
    """Dihedral angles (degrees, in (-180, 180]) of the atom quadruples `quads` (T, 4) for positions (..., N, 3)
    Angstrom; returns (..., T). The IUPAC sign convention (clockwise looking along b -> c is positive).

    H-O-O-H with the second hydrogen anti to the first, then turned 90 degrees either way:

    >>> import numpy as np
    >>> h, o1, o2 = [-0.3, 0.92, 0.0], [0.0, 0.0, 0.0], [1.45, 0.0, 0.0]
    >>> frames = np.array([[h, o1, o2, [1.75, -0.92, 0.0]],    # anti
    ...                    [h, o1, o2, [1.75, 0.0, 0.92]],     # a: +y, d: +z
    ...                    [h, o1, o2, [1.75, 0.0, -0.92]]])
    >>> dihedrals(frames, [[0, 1, 2, 3]]).round(6).tolist()
    [[180.0], [90.0], [-90.0]]
    """
    pos = np.asarray(positions, dtype=np.float64)
    q = np.asarray(quads, dtype=np.int64).reshape(-1, 4)
    p0, p1, p2, p3 = (pos[..., q[:, k], :] for k in range(4))
    b0, b1, b2 = p0 - p1, p2 - p1, p3 - p2
    b1n = b1 / np.linalg.norm(b1, axis=-1, keepdims=True)
    v = b0 - np.sum(b0 * b1n, axis=-1, keepdims=True) * b1n
    w = b2 - np.sum(b2 * b1n, axis=-1, keepdims=True) * b1n
    x = np.sum(v * w, axis=-1)
    y = np.sum(np.cross(b1n, v) * w, axis=-1)
    return np.degrees(np.arctan2(y, x))


def ramachandran_regions(angles) -> np.ndarray:
    """A coarse backbone state per structure from (..., 2R) angles in degrees ordered phi1, psi1, phi2, ... (as
    `backbone_torsions` lists them, every residue with both): one letter per residue, A (right-handed helix
    region: phi < 0, -100 < psi < 50), B (extended / polyproline region: phi < 0, other psi) or L (phi > 0).
    Returns (...,) strings such as "LAB".

    >>> str(ramachandran_regions([-60.0, -45.0, -150.0, 150.0, 60.0, 45.0]))  # helix, extended, left-handed
    'ABL'
    """
    angles = np.asarray(angles, dtype=np.float64)
    if angles.shape[-1] % 2:
        raise ValueError(f"angles: expected pairs (phi, psi) on the last axis, got {angles.shape}")
    phi, psi = angles[..., 0::2], angles[..., 1::2]
    letters = np.where(phi > 0, "L", np.where((psi > -100) & (psi < 50), "A", "B"))
    flat = letters.reshape(-1, letters.shape[-1])
    return np.array(["".join(row) for row in flat]).reshape(letters.shape[:-1])


def diverse_backbone_frames(numbers, reference, frames, k: int, seed: int = 0):
    """Up to k of `frames` (M, N, 3) Angstrom of the molecule with atomic numbers `numbers` (N,) that cover as many
    backbone states as possible, for minima-search
    starts: only frames whose covalent bond graph equals that of `reference` (N, 3) Angstrom count; their states
    (`ramachandran_regions` of the phi/psi torsions) are taken in turn, most frequent first, a random frame of
    each (seeded). Returns (indices into frames (k',), their states (k',))."""
    from .alignment import bond_graph

    numbers, frames = np.asarray(numbers), np.asarray(frames, np.float64)
    wanted = bond_graph(numbers, reference)
    intact = np.array([np.array_equal(bond_graph(numbers, f), wanted) for f in frames])
    quads = np.array([q for _, q in backbone_torsions(numbers, reference)])
    regions = ramachandran_regions(dihedrals(frames, quads))
    rng = np.random.default_rng(seed)
    states, counts = np.unique(regions[intact], return_counts=True)
    members = {st: list(rng.permutation(np.nonzero(intact & (regions == st))[0])) for st in states}
    picked: list[int] = []
    while len(picked) < k and any(members.values()):
        for st in states[np.argsort(-counts)]:
            if members[st] and len(picked) < k:
                picked.append(int(members[st].pop()))
    return np.asarray(picked, int), regions[picked]
