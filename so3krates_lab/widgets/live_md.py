"""Watch a running MD simulation live: nglview structure, plotly energies and temperature, Play/Pause/Stop.

    live = LiveMD(sim, steps=20_000, numbers=numbers)   # sim: a so3krates_lab.md.Simulation
    live.start()                                        # returns at once; the run goes on in a thread
    live                                                # display it; Pause / Play / Stop act between chunks
    live.replay()                                       # a frame-slider replay that appears when the run ends

Display only: the simulation, its watchdogs and its trajectory store are the library's (`so3krates_lab.md`).
The run is the simulation's chunk generator consumed in a background thread. Pause holds the generator
between chunks (the chunk being computed finishes first); Stop calls `Simulation.request_stop`, so the run
ends after the current chunk with every chunk written to the store and the stop reason recorded there.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from ._common import (
    FRAME_COUNTER_CLASS, STATUS_CLASS, PlotPanel, StatusLine, Worker, downsample, molecule_view, set_positions,
    tagged_html,
)

_POLL_S = 0.05  # how often a held run checks for Play / Stop (seconds)


def energy_figure(title: str):
    """An empty two-row plotly figure: potential, kinetic and total energy (eV, relative to the first
    frame's total energy) and temperature (K) against time (fs)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = go.Figure(make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                                        subplot_titles=("energy (eV, relative to the first frame's total)",
                                                        "temperature (K)")))
    for name in ("potential", "kinetic", "total"):
        fig.add_trace(go.Scatter(x=[], y=[], name=name, mode="lines"), row=1, col=1)
    fig.add_trace(go.Scatter(x=[], y=[], name="T", mode="lines"), row=2, col=1)
    fig.update_xaxes(title_text="time (fs)", row=2, col=1)
    fig.update_layout(title=title, height=460, width=620, margin={"l": 60, "r": 20, "t": 70, "b": 50})
    return fig


def set_energy_traces(fig, time_fs, potential, kinetic, temperature, max_points: int = 2000) -> None:
    """Fill the first four traces of an `energy_figure` (eV, K), at most `max_points` points each."""
    time_fs, potential, kinetic = np.asarray(time_fs), np.asarray(potential), np.asarray(kinetic)
    if len(time_fs) == 0:
        return
    pick = downsample(len(time_fs), max_points)
    e0 = potential[0] + kinetic[0]
    ys = (potential - e0, kinetic, potential + kinetic - e0, np.asarray(temperature))
    with fig.batch_update():
        for trace, y in zip(fig.data[:4], ys):
            trace.x, trace.y = time_fs[pick], y[pick]


