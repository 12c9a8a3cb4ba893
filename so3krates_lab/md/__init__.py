"""Molecular dynamics compiled end to end in JAX.

integrators: velocity Verlet, Langevin (BAOAB), Nose-Hoover chain as pure init/step pairs;
neighbours / forces: the skin neighbour list kept inside the compiled step and the model's force function;
minimize: FIRE and L-BFGS, batched over structures; driver: compiled chunks with watchdogs and overflow repair (`Simulation`); store: append-safe trajectories.
"""

from .driver import Frames, Simulation, Watchdogs
from .forces import model_force_fn
from .integrators import (
    ACCEL, KB_EV_PER_K, MDState, degrees_of_freedom, kinetic_energy, langevin_baoab, masses_of, maxwell_boltzmann,
    nose_hoover_chain, temperature, velocity_verlet,
)
from .minimize import FireState, LbfgsState, fire, lbfgs, relax_batch
from .replicas import ReplicaSimulation, stack_states, where_rows
from .store import TrajectoryStore

__all__ = ["ACCEL", "FireState", "Frames", "KB_EV_PER_K", "LbfgsState", "MDState", "ReplicaSimulation", "Simulation", "TrajectoryStore", "Watchdogs",
           "degrees_of_freedom", "fire", "kinetic_energy", "langevin_baoab", "lbfgs", "masses_of", "maxwell_boltzmann",
           "model_force_fn", "nose_hoover_chain", "relax_batch", "stack_states", "temperature", "velocity_verlet",
           "where_rows"]
