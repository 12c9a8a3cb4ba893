"""Browse a minima graph: plotly nodes (y: relative energy, x: connectivity), an energy filter, and nglview views
of the clicked minimum and one of its graph neighbours, with energy, count and RMSD details. Where edges carry
NEB barriers (`analysis.graph_barriers`), a diamond at the middle of such an edge opens its barrier path (the
band's energy profile, and an image slider that moves the second view along the band), and the disconnectivity
graph of the minima those barriers join is drawn below, its leaves clickable too.

    browser = MinimaBrowser.from_exploration(run)          # run: analysis.explore_minima / hop_minima
    browser = MinimaBrowser.from_file("results/minima/explore")   # what analysis.save_minima wrote (+ its bands)
    browser                                                # click a node or a diamond; drag the energy window
    browser.show(3); browser.show_edge(3, 7)               # the same from code

Display only: the graph comes from `analysis.minima_graph` (node attributes energy and relative_energy eV, count,
geometry; edge attribute count, and the barrier attributes of `analysis.edge_attributes`), the RMSDs from
`analysis.symmetric_rmsd`, the tree from `analysis.tree_from_graph`.
"""

from __future__ import annotations

import numpy as np

from ._common import molecule_view, push_figure_state, set_positions, tagged_html

DETAILS_CLASS = "so3k-minimum-details"
EDGE_DETAILS_CLASS = "so3k-edge-details"


def connectivity_x(graph, seed: int = 0, spring_up_to: int = 300) -> dict:
    """A 1-D coordinate per node, so that connected minima lie close. Up to `spring_up_to` nodes: a seeded 2-D
    spring layout (edges weighted by their transition counts) projected on its principal axis. Larger graphs: the
    2-D spectral layout (the Laplacian's lowest non-trivial eigenvectors, a sparse eigensolve) projected the same
    way and replaced by its rank (spread evenly over [-1, 1]); it keeps the order along the graph and costs a
    fraction of a second for thousands of minima, where the spring layout (quadratic in the nodes per
    iteration) took seconds. Both are deterministic."""
    import networkx as nx

    n = graph.number_of_nodes()
    if n == 0:
        return {}
    if n == 1:
        return {node: 0.0 for node in graph.nodes}
    if n > spring_up_to:
        layout = _spectral_layout(graph)
    else:
        layout = nx.spring_layout(graph, dim=2, seed=seed, weight="count")
    nodes = list(layout)
    xy = np.array([layout[node] for node in nodes], float)
    xy -= xy.mean(axis=0)
    x = xy @ np.linalg.svd(xy, full_matrices=False)[2][0]
    if n > spring_up_to:
        x = np.linspace(-1.0, 1.0, n)[np.argsort(np.argsort(x, kind="stable"))]
    return {node: float(c) for node, c in zip(nodes, x)}


def _spectral_layout(graph) -> dict:
    """{node: (2,) coordinates}: the two lowest non-trivial eigenvectors of the graph Laplacian (edges weighted
    by count), from a dense symmetric eigensolver, so the same graph always gets the same layout (the sparse
    solver behind networkx's spectral_layout starts from a random vector)."""
    import networkx as nx

    nodes = list(graph.nodes)
    laplacian = nx.laplacian_matrix(graph, nodelist=nodes, weight="count").toarray().astype(float)
    _, vectors = np.linalg.eigh(laplacian)
    xy = vectors[:, 1:3]
    xy = xy * np.where(xy[np.argmax(np.abs(xy), axis=0), [0, 1]] < 0, -1.0, 1.0)  # a fixed sign per axis
    return {node: xy[k] for k, node in enumerate(nodes)}


def _place(view, numbers, positions):
    """A new view of the structure when there is none yet, else the same view with its atoms moved."""
    if view is None:
        return molecule_view(numbers, positions)
    set_positions(view, positions)
    return view


