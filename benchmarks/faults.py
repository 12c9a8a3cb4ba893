#!/usr/bin/env python
"""Fault injection (issue 17): kill -9 and Ctrl-C training, MD, minima exploration and reference labelling at
random moments, resume, and compare with an uninterrupted run.

    .venv/bin/python benchmarks/faults.py --trials 30 --seed 0 --workflows training,md,minima,labelling \
        --out results/faults

The jobs, what "equal" and "lost" mean, and how a trial runs: `so3krates_lab.workflows.faults`. Per workflow
the command first runs the job once uninterrupted (`<out>/<workflow>/reference/`, timed), then draws the plan
of its trials from a numpy Generator seeded by (--seed, workflow): trial k sends SIGKILL for even k and SIGINT
for odd k; each draws with probability 1/2 a delay uniform over the reference run's whole life (launch to
exit, plus 5%: start-up, imports, compilation, running, finishing and, now and then, after the exit), and
otherwise a unit count u uniform over the job and a delay uniform over one commit interval of the reference
run: the signal then goes that long after the worker reported a commit of at least u units. The second kind
lands while the job runs, anywhere between two commits, whatever the machine's load does to the start-up and
compile times (with only the first kind, a busy machine during the reference run would stretch its life and
send most signals after a faster trial had ended). Trials run round-robin over the workflows.

Resumable: the reference, the plan (`plan.json`) and each trial's result (`trials/<k>.json`) are stored, and a
rerun continues with the next trial (--trials can be raised). `--freeze` runs the benchmark and every worker on a
copy of the package in `<out>/code` (made by the first call, reused by later ones), so that edits to the source
tree while it runs do not change what is measured. A trial's folder is deleted once it passed;
a failing one is kept under `work/` for inspection. `--report` runs nothing and prints the table of what is
stored. Writes `<out>/summary.json`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("start-up", "set-up/compile", "running", "finishing", "after exit")


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    tmp.replace(path)


def _reference(faults, workflow: str, out: Path, timeout_s: float) -> dict:
    path = out / workflow / "reference.json"
    if path.exists():
        ref = json.loads(path.read_text())
        if ref["rc"] == 0:
            return ref
    folder = out / workflow / "reference"
    shutil.rmtree(folder, ignore_errors=True)
    ref = faults.reference_run(workflow, folder, timeout_s=timeout_s)
    if ref["rc"] != 0:
        raise SystemExit(f"the uninterrupted {workflow} run failed (status {ref['rc']}):\n{ref['stderr']}")
    _write_json(path, ref)
    return ref


def _plan(workflow: str, index: int, ref: dict, trials: int, seed: int, out: Path) -> list[dict]:
    """The trials' signals and delays, drawn once (stored) so that a rerun continues the same plan."""
    path = out / workflow / "plan.json"
    plan = json.loads(path.read_text()) if path.exists() else []
    rng = np.random.default_rng([seed, index])
    life = 1.05 * ref["seconds"]
    interval = float(np.median(np.diff(ref["commit_times_s"])))  # seconds between commits
    drawn = []
    for k in range(max(trials, len(plan))):  # redraw the whole sequence: the same seed gives the same prefix
        sig = "SIGKILL" if k % 2 == 0 else "SIGINT"
        if rng.random() < 0.5:
            step = {"mode": "life", "delay_s": float(rng.random() * life), "after_units": None}
        else:  # after the first commit of at least u units (u uniform over the job), within one commit interval
            step = {"mode": "running", "after_units": int(rng.integers(1, ref["units"])),
                    "delay_s": float(rng.random() * interval)}
        drawn.append({"trial": k, "signal": sig, **step})
    plan = plan + drawn[len(plan):]
    _write_json(path, plan)
    return plan[:trials]


def _failed(row: dict) -> bool:
    return (not row.get("equal") or bool(row.get("lost")) or not row.get("opened_after_fault")
            or not row.get("opened") or row.get("clean_exit") is False or row.get("hung")
            or row.get("resume_rc") != 0)


def _rows(out: Path, workflows) -> dict:
    rows = {}
    for w in workflows:
        rows[w] = [json.loads(p.read_text()) for p in sorted((out / w / "trials").glob("*.json"))]
    return rows


