"""so3krates_lab: a Jupyter-first toolkit for the SO3krates machine-learned force field.

Importing the package does nothing but define names: no JAX configuration, no environment writes.
"""

from .model import So3kratesConfig, energy_and_forces, energy_forces_stress, init_variables, make_energy_fn
from .structures import Dataset, Graph, StructureError, System

__version__ = "0.1.0"

__all__ = [
    "Dataset", "Graph", "So3kratesConfig", "StructureError", "System", "energy_and_forces",
    "energy_forces_stress", "init_variables", "make_energy_fn", "__version__",
]
