"""Pieces shared by the widgets: the nglview view of a molecule, a CSS-tagged text line, a background worker."""

from __future__ import annotations

import threading
import traceback
from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np

STATUS_CLASS = "so3k-status"
FRAME_COUNTER_CLASS = "so3k-frame-counter"


VIEW_WIDTH, VIEW_HEIGHT = "420px", "380px"


def molecule_view(numbers, positions):
    """An nglview (3.1.4) view of one structure: atomic numbers (N,), positions (N, 3) in Angstrom, drawn
    VIEW_WIDTH x VIEW_HEIGHT.

    The NGL stage is created at that size (nglview's `_view_width` / `_view_height`), not at the width of the
    box around it when the page first draws it: inside a `VBox` next to a label that box was a few pixels wide,
    NGL fitted the camera to it (about 130x too far away), and after the resize to full size the molecule was a
    sub-pixel dot on a white canvas (the MinimaBrowser's blank views). Coordinates are updated later with
    `set_positions(view, positions)`."""
    import nglview
    from ase import Atoms

    numbers = np.asarray(numbers, int)
    positions = np.asarray(positions, float)
    if positions.shape != (len(numbers), 3):
        raise ValueError(f"positions have shape {positions.shape}; expected ({len(numbers)}, 3) for "
                         f"{len(numbers)} atoms")
    view = nglview.show_ase(Atoms(numbers=numbers, positions=positions))
    view._view_width, view._view_height = VIEW_WIDTH, VIEW_HEIGHT  # the stage's size when it is created
    view.layout.width, view.layout.height = VIEW_WIDTH, VIEW_HEIGHT
    return view


def set_positions(view, positions) -> None:
    """Move the atoms of the view's first component to `positions` (N, 3) Angstrom (nglview's binary update)."""
    view.set_coordinates({0: np.ascontiguousarray(positions, np.float32)})


def push_figure_state(figure) -> None:
    """Give a plotly FigureWidget's front end the whole current figure (its synced `_widget_data` and
    `_widget_layout` traits), as plotly does in `FigureWidget._repr_mimebundle_` when a FigureWidget is
    displayed on its own.

    A FigureWidget inside an ipywidgets box is displayed through the box, so that refresh never runs and the
    browser draws the state the widget had when it was created, plus the trace edits its model applied since.
    In plotly 7 those edits are applied by listeners that the widget's JavaScript module (loaded asynchronously
    through anywidget) attaches when it has loaded, so edits that reach the page earlier can be missed. The
    widgets call this from their own `_repr_mimebundle_`, so the first draw shows the figure as Python has it."""
    from copy import deepcopy

    figure._widget_layout = deepcopy(figure._layout_obj._props)
    figure._widget_data = deepcopy(figure._data)


def tagged_html(css_class: str, text: str = ""):
    """An ipywidgets.HTML line carrying `css_class`, so browser tests can find it."""
    import ipywidgets as w

    label = w.HTML(text)
    label.add_class(css_class)
    return label


def downsample(n: int, max_points: int) -> np.ndarray:
    """Indices of at most `max_points` evenly spaced items out of n, always including the last."""
    if n <= max_points:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_points).round().astype(int))


class Worker:
    """Runs `target()` once in a daemon thread; keeps its exception (with traceback text) instead of losing it."""

    def __init__(self, target: Callable[[], None], name: str):
        self.error: BaseException | None = None
        self.traceback: str | None = None
        self._target = target
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        try:
            self._target()
        except BaseException as exc:  # noqa: BLE001 - reported by the widget, re-raised by wait()
            self.error, self.traceback = exc, traceback.format_exc()
        finally:
            self._done.set()

    def start(self) -> None:
        self._thread.start()

    @property
    def started(self) -> bool:
        return self._thread.ident is not None

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the work ends (True) or `timeout` seconds pass (False). Re-raises the work's exception."""
        finished = self._done.wait(timeout)
        if finished and self.error is not None:
            raise RuntimeError(f"the background run failed:\n{self.traceback}") from self.error
        return finished


class StatusLine:
    """The status text of a widget whose run goes on in a background thread, written by both threads.

    A button's handler (the kernel's thread) writes what it asked for ("stopping after this chunk") inside
    `control(text)`, and signals the worker inside the same block: the worker's own writes take the same lock, so
    whatever the worker says in answer always lands after the request, never under it. `end(text)` is the worker's
    last word; nothing overwrites it afterwards (a Stop clicked as the run finishes leaves "finished ...")."""

    def __init__(self, html):
        self.html = html
        self._lock = threading.RLock()
        self.ended = False

    def set(self, text: str, unless: threading.Event | None = None) -> None:
        """Write `text`, unless the run has ended or (checked under the lock) the event `unless` is set."""
        with self._lock:
            if not self.ended and not (unless is not None and unless.is_set()):
                self.html.value = text

    def end(self, text: str) -> None:
        with self._lock:
            self.html.value = text
            self.ended = True

    @contextmanager
    def control(self, text: str) -> Iterator[bool]:
        """Write `text` and hold the lock while the caller signals the worker; yields False (writing nothing)
        once the run has ended, so the caller can skip its signals."""
        with self._lock:
            if not self.ended:
                self.html.value = text
            yield not self.ended


class PlotPanel:
    """A plotly `go.Figure` shown in an `ipywidgets.Output` and redrawn whole by `refresh()`.

    Used instead of plotly's FigureWidget for figures that change while a run goes on: in JupyterLab 4.6 with
    plotly 7 / anywidget, a FigureWidget was seen drawn empty in 3 of 5 real-browser runs on a busy machine (its
    data arrives after the first draw, which is never repeated), while static figures always drew. `refresh()`
    replaces the Output's content in one assignment, which is safe from a background thread.
    """

    def __init__(self, figure):
        import ipywidgets as w

        self.figure = figure
        self.widget = w.Output()
        self.refresh()

    def refresh(self) -> None:
        import json

        import plotly.io as pio

        spec = json.loads(pio.to_json(self.figure, validate=False))
        self.widget.outputs = ({"output_type": "display_data", "metadata": {},
                                "data": {"application/vnd.plotly.v1+json": spec, "text/plain": "plotly figure"}},)
