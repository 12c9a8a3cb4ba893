"""Display only: plotly figures and nglview / ipywidgets views. Logic lives in the library.

LiveMD: watch a running `md.Simulation` (nglview + live energies, Play/Pause/Stop); TrajectoryPlayer: replay a
stored trajectory with a frame slider; TrainingDashboard: live curves and a Stop button around `train.fit`;
SpectrumExplorer: a VACF power spectrum with atom selection, harmonic lines and normal modes animated in nglview;
MinimaBrowser: the minima graph (energy against connectivity) with an energy filter and an nglview of the
clicked minimum next to its neighbours; parity_plot / md_energy_plot / disconnectivity_figure: static plotly figures.
"""

from .live_md import LiveMD
from .minima import MinimaBrowser
from .player import TrajectoryPlayer
from .plots import disconnectivity_figure, md_energy_plot, parity_plot
from .spectrum import SpectrumExplorer
from .training import TrainingDashboard

__all__ = ["LiveMD", "MinimaBrowser", "disconnectivity_figure", "SpectrumExplorer", "TrainingDashboard", "TrajectoryPlayer", "md_energy_plot",
           "parity_plot"]
