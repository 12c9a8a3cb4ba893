"""Replay a finished MD trajectory: a frame slider (and a play button) driving an nglview view and a marker on
the energy and temperature plot.

    TrajectoryPlayer(TrajectoryStore("runs/ethanol"))     # or any Dataset from store.open()
"""

from __future__ import annotations

import numpy as np

from ._common import FRAME_COUNTER_CLASS, molecule_view, set_positions, tagged_html
from .live_md import energy_figure_widget, set_energy_traces


class TrajectoryPlayer:
    """Frame-by-frame replay of a trajectory.

    source: a `so3krates_lab.md.TrajectoryStore` or the xarray Dataset its `open()` returns (variables
    positions (time, atom, xyz) Angstrom, potential_energy / kinetic_energy eV, temperature K; coordinates time
    fs and atomic_number). Widgets: `slider` (frame index), `view` (nglview), `figure` (plotly, with a marker
    at the current frame), `frame_counter` (CSS class so3k-frame-counter).
    """

    def __init__(self, source, *, title: str = "trajectory", max_points: int = 2000):
        import ipywidgets as w
        import plotly.graph_objects as go

        ds = source.open() if hasattr(source, "open") else source
        for name in ("positions", "potential_energy", "kinetic_energy", "temperature", "atomic_number"):
            if name not in ds.variables:
                raise ValueError(f"the trajectory has no {name!r}; expected a TrajectoryStore or its open() Dataset")
        self.time_fs = np.asarray(ds.time.values, float)
        self.positions = np.asarray(ds.positions.values)
        self.potential = np.asarray(ds.potential_energy.values, float)
        self.kinetic = np.asarray(ds.kinetic_energy.values, float)
        self.temperature = np.asarray(ds.temperature.values, float)
        self.stop_reason = source.stop_reason() if hasattr(source, "stop_reason") else None
        n = len(self.time_fs)
        if n == 0:
            raise ValueError("the trajectory has no frames")

        self.view = molecule_view(ds.atomic_number.values, self.positions[0])
        self.figure = energy_figure_widget(title)
        set_energy_traces(self.figure, self.time_fs, self.potential, self.kinetic, self.temperature, max_points)
        marker = {"size": 11, "color": "black", "symbol": "circle-open", "line": {"width": 2}}
        self.figure.add_trace(go.Scatter(x=[], y=[], mode="markers", marker=marker, name="frame"), row=1, col=1)
        self.figure.add_trace(go.Scatter(x=[], y=[], mode="markers", marker=marker, showlegend=False), row=2, col=1)
        self.slider = w.IntSlider(value=0, min=0, max=n - 1, description="frame", continuous_update=True,
                                  layout=w.Layout(width="420px"))
        self.play = w.Play(value=0, min=0, max=n - 1, interval=100, description="play")
        w.jslink((self.play, "value"), (self.slider, "value"))
        self.frame_counter = tagged_html(FRAME_COUNTER_CLASS)
        self.slider.observe(lambda change: self.show(change["new"]), names="value")
        header = f"{n} frames, {self.time_fs[0]:.1f} to {self.time_fs[-1]:.1f} fs"
        if self.stop_reason:
            header += f"; the run ended early: {self.stop_reason}"
        self.widget = w.VBox([w.HTML(header), w.HBox([self.play, self.slider, self.frame_counter]),
                              w.HBox([self.view, self.figure])])
        self.show(0)

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def show(self, k: int) -> None:
        """Show frame k (0-based): structure in the view, marker on the plot, counter text."""
        if not 0 <= k < len(self.time_fs):
            raise IndexError(f"frame {k} is outside 0..{len(self.time_fs) - 1}")
        set_positions(self.view, self.positions[k])
        e0 = self.potential[0] + self.kinetic[0]
        with self.figure.batch_update():
            self.figure.data[4].x, self.figure.data[4].y = [self.time_fs[k]], [self.potential[k] + self.kinetic[k] - e0]
            self.figure.data[5].x, self.figure.data[5].y = [self.time_fs[k]], [self.temperature[k]]
        self.frame_counter.value = f"frame {k + 1} of {len(self.time_fs)} &middot; t = {self.time_fs[k]:.1f} fs"
        if self.slider.value != k:
            self.slider.value = k
