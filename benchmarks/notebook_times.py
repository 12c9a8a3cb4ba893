"""Wall time of each tutorial notebook, headless, in smoke or full mode, with the time of every cell.

    .venv/bin/python benchmarks/notebook_times.py --mode smoke                       # all notebooks
    .venv/bin/python benchmarks/notebook_times.py --mode full notebooks/02_data_and_training.ipynb

Runs each notebook top to bottom with nbclient from the notebooks folder (SO3KRATES_SMOKE=1 in smoke mode),
prints per-cell wall times (from nbclient's execution metadata), the text the cells printed and the total
including kernel start. The executed copies go to results/notebook_times/ (not to notebooks/, whose files stay
without outputs). A notebook whose cells start background work (LiveMD, TrainingDashboard) is timed until its
last cell returns, not until that work ends.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cell_seconds(cell) -> float | None:
    ex = cell.metadata.get("execution", {})
    if "iopub.execute_input" not in ex or "shell.execute_reply" not in ex:
        return None
    start, end = (datetime.fromisoformat(ex[k].replace("Z", "+00:00"))
                  for k in ("iopub.execute_input", "shell.execute_reply"))
    return (end - start).total_seconds()


def run(path: Path, mode: str, out_dir: Path, timeout: int) -> float:
    import nbclient
    import nbformat

    env_smoke = os.environ.pop("SO3KRATES_SMOKE", None)
    if mode == "smoke":
        os.environ["SO3KRATES_SMOKE"] = "1"
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    nb = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    try:
        nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(path.parent)}}).execute()
        failed = None
    except Exception as exc:  # report, keep the executed copy, go on with the next notebook
        failed = exc
    total = time.perf_counter() - t0
    for k, cell in enumerate(nb.cells):
        seconds = cell_seconds(cell)
        if seconds is not None:
            print(f"  cell {k}: {seconds:.1f} s")
        for out in cell.get("outputs", []):
            if out.output_type == "stream" and out.name == "stdout":
                print("    " + out.text.rstrip().replace("\n", "\n    "))
            elif out.output_type == "error":
                print(f"    ERROR {out.ename}: {out.evalue}")
    out_dir.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out_dir / f"{path.stem}_{mode}.ipynb")
    status = f"FAILED ({type(failed).__name__})" if failed else "ok"
    print(f"{path.name} [{mode}]: {total:.1f} s wall including kernel start, {status}", flush=True)
    os.environ.pop("SO3KRATES_SMOKE", None)
    if env_smoke is not None:
        os.environ["SO3KRATES_SMOKE"] = env_smoke
    return total


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    p.add_argument("--mode", choices=("smoke", "full"), default="smoke")
    p.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "notebook_times")
    args = p.parse_args(argv)
    paths = [q.resolve() for q in args.notebooks] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    if not paths:
        print("no notebooks found", file=sys.stderr)
        return 1
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    totals = {q.name: run(q, args.mode, args.out, args.timeout) for q in paths}
    for name, seconds in totals.items():
        print(f"{name:<32}{seconds:8.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
