"""Disconnectivity trees (analysis.disconnectivity) on hand-made landscapes with known superbasins."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from so3krates_lab.analysis import disconnectivity_tree, tree_from_graph
from so3krates_lab.widgets import disconnectivity_figure


def _members(tree, k):
    return set(tree.nodes[k]["members"])


def test_two_funnels_merge_into_their_own_superbasins_before_they_join():
    """Funnel 1: minima 0 (0.0 eV) and 1 (0.1) joined at 0.25; funnel 2: 2 (0.05) and 3 (0.12) joined at 0.35;
    the funnels join at 0.85 eV. Levels every 0.1 eV: the funnels form at 0.3 and 0.4, the root at 0.9."""
    tree = disconnectivity_tree([0.0, 0.1, 0.05, 0.12], [(0, 1, 0.25), (2, 3, 0.35), (1, 3, 0.85)],
                                levels=np.arange(0.1, 1.01, 0.1))
    (root,) = tree.roots
    assert _members(tree, root) == {0, 1, 2, 3} and tree.nodes[root]["energy"] == pytest.approx(0.9)
    funnels = sorted((sorted(_members(tree, c)), tree.nodes[c]["energy"]) for c in tree.nodes[root]["children"])
    assert [f[0] for f in funnels] == [[0, 1], [2, 3]]
    assert [f[1] for f in funnels] == pytest.approx([0.3, 0.4])
    for m in range(4):  # every minimum hangs from its funnel
        leaf = tree.leaf_of(m)
        assert tree.nodes[leaf]["energy"] == [0.0, 0.1, 0.05, 0.12][m]
        assert m in _members(tree, tree.nodes[leaf]["parent"]) and tree.nodes[leaf]["parent"] != root
    # the drawing: one vertical line per non-root node, one horizontal line per superbasin
    xs, ys = tree.segments()
    assert xs.count(None) == (len(tree.nodes) - 1) + 3
    # siblings never overlap: leaves get distinct x, superbasins sit between their children
    leaves = [tree.leaf_of(m) for m in range(4)]
    assert len({tree.nodes[k]["x"] for k in leaves}) == 4
    for node in tree.nodes:
        if node["children"]:
            cx = [tree.nodes[c]["x"] for c in node["children"]]
            assert min(cx) <= node["x"] <= max(cx)


def test_a_minimum_without_edges_stays_its_own_root_and_a_saddle_below_a_minimum_counts_at_it():
    tree = disconnectivity_tree([0.0, 0.2, 0.5], [(0, 1, 0.1)], n_levels=6)  # saddle 0.1 below minimum 1 (noise)
    roots = sorted(sorted(_members(tree, r)) for r in tree.roots)
    assert roots == [[0, 1], [2]]
    joined = [r for r in tree.roots if _members(tree, r) == {0, 1}][0]
    assert tree.nodes[joined]["energy"] > 0.2  # formed only once minimum 1 itself lies below the level


def test_tree_from_graph_uses_the_edges_that_carry_barriers_and_draws_a_figure():
    graph = nx.Graph()
    for k, e in enumerate([-10.0, -9.9, -9.95]):
        graph.add_node(k, energy=e)
    graph.add_edge(0, 1, saddle_energy=-9.7)
    graph.add_edge(1, 2)  # no barrier computed: left out
    tree = tree_from_graph(graph, n_levels=10)
    assert sorted(sorted(_members(tree, r)) for r in tree.roots) == [[0, 1], [2]]
    fig = disconnectivity_figure(tree)
    assert len(fig.data) == 2 and sorted(fig.data[1].customdata) == [0, 1, 2]
    assert min(fig.data[1].y) == pytest.approx(0.0)  # relative to the lowest minimum
    in_meV = disconnectivity_figure(tree, unit="meV")
    np.testing.assert_allclose(in_meV.data[1].y, 1e3 * np.asarray(fig.data[1].y))
    with pytest.raises(ValueError, match="unit"):
        disconnectivity_figure(tree, unit="kJ/mol")


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="non-empty"):
        disconnectivity_tree([], [])
    with pytest.raises(ValueError, match="outside"):
        disconnectivity_tree([0.0, 1.0], [(0, 5, 2.0)])
    with pytest.raises(ValueError, match="non-finite saddle"):
        disconnectivity_tree([0.0, 1.0], [(0, 1, np.nan)])
    graph = nx.Graph()
    graph.add_node(3, energy=0.0)
    with pytest.raises(ValueError, match="no edge of the graph carries 'saddle_energy'"):
        tree_from_graph(graph, joined_only=True)


def test_tree_from_graph_keeps_the_graphs_own_labels_and_can_leave_out_minima_without_barriers():
    """Nodes 10, 20, 30, 40: 10-20 and 20-30 carry barriers, 40 has none. The tree's leaves and members name the
    nodes; with joined_only, minimum 40 is not drawn; both trees agree on the superbasins of 10, 20, 30."""
    graph = nx.Graph()
    for m, e in [(10, -5.0), (20, -4.9), (30, -4.95), (40, -5.2)]:
        graph.add_node(m, energy=e)
    graph.add_edge(10, 20, saddle_energy=-4.6)
    graph.add_edge(20, 30, saddle_energy=-4.7)
    graph.add_edge(30, 40)
    full, joined = tree_from_graph(graph, n_levels=12), tree_from_graph(graph, n_levels=12, joined_only=True)
    assert sorted(n["minimum"] for n in full.nodes if n["minimum"] is not None) == [10, 20, 30, 40]
    assert sorted(n["minimum"] for n in joined.nodes if n["minimum"] is not None) == [10, 20, 30]
    assert sorted(sorted(_members(full, r)) for r in full.roots) == [[10, 20, 30], [40]]
    assert [sorted(_members(joined, r)) for r in joined.roots] == [[10, 20, 30]]
    assert full.nodes[full.leaf_of(30)]["energy"] == pytest.approx(-4.95)
