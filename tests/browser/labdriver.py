"""Drive JupyterLab in Debian's headless Chromium (Playwright, sync API) for the browser tests.

Two halves: a JupyterLab server started in its own process group on 127.0.0.1 (`start_lab`, `LabServer.stop`),
and page helpers that open a notebook, run all cells through the Run menu, wait for the kernel, and inspect what
the browser actually drew (`nglview_stages`, `canvas_is_drawn`, `error_outputs`).

Why a real browser: headless execution (nbclient) passes even when a widget cannot render; only a browser shows
whether nglview drew a molecule and whether button clicks reach the kernel.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("SO3KRATES_CHROMIUM", "/usr/bin/chromium"))
# Debian's Chromium as root in a container: no sandbox, no GPU (WebGL falls back to software), no network
# side-traffic. Never `playwright install`: it downloads a browser.
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1400, "height": 900}

# JupyterLab user settings for a test server: every cell attached to the DOM (the default
# "contentVisibility" windowing skips painting cells out of view), cell execution times recorded in the cell
# metadata (`cell_seconds`), no autosave, no news pop-up.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none", "recordTiming": True},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                        "checkForUpdates": False},
}


def missing_requirements(lab_python: str = sys.executable) -> str | None:
    """Why the browser tests cannot run here (a sentence), or None when Chromium and Playwright are present
    and `lab_python` (the interpreter that will run JupyterLab and the kernels) has JupyterLab and ipykernel."""
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        return (f"Chromium not found at {CHROMIUM} (Debian: apt-get install -y chromium; "
                "or set SO3KRATES_CHROMIUM)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        return f"Python package playwright is not installed ({exc}); pip install -e '.[dev]'"
    check = subprocess.run([lab_python, "-c", "import jupyterlab, ipykernel"], capture_output=True, text=True)
    if check.returncode != 0:
        return (f"{lab_python} cannot import jupyterlab and ipykernel ({check.stderr.strip().splitlines()[-1:]}); "
                "pip install -e '.[dev]'")
    return None


def prepare_root(dest: Path, repo: Path = REPO) -> Path:
    """A fresh server root at `dest`: a copy of `repo/notebooks` (so running them never touches the checkout's
    files) and an empty `results/`. No `data/` beside it: the notebooks find the shipped data and models through
    the package (`so3krates_lab.data.shipped_path`, `so3krates_lab.pretrained`), and write their results below
    their own folder."""
    dest.mkdir(parents=True, exist_ok=True)
    if (repo / "notebooks").is_dir():
        shutil.copytree(repo / "notebooks", dest / "notebooks",
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    (dest / "results").mkdir(exist_ok=True)
    return dest


def _write_settings(settings_dir: Path) -> None:
    for rel, values in LAB_SETTINGS.items():
        path = settings_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


@dataclass
class LabServer:
    """A running JupyterLab: its base `url`, server `root`, process (own process group) and log file."""

    url: str
    root: Path
    process: subprocess.Popen
    log: Path
    sessions_closed: list = field(default_factory=list)

    def api(self, path: str, method: str = "GET"):
        """JSON from the server's REST API (no token and no XSRF check: the server is bound to 127.0.0.1 and
        only the test's own browser visits it)."""
        request = urllib.request.Request(self.url + path, method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        """Delete every session (and its kernel), so a background MD thread stops using the CPU."""
        for session in self.api("/api/sessions"):
            self.api(f"/api/sessions/{session['id']}", method="DELETE")
            self.sessions_closed.append(session["path"])

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self, timeout_s: float = 20.0) -> None:
        """Stop the server and its kernels: SIGTERM to the process group, SIGKILL if it has not exited."""
        if self.process.poll() is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(timeout_s)
                return
            except subprocess.TimeoutExpired:
                continue


