"""Neighbour pairs and padded, bucketed batches."""

from .batching import Batcher, Capacity, CapacityOverflow, Labels, graph_from_system, ladder_rung, pack, pack_labels
from .neighbours import Pairs, brute_force_pairs, neighbour_pairs

__all__ = [
    "Batcher", "Capacity", "CapacityOverflow", "Labels", "Pairs", "brute_force_pairs", "graph_from_system",
    "ladder_rung", "neighbour_pairs", "pack", "pack_labels",
]
