#!/usr/bin/env python
"""Deduplication at scale: how long `MinimaDatabase.add` and `find` take as the database grows to 10,000 minima.

    .venv/bin/python benchmarks/minima_dedup.py [--minima results/hop_60min/explore] [--sizes 1000,3000,10000]

The database is filled with the real minima of an exploration (default: the hour of torsion hopping of
Ac-Ala3-NHMe; else the shipped graph) and, beyond their number, with copies of them that are distinct minima
to the database: each real geometry rotated at random, its atoms moved by 0.2 A (Gaussian), its energy drawn
uniformly over the real energy range, so the energy window holds as many candidates per eV as a real database
of that size. At each size, 200 queries are timed: new structures (a real minimum moved by 0.2 A: a miss after
the full cascade) and known ones (a stored minimum, rotated: a hit). Printed: the median and 95th percentile in
milliseconds, and how many candidates each filter stage left (energy window, fingerprint, symmetric RMSD).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def random_rotation(rng) -> np.ndarray:
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    a, b, c, d = q
    return np.array([[a*a + b*b - c*c - d*d, 2 * (b*c - a*d), 2 * (b*d + a*c)],
                     [2 * (b*c + a*d), a*a - b*b + c*c - d*d, 2 * (c*d - a*b)],
                     [2 * (b*d - a*c), 2 * (c*d + a*b), a*a - b*b - c*c + d*d]])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minima", type=Path, default=ROOT / "results" / "hop_60min" / "explore")
    p.add_argument("--sizes", default="1000,3000,10000")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from so3krates_lab.analysis import MinimaDatabase, distance_fingerprint, fingerprint_distance, load_minima
    from so3krates_lab.data import shipped_path

    path = args.minima if args.minima.with_suffix(".json").exists() else shipped_path("minima/ac_ala3_nhme_hop.json")
    real = load_minima(path)[0]
    rng = np.random.default_rng(args.seed)
    e = np.asarray(real.energies)
    sizes = sorted(int(x) for x in args.sizes.split(","))
    print(f"{len(real)} real minima of {len(real.numbers)} atoms from {path}; energy range {1e3 * np.ptp(e):.0f} meV; "
          f"tolerances {1e3 * real.energy_tol:.0f} meV, {real.rmsd_tol} A")

    def variant(k: int, noise: float = 0.2) -> np.ndarray:
        x = real.geometry(k)
        return (x - x.mean(0)) @ random_rotation(rng).T + noise * rng.normal(size=x.shape)

    db = MinimaDatabase(real.numbers, groups=real.groups, energy_tol=real.energy_tol, rmsd_tol=real.rmsd_tol)
    for k in range(len(real)):
        db.add(real.geometry(k), float(e[k]))

    def stages(x, energy) -> tuple[int, int]:
        """Candidates left by the energy window and by the fingerprint bound (the arithmetic of `find`, untimed)."""
        inside = [k for k in range(len(db)) if abs(db.energies[k] - energy) <= db.energy_tol]
        fp = distance_fingerprint(x)
        return len(inside), sum(fingerprint_distance(fp, distance_fingerprint(db.geometry(k))) <= 2 * db.rmsd_tol
                                for k in inside)
    print(f"{'minima':>7} {'query':>6} {'median ms':>10} {'p95 ms':>8} {'in window':>10} {'after fingerprint':>18} "
          f"{'matched':>8}")
    for size in sizes:
        while len(db) < size:  # distinct fillers: noise 0.2 A is far outside the 0.1 A RMSD tolerance
            k = int(rng.integers(len(real)))
            db.add(variant(k), float(rng.uniform(e.min(), e.max())))
        for kind in ("new", "known"):
            times, window, fingerprint, matched = [], [], [], 0
            for _ in range(args.queries):
                k = int(rng.integers(len(db)))
                if kind == "new":
                    x, energy = variant(int(rng.integers(len(real)))), float(rng.uniform(e.min(), e.max()))
                else:
                    x, energy = (db.geometry(k) - db.geometry(k).mean(0)) @ random_rotation(rng).T, db.energies[k]
                t0 = time.perf_counter()
                found = db.find(x, energy)
                times.append(1e3 * (time.perf_counter() - t0))
                matched += found is not None
                if len(window) < 20:  # the stage counts of the first 20 queries
                    n_window, n_fingerprint = stages(x, energy)
                    window.append(n_window)
                    fingerprint.append(n_fingerprint)
            print(f"{len(db):7d} {kind:>6} {np.median(times):10.2f} {np.percentile(times, 95):8.2f} "
                  f"{np.mean(window):10.0f} {np.mean(fingerprint):18.1f} {matched:>4}/{args.queries}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
