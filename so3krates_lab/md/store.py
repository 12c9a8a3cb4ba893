"""Trajectory store: MD frames on disk as they are produced, readable after a crash, resumable.

A store is a folder: `meta.json` (atomic numbers, time step, anything the caller adds), one netCDF file per
chunk (`frames_00000.nc`, ..., each written to a temporary name and renamed, so a file is either complete or
absent), `state.npz` (the integrator state after the last stored chunk, atomic) and, if a watchdog stopped the
run, `offending.nc` with the frames from the first bad one on and `stop_reason.txt`.

    store = TrajectoryStore("runs/ethanol", numbers=numbers, timestep_fs=0.5)
    ds = store.open()             # xarray.Dataset: time, atom, xyz
    store.to_extxyz("traj.extxyz") / store.to_ase()
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np

from .._io import atomic_write


class TrajectoryStore:
    def __init__(self, directory, numbers=None, timestep_fs: float | None = None, **meta):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        meta_path = self.directory / "meta.json"
        if meta_path.exists():
            self.meta = json.loads(meta_path.read_text())
            if numbers is not None and list(map(int, numbers)) != self.meta["numbers"]:
                raise ValueError(f"{self.directory} holds a trajectory of different atoms; use a new folder")
        else:
            if numbers is None:
                raise ValueError(f"{self.directory} is not a trajectory store yet: pass numbers= to create one")
            self.meta = {"numbers": [int(z) for z in numbers], "timestep_fs": timestep_fs, **meta}
            atomic_write(meta_path, lambda tmp: Path(tmp).write_text(json.dumps(self.meta, indent=1)))

    # frames -------------------------------------------------------------------------------------------------
    def _dataset(self, frames):
        import xarray as xr

        return xr.Dataset(
            {"positions": (("time", "atom", "xyz"), frames.positions.astype(np.float64), {"units": "Angstrom"}),
             "velocities": (("time", "atom", "xyz"), frames.velocities.astype(np.float64),
                            {"units": "Angstrom/fs"}),
             "potential_energy": ("time", frames.potential, {"units": "eV"}),
             "kinetic_energy": ("time", frames.kinetic, {"units": "eV"}),
             "conserved_energy": ("time", frames.conserved, {"units": "eV"}),
             "temperature": ("time", frames.temperature, {"units": "K"})},
            coords={"time": ("time", frames.time_fs.astype(np.float64), {"units": "fs"}),
                    "atomic_number": ("atom", np.asarray(self.meta["numbers"], np.int32))},
        )

    def chunk_paths(self) -> list[Path]:
        return sorted(self.directory.glob("frames_*.nc"))

    def append(self, frames) -> Path:
        path = self.directory / f"frames_{len(self.chunk_paths()):05d}.nc"
        ds = self._dataset(frames)
        atomic_write(path, lambda tmp: ds.to_netcdf(tmp, engine="scipy"))
        return path

    def open(self):
        """All stored frames as one xarray.Dataset (dims time, atom, xyz)."""
        import xarray as xr

        paths = self.chunk_paths()
        if not paths:
            raise ValueError(f"{self.directory}: no frames stored")
        parts = []
        for p in paths:
            with xr.open_dataset(p, engine="scipy") as ds:
                parts.append(ds.load())
        out = xr.concat(parts, dim="time")
        out.attrs.update({k: json.dumps(v) if not isinstance(v, (int, float, str)) else v
                          for k, v in self.meta.items() if v is not None})
        return out

    def save_offending(self, frames, reason: str) -> None:
        ds = self._dataset(frames)
        atomic_write(self.directory / "offending.nc", lambda tmp: ds.to_netcdf(tmp, engine="scipy"))
        self.save_stop_reason(reason)

    def save_stop_reason(self, reason: str) -> None:
        """Record why the run stopped (a watchdog's finding, or a stop on request) in `stop_reason.txt`."""
        atomic_write(self.directory / "stop_reason.txt", lambda tmp: Path(tmp).write_text(reason + "\n"))

    def clear_stop_reason(self) -> None:
        """Forget a recorded stop (the run goes on); offending frames, if any, stay in `offending.nc`."""
        (self.directory / "stop_reason.txt").unlink(missing_ok=True)

    def stop_reason(self) -> str | None:
        """The recorded reason the run stopped, or None if it was never stopped early."""
        path = self.directory / "stop_reason.txt"
        return path.read_text().strip() if path.exists() else None

    # integrator state --------------------------------------------------------------------------------------
    def save_state(self, state) -> None:
        """The MD state's arrays (PRNG keys as raw key data); the neighbour list is not stored (rebuilt)."""
        arrays = {"positions": state.positions, "velocities": state.velocities, "forces": state.forces,
                  "potential": state.potential, "masses": state.masses, "step": state.step}
        for name, value in state.thermostat.items():
            if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
                arrays[f"thermostat_key__{name}"] = jax.random.key_data(value)
            else:
                arrays[f"thermostat__{name}"] = value
        arrays = {k: np.asarray(v) for k, v in arrays.items()}
        atomic_write(self.directory / "state.npz", lambda tmp: _savez_to(tmp, arrays))

    def has_state(self) -> bool:
        return (self.directory / "state.npz").exists()

    def load_state(self, template):
        """The saved state, in the structure of `template` (a fresh state from the same integrator's init)."""
        with np.load(self.directory / "state.npz") as f:
            saved = dict(f)
        thermostat = {}
        for name, value in template.thermostat.items():
            if f"thermostat_key__{name}" in saved:
                thermostat[name] = jax.random.wrap_key_data(saved[f"thermostat_key__{name}"])
            else:
                thermostat[name] = jax.numpy.asarray(saved[f"thermostat__{name}"], value.dtype)
        return template.replace(**{k: jax.numpy.asarray(saved[k], getattr(template, k).dtype)
                                   for k in ("positions", "velocities", "forces", "potential", "masses", "step")},
                                thermostat=thermostat)

    # export -------------------------------------------------------------------------------------------------
    def to_ase(self, stride: int = 1) -> list:
        from ase import Atoms

        ds = self.open()
        numbers = self.meta["numbers"]
        out = []
        for k in range(0, ds.sizes["time"], stride):
            atoms = Atoms(numbers=numbers, positions=ds.positions.values[k])
            atoms.info.update(time_fs=float(ds.time.values[k]), energy=float(ds.potential_energy.values[k]),
                              temperature_K=float(ds.temperature.values[k]))
            out.append(atoms)
        return out

    def to_extxyz(self, path, stride: int = 1) -> Path:
        from ase.io import write

        path = Path(path)
        frames = self.to_ase(stride)
        atomic_write(path, lambda tmp: write(tmp, frames, format="extxyz"))
        return path


def _savez_to(path: str, arrays: dict) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


__all__ = ["TrajectoryStore"]
