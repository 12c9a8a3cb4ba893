"""Analyses of trajectories and potential-energy surfaces; each receives a `Trajectory` or a potential,
nothing here imports the model or training.

spectra: velocity autocorrelation, power spectra (cm^-1) and harmonic normal modes.
stability: energy conservation and stable times of MD runs.
alignment, minima, explore, hopping, torsions, barriers, disconnectivity, validation, peptide: minima exploration, deduplication and the minima graph.
"""

from .alignment import (
    bond_graph, distance_fingerprint, equivalent_groups, fingerprint_distance, kabsch, kabsch_rmsd, symmetric_rmsd,
)
from .explore import Exploration, explore_minima, minima_vs_evaluations, minima_vs_time, prescreen_distances
from .barriers import (Band, edge_attributes, edge_report, graph_barriers, plausible_bands, load_bands, neb, neb_many,
                       save_bands, torsion_interpolate)
from .disconnectivity import DisconnectivityTree, disconnectivity_tree, tree_from_graph
from .hopping import evaluation_profile, hop_minima
from .torsions import Torsion, far_pairs, rotatable_bonds, rotate, kicks_of_minima, torsion_kick
from .minima import MinimaDatabase, load_minima, load_minima_bands, minima_graph, save_minima
from .peptide import backbone_torsions, dihedrals, diverse_backbone_frames
from .spectra import (
    EIGENVALUE_TO_CM1, PER_FS_TO_CM1, as_trajectory, hessian_of, mode_animation, normal_modes,
    normal_modes_from_energy, normal_modes_of, potential_hessian, power_spectrum, spectrum_peaks, vacf, vacf_by_element,
    vacf_from_trajectory,
)
from .stability import energy_conservation, stable_times_ps
from .validation import reached_by, reference_neb, reference_relax

__all__ = ["EIGENVALUE_TO_CM1", "as_trajectory", "energy_conservation", "normal_modes_of", "potential_hessian", "stable_times_ps", "Exploration", "MinimaDatabase", "PER_FS_TO_CM1",
           "backbone_torsions", "bond_graph", "diverse_backbone_frames", "dihedrals", "distance_fingerprint", "equivalent_groups", "explore_minima", "hop_minima", "Band", "edge_attributes", "edge_report", "plausible_bands", "evaluation_profile", "load_bands", "load_minima_bands", "save_bands", "graph_barriers", "neb", "neb_many", "torsion_interpolate", "DisconnectivityTree", "disconnectivity_tree", "tree_from_graph", "minima_vs_evaluations", "minima_vs_time", "Torsion", "far_pairs", "rotatable_bonds", "rotate", "torsion_kick", "kicks_of_minima", "prescreen_distances", "fingerprint_distance", "hessian_of",
           "kabsch", "kabsch_rmsd", "load_minima", "minima_graph", "mode_animation", "normal_modes",
           "normal_modes_from_energy", "power_spectrum", "reached_by", "reference_neb", "reference_relax", "save_minima",
           "spectrum_peaks", "symmetric_rmsd", "vacf", "vacf_by_element", "vacf_from_trajectory"]