def start_lab(root: Path, workdir: Path, *, python: str = sys.executable, env_extra: dict | None = None,
              timeout_s: float = 180.0, attempts: int = 3) -> LabServer:
    """Start JupyterLab on 127.0.0.1 (a free port, no token) serving `root`, and wait until it answers.

    workdir: a scratch folder for the server's settings, runtime files and log. The server (and so every kernel)
    gets `env_extra` in its environment and PYTHONPATH starting with the repository, so notebooks import this
    checkout's package. Each attempt uses a new port; a port taken between choosing and binding costs a retry.
    """
    settings = workdir / "lab-settings"
    _write_settings(settings)
    env = dict(os.environ)
    env.update({
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(workdir / "lab-workspaces"),
        "JUPYTER_RUNTIME_DIR": str(workdir / "runtime"),
        "JUPYTER_CONFIG_DIR": str(workdir / "config"),   # ignore ~/.jupyter
        "JUPYTER_DATA_DIR": str(workdir / "data"),       # ignore user kernelspecs: the kernel is this Python
        "PYTHONPATH": os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
    })
    env.update(env_extra or {})
    from so3krates_lab.distributed import free_local_port

    errors = []
    for attempt in range(attempts):
        port = free_local_port()
        log = workdir / f"jupyterlab-{attempt}.log"
        command = [python, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip", "127.0.0.1",
                   "--port", str(port), "--ServerApp.port_retries=0", "--ServerApp.token=",
                   "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True", f"--ServerApp.root_dir={root}",
                   "--LabApp.expose_app_in_browser=True"]
        with open(log, "w") as fh:
            process = subprocess.Popen(command, cwd=root, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        server = LabServer(f"http://127.0.0.1:{port}", root, process, log)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and process.poll() is None:
            try:
                server.api("/api/status")
                return server
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        server.stop()
        errors.append(f"port {port}: exit code {process.returncode}\n{server.log_tail()}")
    raise RuntimeError(f"JupyterLab did not start in {attempts} attempts:\n" + "\n---\n".join(errors))


# ------------------------------------------------------------------------------------------------------------
# page helpers

class ConsoleLog:
    """The browser console of a page, kept from the moment it is attached: every message and uncaught page
    error as "TYPE: text" lines. `webgl()` picks the lines about WebGL (context creation, loss, the
    per-page context limit), the first thing to read when an nglview canvas stays blank."""

    _WEBGL = re.compile(r"webgl|context lost|contextlost|too many active|gl_|swiftshader", re.IGNORECASE)

    def __init__(self, page):
        self.lines: list[str] = []
        page.on("console", lambda message: self.lines.append(f"{message.type}: {message.text}"))
        page.on("pageerror", lambda error: self.lines.append(f"pageerror: {error}"))

    def webgl(self) -> list[str]:
        return [line for line in self.lines if self._WEBGL.search(line)]

    def errors(self) -> list[str]:
        return [line for line in self.lines if line.startswith(("error:", "pageerror:"))]


def launch_chromium(playwright):
    """Debian's Chromium through Playwright, headless, with CHROMIUM_ARGS."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)


_STATE_JS = """() => {
  const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const ok = panel && panel.context && panel.sessionContext && panel.content;
  const prompts = ok ? Array.from(panel.node.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt'))
                           .map(e => e.textContent.trim()) : [];
  return {ready: ok ? panel.context.isReady : false,
          kernel: ok ? panel.sessionContext.kernelDisplayStatus : null,
          cells: ok && panel.content.model ? panel.content.model.cells.length : 0,
          cells_shown: ok ? panel.content.widgets.length : 0,
          prompts: prompts};
}"""


def notebook_state(page) -> dict:
    """The current notebook as JupyterLab sees it: document loaded (`ready`), kernel status ("idle", "busy",
    "starting", ...), number of cells in the model and attached to the page, and every code cell's prompt."""
    return page.evaluate(_STATE_JS)


def open_notebook(page, server: LabServer, relpath: str, timeout_s: float = 120.0) -> None:
    """Open /lab/tree/`relpath` alone and wait until every cell is on the page and its kernel is idle.

    `?reset` discards the saved workspace, so notebooks opened by earlier tests are not restored as tabs
    (with kernels of their own)."""
    page.goto(f"{server.url}/lab/tree/{relpath}?reset")
    page.wait_for_selector(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell", timeout=timeout_s * 1000)
    wait_for(page, lambda s: s["ready"] and s["kernel"] == "idle" and s["cells"] == s["cells_shown"] > 0,
             timeout_s, "the notebook to load and its kernel to be idle")


def wait_for(page, condition, timeout_s: float, what: str, poll_s: float = 0.5) -> dict:
    """Poll `notebook_state` until condition(state) holds; TimeoutError naming `what` and the last state."""
    return wait_until(page, notebook_state, condition, timeout_s, what, poll_s)


def run_all_cells(page) -> None:
    """Run > Run All Cells from JupyterLab's menu bar (as a user would)."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()


def wait_until_run_finished(page, timeout_s: float, settle_s: float = 3.0) -> dict:
    """Wait until no cell is queued or running ("[*]") and the kernel has been idle for `settle_s` seconds."""
    done = lambda s: s["kernel"] == "idle" and "[*]:" not in s["prompts"]  # noqa: E731
    begun = lambda s: ("[*]:" in s["prompts"] or s["kernel"] == "busy"  # noqa: E731
                       or all(re.fullmatch(r"\[\d+\]:", p) for p in s["prompts"]))
    wait_for(page, begun, 30, "the run to begin")
    while True:
        wait_for(page, done, timeout_s, "all cells to finish")
        page.wait_for_timeout(settle_s * 1000)
        if done(notebook_state(page)):
            return notebook_state(page)


def notebook_json(page) -> dict:
    """The open notebook as nbformat JSON, outputs included, straight from JupyterLab's document model."""
    return page.evaluate("() => window.jupyterapp.shell.currentWidget.context.model.toJSON()")


def cell_seconds(nb: dict) -> dict[int, float]:
    """{cell index: wall seconds} of the code cells that ran, from the execution times JupyterLab records in the
    cell metadata (setting recordTiming): from the kernel starting the cell to its reply."""
    from datetime import datetime

    times = {}
    for index, cell in enumerate(nb["cells"]):
        execution = cell.get("metadata", {}).get("execution", {})
        if "iopub.execute_input" in execution and "shell.execute_reply" in execution:
            start, end = (datetime.fromisoformat(execution[key].replace("Z", "+00:00"))
                          for key in ("iopub.execute_input", "shell.execute_reply"))
            times[index] = (end - start).total_seconds()
    return times


def cell_problems(nb: dict) -> list[str]:
    """Error outputs, Python tracebacks printed to stderr, and code cells that never ran, one line each."""
    problems = []
    for index, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        where = f"cell {index} ({source.strip().splitlines()[0][:60] if source.strip() else 'empty'})"
        if source.strip() and cell.get("execution_count") is None:
            problems.append(f"{where}: never executed")
        for output in cell.get("outputs", []):
            if output["output_type"] == "error":
                problems.append(f"{where}: {output['ename']}: {output['evalue']}")
            elif output["output_type"] == "stream" and output["name"] == "stderr":
                text = "".join(output["text"]) if isinstance(output["text"], list) else output["text"]
                if "Traceback" in text:
                    problems.append(f"{where}: traceback on stderr: {text.strip()[-300:]}")
    return problems


_DOM_ERRORS_JS = """() => {
  const found = [];
  for (const el of document.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')) {
    if (el.textContent.includes('Traceback')) found.push('stderr: ' + el.textContent.slice(-300));
  }
  for (const el of document.querySelectorAll('.jp-OutputArea-output')) {
    if (el.textContent.includes('Error displaying widget')) found.push('widget: ' + el.textContent.slice(0, 300));
  }
  return found;
}"""


def error_outputs(page) -> list[str]:
    """What the browser shows as errors: stderr outputs with a traceback (JupyterLab renders error outputs with
    the stderr mime type) and ipywidgets' "Error displaying widget" placeholders."""
    return page.evaluate(_DOM_ERRORS_JS)


_STAGES_JS = """() => Array.from(document.querySelectorAll('.jp-OutputArea-output .ui-resizable')).map((stage, i) => {
  stage.setAttribute('data-so3k-stage', String(i));
  const canvas = stage.querySelector('canvas');
  const r = canvas ? canvas.getBoundingClientRect() : null;
  return {index: i, canvas: !!canvas, width: r ? r.width : 0, height: r ? r.height : 0};
})"""


def nglview_stages(page) -> list[dict]:
    """Every nglview stage in the notebook's outputs (nglview wraps its NGL stage in a jQuery-UI resizable
    box), with whether it holds a canvas and the canvas's on-page size in CSS pixels. Each stage is tagged
    with a `data-so3k-stage` attribute for `canvas_is_drawn`."""
    return page.evaluate(_STAGES_JS)


def canvas_is_drawn(page, stage_index: int, min_colours: int = 8) -> bool:
    """Whether the canvas of nglview stage `stage_index` shows a picture: a screenshot of it has at least
    `min_colours` distinct colours (a blank or failed WebGL canvas is one flat colour; a shaded molecule has
    hundreds)."""
    from PIL import Image

    canvas = page.locator(f'[data-so3k-stage="{stage_index}"] canvas').first
    canvas.scroll_into_view_if_needed()
    page.wait_for_timeout(300)  # let NGL render after scrolling
    image = Image.open(io.BytesIO(canvas.screenshot())).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 16)
    return colours is None or len(colours) >= min_colours


_PLOTS_JS = """() => Array.from(document.querySelectorAll(
    '.jp-OutputArea-output.js-plotly-plot, .jp-OutputArea-output .js-plotly-plot')).map((gd, i) => {
  const r = gd.getBoundingClientRect();
  return {index: i, traces: Array.isArray(gd.data) ? gd.data.length : 0, width: r.width, height: r.height,
          title: (gd.layout && gd.layout.title && (gd.layout.title.text || gd.layout.title)) || null};
})"""


def plotly_figures(page) -> list[dict]:
    """Every plotly graph in the notebook's outputs (static figures and FigureWidgets alike): its number of
    traces as plotly.js holds them, its title and on-page size. A figure that reached the browser without its
    data has 0 traces."""
    return page.evaluate(_PLOTS_JS)


def save_screenshot(page, path: Path, max_height: int = 12000) -> Path:
    """A screenshot of the whole notebook: the viewport is stretched to the notebook's full height (JupyterLab
    scrolls inside a panel, so Playwright's full_page alone shows one screen), then restored."""
    path.parent.mkdir(parents=True, exist_ok=True)
    height = page.evaluate("""() => {
      const outer = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-WindowedPanel-outer');
      return outer ? outer.scrollHeight : 0;
    }""")
    old = page.viewport_size
    page.evaluate("""() => document.querySelectorAll('.jp-WindowedPanel-outer').forEach(e => e.scrollTop = 0)""")
    page.set_viewport_size({"width": old["width"], "height": int(min(max(old["height"], height + 160), max_height))})
    page.wait_for_timeout(1500)  # relayout and redraw the WebGL canvases
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(old)
    return path


# ------------------------------------------------------------------------------------------------------------
# the live MD viewer's contract (so3krates_lab.widgets): Buttons "Play", "Pause", "Stop"; a widget with CSS
# class so3k-frame-counter whose text contains "frame N"; one with class so3k-status whose text contains
# "running", "paused", "stopped" or "finished".

def number_after(page, selector: str, word: str) -> int:
    """N from the text "<word> N" of the first element matching the CSS `selector`; AssertionError if absent."""
    text = page.locator(selector).first.inner_text()
    match = re.search(rf"{re.escape(word)}\s+(\d+)", text)
    if match is None:
        raise AssertionError(f"{selector} text {text!r} has no '{word} N'")
    return int(match.group(1))


def frame_number(page) -> int:
    """N from the first live viewer's "frame N" counter."""
    return number_after(page, ".so3k-frame-counter", "frame")


def status_text(page) -> str:
    """The first live viewer's status text."""
    return page.locator(".so3k-status").first.inner_text().strip()


def live_button(page, name: str):
    """Button `name` of the live viewer that owns the first frame counter (the nearest widget box around it)."""
    box = page.locator(".so3k-frame-counter").first.locator(
        "xpath=ancestor::div[contains(concat(' ', normalize-space(@class), ' '), ' widget-box ')][1]")
    # by text, not by accessible name: an icon (Font Awesome's CSS ::before glyph) becomes part of the name
    return box.locator("button", has_text=re.compile(rf"^\s*{re.escape(name)}\s*$"))


def hover_text(page, x: float, y: float, wait_s: float = 1.0) -> str:
    """Move the mouse to (x, y) on the page; the text of plotly's hover label there ('' if none appears within
    wait_s). Plotly clicks the hovered point, so a click there hits the point the label names."""
    page.mouse.move(x, y)
    page.wait_for_timeout(250)  # the label of the point hovered before may still be there: give plotly its turn
    labels = page.locator(".hoverlayer .hovertext")
    deadline = time.monotonic() + wait_s
    while not labels.count() and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    return (labels.first.text_content() or "") if labels.count() else ""


def wait_until(page, probe, condition, timeout_s: float, what: str, poll_s: float = 0.25):
    """Poll probe(page) until condition(value) holds; TimeoutError naming `what` and the last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe(page)
        if condition(value):
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout_s:.0f} s for {what}; last value {value!r}")
        page.wait_for_timeout(poll_s * 1000)
