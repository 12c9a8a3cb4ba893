"""Small built-in structures, for demos, smoke runs and tests that must work without any data files.

All in internal units (Angstrom). No labels: these are start geometries, not reference data.
"""

from __future__ import annotations

import numpy as np

from so3krates_lab.structures import System

# Ethanol, anti conformer, near its DFT equilibrium (C-C 1.51, C-O 1.43, O-H 0.97, C-H 1.09-1.10 Angstrom).
# Atom order: C (methyl), C (methylene), O, H (hydroxyl), H x3 (methyl), H x2 (methylene).
_ETHANOL_NUMBERS = [6, 6, 8, 1, 1, 1, 1, 1, 1]
_ETHANOL_POSITIONS = [
    [1.1879, -0.3829, 0.0000], [0.0000, 0.5526, 0.0000], [-1.1867, -0.2472, 0.0000],
    [-1.9237, 0.3850, 0.0000], [2.1241, 0.1834, 0.0000], [1.1701, -1.0212, 0.8818],
    [1.1701, -1.0212, -0.8818], [0.0273, 1.1942, 0.8899], [0.0273, 1.1942, -0.8899],
]

WATER_GRID_SPACING = 3.1  #: Angstrom: one H2O per 3.1^3 A^3 is 1.00 g/cm^3
WATER_OH = 0.9572  #: the O-H bond length of the rigid water molecules, Angstrom
WATER_HOH = np.deg2rad(104.52)  #: the H-O-H angle of the rigid water molecules, radians


