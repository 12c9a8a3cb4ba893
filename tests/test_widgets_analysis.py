"""Analysis widgets, headless, on tiny synthetic inputs: the SpectrumExplorer recomputes its spectrum for an atom
selection and animates a clicked normal mode; the MinimaBrowser shows a clicked minimum with its details and hides
minima outside the energy window."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("nglview")
pytest.importorskip("ipywidgets")

from plotly.callbacks import InputDeviceState, Points  # noqa: E402

from so3krates_lab.analysis import MinimaDatabase, mode_animation, normal_modes  # noqa: E402
from so3krates_lab.analysis.spectra import PER_FS_TO_CM1  # noqa: E402
from so3krates_lab.widgets import MinimaBrowser, SpectrumExplorer  # noqa: E402

WATER = np.array([8, 1, 1])
WATER_POSITIONS = np.array([[0.0, 0.0, 0.12], [0.0, 0.76, -0.47], [0.0, -0.76, -0.47]])


def click(trace, index: int) -> None:
    """What a browser click on point `index` of a FigureWidget trace sends to Python."""
    trace._dispatch_on_click(Points(point_inds=[index], xs=[trace.x[index]], ys=[trace.y[index]],
                                    trace_name=trace.name, trace_index=0), InputDeviceState())


# --- spectrum explorer ------------------------------------------------------------------------------------------
def oscillating_velocities(n_frames: int = 400, dt_fs: float = 2.0):
    """Velocities (time, 3, 3) Angstrom/fs: the O atom oscillates at 1000 cm^-1, the H atoms at 3000 cm^-1."""
    t = np.arange(n_frames) * dt_fs
    v = np.zeros((n_frames, 3, 3))
    v[:, 0, 0] = 0.01 * np.cos(2 * np.pi * (1000.0 / PER_FS_TO_CM1) * t)
    v[:, 1:, 1] = 0.01 * np.cos(2 * np.pi * (3000.0 / PER_FS_TO_CM1) * t)[:, None]
    return v, dt_fs


def water_modes():
    """normal_modes of a symmetric positive-definite stand-in Hessian (eV/Angstrom^2) at the water geometry."""
    a = np.random.default_rng(0).normal(size=(9, 9))
    return normal_modes(a @ a.T + 9 * np.eye(9), WATER_POSITIONS, WATER)


def test_spectrum_selection_recomputes_the_trace():
    v, dt = oscillating_velocities()
    explorer = SpectrumExplorer(v, dt, WATER, harmonic={"model": water_modes()}, mass_weighted=False)
    spectrum = explorer.figure.data[0]
    peak = lambda: spectrum.x[int(np.argmax(spectrum.y))]  # noqa: E731
    assert abs(peak() - 3000.0) < 60.0  # all atoms: the two H atoms dominate
    all_atoms = np.array(spectrum.y)
    explorer.selector.value = ("element", 8)
    assert abs(peak() - 1000.0) < 60.0, "selecting oxygen must show the 1000 cm^-1 line"
    assert not np.allclose(np.array(spectrum.y), all_atoms)
    assert "element O" in spectrum.name
    explorer.selector.value = ("atoms", [2])
    assert abs(peak() - 3000.0) < 60.0


def test_mode_click_animates_the_mode():
    v, dt = oscillating_velocities()
    modes = water_modes()
    explorer = SpectrumExplorer(v, dt, WATER, harmonic={"model": modes}, n_frames=8, frame_s=0.0, cycles=1)
    markers = explorer.figure.data[2]
    assert len(markers.x) == modes.sizes["mode"] == 3  # 9 - 6 rigid-body modes
    click(markers, 1)
    explorer._animation.wait(30)  # the nglview updates ran in the thread and did not raise
    assert "mode 1 of model" in explorer.details.value
    frames = explorer.animate(2, "model", wait=True)
    assert frames.shape == (8, 3, 3)
    displacement = frames - WATER_POSITIONS
    assert np.allclose(displacement[0], 0.0)
    peak = displacement[2]  # phase pi/2: the full amplitude along the mode
    assert np.isclose(np.linalg.norm(peak), explorer.amplitude)
    assert np.allclose(peak / explorer.amplitude, modes.modes.values[2])


def test_mode_animation_rejects_bad_input():
    with pytest.raises(ValueError, match="out of range"):
        mode_animation(water_modes(), 3)
    with pytest.raises(ValueError, match="amplitude"):
        mode_animation(water_modes(), 0, amplitude=0.0)


# --- minima browser ---------------------------------------------------------------------------------------------
def tiny_minima():
    """Four 'minima' of a bent triatomic (energies 0, 50, 120, 300 meV) and a chain 0-1-2 plus 1-3."""
    db = MinimaDatabase(WATER, groups=[])
    for k, energy in enumerate([0.0, 0.05, 0.12, 0.30]):
        pos = WATER_POSITIONS.copy()
        pos[1, 1] += 0.3 * k  # each geometry clearly distinct (RMSD >> 0.1 Angstrom)
        db.add(pos, energy)
    sequences = {"a": [(0, 0), (1, 1), (2, 2)], "b": [(0, 1), (1, 3), (2, 1)]}
    return db, sequences


def test_minima_browser_click_shows_the_minimum():
    db, sequences = tiny_minima()
    browser = MinimaBrowser.from_database(db, sequences)
    assert "minimum 0" in browser.details.value  # the lowest minimum is selected first
    nodes = browser.figure.data[1]
    index = list(nodes.customdata).index(2)
    click(nodes, index)
    assert browser.selected == 2
    assert "minimum 2" in browser.details.value and "120.0 meV" in browser.details.value
    assert browser.neighbour_picker.value == 1  # its only neighbour
    rmsd = browser.neighbour_rmsd(2)[1]
    assert rmsd > 0.1 and f"RMSD {rmsd:.2f}" in browser.details.value
    assert browser.details._dom_classes == ("so3k-minimum-details",)
    assert list(browser.figure.data[2].x) == [browser.x[2]]  # the ring moved to the clicked node


def test_minima_browser_energy_window_hides_nodes():
    db, sequences = tiny_minima()
    browser = MinimaBrowser.from_database(db, sequences)
    assert sorted(browser.figure.data[1].customdata) == [0, 1, 2, 3]
    browser.energy_window.value = (0.0, 100.0)
    assert sorted(browser.figure.data[1].customdata) == [0, 1]
    edges = [y for y in browser.figure.data[0].y if y is not None]
    assert max(edges) <= 100.0  # no edge drawn to a hidden minimum
    assert [value for _, value in browser.node_picker.options] == [0, 1]


def test_displaying_a_browser_sends_its_current_figure():
    """The FigureWidget sits inside a box, so the browser's display must carry the figure as it is now (nodes
    filtered after creation), not the empty figure the widget was created with."""
    db, sequences = tiny_minima()
    browser = MinimaBrowser.from_database(db, sequences)
    browser.energy_window.value = (0.0, 100.0)
    bundle = browser._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    sent = browser.figure._widget_data
    assert len(sent) == 3 and sorted(sent[1]["customdata"]) == [0, 1]
    assert browser.figure._widget_layout["title"]["text"] == "minima graph"
    v, dt = oscillating_velocities()
    explorer = SpectrumExplorer(v, dt, WATER, harmonic={"model": water_modes()}, mass_weighted=False)
    explorer._repr_mimebundle_()
    assert np.allclose(explorer.figure._widget_data[0]["y"], explorer.figure.data[0].y)


def test_minima_browser_rejects_an_empty_graph():
    import networkx as nx

    with pytest.raises(ValueError, match="no nodes"):
        MinimaBrowser(nx.Graph(), np.zeros((0, 3, 3)), WATER)
