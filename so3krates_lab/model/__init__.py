"""SO3krates: configuration, network, and the pure energy function with autodiff forces and stress."""

from .basis import contract, cosine_cutoff, physnet_rbf, spherical_harmonics
from .config import PRESETS, So3kratesConfig
from .potential import (
    CPU_COMPILER_OPTIONS, EnergyFn, compiler_options, energy_and_forces, energy_forces_stress, init_variables,
    jit_energy_and_forces, make_energy_fn, with_constants,
)
from .so3krates import So3krates

__all__ = [
    "CPU_COMPILER_OPTIONS", "PRESETS", "EnergyFn", "compiler_options", "jit_energy_and_forces", "So3krates", "So3kratesConfig", "contract", "cosine_cutoff", "energy_and_forces",
    "energy_forces_stress", "init_variables", "make_energy_fn", "physnet_rbf", "spherical_harmonics",
    "with_constants",
]
