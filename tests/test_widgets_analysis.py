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
    assert len(sent) == 4 and sorted(sent[1]["customdata"]) == [0, 1]
    assert browser.figure._widget_layout["title"]["text"] == "minima graph"
    v, dt = oscillating_velocities()
    explorer = SpectrumExplorer(v, dt, WATER, harmonic={"model": water_modes()}, mass_weighted=False)
    explorer._repr_mimebundle_()
    assert np.allclose(explorer.figure._widget_data[0]["y"], explorer.figure.data[0].y)


def _banded_minima():
    """tiny_minima with NEB-like bands on the edges 0-1 and 1-2: five images on the straight line, the middle one
    raised (saddles at 80 and 200 meV absolute)."""
    from so3krates_lab.analysis import Band, minima_graph

    db, sequences = tiny_minima()
    bands = {}
    for (u, v), saddle in (((0, 1), 0.08), ((1, 2), 0.20)):
        t = np.linspace(0.0, 1.0, 5)[:, None, None]
        positions = db.geometry(u) + t * (db.geometry(v) - db.geometry(u))
        energies = np.array([db.energies[u], 0.5 * (db.energies[u] + saddle), saddle,
                             0.5 * (db.energies[v] + saddle), db.energies[v]])
        bands[u, v] = Band(positions=positions, energies=energies, climbing=2, converged=True, steps=10,
                           evaluations=33)
    return db, sequences, bands


def test_minima_browser_shows_a_clicked_barrier_path_and_the_disconnectivity_graph(tmp_path):
    """From a saved graph with two bands: a diamond per barrier edge; clicking one shows that edge's band (energy
    profile in meV above the lowest minimum), its climbing image in the second view, and the barriers; the image
    slider moves the view along the band; the tree's leaves are the three joined minima and a click on one
    selects it; an energy window hides the diamonds of edges to hidden minima."""
    from so3krates_lab.analysis import save_minima

    db, sequences, bands = _banded_minima()
    browser = MinimaBrowser.from_file(save_minima(tmp_path / "m", db, sequences, bands=bands))
    diamonds = browser.figure.data[3]
    assert sorted(map(tuple, diamonds.customdata)) == [(0, 1), (1, 2)]
    assert "edge 1-2: saddle 200 meV" in diamonds.text[[tuple(c) for c in diamonds.customdata].index((1, 2))]
    click(diamonds, [tuple(c) for c in diamonds.customdata].index((1, 2)))
    assert browser.selected == 1 and browser.selected_edge == (1, 2)
    assert "edge 1-2" in browser.edge_details.value and "barrier 150 meV from minimum 1" in browser.edge_details.value
    assert "80 meV from minimum 2" in browser.edge_details.value
    path = browser.path_figure.data[0]
    np.testing.assert_allclose(path.y, [50.0, 125.0, 200.0, 160.0, 120.0])
    np.testing.assert_allclose(path.x, bands[1, 2].path_length)
    assert browser.image_slider.value == 2 and browser.image_slider.max == 4
    assert list(browser.path_figure.data[1].y) == [200.0]
    browser.image_slider.value = 4
    assert list(browser.path_figure.data[1].y) == [120.0]
    assert "barrier 150 meV" in browser.details.value  # the neighbour row of minimum 1 names the barrier to 2

    leaves = browser.tree_figure.data[1]
    assert sorted(leaves.customdata) == [0, 1, 2]  # minimum 3 has no barrier: not in the tree
    click(leaves, list(leaves.customdata).index(2))
    assert browser.selected == 2 and browser.selected_edge is None
    assert list(browser.tree_figure.data[2].x) == [leaves.x[list(leaves.customdata).index(2)]]

    browser.energy_window.value = (0.0, 100.0)
    assert [tuple(c) for c in browser.figure.data[3].customdata] == [(0, 1)]
    with pytest.raises(ValueError, match="not an edge with an NEB barrier"):
        browser.show_edge(1, 3)
    with pytest.raises(ValueError, match="not an edge of the graph"):
        MinimaBrowser.from_database(db, sequences, bands={(0, 3): bands[0, 1]})


def test_connectivity_x_keeps_a_chain_in_order_with_either_layout():
    """Both layouts put the nodes of a path graph 0-1-...-9 in order (either direction) along x; the spectral one
    spreads them evenly."""
    import networkx as nx

    from so3krates_lab.widgets.minima import connectivity_x

    chain = nx.path_graph(10)
    for spring_up_to in (300, 5):
        x = connectivity_x(chain, spring_up_to=spring_up_to)
        order = np.argsort([x[k] for k in range(10)])
        assert list(order) in (list(range(10)), list(range(9, -1, -1))), (spring_up_to, x)
    np.testing.assert_allclose(sorted(x.values()), np.linspace(-1, 1, 10))


def test_minima_browser_rejects_an_empty_graph():
    import networkx as nx

    with pytest.raises(ValueError, match="no nodes"):
        MinimaBrowser(nx.Graph(), np.zeros((0, 3, 3)), WATER)