def table(rows: dict, faults) -> tuple[str, list[dict]]:
    """Markdown table: per workflow and signal, then all trials of the workflow."""
    head = ("| workflow | signal | trials | resumed = uninterrupted | bit-identical | lost beyond last commit "
            "(max / total) | failed to open (after fault / after resume) | clean SIGINT exits | where the "
            "signal landed (start-up / set-up+compile / running / finishing / after exit) |")
    lines = [head, "|" + "---|" * 9]
    stats = []
    for w, all_rows in rows.items():
        unit = faults.UNIT[w]
        for sig in ("SIGKILL", "SIGINT", None):
            sel = [r for r in all_rows if sig is None or r["signal"] == sig]
            if not sel:
                continue
            lost = [int(r.get("lost") or 0) for r in sel]
            bit = [r.get("details", {}).get("bit_identical") for r in sel]
            if w == "md":  # md's equality is bit-identity itself
                bit = [r.get("equal") for r in sel]
            clean = [r["clean_exit"] for r in sel if r["clean_exit"] is not None]
            ignored = sum(bool(r.get("ignored")) for r in sel)
            phases = [sum(r.get("phase") == p for r in sel) for p in PHASES]
            s = {"workflow": w, "signal": sig or "all", "trials": len(sel),
                 "equal": sum(bool(r.get("equal")) for r in sel),
                 "bit_identical": None if w == "minima" else sum(bool(b) for b in bit),
                 "lost_max": max(lost), "lost_total": sum(lost), "unit": unit,
                 "unopened_after_fault": sum(not r.get("opened_after_fault") for r in sel),
                 "unopened_after_resume": sum(not r.get("opened") for r in sel),
                 "clean_sigint": None if not clean else f"{sum(clean)}/{len(clean)}" + (
                     f" ({ignored} ignored)" if ignored else ""), "ignored_sigint": ignored,
                 "phases": dict(zip(PHASES, phases)),
                 "median_trial_s": float(np.median([r.get("signal_at_s", 0) + (r.get("exit_latency_s") or 0)
                                                    + r.get("resume_s", 0) for r in sel]))}
            stats.append(s)
            name = {"SIGKILL": "kill -9", "SIGINT": "SIGINT", None: "**all**"}[sig]
            bits = "n/a (not defined)" if s["bit_identical"] is None else f"{s['bit_identical']}/{len(sel)}"
            lines.append(f"| {w} | {name} | {len(sel)} | {s['equal']}/{len(sel)} | {bits} | "
                         f"{s['lost_max']} / {s['lost_total']} {unit} | {s['unopened_after_fault']} / "
                         f"{s['unopened_after_resume']} | {s['clean_sigint'] or '-'} | "
                         f"{' / '.join(map(str, phases))} |")
    return "\n".join(lines), stats


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=30, help="trials per workflow (half kill -9, half SIGINT)")
    p.add_argument("--seed", type=int, default=0, help="seed of the drawn delays")
    p.add_argument("--workflows", default="training,md,minima,labelling")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "faults")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds a worker may run before it is killed")
    p.add_argument("--report", action="store_true", help="run nothing: print the table of the stored trials")
    p.add_argument("--freeze", action="store_true",
                   help="run every process on a copy of the package made in <out>/code at the first call (kept by "
                        "later calls), so that edits to the source tree during the run change nothing")
    args = p.parse_args(argv)
    if args.freeze and not args.report:
        _freeze(args.out, argv if argv is not None else sys.argv[1:])  # re-executes this script on the copy

    from so3krates_lab.workflows import faults

    if not args.report:
        print(f"code: {Path(faults.__file__).resolve().parents[1]}", flush=True)
    workflows = [w.strip() for w in args.workflows.split(",") if w.strip()]
    unknown = sorted(set(workflows) - set(faults.WORKFLOWS))
    if unknown:
        p.error(f"unknown workflows {unknown}; choose from {','.join(faults.WORKFLOWS)}")
    out = args.out
    started = time.time()
    if not args.report:
        from tqdm.auto import tqdm

        refs = {w: _reference(faults, w, out, args.timeout) for w in workflows}
        for w, ref in refs.items():
            print(f"{w}: uninterrupted run {ref['seconds']:.1f} s (guard after {ref['guarded_s']:.1f} s, first "
                  f"commit {ref['commit_times_s'][0]:.1f} s, last {ref['commit_times_s'][-1]:.1f} s, "
                  f"{len(ref['commit_times_s'])} commits)", flush=True)
        plans = {w: _plan(w, faults.WORKFLOWS.index(w), refs[w], args.trials, args.seed, out) for w in workflows}
        todo = [(k, w) for k in range(args.trials) for w in workflows
                if not (out / w / "trials" / f"{k:03d}.json").exists()]
        bar = tqdm(total=len(workflows) * args.trials, initial=len(workflows) * args.trials - len(todo),
                   desc="fault trials", unit="trial")
        try:
            for k, w in todo:
                step = plans[w][k]
                folder = out / w / "work" / f"{k:03d}"
                shutil.rmtree(folder, ignore_errors=True)  # left by an interrupted benchmark run
                row = faults.trial(w, folder, out / w / "reference", getattr(signal, step["signal"]),
                                   step["delay_s"], after_units=step["after_units"], timeout_s=args.timeout)
                row.update(trial=k, mode=step["mode"])
                _write_json(out / w / "trials" / f"{k:03d}.json", row)
                if _failed(row):
                    tqdm.write(f"FAILED {w} trial {k}: {json.dumps(row, default=str)[:2000]}")
                else:
                    shutil.rmtree(folder, ignore_errors=True)
                bar.set_postfix_str(f"{w} {k} {row['signal']} {row['phase']} equal={row['equal']}")
                bar.update(1)
        finally:
            bar.close()
    rows = _rows(out, workflows)
    text, stats = table(rows, faults)
    print(text)
    failed = [{k: v for k, v in r.items()} for w in rows for r in rows[w] if _failed(r)]
    refs = {w: json.loads((out / w / "reference.json").read_text()) for w in workflows
            if (out / w / "reference.json").exists()}
    summary = {
        "command": "benchmarks/faults.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.date.today().isoformat(), "machine": f"{platform.machine()} {platform.processor()}",
        "python": platform.python_version(), "labelling_calculator": _calculator_name(),
        "references": {w: {k: v for k, v in r.items() if k != "commit_times_s"} | {"commits": len(r["commit_times_s"])}
                       for w, r in refs.items()},
        "rows": stats, "table": text, "failed": failed,
        "wall_s_this_call": time.time() - started,
    }
    _write_json(out / "summary.json", summary)
    if failed:
        print(f"\n{len(failed)} trial(s) failed; details in {out / 'summary.json'} (\"failed\") and their folders "
              f"under {out}/<workflow>/work/")
    return 0


