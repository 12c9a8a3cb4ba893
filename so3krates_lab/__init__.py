"""so3krates_lab: a Jupyter-first toolkit for the SO3krates machine-learned force field.

    import so3krates_lab as sl
    pot = sl.pretrained.load("ethanol_pbe")                      # a Potential
    system = sl.data.load_shipped("ethanol_pbe_500K")[0]         # a System
    sim = sl.md.simulate(pot, system, sl.md.Langevin(timestep_fs=0.5, temperature_K=300.0))
    traj = sim.run(10_000)                                       # a Trajectory

Importing the package does nothing but define names: no JAX configuration, no environment writes.
"""

from . import analysis, data, md, pretrained
from .analytic import MorsePotential
from .fileio import StoreBusyError
from .interrupts import Interrupted
from .model import Potential, So3kratesConfig
from .potential_base import BasePotential, Prediction, PotentialProtocol
from .structures import Dataset, Graph, StructureError, System, Trajectory
from .train import FitResult, TrainConfig, error_report, fit

__version__ = "0.1.0"

__all__ = [
    "BasePotential", "Dataset", "FitResult", "Graph", "Interrupted", "MorsePotential", "Potential", "PotentialProtocol", "Prediction",
    "So3kratesConfig", "StoreBusyError", "StructureError", "System", "TrainConfig", "Trajectory", "__version__", "analysis", "data",
    "error_report", "fit", "md", "pretrained",
]
