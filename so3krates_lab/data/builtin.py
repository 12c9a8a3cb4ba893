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

WATER_GRID_SPACING = 3.1  # Angstrom: one H2O per 3.1^3 A^3 is 1.00 g/cm^3
WATER_OH = 0.9572  # Angstrom
WATER_HOH = np.deg2rad(104.52)


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

    3 * molecules_per_side^3 atoms; the default spacing gives liquid density (1.00 g/cm^3).
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
