#!/usr/bin/env python
"""Energy + forces evaluation speed of the default SO3krates configuration.

Prints a table (stdout) with, per system: atoms, directed neighbour pairs, median wall time of one jitted
energy+forces call, evaluations per second, compile time, neighbour-list time, XLA's temporary buffer size,
a FLOP-based lower bound and the ratio to it, the public reference implementation's time and the project
target where known. Progress goes to stderr.

    .venv/bin/python benchmarks/speed.py --quick
    .venv/bin/python benchmarks/speed.py --systems buckyball_catcher,water-1536 --markdown
    .venv/bin/python benchmarks/speed.py --dtype float64 --json speed64.json

Data: --data-dir (default: $SO3KRATES_DATA_DIR, else <repo>/../shared/data). Where the data folder (or a
file in it) is missing, ethanol and the water boxes fall back to built-in structures (marked with `*`); the
other systems are then skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# --- Constants of the roofline-style lower bound -------------------------------------------------------------
# Energy + forces of the default configuration (F=132, T=3, 4 heads, degrees (1,2,3), 32 radial functions)
# cost about 0.94 MFLOP per DIRECTED neighbour pair (forward + reverse pass; per-atom work is negligible
# next to it at a 5 A cutoff). The CPUs these numbers were made for reach about 170 GFLOP/s in a large
# float32 matrix multiplication. bound = directed_pairs * FLOP_PER_PAIR / PEAK_FLOPS: no implementation that
# does the same arithmetic can be faster than that on this machine.
FLOP_PER_PAIR = 0.94e6
PEAK_FLOPS = 170e9

# Public reference implementation (float32 medians measured on these 2-core machines), milliseconds.
REFERENCE_MS = {"ethanol": 1.6, "aspirin": 5.0, "buckyball_catcher": 86.0, "water-192": 190.0}
# Project targets (float32), milliseconds.
TARGET_MS = {"ethanol": 0.8, "aspirin": 2.5, "buckyball_catcher": 35.0, "water-192": 75.0}

ALL_SYSTEMS = ("ethanol", "aspirin", "buckyball_catcher", "water-192", "water-1536", "water-5184", "water-12288")
QUICK_SYSTEMS = ("ethanol", "aspirin", "water-192")
WATER_TILING = {"water-192": 1, "water-1536": 2, "water-5184": 3, "water-12288": 4}
ALIASES = {"buckyball": "buckyball_catcher", "buckyball-catcher": "buckyball_catcher", "water": "water-192",
           "water192": "water-192", "water1536": "water-1536", "water12288": "water-12288"}

@dataclass
class Row:
    system: str
    atoms: int
    pairs: int  # directed pairs = 2 * stored pairs
    dtype: str
    median_ms: float | None
    evals_per_s: float | None
    compile_s: float | None
    neighbour_ms: float
    calls: int
    us_per_atom: float | None
    bound_ms: float
    ratio_to_bound: float | None
    reference_ms: float | None
    target_ms: float | None
    xla_temp_mb: float | None
    rss_peak_mb: float
    source: str
    builtin: bool
    note: str = ""
    xla_compile_s: float | None = None  # lower + compile only, without the first execution (JSON only)
    faults_per_call: float | None = None  # minor page faults per timed call


# --- Systems --------------------------------------------------------------------------------------------------

def tile(system, reps: int):
    """The reps x reps x reps supercell of a periodic System."""
    from so3krates_lab.structures import System

    if reps == 1:
        return system
    shifts = np.array(list(np.ndindex(reps, reps, reps)), dtype=np.float64)  # (reps^3, 3)
    offsets = shifts @ system.cell  # (reps^3, 3)
    positions = (system.positions[None, :, :] + offsets[:, None, :]).reshape(-1, 3)
    numbers = np.tile(system.numbers, len(shifts))
    return System(numbers=numbers, positions=positions, cell=system.cell * reps, pbc=system.pbc)


def load_system(name: str, data_dir: Path, seed: int):
    """(System, source description, built-in?) or raises FileNotFoundError when no data and no fallback."""
    from so3krates_lab.data import builtin, load, read_ase

    if name in ("ethanol", "aspirin"):
        path = data_dir / "rmd17" / f"rmd17_{name}_train_01.npz"
        if path.exists():
            return load(path)[0], str(path), False
        if name == "ethanol":
            return builtin.ethanol(), "built-in ethanol (so3krates_lab.data.builtin)", True
        raise FileNotFoundError(path)
    if name == "buckyball_catcher":
        path = data_dir / "geometries" / "buckyball_catcher.xyz"
        if path.exists():
            return read_ase(path, index=0, labels=False)[0], str(path), False
        raise FileNotFoundError(path)
    if name in WATER_TILING:
        reps = WATER_TILING[name]
        path = data_dir / "periodic" / "water_192atoms_400frames.npz"
        if path.exists():
            base, source, is_builtin = load(path, energy_unit="eV")[0], str(path), False
        else:
            base, source, is_builtin = builtin.water_box(4, seed), "built-in water grid (3.1 A, 64 H2O)", True
        if reps > 1:
            source += f" tiled {reps}x{reps}x{reps}"
        return tile(base, reps), source, is_builtin
    raise ValueError(f"unknown system {name!r}; known: {', '.join(ALL_SYSTEMS)}")


# --- Measurement ----------------------------------------------------------------------------------------------

def rss_peak_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if sys.platform.startswith("linux") else peak / 2**20  # KiB on Linux, bytes on macOS


def time_calls(fn, n_min: int, n_max: int, budget_s: float) -> list[float]:
    times = []
    start = time.perf_counter()
    while len(times) < n_max and (len(times) < n_min or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


_POTENTIALS: dict = {}


def evaluator(ynn: str):
    """The jitted (potential, graph) -> (energies, forces). ynn off: the library's own evaluator
    (`potential_base.compiled_evaluator`, what `Potential.evaluate` runs: XLA's dot emitter, see autodiff.py);
    on: the same function compiled with XLA's default options (YNNPACK dot fusions)."""
    import jax

    from so3krates_lab.potential_base import compiled_evaluator

    if ynn == "off":
        return compiled_evaluator("forces")
    return jax.jit(lambda potential, graph: potential.energy_and_forces(graph), compiler_options={})


def measure(name: str, args, log) -> Row | None:
    import jax

    from so3krates_lab import Potential
    from so3krates_lab.graph import graph_from_system, neighbour_pairs
    from so3krates_lab.model import So3kratesConfig, init_variables

    try:
        system, source, builtin = load_system(name, args.data_dir, args.seed)
    except FileNotFoundError as err:
        log(f"[{name}] skipped: data file {err} not found and no built-in fallback")
        return None
    config = So3kratesConfig(dtype=args.dtype)
    np_dtype = np.float64 if args.dtype == "float64" else np.float32

    log(f"[{name}] {system.n_atoms} atoms from {source}")
    nl_times = time_calls(lambda: neighbour_pairs(system, config.cutoff), 3, args.nl_repeats, 1.0)
    graph = graph_from_system(system, config.cutoff, dtype=np_dtype)
    directed = 2 * int(np.sum(graph.pair_mask))
    graph = jax.device_put(graph)
    # The parameters depend only on the config and the seed, not on the graph: initialise once per run (the
    # jitted init compiles per graph shape, which would add seconds per system) and reuse the potential.
    key = (args.dtype, args.seed)
    if key not in _POTENTIALS:
        _POTENTIALS[key] = Potential.create(config, init_variables(config, graph, seed=args.seed))
    potential = _POTENTIALS[key]
    # --ynn on: XLA's default CPU dot path (YNNPACK fusions); off: the library's default (see autodiff.py)
    jitted = evaluator(args.ynn)

    bound_s = directed * FLOP_PER_PAIR / PEAK_FLOPS
    row = Row(
        system=name, atoms=system.n_atoms, pairs=directed, dtype=args.dtype,
        median_ms=None, evals_per_s=None, compile_s=None,
        neighbour_ms=float(np.median(nl_times)) * 1e3, calls=0, us_per_atom=None,
        bound_ms=bound_s * 1e3, ratio_to_bound=None,
        reference_ms=REFERENCE_MS.get(name) if not builtin else None,
        target_ms=TARGET_MS.get(name) if not builtin else None,
        xla_temp_mb=None, rss_peak_mb=rss_peak_mb(), source=source, builtin=builtin,
    )

    # Compile time = wall time until the first call has returned (trace + compile + run). The program is
    # compiled ahead of time first, so that XLA's memory analysis is known before it runs; the jitted call
    # then reuses that executable from jax's cache.
    log(f"[{name}] {directed} directed pairs; compiling")
    t0 = time.perf_counter()
    needed = None
    try:
        stats = jitted.lower(potential, graph).compile().memory_analysis()
        if stats is not None:
            row.xla_temp_mb = stats.temp_size_in_bytes / 2**20
            needed = stats.temp_size_in_bytes + stats.argument_size_in_bytes + stats.output_size_in_bytes
    except Exception as err:  # memory_analysis is backend dependent
        log(f"[{name}] no XLA memory analysis ({type(err).__name__}: {err})")
    row.xla_compile_s = time.perf_counter() - t0
    if needed is not None and args.max_memory_gb and needed > args.max_memory_gb * 2**30:
        row.note = (f"not run: XLA needs {needed / 2**30:.1f} GiB > --max-memory-gb {args.max_memory_gb:.1f}")
        row.rss_peak_mb = rss_peak_mb()
        log(f"[{name}] {row.note}")
        return row
    energies, forces = jax.block_until_ready(jitted(potential, graph))
    row.compile_s = time.perf_counter() - t0
    if not (np.isfinite(np.asarray(energies)).all() and np.isfinite(np.asarray(forces)).all()):
        log(f"[{name}] WARNING: non-finite energy or forces")

    def call():
        jax.block_until_ready(jitted(potential, graph))

    # Warm-up: `warmup` calls, but stop after about 30 s (the largest boxes take seconds per call). With the tuned
    # allocator the heap grows to its steady size over the first few calls.
    t0 = time.perf_counter()
    for _ in range(args.warmup):
        call()
        if time.perf_counter() - t0 > 30.0:
            break
    log(f"[{name}] compiled in {row.compile_s:.1f} s; timing")
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    times = time_calls(call, args.min_repeats, max(args.repeats, args.min_repeats), args.budget)
    row.faults_per_call = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0) / len(times)
    median_s = float(np.median(times))
    row.median_ms = median_s * 1e3
    row.evals_per_s = 1.0 / median_s
    row.calls = len(times)
    row.us_per_atom = median_s * 1e6 / system.n_atoms
    row.ratio_to_bound = median_s / bound_s if bound_s > 0 else float("nan")
    row.rss_peak_mb = rss_peak_mb()
    log(f"[{name}] median {row.median_ms:.2f} ms over {row.calls} calls")
    return row