def _freeze(out: Path, argv) -> None:
    """Copy the package to <out>/code (once; VERSION.txt records the git commit and status) and re-execute this
    script with that copy first on PYTHONPATH; the workers inherit it (they start outside the source tree)."""
    import os
    import subprocess

    code = (out / "code").resolve()
    if os.environ.get("SO3KRATES_FAULTS_CODE") == str(code):
        return  # already running on the copy
    if not (code / "so3krates_lab").exists():
        shutil.copytree(ROOT / "so3krates_lab", code / "so3krates_lab",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))

        def git(*a):
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout

        (code / "VERSION.txt").write_text(f"copied {datetime.datetime.now().isoformat(timespec='seconds')} from "
                                          f"{ROOT / 'so3krates_lab'}\ngit HEAD {git('rev-parse', 'HEAD')}"
                                          f"git status --short:\n{git('status', '--short')}")
    env = dict(os.environ, SO3KRATES_FAULTS_CODE=str(code),
               PYTHONPATH=os.pathsep.join([str(code)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, str(Path(__file__).resolve()), *argv], env)


def _calculator_name() -> str:
    try:
        import tblite.ase  # noqa: F401
    except ImportError:
        return "EMT (ASE; tblite not installed)"
    return "GFN2-xTB (tblite)"


if __name__ == "__main__":
    raise SystemExit(main())
