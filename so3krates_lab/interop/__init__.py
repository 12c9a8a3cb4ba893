"""Adapters at the edge: ASE, and the weights of the public reference implementation (mlff)."""

from .ase_calculator import PotentialCalculator, system_from_atoms
from .mlff import mlff_parameter_shapes, potential_from_mlff

__all__ = ["PotentialCalculator", "mlff_parameter_shapes", "potential_from_mlff", "system_from_atoms"]
