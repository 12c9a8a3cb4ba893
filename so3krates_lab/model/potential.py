"""`Potential`: a trained SO3krates model as one value (configuration + variables), loaded and saved in one call.

    pot = Potential.load("data/models/ethanol_pbe.npz")     # or so3krates_lab.data.shipped_model("ethanol_pbe")
    pot.evaluate(system).forces                              # eV/A
    atoms.calc = pot.calculator()                            # ASE
    sim = so3krates_lab.md.simulate(pot, system, so3krates_lab.md.Langevin(0.5, 300.0))

It follows the potential protocol (`so3krates_lab.potential_base`): `cutoff`, `dtype`, `energy(graph)`, and is
a pytree whose leaves are the variables and whose static part is the configuration, so compiled code is shared
between potentials of the same configuration (a later checkpoint, a refit of the element energies).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from ..memory import ensure_tuned
from ..potential_base import DTYPES, BasePotential
from ..structures import Graph, System
from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .config import So3kratesConfig
from .energy import init_variables, with_constants
from .so3krates import So3krates


@struct.dataclass
class Potential(BasePotential):
    """A SO3krates model: `config` (static) and `variables` {"params": ..., "constants": ...} (the leaves).

    metadata: what the checkpoint recorded (data provenance, split, training history); not traced, and never a
    reason to compile again (held in `info`). total_charge (e) and unpaired_electrons: of the structures it
    evaluates, for models with charge and spin embeddings or partial charges (SO3LR); ignored by the others.
    """

    variables: dict
    config: So3kratesConfig = struct.field(pytree_node=False)
    info: "_Info" = struct.field(pytree_node=False, default=None)
    # the structures' total charge (e) and number of unpaired electrons, for models with charge and spin
    # embeddings or partial charges (SO3LR); ignored by the others. Static: a new value compiles again.
    total_charge: float = struct.field(pytree_node=False, default=0.0)
    unpaired_electrons: float = struct.field(pytree_node=False, default=0.0)

    def __post_init__(self):
        if not isinstance(self.config, So3kratesConfig):
            raise TypeError(f"config must be a So3kratesConfig, got {type(self.config).__name__}")
        if not isinstance(self.info, _Info):
            object.__setattr__(self, "info", _Info(self.info or {}))

    @classmethod
    def create(cls, config: So3kratesConfig, variables: dict, metadata: dict | None = None) -> "Potential":
        """A potential of `config` with these `variables` and checkpoint `metadata` (not checked; `load` checks)."""
        return cls(variables=variables, config=config, info=_Info(metadata or {}))

    @classmethod
    def init(cls, config: So3kratesConfig, example: System, seed: int = 0, element_energy=None,
             energy_scale: float | None = None) -> "Potential":
        """A fresh, untrained model of `config` (random parameters from `seed`), shaped on one example System.

        element_energy (119,) eV and energy_scale set the constants (default 0 and 1); `fit` fits them from the
        training data instead (per-element energies by least squares, the scale from the RMS force).
        """
        from ..graph import graph_from_system

        graph = graph_from_system(example, config.cutoff, dtype=np.dtype(config.dtype))
        pot = cls.create(config, init_variables(config, graph, seed=seed), {"init_seed": int(seed)})
        if element_energy is None and energy_scale is None:
            return pot
        return pot.with_constants(element_energy, energy_scale)

    @property
    def metadata(self) -> dict:
        """The checkpoint's free metadata (a copy)."""
        return dict(self.info.data)

    # the protocol ------------------------------------------------------------------------------------------
    @property
    def cutoff(self) -> float:
        """The model's cutoff, Angstrom."""
        return float(self.config.cutoff)

    @property
    def dtype(self) -> str:
        """The float type it computes in, "float32" or "float64"."""
        return self.config.dtype

    def _apply(self, graph: Graph, **kwargs):
        return So3krates(self.config).apply(self.variables, graph, total_charge=self.total_charge,
                                            unpaired_electrons=self.unpaired_electrons, **kwargs)

    def energy(self, graph: Graph):
        """(G,) energies in eV."""
        return self._apply(graph)

    def atomic_energies(self, graph: Graph):
        """(A,) per-atom energies in eV (0 on padding atoms)."""
        return self._apply(graph, per_atom=True)

    def outputs(self, graph: Graph, per_atom: bool = False) -> dict:
        """The model's outputs on a Graph: "energy" (G,) eV (per_atom: (A,)), the per-atom energy terms
        "network", and where the model has them "zbl", "electrostatics", "dispersion" (eV), "partial_charges"
        (e) and "hirshfeld_ratios" (traceable)."""
        return self._apply(graph, per_atom=per_atom, outputs=True)

    def with_charge(self, total_charge: float = 0.0, unpaired_electrons: float = 0.0) -> "Potential":
        """The same model for structures of another total_charge (e) and number of unpaired_electrons."""
        for name, value in (("total_charge", total_charge), ("unpaired_electrons", unpaired_electrons)):
            if not np.isfinite(float(value)):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if float(unpaired_electrons) < 0:
            raise ValueError(f"unpaired_electrons must be >= 0, got {unpaired_electrons!r}")
        return self.replace(total_charge=float(total_charge), unpaired_electrons=float(unpaired_electrons))

    def check_system(self, system: System) -> None:
        """ValueError for an element outside the model's training elements (checkpoint metadata "elements",
        when recorded) or, for a model with long-range terms, a periodic cell narrower than twice the long-range
        cutoff (the minimum image, `model.physics.dense_pairs`)."""
        allowed = self.info.data.get("elements")
        if allowed:
            bad = sorted(set(np.asarray(system.numbers).tolist()) - set(int(z) for z in allowed))
            if bad:
                from ase.data import chemical_symbols

                name = self.info.data.get("name", "this model")
                raise ValueError(f"{name} was trained on {', '.join(chemical_symbols[int(z)] for z in allowed)} "
                                 f"only; the structure has {', '.join(chemical_symbols[z] for z in bad)}")
        cfg = self.config
        if cfg.long_range and system.periodic:
            if cfg.long_range_cutoff is None:
                raise ValueError("long_range_cutoff=None (no cutoff) is for free molecules only; a periodic "
                                 "structure needs a finite long-range cutoff")
            cell = np.asarray(system.cell, float)
            widths = abs(np.linalg.det(cell)) / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
            if not np.all(system.pbc):
                raise ValueError("the long-range terms treat a cell as periodic along all three lattice vectors; "
                                 f"this structure has pbc={system.pbc.tolist()}")
            if widths.min() < 2 * cfg.long_range_cutoff:
                raise ValueError(f"the cell is too small for the long-range cutoff: its narrowest width is "
                                 f"{widths.min():.2f} A, the minimum image needs at least 2 x "
                                 f"{cfg.long_range_cutoff:g} A (replicate the cell, or lower long_range_cutoff)")

    # the model's constants ---------------------------------------------------------------------------------
    @property
    def element_energy(self) -> np.ndarray:
        """(119,) eV per element, indexed by atomic number: the energy a lone atom of that element adds."""
        return np.asarray(self.variables["constants"]["element_energy"], np.float64)

    @property
    def energy_scale(self) -> float:
        """The scale of the network's output (eV per output unit; see `model.with_constants`)."""
        return float(np.asarray(self.variables["constants"]["energy_scale"]))

    def with_constants(self, element_energy=None, energy_scale=None) -> "Potential":
        """A copy with new element_energy (119,) eV and/or energy_scale (see `model.with_constants`)."""
        return self.replace(variables=with_constants(self.variables, element_energy, energy_scale))

    def with_dtype(self, dtype) -> "Potential":
        """The same model computing in float32 or float64 (floating variables cast; float64 needs jax_enable_x64)."""
        name = np.dtype(dtype).name
        if name not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {name!r}")
        if name == "float64" and not jax.config.jax_enable_x64:
            raise RuntimeError("float64 needs `jax.config.update('jax_enable_x64', True)` before creating arrays "
                               "(this package never changes global JAX settings itself)")
        return self.replace(variables=_as_jax(self.variables, np.dtype(name)), config=self.config.replace(dtype=name))

    @property
    def n_parameters(self) -> int:
        """The number of trained parameters (the "params" leaves; the constants not counted)."""
        return int(sum(np.size(x) for x in jax.tree.leaves(self.variables["params"])))

    # files -------------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path, dtype=None) -> "Potential":
        """A potential from a checkpoint file (`model.checkpoint` format; every version this package wrote).

        dtype: None keeps the saved configuration's; "float32" / "float64" override it.
        """
        return cls.from_checkpoint(load_checkpoint(path), dtype, where=str(path))

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, dtype=None, where: str | None = None) -> "Potential":
        """A potential from a loaded Checkpoint, after checking its variables against its configuration.

        Raises ValueError, naming `where` (the file, for messages) and the parameter, when a variable is
        missing, unexpected, of another shape than the configuration's model has, or not finite.
        """
        ensure_tuned()  # before the first JAX array: XLA:CPU's buffers stay mapped between calls (memory.py)
        config = checkpoint.config
        if config.dtype == "float64" and dtype is None and not jax.config.jax_enable_x64:
            raise RuntimeError("this checkpoint computes in float64, which needs "
                               "`jax.config.update('jax_enable_x64', True)`; or pass dtype='float32'")
        check_variables(checkpoint.variables, config, where or "checkpoint")
        pot = cls.create(config, _as_jax(checkpoint.variables, np.dtype(config.dtype)), checkpoint.metadata)
        return pot if dtype is None or np.dtype(dtype).name == config.dtype else pot.with_dtype(dtype)

    def save(self, path, *, step: int = 0, opt_state=None, metadata: dict | None = None) -> Path:
        """Write the checkpoint (atomic); metadata defaults to the potential's own. Returns the final path."""
        return save_checkpoint(path, self.config, self.variables, step=step, opt_state=opt_state,
                               metadata=self.metadata if metadata is None else metadata)

    def __repr__(self) -> str:
        c = self.config
        per_head = ", per-head projections" if c.attention_projection == "per_head" else ""
        terms = [name for name, on in (("ZBL", c.zbl), ("electrostatics", c.electrostatics),
                                       ("dispersion", c.dispersion)) if on]
        extra = ""
        if terms:
            reach = "no cutoff" if c.long_range_cutoff is None else f"{c.long_range_cutoff:g} A"
            extra = f" + {', '.join(terms)}" + (f" (long range: {reach})" if c.long_range else "")
        if c.charge_spin_embedding or c.electrostatics:
            extra += f", total charge {self.total_charge:g}, {self.unpaired_electrons:g} unpaired electrons"
        name = self.info.data.get("name")
        label = f"{name}: SO3krates" if name else "SO3krates"
        return (f"Potential({label} F={c.features}, T={c.layers}, heads={c.heads}, degrees={c.degrees}{per_head}, "
                f"cutoff={c.cutoff} A{extra}, {c.dtype}, {self.n_parameters:,} parameters)")


