"""Adapters at the edge: ASE."""

from .ase_calculator import PotentialCalculator, system_from_atoms

__all__ = ["PotentialCalculator", "system_from_atoms"]
