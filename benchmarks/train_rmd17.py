"""Accuracy on real data: the rMD17 protocol (shared spec section 5).

    .venv/bin/python benchmarks/train_rmd17.py --molecule aspirin --minutes 20
    .venv/bin/python benchmarks/train_rmd17.py --molecule ethanol --steps 2000 --ev-init neighbours
    .venv/bin/python benchmarks/train_rmd17.py --steps 2000 --attention-projection per_head --json per_head.json

Split 01: 950 training + 50 validation frames drawn (seeded) from rmd17_<molecule>_train_01.npz, tested on all
1000 frames of rmd17_<molecule>_test_01.npz. Trains with `so3krates_lab.train.fit` (default model config, batch 5,
loss 0.01 MSE(E) + 0.99 MSE(F)) for a wall-clock budget or a number of steps, then prints the test energy MAE
(meV), force MAE (meV/A), steps done and seconds per step. The best-validation checkpoint is written under
results/ so the run can be resumed (same command) or inspected. `--json PATH` also writes the numbers (and the
steps per second of every validation interval after the first of this call) to a JSON file
(benchmarks/attention_forms.py reads it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--molecule", default="aspirin")
    p.add_argument("--minutes", type=float, default=None, help="wall-clock training budget")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: unlimited with --minutes)")
    p.add_argument("--ev-init", choices=("zeros", "neighbours"), default="zeros")
    p.add_argument("--degrees", default="1,2,3",
                   help='comma list of EV degrees; "" gives the invariant ablation (checkpoint name *_invariant_*)')
    p.add_argument("--batch-size", type=int, default=5, help="structures per step (other than 5: checkpoint name *_batch<n>_*)")
    p.add_argument("--anneal-to", type=float, default=None,
                   help="with --minutes: decay the learning rate to this fraction over the budget "
                        "(TrainConfig.anneal_to; checkpoint name *_anneal<value>_*)")
    p.add_argument("--attention-projection", choices=("full", "per_head"), default="full",
                   help="So3kratesConfig.attention_projection (per_head: checkpoint name *_perhead_*)")
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", type=Path,
                   default=Path(os.environ.get("SO3KRATES_DATA_DIR", ROOT.parent / "shared" / "data")))
    p.add_argument("--out", type=Path, default=ROOT / "results")
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint instead of resuming")
    p.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    if args.minutes is None and args.steps is None:
        p.error("give --minutes or --steps")

    from so3krates_lab.data import load
    from so3krates_lab.model import So3kratesConfig, load_checkpoint
    from so3krates_lab.train import TrainConfig, error_report, fit, refit_element_energies

    folder = args.data_dir / "rmd17"
    train_file = folder / f"rmd17_{args.molecule}_train_01.npz"
    test_file = folder / f"rmd17_{args.molecule}_test_01.npz"
    if not train_file.exists():
        print(f"rMD17 data not found at {train_file}; set --data-dir or SO3KRATES_DATA_DIR", file=sys.stderr)
        return 2
    pool, test = load(train_file), load(test_file)
    order = np.random.default_rng(args.seed).permutation(len(pool))
    train, valid = pool[order[:950]], pool[order[950:1000]]
    degrees = tuple(int(d) for d in args.degrees.split(",") if d.strip())
    config = So3kratesConfig(ev_init=args.ev_init, degrees=degrees, attention_projection=args.attention_projection)
    tc = TrainConfig(max_steps=args.steps or 10**9, max_seconds=None if args.minutes is None else 60 * args.minutes,
                     batch_size=args.batch_size, eval_every=args.eval_every, seed=args.seed,
                     anneal_to=args.anneal_to)
    variant = args.ev_init if degrees == (1, 2, 3) else ("invariant" if not degrees else
                                                         "degrees" + "".join(map(str, degrees)))
    if args.anneal_to is not None:
        variant += f"_anneal{args.anneal_to:g}"
    if args.batch_size != 5:
        variant += f"_batch{args.batch_size}"
    if args.attention_projection == "per_head":
        variant += "_perhead"
    name = f"rmd17_{args.molecule}_{variant}_seed{args.seed}"
    provenance = {"train_file": str(train_file), "train_sha256": pool.sha256, "test_file": str(test_file),
                  "test_sha256": test.sha256, "train_indices": order[:950].tolist(),
                  "valid_indices": order[950:1000].tolist()}
    resumed = args.out / f"{name}.npz"
    steps_before = load_checkpoint(resumed).step if resumed.exists() and not args.fresh else 0
    start = time.perf_counter()
    # fit tunes the allocator before JAX runs (memory.ensure_tuned)
    result = fit(train, valid, config, tc, checkpoint=args.out / f"{name}.npz", resume=not args.fresh,
                 metadata=provenance)
    wall = time.perf_counter() - start
    potential = result.potential  # the best-validation model
    metrics = error_report(potential, test).attrs
    # The loss weights forces 99:1, so the energies keep a near-constant offset; refit the per-element energies to
    # the training residuals (least squares on the training frames only; forces unchanged) and test again.
    refit = error_report(refit_element_energies(potential, train), test).attrs
    print(f"\nrMD17 {args.molecule}, split 01 (950 train / 50 valid / 1000 test), ev_init={args.ev_init}, "
          f"degrees {degrees}, {args.attention_projection} attention projections "
          f"({potential.n_parameters:,} parameters), batch {tc.batch_size or 'auto'}, learning rate "
          f"{tc.learning_rate:g} decaying x0.1 per {tc.decay_steps} steps"
          + (f", annealed to x{tc.anneal_to:g} over the budget" if tc.anneal_to else ""))
    print(f"{'steps':>7s} {'best step':>9s} {'s/step':>7s} {'steps/s':>7s} {'steady/s':>8s} {'E MAE meV':>10s} "
          f"{'F MAE meV/A':>12s} "
          f"{'E RMSE':>8s} {'F RMSE':>8s}")
    steps_now = result.step - steps_before  # steps done in this call (a resumed run counts from its checkpoint)
    per_step = wall / steps_now if steps_now else float("nan")
    h = result.history
    steady = ((h[-1]["seconds"] - h[-2]["seconds"]) / (h[-1]["step"] - h[-2]["step"])) if len(h) >= 2 else per_step
    print(f"{result.step:7d} {result.best_step:9d} {per_step:7.3f} {1 / per_step:7.2f} {1 / steady:8.2f} "
          f"{metrics['energy_mae_meV']:10.1f} {metrics['force_mae_meV_A']:12.1f} "
          f"{metrics['energy_rmse_meV']:8.1f} {metrics['force_rmse_meV_A']:8.1f}")
    print(f"{'':>44s}after refitting element energies on the training frames: E MAE {refit['energy_mae_meV']:.1f} "
          f"meV, E RMSE {refit['energy_rmse_meV']:.1f} meV")
    print("s/step and steps/s: whole call (compilation and validation included); steady/s: steps per second "
          "between the last two validations (validation included)")
    if steps_before:
        print(f"resumed at step {steps_before}: s/step and steps/s count the {steps_now} steps of this call")
    from so3krates_lab.workflows.benchmarking import machine_info, machine_line

    machine = machine_line(machine_info())
    print(f"machine: {machine}")
    print(f"wall time {wall:.0f} s in this call; checkpoint "
          f"{args.out / (name + '.npz')}")
    if args.json is not None:
        # Steps per second of each validation interval of this call except the first (which holds the
        # compilation); a validation (50 frames) is included in its interval.
        mine = [r for r in h if r["step"] > steps_before]
        blocks = [(b["step"] - a["step"]) / (b["seconds"] - a["seconds"]) for a, b in zip(mine, mine[1:])]
        if args.json.exists() and not args.fresh:  # an earlier call of the same run: keep its intervals
            try:
                earlier = json.loads(args.json.read_text())
            except ValueError:
                earlier = {}
            if earlier.get("checkpoint") == str(resumed) and earlier.get("steps") == steps_before:
                blocks = earlier.get("block_steps_per_s", []) + blocks
        record = {"molecule": args.molecule, "name": name, "checkpoint": str(resumed), "config": config.to_dict(),
                  "attention_projection": config.attention_projection, "parameters": potential.n_parameters,
                  "seed": args.seed, "batch_size": tc.batch_size, "eval_every": tc.eval_every, "steps": result.step,
                  "best_step": result.best_step, "interrupted": result.interrupted, "steps_this_call": steps_now,
                  "wall_s_this_call": wall, "block_steps_per_s": blocks, "test": metrics,
                  "test_refit": refit, "machine": machine, "load_average": list(os.getloadavg()),
                  "date": time.strftime("%Y-%m-%d %H:%M:%S")}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(record, indent=1, default=float))
        tmp.replace(args.json)
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
