"""Geometry sanity checks run by every reader on every frame.

All lengths are in Angstrom (internal units).
"""

from __future__ import annotations

import numpy as np
import vesin

from so3krates_lab.structures import StructureError, System

# Neighbour search radius (Angstrom) used to find close pairs. vesin's cell list uses cells of about
# the cutoff's size, so searching with a tiny cutoff (0.1 A) creates millions of cells and costs
# ~10 ms for 192 periodic atoms; searching at 1.5 A and filtering costs ~0.2 ms and finds the same pairs.
_SEARCH_RADIUS = 1.5


def check_overlaps(system: System, min_distance: float = 0.1) -> None:
    """Raise StructureError if two atoms (or an atom and a periodic image) are closer than `min_distance`.

    system:       a System (positions (N, 3) Angstrom, cell (3, 3) or None, pbc (3,))
    min_distance: Angstrom; pairs at a distance strictly below it are reported.

    The message names the two atom indices and their distance in Angstrom.
    Uses vesin.NeighborList with system.box_and_pbc().
    """
    if min_distance <= 0 or (system.cell is None and system.n_atoms < 2):
        return
    box, periodic = system.box_and_pbc()
    search = max(float(min_distance), _SEARCH_RADIUS)
    nl = vesin.NeighborList(cutoff=search, full_list=False)
    i, j, d = nl.compute(system.positions, box, periodic, quantities="ijd")
    close = d < min_distance
    if not close.any():
        return
    k = int(np.argmin(np.where(close, d, np.inf)))
    a, b, dist = int(i[k]), int(j[k]), float(d[k])
    a, b = min(a, b), max(a, b)
    if a == b:
        raise StructureError(
            f"atom {a} is only {dist:.4g} Angstrom from its own periodic image "
            f"(minimum {min_distance} Angstrom): the cell is too small"
        )
    raise StructureError(
        f"overlapping atoms: atoms {a} and {b} are only {dist:.4g} Angstrom apart "
        f"(minimum {min_distance} Angstrom)"
    )