class LiveMD:
    """A live view of `simulation.chunks(steps)` running in a background thread.

    simulation: a `so3krates_lab.md.Simulation` (its store, if any, receives every chunk). steps: MD steps to
    run (rounded up to whole chunks). numbers: atomic numbers (N,); default: the store's, else the simulation's
    (`md.simulate` gives it the system's). min_interval_s: the least wall time between two displayed chunks (a
    fast run is held that long after each chunk so it stays watchable; 0 runs flat out). max_points: plotted
    points per curve.

    Widgets (stable names, used by browser tests): `play_button`, `pause_button`, `stop_button`
    (descriptions "Play", "Pause", "Stop"), `frame_counter` (CSS class so3k-frame-counter, text "frame N ...",
    N the number of recorded frames shown so far, 1-based), `status` (CSS class so3k-status: "running",
    "paused", "stopped ...", "finished ..." or the watchdog's reason), `view` (nglview), `figure` (plotly).
    """

    def __init__(self, simulation, steps: int, *, numbers=None, min_interval_s: float = 0.0,
                 max_points: int = 2000, title: str = "live MD"):
        import ipywidgets as w

        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if numbers is None:
            if simulation.store is not None:
                numbers = simulation.store.meta["numbers"]
            elif np.any(getattr(simulation, "numbers", 0)):  # md.simulate gives the Simulation its system's atoms
                numbers = simulation.numbers
            else:
                raise ValueError("pass numbers= (atomic numbers): the simulation has no atoms and no store")
        self.simulation, self.steps = simulation, int(steps)
        self.numbers = np.asarray(numbers, int)
        self.min_interval_s, self.max_points = float(min_interval_s), int(max_points)
        self.frames_shown = 0
        self._parts: list = []
        self._lock = threading.Lock()
        self._running = threading.Event()  # set: not paused
        self._running.set()
        self._stop = threading.Event()
        self._worker = Worker(self._run, name="so3k-live-md")

        self.view = molecule_view(self.numbers, np.asarray(simulation.state.positions))
        self.plot = PlotPanel(energy_figure(title))
        self.figure = self.plot.figure
        self.play_button = w.Button(description="Play", icon="play", disabled=True)
        self.pause_button = w.Button(description="Pause", icon="pause", disabled=True)
        self.stop_button = w.Button(description="Stop", icon="stop", disabled=True)
        self.play_button.on_click(lambda _: self.play())
        self.pause_button.on_click(lambda _: self.pause())
        self.stop_button.on_click(lambda _: self.stop())
        self.frame_counter = tagged_html(FRAME_COUNTER_CLASS, "frame 0")
        self.status = tagged_html(STATUS_CLASS, "ready (call start())")
        self._status = StatusLine(self.status)
        self._replay_box = None
        controls = w.HBox([self.play_button, self.pause_button, self.stop_button, self.frame_counter, self.status],
                          layout=w.Layout(align_items="center"))
        self.widget = w.VBox([controls, w.HBox([self.view, self.plot.widget])])

    # display ------------------------------------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def _show(self, frames) -> None:
        """Show one chunk's frames: last structure in the view, all frames so far in the plot."""
        with self._lock:
            self._parts.append(frames)
            parts = list(self._parts)
        shown = sum(len(p) for p in parts)
        set_positions(self.view, frames.positions[-1])
        cat = lambda name: np.concatenate([getattr(p, name) for p in parts])  # noqa: E731
        set_energy_traces(self.figure, cat("time_fs"), cat("potential"), cat("kinetic"), cat("temperature"),
                          self.max_points)
        self.plot.refresh()
        self.frame_counter.value = f"frame {shown} &middot; t = {frames.time_fs[-1]:.1f} fs"
        self.frames_shown = shown  # last: once a count is published, the view, plot and counter show it

    # control ------------------------------------------------------------------------------------------------
    def start(self) -> "LiveMD":
        """Start the run in a background thread and return at once (so a notebook cell returns)."""
        if self._worker.started:
            raise RuntimeError("this LiveMD has already been started; make a new one for a new run")
        self.pause_button.disabled = self.stop_button.disabled = False
        self._status.set("running")
        self._worker.start()
        return self

    # Each control writes its status before it signals the worker (StatusLine.control), so the worker's answer
    # ("paused at frame N", "stopped on request ...") always lands after it and is what stays on screen.
    def pause(self) -> None:
        """Hold the run after the chunk being computed (status turns to "paused" when it holds)."""
        if self._stop.is_set():
            return
        with self._status.control("pausing after this chunk") as live:
            if live:
                self._running.clear()
                self.pause_button.disabled, self.play_button.disabled = True, False

    def play(self) -> None:
        """Resume a paused run."""
        if self._stop.is_set():
            return
        with self._status.control("running") as live:
            if live:
                self._running.set()
                self.pause_button.disabled, self.play_button.disabled = False, True

    def stop(self) -> None:
        """End the run after the current chunk (`Simulation.request_stop`); the store keeps every chunk."""
        with self._status.control("stopping after this chunk") as live:
            if live:
                self._stop.set()
                self.simulation.request_stop()
                self._running.set()  # a paused run must wake up to stop
                self.play_button.disabled = self.pause_button.disabled = self.stop_button.disabled = True

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run ends (True) or `timeout` s pass (False). A notebook cell that waits here keeps the
        kernel busy, so the buttons answer only after it returns."""
        return self._worker.wait(timeout)

    @property
    def done(self) -> bool:
        """Whether the run has ended (finished, stopped or failed)."""
        return self._worker.done

    @property
    def stop_reason(self) -> str | None:
        """None while running or after a full run; otherwise the simulation's reason ("stopped on request", ...)."""
        return self.simulation.stop_reason

    @property
    def error(self) -> BaseException | None:
        """The exception the run raised in its thread, or None."""
        return self._worker.error

    # the run ------------------------------------------------------------------------------------------------
    def _hold(self, shown_at: float) -> None:
        """After a chunk: wait while paused, and until min_interval_s has passed since it was shown."""
        announced = False
        while not self._stop.is_set():
            if not self._running.is_set():
                if not announced:
                    self._status.set(f"paused at frame {self.frames_shown}")
                    announced = True
            elif time.monotonic() - shown_at >= self.min_interval_s:
                return
            elif announced:
                self._status.set("running")
                announced = False
            self._stop.wait(_POLL_S)

    def _run(self) -> None:
        try:
            for frames in self.simulation.chunks(self.steps, progress=False):
                self._show(frames)
                self._hold(time.monotonic())
            reason = self.simulation.stop_reason
            if reason is None:
                self._status.end(f"finished: {self.frames_shown} frames")
            elif reason == "stopped on request":
                self._status.end(f"stopped on request at frame {self.frames_shown}")
            else:
                self._status.end(reason)
        except BaseException as exc:
            self._status.end(f"error: {type(exc).__name__}: {exc}")
            raise
        finally:
            self.play_button.disabled = self.pause_button.disabled = self.stop_button.disabled = True
            self._fill_replay()

    # replay -------------------------------------------------------------------------------------------------
    def replay(self):
        """A box that shows a `TrajectoryPlayer` of the stored trajectory as soon as the run ends (at once if it
        has ended). Returns without waiting, so the Play/Pause/Stop buttons keep working."""
        import ipywidgets as w

        if self.simulation.store is None:
            raise ValueError("replay needs the simulation's TrajectoryStore; this simulation has none")
        if self._replay_box is None:
            self._replay_box = w.VBox([w.HTML("<i>the replay appears here when the run ends</i>")])
            if self._worker.done:
                self._fill_replay()
        return self._replay_box

    def _fill_replay(self) -> None:
        import ipywidgets as w

        if self._replay_box is None:
            return
        from .player import TrajectoryPlayer

        try:
            self._replay_box.children = (TrajectoryPlayer(self.simulation.store).widget,)
        except ValueError as exc:  # e.g. no frames were stored
            self._replay_box.children = (w.HTML(f"no replay: {exc}"),)
