"""Explore a VACF power spectrum: atom selection, harmonic lines on top, and normal modes animated in nglview.

    explorer = SpectrumExplorer.from_trajectory(store, harmonic={"model": modes, "PBE": reference_modes})
    explorer                     # pick all atoms / one element / one atom; click a line's marker to animate it
    explorer.animate(5, "PBE")   # the same from code: mode 5 of the "PBE" set

Display only: the VACF and spectrum come from `analysis.vacf` / `analysis.power_spectrum`, the harmonic lines
from `analysis.normal_modes` Datasets and the animation frames from `analysis.mode_animation`.
"""

from __future__ import annotations

import threading

import numpy as np

from ._common import Worker, molecule_view, push_figure_state, set_positions, tagged_html

MODE_DETAILS_CLASS = "so3k-mode-details"
_LINE_COLOURS = ("crimson", "black", "darkorange", "seagreen")


def selection_options(numbers) -> list[tuple[str, tuple]]:
    """Dropdown options (label, (kind, value)): all atoms, each element present, each atom by index."""
    from ase.data import chemical_symbols

    numbers = np.asarray(numbers, int)
    options = [("all atoms", ("all", None))]
    options += [(f"element {chemical_symbols[z]}", ("element", int(z))) for z in sorted(set(numbers.tolist()))]
    options += [(f"atom {i} ({chemical_symbols[z]})", ("atoms", [i])) for i, z in enumerate(numbers)]
    return options


