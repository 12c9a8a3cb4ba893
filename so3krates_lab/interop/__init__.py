"""Adapters at the edge: ASE, and the weights of the public reference implementation (mlff) and of SO3LR."""

from .ase_calculator import PotentialCalculator, system_from_atoms
from .mlff import mlff_parameter_shapes, potential_from_mlff
from .so3lr import potential_from_so3lr, read_so3lr_params

__all__ = ["PotentialCalculator", "mlff_parameter_shapes", "potential_from_mlff", "potential_from_so3lr",
           "read_so3lr_params", "system_from_atoms"]
