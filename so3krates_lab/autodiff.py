"""Autodiff helpers and compiled-function options shared by every layer that evaluates an energy function.

energy_fn(variables, graph) -> (G,) energies in eV is the only model interface the package needs; forces
(eV/A) and stress (eV/A^3) come from one autodiff helper each, never from flags on the forward pass. This module
imports nothing from the rest of the package but `structures`, so that md and analysis can use it while
receiving the energy function as an argument.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from .structures import Graph

#: The type of an energy function: energy_fn(variables, graph) -> (G,) energies in eV.
EnergyFn = Callable[[dict, Graph], jax.Array]


# XLA:CPU (jaxlib 0.10) routes dots through YNNPACK fusions by default. For this model they were slower than
# XLA's own dot emitter on the 2-core development machines in alternating side-by-side runs
# (`benchmarks/speed.py --ynn on|off`, see README): 25-40% on the buckyball catcher and water-192, 2-30% on
# ethanol and aspirin. The option is passed per compiled function, never set globally.
#: XLA options for compiled functions on the CPU backend (YNNPACK dot fusions off; see `compiler_options`).
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


def compiler_options() -> dict | None:
    """Per-function XLA options for the current default backend (None: XLA's defaults)."""
    return dict(CPU_COMPILER_OPTIONS) if jax.default_backend() == "cpu" else None


def energy_and_forces(energy_fn: EnergyFn, variables, graph: Graph):
    """(energies (G,) eV, forces (A, 3) eV/A) with F = -dE/dR by reverse-mode autodiff."""

    def total(positions):
        e = energy_fn(variables, graph.replace(positions=positions))
        return jnp.sum(e), e

    (_, energies), grad = jax.value_and_grad(total, has_aux=True)(graph.positions)
    return energies, -grad


def energy_forces_stress(energy_fn: EnergyFn, variables, graph: Graph):
    """(energies (G,), forces (A, 3), stress (G, 3, 3) eV/A^3) for periodic structures.

    Stress = (1/V) dE/d(epsilon) for a symmetric strain epsilon applied to positions and cell. Free
    structures (zero cell) get zero stress.
    """
    n_graphs = graph.cell.shape[0]
    dtype = graph.positions.dtype

    def total(positions, strain):
        sym = 0.5 * (strain + jnp.swapaxes(strain, -1, -2))
        eye = jnp.eye(3, dtype=dtype)
        deform = eye + sym  # (G, 3, 3)
        pos = jnp.einsum("ac,acd->ad", positions, deform[graph.atom_graph])
        cell = jnp.einsum("gkc,gcd->gkd", graph.cell, deform)
        e = energy_fn(variables, graph.replace(positions=pos, cell=cell))
        return jnp.sum(e), e

    strain0 = jnp.zeros((n_graphs, 3, 3), dtype)
    (_, energies), (g_pos, g_strain) = jax.value_and_grad(total, argnums=(0, 1), has_aux=True)(
        graph.positions, strain0
    )
    volume = jnp.abs(jnp.linalg.det(graph.cell))
    safe_volume = jnp.where(volume > 0, volume, jnp.ones_like(volume))
    stress = jnp.where((volume > 0)[:, None, None], g_strain / safe_volume[:, None, None], 0.0)
    return energies, -g_pos, stress
