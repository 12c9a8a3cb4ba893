"""Every tutorial notebook, run top to bottom in JupyterLab in a real (headless Chromium) browser, smoke mode.

Per notebook: Run > Run All Cells, wait for the kernel, then check that no cell failed or printed a traceback,
that every nglview stage drew a picture on a canvas and every plotly figure holds data, and save a full-notebook
screenshot under results/browser/.
The quickstart also has its live MD viewer's Play / Pause / Stop exercised through real clicks; the spectra
notebook has a harmonic line's marker clicked (the mode must play in the view); the minima notebook has a node of
its minima graph clicked.

Timeouts: SO3KRATES_BROWSER_TIMEOUT (seconds per notebook run, default 900).
"""

from __future__ import annotations

import os
import re
import time

import pytest

import labdriver
from labdriver import frame_number, live_button, number_after, status_text, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

NOTEBOOKS = sorted((labdriver.REPO / "notebooks").glob("*.ipynb"))
RUN_TIMEOUT_S = float(os.environ.get("SO3KRATES_BROWSER_TIMEOUT", "900"))
CONTROL_TIMEOUT_S = 90.0  # a click must take effect within this (the run reacts between MD chunks)


def _frame_holds(page, hold_s: float, state: str) -> int:
    """The frame counter now, after checking that it stays there for hold_s seconds (the run is `state`)."""
    held = frame_number(page)
    page.wait_for_timeout(hold_s * 1000)
    after = frame_number(page)
    assert after == held, f"{state} at frame {held} but the counter moved on to {after}"
    return held


def check_live_md_controls(page) -> list[str]:
    """The quickstart's live MD viewer, driven by clicks: its frame counter advances while the run goes on;
    Pause makes the status say "paused" and the counter hold; Play resumes; Stop makes it say "stopped" and the
    counter hold. Returns a log of what was seen (printed by the test)."""
    log = []
    status = status_text(page)
    assert "running" in status, (
        f"the live MD run must still be running when the notebook's cells have finished, status is {status!r} "
        "(a smoke run that ends before the last cell cannot be paused: make it last longer)")

    start = frame_number(page)
    first = wait_until(page, frame_number, lambda n: n > start, CONTROL_TIMEOUT_S, "the frame counter to advance")
    t0 = time.monotonic()  # the first chunk may include compilation; time the next one
    advanced = wait_until(page, frame_number, lambda n: n > first, CONTROL_TIMEOUT_S, "the frame counter to advance")
    interval_s = time.monotonic() - t0
    hold_s = min(max(3.0, 3 * interval_s), 20.0)  # several chunk intervals: long enough to see a frame
    log.append(f"running: frame {start} -> {first} -> {advanced}, {interval_s:.1f} s between updates")

    live_button(page, "Pause").click()
    wait_until(page, status_text, lambda s: "paused" in s, CONTROL_TIMEOUT_S, "status 'paused' after Pause")
    held = _frame_holds(page, hold_s, "paused")
    assert "paused" in status_text(page), f"status left 'paused' by itself: {status_text(page)!r}"
    log.append(f"paused: frame {held} held for {hold_s:.1f} s")

    live_button(page, "Play").click()
    wait_until(page, status_text, lambda s: "running" in s, CONTROL_TIMEOUT_S, "status 'running' after Play")
    resumed = wait_until(page, frame_number, lambda n: n > held, CONTROL_TIMEOUT_S, "frames to advance after Play")
    log.append(f"played: frame {held} -> {resumed}")

    live_button(page, "Stop").click()
    wait_until(page, status_text, lambda s: "stopped" in s, CONTROL_TIMEOUT_S, "status 'stopped' after Stop")
    stopped = _frame_holds(page, hold_s, "stopped")
    log.append(f"stopped: frame {stopped} held for {hold_s:.1f} s; status {status_text(page)!r}")
    return log


def _shown_minimum(page) -> int:
    """N from the first minima browser's details line ("minimum N: ...", N the node shown)."""
    return number_after(page, ".so3k-minimum-details", "minimum")


def _hovered_minimum(page, x: float, y: float) -> int | None:
    """Move the mouse to (x, y) on the page; the node number in plotly's hover label there, if any."""
    match = re.search(r"minimum\s+(\d+):", labdriver.hover_text(page, x, y))
    return int(match.group(1)) if match else None


