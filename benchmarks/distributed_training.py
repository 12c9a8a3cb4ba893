#!/usr/bin/env python
"""Training steps per second with one process and with two (jax.distributed), each process pinned to one core.

For each global batch size: one process on core 0 trains alone; then two processes, pinned to cores 0 and 1
and joined on a free port of 127.0.0.1 (`so3krates_lab.distributed`), train the same model on the same global
batches (each process differentiates half of every batch and the gradients are summed across them). Each run
is a fresh `fit` of 100 + `--steps` steps validating (on 5 structures) every 100 steps; the steady per-step cost is
the time between the first and the last validation over the steps between them (compilation excluded). The two
layouts alternate, `--repeats` times; the table gives medians, the speed-up (two processes' steps/s over one's)
and the scaling efficiency (speed-up / 2).

    .venv/bin/python benchmarks/distributed_training.py --batch-sizes 2,8 --repeats 2 --steps 200

The data: the shipped Ac-Ala3-NHMe GFN2-xTB frames (42 atoms; `--data` for another file), default model, float32.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def worker(args) -> int:
    """One process of a run: train, print {"ms_per_step": ...} as the last stdout line (process 0)."""
    if args.num_processes > 1:
        from so3krates_lab import distributed

        distributed.initialize(f"127.0.0.1:{args.port}", num_processes=args.num_processes,
                               process_id=args.process_id)
    import jax

    from so3krates_lab.data import load, load_shipped
    from so3krates_lab.model import So3kratesConfig
    from so3krates_lab.train import TrainConfig, fit

    pool = load(args.data) if args.data else load_shipped("ac_ala3_nhme_gfn2xtb")
    order = np.random.default_rng(0).permutation(len(pool))
    train, valid = pool[order[:500]], pool[order[500:505]]
    result = fit(train, valid, So3kratesConfig(),
                 TrainConfig(max_steps=100 + args.steps, eval_every=100, batch_size=args.batch_size),
                 progress=False)
    first, last = result.history[0], result.history[-1]
    ms = (last["seconds"] - first["seconds"]) / (last["step"] - first["step"]) * 1e3
    if jax.process_index() == 0:
        print(json.dumps({"ms_per_step": ms, "devices": jax.device_count()}), flush=True)
    return 0


def run(args, batch_size: int, n_processes: int) -> float:
    """ms per step of one run with n_processes processes, process i pinned to core i; every process it
    started is waited for, or killed by PID when the run fails or times out."""
    from so3krates_lab.distributed import free_local_port

    port = free_local_port()
    common = [sys.executable, __file__, "--worker", "--batch-size", str(batch_size), "--steps", str(args.steps),
              "--port", str(port), "--num-processes", str(n_processes)] + (["--data", args.data] if args.data else [])
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    procs = []
    try:
        for i in range(n_processes):
            procs.append(subprocess.Popen(["taskset", "-c", str(i), *common, "--process-id", str(i)], env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        outs = [p.communicate(timeout=args.timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (_, err) in zip(procs, outs):
        if p.returncode != 0:
            raise RuntimeError(f"a worker failed (exit {p.returncode}):\n{err[-2000:]}")
    return json.loads(outs[0][0].strip().splitlines()[-1])["ms_per_step"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-sizes", default="2,4,8", help="global batch sizes (each even: split over 2 processes)")
    p.add_argument("--steps", type=int, default=300, help="steps timed per run (a multiple of 100)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--data", default=None, help="data file (default: the shipped Ac-Ala3-NHMe frames)")
    p.add_argument("--timeout", type=float, default=1200, help="seconds per run before its processes are killed")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=int, default=2, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--num-processes", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--process-id", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    if (os.cpu_count() or 1) < 2:
        print("needs 2 CPU cores (one per process)", file=sys.stderr)
        return 2
    from so3krates_lab.workflows.benchmarking import machine_info, machine_line

    print(f"training steps/s, 1 process on 1 core against 2 processes on 2 cores (jax.distributed, Gloo); "
          f"default model, float32, steady cost over {args.steps} steps, median of {args.repeats}")
    print(f"machine: {machine_line(machine_info())}")
    print(f"{'batch':>5} {'1 proc ms/step':>15} {'2 proc ms/step':>15} {'1 proc steps/s':>15} "
          f"{'2 proc steps/s':>15} {'speed-up':>9} {'efficiency':>10}")
    for b in (int(x) for x in args.batch_sizes.split(",")):
        if b % 2:
            raise SystemExit(f"batch size {b} does not split over 2 processes")
        times = {1: [], 2: []}
        for r in range(args.repeats):
            for n in ((1, 2) if r % 2 == 0 else (2, 1)):  # alternate, so drifting load hits both alike
                times[n].append(run(args, b, n))
        one, two = (float(np.median(times[n])) for n in (1, 2))
        print(f"{b:>5} {one:>15.1f} {two:>15.1f} {1e3 / one:>15.2f} {1e3 / two:>15.2f} {one / two:>8.2f}x "
              f"{one / two / 2:>10.0%}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
