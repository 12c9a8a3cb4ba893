"""SO3LR speed, this toolkit against SO3LR's own code, side by side in one run.

    python benchmarks/so3lr_speed.py [--systems dha,bb,water] [--repeats 10] [--md-steps 200] [--rounds 2]
        [--upstream-python /work/so3lr_upstream/venv/bin/python]

For each system (DHA 56 atoms and the buckyball catcher 148 atoms as free molecules, water 1536 atoms periodic;
geometries from ../shared/so3lr/reference_outputs) and float32, at SO3LR's settings (long-range cutoff 12 A,
dispersion damping 2 A), it measures:

* energy + forces: the median wall time of one compiled call on a fixed graph (compilation excluded), here
  (`compiled_evaluator` on the packed Graph) and there (SO3LR's ASE calculator's compiled function on fixed
  neighbour lists, and its JAX-MD energy + forces; the faster of the two is compared);
* MD: steps per second of a Nose-Hoover chain NVT run at 300 K, 0.5 fs, tau 50 fs, after a warm-up chunk,
  here through `md.simulate` (watchdogs on; neighbour list with --skin, default 0 A: rebuilt every step, as
  SO3LR's own MD does with its dr_threshold 0) and there through so3lr's own CLI MD step (`so3lr.cli.so3lr_md`).

SO3LR's side runs in its own environment (`benchmarks/so3lr_upstream_env.sh` builds it) as a subprocess of
`benchmarks/so3lr_upstream.py time`; the two sides alternate `--rounds` times per system and the medians over
rounds are reported, so both see the same machine load. Without that environment only this toolkit's side runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SO3KRATES_SHARED_DIR", ROOT.parent / "shared")) / "so3lr" / "reference_outputs"
UPSTREAM_PYTHON = Path("/work/so3lr_upstream/venv/bin/python")


def _system(name: str):
    from ase.io import read

    from so3krates_lab.structures import System

    if name == "water":
        atoms = read(SHARED / "water_64.xyz") * [2, 2, 2]
        return System(numbers=atoms.numbers, positions=atoms.positions, cell=np.array(atoms.cell), pbc=atoms.pbc)
    atoms = read(SHARED / f"{name}.xyz")
    return System(numbers=atoms.numbers, positions=atoms.positions)


def ours(name: str, repeats: int, md_steps: int, skin: float = 0.0) -> dict:
    import jax

    from so3krates_lab import md, pretrained
    from so3krates_lab.graph import graph_from_system
    from so3krates_lab.potential_base import compiled_evaluator

    pot = pretrained.so3lr()
    system = _system(name)
    graph = graph_from_system(system, pot.cutoff, dtype=np.float32)
    run = compiled_evaluator("forces")
    t0 = time.perf_counter()
    jax.block_until_ready(run(pot, graph))
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(run(pot, graph))
        times.append(time.perf_counter() - t0)
    out = {"energy_forces_ms": 1e3 * float(np.median(times)), "first_call_s": first, "n_atoms": system.n_atoms}
    if md_steps:
        chunk = max(md_steps // 2, 1)
        sim = md.simulate(pot, system, md.NoseHoover(timestep_fs=0.5, temperature_K=300.0, tau_fs=50.0),
                          chunk_steps=chunk, record_every=chunk, skin=skin)
        sim.run(chunk, progress=False)  # compiles
        t0 = time.perf_counter()
        sim.run(md_steps, progress=False)
        wall = time.perf_counter() - t0
        out.update(md_steps_per_s=md_steps / wall, md_stop_reason=sim.stop_reason)
    return out


def upstream(python: Path, name: str, repeats: int, md_steps: int) -> dict | None:
    cmd = [str(python), str(ROOT / "benchmarks" / "so3lr_upstream.py"), "time", "--system", name, "--dtype",
           "float32", "--repeats", str(repeats), "--md-steps", str(md_steps)]
    if not md_steps:
        cmd.append("--skip-md")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        print(f"upstream {name} failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-3:]}",
              file=sys.stderr)
        return None
    r = json.loads(lines[-1])
    best = min(v for v in (r.get("ase_calculate_fn_only_median_s"), r.get("jaxmd_energy_forces_median_s"))
               if v is not None)
    return {"energy_forces_ms": 1e3 * best, "ase_ms": 1e3 * r.get("ase_calculate_fn_only_median_s", np.nan),
            "jaxmd_ms": 1e3 * r.get("jaxmd_energy_forces_median_s", np.nan),
            "md_steps_per_s": r.get("md_steps_per_s"), "jax": r.get("jax")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--systems", default="dha,bb,water")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--md-steps", type=int, default=200)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--skin", type=float, default=0.0, help="this toolkit's MD neighbour-list skin, Angstrom")
    p.add_argument("--upstream-python", type=Path, default=UPSTREAM_PYTHON)
    p.add_argument("--json", type=Path, default=None, help="also write the raw figures here")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import jax

    from so3krates_lab.workflows.benchmarking import machine_info

    have_upstream = args.upstream_python.is_file()
    if not have_upstream:
        print(f"SO3LR's own environment not found at {args.upstream_python}: timing this toolkit only "
              "(build it with benchmarks/so3lr_upstream_env.sh)")
    raw = {}
    for name in args.systems.split(","):
        rows = {"ours": [], "upstream": []}
        for _ in range(args.rounds):
            rows["ours"].append(ours(name, args.repeats, args.md_steps, args.skin))
            if have_upstream:
                r = upstream(args.upstream_python, name, args.repeats, args.md_steps)
                if r is not None:
                    rows["upstream"].append(r)
        raw[name] = rows
    info = machine_info(calibrate=False)
    print(f"\nSO3LR float32, lr cutoff 12 A; jax {jax.__version__} here; {info.get('cpu', '')}, "
          f"{info.get('cores', '')} cores, simd {','.join(info.get('simd', []))}; medians over {args.rounds} "
          f"alternating rounds; MD skin here {args.skin:g} A")
    print(f"{'system':8s} {'atoms':>6s} | {'E+F ms here':>11s} {'SO3LR':>9s} {'speed-up':>8s} | "
          f"{'MD steps/s here':>15s} {'SO3LR':>7s} {'speed-up':>8s}")
    for name, rows in raw.items():
        o = rows["ours"]
        u = rows["upstream"]
        ef = float(np.median([r["energy_forces_ms"] for r in o]))
        mdo = float(np.median([r.get("md_steps_per_s", np.nan) for r in o]))
        if u:
            efu = float(np.median([r["energy_forces_ms"] for r in u]))
            mdu = float(np.median([r["md_steps_per_s"] or np.nan for r in u]))
            print(f"{name:8s} {o[0]['n_atoms']:6d} | {ef:11.1f} {efu:9.1f} {efu / ef:7.2f}x | {mdo:15.1f} "
                  f"{mdu:7.1f} {mdo / mdu:7.2f}x")
        else:
            print(f"{name:8s} {o[0]['n_atoms']:6d} | {ef:11.1f} {'-':>9s} {'-':>8s} | {mdo:15.1f} {'-':>7s} "
                  f"{'-':>8s}")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "raw": raw}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
