"""Disconnectivity graphs (Becker and Karplus, J. Chem. Phys. 106, 1495 (1997)): the energy landscape as a tree.

At an energy level L, two minima lie in one superbasin when a path of edges joins them whose saddle energies and
minima all lie below L. Going up in steps, superbasins merge; the tree draws each minimum as a line rising from
its energy until it merges with others, and each superbasin as a line rising from the level where it formed.

    tree = disconnectivity_tree(energies, [(u, v, saddle_energy), ...], n_levels=20)
    tree = tree_from_graph(graph)                  # a minima graph whose edges carry "saddle_energy" (graph_barriers)
    fig = widgets.disconnectivity_figure(tree)     # plotly (drawing lives in widgets)

Energies in eV (absolute or relative; the figure shows them relative to the lowest minimum).
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class DisconnectivityTree:
    """nodes: one dict per node, with "energy" (eV: a minimum's energy for a leaf, the level at which a superbasin
    is drawn otherwise), "members" (sorted minima indices), "parent" (node index or None for a root), "children"
    (node indices), "x" (the horizontal position in the drawing) and "minimum" (the minimum of a leaf, else None).
    levels: the energy levels (eV, ascending) at which superbasins are formed."""

    nodes: list
    levels: np.ndarray

    @property
    def roots(self) -> list[int]:
        """Indices of the nodes without a parent (minima that no path of edges joins end under different roots)."""
        return [k for k, node in enumerate(self.nodes) if node["parent"] is None]

    def leaf_of(self, minimum: int) -> int:
        """The node index of minimum `minimum`'s leaf."""
        for k, node in enumerate(self.nodes):
            if node["minimum"] == minimum:
                return k
        raise KeyError(f"minimum {minimum} is not in the tree")

    def segments(self) -> tuple[list, list]:
        """Line segments of the drawing as (xs, ys) lists with None between segments (plotly's convention):
        each node's vertical line up to its parent's level and each parent's horizontal line over its children."""
        xs, ys = [], []
        for node in self.nodes:
            if node["parent"] is not None:
                top = self.nodes[node["parent"]]["energy"]
                xs += [node["x"], node["x"], None]
                ys += [node["energy"], top, None]
            if node["children"]:
                cx = [self.nodes[c]["x"] for c in node["children"]]
                xs += [min(cx), max(cx), None]
                ys += [node["energy"], node["energy"], None]
        return xs, ys


class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        self.parent[self.find(a)] = self.find(b)


def disconnectivity_tree(energies, edges, levels=None, n_levels: int = 20) -> DisconnectivityTree:
    """The disconnectivity tree of minima with `energies` (M,) eV joined by `edges` [(u, v, saddle energy eV)].

    levels: the energy levels (eV) at which superbasins are formed (default: n_levels evenly spaced from the
    lowest minimum to just above the highest saddle or minimum). A superbasin at level L holds the minima below
    L joined by edges whose saddles lie below L; a minimum joins the tree at the first level above its energy.
    Minima that no edge below the top level reaches stay separate roots.

    Three minima, 0 and 1 joined by a 0.4 eV saddle, 1 and 2 by a 0.9 eV one: they merge into one root at the
    1.0 eV level; without the second edge minimum 2 stays apart.

    >>> tree = disconnectivity_tree([0.0, 0.2, 0.5], [(0, 1, 0.4), (1, 2, 0.9)], levels=[0.3, 0.6, 1.0])
    >>> [(tree.nodes[r]["members"], tree.nodes[r]["energy"]) for r in tree.roots]
    [([0, 1, 2], 1.0)]
    >>> tree = disconnectivity_tree([0.0, 0.2, 0.5], [(0, 1, 0.4)], levels=[0.3, 0.6, 1.0])
    >>> sorted(tree.nodes[r]["members"] for r in tree.roots)
    [[0, 1], [2]]
    """
    e = np.asarray(energies, dtype=np.float64)
    if e.ndim != 1 or len(e) == 0 or not np.all(np.isfinite(e)):
        raise ValueError(f"energies: expected a non-empty (M,) array of finite eV values, got shape {e.shape}")
    edge_list = []
    for u, v, saddle in edges:
        u, v, saddle = int(u), int(v), float(saddle)
        if not (0 <= u < len(e) and 0 <= v < len(e)):
            raise ValueError(f"edge ({u}, {v}) names a minimum outside 0..{len(e) - 1}")
        if not np.isfinite(saddle):
            raise ValueError(f"edge ({u}, {v}) has a non-finite saddle energy")
        edge_list.append((max(saddle, e[u], e[v]), u, v))  # a saddle below a minimum (noise) counts at the minimum
    edge_list.sort()
    if levels is None:
        if n_levels < 2:
            raise ValueError(f"n_levels must be >= 2, got {n_levels}")
        top = max([e.max()] + [s for s, _, _ in edge_list])
        span = max(top - e.min(), 1e-6)
        levels = np.linspace(e.min(), top + 1e-3 * span, n_levels)[1:]
    levels = np.sort(np.asarray(levels, dtype=np.float64))

    nodes = [{"energy": float(e[m]), "members": [m], "parent": None, "children": [], "x": 0.0, "minimum": m}
             for m in range(len(e))]
    current = {m: m for m in range(len(e))}  # minimum -> its topmost node so far
    uf, k_edge = _UnionFind(len(e)), 0
    for level in levels:
        while k_edge < len(edge_list) and edge_list[k_edge][0] < level:
            _, u, v = edge_list[k_edge]
            uf.union(u, v)
            k_edge += 1
        groups: dict = {}
        for m in np.nonzero(e < level)[0]:
            groups.setdefault(uf.find(int(m)), []).append(int(m))
        for members in groups.values():
            tops = sorted({current[m] for m in members})
            if len(tops) == 1:
                continue  # nothing joined since the level below (or a lone minimum): its line continues upward
            k = len(nodes)
            nodes.append({"energy": float(level), "members": sorted(members), "parent": None, "children": tops,
                          "x": 0.0, "minimum": None})
            for t in tops:
                nodes[t]["parent"] = k
            for m in members:
                current[m] = k
    tree = DisconnectivityTree(nodes, levels)
    _place(tree)
    return tree