class SpectrumExplorer:
    """A plotly power spectrum of the velocity autocorrelation with harmonic lines, and an nglview mode player.

    velocities: (time, atom, 3) Angstrom/fs, `timestep_fs` fs apart; numbers: (N,) atomic numbers.
    harmonic: {name: normal_modes() Dataset} drawn as vertical lines with a clickable marker on top of each
    (the first set also supplies the geometry shown in nglview; without harmonic sets there is no view).
    mass_weighted, max_lag_fs, window: passed to `analysis.vacf` / `analysis.power_spectrum`.
    amplitude (Angstrom) and n_frames: the mode animation; frame_s: seconds per animation frame; cycles: periods
    played per click.

    Widgets: `selector` (Dropdown of atom selections), `figure` (plotly FigureWidget: trace 0 is the spectrum,
    then per harmonic set a line trace and a marker trace), `view` (nglview), `details` (CSS class
    so3k-mode-details: "mode k of NAME: F cm^-1").
    """

    def __init__(self, velocities, timestep_fs: float, numbers, *, harmonic: dict | None = None,
                 mass_weighted: bool = True, max_lag_fs: float | None = None, window: str = "hann",
                 amplitude: float = 0.3, n_frames: int = 24, frame_s: float = 0.05, cycles: int = 4,
                 title: str = "VACF power spectrum"):
        import ipywidgets as w

        from ..analysis import vacf

        self.velocities = np.asarray(velocities)
        self.timestep_fs = float(timestep_fs)
        self.numbers = np.asarray(numbers, int)
        self.harmonic = dict(harmonic or {})
        for name, ds in self.harmonic.items():
            if "frequency" not in ds or "modes" not in ds or ds.modes.shape[1] != len(self.numbers):
                raise ValueError(f"harmonic[{name!r}] must be a normal_modes() Dataset for {len(self.numbers)} "
                                 f"atoms")
        self.options = dict(mass_weighted=mass_weighted, max_lag_fs=max_lag_fs)
        self.window = window
        self.amplitude, self.n_frames, self.frame_s, self.cycles = float(amplitude), int(n_frames), frame_s, cycles
        vacf(self.velocities, self.timestep_fs, numbers=self.numbers, **self.options)  # bad input fails here
        self._cancel = threading.Event()
        self._animation: Worker | None = None

        self.selector = w.Dropdown(options=selection_options(self.numbers), description="atoms")
        self.figure = self._make_figure(title)
        first = next(iter(self.harmonic.values()), None)
        self.view = None if first is None else molecule_view(self.numbers, first.positions.values)
        self.details = tagged_html(MODE_DETAILS_CLASS, "click a harmonic line's marker to animate that mode")
        self.selector.observe(lambda change: self.select(change["new"]), names="value")
        plots = [self.figure] + ([self.view] if self.view is not None else [])
        self.widget = w.VBox([w.HBox([self.selector, self.details]), w.HBox(plots)])
        self.select(self.selector.value)

    @classmethod
    def from_trajectory(cls, trajectory, *, skip_fs: float = 0.0, **kw) -> "SpectrumExplorer":
        """An explorer of a `Trajectory` (or a `md.TrajectoryStore`) with recorded velocities; skip_fs drops
        the first frames (equilibration). Other arguments as the constructor."""
        from ..analysis.spectra import trajectory_velocities

        velocities, timestep_fs, numbers = trajectory_velocities(trajectory, skip_fs)
        if numbers is None:
            raise ValueError("the trajectory needs an `atomic_number` coordinate")
        return cls(velocities, timestep_fs, numbers, **kw)

    def _repr_mimebundle_(self, **kwargs):
        push_figure_state(self.figure)  # the figure as it is now, not as it was created (see push_figure_state)
        return self.widget._repr_mimebundle_(**kwargs)

    # the plot -----------------------------------------------------------------------------------------------
    def _make_figure(self, title: str):
        import plotly.graph_objects as go

        fig = go.FigureWidget()
        fig.add_trace(go.Scatter(x=[], y=[], mode="lines", name="VACF spectrum", line={"color": "royalblue"}))
        for k, (name, ds) in enumerate(self.harmonic.items()):
            freq = np.asarray(ds.frequency.values, float)
            top = 1.05 + 0.08 * k
            colour = _LINE_COLOURS[k % len(_LINE_COLOURS)]
            fig.add_trace(go.Scatter(x=np.repeat(freq, 3), y=np.tile([0.0, top, np.nan], len(freq)), mode="lines",
                                     line={"color": colour, "width": 1, "dash": "dot"}, name=f"{name} harmonic",
                                     hoverinfo="skip", legendgroup=name))
            marker = go.Scatter(x=freq, y=np.full(len(freq), top), mode="markers", name=f"{name} modes (click)",
                                marker={"color": colour, "size": 9, "symbol": "diamond"}, legendgroup=name,
                                customdata=np.arange(len(freq)), showlegend=False,
                                hovertemplate="mode %{customdata}: %{x:.1f} cm<sup>-1</sup><extra>" + name
                                + "</extra>")
            fig.add_trace(marker)
            fig.data[-1].on_click(lambda trace, points, state, name=name: self._clicked(name, points))
        fig.update_layout(title=title, xaxis_title="wavenumber (cm<sup>-1</sup>)",
                          yaxis_title="intensity (normalised to the highest peak)", height=420, width=700,
                          hovermode="closest", margin={"l": 60, "r": 20, "t": 60, "b": 50})
        return fig

    def spectrum(self, selection=("all", None)):
        """The power spectrum Dataset (analysis.power_spectrum) of a selection (kind, value) as in the dropdown."""
        from ..analysis import power_spectrum, vacf

        kind, value = selection
        extra = {"element": value} if kind == "element" else {"atoms": value} if kind == "atoms" else {}
        ds = vacf(self.velocities, self.timestep_fs, numbers=self.numbers, **self.options, **extra)
        return power_spectrum(ds, window=self.window)

    def select(self, selection) -> None:
        """Recompute the spectrum for a selection (kind, value) and redraw trace 0."""
        spec = self.spectrum(selection)
        with self.figure.batch_update():
            self.figure.data[0].x = spec.frequency.values
            self.figure.data[0].y = spec.intensity_normalized.values
            label = next((text for text, value in self.selector.options if value == selection), str(selection))
            self.figure.data[0].name = f"VACF spectrum ({label})"

    # the modes ----------------------------------------------------------------------------------------------
    def _clicked(self, name: str, points) -> None:
        if points.point_inds:
            self.animate(int(points.point_inds[0]), name)

    def animate(self, mode: int, name: str | None = None, *, wait: bool = False) -> np.ndarray:
        """Play mode `mode` of harmonic set `name` (default the first) in the view, in a background thread
        (`cycles` periods, `frame_s` s per frame); a previous animation is cancelled. Returns the frames
        (n_frames, N, 3) Angstrom. wait=True blocks until it has played (tests)."""
        from ..analysis import mode_animation

        if not self.harmonic:
            raise ValueError("no harmonic modes to animate: pass harmonic={name: normal_modes Dataset}")
        name = next(iter(self.harmonic)) if name is None else name
        if name not in self.harmonic:
            raise ValueError(f"unknown harmonic set {name!r}; have {list(self.harmonic)}")
        ds = self.harmonic[name]
        frames = mode_animation(ds, mode, amplitude=self.amplitude, n_frames=self.n_frames)
        self.stop_animation()
        self.details.value = (f"mode {mode} of {name}: {float(ds.frequency.values[mode]):.1f} cm<sup>-1</sup>, "
                              f"reduced mass {float(ds.reduced_mass.values[mode]):.2f} amu")
        cancel = self._cancel = threading.Event()

        def play():
            for _ in range(self.cycles):
                for positions in frames:
                    if cancel.is_set():
                        return
                    set_positions(self.view, positions)
                    cancel.wait(self.frame_s)
            set_positions(self.view, frames[0])

        self._animation = Worker(play, name="so3k-mode-animation")
        self._animation.start()
        if wait:
            self._animation.wait()
        return frames

    def stop_animation(self) -> None:
        """Cancel a running animation (the view keeps its last frame)."""
        self._cancel.set()
        if self._animation is not None:
            self._animation.wait(5.0)
