"""Molecular dynamics compiled end to end in JAX: integrators (this package's `integrators`), and tools around them."""

from .integrators import (
    ACCEL, KB_EV_PER_K, MDState, degrees_of_freedom, kinetic_energy, langevin_baoab, masses_of, maxwell_boltzmann,
    nose_hoover_chain, temperature, velocity_verlet,
)

__all__ = ["ACCEL", "KB_EV_PER_K", "MDState", "degrees_of_freedom", "kinetic_energy", "langevin_baoab",
           "masses_of", "maxwell_boltzmann", "nose_hoover_chain", "temperature", "velocity_verlet"]
