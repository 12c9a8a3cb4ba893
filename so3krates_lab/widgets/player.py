"""Replay a finished MD trajectory: a frame slider (and a play button) driving an nglview view and a marker on
the energy and temperature plot.

    TrajectoryPlayer(trajectory)     # a Trajectory (sim.run(...)), or a TrajectoryStore
"""

from __future__ import annotations

import numpy as np

from ..analysis.spectra import as_trajectory

from ._common import FRAME_COUNTER_CLASS, PlotPanel, molecule_view, set_positions, tagged_html
from .live_md import energy_figure, set_energy_traces


class TrajectoryPlayer:
    """Frame-by-frame replay of a trajectory.

    source: a one-structure `Trajectory`, or a `md.TrajectoryStore` (its frames). Widgets: `slider` (frame index), `view` (nglview), `figure` (plotly, with a marker
    at the current frame), `frame_counter` (CSS class so3k-frame-counter).
    """

    def __init__(self, source, *, title: str = "trajectory", max_points: int = 2000):
        import ipywidgets as w
        import plotly.graph_objects as go

        traj = as_trajectory(source)
        if traj.n_replicas is not None:
            raise ValueError("TrajectoryPlayer shows one structure: pass trajectory.replica(r)")
        self.time_fs = np.asarray(traj.time_fs, float)
        self.positions = np.asarray(traj.positions)
        self.potential = np.asarray(traj.potential, float)
        self.kinetic = np.asarray(traj.kinetic, float)
        self.temperature = np.asarray(traj.temperature, float)
        self.stop_reason = traj.stop_reason
        n = len(self.time_fs)
        if n == 0:
            raise ValueError("the trajectory has no frames")

        self.view = molecule_view(traj.numbers, self.positions[0])
        self.figure = energy_figure(title)
        set_energy_traces(self.figure, self.time_fs, self.potential, self.kinetic, self.temperature, max_points)
        marker = {"size": 11, "color": "black", "symbol": "circle-open", "line": {"width": 2}}
        self.figure.add_trace(go.Scatter(x=[], y=[], mode="markers", marker=marker, name="frame"), row=1, col=1)
        self.figure.add_trace(go.Scatter(x=[], y=[], mode="markers", marker=marker, showlegend=False), row=2, col=1)
        self.plot = PlotPanel(self.figure)
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
                              w.HBox([self.view, self.plot.widget])])
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
        self.plot.refresh()
        self.frame_counter.value = f"frame {k + 1} of {len(self.time_fs)} &middot; t = {self.time_fs[k]:.1f} fs"
        if self.slider.value != k:
            self.slider.value = k