class _Info:
    """Metadata carried beside the pytree's static part: all instances compare equal and hash alike, so that
    provenance never changes a compiled function's cache key."""

    __slots__ = ("data",)

    def __init__(self, data):
        self.data = dict(data)

    def __eq__(self, other):
        return isinstance(other, _Info)

    def __hash__(self):
        return 0


def check_variables(variables, config: So3kratesConfig, where: str = "checkpoint") -> None:
    """ValueError naming `where` unless `variables` has exactly the tree and leaf shapes of `config`'s model
    and every floating leaf is finite."""
    found = _flat_shapes(variables)
    expected = _expected_shapes(config)
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing parameter(s) {missing}")
        if unexpected:
            parts.append(f"unexpected parameter(s) {unexpected}")
        raise ValueError(f"{where}: the variables do not match the model of its configuration: "
                         + "; ".join(parts))
    for key, shape in expected.items():
        if found[key].shape != shape:
            raise ValueError(f"{where}: parameter {key} has shape {found[key].shape}, but the model of its "
                             f"configuration expects {shape}")
    for key, arr in found.items():
        if np.issubdtype(arr.dtype, np.inexact) and not np.isfinite(arr).all():
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            raise ValueError(f"{where}: parameter {key} has {bad} non-finite value(s) (NaN or inf) of "
                             f"{np.size(arr)}")


