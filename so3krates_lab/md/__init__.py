"""Molecular dynamics compiled end to end in JAX.

integrators: velocity Verlet, Langevin (BAOAB), Nose-Hoover chain as pure init/step pairs;
neighbours / forces: the skin neighbour list kept inside the compiled step and the model's force function;
driver: compiled chunks with watchdogs and overflow repair (`Simulation`); store: append-safe trajectories.
"""

from .driver import Frames, Simulation, Watchdogs
from .forces import model_force_fn
from .integrators import (
    ACCEL, KB_EV_PER_K, MDState, degrees_of_freedom, kinetic_energy, langevin_baoab, masses_of, maxwell_boltzmann,
    nose_hoover_chain, temperature, velocity_verlet,
)
from .store import TrajectoryStore

__all__ = ["ACCEL", "Frames", "KB_EV_PER_K", "MDState", "Simulation", "TrajectoryStore", "Watchdogs",
           "degrees_of_freedom", "kinetic_energy", "langevin_baoab", "masses_of", "maxwell_boltzmann",
           "model_force_fn", "nose_hoover_chain", "temperature", "velocity_verlet"]