def ethanol() -> System:
    """A 9-atom ethanol molecule (free, unlabelled)."""
    return System(numbers=_ETHANOL_NUMBERS, positions=_ETHANOL_POSITIONS)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random proper rotation (from a random unit quaternion)."""
    a, b, c, d = (q := rng.normal(size=4)) / np.linalg.norm(q)
    return np.array([
        [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
        [2 * (b * c + a * d), a * a - b * b + c * c - d * d, 2 * (c * d - a * b)],
        [2 * (b * d - a * c), 2 * (c * d + a * b), a * a - b * b - c * c + d * d],
    ])


def water_box(molecules_per_side: int = 4, seed: int = 0, spacing: float = WATER_GRID_SPACING) -> System:
    """Randomly oriented rigid H2O molecules on a cubic grid in a periodic cubic box.

    3 * molecules_per_side^3 atoms; spacing: the grid spacing, Angstrom (the default gives liquid density,
    1.00 g/cm^3); seed: of the orientations.

    >>> box = water_box(molecules_per_side=2)
    >>> box.n_atoms, box.cell.diagonal().tolist(), box.pbc.tolist()
    (24, [6.2, 6.2, 6.2], [True, True, True])
    """
    rng = np.random.default_rng(seed)
    half = WATER_HOH / 2
    local = np.array([[0.0, 0.0, 0.0],
                      [WATER_OH * np.sin(half), WATER_OH * np.cos(half), 0.0],
                      [-WATER_OH * np.sin(half), WATER_OH * np.cos(half), 0.0]])
    n = molecules_per_side
    positions = [(np.array(idx) + 0.5) * spacing + local @ _random_rotation(rng).T for idx in np.ndindex(n, n, n)]
    return System(numbers=[8, 1, 1] * n**3, positions=np.concatenate(positions),
                  cell=np.eye(3) * n * spacing, pbc=[True, True, True])


# --- docosahexaenoic acid (DHA) from internal coordinates ---------------------------------------------------------
# DHA, C22H32O2: HOOC-CH2-CH2-(CH=CH-CH2)5-CH=CH-CH2-CH3, all six double bonds cis (4Z,7Z,10Z,13Z,16Z,19Z); carbon
# k of the IUPAC numbering (C1 the carboxyl carbon) is atom k-1. Standard bond lengths and angles; the geometry is a
# start structure to relax with a model, not a minimum.
DHA_DOUBLE_BONDS = (4, 7, 10, 13, 16, 19)  # C(k)=C(k+1)
_CC_SINGLE, _CC_DOUBLE, _CH, _CO, _C_O, _OH = 1.51, 1.34, 1.09, 1.21, 1.34, 0.97  # Angstrom
_SP3, _SP2 = np.deg2rad(112.0), np.deg2rad(125.0)


def place_atom(a: np.ndarray, b: np.ndarray, c: np.ndarray, bond: float, angle: float, dihedral: float) -> np.ndarray:
    """The position of atom d bonded to c, from internal coordinates (the natural-extension-reference-frame
    construction): the c-d distance = bond (Angstrom), angle b-c-d = angle and dihedral a-b-c-d = dihedral
    (radians); a, b, c: (3,) positions, Angstrom.

    >>> import numpy as np
    >>> a, b, c = np.array([0.0, 1.0, 0.0]), np.zeros(3), np.array([1.5, 0.0, 0.0])
    >>> d = place_atom(a, b, c, 1.2, np.pi / 2, np.pi)  # anti to a, at a right angle to b-c
    >>> np.round(d, 6).tolist()
    [1.5, -1.2, 0.0]
    """
    bc = (c - b) / np.linalg.norm(c - b)
    normal = np.cross(b - a, bc)
    normal /= np.linalg.norm(normal)
    in_plane = np.cross(normal, bc)
    local = bond * np.array([-np.cos(angle), np.sin(angle) * np.cos(dihedral), np.sin(angle) * np.sin(dihedral)])
    return c + local[0] * bc + local[1] * in_plane + local[2] * normal


def _hydrogens_sp3_pair(centre, n1, n2, bond=_CH):
    """The two hydrogens of a CH2 group whose carbon `centre` is bonded to n1 and n2 (tetrahedral H-C-H)."""
    u1, u2 = (n1 - centre) / np.linalg.norm(n1 - centre), (n2 - centre) / np.linalg.norm(n2 - centre)
    away = -(u1 + u2) / np.linalg.norm(u1 + u2)
    side = np.cross(u1, u2) / np.linalg.norm(np.cross(u1, u2))
    half = np.deg2rad(109.47) / 2
    return [centre + bond * (np.cos(half) * away + s * np.sin(half) * side) for s in (1.0, -1.0)]


def _hydrogen_sp2(centre, n1, n2, bond=_CH):
    """The hydrogen of a CH group whose trigonal carbon `centre` is bonded to n1 and n2 (in their plane)."""
    u1, u2 = (n1 - centre) / np.linalg.norm(n1 - centre), (n2 - centre) / np.linalg.norm(n2 - centre)
    return centre - bond * (u1 + u2) / np.linalg.norm(u1 + u2)


def dha(after_deg: float = 140.0, before_deg: float = 140.0) -> System:
    """Docosahexaenoic acid (C22H32O2, 56 atoms, all-cis), built from internal coordinates (free, unlabelled).

    Every C=C is cis; the two single bonds of each methylene between double bonds are skewed (the common
    low-energy form of methylene-interrupted polyenes): after_deg is the dihedral (degrees) about the single bond
    right after a double bond (C=C-CH2), before_deg (degrees) that about the single bond before the next one
    (CH2-C=C); the others are anti; the carboxyl group is syn. Atom order: C1..C22 (C1 the carboxyl carbon), the carbonyl O, the hydroxyl O and H, then the
    chain's hydrogens from C2 to C22. Relax it with a model before use (`md.relax`)."""
    n_c = 22
    double = {k - 1 for k in DHA_DOUBLE_BONDS}  # bond between atoms i and i+1 is double for i in here
    # dihedral about the bond (i-1, i) that places atom i+1 (i.e. the torsion of atoms i-2, i-1, i, i+1)
    after, before = np.deg2rad(after_deg), np.deg2rad(before_deg)
    carbons = [np.zeros(3), np.array([_CC_SINGLE, 0.0, 0.0])]
    carbons.append(carbons[1] + _CC_SINGLE * np.array([np.cos(np.pi - _SP3), np.sin(np.pi - _SP3), 0.0]))
    for i in range(3, n_c):
        bond = _CC_DOUBLE if (i - 1) in double else _CC_SINGLE
        trigonal = (i - 1) in double or (i - 2) in double  # atom i-1 is a double-bond carbon
        angle = _SP2 if trigonal else _SP3
        central = i - 2  # the torsion turns about the bond (i-2, i-1)
        if central in double:
            dihedral = 0.0  # cis double bond
        elif central - 1 in double and central + 1 in double:
            dihedral = np.pi  # never happens in DHA (no conjugation); kept for clarity
        elif central - 1 in double:
            dihedral = after  # C=C-CH2: first single bond after a double bond
        elif central + 1 in double and central - 2 in double:
            dihedral = before  # CH2-C=C inside a methylene-interrupted unit
        else:
            dihedral = np.pi
        carbons.append(place_atom(carbons[i - 3], carbons[i - 2], carbons[i - 1], bond, angle, dihedral))
    c = np.array(carbons)
    # carboxyl group on C1 (atom 0): carbonyl O syn to C3 side, hydroxyl O anti, H syn to the carbonyl O
    o_carbonyl = place_atom(c[2], c[1], c[0], _CO, np.deg2rad(125.0), 0.0)
    o_hydroxyl = place_atom(c[2], c[1], c[0], _C_O, np.deg2rad(112.0), np.pi)
    h_hydroxyl = place_atom(o_carbonyl, c[0], o_hydroxyl, _OH, np.deg2rad(106.0), 0.0)
    hydrogens = []
    for i in range(1, n_c - 1):
        if i in double or (i - 1) in double:
            hydrogens.append(_hydrogen_sp2(c[i], c[i - 1], c[i + 1]))
        else:
            hydrogens.extend(_hydrogens_sp3_pair(c[i], c[i - 1], c[i + 1]))
    for phi in (np.pi, np.pi / 3, -np.pi / 3):  # methyl C22
        hydrogens.append(place_atom(c[n_c - 3], c[n_c - 2], c[n_c - 1], _CH, np.deg2rad(109.47), phi))
    positions = np.vstack([c, o_carbonyl, o_hydroxyl, h_hydroxyl, np.array(hydrogens)])
    numbers = [6] * n_c + [8, 8, 1] + [1] * len(hydrogens)
    return System(numbers=numbers, positions=positions - positions.mean(axis=0))
