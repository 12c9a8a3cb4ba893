"""The minima browser at the paper's scale, in JupyterLab in a real (headless Chromium) browser: the shipped
Ac-Ala3-NHMe graph (1,000 minima, NEB bands on its most visited edges), every other edge given a made-up saddle
so that the disconnectivity graph holds every minimum, and the whole widget redrawn, clicked and filtered.

Measured and printed (the issue's figures are 5 s to draw, 1 s for a click; this machine's timings of a quiet run
are in benchmarks/README.md under "Minima browser at scale"): the time from running the cell to both figures
drawn with every marker, from a real click on a node, on a diamond (an edge with a stored band) and on a leaf of
the disconnectivity graph to the details naming it. Asserted with a margin for a loaded CI machine:
SO3KRATES_SCALE_DRAW_S (default 15) and SO3KRATES_SCALE_CLICK_S (default 3). The energy window is dragged
with the mouse and must leave only minima inside it.

SO3KRATES_SCALE_MINIMA: another minima file (analysis.save_minima) to browse instead of the shipped one.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

import labdriver
from labdriver import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

DRAW_LIMIT_S = float(os.environ.get("SO3KRATES_SCALE_DRAW_S", "15"))
CLICK_LIMIT_S = float(os.environ.get("SO3KRATES_SCALE_CLICK_S", "3"))
TITLE = "minima at scale"


def _minima_path() -> Path:
    from so3krates_lab.data import shipped_path

    return Path(os.environ.get("SO3KRATES_SCALE_MINIMA") or shipped_path("minima/ac_ala3_nhme_hop.json").with_suffix(""))


def _cells(path: Path) -> list[str]:
    return [
        # the widget stack imported first (a notebook pays it once), so the timed cell is the browser itself
        "import time\nimport numpy as np\nimport plotly.graph_objects as go\nimport ipywidgets, nglview\n"
        "from so3krates_lab.analysis import load_minima, load_minima_bands\n"
        "from so3krates_lab.widgets import MinimaBrowser\ngo.FigureWidget();",
        f"path = {str(path)!r}\n"
        "db, _, graph, _ = load_minima(path)\nbands = load_minima_bands(path)\n"
        "rng = np.random.default_rng(0)\n"
        "for u, v, d in graph.edges(data=True):  # made up: a saddle on every edge without an NEB barrier\n"
        "    if 'saddle_energy' not in d:\n"
        "        s = max(graph.nodes[u]['energy'], graph.nodes[v]['energy']) + 0.05 + 0.2 * rng.random()\n"
        "        d.update(saddle_energy=s, barrier_forward_eV=s - graph.nodes[u]['energy'],\n"
        "                 barrier_backward_eV=s - graph.nodes[v]['energy'], neb_from=u)\n"
        "print(len(db), 'minima', graph.number_of_edges(), 'edges', len(bands), 'bands')",
        "t0 = time.perf_counter()\n"
        f"browser = MinimaBrowser(graph, db.positions, db.numbers, groups=db.groups, bands=bands, title={TITLE!r})\n"
        "print(f'built in {time.perf_counter() - t0:.2f} s')\nbrowser",
    ]


_POINTS_JS = """([prefix, k]) => {
  const plots = Array.from(document.querySelectorAll('.jp-OutputArea-output .js-plotly-plot'))
    .filter(p => !p.hasAttribute('data-so3k-old'));
  const title = p => { const t = p.layout && p.layout.title; return (t && (t.text || t)) || ''; };
  const gd = plots.find(p => typeof title(p) === 'string' && title(p).startsWith(prefix));
  if (!gd || !gd._fullLayout || !gd.data || !gd.data[k]) return null;
  const svg = gd.querySelector('svg.main-svg');  // the plot's paper (the widget's box may be taller)
  if (!svg) return null;
  const rect = svg.getBoundingClientRect(), fl = gd._fullLayout, tr = gd.data[k];
  let drawn = 0;
  for (const el of gd.querySelectorAll('.scatterlayer .trace')) {
    const d = el.__data__;
    if (d && d[0] && d[0].trace && d[0].trace.index === k) drawn = el.querySelectorAll('.points path').length;
  }
  const n = tr.x ? tr.x.length : 0, points = [];
  for (let i = 0; i < n; i++) {
    points.push({px: rect.left + fl._size.l + fl.xaxis.l2p(tr.x[i]), py: rect.top + fl._size.t + fl.yaxis.l2p(tr.y[i]),
                 c: tr.customdata ? tr.customdata[i] : null, y: tr.y[i]});
  }
  return {drawn, n, points, top: rect.top, bottom: rect.bottom};
}"""


def _points(page, prefix: str, trace: int):
    """The markers of trace `trace` of the (current) plot whose title starts with `prefix`: how many are drawn,
    how many the trace holds, and each one's page position, customdata and y; None before the plot exists."""
    return page.evaluate(_POINTS_JS, [prefix, trace])


