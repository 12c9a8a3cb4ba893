"""so3krates_lab: a Jupyter-first toolkit for the SO3krates machine-learned force field.

    import so3krates_lab as sl
    pot = sl.pretrained.load("ethanol_pbe")                      # a Potential
    system = sl.data.load_shipped("ethanol_pbe_500K")[0]         # a System
    sim = sl.md.simulate(pot, system, sl.md.Langevin(timestep_fs=0.5, temperature_K=300.0))
    traj = sim.run(10_000)                                       # a Trajectory

Importing the package does nothing but define names (imported on first use): no JAX configuration, no
environment writes.
"""

import importlib

# Names are imported when first used (PEP 562), so `import so3krates_lab` is instant: a command line can install
# its Ctrl-C guard (so3krates_lab.interrupts) before JAX and SciPy load, and `import so3krates_lab.cli` stays cheap.
_SUBPACKAGES = {"analysis", "data", "distributed", "md", "pretrained"}
_NAMES = {
    "MorsePotential": "analytic", "StoreBusyError": "fileio", "Interrupted": "interrupts",
    "Potential": "model", "So3kratesConfig": "model",
    "BasePotential": "potential_base", "Prediction": "potential_base", "PotentialProtocol": "potential_base",
    "Dataset": "structures", "Graph": "structures", "StructureError": "structures", "System": "structures",
    "Trajectory": "structures",
    "FitResult": "train", "TrainConfig": "train", "error_report": "train", "fit": "train",
}


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        value = importlib.import_module(f".{name}", __name__)
    elif name in _NAMES:
        value = getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | _SUBPACKAGES | set(_NAMES))


__version__ = "0.4.0"  #: the package version (PEP 440)

__all__ = [
    "BasePotential", "Dataset", "FitResult", "Graph", "Interrupted", "MorsePotential", "Potential", "PotentialProtocol", "Prediction",
    "So3kratesConfig", "StoreBusyError", "StructureError", "System", "TrainConfig", "Trajectory", "__version__", "analysis", "data", "distributed",
    "error_report", "fit", "md", "pretrained",
]
