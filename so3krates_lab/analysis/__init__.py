"""Analysis of simulations: minima exploration and the minima graph (alignment, minima, explore,
validation).

Everything here receives an energy or force function as an argument; nothing imports the model or training.
"""

from .alignment import (
    bond_graph, distance_fingerprint, equivalent_groups, fingerprint_distance, kabsch, kabsch_rmsd, symmetric_rmsd,
)
from .explore import BatchRelaxer, Exploration, explore_minima
from .minima import MinimaDatabase, load_minima, minima_graph, save_minima
from .validation import reached_by, reference_relax

__all__ = ["BatchRelaxer", "Exploration", "MinimaDatabase", "bond_graph", "distance_fingerprint",
           "equivalent_groups", "explore_minima", "fingerprint_distance", "kabsch", "kabsch_rmsd", "load_minima",
           "minima_graph", "reached_by", "reference_relax", "save_minima", "symmetric_rmsd"]
