"""Show why an nglview stage can stay white in Chromium: three views of ethanol in one scratch notebook, run in
JupyterLab in headless Chromium (the browser tests' driver, tests/browser/labdriver.py).

    .venv/bin/python tools/nglview_stage_probe.py            # about 1 min; needs Chromium and playwright

The views: (0) an nglview shown on its own; (1) the same inside a VBox beside a label, sized only through its
ipywidgets layout (how `widgets._common.molecule_view` made views before the fix); (2) `molecule_view` in the
same VBox (the stage created at its final size). For each it prints whether the canvas shows a picture, the
canvas size and the camera's scale as NGL reported it to the kernel (`_camera_orientation`: the distance the
camera was fitted at; about 130x larger means the molecule is drawn as a sub-pixel dot), and the browser
console's WebGL lines. Writes the screenshot to results/browser/nglview_stage_probe.png.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "browser"))
import labdriver  # noqa: E402

CELLS = [
    "import ipywidgets as w\nimport nglview\nfrom ase.build import molecule\n"
    "from so3krates_lab.widgets._common import molecule_view\nm = molecule('CH3CH2OH')",
    "v0 = nglview.show_ase(m)\nv0.layout.width, v0.layout.height = '420px', '380px'\nv0",
    "v1 = nglview.show_ase(m)\nv1.layout.width, v1.layout.height = '420px', '380px'\n"
    "w.HBox([w.VBox([w.HTML('<b>a label</b>'), v1])])",
    "v2 = molecule_view(m.numbers, m.positions)\nw.HBox([w.VBox([w.HTML('<b>a label</b>'), v2])])",
]
CAMERAS = "print([round(float(v._camera_orientation[0]), 2) if v._camera_orientation else None for v in (v0, v1, v2)])"

_RUN_IN_KERNEL = """async (code) => {
  const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  const future = kernel.requestExecute({code});
  let text = '';
  future.onIOPub = (msg) => { if (msg.header.msg_type === 'stream') text += msg.content.text; };
  await future.done;
  return text;
}"""


def main() -> int:
    import nbformat
    from playwright.sync_api import sync_playwright

    reason = labdriver.missing_requirements()
    if reason:
        print(reason, file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        root = labdriver.prepare_root(work / "root")
        notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(notebook, root / "probe.ipynb")
        server = labdriver.start_lab(root, work)
        try:
            with sync_playwright() as playwright:
                browser = labdriver.launch_chromium(playwright)
                page = browser.new_context(viewport=labdriver.VIEWPORT).new_page()
                console = labdriver.ConsoleLog(page)
                labdriver.open_notebook(page, server, "probe.ipynb")
                labdriver.run_all_cells(page)
                labdriver.wait_until_run_finished(page, 300)
                page.wait_for_timeout(3000)  # let the stages load their structure and draw
                stages = labdriver.nglview_stages(page)
                cameras = page.evaluate(_RUN_IN_KERNEL, CAMERAS).strip()
                labels = ["on its own", "in a VBox, layout size only", "molecule_view in a VBox"]
                for stage, label in zip(stages, labels):
                    print(f"view {stage['index']} ({label}): drawn {labdriver.canvas_is_drawn(page, stage['index'])}, "
                          f"canvas {stage['width']:.0f} x {stage['height']:.0f} px")
                print(f"camera scale of views 0, 1, 2 (NGL's fitted distance): {cameras}")
                print(f"browser console, WebGL lines: {console.webgl() or 'none'}")
                shot = labdriver.save_screenshot(page, ROOT / "results" / "browser" / "nglview_stage_probe.png")
                print(f"screenshot: {shot}")
                browser.close()
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
