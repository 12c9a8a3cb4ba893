"""Sampling geometries by MD with a reference calculator, and labelling frames with one; both resumable.

Every long loop writes a chunk of frames at a time into a FrameStore, so a killed job loses at most the chunk
in progress and a rerun with the same arguments continues where it stopped. MD chunks draw their Langevin noise
from a generator seeded by (seed, chunk index) and start from the stored positions and velocities of the
previous chunk, so a resumed run reproduces an uninterrupted one (up to SCF convergence noise).
Ctrl-C or SIGTERM lets the chunk in progress finish and be stored, then raises `interrupts.Interrupted`.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms, units
from ase.md.langevin import Langevin
from ase.md import velocitydistribution

from so3krates_lab.interrupts import deferred_interrupts
from so3krates_lab.reference.store import FrameStore
from so3krates_lab.structures import System


def _progress(total: int, initial: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="frame", disable=not enabled, mininterval=2.0)


def atoms_from_system(system: System) -> Atoms:
    """The `System` as an ASE Atoms object (positions in Angstrom; its cell and pbc if periodic, no labels)."""
    cell, pbc = system.box_and_pbc()
    return Atoms(numbers=system.numbers, positions=system.positions, cell=cell, pbc=pbc)


def sample_md(start: System | Atoms, calculator, store: FrameStore, *, temperature_K: float, n_frames: int,
              stride: int, timestep_fs: float = 0.5, friction_per_fs: float = 0.01, burn_in_steps: int = 0,
              seed: int = 0, chunk_frames: int = 25, progress: bool = True) -> FrameStore:
    """Langevin MD at temperature_K with `calculator`; store a labelled frame every `stride` steps.

    The first chunk starts from `start` with Maxwell-Boltzmann velocities (no net momentum or rotation) after
    `burn_in_steps` unrecorded steps. Frames carry the calculator's own energy and forces (eV, eV/Angstrom).
    Returns `store` holding n_frames frames (resumes if it already holds some chunks).
    """
    if n_frames <= 0 or stride <= 0 or chunk_frames <= 0:
        raise ValueError("n_frames, stride and chunk_frames must be positive")
    atoms = start.copy() if isinstance(start, Atoms) else atoms_from_system(start)
    atoms.calc = calculator
    n_chunks = -(-n_frames // chunk_frames)
    last = store.last()
    if last is None:
        rng = np.random.default_rng([seed, 0])
        if hasattr(velocitydistribution, "thermalize_momenta"):  # ASE >= 3.29
            velocitydistribution.thermalize_momenta(atoms, temperature_K, rng=rng)
        else:
            velocitydistribution.MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
        velocitydistribution.Stationary(atoms)
        velocitydistribution.ZeroRotation(atoms)
        if burn_in_steps:
            Langevin(atoms, timestep_fs * units.fs, temperature_K=temperature_K,
                     fixcm=False, friction=friction_per_fs / units.fs, rng=np.random.default_rng([seed, 1])).run(burn_in_steps)
    else:
        if not np.array_equal(last["numbers"], atoms.numbers):
            raise ValueError(f"{store.directory} holds a different molecule; use a new folder")
        atoms.positions = last["positions"][-1]
        atoms.set_velocities(last["velocities"][-1] / units.fs)
    done = store.n_chunks
    bar = _progress(n_frames, min(done * chunk_frames, n_frames), f"MD {temperature_K:g} K", progress)
    for c in range(done, n_chunks):
        k = min(chunk_frames, n_frames - c * chunk_frames)
        with deferred_interrupts() as interrupt:
            interrupt.raise_if_requested(f"MD sampling stopped before chunk {c + 1} of {n_chunks}; "
                                         f"{store.directory} holds every frame so far: rerun to resume")
            dyn = Langevin(atoms, timestep_fs * units.fs, temperature_K=temperature_K, fixcm=False,
                           friction=friction_per_fs / units.fs, rng=np.random.default_rng([seed, 2 + c]))
            R, E, F, V = [], [], [], []
            for _ in range(k):
                dyn.run(stride)
                R.append(atoms.positions.copy())
                E.append(atoms.get_potential_energy())
                F.append(atoms.get_forces())
                V.append(atoms.get_velocities() * units.fs)
                bar.update(1)
            store.append(atoms.numbers, R, E, F, velocities=V)
        # Continue from the stored state (velocities round-trip through Angstrom/fs), exactly as a resumed run
        # would, so that resuming reproduces an uninterrupted run bit for bit.
        atoms.set_velocities(np.asarray(V[-1]) / units.fs)
        if interrupt.requested:
            bar.close()
            interrupt.raise_if_requested(f"MD sampling stopped after chunk {c + 1} of {n_chunks}; "
                                         f"{store.directory} holds every frame so far: rerun to resume")
    bar.close()
    return store


def label_frames(numbers, positions, calculator, store: FrameStore, *, chunk_frames: int = 10,
                 progress: bool = True, desc: str = "label") -> FrameStore:
    """Energy and forces of each geometry in `positions` (K, N, 3) Angstrom of the atoms `numbers` (N,) with
    `calculator`, in order, resumable."""
    numbers = np.asarray(numbers)
    positions = np.asarray(positions, np.float64)
    total = len(positions)
    done = len(store)
    if done > total:
        raise ValueError(f"{store.directory} holds {done} frames but only {total} geometries were given")
    atoms = Atoms(numbers=numbers, positions=positions[0])
    atoms.calc = calculator
    bar = _progress(total, done, desc, progress)
    for start in range(done, total, chunk_frames):
        with deferred_interrupts() as interrupt:
            interrupt.raise_if_requested(f"labelling stopped after {start} of {total} frames; "
                                         f"{store.directory} holds them: rerun to resume")
            E, F = [], []
            for r in positions[start:start + chunk_frames]:
                atoms.positions = r
                E.append(atoms.get_potential_energy())
                F.append(atoms.get_forces())
                bar.update(1)
            store.append(numbers, positions[start:start + len(E)], E, F)
        if interrupt.requested:
            bar.close()
            interrupt.raise_if_requested(f"labelling stopped after {start + len(E)} of {total} frames; "
                                         f"{store.directory} holds them: rerun to resume")
    bar.close()
    return store
