"""Neighbour pairs and padded, bucketed batches: host-side pairs (`neighbours`) for data and evaluation, and the
skin neighbour list kept inside compiled MD (`skin`)."""

from .batching import Batcher, all_pairs_graph, Capacity, CapacityOverflow, Labels, graph_from_system, ladder_rung, pack, pack_labels
from .neighbours import Pairs, brute_force_pairs, neighbour_pairs
from .skin import CellGrid, NeighbourList, SkinNeighbourFn, cell_grid, grown_capacities, skin_neighbour_fn

__all__ = [
    "Batcher", "Capacity", "all_pairs_graph", "CapacityOverflow", "CellGrid", "Labels", "NeighbourList", "Pairs", "SkinNeighbourFn",
    "brute_force_pairs", "cell_grid", "graph_from_system", "grown_capacities", "ladder_rung", "neighbour_pairs",
    "pack", "pack_labels", "skin_neighbour_fn",
]
