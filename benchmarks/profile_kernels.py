"""Where does one energy+forces evaluation spend its time? XLA kernels from a jax.profiler trace.

    .venv/bin/python benchmarks/profile_kernels.py aspirin            # or ethanol, buckyball_catcher, water-192
    .venv/bin/python benchmarks/profile_kernels.py aspirin --ynn on   # XLA's default YNNPACK dot fusions
    .venv/bin/python benchmarks/profile_kernels.py buckyball_catcher --so3lr   # the pretrained SO3LR model

Prints the number of XLA kernels per evaluation, their summed time (kernels of the two cores overlap, so the
sum can exceed the wall time), and the time per kernel category (fusion kind with the numeric suffix removed).
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
import sys
import tempfile
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import ALL_SYSTEMS, default_data_dir, evaluator, load_system  # noqa: E402

# Host-side trace events that are not XLA kernels.
_NOT_KERNELS = ("ThunkExecutor", "SlinkyThreadPool", "PjitFunction", "CommonPjRtLoadedExecutable",
                "ParseArguments", "DevicePut")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("system", choices=ALL_SYSTEMS)
    p.add_argument("--calls", type=int, default=10, help="evaluations inside the trace")
    p.add_argument("--ynn", choices=("on", "off"), default="off")
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--so3lr", action="store_true", help="profile the shipped SO3LR model instead of a fresh default")
    p.add_argument("--data-dir", type=Path, default=default_data_dir())
    args = p.parse_args(argv)
    from so3krates_lab.memory import ensure_tuned

    # The potential is built from fresh parameters (no Potential.load, which would apply the allocator tuning), so
    # apply it here, before JAX runs, as the library's entry points do (SO3KRATES_TUNE_MALLOC=0 switches it off)
    ensure_tuned()

    import jax

    from so3krates_lab import Potential
    from so3krates_lab.graph import graph_from_system
    from so3krates_lab.model import So3kratesConfig, init_variables

    system, source, _ = load_system(args.system, args.data_dir, 0)
    if args.so3lr:
        from so3krates_lab import pretrained

        potential = pretrained.so3lr()
        graph = graph_from_system(system, potential.cutoff)
    else:
        config = So3kratesConfig()
        graph = graph_from_system(system, config.cutoff)
        potential = Potential.create(config, init_variables(config, graph))
    step = evaluator(args.ynn)  # speed.py's: the library's evaluator, or XLA's default options with --ynn on
    for _ in range(5):
        jax.block_until_ready(step(potential, graph))
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            for _ in range(args.calls):
                jax.block_until_ready(step(potential, graph))
        trace = next(Path(tmp).rglob("*.trace.json.gz"))
        events = json.load(gzip.open(trace))["traceEvents"]
    total, count = collections.Counter(), collections.Counter()
    for e in events:
        name = e.get("name", "")
        if e.get("ph") == "X" and "dur" in e and not name.startswith("$") and not name.startswith(_NOT_KERNELS):
            total[name] += e["dur"]
            count[name] += 1
    by_kind, kernels_by_kind = collections.Counter(), collections.Counter()
    for name, us in total.items():
        kind = re.sub(r"\.\d+$", "", name)
        by_kind[kind] += us
        kernels_by_kind[kind] += count[name]
    n = args.calls
    print(f"{args.system} ({system.n_atoms} atoms, {source}){', SO3LR' if args.so3lr else ''}, ynn {args.ynn}: "
          f"{sum(count.values()) / n:.0f} XLA kernels per evaluation, summed kernel time "
          f"{sum(total.values()) / n / 1e3:.2f} ms")
    for kind, us in by_kind.most_common(args.top):
        print(f"  {us / n / 1e3:8.3f} ms  {kernels_by_kind[kind] / n:5.0f} kernels  {kind}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