class MinimaBrowser:
    """The minima graph as a plotly FigureWidget with an nglview of the selected minimum and of a neighbour, and,
    when edges carry NEB barriers, their barrier paths and the disconnectivity graph.

    graph: networkx graph from `analysis.minima_graph` (nodes: minimum ids with energy and relative_energy (eV),
    count and geometry); positions: (M, N, 3) Angstrom indexed by the nodes' `geometry`; numbers: (N,) atomic
    numbers; groups: symmetry-equivalent atom groups for the RMSDs (as `MinimaDatabase.groups`); bands: NEB bands
    {(u, v): analysis.Band} of graph edges (their images Angstrom, energies eV; `analysis.load_minima_bands`).

    Widgets: `figure` (trace 0: edges, trace 1: nodes with customdata = node id, trace 2: the selected node's
    ring, trace 3: diamonds at the middle of the edges with a barrier, customdata = [u, v]), `energy_window`
    (FloatRangeSlider, meV relative to the lowest minimum; nodes outside are hidden, with their edges and
    diamonds), `node_picker` (Dropdown of the shown nodes), `neighbour_picker` (Dropdown of the selected node's
    neighbours), `view` / `neighbour_view` (nglview; the neighbour superposed on the minimum, or the band image
    chosen by `image_slider`), `details` (CSS class so3k-minimum-details, text "minimum N: ...", N the node
    shown). Node hover labels also start with "minimum N:". With barriers also: `path_figure` (the shown edge's
    band: energy in meV above the lowest minimum against the distance along the band in Angstrom), `image_slider`,
    `edge_details` (CSS class so3k-edge-details, text "edge U-V: ..."), `tree_figure` (the disconnectivity graph of
    the minima joined by barriers; trace 1: leaves, customdata = minimum, hover "minimum N: ...").
    """

    def __init__(self, graph, positions, numbers, *, groups=(), bands=None, seed: int = 0,
                 title: str = "minima graph"):
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
        self.bands = {}
        for (u, v), band in (bands or {}).items():
            if not graph.has_edge(u, v):
                raise ValueError(f"a band joins minima {u} and {v}, which are not an edge of the graph")
            self.bands[frozenset((u, v))] = ((u, v), band)
        self.barrier_edges = [(u, v) for u, v, d in graph.edges(data=True) if "saddle_energy" in d]
        self.groups = [np.asarray(g, int) for g in groups]
        self.nodes = sorted(graph.nodes, key=lambda n: graph.nodes[n]["relative_energy"])
        self.energy_meV = {n: 1e3 * graph.nodes[n]["relative_energy"] for n in self.nodes}
        if self.barrier_edges and not all("energy" in graph.nodes[n] for n in self.nodes):
            raise ValueError("edges carry barriers but some nodes lack their energy (eV): build the graph with "
                             "analysis.minima_graph")
        self._lowest_eV = min((graph.nodes[n].get("energy", 0.0) for n in self.nodes))
        self.x = connectivity_x(graph, seed)
        self.visible = list(self.nodes)
        self.selected, self.selected_edge, self._band = self.nodes[0], None, None

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
        # a minimum with dozens of neighbours: the list scrolls inside the box beside the plot
        self.details.layout.width, self.details.layout.max_height, self.details.layout.overflow = "380px", "480px", "auto"
        self.energy_window.observe(lambda change: self.filter(*change["new"]), names="value")
        self.node_picker.observe(lambda change: change["new"] is not None and self.show(change["new"]),
                                 names="value")
        self.neighbour_picker.observe(lambda change: self._show_neighbour(change["new"]), names="value")
        self.figure.data[1].on_click(self._clicked)
        self.figure.data[3].on_click(self._edge_clicked)

        rows = [w.HBox([self.energy_window, self.node_picker]), w.HBox([self.figure, self.details])]
        self.path_figure = self.tree_figure = self.image_slider = self.edge_details = None
        if self.barrier_edges:
            self.path_figure, self.tree_figure = self._make_path_figure(), self._make_tree_figure()
            self.image_slider = w.IntSlider(value=0, min=0, max=0, description="image", continuous_update=True,
                                            layout=w.Layout(width="420px"))
            self.image_slider.observe(lambda change: self._show_image(change["new"]), names="value")
            self.edge_details = tagged_html(EDGE_DETAILS_CLASS, "click a diamond (an edge with an NEB barrier) "
                                                                "to see its barrier path")
            self.edge_details.layout.width = "420px"
            self.tree_figure.data[1].on_click(self._clicked)
        self.filter(*self.energy_window.value)
        self.show(self.selected)
        rows.append(w.HBox([w.VBox([w.HTML("<b>selected minimum</b>"), self.view]),
                            w.VBox([self.neighbour_picker, self.neighbour_view])]))
        if self.barrier_edges:
            rows.append(w.HBox([self.tree_figure,
                                w.VBox([self.path_figure, self.image_slider, self.edge_details])]))
        self.widget = w.VBox(rows)

    @classmethod
    def from_database(cls, db, sequences, **kw) -> "MinimaBrowser":
        """A browser of a `MinimaDatabase` and its sequences ({label: [(frame, minimum)]})."""
        from ..analysis import minima_graph

        return cls(minima_graph(db, sequences), db.positions, db.numbers, groups=db.groups, **kw)

    @classmethod
    def from_exploration(cls, exploration, **kw) -> "MinimaBrowser":
        """A browser of what `analysis.explore_minima` or `analysis.hop_minima` returned."""
        return cls.from_database(exploration.database, exploration.sequences, **kw)

    @classmethod
    def from_file(cls, path, **kw) -> "MinimaBrowser":
        """A browser of what `analysis.save_minima` wrote at `path` (.json and .npz, and .bands.npz if any)."""
        from ..analysis import load_minima, load_minima_bands

        db, _, graph, _ = load_minima(path)
        return cls(graph, db.positions, db.numbers, groups=db.groups, bands=load_minima_bands(path), **kw)

    def _repr_mimebundle_(self, **kwargs):
        for figure in (self.figure, self.path_figure, self.tree_figure):
            if figure is not None:  # the figures as they are now, not as they were created (see push_figure_state)
                push_figure_state(figure)
        return self.widget._repr_mimebundle_(**kwargs)

    # the plots ----------------------------------------------------------------------------------------------
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
        fig.add_trace(go.Scatter(x=[], y=[], mode="markers", name="barriers", hovertemplate="%{text}<extra></extra>",
                                 marker={"symbol": "diamond", "size": 7, "color": "darkorange", "opacity": 0.8,
                                         "line": {"width": 0.5, "color": "black"}}))
        base, scale = (8, 14) if len(self.nodes) <= 100 else (4, 8)  # a thousand minima: smaller, so they stay apart
        self._size = {n: base + scale * np.sqrt(c / counts.max()) for n, c in zip(self.nodes, counts)}
        fig.update_layout(title=title, xaxis={"title": "connectivity (graph layout)", "showticklabels": False},
                          yaxis_title="energy above the lowest minimum (meV)", height=480, width=560,
                          hovermode="closest", showlegend=False, margin={"l": 60, "r": 20, "t": 60, "b": 40})
        return fig

    def _make_path_figure(self):
        import plotly.graph_objects as go

        fig = go.FigureWidget()
        fig.add_trace(go.Scatter(x=[], y=[], mode="lines+markers", name="band",
                                 hovertemplate="image %{customdata}: %{y:.0f} meV<extra></extra>"))
        fig.add_trace(go.Scatter(x=[], y=[], mode="markers", hoverinfo="skip", name="image",
                                 marker={"size": 16, "color": "rgba(0,0,0,0)", "line": {"width": 2, "color": "red"}}))
        fig.update_layout(title="barrier path (click a diamond)", xaxis_title="distance along the band (Å)",
                          yaxis_title="energy above the lowest minimum (meV)", height=320, width=460,
                          showlegend=False, margin={"l": 60, "r": 20, "t": 50, "b": 40})
        return fig

    def _make_tree_figure(self):
        import plotly.graph_objects as go

        from ..analysis import tree_from_graph
        from .plots import disconnectivity_figure

        self.tree = tree_from_graph(self.graph, n_levels=30, joined_only=True)
        leaves = [node for node in self.tree.nodes if node["minimum"] is not None]
        title = f"disconnectivity graph: {len(leaves)} minima joined by {len(self.barrier_edges)} NEB barriers"
        fig = go.FigureWidget(disconnectivity_figure(self.tree, title, reference=self._lowest_eV, unit="meV"))
        fig.add_trace(go.Scatter(x=[], y=[], mode="markers", hoverinfo="skip", name="selected",
                                 marker={"size": 14, "color": "rgba(0,0,0,0)", "line": {"width": 2, "color": "red"}}))
        self._leaf_x = {node["minimum"]: node["x"] for node in leaves}
        fig.update_layout(height=420, width=560, margin={"l": 60, "r": 20, "t": 60, "b": 20})
        return fig

    def _meV(self, energy_eV: float) -> float:
        """An absolute energy (eV) as meV above the lowest minimum."""
        return 1e3 * (energy_eV - self._lowest_eV)

    def _hover(self, n) -> str:
        data = self.graph.nodes[n]
        return (f"minimum {n}: {self.energy_meV[n]:.1f} meV<br>found {data['count']} times<br>"
                f"{self.graph.degree[n]} neighbours")

    def _edge_hover(self, u, v) -> str:
        d = self.graph.edges[u, v]
        a, b = (u, v) if d.get("neb_from", u) == u else (v, u)
        return (f"edge {a}-{b}: saddle {self._meV(d['saddle_energy']):.0f} meV<br>barrier "
                f"{1e3 * d['barrier_forward_eV']:.0f} meV from {a}, {1e3 * d['barrier_backward_eV']:.0f} meV from {b}")

    def filter(self, low_meV: float, high_meV: float) -> None:
        """Show only the minima with relative energy in [low_meV, high_meV] (and the edges between them)."""
        self.visible = [n for n in self.nodes if low_meV - 1e-9 <= self.energy_meV[n] <= high_meV + 1e-9]
        shown = set(self.visible)
        ex, ey = [], []
        for a, b in self.graph.edges:
            if a in shown and b in shown:
                ex += [self.x[a], self.x[b], None]
                ey += [self.energy_meV[a], self.energy_meV[b], None]
        barriers = [(a, b) for a, b in self.barrier_edges if a in shown and b in shown]
        with self.figure.batch_update():
            self.figure.data[0].x, self.figure.data[0].y = ex, ey
            nodes = self.figure.data[1]
            nodes.x = [self.x[n] for n in self.visible]
            nodes.y = [self.energy_meV[n] for n in self.visible]
            nodes.customdata = list(self.visible)
            nodes.text = [self._hover(n) for n in self.visible]
            nodes.marker.size = [self._size[n] for n in self.visible]
            nodes.marker.color = [self.energy_meV[n] for n in self.visible]
            diamonds = self.figure.data[3]
            diamonds.x = [(self.x[a] + self.x[b]) / 2 for a, b in barriers]
            diamonds.y = [(self.energy_meV[a] + self.energy_meV[b]) / 2 for a, b in barriers]
            diamonds.customdata = [[a, b] for a, b in barriers]
            diamonds.text = [self._edge_hover(a, b) for a, b in barriers]
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
        if self.tree_figure is not None:
            ring = self.tree_figure.data[2]
            if self.selected in self._leaf_x:
                ring.x, ring.y = [self._leaf_x[self.selected]], [self.energy_meV[self.selected]]
            else:
                ring.x, ring.y = [], []

    # selection ----------------------------------------------------------------------------------------------
    def _clicked(self, trace, points, state) -> None:
        if points.point_inds:
            self.show(int(trace.customdata[points.point_inds[0]]))

    def _edge_clicked(self, trace, points, state) -> None:
        if points.point_inds:
            self.show_edge(*(int(k) for k in trace.customdata[points.point_inds[0]]))

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
        self.selected, self.selected_edge = node, None
        self.view = _place(self.view, self.numbers, self._geometry(node))
        data = self.graph.nodes[node]
        rmsd = self.neighbour_rmsd(node)
        order = sorted(rmsd, key=lambda m: -self.graph.edges[node, m].get("count", 1))

        def row(m):
            d = self.graph.edges[node, m]
            barrier = ""
            if "saddle_energy" in d:
                barrier = f", barrier {1e3 * (d['saddle_energy'] - data['energy']):.0f} meV"
            return (f"<li>minimum {m}: {self.energy_meV[m]:.1f} meV, RMSD {rmsd[m]:.2f} &Aring;, "
                    f"{d.get('count', 1)} transitions{barrier}</li>")

        rows = "".join(row(m) for m in order)
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

    def show_edge(self, u, v) -> None:
        """Select the edge u-v, which must carry a barrier: its first minimum (the band's start) in the view, the
        band's energy profile in `path_figure`, its climbing image (the saddle estimate) in the second view
        (`image_slider` moves along the band), the barriers in `edge_details`."""
        if not self.graph.has_edge(u, v) or "saddle_energy" not in self.graph.edges[u, v]:
            raise ValueError(f"{u}-{v} is not an edge with an NEB barrier (edges with one: "
                             f"{self.barrier_edges[:10]}...)")
        d = self.graph.edges[u, v]
        a, b = (u, v) if d.get("neb_from", u) == u else (v, u)
        self.show(a)
        if b in dict(self.neighbour_picker.options).values():
            self.neighbour_picker.value = b
        self.selected_edge = (a, b)
        stored = self.bands.get(frozenset((a, b)))
        summary = (f"<b>edge {a}-{b}</b>: saddle {self._meV(d['saddle_energy']):.0f} meV above the lowest minimum; "
                   f"barrier {1e3 * d['barrier_forward_eV']:.0f} meV from minimum {a}, "
                   f"{1e3 * d['barrier_backward_eV']:.0f} meV from minimum {b}; NEB "
                   f"{'converged' if d.get('neb_converged') else 'not converged'} in {d.get('neb_steps', '?')} steps")
        with self.path_figure.batch_update():
            band_trace, image_trace = self.path_figure.data
            if stored is None:
                self._band = None
                band_trace.x = band_trace.y = band_trace.customdata = []
                image_trace.x = image_trace.y = []
                self.edge_details.value = summary + " (its band was not stored)"
                self.path_figure.layout.title = f"barrier path of edge {a}-{b}: not stored"
                return
            (start, _), band = stored
            self._band = band if start == a else _reversed(band)
            band_trace.x = list(self._band.path_length)
            band_trace.y = [self._meV(e) for e in self._band.energies]
            band_trace.customdata = list(range(len(self._band.energies)))
            self.path_figure.layout.title = f"barrier path of edge {a}-{b}"
        self.edge_details.value = summary
        climbing = int(np.argmax(self._band.energies))
        self.image_slider.max = len(self._band.energies) - 1
        if self.image_slider.value == climbing:
            self._show_image(climbing)
        else:
            self.image_slider.value = climbing  # its observer shows the image

    def _show_image(self, k) -> None:
        """Band image k of the shown edge in the second view (the band lies in its first minimum's frame)."""
        if self.selected_edge is None or getattr(self, "_band", None) is None:
            return
        k = int(min(max(k, 0), len(self._band.positions) - 1))
        self.neighbour_view = _place(self.neighbour_view, self.numbers, self._band.positions[k])
        trace = self.path_figure.data[1]
        trace.x, trace.y = [float(self._band.path_length[k])], [self._meV(float(self._band.energies[k]))]


def _reversed(band):
    """The band run backwards (from its last end point to its first)."""
    import dataclasses

    m = len(band.positions)
    return dataclasses.replace(band, positions=band.positions[::-1].copy(), energies=band.energies[::-1].copy(),
                               climbing=-1 if band.climbing < 0 else m - 1 - band.climbing)
