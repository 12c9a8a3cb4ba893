#!/usr/bin/env python
"""Vibrational spectra of ethanol: model harmonic frequencies against PBE/def2-SVP, and VACF power spectra.

For each model (default: the shipped data/models/ethanol_pbe.npz and, if present, a model trained on rMD17
ethanol at results/rmd17_ethanol_zeros_seed0_best.npz):
1. relax in float64 with FIRE (so3krates_lab.md.fire) from the PBE minimum to --fmax (default 1e-4 eV/A);
2. harmonic frequencies from jax.hessian (so3krates_lab.analysis.normal_modes_of) and their errors
   against data/ethanol_pbe_harmonic.npz (modes matched by sorted order): MAE, max error, all 21 lines;
3. NVE MD (compiled engine, velocity Verlet 0.5 fs, float32, velocities recorded every 2 fs) for --ps
   picoseconds from the model minimum with Maxwell-Boltzmann velocities at twice --temperature (equipartition
   then gives a mean near --temperature); the mass-weighted VACF power spectrum (Hann window) and its main
   peaks next to the nearest harmonic lines. The trajectory is stored under --out/<model>/md and a rerun
   continues it (or reuses it when complete).
Writes --out/spectra.html (plotly) and --out/summary.json.

    .venv/bin/python benchmarks/spectra.py                        # both models, 50 ps each
    .venv/bin/python benchmarks/spectra.py --model data/models/ethanol_pbe.npz --ps 5

A model on rMD17 ethanol: `.venv/bin/python benchmarks/train_rmd17.py --molecule ethanol --minutes 20`
writes results/rmd17_ethanol_zeros_seed0_best.npz.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS_MODEL = ROOT / "results" / "rmd17_ethanol_zeros_seed0_best.npz"
TRAIN_HINT = "train one with: .venv/bin/python benchmarks/train_rmd17.py --molecule ethanol --minutes 20"


def default_models() -> list[Path]:
    """The shipped ethanol model and the rMD17 one (if trained)."""
    from so3krates_lab.data import shipped_path

    return [shipped_path("models/ethanol_pbe.npz"), RESULTS_MODEL]


def relax(potential, system, fmax: float, max_steps: int = 20_000):
    """FIRE in the potential's dtype (float64 here) on the fixed graph of every atom pair (exact for any free
    molecule: pairs beyond the cutoff contribute zero) to fmax (eV/A); returns (positions, energy eV, max force
    norm eV/A, steps)."""
    import jax
    import jax.numpy as jnp

    from so3krates_lab.md import fire, force_function, relax_batch

    force_fn = force_function(potential, system, all_pairs=True)
    init, step = fire(force_fn)
    final, converged = relax_batch(init, step, jnp.asarray(system.positions, force_fn.dtype)[None], fmax=fmax,
                                   max_steps=max_steps)
    return (np.asarray(final.positions[0]), float(final.energy[0]), float(jax.vmap(lambda s: s.fmax)(final)[0]),
            int(final.step[0]))


def run_md(potential, system, *, ps: float, temperature_K: float, store_dir: Path, seed: int, model: Path):
    """Resumable NVE run of `ps` picoseconds (velocity Verlet 0.5 fs, in the potential's dtype (float32),
    recorded every 2 fs)."""
    from so3krates_lab import md

    timestep, record_every, chunk = 0.5, 4, 2000
    total_steps = int(round(ps * 1000 / timestep / chunk)) * chunk
    store = md.TrajectoryStore(store_dir, numbers=system.numbers, timestep_fs=timestep, record_every=record_every,
                               start_temperature_K=2 * temperature_K, seed=seed, model=str(model))
    sim = md.simulate(potential, system, md.NVE(timestep_fs=timestep), temperature_K=2 * temperature_K, seed=seed,
                      store=store, record_every=record_every, chunk_steps=chunk,
                      watchdogs=md.Watchdogs().with_bonds(system, max_bond_deviation=0.5))
    remaining = total_steps - int(sim.state.step)  # a store with a state was resumed from it
    t0 = time.perf_counter()
    stop = None
    if remaining > 0:
        for _ in sim.chunks(remaining):
            pass
        stop = sim.stop_reason
    seconds = time.perf_counter() - t0
    return store, stop, (seconds / remaining * 1e3 if remaining > 0 else None)


def nearest(values, targets):
    """For each value, the nearest target and the difference value - target."""
    targets = np.asarray(targets)
    idx = np.abs(np.asarray(values)[:, None] - targets[None]).argmin(axis=1)
    return targets[idx], np.asarray(values) - targets[idx]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, action="append", default=None,
                   help="checkpoint (repeat for several; default: shipped ethanol model and the rMD17 one)")
    p.add_argument("--reference", type=Path, default=None,
                   help="harmonic reference (default: the shipped ethanol_pbe_harmonic.npz)")
    p.add_argument("--fmax", type=float, default=1e-4, help="model relaxation threshold, eV/A")
    p.add_argument("--ps", type=float, default=50.0, help="NVE length, ps (0: no MD)")
    p.add_argument("--temperature", type=float, default=300.0, help="target mean temperature, K")
    p.add_argument("--skip-ps", type=float, default=1.0, help="equilibration dropped before the VACF, ps")
    p.add_argument("--max-lag-fs", type=float, default=2000.0, help="VACF lags used for the spectrum, fs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "spectra")
    args = p.parse_args(argv)
    import jax

    jax.config.update("jax_enable_x64", True)    # the model Hessians; the MD itself runs in float32
    from so3krates_lab import Potential, System
    from so3krates_lab.analysis import (
        energy_conservation, normal_modes_of, power_spectrum, spectrum_peaks, vacf_from_trajectory,
    )
    from so3krates_lab.data import shipped_dir

    if args.reference is None:
        args.reference = shipped_dir() / "ethanol_pbe_harmonic.npz"
    if not args.reference.exists():
        print(f"{args.reference} missing: python -m so3krates_lab.reference ethanol-pbe-harmonic", file=sys.stderr)
        return 1
    with np.load(args.reference) as f:
        ref = {k: f[k] for k in ("numbers", "positions", "frequencies_cm1")}
    numbers, ref_freq = ref["numbers"], ref["frequencies_cm1"]
    models = args.model or [m for m in default_models() if m.exists()]
    for m in default_models():
        if args.model is None and not m.exists():
            print(f"skipping {m}: not found ({TRAIN_HINT})", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    summary, curves = {}, {}
    for path in models:
        name = path.stem
        potential = Potential.load(path, dtype="float64")
        pbe_minimum = System(numbers=np.asarray(numbers), positions=np.asarray(ref["positions"], np.float64))
        r_min, e_min, fmax, n_steps = relax(potential, pbe_minimum, args.fmax)
        rmsd = float(np.sqrt(np.mean(np.sum((r_min - ref["positions"]) ** 2, axis=1))))
        minimum = pbe_minimum.replace(positions=r_min)
        nm = normal_modes_of(potential, minimum)
        freq = nm.frequency.values
        err = freq - ref_freq
        row = {"relax_steps": n_steps, "fmax_eV_per_A": fmax, "rmsd_to_pbe_minimum_A": rmsd,
               "frequencies_cm1": freq.tolist(), "mae_cm1": float(np.mean(np.abs(err))),
               "max_abs_error_cm1": float(np.max(np.abs(err))), "mean_signed_error_cm1": float(np.mean(err))}
        print(f"\n{name}: relaxed in {n_steps} FIRE steps to fmax {fmax:.1e} eV/A, RMSD to the PBE minimum "
              f"{rmsd:.4f} A")
        print(f"harmonic frequencies vs PBE/def2-SVP: MAE {row['mae_cm1']:.1f} cm^-1, max |error| "
              f"{row['max_abs_error_cm1']:.1f} cm^-1, mean signed error {row['mean_signed_error_cm1']:+.1f} cm^-1")
        if args.ps > 0:
            store, stop, ms = run_md(Potential.load(path, dtype="float32"), minimum, ps=args.ps,
                                     temperature_K=args.temperature, store_dir=args.out / name / "md",
                                     seed=args.seed, model=path)
            traj = store.open()
            spec = power_spectrum(vacf_from_trajectory(traj, skip_fs=1000 * args.skip_ps, mass_weighted=True,
                                                       max_lag_fs=args.max_lag_fs))
            peaks = spectrum_peaks(spec, n_peaks=12, min_separation_cm1=25.0)
            line, diff = nearest(peaks, freq)
            row.update(md_ps=float(traj.time_fs[-1] / 1000), md_mean_T_K=float(traj.temperature.mean()),
                       md_stop_reason=stop, md_ms_per_step=ms, resolution_cm1=spec.attrs["resolution_cm1"],
                       peaks_cm1=peaks.tolist(), nearest_harmonic_cm1=line.tolist())
            curves[name] = (spec.frequency.values, spec.intensity_normalized.values, freq)
            drift = energy_conservation(traj)["drift_meV_per_ps"]
            print(f"NVE {row['md_ps']:.1f} ps, mean T {row['md_mean_T_K']:.0f} K, energy drift {drift:+.3f} meV/ps"
                  + (f", {ms:.2f} ms/step" if ms else " (stored trajectory reused)")
                  + (f", STOPPED: {stop}" if stop else ""))
            print(f"VACF power spectrum (mass-weighted, Hann, lags to {args.max_lag_fs:g} fs, resolution "
                  f"{spec.attrs['resolution_cm1']:.1f} cm^-1): main peaks vs nearest harmonic line of this model")
            print("   peak cm^-1  harmonic cm^-1   diff")
            for a, b, d in zip(peaks, line, diff):
                print(f"   {a:10.1f}  {b:14.1f}  {d:+6.1f}")
        summary[name] = row
    print("\nall 21 harmonic frequencies (cm^-1), sorted; modes matched by order")
    print("mode   PBE/def2-SVP" + "".join(f"  {n[:22]:>22}" for n in summary))
    for k, f_ref in enumerate(ref_freq):
        print(f"{k + 1:4d}  {f_ref:12.1f}" + "".join(
            f"  {s['frequencies_cm1'][k]:10.1f} ({s['frequencies_cm1'][k] - f_ref:+7.1f})" for s in summary.values()))
    print("MAE " + "".join(f"  {n}: {s['mae_cm1']:.1f}" for n, s in summary.items()))
    _write(args.out, summary, curves, ref_freq)
    return 0


def _write(out: Path, summary: dict, curves: dict, ref_freq) -> None:
    from so3krates_lab.fileio import atomic_write

    atomic_write(out / "summary.json", lambda tmp: Path(tmp).write_text(json.dumps(
        {"reference_frequencies_cm1": np.asarray(ref_freq).tolist(), "models": summary}, indent=1)))
    if not curves:
        return
    import plotly.graph_objects as go

    fig = go.Figure()
    for k, (name, (f, y, lines)) in enumerate(curves.items()):
        fig.add_trace(go.Scatter(x=f, y=y + k * 1.1, name=f"{name}: VACF spectrum", mode="lines"))
        fig.add_trace(go.Scatter(x=np.repeat(lines, 3), y=np.tile([k * 1.1, k * 1.1 + 1.0, np.nan], len(lines)),
                                 mode="lines", line=dict(dash="dot", width=1), name=f"{name}: harmonic"))
    top = 1.1 * len(curves)
    fig.add_trace(go.Scatter(x=np.repeat(ref_freq, 3), y=np.tile([0, top, np.nan], len(ref_freq)), mode="lines",
                             line=dict(color="black", width=1), opacity=0.4, name="PBE/def2-SVP harmonic"))
    fig.update_layout(xaxis_title="wavenumber (cm^-1)", yaxis_title="normalised intensity (offset per model)",
                      title="Ethanol: VACF power spectra (NVE) and harmonic lines")
    atomic_write(out / "spectra.html", lambda tmp: fig.write_html(tmp, include_plotlyjs="cdn"))
    print(f"wrote {out / 'spectra.html'} and {out / 'summary.json'}")


if __name__ == "__main__":
    sys.exit(main())
