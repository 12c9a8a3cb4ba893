"""Molecular dynamics compiled end to end in JAX.

    sim = md.simulate(potential, system, md.Langevin(timestep_fs=0.5, temperature_K=300.0))
    traj = sim.run(10_000)                     # a so3krates_lab.Trajectory

integrators: velocity Verlet, Langevin (BAOAB), Nose-Hoover chain as typed `Integrator`s (and `NVE`, `Langevin`,
`NoseHoover` as settings for `simulate`); forces: a potential and a structure -> a `ForceFunction` with the skin
neighbour list carried in the MD state; driver: `Simulation`, compiled chunks for one structure or many
replicas, with watchdogs, overflow repair and the store; store: append-safe trajectories; minimize and relax:
FIRE and L-BFGS, batched (`relax_batch`) or with continuous refilling (`BatchRelaxer`).
"""

from .driver import Simulation, blank_like, stack_states, where_rows
from .forces import ForceFunction, force_function
from .integrators import (
    ACCEL, KB_EV_PER_K, NVE, Integrator, Langevin, MDState, NoseHoover, degrees_of_freedom, kinetic_energy,
    langevin_baoab, masses_of, maxwell_boltzmann, nose_hoover_chain, temperature, velocity_verlet,
)
from .minimize import FireState, LbfgsState, Minimizer, fire, lbfgs, relax_batch
from .relax import MINIMIZERS, BatchRelaxer, ShardedRelaxer, relax
from .simulate import open_replica_parts, simulate
from .store import TrajectoryStore
from .watchdogs import Watchdogs

__all__ = [
    "ACCEL", "BatchRelaxer", "ShardedRelaxer", "FireState", "ForceFunction", "Integrator", "KB_EV_PER_K", "Langevin", "LbfgsState",
    "MDState", "MINIMIZERS", "Minimizer", "NVE", "NoseHoover", "Simulation", "TrajectoryStore", "Watchdogs", "blank_like",
    "degrees_of_freedom", "fire", "force_function", "kinetic_energy", "langevin_baoab", "lbfgs", "masses_of",
    "maxwell_boltzmann", "nose_hoover_chain", "open_replica_parts", "relax", "relax_batch", "simulate", "stack_states", "temperature",
    "velocity_verlet", "where_rows",
]
