"""Adapters at the edge: ASE."""

from .ase_calculator import So3kratesCalculator, system_from_atoms

__all__ = ["So3kratesCalculator", "system_from_atoms"]
