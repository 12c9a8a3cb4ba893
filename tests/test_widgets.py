"""Widgets, headless: LiveMD runs in its thread and obeys Pause / Play / Stop with a consistent store; the
player replays the store; the training dashboard's Stop ends fit. A Morse cluster drives the MD and a tiny SO3krates
model the training, so each test is short."""

from __future__ import annotations

import time

import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("nglview")
pytest.importorskip("ipywidgets")

from so3krates_lab.data import builtin, load_shipped  # noqa: E402
from so3krates_lab.md import (  # noqa: E402
    Simulation, TrajectoryStore, Watchdogs, degrees_of_freedom, maxwell_boltzmann, stack_states, velocity_verlet,
)
from so3krates_lab.model import So3kratesConfig  # noqa: E402
from test_md import MASSES, N, NUMBERS, cluster_positions, morse_force_fn  # noqa: E402
from so3krates_lab.train import TrainConfig  # noqa: E402
from so3krates_lab.widgets import LiveMD, TrainingDashboard, TrajectoryPlayer  # noqa: E402
from so3krates_lab.widgets._common import molecule_view, set_positions  # noqa: E402

TINY = So3kratesConfig.preset("small", features=8, layers=1, radial_basis=8)


def until(condition, timeout: float = 90.0, what: str = "condition") -> None:
    """Poll `condition()` every 20 ms; fail after `timeout` s."""
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def simulation(store_dir, temperature_K=300.0, watchdogs=None, chunk_steps=20):
    """A 7-atom Morse cluster (cheap to compile; the widget does not care where forces come from)."""
    integ = velocity_verlet(morse_force_fn(), 0.5)
    r0 = cluster_positions()
    state = integ.init(jnp.asarray(r0), jnp.asarray(maxwell_boltzmann(MASSES, temperature_K, 1, r0)), MASSES)
    store = TrajectoryStore(store_dir, numbers=NUMBERS, timestep_fs=0.5)
    return Simulation(integ, state, dof=degrees_of_freedom(N), record_every=5, chunk_steps=chunk_steps,
                      store=store, watchdogs=watchdogs)


def frame_number(live) -> int:
    text = live.frame_counter.value
    assert text.startswith("frame "), text
    return int(text.split()[1])


def test_live_md_runs_in_its_thread_pauses_resumes_and_stops_with_a_consistent_store(tmp_path):
    sim = simulation(tmp_path / "run")
    live = LiveMD(sim, steps=10**6)
    assert "so3k-frame-counter" in live.frame_counter._dom_classes and "so3k-status" in live.status._dom_classes
    assert [b.description for b in (live.play_button, live.pause_button, live.stop_button)] == ["Play", "Pause",
                                                                                               "Stop"]
    t0 = time.monotonic()
    live.start()
    assert time.monotonic() - t0 < 1.0, "start() must return at once"
    until(lambda: live.frames_shown >= 12, what="frames to advance")
    assert not live.done and "running" in live.status.value
    assert frame_number(live) <= live.frames_shown + 4  # the thread may be one chunk (4 frames) ahead
    # the view shows the last frame of the last chunk (nglview keeps the coordinates it sent)
    assert live.view._coordinates_dict[0].shape == (N, 3)

    live.pause()
    until(lambda: "paused" in live.status.value, what="the run to hold")
    held, step = live.frames_shown, int(sim.state.step)
    time.sleep(0.5)
    assert live.frames_shown == held and int(sim.state.step) == step, "a paused run advanced"
    assert frame_number(live) == held

    live.play()
    until(lambda: live.frames_shown > held, what="the run to resume")
    live.stop()
    assert live.wait(60), "Stop did not end the run"
    assert "stopped" in live.status.value and live.stop_reason == "stopped on request"
    assert live.stop_button.disabled and live.play_button.disabled

    reopened = TrajectoryStore(tmp_path / "run")
    traj = reopened.open()
    assert len(traj) == live.frames_shown == 4 * len(reopened.chunk_paths())
    assert reopened.stop_reason() == "stopped on request" and traj.stop_reason == "stopped on request"
    np.testing.assert_allclose(traj.positions[-1], np.asarray(sim.state.positions), atol=1e-5)
    # the plot holds every shown frame, and what the notebook displays (the Output's plotly bundle) does too
    assert len(live.figure.data[3].y) == live.frames_shown
    import base64

    (shown,) = live.plot.widget.outputs
    y = shown["data"]["application/vnd.plotly.v1+json"]["data"][3]["y"]  # plotly's typed-array JSON
    assert len(np.frombuffer(base64.b64decode(y["bdata"]), y["dtype"])) == live.frames_shown


def test_live_md_finishes_and_its_replay_fills_in(tmp_path):
    sim = simulation(tmp_path / "run")
    live = LiveMD(sim, steps=60, title="finish")
    box = live.replay()
    assert "appears here" in box.children[0].value
    live.start()
    assert live.wait(60)
    assert live.status.value.startswith("finished") and live.stop_reason is None
    assert frame_number(live) == 12 and live.frames_shown == 12
    player_widget = box.children[0]
    assert "12 frames" in player_widget.children[0].value


