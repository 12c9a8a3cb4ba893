"""Watch `so3krates_lab.train.fit` live: loss and validation-error curves, a Stop button, fit in a thread.

    dash = TrainingDashboard(train, valid, So3kratesConfig(), TrainConfig(max_steps=5000), checkpoint="runs/m.npz")
    dash.start()          # returns at once; curves update at every validation
    dash                  # display it
    result = dash.wait()  # the FitResult, once training ends (Stop, max_steps, max_seconds or patience)

Display only: `fit` does the work and its `callbacks` hook carries each validation record here; the Stop button
makes the next callback return True, so training ends at the next validation (every `eval_every` steps) with
its checkpoints written as usual.
"""

from __future__ import annotations

import threading

from ._common import STATUS_CLASS, PlotPanel, StatusLine, Worker, tagged_html


def _training_figure():
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = go.Figure(make_subplots(rows=1, cols=2, subplot_titles=(
        "loss (eV^2, weighted MSE)", "validation MAE")))
    fig.add_trace(go.Scatter(x=[], y=[], name="train loss", mode="lines+markers"), row=1, col=1)
    fig.add_trace(go.Scatter(x=[], y=[], name="valid loss", mode="lines+markers"), row=1, col=1)
    fig.add_trace(go.Scatter(x=[], y=[], name="E MAE (meV)", mode="lines+markers"), row=1, col=2)
    fig.add_trace(go.Scatter(x=[], y=[], name="F MAE (meV/Å)", mode="lines+markers"), row=1, col=2)
    fig.update_yaxes(type="log")
    fig.update_xaxes(title_text="step")
    fig.update_layout(height=380, width=900, margin={"l": 60, "r": 20, "t": 50, "b": 50})
    return fig


class TrainingDashboard:
    """Runs `fit(train, valid, config, train_config, **fit_kwargs)` in a background thread with live curves.

    fit_kwargs go to `so3krates_lab.train.fit` (checkpoint=, metadata=, callbacks=, ...); progress is off (the
    dashboard is the progress display). Widgets: `stop_button` ("Stop"), `status` (CSS class so3k-status:
    "running ...", "stopping ...", "stopped ...", "finished ..."), `figure` (plotly figure, redrawn in `plot.widget`).
    `history` holds the validation records seen so far; `result` the FitResult once training has ended.
    """

    def __init__(self, train, valid, config, train_config=None, **fit_kwargs):
        import ipywidgets as w

        from ..train import TrainConfig

        if "progress" in fit_kwargs:
            raise ValueError("TrainingDashboard shows progress itself; do not pass progress=")
        self._args = (train, valid, config, train_config or TrainConfig())
        self._user_callbacks = tuple(fit_kwargs.pop("callbacks", ()))
        self._fit_kwargs = fit_kwargs
        self.history: list[dict] = []
        self.result = None
        self._stop = threading.Event()
        self._worker = Worker(self._run, name="so3k-training")
        self.plot = PlotPanel(_training_figure())
        self.figure = self.plot.figure
        self.stop_button = w.Button(description="Stop", icon="stop", disabled=True)
        self.stop_button.on_click(lambda _: self.stop())
        self.status = tagged_html(STATUS_CLASS, "ready (call start())")
        self._status = StatusLine(self.status)
        self.widget = w.VBox([w.HBox([self.stop_button, self.status], layout=w.Layout(align_items="center")),
                              self.plot.widget])

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def start(self) -> "TrainingDashboard":
        """Start training in a background thread and return at once."""
        if self._worker.started:
            raise RuntimeError("this dashboard has already been started; make a new one for a new run")
        self.stop_button.disabled = False
        self._status.set("running: compiling and taking the first steps")
        self._worker.start()
        return self

    def stop(self) -> None:
        """Stop at the next validation (fit saves its checkpoints as usual)."""
        with self._status.control("stopping at the next validation") as live:  # written before the signal
            if live:
                self._stop.set()
                self.stop_button.disabled = True

    def wait(self, timeout: float | None = None):
        """Block until training ends and return the FitResult (None if `timeout` s passed first)."""
        return self.result if self._worker.wait(timeout) else None

    @property
    def done(self) -> bool:
        """Whether training has ended (finished, stopped or failed)."""
        return self._worker.done

    @property
    def error(self) -> BaseException | None:
        """The exception training raised in its thread, or None."""
        return self._worker.error

    def _on_validation(self, record: dict) -> bool:
        self.history.append(record)
        steps = [r["step"] for r in self.history]
        columns = ("train_loss", "valid_loss", "energy_mae_meV", "force_mae_meV_A")
        with self.figure.batch_update():
            for trace, key in zip(self.figure.data, columns):
                trace.x, trace.y = steps, [r[key] for r in self.history]
        self.plot.refresh()
        self._status.set(f"running: step {record['step']}, validation E MAE {record['energy_mae_meV']:.2f} meV, "
                         f"F MAE {record['force_mae_meV_A']:.1f} meV/Å, {record['seconds']:.0f} s", unless=self._stop)
        user_stop = any(bool(cb(record)) for cb in self._user_callbacks)
        return self._stop.is_set() or user_stop

    def _run(self) -> None:
        from ..train import fit

        try:
            self.result = fit(*self._args, progress=False, callbacks=(self._on_validation,), **self._fit_kwargs)
            r = self.result
            best = next((h for h in r.history if h["step"] == r.best_step), None)
            best_text = (f"; best validation at step {r.best_step}: F MAE {best['force_mae_meV_A']:.1f} meV/Å"
                         if best else "")
            verb = "stopped on request" if self._stop.is_set() else "finished"
            self._status.end(f"{verb} at step {r.step}{best_text}")
        except BaseException as exc:
            self._status.end(f"error: {type(exc).__name__}: {exc}")
            raise
        finally:
            self.stop_button.disabled = True
