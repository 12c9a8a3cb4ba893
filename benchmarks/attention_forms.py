#!/usr/bin/env python
"""The two attention-projection forms side by side on rMD17 aspirin (issue 18).

    nohup .venv/bin/python benchmarks/attention_forms.py > results/logs/attention_forms.log 2>&1 &
    .venv/bin/python benchmarks/attention_forms.py --steps 3000 --seeds 0,1

`So3kratesConfig(attention_projection="full")` (full F x F query/key/value maps) against "per_head" (mlff's
block-diagonal per-head maps, fewer parameters). For every seed and both forms it trains with
benchmarks/train_rmd17.py (split 01 of that seed: 950 train / 50 valid, default model otherwise, batch 5,
loss 0.01 MSE(E) + 0.99 MSE(F)) for the same number of steps, in ABBA order (full, per_head, per_head, full,
...) so that a drifting machine load hits both forms alike. Every run is a subprocess of train_rmd17.py with
its checkpoint and a JSON result under --out: rerunning the command skips finished runs and resumes an
unfinished one from its checkpoint.

Then, in this process, it times the energy + forces evaluation of every trained (best-validation) model on
the first aspirin frame: after compilation and warm-up, `--rounds` rounds in which every model is timed for
`--calls` single calls (each waited for), the models' order rotating from round to round; the median call
per model is reported.

Table: form, parameters, seed, steps, best-validation step, test energy MAE (meV; also after refitting the
element energies on the training frames, as train_rmd17 prints), test force MAE (meV/A) on the 1000 frames of
rmd17_aspirin_test_01.npz, training steps per second (median over the validation intervals of the run,
excluding the first one of each call, which holds the compilation; each interval includes its validation on
50 frames), evaluation ms per structure, and the per-form means over the seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FORMS = ("full", "per_head")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_name(molecule: str, form: str, seed: int) -> str:
    """train_rmd17's checkpoint name for the default model with this projection form."""
    return f"rmd17_{molecule}_zeros{'_perhead' if form == 'per_head' else ''}_seed{seed}"


def schedule(seeds) -> list[tuple[str, int]]:
    """(form, seed) in ABBA order: full, per_head for the first seed, per_head, full for the next, ..."""
    out = []
    for i, seed in enumerate(seeds):
        forms = FORMS if i % 2 == 0 else FORMS[::-1]
        out += [(form, seed) for form in forms]
    return out


def train(form: str, seed: int, args) -> dict:
    """Train (or resume, or reuse) one run through train_rmd17.py; returns its JSON record."""
    from so3krates_lab.model import load_checkpoint

    name = run_name(args.molecule, form, seed)
    result = args.out / f"{name}.json"
    checkpoint = args.out / f"{name}.npz"
    if result.exists():
        record = json.loads(result.read_text())
        if record.get("steps") == args.steps and not record.get("interrupted"):
            log(f"{name}: done earlier ({args.steps} steps), reusing {result}")
            return record
    if checkpoint.exists():
        done = load_checkpoint(checkpoint).step
        if done > args.steps:
            raise SystemExit(f"{checkpoint} has {done} steps, more than --steps {args.steps}: "
                             "give another --out (or the same --steps)")
        log(f"{name}: resuming at step {done}")
    cmd = [sys.executable, str(ROOT / "benchmarks" / "train_rmd17.py"), "--molecule", args.molecule,
           "--steps", str(args.steps), "--seed", str(seed), "--attention-projection", form,
           "--eval-every", str(args.eval_every), "--data-dir", str(args.data_dir), "--out", str(args.out),
           "--json", str(result)]
    log(f"{name}: {' '.join(cmd)}  (load average {os.getloadavg()[0]:.2f})")
    t0 = time.perf_counter()
    rc = subprocess.call(cmd, cwd=ROOT)
    if rc != 0:
        raise SystemExit(f"train_rmd17.py failed with exit status {rc} for {name}")
    record = json.loads(result.read_text())
    if record["steps"] != args.steps or record.get("interrupted"):
        raise SystemExit(f"{name} stopped at step {record['steps']} of {args.steps} (interrupted); rerun to resume")
    log(f"{name}: finished in {time.perf_counter() - t0:.0f} s")
    return record