def test_a_stop_that_races_the_end_of_the_run_leaves_the_final_status(tmp_path):
    """Stop clicked while the worker thread races to the end: the worker's last word ("finished ..." or "stopped
    ...") stays on screen, never the request's "stopping after this chunk" (seen once in CI: the request's text
    landed after the worker had already answered it). The simulation's request_stop is slowed down so that the
    worker has every chance to finish in between."""
    sim = simulation(tmp_path / "race")
    request_stop = sim.request_stop

    def slow_request_stop():
        time.sleep(1.0)  # the worker runs its remaining chunks meanwhile
        request_stop()

    sim.request_stop = slow_request_stop
    live = LiveMD(sim, steps=100, min_interval_s=0.3).start()
    until(lambda: live.frames_shown >= 4, what="the first chunk")
    live.stop()
    assert live.wait(60)
    assert live.status.value.startswith(("finished", "stopped on request")), live.status.value
    live.stop()  # a click after the end changes nothing
    assert live.status.value.startswith(("finished", "stopped on request")), live.status.value


def test_a_watchdog_stop_shows_its_reason(tmp_path):
    sim = simulation(tmp_path / "hot", temperature_K=300.0, watchdogs=Watchdogs(max_temperature=1.0))
    live = LiveMD(sim, steps=200).start()
    assert live.wait(60)
    assert "temperature" in live.status.value and "stopped" in live.status.value
    assert "temperature" in TrajectoryStore(tmp_path / "hot").stop_reason()


def test_player_replays_frames_with_a_marker(tmp_path):
    sim = simulation(tmp_path / "run")
    returned = sim.run(40, progress=False)
    player = TrajectoryPlayer(sim.store)
    assert player.slider.max == 7
    player.slider.value = 5  # as if dragged
    assert player.frame_counter.value.startswith("frame 6 of 8")
    np.testing.assert_allclose(player.view._coordinates_dict[0], player.positions[5], atol=1e-6)
    assert player.figure.data[5].x == (player.time_fs[5],)
    assert player.figure.data[5].y == (player.temperature[5],)
    with pytest.raises(IndexError, match="outside"):
        player.show(8)
    # the Trajectory the run returned, and its xarray form, replay the same frames as the store
    for source in (returned, returned.to_xarray()):
        again = TrajectoryPlayer(source)
        np.testing.assert_allclose(again.positions, player.positions, atol=1e-6)
        np.testing.assert_allclose(again.temperature, player.temperature, atol=1e-6)
    with pytest.raises(ValueError, match=r"missing \['positions'\]"):
        TrajectoryPlayer(sim.store.open().to_xarray().drop_vars("positions"))
    with pytest.raises(TypeError, match="expected a Trajectory"):
        TrajectoryPlayer(np.zeros((8, N, 3)))
    # replicas: one structure at a time
    integ = sim.integrator
    r0 = cluster_positions()
    states = stack_states([integ.init(jnp.asarray(r0), jnp.asarray(maxwell_boltzmann(MASSES, 300.0, k, r0)),
                                      MASSES) for k in range(2)])
    replicas = Simulation(integ, states, dof=degrees_of_freedom(N), record_every=5, chunk_steps=20,
                          numbers=NUMBERS).run(20, progress=False)
    with pytest.raises(ValueError, match="one structure"):
        TrajectoryPlayer(replicas)
    assert TrajectoryPlayer(replicas.replica(1)).slider.max == 3


def test_view_updates_do_not_raise_and_bad_shapes_are_named():
    mol = builtin.ethanol()
    view = molecule_view(mol.numbers, mol.positions)
    set_positions(view, mol.positions + 0.1)
    np.testing.assert_allclose(view._coordinates_dict[0], mol.positions + 0.1, atol=1e-6)
    with pytest.raises(ValueError, match=r"expected \(9, 3\)"):
        molecule_view(mol.numbers, mol.positions[:5])


def test_training_dashboard_stop_ends_fit():
    data = load_shipped("ethanol_pbe_500K")
    train, valid = data[:10], data[10:13]
    dash = TrainingDashboard(train, valid, TINY, TrainConfig(max_steps=10**6, eval_every=4, batch_size=1))
    assert dash.stop_button.description == "Stop" and "so3k-status" in dash.status._dom_classes
    dash.start()
    until(lambda: len(dash.history) >= 2, what="two validations")
    assert "running" in dash.status.value
    dash.stop()
    result = dash.wait(60)
    assert result is not None, "Stop did not end fit"
    assert result.step < 10**6 and result.step % 4 == 0
    assert [h["step"] for h in result.history] == [h["step"] for h in dash.history]
    assert list(dash.figure.data[3].x) == [h["step"] for h in dash.history]
    assert dash.status.value.startswith("stopped on request")


def test_training_dashboard_rejects_progress_and_reports_errors():
    data = load_shipped("ethanol_pbe_500K")
    with pytest.raises(ValueError, match="progress"):
        TrainingDashboard(data[:4], data[4:6], TINY, progress=True)
    dash = TrainingDashboard(data[:4], data[4:6], TINY, TrainConfig(batch_size=10)).start()  # batch > data
    with pytest.raises(RuntimeError, match="batch_size 10 exceeds"):
        dash.wait(60)
    assert dash.status.value.startswith("error")
