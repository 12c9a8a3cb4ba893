"""A crash-safe store of labelled frames: a folder of chunk files, each written atomically.

Each chunk `chunk_00000.npz` holds K consecutive frames of one molecule: numbers (N,), positions (K, N, 3)
Angstrom, energy (K,) eV, forces (K, N, 3) eV/Angstrom and, for MD, velocities (K, N, 3) Angstrom/fs. A chunk
is written to a temporary name and renamed into place, so a killed job leaves every finished chunk readable
and a restart continues after the last one.

One writer at a time: the first `append` of a `FrameStore` object takes the folder's writer lock
(`.writer.lock`, `so3krates_lab.fileio.WriterLock`) and keeps it for the object's life or until `close()`; a
second process appending to the same folder meanwhile gets `StoreBusyError` naming the writer (two jobs would
otherwise write the same chunk numbers). Reading takes no lock, and a killed job leaves no stale lock.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from so3krates_lab.fileio import WriterLock, atomic_write
from so3krates_lab.structures import Dataset, System


def _savez(path: str, arrays: dict, compressed: bool = False) -> None:
    with open(path, "wb") as fh:
        (np.savez_compressed if compressed else np.savez)(fh, **arrays)


class FrameStore:
    """Chunked frames of one molecule in `directory` (created if missing)."""

    def __init__(self, directory):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock: WriterLock | None = None  # the folder's writer lock, taken at the first append

    def close(self) -> None:
        """Release the writer lock early (a later append takes it again); reading needs no lock."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "FrameStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def chunk_paths(self) -> list[Path]:
        """The chunk files, in order."""
        return sorted(self.directory.glob("chunk_*.npz"))

    def __len__(self) -> int:
        return sum(int(np.load(p)["energy"].shape[0]) for p in self.chunk_paths())

    @property
    def n_chunks(self) -> int:
        """The number of chunk files."""
        return len(self.chunk_paths())

    def append(self, numbers, positions, energy, forces, velocities=None) -> Path:
        """Write the next chunk of K frames atomically; returns its path.

        numbers: (N,) atomic numbers; positions: (K, N, 3) Angstrom; energy: (K,) eV; forces: (K, N, 3)
        eV/Angstrom; velocities: (K, N, 3) Angstrom/fs, or None.
        """
        arrays = dict(numbers=np.asarray(numbers, np.int64), positions=np.asarray(positions, np.float64),
                      energy=np.asarray(energy, np.float64), forces=np.asarray(forces, np.float64))
        k, n = arrays["positions"].shape[:2]
        if arrays["energy"].shape != (k,) or arrays["forces"].shape != (k, n, 3) or arrays["numbers"].shape != (n,):
            raise ValueError(f"inconsistent chunk shapes: { {key: a.shape for key, a in arrays.items()} }")
        if velocities is not None:
            arrays["velocities"] = np.asarray(velocities, np.float64)
        if self._lock is None or not self._lock.held:  # StoreBusyError if another process appends here
            self._lock = WriterLock(self.directory, folder=True)
        return atomic_write(self.directory / f"chunk_{self.n_chunks:05d}.npz", lambda tmp: _savez(tmp, arrays))

    def arrays(self) -> dict[str, np.ndarray]:
        """All frames concatenated in order: numbers (N,), positions, energy, forces[, velocities]."""
        paths = self.chunk_paths()
        if not paths:
            raise ValueError(f"{self.directory}: no frames stored yet")
        chunks = [dict(np.load(p)) for p in paths]
        out = {"numbers": chunks[0]["numbers"]}
        for key in ("positions", "energy", "forces", "velocities"):
            if all(key in c for c in chunks):
                out[key] = np.concatenate([c[key] for c in chunks])
        return out

    def last(self) -> dict[str, np.ndarray] | None:
        """The last chunk (to resume an MD run from its final frame), or None."""
        paths = self.chunk_paths()
        return dict(np.load(paths[-1])) if paths else None

    def to_dataset(self, name: str = "") -> Dataset:
        """All frames as a labelled `Dataset` (named after the folder unless `name` is given)."""
        a = self.arrays()
        systems = [System(numbers=a["numbers"], positions=r, energy=float(e), forces=f)
                   for r, e, f in zip(a["positions"], a["energy"], a["forces"])]
        return Dataset.from_systems(systems, name=name or self.directory.name)


def write_npz(path, arrays: dict, provenance: dict) -> str:
    """Write frames as an MD17-style npz that `so3krates_lab.data.load` reads (units declared in the file).

    Keys: z, R (Angstrom), E (eV), F (eV/Angstrom), e_unit, r_unit, provenance (a JSON string). Positions and
    forces are stored as float32 (their reference precision is far coarser), energies as float64. Atomic.
    Returns the sha256 of the written file.
    """
    import hashlib

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = dict(z=arrays["numbers"].astype(np.int64), R=arrays["positions"].astype(np.float32),
                   E=arrays["energy"].astype(np.float64), F=arrays["forces"].astype(np.float32),
                   e_unit=np.array("eV"), r_unit=np.array("Ang"),
                   provenance=np.array(json.dumps(provenance, sort_keys=True)))
    atomic_write(path, lambda tmp: _savez(tmp, payload, compressed=True))
    return hashlib.sha256(path.read_bytes()).hexdigest()