def time_evaluations(records: list[dict], args) -> dict[str, dict]:
    """Median ms per energy + forces call of every trained model, timed alternately in this process."""
    from so3krates_lab.memory import ensure_tuned

    ensure_tuned()  # as the library's entry points do, before JAX starts
    import jax

    from so3krates_lab import Potential
    from so3krates_lab.data import load
    from so3krates_lab.graph import graph_from_system
    from so3krates_lab.potential_base import compiled_evaluator

    system = load(args.data_dir / "rmd17" / f"rmd17_{args.molecule}_train_01.npz")[0]
    evaluate = compiled_evaluator("forces")
    models = {}
    for r in records:
        potential = Potential.load(Path(r["checkpoint"]).with_name(r["name"] + "_best.npz"))
        graph = jax.device_put(graph_from_system(system, potential.cutoff))
        t0 = time.perf_counter()
        jax.block_until_ready(evaluate(potential, graph))
        first = time.perf_counter() - t0
        for _ in range(args.warmup):
            jax.block_until_ready(evaluate(potential, graph))
        models[r["name"]] = (potential, graph, first)
    times = {name: [] for name in models}
    names = list(models)
    for k in range(args.rounds):
        shift = k % len(names)
        for name in names[shift:] + names[:shift]:
            potential, graph, _ = models[name]
            for _ in range(args.calls):
                t0 = time.perf_counter()
                jax.block_until_ready(evaluate(potential, graph))
                times[name].append(time.perf_counter() - t0)
    return {name: {"median_ms": 1e3 * float(np.median(t)), "calls": len(t), "first_call_s": models[name][2],
                   "p10_ms": 1e3 * float(np.percentile(t, 10)), "p90_ms": 1e3 * float(np.percentile(t, 90))}
            for name, t in times.items()}


def table(rows: list[dict]) -> str:
    head = (f"{'form':<9s} {'parameters':>10s} {'seed':>4s} {'steps':>6s} {'best':>6s} {'E MAE meV':>9s} "
            f"{'E MAE refit':>11s} {'F MAE meV/A':>11s} {'steps/s':>7s} {'eval ms':>7s}")
    lines = [head, "-" * len(head)]

    def line(form, params, seed, steps, best, e, er, f, sps, ms):
        return (f"{form:<9s} {params:>10s} {seed:>4s} {steps:>6s} {best:>6s} {e:9.1f} {er:11.1f} {f:11.1f} "
                f"{sps:7.2f} {ms:7.2f}")

    for r in rows:
        lines.append(line(r["form"], f"{r['parameters']:,}", str(r["seed"]), str(r["steps"]), str(r["best_step"]),
                          r["e_mae"], r["e_mae_refit"], r["f_mae"], r["steps_per_s"], r["eval_ms"]))
    for form in FORMS:
        mine = [r for r in rows if r["form"] == form]
        if mine:
            mean = {k: statistics.fmean(r[k] for r in mine)
                    for k in ("e_mae", "e_mae_refit", "f_mae", "steps_per_s", "eval_ms")}
            lines.append(line(form, f"{mine[0]['parameters']:,}", "mean", str(mine[0]["steps"]), "",
                              mean["e_mae"], mean["e_mae_refit"], mean["f_mae"], mean["steps_per_s"],
                              mean["eval_ms"]))
    return "\n".join(lines)