def _scroll_to(page, prefix: str) -> None:
    page.evaluate("""(prefix) => { for (const p of document.querySelectorAll('.jp-OutputArea-output .js-plotly-plot')) {
        const t = p.layout && p.layout.title; const s = (t && (t.text || t)) || '';
        if (!p.hasAttribute('data-so3k-old') && typeof s === 'string' && s.startsWith(prefix)) {
          p.scrollIntoView({block: 'center'}); return; } } }""", prefix)
    page.wait_for_timeout(500)


def _isolated(points, others=(), min_px: float = 12.0):
    """The points at least min_px from every other point (of the same list and of `others`)."""
    every = list(points) + list(others)
    return [p for p in points
            if all(q is p or (q["px"] - p["px"]) ** 2 + (q["py"] - p["py"]) ** 2 >= min_px ** 2 for q in every)]


def _text(page, css_class: str) -> str:
    return page.locator(f".{css_class}").first.inner_text()


def _by_isolation(points, others=()):
    """The points, the farthest from every other point (of the same list and of `others`) first."""
    every = list(points) + list(others)

    def gap(p):
        return min(((q["px"] - p["px"]) ** 2 + (q["py"] - p["py"]) ** 2 for q in every if q is not p),
                   default=float("inf"))

    return sorted(points, key=gap, reverse=True)


def _timed_click(page, candidates, label, probe, condition, what: str):
    """Hover the candidate points in turn until plotly's hover label matches label(point) (the point under the
    mouse is the one meant, not a neighbour), then click it: (the point, the seconds from the click until
    probe(page) satisfies condition(value, point))."""
    for point in candidates[:40]:
        if re.search(label(point), labdriver.hover_text(page, point["px"], point["py"])):
            break
    else:
        raise AssertionError(f"none of {len(candidates[:40])} candidate points for {what} showed its own hover label")
    t0 = time.monotonic()
    page.mouse.click(point["px"], point["py"])
    wait_until(page, probe, lambda value: condition(value, point), 60.0, f"{what} ({point['c']})", poll_s=0.05)
    return point, time.monotonic() - t0


def _run_cell(page, index: int) -> None:
    """Run code cell `index` of the open notebook again (JupyterLab's run-cell command on the active cell)."""
    page.evaluate("""(k) => { const panel = window.jupyterapp.shell.currentWidget;
        panel.content.activeCellIndex = k; return window.jupyterapp.commands.execute('notebook:run-cell'); }""", index)


