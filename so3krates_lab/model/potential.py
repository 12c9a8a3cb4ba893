"""The pure model boundary and everything derived from it by automatic differentiation.

energy_fn(variables, graph) -> (G,) energies in eV is the only function the rest of the package needs.
Forces (eV/A) and stress (eV/A^3) come from one autodiff helper each, never from flags on the forward pass.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ..structures import Graph
from .config import So3kratesConfig
from .so3krates import So3krates

EnergyFn = Callable[[dict, Graph], jax.Array]


# XLA:CPU (jaxlib 0.10) routes dots through YNNPACK fusions by default. For this model they were slower than
# XLA's own dot emitter on the 2-core development machines in alternating side-by-side runs
# (`benchmarks/speed.py --ynn on|off`, see README): 25-40% on the buckyball catcher and water-192, 2-30% on
# ethanol and aspirin. The option is passed per compiled function, never set globally.
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


def compiler_options() -> dict | None:
    """Per-function XLA options for the current default backend (None: XLA's defaults)."""
    return dict(CPU_COMPILER_OPTIONS) if jax.default_backend() == "cpu" else None


def jit_energy_and_forces(energy_fn: "EnergyFn", options: dict | None = None):
    """jax.jit of `energy_and_forces(energy_fn, variables, graph)` with the backend's compiler options."""
    return jax.jit(functools.partial(energy_and_forces, energy_fn),
                   compiler_options=compiler_options() if options is None else options)


def make_energy_fn(config: So3kratesConfig) -> EnergyFn:
    """energy_fn(variables, graph) -> (G,) energies in eV (pure; jit it or differentiate it)."""
    model = So3krates(config)

    def energy_fn(variables, graph: Graph):
        return model.apply(variables, graph)

    return energy_fn


def init_variables(config: So3kratesConfig, graph: Graph, seed: int = 0) -> dict:
    """Fresh variables {"params": ..., "constants": ...} in the config's dtype.

    The constants (element energies, energy scale) start at 0 and 1; fit them from data before training.
    """
    if config.dtype == "float64" and not jax.config.jax_enable_x64:
        raise RuntimeError(
            "config.dtype='float64' needs 64-bit JAX: run `jax.config.update('jax_enable_x64', True)` "
            "before creating arrays (this package never changes global JAX settings itself)"
        )
    return jax.jit(So3krates(config).init)(jax.random.PRNGKey(seed), graph)


def with_constants(variables: dict, element_energy=None, energy_scale=None) -> dict:
    """A copy of `variables` with new element energies (119,) eV and/or energy scale ()."""
    constants = dict(variables["constants"])
    dtype = constants["element_energy"].dtype
    if element_energy is not None:
        element_energy = np.asarray(element_energy)
        if element_energy.shape != (119,):
            raise ValueError(f"element_energy must have shape (119,), got {element_energy.shape}")
        constants["element_energy"] = jnp.asarray(element_energy, dtype)
    if energy_scale is not None:
        constants["energy_scale"] = jnp.asarray(energy_scale, dtype)
    return {**variables, "constants": constants}


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