def markdown(rows: list[dict]) -> str:
    out = ["| form | parameters | seed | steps | best step | test E MAE (meV) | E MAE, refit (meV) | "
           "test F MAE (meV/Å) | training steps/s | eval ms (aspirin) |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['form']} | {r['parameters']:,} | {r['seed']} | {r['steps']} | {r['best_step']} | "
                   f"{r['e_mae']:.1f} | {r['e_mae_refit']:.1f} | {r['f_mae']:.1f} | {r['steps_per_s']:.2f} | "
                   f"{r['eval_ms']:.2f} |")
    for form in FORMS:
        mine = [r for r in rows if r["form"] == form]
        if mine:
            m = {k: statistics.fmean(r[k] for r in mine)
                 for k in ("e_mae", "e_mae_refit", "f_mae", "steps_per_s", "eval_ms")}
            out.append(f"| **{form}, mean** | {mine[0]['parameters']:,} | | {mine[0]['steps']} | | "
                       f"**{m['e_mae']:.1f}** | **{m['e_mae_refit']:.1f}** | **{m['f_mae']:.1f}** | "
                       f"**{m['steps_per_s']:.2f}** | **{m['eval_ms']:.2f}** |")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=3000, help="training steps of every run (default 3000: about "
                   "35 minutes for the whole comparison on the loaded 2-core development machine)")
    p.add_argument("--seeds", default="0,1", help="comma list of seeds (split, initialisation and batch order)")
    p.add_argument("--molecule", default="aspirin")
    p.add_argument("--eval-every", type=int, default=250, help="validation interval (train_rmd17's default)")
    p.add_argument("--rounds", type=int, default=40, help="evaluation timing: rounds over all models")
    p.add_argument("--calls", type=int, default=25, help="evaluation timing: timed calls per model and round")
    p.add_argument("--warmup", type=int, default=10, help="evaluation timing: untimed calls after compiling")
    p.add_argument("--data-dir", type=Path,
                   default=Path(os.environ.get("SO3KRATES_DATA_DIR", ROOT.parent / "shared" / "data")))
    p.add_argument("--out", type=Path, default=ROOT / "results" / "attention_forms",
                   help="checkpoints and per-run JSON (train_rmd17 --out/--json) and summary.json")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if not (args.data_dir / "rmd17" / f"rmd17_{args.molecule}_train_01.npz").exists():
        print(f"rMD17 data not found under {args.data_dir / 'rmd17'}; set --data-dir or SO3KRATES_DATA_DIR",
              file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    start, load_start = time.perf_counter(), os.getloadavg()
    log(f"{len(seeds) * len(FORMS)} runs of {args.steps} steps on {args.molecule}; load average "
        f"{load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}")
    records = [train(form, seed, args) for form, seed in schedule(seeds)]
    log("timing energy + forces evaluations")
    speed = time_evaluations(records, args)
    load_end = os.getloadavg()
    rows = []
    for r in sorted(records, key=lambda r: (FORMS.index(r["attention_projection"]), r["seed"])):
        blocks = r["block_steps_per_s"]
        rows.append({"form": r["attention_projection"], "parameters": r["parameters"], "seed": r["seed"],
                     "steps": r["steps"], "best_step": r["best_step"], "e_mae": r["test"]["energy_mae_meV"],
                     "e_mae_refit": r["test_refit"]["energy_mae_meV"], "f_mae": r["test"]["force_mae_meV_A"],
                     "steps_per_s": float(np.median(blocks)) if blocks else float("nan"),
                     "steps_per_s_blocks": blocks, "eval_ms": speed[r["name"]]["median_ms"],
                     "eval": speed[r["name"]], "train_load_average": r["load_average"], "name": r["name"]})
    print(f"\nSO3krates attention projections on rMD17 {args.molecule}, split 01 of each seed (950 train / 50 valid),"
          f" tested on the 1000 frames of rmd17_{args.molecule}_test_01.npz; {args.steps} steps, batch 5, "
          f"learning rate 1e-3 (x0.1 per 100k steps), best-validation model\n")
    print(table(rows))
    print("\nE MAE refit: after refitting the element energies on the training frames (forces unchanged).")
    print("steps/s: median over the run's validation intervals (compilation excluded, validation on 50 frames "
          "included); eval ms: median energy + forces call on one aspirin frame, "
          f"{args.rounds} x {args.calls} calls per model, the models timed alternately in one process.")
    from so3krates_lab.workflows.benchmarking import machine_info, machine_line

    machine = machine_line(machine_info())
    print(f"machine: {machine}; load average at start {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f},"
          f" at end {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}; "
          f"{time.perf_counter() - start:.0f} s in this call")
    print("\n" + markdown(rows))
    summary = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "rows": rows,
               "machine": machine, "load_average_start": list(load_start), "load_average_end": list(load_end),
               "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
