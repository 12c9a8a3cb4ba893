"""The potential protocol: what every energy model in the toolkit offers, and the behaviour built on it.

A potential is a JAX pytree (for example a `flax.struct.dataclass`: arrays as leaves, settings as static fields)
with three members::

    cutoff: float              Angstrom; the energy depends only on pairs closer than this
    dtype:  str                "float32" or "float64", the float type of positions it computes in
    energy(graph) -> (G,)      eV; pure and traceable (jit, grad, vmap), padding must contribute nothing

Everything else comes from `BasePotential`, which the SO3krates model (`so3krates_lab.Potential`), analytic
test potentials and later model families subclass: forces and stress by autodiff, evaluation of `System`s on the
host, an ASE calculator. Molecular dynamics (`so3krates_lab.md`), minimisation and evaluation receive a potential
and use only these members, so they never import the model.

Being a pytree matters: compiled functions take the potential as an argument, so evaluating a second potential
with the same settings (a later checkpoint, a refit) reuses the compiled code instead of compiling again.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Protocol, Sequence, runtime_checkable

import jax
import numpy as np

from .autodiff import compiler_options, energy_and_forces, energy_forces_stress
from .structures import Graph, System

DTYPES = ("float32", "float64")  #: the float types a potential may compute in


@runtime_checkable
class PotentialProtocol(Protocol):
    """The three members every potential has (see the module docstring); for type hints and isinstance checks:
    cutoff (Angstrom), dtype ("float32" or "float64") and energy(graph)."""

    cutoff: float
    dtype: str

    def energy(self, graph: Graph) -> jax.Array:
        """(G,) energies in eV of the structures of a padded `Graph` (traceable, jittable)."""
        ...


def graph_energy(potential, graph: Graph):
    """The energy_fn(variables, graph) form of a potential, for the autodiff helpers (`autodiff.energy_and_forces`):
    the potential plays the variables, so compiled functions take it as an argument."""
    return potential.energy(graph)


@functools.cache
def compiled_evaluator(kind: str):
    """The jitted (potential, graph) -> (energies, forces) ("forces") or (energies, forces, stress) ("stress"),
    shared by every potential: compiled once per potential type, static settings and graph shape."""
    fn = {"forces": functools.partial(energy_and_forces, graph_energy),
          "stress": functools.partial(energy_forces_stress, graph_energy)}[kind]
    return jax.jit(fn, compiler_options=compiler_options())


@dataclasses.dataclass(frozen=True)
class Prediction:
    """Host-side results of `BasePotential.evaluate`: energies (S,) eV, forces [(N_s, 3)] eV/A per structure,
    stress (S, 3, 3) eV/A^3 (zeros for free structures) when asked for, else None."""

    energies: np.ndarray
    forces: list
    stress: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.energies)


def check_potential(potential) -> None:
    """Raise TypeError naming what is missing when `potential` does not follow the protocol."""
    missing = [name for name in ("cutoff", "dtype", "energy") if not hasattr(potential, name)]
    if missing:
        raise TypeError(f"{type(potential).__name__} is not a potential: it lacks {', '.join(missing)} "
                        "(a potential has cutoff (Angstrom), dtype and energy(graph); see so3krates_lab.BasePotential)")
    if str(potential.dtype) not in DTYPES:
        raise TypeError(f"{type(potential).__name__}.dtype must be one of {DTYPES}, got {potential.dtype!r}")


def check_system(potential, system: System) -> None:
    """`potential.check_system(system)` where the potential has one (a `BasePotential`; a potential that only
    follows the protocol may not): ValueError when it cannot describe the system."""
    check = getattr(potential, "check_system", None)
    if check is not None:
        check(system)


def float_dtype(potential) -> type:
    """The NumPy float type a potential computes in (np.float32 or np.float64)."""
    return np.float64 if str(potential.dtype) == "float64" else np.float32


class BasePotential:
    """Behaviour shared by every potential; subclasses define `cutoff`, `dtype` and `energy(graph)`.

    Subclass it as a pytree (`@flax.struct.dataclass`), e.g. an analytic pair potential::

        @struct.dataclass
        class Harmonic(BasePotential):
            k: float = 1.0                      # eV/A^2 (a leaf: could be fitted)
            r0: float = struct.field(pytree_node=False, default=1.0)
            cutoff: float = struct.field(pytree_node=False, default=3.0)
            dtype: str = struct.field(pytree_node=False, default="float64")

            def energy(self, graph):
                ...  # (G,) eV from graph.positions, pairs and masks
    """

    cutoff: float
    dtype: str

    def energy(self, graph: Graph) -> jax.Array:
        """(G,) energies in eV of a padded Graph (pure, traceable)."""
        raise NotImplementedError(f"{type(self).__name__} must define energy(graph)")

    def check_system(self, system: System) -> None:
        """Raise ValueError when the potential cannot describe `system` (e.g. an element it was never trained
        on); called on the host by `evaluate`, the ASE calculator and the MD and minimisation force functions.
        The default accepts everything."""

    # traceable helpers -------------------------------------------------------------------------------------
    def energy_and_forces(self, graph: Graph):
        """(energies (G,) eV, forces (A, 3) eV/A), F = -dE/dR by autodiff; traceable."""
        return energy_and_forces(graph_energy, self, graph)

    def energy_forces_stress(self, graph: Graph):
        """(energies (G,), forces (A, 3), stress (G, 3, 3) eV/A^3) by autodiff; traceable."""
        return energy_forces_stress(graph_energy, self, graph)

    # host helpers ------------------------------------------------------------------------------------------
    def evaluate(self, systems: System | Sequence[System], *, stress: bool | None = None,
                 batch_size: int = 16) -> Prediction:
        """Energies, forces (and stress) of one System or a sequence of them, compiled per capacity rung.

        stress: None computes it when any structure is periodic. Structures are packed `batch_size` at a time
        with capacities from the batching ladder (`graph.ladder_rung`), so similar sizes share compiled code.
        """
        from .graph import Capacity, ladder_rung, neighbour_pairs, pack

        check_potential(self)
        systems = [systems] if isinstance(systems, System) else list(systems)
        if not systems:
            raise ValueError("evaluate needs at least one System")
        for s in systems:
            self.check_system(s)
        want_stress = any(s.periodic for s in systems) if stress is None else bool(stress)
        run = compiled_evaluator("stress" if want_stress else "forces")
        dtype = float_dtype(self)
        energies, forces, stresses = [], [], []
        for start in range(0, len(systems), batch_size):
            part = systems[start:start + batch_size]
            pairs = [neighbour_pairs(s, self.cutoff) for s in part]
            capacity = Capacity(ladder_rung(sum(s.n_atoms for s in part) + 1),
                                ladder_rung(sum(len(p) for p in pairs) + 1), ladder_rung(len(part), minimum=1))
            out = run(self, pack(part, pairs, capacity, dtype))
            e, f = np.asarray(out[0], np.float64), np.asarray(out[1], np.float64)
            a0 = 0
            for g, s in enumerate(part):
                energies.append(e[g])
                forces.append(f[a0:a0 + s.n_atoms])
                a0 += s.n_atoms
            if want_stress:
                stresses.extend(np.asarray(out[2], np.float64)[:len(part)])
        return Prediction(np.array(energies), forces, np.array(stresses) if want_stress else None)

    def calculator(self, **kwargs):
        """An ASE calculator for this potential (`so3krates_lab.interop.PotentialCalculator`)."""
        from .interop import PotentialCalculator  # ASE is an adapter at the edge, imported only when asked for

        return PotentialCalculator(self, **kwargs)


__all__ = ["BasePotential", "DTYPES", "Prediction", "PotentialProtocol", "check_potential", "check_system",
           "compiled_evaluator", "float_dtype", "graph_energy"]
