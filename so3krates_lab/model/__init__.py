"""SO3krates: configuration, network, the pure energy function, checkpoints, and `Potential` (model + variables)."""

from .basis import contract, cosine_cutoff, physnet_rbf, spherical_harmonics
from .checkpoint import Checkpoint, load_checkpoint, restore_opt_state, save_checkpoint
from .config import PRESETS, So3kratesConfig
from .energy import (
    CPU_COMPILER_OPTIONS, EnergyFn, compiler_options, energy_and_forces, energy_forces_stress, init_variables,
    jit_energy_and_forces, make_energy_fn, with_constants,
)
from .potential import Potential
from .so3krates import So3krates

__all__ = [
    "CPU_COMPILER_OPTIONS", "Checkpoint", "EnergyFn", "PRESETS", "Potential", "So3krates", "So3kratesConfig",
    "compiler_options", "contract", "cosine_cutoff", "energy_and_forces", "energy_forces_stress", "init_variables",
    "jit_energy_and_forces", "load_checkpoint", "make_energy_fn", "physnet_rbf", "restore_opt_state",
    "save_checkpoint", "spherical_harmonics", "with_constants",
]