def _flat_shapes(tree, prefix: str = "") -> dict[str, np.ndarray]:
    """{'/'-joined path: numpy leaf} of nested dicts."""
    if not isinstance(tree, Mapping):
        return {prefix or "<root>": np.asarray(tree)}
    out: dict = {}
    for key, value in tree.items():
        out.update(_flat_shapes(value, f"{prefix}/{key}" if prefix else str(key)))
    return out


# a small molecule (water, Angstrom) to trace the model's init on: the parameter shapes depend only on the config
_EXAMPLE = System(numbers=np.array([8, 1, 1]),
                  positions=np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]]))


@functools.lru_cache(maxsize=16)
def _expected_shapes(config: So3kratesConfig) -> dict[str, tuple]:
    """{'/'-joined path: shape} of the variables `So3krates(config).init` makes (traced, nothing computed)."""
    from ..graph import graph_from_system

    if config.dtype != "float32" and not jax.config.jax_enable_x64:
        config = config.replace(dtype="float32")  # same shapes; traced without 64-bit JAX
    graph = graph_from_system(_EXAMPLE, config.cutoff, dtype=np.dtype(config.dtype))
    shapes = jax.eval_shape(So3krates(config).init, jax.random.PRNGKey(0), graph)
    flat = jax.tree_util.tree_flatten_with_path(shapes)[0]
    return {"/".join(str(getattr(k, "key", k)) for k in path): tuple(leaf.shape) for path, leaf in flat}


def _as_jax(variables, float_type: np.dtype):
    def leaf(x):
        x = np.asarray(x)
        return jnp.asarray(x, dtype=float_type if np.issubdtype(x.dtype, np.floating) else x.dtype)

    return jax.tree.map(leaf, variables)


__all__ = ["Potential"]
