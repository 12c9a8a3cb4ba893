"""Browse a minima graph: plotly nodes (y: relative energy, x: connectivity), an energy filter, and nglview views
of the clicked minimum and one of its graph neighbours, with energy, count and RMSD details.

    browser = MinimaBrowser.from_exploration(run)          # run: analysis.explore_minima(...)
    browser = MinimaBrowser.from_file("results/minima/explore")   # what analysis.save_minima wrote
    browser                                                # click a node; drag the energy window
    browser.show(3)                                        # the same from code

Display only: the graph comes from `analysis.minima_graph` (node attributes relative_energy eV, count,
geometry; edge attribute count), the RMSDs from `analysis.symmetric_rmsd`.
"""

from __future__ import annotations

import numpy as np

from ._common import molecule_view, push_figure_state, set_positions, tagged_html

DETAILS_CLASS = "so3k-minimum-details"


def connectivity_x(graph, seed: int = 0) -> dict:
    """A 1-D coordinate per node: a seeded 2-D spring layout of the graph (edges weighted by their transition
    counts, so connected minima lie close) projected on its principal axis."""
    import networkx as nx

    if graph.number_of_nodes() == 0:
        return {}
    if graph.number_of_nodes() == 1:
        return {n: 0.0 for n in graph.nodes}
    layout = nx.spring_layout(graph, dim=2, seed=seed, weight="count")
    nodes = list(layout)
    xy = np.array([layout[n] for n in nodes], float)
    xy -= xy.mean(axis=0)
    axis = np.linalg.svd(xy, full_matrices=False)[2][0]
    return {n: float(c) for n, c in zip(nodes, xy @ axis)}


def _place(view, numbers, positions):
    """A new view of the structure when there is none yet, else the same view with its atoms moved."""
    if view is None:
        return molecule_view(numbers, positions)
    set_positions(view, positions)
    return view


