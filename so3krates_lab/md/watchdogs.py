"""Watchdogs: limits checked on every recorded MD frame, so that an exploding run stops cleanly."""

from __future__ import annotations

import dataclasses

import numpy as np

from ..structures import System, Trajectory


@dataclasses.dataclass(frozen=True)
class Watchdogs:
    """Limits checked on every recorded frame (None disables one). Non-finite values always stop a run.

    min_distance: smallest interatomic distance (Angstrom); max_bond_deviation: largest change of a covalent
    bond length from its value in `bonds_reference` (Angstrom; spec section 6 uses 0.5); max_temperature (K);
    max_energy_drift: |E_total - E_total(start)| per atom (eV), for NVE.
    """

    min_distance: float | None = 0.5
    max_bond_deviation: float | None = None
    max_temperature: float | None = None
    max_energy_drift: float | None = None
    bonds: np.ndarray | None = None  # (B, 2) atom index pairs, set with `with_bonds`
    bond_lengths: np.ndarray | None = None  # (B,) reference lengths

    def with_bonds(self, numbers, positions=None, max_bond_deviation: float = 0.5, scale: float = 1.2
                   ) -> "Watchdogs":
        """Covalent bonds of a reference geometry: pairs closer than `scale` x the sum of covalent radii.

        numbers, positions: the reference geometry (Angstrom), or a `System` as the first argument."""
        from ase.data import covalent_radii

        if isinstance(numbers, System):
            numbers, positions = numbers.numbers, numbers.positions
        if positions is None:
            raise ValueError("with_bonds needs the reference positions (or a System)")
        r = np.asarray(positions, float)
        d = np.linalg.norm(r[:, None] - r[None], axis=-1)
        radii = covalent_radii[np.asarray(numbers)]
        i, j = np.nonzero(np.triu(d < scale * (radii[:, None] + radii[None]), 1))
        return dataclasses.replace(self, max_bond_deviation=max_bond_deviation, bonds=np.c_[i, j],
                                   bond_lengths=d[i, j])

    def first_violation(self, frames: Trajectory, e0_per_atom: float | None, periodic: bool) -> tuple[int, str] | None:
        """(index of the first offending frame, description) or None, for the frames of one structure."""
        n_atoms = frames.positions.shape[1]
        checks = []
        finite = np.isfinite(frames.positions).all((1, 2)) & np.isfinite(frames.potential) \
            & np.isfinite(frames.velocities).all((1, 2))
        checks.append((~finite, lambda k: "non-finite positions, velocities or energy"))
        if self.min_distance is not None and not periodic and n_atoms > 1:
            iu = np.triu_indices(n_atoms, 1)
            dmin = np.linalg.norm(frames.positions[:, iu[0]] - frames.positions[:, iu[1]], axis=-1).min(1)
            checks.append((dmin < self.min_distance,
                           lambda k: f"atoms {dmin[k]:.3f} A apart (min_distance {self.min_distance} A)"))
        if self.max_bond_deviation is not None and self.bonds is not None and len(self.bonds):
            b = self.bonds
            lengths = np.linalg.norm(frames.positions[:, b[:, 0]] - frames.positions[:, b[:, 1]], axis=-1)
            dev = np.abs(lengths - self.bond_lengths).max(1)
            checks.append((dev > self.max_bond_deviation,
                           lambda k: f"a bond length deviates by {dev[k]:.3f} A "
                                     f"(max_bond_deviation {self.max_bond_deviation} A)"))
        if self.max_temperature is not None:
            checks.append((frames.temperature > self.max_temperature,
                           lambda k: f"temperature {frames.temperature[k]:.0f} K > {self.max_temperature} K"))
        if self.max_energy_drift is not None and e0_per_atom is not None:
            drift = np.abs(frames.total / n_atoms - e0_per_atom)
            checks.append((drift > self.max_energy_drift,
                           lambda k: f"total energy drifted {1e3 * drift[k]:.2f} meV/atom "
                                     f"(max_energy_drift {1e3 * self.max_energy_drift} meV/atom)"))
        first = None
        for bad, describe in checks:
            hits = np.nonzero(bad)[0]
            if len(hits) and (first is None or hits[0] < first[0]):
                first = (int(hits[0]), describe(int(hits[0])))
        return first