def _place(tree: DisconnectivityTree) -> None:
    """x positions: leaves in depth-first order (children by their lowest minimum, the lowest in the middle of
    its siblings), each superbasin above the middle of its children; roots side by side, the lowest first."""
    nodes = tree.nodes

    def lowest(k):
        return min(nodes[m]["energy"] for m in nodes[k]["members"]) if nodes[k]["minimum"] is None \
            else nodes[k]["energy"]

    counter = [0.0]

    def visit(k):
        children = sorted(nodes[k]["children"], key=lowest)
        if not children:
            nodes[k]["x"] = counter[0]
            counter[0] += 1.0
            return
        ordered: list = []  # the lowest child in the middle, the others alternately right and left of it
        for i, c in enumerate(children):
            if i % 2:
                ordered.insert(0, c)
            else:
                ordered.append(c)
        nodes[k]["children"] = ordered
        for c in ordered:
            visit(c)
        nodes[k]["x"] = float(np.mean([nodes[c]["x"] for c in ordered]))

    for root in sorted(tree.roots, key=lowest):
        visit(root)


def tree_from_graph(graph, saddle: str = "saddle_energy", levels=None, n_levels: int = 20,
                    joined_only: bool = False) -> DisconnectivityTree:
    """The disconnectivity tree of a minima graph (nodes with "energy" eV) from the edges that carry the attribute
    `saddle` (eV, absolute, as `barriers.graph_barriers` sets it); edges without it are left out. Leaves name the
    graph's own nodes ("minimum": the node, e.g. its index in the minima database) and so do "members".
    joined_only: draw only the minima with at least one such edge (a graph with barriers on a few of its edges
    otherwise shows every other minimum as a separate root)."""
    nodes = sorted(graph.nodes)
    edges = [(u, v, d[saddle]) for u, v, d in graph.edges(data=True) if saddle in d]
    if joined_only:
        nodes = sorted({m for u, v, _ in edges for m in (u, v)})
        if not nodes:
            raise ValueError(f"joined_only: no edge of the graph carries {saddle!r} (compute barriers first)")
    index = {m: k for k, m in enumerate(nodes)}
    tree = disconnectivity_tree([graph.nodes[m]["energy"] for m in nodes],
                                [(index[u], index[v], e) for u, v, e in edges], levels, n_levels)
    for node in tree.nodes:
        node["members"] = [nodes[k] for k in node["members"]]
        if node["minimum"] is not None:
            node["minimum"] = nodes[node["minimum"]]
    return tree
