"""Display only: plotly figures and nglview / ipywidgets views. Logic lives in the library.

LiveMD: watch a running `md.Simulation` (nglview + live energies, Play/Pause/Stop); TrajectoryPlayer: replay a
stored trajectory with a frame slider; TrainingDashboard: live curves and a Stop button around `train.fit`;
parity_plot / md_energy_plot: static plotly figures.
"""

from .live_md import LiveMD
from .player import TrajectoryPlayer
from .plots import md_energy_plot, parity_plot
from .training import TrainingDashboard

__all__ = ["LiveMD", "TrainingDashboard", "TrajectoryPlayer", "md_energy_plot", "parity_plot"]