# --- Output ---------------------------------------------------------------------------------------------------

COLUMNS = [
    ("system", "system"), ("atoms", "atoms"), ("pairs", "pairs"), ("dtype", "dtype"),
    ("ms", "median_ms"), ("eval/s", "evals_per_s"), ("us/atom", "us_per_atom"), ("compile s", "compile_s"),
    ("NL ms", "neighbour_ms"), ("bound ms", "bound_ms"), ("x bound", "ratio_to_bound"),
    ("ref ms", "reference_ms"), ("target ms", "target_ms"), ("XLA temp MB", "xla_temp_mb"),
    ("RSS peak MB", "rss_peak_mb"), ("faults/call", "faults_per_call"), ("calls", "calls"),
]


def _fmt(value, key: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, (int, np.integer)):
        return str(value)
    if key in ("ratio_to_bound",):
        return f"{value:.1f}"
    if key in ("compile_s",):
        return f"{value:.1f}"
    if key in ("xla_temp_mb", "rss_peak_mb", "faults_per_call"):
        return f"{value:.0f}" if value >= 10 else f"{value:.1f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table_cells(rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    header = [h for h, _ in COLUMNS]
    body = []
    for r in rows:
        cells = []
        for _, key in COLUMNS:
            v = getattr(r, key)
            if key == "system" and r.builtin:
                v = v + "*"
            cells.append(_fmt(v, key))
        body.append(cells)
    return header, body


