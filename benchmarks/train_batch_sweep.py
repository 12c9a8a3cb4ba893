#!/usr/bin/env python
"""Training-step time against batch size on rMD17 aspirin (default model configuration, float32).

For each batch size, one fresh `fit` call of 100 + `--steps` steps that validates (on 5 structures) every 100
steps; the time between the first and the last validation, over `--steps` steps, is the steady per-step cost
(compilation and the first steps excluded; the validations in between cost a few ms each).

    PYTHONPATH=. .venv/bin/python benchmarks/train_batch_sweep.py --batch-sizes 1,2,3,4,5
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--molecule", default="aspirin")
    p.add_argument("--batch-sizes", default="1,2,3,4,5")
    p.add_argument("--steps", type=int, default=400, help="steps timed per batch size (a multiple of 100)")
    p.add_argument("--data-dir", type=Path,
                   default=Path(os.environ.get("SO3KRATES_DATA_DIR", ROOT.parent / "shared" / "data")))
    args = p.parse_args(argv)
    from so3krates_lab.memory import ensure_tuned, malloc_tuned

    # fit would apply the allocator tuning itself, but machine_info below runs JAX first: apply it now, as the
    # library's entry points do (SO3KRATES_TUNE_MALLOC=0 switches it off; the header says which ran)
    ensure_tuned()

    from so3krates_lab.data import load
    from so3krates_lab.model import So3kratesConfig
    from so3krates_lab.train import TrainConfig, fit

    train_file = args.data_dir / "rmd17" / f"rmd17_{args.molecule}_train_01.npz"
    if not train_file.exists():
        print(f"rMD17 data not found at {train_file}; set --data-dir or SO3KRATES_DATA_DIR", file=sys.stderr)
        return 2
    pool = load(train_file)
    order = np.random.default_rng(0).permutation(len(pool))
    train, valid = pool[order[:950]], pool[order[950:955]]
    from so3krates_lab.workflows.benchmarking import machine_info, machine_line

    print(f"rMD17 {args.molecule}: training step cost against batch size (steady, {args.steps} steps); "
          f"malloc {'tuned' if malloc_tuned() else 'default (SO3KRATES_TUNE_MALLOC=0)'}")
    print(f"machine: {machine_line(machine_info())}")
    print(f"{'batch':>5} {'ms/step':>8} {'steps/s':>8} {'structures/s':>13}")
    for b in (int(x) for x in args.batch_sizes.split(",")):
        result = fit(train, valid, So3kratesConfig(),
                     TrainConfig(max_steps=100 + args.steps, eval_every=100, batch_size=b), progress=False)
        first, last = result.history[0], result.history[-1]
        ms = (last["seconds"] - first["seconds"]) / (last["step"] - first["step"]) * 1e3
        print(f"{b:>5} {ms:>8.1f} {1e3 / ms:>8.1f} {b * 1e3 / ms:>13.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
