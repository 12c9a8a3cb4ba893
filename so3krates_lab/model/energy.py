"""The pure model boundary: energy_fn(variables, graph) -> (G,) energies in eV, and its variables.

Forces and stress come from the autodiff helpers of `so3krates_lab.autodiff`, re-exported here.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ..autodiff import (  # noqa: F401  (re-exported: the model's public helpers)
    CPU_COMPILER_OPTIONS, EnergyFn, compiler_options, energy_and_forces, energy_forces_stress,
)
from ..memory import ensure_tuned
from ..structures import Graph
from .config import So3kratesConfig
from .so3krates import So3krates


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
    ensure_tuned()  # a fresh model is an entry point too (memory.py): before the first JAX array
    return jax.jit(So3krates(config).init)(jax.random.PRNGKey(seed), graph)


def with_constants(variables: dict, element_energy=None, energy_scale=None) -> dict:
    """A copy of `variables` with new element energies (119,) eV and/or energy scale () (it multiplies the
    network's output: eV per output unit). element_energy: (119,) eV, indexed by atomic number."""
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