def _point_centres(widget, at_least: int = 2) -> list[tuple[float, float]]:
    """Page coordinates of the centres of every plotted marker in the plotly graph(s) inside `widget`. A plotly
    widget draws its markers after the kernel has gone idle (and later still on a loaded machine), so this waits,
    up to CONTROL_TIMEOUT_S, until at least `at_least` markers are laid out, then returns what is there."""
    points = widget.locator(".scatterlayer .trace .points path")

    def centres(_page=None) -> list[tuple[float, float]]:
        found = []
        for k in range(points.count()):
            box = points.nth(k).bounding_box()
            if box is not None and box["width"] > 0:
                found.append((box["x"] + box["width"] / 2, box["y"] + box["height"] / 2))
        return found

    try:
        return wait_until(widget.page, centres, lambda found: len(found) >= at_least, CONTROL_TIMEOUT_S,
                          f"at least {at_least} plotted markers")
    except TimeoutError:
        return centres()  # the caller's assertion reports how many there were


def _mode_details(page) -> str:
    return page.locator(".so3k-mode-details").first.inner_text()


def check_spectrum_explorer(page) -> list[str]:
    """The spectra notebook's explorer, driven by a real click: hover the harmonic lines' markers until one shows
    a mode other than the one last animated, click it, and check that the details line names that mode (number
    and wavenumber) and that the structure view moves (a picture taken while the mode plays differs from the one
    before)."""
    details = page.locator(".so3k-mode-details").first
    details.scroll_into_view_if_needed()
    before = _mode_details(page)
    labdriver.nglview_stages(page)  # tags every stage with data-so3k-stage
    explorer = details.locator("xpath=ancestor::div[.//div[contains(@class, 'js-plotly-plot')] "
                               "and .//*[@data-so3k-stage]][1]")  # the widget holding the plot and the view
    stage = int(explorer.locator("[data-so3k-stage]").first.get_attribute("data-so3k-stage"))
    canvas = page.locator(f'[data-so3k-stage="{stage}"] canvas').first
    picture_before = canvas.screenshot()
    shows = lambda text, mode: f"mode {mode[0]} of" in text and f"{mode[1]} cm" in text  # noqa: E731
    target, where = None, None
    for x, y in _point_centres(explorer):
        match = re.search(r"mode\s+(\d+):\s*([\d.]+)\s*cm", labdriver.hover_text(page, x, y))  # "mode 5: 1012.9 cm-1"
        if match and not shows(before, match.groups()):
            target, where = match.groups(), (x, y)
            break
    assert target is not None, f"no harmonic-line marker with a mode other than the shown one ({before!r}) found"
    page.mouse.click(*where)
    wait_until(page, _mode_details, lambda text: shows(text, target), CONTROL_TIMEOUT_S,
               f"the details to name the clicked mode {target[0]} ({target[1]} cm-1)")
    moved = wait_until(page, lambda p: canvas.screenshot() != picture_before, bool, 10.0,
                       "the structure view to move while the clicked mode plays")
    return [f"clicked mode {target[0]} ({target[1]} cm-1); details {_mode_details(page)!r}; view moved: {moved}"]


def check_minima_browser(page) -> list[str]:
    """The minima notebook's graph browser, driven by a real click: hover the graph's nodes until one other than
    the shown minimum is found, click it (plotly takes clicks on its drag layer, so the mouse clicks at the
    node's position), and check that the details line names the clicked node and that the structure view
    changed its picture and still draws a molecule."""
    details = page.locator(".so3k-minimum-details").first
    details.scroll_into_view_if_needed()
    before = _shown_minimum(page)
    labdriver.nglview_stages(page)  # tags every stage with data-so3k-stage
    browser = details.locator("xpath=ancestor::div[.//div[contains(@class, 'js-plotly-plot')] "
                              "and .//*[@data-so3k-stage]][1]")  # the widget holding graph, details and views
    stage = int(browser.locator("[data-so3k-stage]").first.get_attribute("data-so3k-stage"))
    canvas = page.locator(f'[data-so3k-stage="{stage}"] canvas').first
    picture_before = canvas.screenshot()
    centres = _point_centres(browser)
    target, where = None, None
    for x, y in centres:
        node = _hovered_minimum(page, x, y)
        if node is not None and node != before:
            target, where = node, (x, y)
            break
    assert target is not None, (f"no node other than the shown minimum {before} found among {len(centres)} "
                                "plotted points: the smoke exploration must find at least two minima")
    page.mouse.click(*where)
    wait_until(page, _shown_minimum, lambda n: n == target, CONTROL_TIMEOUT_S,
               f"the details to show the clicked minimum {target}")
    page.wait_for_timeout(1000)  # let NGL redraw
    assert labdriver.canvas_is_drawn(page, stage), "the minimum's nglview canvas is blank after the click"
    assert canvas.screenshot() != picture_before, "the structure view did not change after clicking another minimum"
    return [f"clicked minimum {target} (was {before}); details: {details.inner_text()[:120]!r}"]