def plain_table(rows: list[Row]) -> str:
    header, body = table_cells(rows)
    widths = [max(len(c) for c in col) for col in zip(header, *body)]
    left = {0, 3}

    def line(cells):
        return "  ".join(c.ljust(w) if k in left else c.rjust(w) for k, (c, w) in enumerate(zip(cells, widths)))

    out = [line(header), "  ".join("-" * w for w in widths)]
    out += [line(b) for b in body]
    return "\n".join(out)


def markdown_table(rows: list[Row]) -> str:
    header, body = table_cells(rows)
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---" if k in (0, 3) else "---:" for k in range(len(header))) + "|"]
    out += ["| " + " | ".join(b) + " |" for b in body]
    return "\n".join(out)


def notes(rows: list[Row], skipped: list[str], info: dict | None = None) -> str:
    lines = [
        "Columns: pairs = DIRECTED neighbour pairs within the cutoff (2 x the pairs a Graph stores); ms = median",
        "wall time of one jitted energy+forces call (block_until_ready each); us/atom = ms per atom in",
        "microseconds; compile s = wall time of the first call (trace + compile + run); NL ms = host neighbour",
        "list (neighbour_pairs, median); XLA temp MB = compiled.memory_analysis().temp_size_in_bytes;",
        "RSS peak MB = process peak resident memory after that system (ru_maxrss, cumulative); faults/call =",
        "minor page faults per timed call (memory the allocator handed back and the next call touched again).",
        f"Bound: bound ms = directed pairs x {FLOP_PER_PAIR / 1e6:.2f} MFLOP / {PEAK_FLOPS / 1e9:.0f} GFLOP/s. "
        "The default",
        f"model costs about {FLOP_PER_PAIR / 1e6:.2f} MFLOP per directed pair for energy+forces, and these CPUs reach",
        f"about {PEAK_FLOPS / 1e9:.0f} GFLOP/s in a large float32 matmul. so3krates_lab evaluates the symmetric",
        "pair filters once per unordered pair (less arithmetic than that count), so x bound < 1 is possible in",
        "principle. x bound = ms / bound ms (1.0 = the bound's arithmetic at peak float32 rate; float64 has half",
        "as many SIMD lanes, so float64 rows cannot get below about 2 x bound).",
        "ref ms = public reference implementation, float32, measured on these 2-core machines; target ms =",
        "project target (float32). Both are float32 numbers: compare float64 rows with care.",
    ]
    gflops = (info or {}).get("matmul_gflops")
    if gflops and abs(gflops / (PEAK_FLOPS / 1e9) - 1) > 0.25:
        lines.append(f"THIS machine's large float32 matmul runs at {gflops:.0f} GFLOP/s, not the {PEAK_FLOPS / 1e9:.0f} "
                     "the bound, ref ms and target ms assume: compare with them only as ratios, or on a machine "
                     "of that class" + ("" if (info or {}).get("avx512", True) else " (this CPU has no AVX-512)")
                     + ".")
    if any(r.builtin for r in rows):
        lines.append("* = built-in fallback structure (data folder not found): no reference/target comparison.")
    if skipped:
        lines.append("Skipped (no data): " + ", ".join(skipped))
    for r in rows:
        if r.note:
            lines.append(f"{r.system}: {r.note}.")
    if rows:
        largest = max(rows, key=lambda r: r.atoms)
        lines.append(f"Process peak RSS after the largest system ({largest.system}, {largest.atoms} atoms): "
                     f"{largest.rss_peak_mb:.0f} MB.")
    return "\n".join(lines)


