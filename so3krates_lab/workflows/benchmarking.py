"""Timing helpers shared by notebooks and benchmark scripts: one energy+forces call, one compiled MD step and one
ASE MD step with the same model on the same structure, measured side by side.

    row = md_speed(builtin.water_box(3), potential, steps=200, repeats=3)
    row["eval_ms"], row["engine_ms_per_step"], row["ase_ms_per_step"]

An edge module like `cli` and `demo`: it uses the ASE adapter (`interop`) to time ASE against the engine.
Timings are wall-clock medians over interleaved repeats (each method timed in turn, `repeats` times), after a
compile-and-warm-up call; on a shared machine they move by tens of percent with other work.
"""

from __future__ import annotations

import time

import numpy as np

EVAL_CALLS = 20  # energy+forces calls per timed block


def md_speed(system, potential, *, steps: int = 200, repeats: int = 3, ase_steps: int | None = None,
             eval_calls: int = EVAL_CALLS, timestep_fs: float = 0.5, temperature_K: float = 300.0,
             skin: float = 0.5, headroom: float = 1.3, all_pairs: bool | None = None,
             compare_list: bool = True) -> dict:
    """Side-by-side timings for one structure (a `System`, free or periodic) and one potential.

    Returns a dict: atoms, pairs (unordered pairs within the cutoff at the start), eval_ms (one jitted
    energy+forces call), engine_ms_per_step (velocity Verlet in the compiled engine, chunks of `steps` steps,
    skin neighbour list updated in-jit), ase_ms_per_step (ase.md.VelocityVerlet with the potential's ASE calculator,
    blocks of `ase_steps` steps, default steps // 5 but at least 10; ase_steps=0 skips ASE and gives nan),
    compile_s (wall time of the first engine
    chunk: tracing, compilation and one chunk), repeats, steps, neighbour_list (`force_fn.pairs` of
    `md.force_function`: "fixed" all-pairs graph, "list" or "cell" list), list_builds and reallocations of the
    neighbour list. all_pairs: passed to `md.force_function` (None: the fixed graph for small free molecules).
    Where the engine runs on the fixed graph and compare_list is true, the neighbour-list engine is timed in the
    same blocks: list_ms_per_step (else nan), and list_builds counts its rebuilds. All times are medians over
    `repeats` blocks; an eval block is `eval_calls` calls. skin (Angstrom) and headroom: the engine's neighbour
    list; its pair capacity sets the engine's memory, which matters from ~10,000 atoms on.
    """
    import jax
    import jax.numpy as jnp
    from ase import Atoms, units
    from ase.md.verlet import VelocityVerlet

    from ..graph import graph_from_system
    from ..md import Simulation, degrees_of_freedom, force_function, masses_of, maxwell_boltzmann, velocity_verlet
    from ..potential_base import compiled_evaluator, float_dtype

    if steps < 1 or repeats < 1 or eval_calls < 1:
        raise ValueError(f"steps ({steps}), repeats ({repeats}) and eval_calls ({eval_calls}) must be >= 1")
    ase_steps = max(10, steps // 5) if ase_steps is None else int(ase_steps)
    graph = graph_from_system(system, potential.cutoff, dtype=float_dtype(potential))
    evaluate = compiled_evaluator("forces")  # (potential, graph) -> (energies, forces), as BasePotential.evaluate uses
    jax.block_until_ready(evaluate(potential, graph))

    cell, pbc = system.box_and_pbc() if system.periodic else (None, (False,) * 3)
    masses = masses_of(system.numbers)
    v0 = maxwell_boltzmann(masses, temperature_K, 0, system.positions, periodic=system.periodic)
    dtype = float_dtype(potential)

    def engine(all_pairs):
        """(chunk generator, force_fn, Simulation) of one engine; the first chunk (compile + warm-up) is run."""
        force_fn = force_function(potential, system, skin=skin, headroom=headroom, all_pairs=all_pairs)
        integrator = velocity_verlet(force_fn, timestep_fs)
        state = integrator.init(jnp.asarray(system.positions, dtype), jnp.asarray(v0, dtype), masses,
                                aux=force_fn.aux)
        sim = Simulation(integrator, state, dof=degrees_of_freedom(system.n_atoms, system.periodic),
                         record_every=steps, chunk_steps=steps, watchdogs=None, numbers=system.numbers,
                         cell=system.cell, periodic=system.periodic)
        chunks = sim.chunks(steps * (repeats + 1), progress=False)
        next(chunks)
        return chunks, force_fn, sim

    t0 = time.perf_counter()
    chunks, force_fn, sim = engine(all_pairs)
    compile_s = time.perf_counter() - t0
    # Where the engine chose the fixed all-pairs graph, the neighbour-list engine is timed beside it.
    listed = engine(False) if compare_list and force_fn.pairs == "fixed" else None

    if ase_steps:
        atoms = Atoms(numbers=system.numbers, positions=system.positions, cell=cell, pbc=pbc)
        atoms.calc = potential.calculator()
        atoms.set_velocities(v0 / units.fs)
        dyn = VelocityVerlet(atoms, timestep_fs * units.fs)
        dyn.run(2)  # compile + warm-up

    t_eval, t_engine, t_list, t_ase = [], [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(eval_calls):
            jax.block_until_ready(evaluate(potential, graph))
        t_eval.append((time.perf_counter() - t0) / eval_calls)
        t0 = time.perf_counter()
        next(chunks)
        t_engine.append((time.perf_counter() - t0) / steps)
        if listed is not None:
            t0 = time.perf_counter()
            next(listed[0])
            t_list.append((time.perf_counter() - t0) / steps)
        if ase_steps:
            t0 = time.perf_counter()
            dyn.run(ase_steps)
            t_ase.append((time.perf_counter() - t0) / ase_steps)
    list_sim = listed[2] if listed is not None else (sim if sim.state.aux is not None else None)
    return {"atoms": system.n_atoms, "pairs": int(np.sum(np.asarray(graph.pair_mask))),
            "eval_ms": 1e3 * float(np.median(t_eval)), "engine_ms_per_step": 1e3 * float(np.median(t_engine)),
            "ase_ms_per_step": 1e3 * float(np.median(t_ase)) if t_ase else float("nan"), "compile_s": compile_s, "repeats": repeats,
            "steps": steps, "neighbour_list": force_fn.pairs,
            "list_builds": int(list_sim.state.aux.builds) if list_sim is not None else 0,
            "reallocations": sim.reallocations,
            "list_ms_per_step": 1e3 * float(np.median(t_list)) if t_list else float("nan"),
            "capacity": force_fn.n_pairs if sim.state.aux is None else int(sim.state.aux.capacity), "skin": skin}


def machine_info(calibrate: bool = True, size: int = 2048, repeats: int = 7) -> dict:
    """What a timing depends on: CPU model, vector extensions and, with `calibrate`, the measured float32
    speed of one large matrix product (GFLOP/s, median of `repeats` jitted size x size products).

    Timings are only comparable between machines of the same class: a CPU without AVX-512 does half the
    float32 arithmetic per cycle. Returns {"cpu", "cores", "simd" (list, e.g. ["avx2", "fma"]), "avx512"
    (bool), "matmul_gflops" (float, measured on JAX's default device; None without calibrate)}.
    """
    import os
    import platform

    names, flags = [], set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    names.append(line.split(":", 1)[1].strip())
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    cpu = names[0] if names else (platform.processor() or platform.machine())
    simd = sorted(f for f in flags if f in ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_bf16",
                                             "avx512_vnni", "amx_tile"))
    gflops = None
    if calibrate:
        import jax
        import jax.numpy as jnp

        a = jnp.asarray(np.random.default_rng(0).standard_normal((size, size)), jnp.float32)
        product = jax.jit(lambda m: m @ m)
        product(a).block_until_ready()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            product(a).block_until_ready()
            times.append(time.perf_counter() - t0)
        gflops = 2.0 * size ** 3 / float(np.median(times)) / 1e9
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "simd": simd, "avx512": "avx512f" in flags, "matmul_gflops": gflops}


def machine_line(info: dict) -> str:
    """One printable line from `machine_info`."""
    simd = " ".join(info["simd"]) or "unknown"
    line = f"{info['cpu']}, {info['cores']} cores, SIMD {simd}" + ("" if info["avx512"] else " (no AVX-512)")
    if info.get("matmul_gflops"):
        line += f"; large float32 matmul {info['matmul_gflops']:.0f} GFLOP/s"
    return line