EXTRA_CHECKS = {"01_quickstart": check_live_md_controls, "04_vibrational_spectra": check_spectrum_explorer,
                "05_minima_exploration": check_minima_browser}


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs_and_renders(notebook, lab, page, console, screenshot_dir):
    t0 = time.monotonic()
    shot = screenshot_dir / f"{notebook.stem}.png"
    try:
        labdriver.open_notebook(page, lab, f"notebooks/{notebook.name}")
        labdriver.run_all_cells(page)
        labdriver.wait_until_run_finished(page, RUN_TIMEOUT_S)
        run_s = time.monotonic() - t0
        extra = EXTRA_CHECKS.get(notebook.stem)
        for line in extra(page) if extra else []:
            print(f"{notebook.stem}: {line}")

        nb = labdriver.notebook_json(page)
        cells = labdriver.cell_seconds(nb)
        print(f"{notebook.stem}: cells ran {sum(cells.values()):.1f} s in the kernel; slowest: "
              + ", ".join(f"cell {k} {t:.1f} s" for k, t in sorted(cells.items(), key=lambda kv: -kv[1])[:4]))
        problems = labdriver.cell_problems(nb) + labdriver.error_outputs(page)
        assert not problems, f"{notebook.name} has errors:\n" + "\n".join(problems)

        stages = labdriver.nglview_stages(page)
        blank = [s for s in stages if not (s["canvas"] and s["width"] > 0 and s["height"] > 0)
                 or not labdriver.canvas_is_drawn(page, s["index"])]
        assert not blank, (f"{notebook.name}: nglview stages without a drawn canvas: {blank} (of {len(stages)}); "
                           f"WebGL lines of the browser console: {console.webgl()[-20:]}")
        figures = labdriver.plotly_figures(page)
        empty = [f for f in figures if f["traces"] == 0 or f["width"] == 0 or f["height"] == 0]
        assert not empty, f"{notebook.name}: plotly figures drawn without data: {empty} (of {len(figures)})"
        print(f"{notebook.stem}: ran in {run_s:.1f} s; {len(stages)} nglview stage(s) drawn, "
              f"{len(figures)} plotly figure(s) with data")
    finally:
        labdriver.save_screenshot(page, shot)
        print(f"{notebook.stem}: screenshot {shot}; browser console: {len(console.lines)} lines, WebGL: "
              f"{console.webgl()[-10:]}, errors: {console.errors()[-10:]}")


def test_checks_catch_an_error_and_a_blank_viewer(lab, page):
    """The checks above can fail: in a scratch notebook with a drawn molecule, an empty nglview widget (a flat
    white canvas), a `molecule_view` inside a VBox beside a label (the layout whose stage used to stay white) and
    a cell that raises, they find exactly the blank stage and the error."""
    import nbformat

    cells = ["import nglview\nfrom ase.build import molecule\nnglview.show_ase(molecule('CH3CH2OH'))",
             "nglview.NGLWidget()",
             "import ipywidgets as w\nfrom so3krates_lab.widgets._common import molecule_view\n"
             "m = molecule('CH3CH2OH')\nw.HBox([w.VBox([w.HTML('<b>a label</b>'), molecule_view(m.numbers, m.positions)])])",
             "1 / 0",
             "print('never reached')"]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, lab.root / "harness_check.ipynb")

    labdriver.open_notebook(page, lab, "harness_check.ipynb")
    labdriver.run_all_cells(page)
    labdriver.wait_until_run_finished(page, 300)

    problems = labdriver.cell_problems(labdriver.notebook_json(page))
    assert any("ZeroDivisionError" in p for p in problems), problems
    assert any("cell 4" in p and "never executed" in p for p in problems), problems
    assert any("Traceback" in e for e in labdriver.error_outputs(page))
    stages = labdriver.nglview_stages(page)
    assert len(stages) == 3, stages
    assert [labdriver.canvas_is_drawn(page, s["index"]) for s in stages] == [True, False, True]
