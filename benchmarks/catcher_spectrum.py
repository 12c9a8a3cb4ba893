#!/usr/bin/env python
"""The paper's Fig. 1b system with the pretrained SO3LR: buckyball catcher MD and its vibrational spectrum.

    .venv/bin/python benchmarks/catcher_spectrum.py [--ps 20] [--temperature 300] [--out results/catcher_spectrum]

1. relax the buckyball catcher (C60 in a C48H28 catcher, 148 atoms; ../shared/data/geometries/
   buckyball_catcher.xyz, or --xyz) with `pretrained.so3lr()` in float64 (FIRE, `md.relax`) to --fmax;
2. its harmonic frequencies from the float64 Hessian (`analysis.normal_modes_of`: blocked forward-mode
   derivatives of the forces on the cutoff graph);
3. NVE MD in float32 (velocity Verlet 0.5 fs, start velocities at twice --temperature from the minimum, velocities
   recorded every 2 fs, the default watchdogs), stored under --out/md and resumed by a rerun;
4. the mass-weighted VACF power spectrum (Hann window) with the harmonic lines overlaid.
Writes --out/catcher_spectrum.html (plotly), --out/summary.json and --out/spectrum.npz.
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
SHARED = Path(os.environ.get("SO3KRATES_SHARED_DIR", ROOT.parent / "shared"))


def _savez(path, **arrays) -> None:
    """np.savez to exactly `path` (np.savez itself appends ".npz" to a name without it)."""
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--xyz", type=Path, default=SHARED / "data" / "geometries" / "buckyball_catcher.xyz")
    p.add_argument("--ps", type=float, default=20.0)
    p.add_argument("--temperature", type=float, default=300.0, help="target mean temperature, K")
    p.add_argument("--fmax", type=float, default=2e-3, help="relaxation threshold, eV/A")
    p.add_argument("--skip-ps", type=float, default=1.0, help="dropped before the VACF, ps")
    p.add_argument("--max-lag-fs", type=float, default=2000.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "catcher_spectrum")
    args = p.parse_args(argv)
    import jax

    jax.config.update("jax_enable_x64", True)  # relaxation and Hessian; the MD runs in float32
    sys.path.insert(0, str(ROOT))
    from ase.io import read

    from so3krates_lab import md, pretrained
    from so3krates_lab.analysis import (
        energy_conservation, normal_modes_of, power_spectrum, spectrum_peaks, vacf_from_trajectory,
    )
    from so3krates_lab.fileio import atomic_write
    from so3krates_lab.structures import System

    args.out.mkdir(parents=True, exist_ok=True)
    atoms = read(args.xyz)
    start = System(numbers=atoms.numbers, positions=atoms.positions)
    pot64 = pretrained.so3lr(dtype="float64")
    minimum_file = args.out / "minimum.npz"
    if minimum_file.exists():
        with np.load(minimum_file) as f:
            minimum = start.replace(positions=f["positions"])
        print(f"relaxed geometry reused from {minimum_file}")
    else:
        t0 = time.perf_counter()
        minimum, converged = md.relax(pot64, start, fmax=args.fmax, max_steps=20_000)
        print(f"relaxed in float64 to fmax {args.fmax:g} eV/A: converged {bool(converged)}, "
              f"{time.perf_counter() - t0:.0f} s")
        atomic_write(minimum_file, lambda tmp: _savez(tmp, positions=minimum.positions, numbers=minimum.numbers))
    t0 = time.perf_counter()
    modes = normal_modes_of(pot64, minimum)  # blocked forward-mode Hessian on the cutoff graph
    freq = np.asarray(modes.frequency.values)
    print(f"Hessian and normal modes: {time.perf_counter() - t0:.0f} s; {len(freq)} modes, lowest "
          f"{freq[:3].round(1).tolist()} cm^-1, highest {freq[-1]:.0f} cm^-1")

    pot32 = pretrained.so3lr()
    timestep, record_every, chunk = 0.5, 4, 1000
    total = int(round(args.ps * 1000 / timestep / chunk)) * chunk
    store = md.TrajectoryStore(args.out / "md", numbers=minimum.numbers, timestep_fs=timestep,
                               record_every=record_every, start_temperature_K=2 * args.temperature, seed=args.seed,
                               model="pretrained.so3lr() float32")
    sim = md.simulate(pot32, minimum, md.NVE(timestep_fs=timestep), temperature_K=2 * args.temperature,
                      seed=args.seed, store=store, record_every=record_every, chunk_steps=chunk, skin=0.0)
    remaining = total - int(sim.state.step)
    t0 = time.perf_counter()
    if remaining > 0:
        for _ in sim.chunks(remaining):
            pass
    ms = (time.perf_counter() - t0) / remaining * 1e3 if remaining > 0 else None
    traj = store.open()
    spec = power_spectrum(vacf_from_trajectory(traj, skip_fs=1000 * args.skip_ps, mass_weighted=True,
                                               max_lag_fs=args.max_lag_fs))
    peaks = spectrum_peaks(spec, n_peaks=15, min_separation_cm1=25.0)
    drift = energy_conservation(traj)["drift_meV_per_ps"]
    summary = {"atoms": int(minimum.n_atoms), "md_ps": float(traj.time_fs[-1] / 1000),
               "md_mean_T_K": float(np.mean(traj.temperature)), "md_stop_reason": sim.stop_reason,
               "md_ms_per_step": ms, "energy_drift_meV_per_ps": float(drift),
               "resolution_cm1": float(spec.attrs["resolution_cm1"]), "peaks_cm1": np.asarray(peaks).tolist(),
               "harmonic_cm1": freq.tolist()}
    print(f"NVE {summary['md_ps']:.1f} ps, mean T {summary['md_mean_T_K']:.0f} K, drift {drift:+.2f} meV/ps"
          + (f", {ms:.1f} ms/step" if ms else "") + (f", STOPPED: {sim.stop_reason}" if sim.stop_reason else ""))
    print("main VACF peaks (cm^-1) and the nearest harmonic line:")
    for pk in peaks:
        k = int(np.argmin(np.abs(freq - pk)))
        print(f"  {pk:8.1f}   {freq[k]:8.1f}  ({pk - freq[k]:+.1f})")
    atomic_write(args.out / "summary.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=1)))
    atomic_write(args.out / "spectrum.npz", lambda tmp: _savez(
        tmp, frequency_cm1=spec.frequency.values, intensity=spec.intensity_normalized.values, harmonic_cm1=freq))

    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_trace(go.Scatter(x=spec.frequency.values, y=spec.intensity_normalized.values, mode="lines",
                             name=f"VACF power spectrum (NVE {summary['md_ps']:.0f} ps)"))
    fig.add_trace(go.Scatter(x=np.repeat(freq, 3), y=np.tile([0.0, 0.15, np.nan], len(freq)), mode="lines",
                             line=dict(color="black", width=1), opacity=0.5, name="harmonic (SO3LR Hessian)"))
    fig.update_layout(title="Buckyball catcher with SO3LR: VACF spectrum and harmonic lines",
                      xaxis_title="wavenumber (cm^-1)", yaxis_title="normalised intensity")
    atomic_write(args.out / "catcher_spectrum.html", lambda tmp: fig.write_html(tmp, include_plotlyjs="cdn"))
    print(f"wrote {args.out / 'catcher_spectrum.html'}, summary.json, spectrum.npz")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