def header_text(args, info: dict) -> str:
    import flax
    from so3krates_lab.workflows.benchmarking import machine_line
    import jax
    import jaxlib

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    lines = [
        "SO3krates energy+forces speed (default config: F=132, T=3, 4 heads, degrees (1,2,3), cutoff 5 A, "
        "32 radial functions)",
        f"machine: {machine_line(info)}; {platform.system()} {platform.release()}",
        f"devices: {jax.devices()}",
        f"versions: python {platform.python_version()}, jax {jax.__version__}, jaxlib {jaxlib.__version__}, "
        f"flax {flax.__version__}, numpy {np.__version__}",
        f"dtype {args.dtype}, ynn fusion {args.ynn}, malloc {args.malloc}, seed {args.seed}, data {args.data_dir}, memory limit "
        + (f"{args.max_memory_gb:.1f} GiB" if args.max_memory_gb else "none")
        + (f", load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}" if load else ""),
    ]
    return "\n".join(lines)


# --- Main -----------------------------------------------------------------------------------------------------

def mem_available_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def default_data_dir() -> Path:
    env = os.environ.get("SO3KRATES_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help=f"only {', '.join(QUICK_SYSTEMS)}, fewer repeats (well under a minute)")
    p.add_argument("--systems", default=None,
                   help=f"comma list out of: {', '.join(ALL_SYSTEMS)} (default: all, or the quick set)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--ynn", choices=("on", "off"), default="off",
                   help="XLA:CPU YNNPACK dot fusions (off = the library default; on = XLA's default)")
    p.add_argument("--malloc", choices=("tuned", "default"), default="tuned",
                   help="tuned: so3krates_lab.memory.tune_malloc() before JAX starts, as the library's entry points "
                        "do (no per-call page faults); default: JAX's and glibc's own settings (the script sets "
                        "SO3KRATES_TUNE_MALLOC=0, so nothing in the library applies the tuning either)")
    p.add_argument("--repeats", type=int, default=None,
                   help="at most this many timed calls per system (default 200, quick 50); at least --min-repeats")
    p.add_argument("--min-repeats", type=int, default=5, help="at least this many timed calls per system")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds of timed calls per system before stopping early (default 3, quick 1)")
    p.add_argument("--warmup", type=int, default=5, help="warm-up calls after compilation (stop after ~30 s)")
    p.add_argument("--nl-repeats", type=int, default=5, help="neighbour-list timings per system (median)")
    p.add_argument("--max-memory-gb", type=float, default=None,
                   help="do not run a system whose compiled program needs more (XLA temp + arguments + outputs); "
                        "default 80%% of MemAvailable at start, 0 = no limit")
    p.add_argument("--seed", type=int, default=0, help="parameter init seed (and built-in water orientations)")
    p.add_argument("--data-dir", type=Path, default=default_data_dir(),
                   help="reference data folder (default: $SO3KRATES_DATA_DIR, else <repo>/../shared/data)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows (and machine info) as JSON")
    p.add_argument("--markdown", action="store_true", help="also print the table as markdown")
    args = p.parse_args(argv)
    if args.systems:
        names = [ALIASES.get(s.strip(), s.strip()) for s in args.systems.split(",") if s.strip()]
        unknown = [s for s in names if s not in ALL_SYSTEMS]
        if unknown:
            p.error(f"unknown systems {unknown}; known: {', '.join(ALL_SYSTEMS)}")
        args.system_list = names
    else:
        args.system_list = list(QUICK_SYSTEMS if args.quick else ALL_SYSTEMS)
    if args.repeats is None:
        args.repeats = 50 if args.quick else 200
    if args.budget is None:
        args.budget = 1.0 if args.quick else 3.0
    if args.quick:
        args.warmup = min(args.warmup, 2)
    if args.max_memory_gb is None:
        available = mem_available_bytes()
        args.max_memory_gb = 0.8 * available / 2**30 if available else 0.0
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    # Before anything runs JAX. The library's entry points (Potential.load, fit, md.simulate) apply the tuning
    # themselves when JAX has not started (memory.ensure_tuned); for `default` it is switched off for this
    # process, so no library call can apply it behind the benchmark's back.
    if args.malloc == "default":
        os.environ["SO3KRATES_TUNE_MALLOC"] = "0"
    from so3krates_lab.memory import malloc_tuned, tune_malloc

    if args.malloc == "tuned":
        tune_malloc()  # does nothing if SO3KRATES_TUNE_MALLOC=0 was set outside: then `default` runs
    ran = "tuned" if malloc_tuned() else "default"
    if ran != args.malloc:
        print(f"--malloc {args.malloc} asked for, but SO3KRATES_TUNE_MALLOC=0 is set: running with malloc {ran}",
              file=sys.stderr)
    args.malloc = ran  # the header and the JSON record the setting that ran
    import jax

    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)  # only here, and only when asked for

    tqdm = None
    if sys.stderr.isatty():  # a progress bar on a terminal; plain lines in logs and pipes
        try:
            from tqdm import tqdm
        except ImportError:
            tqdm = None

    t_log = time.perf_counter()

    def log(msg):
        msg = f"[{time.perf_counter() - t_log:7.1f} s] {msg}"
        if tqdm is not None:
            tqdm.write(msg, file=sys.stderr)
        else:
            print(msg, file=sys.stderr, flush=True)

    from so3krates_lab.workflows.benchmarking import machine_info

    info = machine_info()  # timings compare only between machines of one class (AVX-512 or not, matmul speed)
    header = header_text(args, info)
    print(header, flush=True)
    if not args.data_dir.is_dir():
        log(f"data folder {args.data_dir} not found: using built-in ethanol and water; other systems skipped")

    rows, skipped = [], []
    t_start = time.perf_counter()
    progress = tqdm(args.system_list, desc="systems", unit="system", file=sys.stderr) if tqdm else args.system_list
    for name in progress:
        if tqdm is not None:
            progress.set_postfix_str(name)
        row = measure(name, args, log)
        if row is None:
            skipped.append(name)
        else:
            rows.append(row)
    if tqdm is not None:
        progress.close()
    total_s = time.perf_counter() - t_start

    print()
    print(plain_table(rows))
    print()
    print(notes(rows, skipped, info))
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"Total benchmark time {total_s:.0f} s"
          + (f"; load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}" if load else "")
          + ". Timings on a shared machine vary; compare runs made under the same load.")
    if args.markdown:
        print()
        print(markdown_table(rows))

    if args.json is not None:
        payload = {
            "header": header,
            "machine": info,
            "constants": {"flop_per_directed_pair": FLOP_PER_PAIR, "peak_flops": PEAK_FLOPS},
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "skipped": skipped,
            "total_s": total_s,
            "rows": [r.__dict__ for r in rows],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
