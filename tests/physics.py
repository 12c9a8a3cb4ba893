"""Reusable physics checks: each returns a number (an error), so a test can assert it is small for the real
model and large for a deliberately broken one."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from so3krates_lab.graph import Capacity, ladder_rung, neighbour_pairs, pack
from so3krates_lab.model import energy_and_forces, energy_forces_stress
from so3krates_lab.structures import System


def random_rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


# Correctness tests are dominated by compile time, not run time: compile with XLA's cheap settings.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def fast_jit(fn, **kw):
    """jax.jit with cheap compilation: tests evaluate each program a few times, so compiling beats
    op-by-op (eager) execution, which for the default model costs more than compiling it."""
    return jax.jit(fn, compiler_options=FAST_COMPILE, **kw)


fast_energy_and_forces = fast_jit(energy_and_forces, static_argnums=0)
fast_energy_forces_stress = fast_jit(energy_forces_stress, static_argnums=0)


def evaluate(energy_fn, variables, system: System, cutoff: float, dtype=np.float64, capacity=None):
    """(energy (), forces (N, 3)) of one system as NumPy float64 (jitted; ladder capacities reuse compiles)."""
    pairs = neighbour_pairs(system, cutoff)
    if capacity is None:
        capacity = Capacity(ladder_rung(system.n_atoms + 1), ladder_rung(len(pairs) + 1), 1)
    graph = pack([system], [pairs], capacity, dtype)
    e, f = fast_energy_and_forces(energy_fn, variables, graph)
    return float(e[0]), np.asarray(f)[: system.n_atoms]


def rotation_error(energy_fn, variables, system: System, cutoff: float, seed: int = 0) -> float:
    """max(|E(QR) - E(R)|, max |F(QR) - F(R) Q^T|) for a random rotation Q about the centroid."""
    q = random_rotation(seed)
    c = system.positions.mean(0)
    rotated = system.replace(positions=(system.positions - c) @ q.T + c)
    e0, f0 = evaluate(energy_fn, variables, system, cutoff)
    e1, f1 = evaluate(energy_fn, variables, rotated, cutoff)
    return max(abs(e1 - e0), float(np.abs(f1 - f0 @ q.T).max()))


def translation_error(energy_fn, variables, system: System, cutoff: float, shift=(0.7, -1.3, 2.1)) -> float:
    moved = system.replace(positions=system.positions + np.asarray(shift))
    e0, f0 = evaluate(energy_fn, variables, system, cutoff)
    e1, f1 = evaluate(energy_fn, variables, moved, cutoff)
    return max(abs(e1 - e0), float(np.abs(f1 - f0).max()))


def permutation_error(energy_fn, variables, system: System, cutoff: float, seed: int = 0) -> float:
    perm = np.random.default_rng(seed).permutation(system.n_atoms)
    permuted = system.replace(numbers=system.numbers[perm], positions=system.positions[perm])
    e0, f0 = evaluate(energy_fn, variables, system, cutoff)
    e1, f1 = evaluate(energy_fn, variables, permuted, cutoff)
    return max(abs(e1 - e0), float(np.abs(f1 - f0[perm]).max()))


def finite_difference_error(energy_fn, variables, system: System, cutoff: float, h: float = 1e-5) -> float:
    """max |F_autodiff + dE/dR_central_difference| over all coordinates (float64)."""
    pairs = neighbour_pairs(system, cutoff + 0.5)  # fixed list with margin: the energy stays smooth
    graph = pack([system], [pairs], None, np.float64)
    e_fn = fast_jit(lambda pos: energy_fn(variables, graph.replace(positions=pos))[0])
    _, forces = fast_energy_and_forces(energy_fn, variables, graph)
    pos0 = np.asarray(graph.positions)
    worst = 0.0
    for a in range(system.n_atoms):
        for k in range(3):
            plus, minus = pos0.copy(), pos0.copy()
            plus[a, k] += h
            minus[a, k] -= h
            grad = (float(e_fn(jnp.asarray(plus))) - float(e_fn(jnp.asarray(minus)))) / (2 * h)
            worst = max(worst, abs(float(forces[a, k]) + grad))
    return worst


def random_positions(rng, n: int, lengths, min_dist: float = 0.9, periodic=(False, False, False)):
    """n points uniform in [0, lengths) with pairwise (minimum-image along periodic axes) distance >= min_dist."""
    lengths = np.asarray(lengths, float)
    per = np.asarray(periodic, bool)
    pts = []
    while len(pts) < n:
        p = rng.uniform(0.0, 1.0, 3) * lengths
        if pts:
            d = np.asarray(pts) - p
            d = np.where(per, d - lengths * np.round(d / lengths), d)
            if np.linalg.norm(d, axis=1).min() < min_dist:
                continue
        pts.append(p)
    return np.asarray(pts)
