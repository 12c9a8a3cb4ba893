"""Trajectory store: MD frames on disk as they are produced, readable after a crash, resumable.

A store is a folder: `meta.json` (atomic numbers, time step, cell, anything the caller adds), one netCDF file per
chunk (`frames_00000.nc`, ..., each written to a temporary name and renamed, so a file is either complete or
absent), `state.npz` (the integrator state after the last stored chunk, plus the driver's bookkeeping; atomic)
and, if a watchdog stopped the run, `offending.nc` with the frames from the first bad one on and
`stop_reason.txt`. Replica runs store a `replica` dimension.

Commit protocol: the driver writes a chunk's frames first, then the state, and the state records how many chunk
files it follows (`committed_chunks`). A chunk file beyond that count was written by a run killed before it
could save its state: `open()` ignores it, and the resumed run, which restarts from the saved state, writes that
chunk again in its place. So a kill at any moment leaves a store that opens with strictly increasing times and
resumes to the uninterrupted trajectory (`open()` checks the times and names the file where they go back).
A store that never saved a state (frames appended by hand) counts every chunk file.

One writer at a time: the first write of a `TrajectoryStore` object (creating meta.json, a chunk, a state, a stop
reason) takes the folder's writer lock (`.writer.lock`, `so3krates_lab.fileio.WriterLock`) and keeps it for the
object's life or until `close()` (or the end of a `with store:` block). A second process that writes to the same
folder meanwhile gets `StoreBusyError` naming the writing process, instead of interleaving its chunks with the
first run's. Reading (`open()`, the state, the stop reason) takes no lock: a running simulation's store can be
analysed from another process. The lock dies with its process (kill -9 included), so a killed run leaves no
stale lock; store objects of the same process on the same folder share it.

    store = TrajectoryStore("runs/ethanol", numbers=numbers, timestep_fs=0.5)
    traj = store.open()           # so3krates_lab.Trajectory (traj.to_xarray(), traj.to_ase(), traj.to_extxyz(path))
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np

from ..fileio import WriterLock, atomic_write
from ..structures import Trajectory

_DRIVER_PREFIX = "driver__"


class TrajectoryStore:
    """The trajectory store in folder `directory` (see the module docstring), opened or created.

    numbers: (N,) atomic numbers, required to create a store (checked against an existing one); timestep_fs: the
    MD time step (fs); cell: (3, 3) Angstrom, or None for a free molecule; pbc: (3,) bool periodicity (with a
    cell); meta: anything else JSON-serialisable for meta.json (kept only when the store is created).
    """

    def __init__(self, directory, numbers=None, timestep_fs: float | None = None, *, cell=None, pbc=None, **meta):
        self._pending = 0  # chunks appended by this object since its last save_state
        self._lock: WriterLock | None = None  # the folder's writer lock, taken at the first write
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
            if cell is not None:
                self.meta["cell"] = np.asarray(cell, float).reshape(-1).tolist()
                self.meta["pbc"] = [bool(p) for p in np.broadcast_to(np.asarray(pbc, bool), (3,))]
            self._writing()
            atomic_write(meta_path, lambda tmp: Path(tmp).write_text(json.dumps(self.meta, indent=1)))

    @property
    def numbers(self) -> np.ndarray:
        """(N,) atomic numbers of the stored atoms."""
        return np.asarray(self.meta["numbers"], np.int32)

    # writer lock --------------------------------------------------------------------------------------------
    def _writing(self) -> None:
        """Take the folder's writer lock before this object's first write (StoreBusyError if another process
        writes the store)."""
        if self._lock is None or not self._lock.held:
            self._lock = WriterLock(self.directory, folder=True)

    def close(self) -> None:
        """Release the writer lock early (a later write takes it again); reading needs no lock."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "TrajectoryStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # frames -------------------------------------------------------------------------------------------------
    def _all_chunk_paths(self) -> list[Path]:
        return sorted(self.directory.glob("frames_*.nc"))

    def committed_chunks(self) -> int | None:
        """How many chunk files the saved state follows (None: no state recorded a count)."""
        if not self.has_state():
            return None
        with np.load(self.directory / "state.npz") as f:
            return int(f["committed_chunks"]) if "committed_chunks" in f.files else None

    def _next_index(self) -> int:
        committed = self.committed_chunks()
        return len(self._all_chunk_paths()) if committed is None else committed + self._pending

    def chunk_paths(self) -> list[Path]:
        """The committed chunk files, in order (see the commit protocol above)."""
        paths = self._all_chunk_paths()
        committed = self.committed_chunks()
        return paths if committed is None else paths[:committed]

    def append(self, frames: Trajectory) -> Path:
        """Write one chunk of frames (a file per chunk, atomic), after the committed ones: a chunk left behind by a
        killed run (written, never committed by a state) is replaced."""
        self._writing()
        path = self.directory / f"frames_{self._next_index():05d}.nc"
        ds = frames.to_xarray()
        atomic_write(path, lambda tmp: ds.to_netcdf(tmp, engine="scipy"))
        self._pending += 1
        return path

    def open(self) -> Trajectory:
        """All stored frames as one `Trajectory` (with the recorded stop reason, if the run stopped early)."""
        import xarray as xr

        paths = self.chunk_paths()
        if not paths:
            raise ValueError(f"{self.directory}: no frames stored")
        parts, last = [], -np.inf
        for p in paths:
            with xr.open_dataset(p, engine="scipy") as ds:
                part = Trajectory.from_xarray(ds.load())
            times = part.time_fs
            if len(times) and (times[0] <= last or np.any(np.diff(times) <= 0)):
                raise ValueError(f"{p}: frame times do not increase ({float(times[0]):g} fs after {float(last):g} "
                                 "fs): the store holds overlapping runs; use a new folder")
            last = times[-1] if len(times) else last
            parts.append(part)
        cell = self.meta.get("cell")
        joined = Trajectory.concatenate(parts)
        return dataclasses.replace(joined, numbers=self.numbers,
                                   timestep_fs=self.meta.get("timestep_fs"),
                                   cell=None if cell is None else np.asarray(cell).reshape(3, 3),
                                   pbc=self.meta.get("pbc", [False] * 3), stop_reason=self.stop_reason(),
                                   integrator=self.meta.get("integrator") or joined.integrator)

    def save_offending(self, frames: Trajectory, reason: str) -> None:
        """Write the frames from the first bad one on to `offending.nc` and record `reason` as the stop reason."""
        self._writing()
        ds = frames.to_xarray()
        atomic_write(self.directory / "offending.nc", lambda tmp: ds.to_netcdf(tmp, engine="scipy"))
        self.save_stop_reason(reason)

    def save_stop_reason(self, reason: str) -> None:
        """Record why the run stopped (a watchdog's finding, or a stop on request) in `stop_reason.txt`."""
        self._writing()
        atomic_write(self.directory / "stop_reason.txt", lambda tmp: Path(tmp).write_text(reason + "\n"))

    def clear_stop_reason(self) -> None:
        """Forget a recorded stop (the run goes on); offending frames, if any, stay in `offending.nc`."""
        self._writing()
        (self.directory / "stop_reason.txt").unlink(missing_ok=True)

    def stop_reason(self) -> str | None:
        """The recorded reason the run stopped, or None if it was never stopped early."""
        path = self.directory / "stop_reason.txt"
        return path.read_text().strip() if path.exists() else None

    # integrator state --------------------------------------------------------------------------------------
    def save_state(self, state, **driver) -> None:
        """The MD state's arrays (PRNG keys as raw key data; the neighbour list is not stored, it is rebuilt) and
        the driver's bookkeeping arrays (`driver`: e.g. which replicas are active)."""
        self._writing()
        arrays = {"positions": state.positions, "velocities": state.velocities, "forces": state.forces,
                  "potential": state.potential, "masses": state.masses, "step": state.step}
        for name, value in state.thermostat.items():
            if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
                arrays[f"thermostat_key__{name}"] = jax.random.key_data(value)
            else:
                arrays[f"thermostat__{name}"] = value
        arrays.update({_DRIVER_PREFIX + k: v for k, v in driver.items()})
        committed = self._next_index()  # this state commits every chunk written so far
        arrays["committed_chunks"] = committed
        arrays = {k: np.asarray(v) for k, v in arrays.items()}
        atomic_write(self.directory / "state.npz", lambda tmp: _savez_to(tmp, arrays))
        self._pending = 0
        for stale in self._all_chunk_paths()[committed:]:  # left by a run killed between a chunk and its state
            stale.unlink(missing_ok=True)

    def has_state(self) -> bool:
        """Whether a state was saved (`state.npz`), i.e. whether the run can be resumed."""
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
        for k in ("positions", "velocities"):
            if saved[k].shape != tuple(getattr(template, k).shape):
                raise ValueError(f"{self.directory}/state.npz: saved {k} have shape {saved[k].shape}, the run "
                                 f"expects {tuple(getattr(template, k).shape)} (another system or replica count?)")
        return template.replace(**{k: jax.numpy.asarray(saved[k], getattr(template, k).dtype)
                                   for k in ("positions", "velocities", "forces", "potential", "masses", "step")},
                                thermostat=thermostat)

    def load_driver_state(self) -> dict:
        """The driver's bookkeeping saved with the last state ({} when none was saved)."""
        if not self.has_state():
            return {}
        with np.load(self.directory / "state.npz") as f:
            return {k[len(_DRIVER_PREFIX):]: f[k] for k in f.files if k.startswith(_DRIVER_PREFIX)}

    # export -------------------------------------------------------------------------------------------------
    def to_ase(self, stride: int = 1) -> list:
        """Every `stride`-th stored frame as an ASE Atoms object (see `Trajectory.to_ase`)."""
        return self.open().to_ase(stride)

    def to_extxyz(self, path, stride: int = 1) -> Path:
        """Write every `stride`-th stored frame to an extended XYZ file `path` (see `Trajectory.to_extxyz`)."""
        return self.open().to_extxyz(path, stride)


def _savez_to(path: str, arrays: dict) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


__all__ = ["TrajectoryStore"]