def test_minima_browser_at_scale_draws_clicks_and_filters(lab, page, console, screenshot_dir):
    import nbformat

    from so3krates_lab.analysis import load_minima, load_minima_bands

    path = _minima_path()
    db, _, graph, _ = load_minima(path)
    banded = {tuple(sorted(edge)) for edge in load_minima_bands(path)}
    assert banded, f"{path} has no NEB bands: the test clicks an edge's barrier path"
    assert len(db) >= 1000 or os.environ.get("SO3KRATES_SCALE_MINIMA"), f"the shipped {path} has {len(db)} minima"
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in _cells(path)])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, lab.root / "minima_at_scale.ipynb")
    shot = screenshot_dir / "minima_at_scale.png"
    log = []
    try:
        labdriver.open_notebook(page, lab, "minima_at_scale.ipynb")
        labdriver.run_all_cells(page)
        labdriver.wait_until_run_finished(page, 600)
        problems = labdriver.cell_problems(labdriver.notebook_json(page)) + labdriver.error_outputs(page)
        assert not problems, "\n".join(problems)

        # 1. draw: the browser cell run again, until both figures show every marker
        page.evaluate("() => document.querySelectorAll('.js-plotly-plot').forEach(p => p.setAttribute('data-so3k-old', ''))")
        t0 = time.monotonic()
        _run_cell(page, 2)
        full = lambda r: r is not None and r["n"] >= len(db) and r["drawn"] == r["n"]  # noqa: E731
        wait_until(page, lambda p: _points(p, TITLE, 1), full, 120.0, "every minimum drawn in the graph", 0.05)
        wait_until(page, lambda p: _points(p, "disconnectivity", 1), full, 120.0,
                   "every minimum drawn in the disconnectivity graph", 0.05)
        draw_s = time.monotonic() - t0
        log.append(f"drew {len(db)} minima, {graph.number_of_edges()} edges and the {len(db)}-leaf tree in {draw_s:.2f} s")
        labdriver.wait_until_run_finished(page, 120)

        # 2. a click on a node
        _scroll_to(page, TITLE)
        nodes, diamonds = _points(page, TITLE, 1), _points(page, TITLE, 3)
        shown = labdriver.number_after(page, ".so3k-minimum-details", "minimum")
        inside = lambda r: [p for p in r["points"] if r["top"] + 30 < p["py"] < r["bottom"] - 30]  # noqa: E731
        details = lambda p: _text(p, "so3k-minimum-details")  # noqa: E731
        names = lambda t, point: t.startswith(f"minimum {point['c']}:")  # noqa: E731
        candidates = [p for p in _isolated(inside(nodes), diamonds["points"]) if p["c"] != shown]
        target, node_s = _timed_click(page, candidates, lambda p: rf"minimum {p['c']}:", details, names,
                                      "the details of the clicked minimum")
        log.append(f"node click -> minimum {target['c']} shown in {node_s:.2f} s")

        # 3. a click on the diamond of an edge with a stored band: its path is drawn. A thousand minima crowd the
        # plot, and plotly's hover picks the marker nearest the mouse measured from the marker's edge, so a diamond
        # beside a large node loses to it: zoom in on the diamond first (a drag box, as a user would), then click
        banded_diamonds = _by_isolation([p for p in inside(diamonds) if tuple(sorted(p["c"])) in banded],
                                        nodes["points"] + diamonds["points"])
        assert banded_diamonds, f"none of the {len(banded)} edges with a band has its diamond drawn"
        aim = banded_diamonds[0]
        page.mouse.move(aim["px"] - 12, aim["py"] - 12)
        page.mouse.down()
        page.mouse.move(aim["px"] + 12, aim["py"] + 12, steps=5)
        page.mouse.up()
        page.wait_for_timeout(1000)
        zoomed = [p for p in _points(page, TITLE, 3)["points"] if p["c"] == aim["c"]]
        edge = lambda p: rf"^edge ({p['c'][0]}-{p['c'][1]}|{p['c'][1]}-{p['c'][0]}):"  # noqa: E731
        d, edge_s = _timed_click(page, zoomed, edge,
                                 lambda p: (_text(p, "so3k-edge-details"), _points(p, "barrier path of edge", 0)),
                                 lambda v, p: re.match(edge(p), v[0]) and v[1] is not None and v[1]["n"] >= 3,
                                 "the barrier path of the clicked edge")
        page.mouse.dblclick(d["px"], d["py"] + 40)  # back to the whole graph (plotly's double-click autoscale)
        page.wait_for_timeout(1000)
        log.append(f"diamond click -> barrier path of edge {d['c']} shown in {edge_s:.2f} s "
                   f"({_points(page, 'barrier path of edge', 0)['n']} images)")

        # 4. a click on a leaf of the disconnectivity graph
        _scroll_to(page, "disconnectivity")
        leaves = _points(page, "disconnectivity", 1)
        candidates = _isolated(inside(leaves), min_px=8.0)
        candidates = candidates[len(candidates) // 3:] + candidates[:len(candidates) // 3]
        leaf, leaf_s = _timed_click(page, candidates, lambda p: rf"minimum {p['c']}:", details, names,
                                    "the details of the clicked leaf's minimum")
        log.append(f"leaf click -> minimum {leaf['c']} shown in {leaf_s:.2f} s")

        # 5. the energy window's upper handle dragged to the left: only minima inside it stay drawn
        handle = page.locator(".noUi-handle-upper").first
        handle.scroll_into_view_if_needed()
        track = page.locator(".noUi-handle-upper").first.locator("xpath=ancestor::div[contains(@class, 'noUi-target')][1]")
        box, hb = track.bounding_box(), handle.bounding_box()
        page.mouse.move(hb["x"] + hb["width"] / 2, hb["y"] + hb["height"] / 2)
        page.mouse.down()
        page.mouse.move(box["x"] + 0.4 * box["width"], hb["y"] + hb["height"] / 2, steps=8)
        page.mouse.up()
        before = nodes["n"]
        after = wait_until(page, lambda p: _points(p, TITLE, 1), lambda r: r is not None and 0 < r["n"] < before
                           and r["drawn"] == r["n"], 60.0, "the energy window to hide minima", 0.1)
        readout = page.locator(".noUi-handle-upper").first.locator(
            "xpath=ancestor::div[contains(@class, 'widget-slider')][1]").locator(".widget-readout").first.inner_text()
        high = float(re.findall(r"[-\d.]+", readout)[-1])
        assert max(p["y"] for p in after["points"]) <= high + 1.0, (readout, max(p["y"] for p in after["points"]))
        log.append(f"energy window dragged to {readout!r}: {after['n']} of {before} minima drawn")
        for line in log:
            print(line)
        assert draw_s < DRAW_LIMIT_S, f"drawing took {draw_s:.1f} s (limit {DRAW_LIMIT_S} s)"
        for what, seconds in (("node", node_s), ("diamond", edge_s), ("leaf", leaf_s)):
            assert seconds < CLICK_LIMIT_S, f"a {what} click took {seconds:.2f} s (limit {CLICK_LIMIT_S} s)"
    finally:
        labdriver.save_screenshot(page, shot)
        print(f"screenshot {shot}; browser console errors: {console.errors()[-10:]}")
