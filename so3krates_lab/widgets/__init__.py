"""Display only: plotly figures and (later) nglview / ipywidgets views. Logic lives in the library."""

from .plots import md_energy_plot, parity_plot

__all__ = ["md_energy_plot", "parity_plot"]