class MinimaBrowser:
    """The minima graph as a plotly FigureWidget with an nglview of the selected minimum and of a neighbour.

    graph: networkx graph from `analysis.minima_graph` (nodes: minimum ids with relative_energy (eV), count and
    geometry); positions: (M, N, 3) Angstrom indexed by the nodes' `geometry`; numbers: (N,) atomic numbers;
    groups: symmetry-equivalent atom groups for the RMSDs (as `MinimaDatabase.groups`).

    Widgets: `figure` (trace 0: edges, trace 1: nodes with customdata = node id, trace 2: the selected node's
    ring), `energy_window` (FloatRangeSlider, meV relative to the lowest minimum; nodes outside are hidden),
    `node_picker` (Dropdown of the shown nodes), `neighbour_picker` (Dropdown of the selected node's
    neighbours), `view` / `neighbour_view` (nglview; the neighbour superposed on the minimum), `details`
    (CSS class so3k-minimum-details, text "minimum N: ...", N the node shown). Node hover labels also start
    with "minimum N:".
    """

    def __init__(self, graph, positions, numbers, *, groups=(), seed: int = 0, title: str = "minima graph"):
        import ipywidgets as w

        if graph.number_of_nodes() == 0:
            raise ValueError("the minima graph has no nodes: nothing to browse")
        self.graph, self.numbers = graph, np.asarray(numbers, int)
        self.positions = np.asarray(positions, float)
        if self.positions.ndim != 3 or self.positions.shape[1:] != (len(self.numbers), 3):
            raise ValueError(f"positions must be (M, {len(self.numbers)}, 3) Angstrom, got {self.positions.shape}")
        for node, data in graph.nodes(data=True):
            if not 0 <= data.get("geometry", -1) < len(self.positions) or "relative_energy" not in data:
                raise ValueError(f"node {node} lacks relative_energy or a geometry index into the "
                                 f"{len(self.positions)} positions (build the graph with analysis.minima_graph)")
        self.groups = [np.asarray(g, int) for g in groups]
        self.nodes = sorted(graph.nodes, key=lambda n: graph.nodes[n]["relative_energy"])
        self.energy_meV = {n: 1e3 * graph.nodes[n]["relative_energy"] for n in self.nodes}
        self.x = connectivity_x(graph, seed)
        self.visible = list(self.nodes)
        self.selected = self.nodes[0]

        self.figure = self._make_figure(title)
        top = max(self.energy_meV.values())
        self.energy_window = w.FloatRangeSlider(value=(0.0, top), min=0.0, max=max(top, 1e-3),
                                                step=max(top, 1.0) / 200,
                                                description="E (meV)", continuous_update=False, readout_format=".0f",
                                                layout=w.Layout(width="420px"))
        self.node_picker = w.Dropdown(description="minimum")
        self.neighbour_picker = w.Dropdown(description="neighbour")
        # The views are made by the first show(), at the selected minimum's geometry (molecule_view sizes their
        # stages; a stage sized by its surrounding box at first draw stayed white).
        self.view = self.neighbour_view = None
        self.details = tagged_html(DETAILS_CLASS)
        self.details.layout.width = "380px"
        self.energy_window.observe(lambda change: self.filter(*change["new"]), names="value")
        self.node_picker.observe(lambda change: change["new"] is not None and self.show(change["new"]),
                                 names="value")
        self.neighbour_picker.observe(lambda change: self._show_neighbour(change["new"]), names="value")
        self.figure.data[1].on_click(self._clicked)
        self.filter(*self.energy_window.value)
        self.show(self.selected)
        views = w.HBox([w.VBox([w.HTML("<b>selected minimum</b>"), self.view]),
                        w.VBox([self.neighbour_picker, self.neighbour_view])])
        self.widget = w.VBox([w.HBox([self.energy_window, self.node_picker]), w.HBox([self.figure, self.details]),
                              views])

    @classmethod
    def from_database(cls, db, sequences, **kw) -> "MinimaBrowser":
        """A browser of a `MinimaDatabase` and its sequences ({label: [(frame, minimum)]})."""
        from ..analysis import minima_graph

        return cls(minima_graph(db, sequences), db.positions, db.numbers, groups=db.groups, **kw)

    @classmethod
    def from_exploration(cls, exploration, **kw) -> "MinimaBrowser":
        """A browser of what `analysis.explore_minima` returned."""
        return cls.from_database(exploration.database, exploration.sequences, **kw)

    @classmethod
    def from_file(cls, path, **kw) -> "MinimaBrowser":
        """A browser of what `analysis.save_minima` wrote at `path` (.json and .npz)."""
        from ..analysis import load_minima

        db, _, graph, _ = load_minima(path)
        return cls(graph, db.positions, db.numbers, groups=db.groups, **kw)

    def _repr_mimebundle_(self, **kwargs):
        push_figure_state(self.figure)  # the figure as it is now, not as it was created (see push_figure_state)
        return self.widget._repr_mimebundle_(**kwargs)

    # the plot -----------------------------------------------------------------------------------------------
    def _make_figure(self, title: str):
        import plotly.graph_objects as go

        fig = go.FigureWidget()
        fig.add_trace(go.Scatter(x=[], y=[], mode="lines", line={"color": "lightgray", "width": 1},
                                 hoverinfo="skip", name="transitions"))
        counts = np.array([self.graph.nodes[n]["count"] for n in self.nodes], float)
        fig.add_trace(go.Scatter(
            x=[], y=[], mode="markers", name="minima",
            marker={"size": [], "color": [], "colorscale": "Viridis", "cmin": 0.0,
                    "cmax": max(max(self.energy_meV.values()), 1e-3), "line": {"width": 0.5, "color": "black"},
                    "colorbar": {"title": {"text": "meV"}}},
            hovertemplate="%{text}<extra></extra>"))
        fig.add_trace(go.Scatter(x=[], y=[], mode="markers", hoverinfo="skip", name="selected",
                                 marker={"size": 22, "color": "rgba(0,0,0,0)", "line": {"width": 3, "color": "red"}}))
        self._size = {n: 8 + 14 * np.sqrt(c / counts.max()) for n, c in zip(self.nodes, counts)}
        fig.update_layout(title=title, xaxis={"title": "connectivity (spring layout)", "showticklabels": False},
                          yaxis_title="energy above the lowest minimum (meV)", height=480, width=560,
                          hovermode="closest", showlegend=False, margin={"l": 60, "r": 20, "t": 60, "b": 40})
        return fig

    def _hover(self, n) -> str:
        data = self.graph.nodes[n]
        return (f"minimum {n}: {self.energy_meV[n]:.1f} meV<br>found {data['count']} times<br>"
                f"{self.graph.degree[n]} neighbours")

    def filter(self, low_meV: float, high_meV: float) -> None:
        """Show only the minima with relative energy in [low_meV, high_meV] (and the edges between them)."""
        self.visible = [n for n in self.nodes if low_meV - 1e-9 <= self.energy_meV[n] <= high_meV + 1e-9]
        shown = set(self.visible)
        ex, ey = [], []
        for a, b in self.graph.edges:
            if a in shown and b in shown:
                ex += [self.x[a], self.x[b], None]
                ey += [self.energy_meV[a], self.energy_meV[b], None]
        with self.figure.batch_update():
            self.figure.data[0].x, self.figure.data[0].y = ex, ey
            nodes = self.figure.data[1]
            nodes.x = [self.x[n] for n in self.visible]
            nodes.y = [self.energy_meV[n] for n in self.visible]
            nodes.customdata = list(self.visible)
            nodes.text = [self._hover(n) for n in self.visible]
            nodes.marker.size = [self._size[n] for n in self.visible]
            nodes.marker.color = [self.energy_meV[n] for n in self.visible]
        self.node_picker.options = [(f"minimum {n} ({self.energy_meV[n]:.0f} meV)", n) for n in self.visible]
        if self.selected in shown:
            self.node_picker.value = self.selected
        self._ring()

    def _ring(self) -> None:
        ring = self.figure.data[2]
        if self.selected in set(self.visible):
            ring.x, ring.y = [self.x[self.selected]], [self.energy_meV[self.selected]]
        else:
            ring.x, ring.y = [], []

    # selection ----------------------------------------------------------------------------------------------
    def _clicked(self, trace, points, state) -> None:
        if points.point_inds:
            self.show(int(trace.customdata[points.point_inds[0]]))

    def _geometry(self, node) -> np.ndarray:
        return self.positions[self.graph.nodes[node]["geometry"]]

    def neighbour_rmsd(self, node) -> dict:
        """{neighbour: RMSD (Angstrom) after superposition and permutation of equivalent atoms} for a node."""
        from ..analysis import symmetric_rmsd

        return {m: float(symmetric_rmsd(self._geometry(node), self._geometry(m), self.groups)[0])
                for m in self.graph.neighbors(node)}

    def show(self, node) -> None:
        """Select a node: its structure in the view, its neighbours in the picker, details in the HTML line."""
        if node not in self.graph:
            raise ValueError(f"minimum {node} is not in the graph (nodes {self.nodes[:10]}...)")
        self.selected = node
        self.view = _place(self.view, self.numbers, self._geometry(node))
        data = self.graph.nodes[node]
        rmsd = self.neighbour_rmsd(node)
        order = sorted(rmsd, key=lambda m: -self.graph.edges[node, m].get("count", 1))
        rows = "".join(f"<li>minimum {m}: {self.energy_meV[m]:.1f} meV, RMSD {rmsd[m]:.2f} &Aring;, "
                       f"{self.graph.edges[node, m].get('count', 1)} transitions</li>" for m in order)
        self.details.value = (f"<b>minimum {node}</b>: {self.energy_meV[node]:.1f} meV above the lowest "
                              f"(E = {data.get('energy', float('nan')):.4f} eV), found {data['count']} times, "
                              f"{len(order)} neighbours" + (f"<ul>{rows}</ul>" if rows else ""))
        self.neighbour_picker.options = [(f"minimum {m} (RMSD {rmsd[m]:.2f} \u00c5)", m) for m in order]
        self.neighbour_picker.value = order[0] if order else None
        self._show_neighbour(self.neighbour_picker.value)
        if node in set(self.visible) and self.node_picker.value != node:
            self.node_picker.value = node
        self._ring()

    def _show_neighbour(self, neighbour) -> None:
        """The neighbour superposed (Kabsch, equivalent atoms permuted) on the selected minimum."""
        from ..analysis import kabsch, symmetric_rmsd

        reference = self._geometry(self.selected)
        if neighbour is None:
            self.neighbour_view = _place(self.neighbour_view, self.numbers, reference)
            return
        _, permutation = symmetric_rmsd(reference, self._geometry(neighbour), self.groups)
        _, _, aligned = kabsch(reference, self._geometry(neighbour)[permutation])
        self.neighbour_view = _place(self.neighbour_view, self.numbers, aligned)
