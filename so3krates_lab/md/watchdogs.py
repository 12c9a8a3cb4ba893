"""Watchdogs: limits checked on every recorded MD frame, so that an exploding run stops cleanly.

`Watchdogs()` with no arguments, the default of `md.simulate` and `md.Simulation`, works for any molecule without
configuration: its limits are "auto" and `Simulation` fits them to the run when it starts (`Watchdogs.for_run`;
the resolved limits are `sim.watchdogs`, `print(sim.watchdogs.summary())` explains them):

- max_bond_deviation: every covalent bond of the start geometry (atoms closer than 1.2 x the sum of their
  covalent radii, minimum image for a periodic cell) keeps its length within 0.5 A of its start value, the
  instability criterion of the MD stability protocol (spec section 6). Off when the start has no bonds (or the
  elements are unknown, atomic number 0).
- max_temperature: `temperature_factor(dof)` x the run's reference temperature, the largest of the thermostat's
  target, the start temperature and 300 K (NVE may start at 0 K from a displaced geometry, and a thermostat far
  colder than the start structure first heats up from its potential energy). The factor is the 1e-12 upper tail
  of the canonical distribution of the instantaneous temperature (Gamma(dof/2), relative std sqrt(2/dof)), at
  least 2: 4.89 for ethanol (dof 21), 2.19 for Ac-Ala3-NHMe (dof 120), 51 for a diatomic. A 300 ps run records
  15,000-30,000 frames, so a legitimate run never reaches it (300 ps of ethanol at 500 K peaks at 2.9 x), while
  an exploding one reaches 10^4-10^5 K.
- max_energy_drift: for an energy-conserving (NVE) run, abs(E_total - E_total(start)) per atom stays below
  2 k T_ref (86 meV/atom at 500 K); the shipped ethanol model drifts at most about 0.08 meV/atom/ps at 0.5 fs
  (24 meV in 300 ps) and fluctuates by about 0.5 meV/atom.
  Off for thermostats, which exchange energy with a bath.
- min_distance 0.5 A (free molecules) and non-finite positions, velocities or energies, as always.

An explicit value overrides an automatic one (`Watchdogs(max_temperature=5000.0)`), None disables a check, and
`Watchdogs.finite_only()` keeps only the non-finite check. A stop reason names the limit that fired and, for an
automatic one, how it was chosen and how to change it.

`watchdog_margins` reports how close a trajectory came to each limit (benchmarks/watchdog_margins.py prints it
for the stability runs).
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from ..structures import System, Trajectory

AUTO = "auto"  # the default of the automatic limits: `Watchdogs.for_run` fills them in for a run
BOND_SCALE = 1.2  # bonded: closer than this times the sum of covalent radii
AUTO_BOND_DEVIATION_A = 0.5  # spec section 6
TEMPERATURE_FLOOR_K = 300.0  # the lowest reference temperature of the automatic ceiling
TEMPERATURE_TAIL = 1e-12  # per-frame probability of a canonical run exceeding the automatic ceiling
MIN_TEMPERATURE_FACTOR = 2.0  # the ceiling is at least this times the reference temperature
ENERGY_DRIFT_KT = 2.0  # the automatic NVE drift limit, in k T_ref per atom
_KB_EV_PER_K = 8.617333262e-5
_LIMITS = ("max_bond_deviation", "max_temperature", "max_energy_drift")


def temperature_factor(dof: int, tail: float = TEMPERATURE_TAIL, minimum: float = MIN_TEMPERATURE_FACTOR) -> float:
    """T/T_ref exceeded with probability `tail` by one frame of a canonical run with `dof` degrees of freedom
    (2K/(dof kT) follows Gamma(dof/2, scale 2/dof)), and at least `minimum`."""
    from scipy.special import gammainccinv

    a = 0.5 * max(int(dof), 1)
    return max(float(minimum), float(gammainccinv(a, tail)) / a)


def reference_temperature(temperature_K: float | None, start_temperature_K: float | None,
                          floor_K: float = TEMPERATURE_FLOOR_K) -> tuple[float, str]:
    """(T_ref K, what it is) of the automatic limits: the largest of the thermostat's target (None for NVE), the
    start temperature and `floor_K`; the target when it ties with the start (velocities drawn at the target)."""
    value = max(float(floor_K), float(start_temperature_K or 0.0), float(temperature_K or 0.0))
    if temperature_K is not None and temperature_K >= (1 - 1e-6) * value:
        return value, "the thermostat's target"
    if start_temperature_K is not None and start_temperature_K >= value:
        return value, "the start temperature"
    return value, f"the {floor_K:g} K floor"


def start_temperature(velocities, masses, dof: int) -> float:
    """Kinetic temperature (K) of a state's velocities (N, 3) or (R, N, 3) Angstrom/fs with masses (N,) or (R, N)
    amu; the hottest replica."""
    from .integrators import ACCEL

    v = np.asarray(velocities, np.float64)
    m = np.broadcast_to(np.asarray(masses, np.float64), v.shape[:-1])
    kinetic = 0.5 * (m[..., None] * v**2).sum((-2, -1)) / ACCEL
    return float(np.max(2.0 * kinetic / (max(int(dof), 1) * _KB_EV_PER_K))) if v.size else 0.0


def covalent_bonds(numbers, positions, cell=None, scale: float = BOND_SCALE) -> tuple[np.ndarray, np.ndarray]:
    """(bonds (B, 2) atom pairs i < j, lengths (B,) Angstrom): atoms closer than `scale` x the sum of their
    covalent radii (ASE's). cell: (3, 3) of a periodic system (minimum image, every lattice vector periodic),
    None for a free molecule. Atoms of unknown element (atomic number 0) have no bonds."""
    from ase import Atoms
    from ase.data import covalent_radii
    from ase.neighborlist import neighbor_list

    numbers = np.asarray(numbers, int).reshape(-1)
    r = np.asarray(positions, np.float64).reshape(len(numbers), 3)
    none = np.zeros((0, 2), int), np.zeros(0)
    if len(numbers) < 2 or not np.isfinite(r).all():
        return none
    radii = np.where(numbers > 0, scale * np.asarray(covalent_radii)[numbers], 0.0)
    if cell is None:
        atoms = Atoms(numbers=numbers, positions=r)
    else:
        atoms = Atoms(numbers=numbers, positions=r, cell=np.asarray(cell, np.float64), pbc=True)
    i, j, d = neighbor_list("ijd", atoms, radii, self_interaction=False)
    keep = (i < j) & (numbers[i] > 0) & (numbers[j] > 0)
    i, j, d = i[keep], j[keep], d[keep]
    if not len(i):
        return none
    # a pair bonded through several images of a small cell: its shortest (the minimum image) bond
    order = np.lexsort((d, j, i))
    i, j, d = i[order], j[order], d[order]
    first = np.r_[True, (np.diff(i) != 0) | (np.diff(j) != 0)]
    return np.c_[i[first], j[first]], d[first]


def bond_lengths(positions, bonds, cell=None) -> np.ndarray:
    """Lengths (..., B) Angstrom of `bonds` (B, 2) in positions (..., N, 3); minimum image when `cell` is given."""
    p = np.asarray(positions, np.float64)
    bonds = np.asarray(bonds, int).reshape(-1, 2)
    v = p[..., bonds[:, 1], :] - p[..., bonds[:, 0], :]
    if cell is None:
        return np.linalg.norm(v, axis=-1)
    cell = np.asarray(cell, np.float64).reshape(3, 3)
    frac = v @ np.linalg.inv(cell)
    v = (frac - np.round(frac)) @ cell
    best = np.linalg.norm(v, axis=-1)
    gram = cell @ cell.T
    if not np.allclose(gram, np.diag(np.diag(gram)), atol=1e-9 * np.abs(gram).max()):
        # a skewed cell: rounding the fractional coordinates may miss the minimum image by one lattice vector
        for shift in itertools.product((-1, 0, 1), repeat=3):
            if any(shift):
                best = np.minimum(best, np.linalg.norm(v + np.asarray(shift, float) @ cell, axis=-1))
    return best


def _is_auto(value) -> bool:
    return isinstance(value, str) and value == AUTO


@dataclasses.dataclass(frozen=True)
class Watchdogs:
    """Limits checked on every recorded frame. "auto": fitted to the run by `for_run` (see the module docstring);
    a number: that limit; None: that check is off. Non-finite values always stop a run.

    min_distance: smallest interatomic distance (Angstrom, free molecules). max_bond_deviation: largest change of a
    covalent bond length from its start value (Angstrom; spec section 6 uses 0.5). max_temperature: K.
    max_energy_drift: abs(E_total - E_total(start)) per atom (eV), checked when the run conserves energy (NVE).
    bonds, bond_lengths: (B, 2) atom pairs and (B,) reference lengths in Angstrom (`with_bonds`, or `for_run` from
    the start geometry). cell: (3, 3) Angstrom of a periodic system, for minimum-image bond lengths. automatic: {limit: how
    it was chosen} for the limits `for_run` filled in.
    """

    min_distance: float | None = 0.5
    max_bond_deviation: float | str | None = AUTO
    max_temperature: float | str | None = AUTO
    max_energy_drift: float | str | None = AUTO
    bonds: np.ndarray | None = None
    bond_lengths: np.ndarray | None = None
    cell: np.ndarray | None = None
    automatic: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def finite_only(cls) -> "Watchdogs":
        """Only non-finite positions, velocities or energies stop a run (every other check off)."""
        return cls(min_distance=None, max_bond_deviation=None, max_temperature=None, max_energy_drift=None)

    @property
    def resolved(self) -> bool:
        """No limit is still "auto"."""
        return not any(_is_auto(getattr(self, name)) for name in _LIMITS)

    def with_bonds(self, numbers, positions=None, max_bond_deviation: float = 0.5, scale: float = BOND_SCALE,
                   cell=None) -> "Watchdogs":
        """Covalent bonds of a reference geometry: pairs closer than `scale` x the sum of covalent radii.

        numbers (N,), positions (N, 3) Angstrom: the reference geometry, or a `System` as the first argument (its
        cell, if periodic). max_bond_deviation: the largest change of a bond length, Angstrom. cell: (3, 3)
        Angstrom of a periodic system, for minimum-image bond vectors."""
        if isinstance(numbers, System):
            numbers, positions, cell = numbers.numbers, numbers.positions, (
                numbers.cell if numbers.periodic else None)
        if positions is None:
            raise ValueError("with_bonds needs the reference positions (or a System)")
        bonds, lengths = covalent_bonds(numbers, positions, cell, scale)
        automatic = {k: v for k, v in self.automatic.items() if k != "max_bond_deviation"}
        return dataclasses.replace(self, max_bond_deviation=max_bond_deviation, bonds=bonds, bond_lengths=lengths,
                                   cell=None if cell is None else np.asarray(cell, np.float64).reshape(3, 3),
                                   automatic=automatic)

    def for_run(self, numbers, positions, cell=None, periodic: bool = False, temperature_K: float | None = None,
                energy_conserving: bool = False, dof: int | None = None,
                start_temperature_K: float | None = None) -> "Watchdogs":
        """These watchdogs with every "auto" limit filled in for a run (explicit values and None are kept).

        numbers (N,), positions (N, 3) or (R, N, 3) Angstrom (replicas of one system: bonds from replica 0): the
        start geometry. cell: the system's (3, 3) cell in Angstrom, or None; periodic: whether it is periodic
        (minimum-image bonds). temperature_K: the thermostat's target
        (None for NVE). energy_conserving: the run conserves potential + kinetic energy (NVE). dof: degrees of
        freedom of the temperature (default 3N - 6, or 3N - 3 periodic). start_temperature_K: of the start
        velocities (the hottest replica)."""
        from .integrators import degrees_of_freedom

        numbers = np.asarray(numbers, int).reshape(-1)
        r = np.asarray(positions, np.float64)
        r = r[0] if r.ndim == 3 else r
        n = len(numbers)
        cell = np.asarray(cell, np.float64).reshape(3, 3) if periodic and cell is not None else self.cell
        dof = degrees_of_freedom(n, periodic) if dof is None else int(dof)
        changes, automatic = {"cell": cell}, dict(self.automatic)

        deviation = self.max_bond_deviation
        if deviation is not None and (self.bonds is None or _is_auto(deviation)):
            bonds, lengths = (self.bonds, self.bond_lengths) if self.bonds is not None else \
                covalent_bonds(numbers, r, cell)
            changes.update(bonds=bonds, bond_lengths=lengths)
            if _is_auto(deviation):
                if len(bonds):
                    changes["max_bond_deviation"] = AUTO_BOND_DEVIATION_A
                    automatic["max_bond_deviation"] = (
                        f"the {len(bonds)} covalent bonds of the start geometry"
                        f"{' (minimum image)' if cell is not None else ''}")
                else:
                    changes["max_bond_deviation"] = None
                    automatic["max_bond_deviation"] = "off: the start geometry has no covalent bonds"

        reference, source = reference_temperature(temperature_K, start_temperature_K)
        if _is_auto(self.max_temperature):
            factor = temperature_factor(dof)
            changes["max_temperature"] = factor * reference
            automatic["max_temperature"] = f"{factor:.2f} x {reference:.0f} K ({source}) for {dof} degrees of freedom"
        if _is_auto(self.max_energy_drift):
            if energy_conserving:
                changes["max_energy_drift"] = ENERGY_DRIFT_KT * _KB_EV_PER_K * reference
                automatic["max_energy_drift"] = f"{ENERGY_DRIFT_KT:g} kT per atom at {reference:.0f} K ({source})"
            else:
                changes["max_energy_drift"] = None
                automatic["max_energy_drift"] = "off: a thermostat exchanges energy with its bath"
        return dataclasses.replace(self, automatic=automatic, **changes)

    def summary(self) -> str:
        """The limits, one a line, with how each automatic one was chosen."""
        def show(name, value, unit, scale=1.0):
            text = "off" if value is None else value if _is_auto(value) else f"{scale * value:.4g} {unit}"
            note = self.automatic.get(name)
            if note is not None and value is None:
                return f"{name}: {note} (automatic)"
            return f"{name}: {text}" + (f" (automatic: {note})" if note else "")

        return "\n".join([
            "non-finite positions, velocities or energies: always checked",
            show("min_distance", self.min_distance, "A"),
            show("max_bond_deviation", self.max_bond_deviation, "A"),
            show("max_temperature", self.max_temperature, "K"),
            show("max_energy_drift", self.max_energy_drift, "meV/atom", 1e3)])

    def _suffix(self, name: str) -> str:
        note = self.automatic.get(name)
        if note is None:
            return ""
        return f", automatic: {note}; set md.Watchdogs({name}=...) to change it, or None to turn it off"

    def first_violation(self, frames: Trajectory, e0_per_atom: float | None, periodic: bool) -> tuple[int, str] | None:
        """(index of the first offending frame, description) or None, for the frames of one structure.

        e0_per_atom: the conserved energy per atom at the start (eV; for max_energy_drift). periodic: the system is
        periodic (min_distance is then not checked)."""
        if not self.resolved:
            raise ValueError('these watchdogs still have "auto" limits: resolve them for the run with '
                             "Watchdogs.for_run(...) (md.Simulation does)")
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
            cell = (self.cell if self.cell is not None else frames.cell) if periodic else None
            devs = np.abs(bond_lengths(frames.positions, b, cell) - self.bond_lengths)
            dev = devs.max(1)

            def bond_text(k):
                from ase.data import chemical_symbols

                i, j = b[int(np.argmax(devs[k]))]
                names = [f"{chemical_symbols[int(frames.numbers[a])]}{a}" for a in (i, j)]
                return (f"a bond length deviates by {dev[k]:.3f} A ({names[0]}-{names[1]}, start "
                        f"{self.bond_lengths[int(np.argmax(devs[k]))]:.3f} A; max_bond_deviation "
                        f"{self.max_bond_deviation:g} A{self._suffix('max_bond_deviation')})")

            checks.append((dev > self.max_bond_deviation, bond_text))
        if self.max_temperature is not None:
            checks.append((frames.temperature > self.max_temperature,
                           lambda k: f"temperature {frames.temperature[k]:.0f} K (max_temperature "
                                     f"{self.max_temperature:.0f} K{self._suffix('max_temperature')})"))
        if self.max_energy_drift is not None and e0_per_atom is not None:
            drift = np.abs(frames.total / n_atoms - e0_per_atom)
            checks.append((drift > self.max_energy_drift,
                           lambda k: f"total energy drifted {1e3 * drift[k]:.2f} meV/atom (max_energy_drift "
                                     f"{1e3 * self.max_energy_drift:.2f} meV/atom{self._suffix('max_energy_drift')})"))
        first = None
        for bad, describe in checks:
            hits = np.nonzero(bad)[0]
            if len(hits) and (first is None or hits[0] < first[0]):
                first = (int(hits[0]), describe(int(hits[0])))
        return first


def watchdog_margins(watchdogs: Watchdogs, frames: Trajectory, e0_per_atom: float | None = None,
                     periodic: bool = False, previous: dict | None = None) -> dict:
    """How close the frames of one structure came to each limit of resolved `watchdogs`.

    Returns a dict (JSON-ready): frames, t_end_ps; for each check the extreme seen and the limit
    (max_bond_deviation / min_distance in A, max_temperature in K, max_energy_drift in eV/atom, None when off);
    drift_slope_meV_per_atom_ps (least squares of E_total per atom against time, with e0_per_atom); first_violation
    ([time fs, reason] or None). previous: the result for earlier frames of the same run (chunks processed
    before), combined with these."""
    if not watchdogs.resolved:
        raise ValueError('resolve the watchdogs with Watchdogs.for_run(...) first')
    n = len(frames)
    out = {"frames": n, "t_end_ps": float(frames.time_fs[-1]) / 1e3 if n else 0.0,
           "max_bond_deviation": [None, watchdogs.max_bond_deviation],
           "min_distance": [None, watchdogs.min_distance],
           "max_temperature": [float(frames.temperature.max()) if n else None, watchdogs.max_temperature],
           "max_energy_drift": [None, watchdogs.max_energy_drift],
           "drift_sums": None, "first_violation": None}
    if n and watchdogs.bonds is not None and len(watchdogs.bonds):
        cell = (watchdogs.cell if watchdogs.cell is not None else frames.cell) if periodic else None
        lengths = bond_lengths(frames.positions, watchdogs.bonds, cell)
        out["max_bond_deviation"][0] = float(np.abs(lengths - watchdogs.bond_lengths).max())
    if n and not periodic and frames.n_atoms > 1:
        iu = np.triu_indices(frames.n_atoms, 1)
        out["min_distance"][0] = float(np.linalg.norm(frames.positions[:, iu[0]] - frames.positions[:, iu[1]],
                                                      axis=-1).min())
    if n and e0_per_atom is not None:
        e = frames.total / frames.n_atoms - e0_per_atom
        t = frames.time_fs / 1e3
        out["max_energy_drift"][0] = float(np.abs(e).max())
        out["drift_sums"] = [n, float(t.sum()), float(e.sum()), float((t * t).sum()), float((t * e).sum())]
    bad = watchdogs.first_violation(frames, e0_per_atom, periodic) if n else None
    if bad is not None:
        out["first_violation"] = [float(frames.time_fs[bad[0]]), bad[1]]
    if previous is not None:
        out["frames"] += previous["frames"]
        out["t_end_ps"] = max(out["t_end_ps"], previous["t_end_ps"])
        for key, pick in (("max_bond_deviation", max), ("min_distance", min), ("max_temperature", max),
                          ("max_energy_drift", max)):
            seen = [v for v in (out[key][0], previous[key][0]) if v is not None]
            out[key][0] = pick(seen) if seen else None
        if previous["drift_sums"] is not None:
            out["drift_sums"] = previous["drift_sums"] if out["drift_sums"] is None else \
                [a + b for a, b in zip(previous["drift_sums"], out["drift_sums"])]
        out["first_violation"] = previous["first_violation"] or out["first_violation"]
    sums = out["drift_sums"]
    slope = None
    if sums is not None and sums[0] >= 2:
        k, st, se, stt, ste = sums
        denominator = k * stt - st * st
        slope = 1e3 * (k * ste - st * se) / denominator if denominator > 0 else None
    out["drift_slope_meV_per_atom_ps"] = slope
    return out


def margin_rows(margins: dict, extrapolate_ps: float | None = None) -> list[tuple[str, str, str, str]]:
    """Rows (check, seen, limit, seen / limit) of a `watchdog_margins` result for printing; min_distance shows
    limit / seen (above 1 fires, like the others). extrapolate_ps: add the energy drift extrapolated to that run
    length (the largest drift seen plus the fitted slope times the remaining time)."""
    def row(name, seen, limit, unit, scale=1.0, inverse=False):
        if seen is None:
            return (name, "-", "off" if limit is None else f"{scale * limit:.4g} {unit}", "-")
        ratio = "-" if limit is None else f"{(limit / seen if inverse else seen / limit):.3f}"
        return (name, f"{scale * seen:.4g} {unit}", "off" if limit is None else f"{scale * limit:.4g} {unit}", ratio)

    rows = [row("bond deviation", *margins["max_bond_deviation"], "A"),
            row("min distance", *margins["min_distance"], "A", inverse=True),
            row("temperature", *margins["max_temperature"], "K"),
            row("energy drift", *margins["max_energy_drift"], "meV/atom", 1e3)]
    slope = margins.get("drift_slope_meV_per_atom_ps")
    if extrapolate_ps is not None and slope is not None and margins["max_energy_drift"][0] is not None:
        seen = margins["max_energy_drift"][0] + 1e-3 * abs(slope) * max(extrapolate_ps - margins["t_end_ps"], 0.0)
        rows.append(row(f"drift at {extrapolate_ps:g} ps", seen, margins["max_energy_drift"][1], "meV/atom", 1e3))
    return rows


__all__ = ["AUTO", "Watchdogs", "bond_lengths", "covalent_bonds", "margin_rows", "reference_temperature",
           "start_temperature", "temperature_factor", "watchdog_margins"]
