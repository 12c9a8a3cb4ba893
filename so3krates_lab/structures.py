"""Frozen data structures shared by every part of the package.

* `System`  -- one structure on the host (NumPy), in internal units (eV, Angstrom).
* `Dataset` -- an ordered collection of Systems plus where they came from.
* `Graph`   -- a padded batch of structures on the device (a JAX pytree), the model's only input.
* `Trajectory` -- frames of an MD run: what a run returns, what the trajectory store writes and reads.

Shapes use these names: N atoms of one system; A atom capacity, P pair capacity, G structure capacity of a
padded Graph.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

import numpy as np
from flax import struct

MAX_ATOMIC_NUMBER = 118


class StructureError(ValueError):
    """A structure is malformed: wrong shapes, non-finite values, unknown elements, overlapping atoms."""


def _as_float_array(name: str, value, shape_tail: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 1 + len(shape_tail) or arr.shape[1:] != shape_tail:
        expected = "(N, " + ", ".join(map(str, shape_tail)) + ")" if shape_tail else "(N,)"
        raise StructureError(f"{name} must have shape {expected}, got {arr.shape}")
    return arr


@dataclasses.dataclass(frozen=True, eq=False)
class System:
    """One structure in internal units.

    Fields::

        numbers:   (N,)   atomic numbers, 1..118
        positions: (N, 3) Angstrom
        cell:      (3, 3) Angstrom, rows are lattice vectors; None for a free molecule
        pbc:       (3,)   periodic along each lattice vector; all False when cell is None
        energy:    total energy in eV, or None when unlabelled
        forces:    (N, 3) eV/Angstrom, or None when unlabelled
    """

    numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray | None = None
    pbc: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(3, dtype=bool))
    energy: float | None = None
    forces: np.ndarray | None = None

    def __post_init__(self):
        numbers = np.asarray(self.numbers)
        if numbers.ndim != 1:
            raise StructureError(f"numbers must have shape (N,), got {numbers.shape}")
        if numbers.size == 0:
            raise StructureError("a System needs at least one atom, got 0")
        if not np.issubdtype(numbers.dtype, np.integer):
            if not np.all(np.equal(np.mod(numbers, 1), 0)):
                raise StructureError(f"atomic numbers must be integers, got {numbers.dtype}")
        numbers = numbers.astype(np.int32)
        bad = (numbers < 1) | (numbers > MAX_ATOMIC_NUMBER)
        if bad.any():
            k = int(np.argmax(bad))
            raise StructureError(f"unknown element: atomic number {int(numbers[k])} at atom {k} (valid: 1..118)")
        n = numbers.shape[0]
        positions = _as_float_array("positions", self.positions, (3,))
        if positions.shape[0] != n:
            raise StructureError(f"positions has {positions.shape[0]} atoms but numbers has {n}")
        if not np.isfinite(positions).all():
            k = int(np.argmax(~np.isfinite(positions).all(axis=1)))
            raise StructureError(f"non-finite (NaN or inf) position at atom {k}")
        pbc = np.broadcast_to(np.asarray(self.pbc, dtype=bool), (3,)).copy()
        cell = None
        if self.cell is not None:
            cell = np.asarray(self.cell, dtype=np.float64)
            if cell.shape != (3, 3):
                raise StructureError(f"cell must have shape (3, 3), got {cell.shape}")
            if not np.isfinite(cell).all():
                raise StructureError("cell contains non-finite values")
            if pbc.any() and abs(np.linalg.det(cell)) < 1e-6:
                raise StructureError("cell is singular (zero volume) but pbc is set")
        elif pbc.any():
            raise StructureError("pbc is set but no cell was given")
        forces = None
        if self.forces is not None:
            forces = _as_float_array("forces", self.forces, (3,))
            if forces.shape[0] != n:
                raise StructureError(f"forces has {forces.shape[0]} atoms but numbers has {n}")
            if not np.isfinite(forces).all():
                raise StructureError("forces contain non-finite values")
        energy = None
        if self.energy is not None:
            energy = float(np.asarray(self.energy).reshape(()))
            if not np.isfinite(energy):
                raise StructureError("energy is not finite")
        object.__setattr__(self, "numbers", numbers)
        object.__setattr__(self, "positions", positions)
        object.__setattr__(self, "cell", cell)
        object.__setattr__(self, "pbc", pbc)
        object.__setattr__(self, "forces", forces)
        object.__setattr__(self, "energy", energy)

    @property
    def n_atoms(self) -> int:
        """N, the number of atoms."""
        return int(self.numbers.shape[0])

    @property
    def periodic(self) -> bool:
        """Whether the structure is periodic along any lattice vector."""
        return bool(self.pbc.any())

    def box_and_pbc(self) -> tuple[np.ndarray, np.ndarray]:
        """(box (3, 3), pbc (3,)) for neighbour searches: zeros and all False for a free molecule."""
        if self.cell is None or not self.periodic:
            return np.zeros((3, 3)), np.zeros(3, dtype=bool)
        return self.cell, self.pbc

    def replace(self, **changes) -> "System":
        """A copy with some fields changed (checked again), e.g. ``system.replace(positions=new)``."""
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """An ordered, immutable collection of Systems with provenance.

    Fields besides `systems`::

        name:   short label (e.g. "rmd17_ethanol_train_01")
        source: path the data came from ("" when built in memory)
        sha256: hash of the source file ("" when built in memory)
        file_units: the units the file stored, e.g. {"energy": "kcal/mol", "length": "Angstrom"}
    """

    systems: tuple[System, ...]
    name: str = ""
    source: str = ""
    sha256: str = ""
    file_units: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        systems = tuple(self.systems)
        if len(systems) == 0:
            raise StructureError(f"dataset {self.name or self.source or '<memory>'} is empty (0 structures)")
        object.__setattr__(self, "systems", systems)

    def __len__(self) -> int:
        return len(self.systems)

    def __iter__(self) -> Iterator[System]:
        return iter(self.systems)

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            return self.systems[int(index)]
        if isinstance(index, slice):
            picked = self.systems[index]
        else:
            picked = tuple(self.systems[int(k)] for k in np.asarray(index).reshape(-1))
        return dataclasses.replace(self, systems=picked)

    @property
    def energies(self) -> np.ndarray:
        """(S,) total energies in eV; raises if any structure is unlabelled."""
        if any(s.energy is None for s in self.systems):
            raise StructureError(f"dataset {self.name!r} has structures without energies")
        return np.array([s.energy for s in self.systems])

    @property
    def n_atoms(self) -> np.ndarray:
        """(S,) the number of atoms of each structure."""
        return np.array([s.n_atoms for s in self.systems])

    @property
    def elements(self) -> np.ndarray:
        """Sorted unique atomic numbers present."""
        return np.unique(np.concatenate([s.numbers for s in self.systems]))

    @classmethod
    def from_systems(cls, systems: Sequence[System], **meta) -> "Dataset":
        """A Dataset of these Systems; `meta`: the other fields (name, source, ...)."""
        return cls(systems=tuple(systems), **meta)


@struct.dataclass
class Graph:
    """A padded batch of structures: the model's single input (a JAX pytree)::

        numbers:    (A,)      int32 atomic numbers, 0 marks a padding atom
        positions:  (A, 3)    Angstrom
        atom_graph: (A,)      int32 index of the structure each atom belongs to
        receivers:  (P,)      int32 i of each pair (i, j)
        senders:    (P,)      int32 j of each pair (i, j)
        cell_shifts: (P, 3)   image offsets in units of the lattice vectors: r_ij = R_j - R_i + shift @ cell
        cell:       (G, 3, 3) Angstrom (zeros for free molecules)
        atom_mask, pair_mask, graph_mask: (A,), (P,), (G,) bool, True for real entries

    Each unordered neighbour pair is stored once; the model uses it in both directions (i <- j and j <- i), so
    a Graph with P real pairs has 2P directed pairs.

    Padding pairs are masked self-pairs of the last atom slot (a padding atom unless the atom capacity is
    exactly full); padding atoms carry no energy. Always apply the masks.
    """

    numbers: np.ndarray
    positions: np.ndarray
    atom_graph: np.ndarray
    receivers: np.ndarray
    senders: np.ndarray
    cell_shifts: np.ndarray
    cell: np.ndarray
    atom_mask: np.ndarray
    pair_mask: np.ndarray
    graph_mask: np.ndarray

    @property
    def capacity(self) -> tuple[int, int, int]:
        """(atoms, pairs, graphs) capacity: the static shape that decides compilation."""
        return (int(self.numbers.shape[0]), int(self.receivers.shape[0]), int(self.cell.shape[0]))


def degrees_of_freedom(n_atoms: int, periodic: bool = False) -> int:
    """3N minus the conserved momenta removed at start: 6 for a free molecule (5 for N = 2, 3 for N = 1), 3 for
    a periodic system (at least 1). (`md.degrees_of_freedom` is this function.)

    >>> degrees_of_freedom(9), degrees_of_freedom(2), degrees_of_freedom(64, periodic=True)
    (21, 1, 189)
    """
    if periodic:
        return max(3 * n_atoms - 3, 1)
    return max(3 * n_atoms - (6 if n_atoms > 2 else 5 if n_atoms == 2 else 3), 1)


_FRAME_FIELDS = ("positions", "velocities", "potential", "kinetic", "temperature", "conserved")


@dataclasses.dataclass(frozen=True, eq=False)
class Trajectory:
    """Frames of an MD run, as a run returns them and as the trajectory store writes and reads them (host NumPy).

    Fields::

        numbers:     (N,)  atomic numbers
        time_fs:     (K,)  simulation time of each frame, fs
        positions:   (K, N, 3) Angstrom, or (K, R, N, 3) for R replicas run together
        velocities:  (K, N, 3) or (K, R, N, 3) like positions, Angstrom/fs
        potential, kinetic, conserved: (K,) or (K, R) eV (conserved: what the integrator conserves, e.g. the
                     extended energy of a Nose-Hoover chain; potential + kinetic for NVE and Langevin)
        temperature: (K,) or (K, R) K
        cell, pbc:   (3, 3) Angstrom and (3,) bool of a periodic system (None / all False for a free molecule)
        timestep_fs: the integrator's time step (frames are usually several steps apart), or None
        stop_reason: why the run stopped early (a watchdog's finding, a stop on request), or None
        stop_time_fs:(R,) for replicas: when each replica's watchdog tripped (inf: never); None for one structure
        integrator:  the integrator's name (`md.Integrator.name`, e.g. "Langevin BAOAB (300 K)"), or None
    """

    numbers: np.ndarray
    time_fs: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray
    potential: np.ndarray
    kinetic: np.ndarray
    temperature: np.ndarray
    conserved: np.ndarray
    cell: np.ndarray | None = None
    pbc: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(3, dtype=bool))
    timestep_fs: float | None = None
    stop_reason: str | None = None
    stop_time_fs: np.ndarray | None = None
    integrator: str | None = None

    def __post_init__(self):
        numbers = np.asarray(self.numbers, np.int32).reshape(-1)
        time = np.asarray(self.time_fs, np.float64).reshape(-1)
        positions = np.asarray(self.positions)
        k, n = len(time), len(numbers)
        if positions.ndim not in (3, 4) or positions.shape[0] != k or positions.shape[-2:] != (n, 3):
            raise StructureError(f"positions must have shape ({k}, N={n}, 3) or ({k}, R, {n}, 3) for {k} frames "
                                 f"of {n} atoms, got {positions.shape}")
        lead = positions.shape[:-2]
        for name in _FRAME_FIELDS[1:]:
            value = np.asarray(getattr(self, name))
            want = lead + ((n, 3) if name == "velocities" else ())
            if value.shape != want:
                raise StructureError(f"{name} must have shape {want}, got {value.shape}")
            object.__setattr__(self, name, value)
        object.__setattr__(self, "numbers", numbers)
        object.__setattr__(self, "time_fs", time)
        object.__setattr__(self, "positions", positions)
        object.__setattr__(self, "pbc", np.broadcast_to(np.asarray(self.pbc, bool), (3,)).copy())
        if self.cell is not None:
            object.__setattr__(self, "cell", np.asarray(self.cell, np.float64).reshape(3, 3))
        if self.stop_time_fs is not None:
            object.__setattr__(self, "stop_time_fs", np.asarray(self.stop_time_fs, np.float64).reshape(-1))

    # shape ---------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.time_fs.shape[0])

    @property
    def n_atoms(self) -> int:
        """N, the number of atoms."""
        return int(self.numbers.shape[0])

    @property
    def n_replicas(self) -> int | None:
        """R for a replica trajectory, None for one structure."""
        return int(self.positions.shape[1]) if self.positions.ndim == 4 else None

    @property
    def periodic(self) -> bool:
        """Whether the system is periodic along any lattice vector."""
        return bool(self.pbc.any())

    @property
    def total(self) -> np.ndarray:
        """Potential + kinetic energy (eV)."""
        return self.potential + self.kinetic

    @property
    def frame_spacing_fs(self) -> float:
        """Time between consecutive frames (fs); raises when they are not evenly spaced."""
        if len(self) < 2:
            raise ValueError("a trajectory of fewer than 2 frames has no frame spacing")
        steps = np.diff(self.time_fs)
        if not np.allclose(steps, steps[0], rtol=1e-6, atol=1e-9):
            raise ValueError(f"frames are not evenly spaced in time (steps {steps.min()}..{steps.max()} fs)")
        return float(steps[0])

    # selection -----------------------------------------------------------------------------------------------
    def take(self, index) -> "Trajectory":
        """The frames selected by `index` (a slice, integer array or boolean mask over frames)."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        picked = {name: getattr(self, name)[index] for name in ("time_fs",) + _FRAME_FIELDS}
        return dataclasses.replace(self, **picked)

    def since(self, skip_fs: float) -> "Trajectory":
        """The frames from `skip_fs` fs after the first one on (drop an equilibration period)."""
        return self.take(self.time_fs >= self.time_fs[0] + skip_fs) if len(self) else self

    def replica(self, r: int) -> "Trajectory":
        """Replica r of a replica trajectory as a one-structure trajectory (cut at its stop time, if it stopped)."""
        if self.n_replicas is None:
            raise ValueError("this trajectory has no replica axis")
        picked = {name: getattr(self, name)[:, r] for name in _FRAME_FIELDS}
        one = dataclasses.replace(self, stop_time_fs=None, **picked)
        if self.stop_time_fs is not None and np.isfinite(self.stop_time_fs[r]):
            one = one.take(one.time_fs < self.stop_time_fs[r])
        return one

    @classmethod
    def concatenate(cls, parts: Sequence["Trajectory"]) -> "Trajectory":
        """Frames of several parts (chunks of one run) in order; metadata from the last part."""
        parts = list(parts)
        if not parts:
            raise ValueError("nothing to concatenate")
        last = parts[-1]
        joined = {name: np.concatenate([getattr(p, name) for p in parts]) for name in ("time_fs",) + _FRAME_FIELDS}
        return dataclasses.replace(last, **joined)

    # conversion ----------------------------------------------------------------------------------------------
    def to_xarray(self):
        """An xarray.Dataset: dims time, [replica,] atom, xyz; units in attributes; coords time (fs), atomic_number."""
        import xarray as xr

        lead = ("time",) if self.n_replicas is None else ("time", "replica")
        data = {
            "positions": (lead + ("atom", "xyz"), self.positions.astype(np.float64), {"units": "Angstrom"}),
            "velocities": (lead + ("atom", "xyz"), self.velocities.astype(np.float64), {"units": "Angstrom/fs"}),
            "potential_energy": (lead, self.potential.astype(np.float64), {"units": "eV"}),
            "kinetic_energy": (lead, self.kinetic.astype(np.float64), {"units": "eV"}),
            "conserved_energy": (lead, self.conserved.astype(np.float64), {"units": "eV"}),
            "temperature": (lead, self.temperature.astype(np.float64), {"units": "K"}),
        }
        if self.stop_time_fs is not None:
            data["stop_time_fs"] = ("replica", self.stop_time_fs, {"units": "fs"})
        attrs = {}
        if self.timestep_fs is not None:
            attrs["timestep_fs"] = float(self.timestep_fs)
        if self.stop_reason:
            attrs["stop_reason"] = self.stop_reason
        if self.integrator:
            attrs["integrator"] = self.integrator
        if self.cell is not None:
            attrs["cell"] = self.cell.reshape(-1).tolist()
        attrs["pbc"] = [int(p) for p in self.pbc]
        return xr.Dataset(data, coords={"time": ("time", self.time_fs, {"units": "fs"}),
                                        "atomic_number": ("atom", self.numbers)}, attrs=attrs)

    @classmethod
    def from_xarray(cls, ds) -> "Trajectory":
        """The inverse of `to_xarray` (also reads what the trajectory store writes)."""
        missing = [v for v in ("positions", "velocities", "potential_energy", "kinetic_energy", "temperature")
                   if v not in ds]
        if missing or "time" not in ds.coords or "atomic_number" not in ds.coords:
            raise StructureError(f"not a trajectory dataset: missing {missing or 'the time/atomic_number coords'}")
        cell = ds.attrs.get("cell")
        potential = ds.potential_energy.values
        conserved = ds.conserved_energy.values if "conserved_energy" in ds else potential + ds.kinetic_energy.values
        pbc = ds.attrs.get("pbc", [0, 0, 0])
        return cls(numbers=ds.atomic_number.values, time_fs=ds.time.values, positions=ds.positions.values,
                   velocities=ds.velocities.values, potential=potential, kinetic=ds.kinetic_energy.values,
                   temperature=ds.temperature.values, conserved=conserved,
                   cell=None if cell is None else np.asarray(cell, float).reshape(3, 3),
                   pbc=np.asarray(pbc, bool).reshape(-1) if np.size(pbc) == 3 else np.zeros(3, bool),
                   timestep_fs=ds.attrs.get("timestep_fs"), stop_reason=ds.attrs.get("stop_reason") or None,
                   stop_time_fs=ds.stop_time_fs.values if "stop_time_fs" in ds else None,
                   integrator=ds.attrs.get("integrator") or None)

    def to_ase(self, stride: int = 1) -> list:
        """ase.Atoms per frame (every `stride`-th): positions, velocities (ASE units; `Atoms.get_velocities()`
        returns Angstrom per ASE time unit, `ase.units.fs` of which make a fs), and in `info` time_fs,
        energy (potential, eV), kinetic_eV, conserved_eV and temperature_K. `from_ase` reads them back."""
        from ase import Atoms
        from ase.units import fs

        if self.n_replicas is not None:
            raise ValueError("to_ase needs one structure: take .replica(r) first")
        out = []
        for k in range(0, len(self), int(stride)):
            atoms = Atoms(numbers=self.numbers, positions=self.positions[k],
                          cell=self.cell if self.cell is not None else None, pbc=self.pbc)
            atoms.set_velocities(self.velocities[k] / fs)
            atoms.info.update(time_fs=float(self.time_fs[k]), energy=float(self.potential[k]),
                              kinetic_eV=float(self.kinetic[k]), conserved_eV=float(self.conserved[k]),
                              temperature_K=float(self.temperature[k]))
            out.append(atoms)
        return out

    def to_extxyz(self, path, stride: int = 1):
        """Write every `stride`-th frame to an extended-XYZ file (atomically; velocities as ASE's momenta);
        returns the path. `Trajectory.from_extxyz` reads it back."""
        from pathlib import Path

        from ase.io import write

        from .fileio import atomic_write

        frames = self.to_ase(stride)
        return atomic_write(Path(path), lambda tmp: write(tmp, frames, format="extxyz"))

    @classmethod
    def from_ase(cls, frames, frame_fs: float | None = None, timestep_fs: float | None = None) -> "Trajectory":
        """A trajectory of one structure from ase.Atoms frames (the same atoms in the same order in every frame),
        e.g. another code's MD read with `ase.io.read(path, ":")`.

        Velocities come from the atoms' momenta (required: a trajectory without them would give wrong kinetic
        energies and spectra; set them with `Atoms.set_velocities`, ASE units). Time: `info["time_fs"]` of every
        frame, else frame k at k * frame_fs. Potential energy: `info["energy"]` or the attached calculator's
        (NaN where a frame has neither). kinetic_eV, temperature_K and conserved_eV are read from `info` where
        all frames have them (as `to_ase` writes them), else computed: 1/2 sum m v^2 with ASE's masses, 2 E_kin /
        (dof k_B) with `md.degrees_of_freedom`, potential + kinetic.
        """
        from ase.units import fs, kB

        frames = list(frames)
        if not frames:
            raise StructureError("from_ase needs at least one frame")
        numbers = np.asarray(frames[0].numbers)
        for k, atoms in enumerate(frames):
            if not np.array_equal(atoms.numbers, numbers):
                raise StructureError(f"frame {k} has other atoms than frame 0 (a trajectory keeps its atoms and "
                                     "their order)")
            if not atoms.has("momenta"):
                raise StructureError(f"frame {k} has no velocities (momenta); a trajectory needs them "
                                     "(Atoms.set_velocities)")
        if all("time_fs" in atoms.info for atoms in frames):
            time = np.array([float(atoms.info["time_fs"]) for atoms in frames])
        elif frame_fs is not None and frame_fs > 0:
            time = float(frame_fs) * np.arange(len(frames))
        else:
            raise StructureError("the frames carry no info['time_fs']: give frame_fs, the time between frames (fs)")

        def energy(atoms):
            if "energy" in atoms.info:
                return float(atoms.info["energy"])
            try:
                return float(atoms.get_potential_energy())
            except RuntimeError:  # no calculator attached
                return np.nan

        def read(key, computed):
            values = [atoms.info.get(key) for atoms in frames]
            return np.array(values, float) if all(v is not None for v in values) else computed

        velocities = np.stack([atoms.get_velocities() * fs for atoms in frames])  # Angstrom/fs
        masses = frames[0].get_masses()
        kinetic = read("kinetic_eV", 0.5 * np.einsum("i,kij->k", masses, (velocities / fs) ** 2))
        pbc = np.asarray(frames[0].pbc, bool)
        dof = degrees_of_freedom(len(numbers), periodic=bool(pbc.any()))
        potential = np.array([energy(atoms) for atoms in frames])
        return cls(numbers=numbers, time_fs=time, positions=np.stack([atoms.positions for atoms in frames]),
                   velocities=velocities, potential=potential, kinetic=kinetic,
                   temperature=read("temperature_K", 2.0 * kinetic / (dof * kB)),
                   conserved=read("conserved_eV", potential + kinetic),
                   cell=np.asarray(frames[0].cell) if pbc.any() else None, pbc=pbc, timestep_fs=timestep_fs)

    @classmethod
    def from_extxyz(cls, path, frame_fs: float | None = None, timestep_fs: float | None = None) -> "Trajectory":
        """Read an extended-XYZ trajectory (as `to_extxyz` writes, or another code's with velocities):
        `from_ase` of all its frames."""
        from ase.io import read

        return cls.from_ase(read(str(path), ":", format="extxyz"), frame_fs=frame_fs, timestep_fs=timestep_fs)

    def __repr__(self) -> str:
        span = f"{self.time_fs[0]:.1f}..{self.time_fs[-1]:.1f} fs" if len(self) else "empty"
        reps = f", {self.n_replicas} replicas" if self.n_replicas is not None else ""
        stop = f", stopped: {self.stop_reason}" if self.stop_reason else ""
        return f"Trajectory({len(self)} frames of {self.n_atoms} atoms{reps}, {span}{stop})"
