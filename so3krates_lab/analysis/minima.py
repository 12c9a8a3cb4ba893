"""A database of unique local minima and the minima graph built from quenched trajectories.

`MinimaDatabase` keeps unique minima of one molecule (fixed atom order). `add(positions, energy)` returns the
index of the matching minimum, or stores a new one. Two minima are the same when their energies agree within
`energy_tol` (eV) and their RMSD after superposition and permutation of symmetry-equivalent atoms (methyl
hydrogens etc., `alignment.equivalent_groups`) is below `rmsd_tol` (Angstrom). Cheap filters come first, so
thousands of minima stay fast: an energy window over the sorted energies (bisection), then the sorted-distance
fingerprint (a rigorous bound), and only then the symmetric Kabsch RMSD.

`minima_graph(db, sequences)` builds a networkx graph: nodes are the unique minima (energy eV, relative energy
eV, count, the trajectories that found it, the geometry index into `db.positions`), edges join minima quenched
from consecutive frames of one trajectory (attribute `count`: how many such transitions, either direction).
`save_minima` / `load_minima` write and read both (JSON for the graph and bookkeeping, npz for geometries).
"""

from __future__ import annotations

import bisect
import json
from pathlib import Path

import networkx as nx
import numpy as np

from ..fileio import atomic_write
from .alignment import distance_fingerprint, equivalent_groups, fingerprint_distance, symmetric_rmsd

FORMAT = "so3krates_lab.minima/1"


class MinimaDatabase:
    """Unique minima of one molecule. numbers: (N,) atomic numbers; groups: symmetry-equivalent atom groups
    (default: from the bond graph of `reference_positions` (N, 3) Angstrom, required then); energy_tol eV;
    rmsd_tol Angstrom. Two minima are the same when their energies differ by at most energy_tol and their
    `symmetric_rmsd` is below rmsd_tol.

    >>> water = [[0.0, 0.0, 0.0], [0.9572, 0.0, 0.0], [-0.24, 0.927, 0.0]]
    >>> db = MinimaDatabase([8, 1, 1], water)
    >>> db.add(water, -14.2)
    (0, True)
    >>> db.add([water[0], water[2], water[1]], -14.205)  # the hydrogens exchanged, within energy_tol
    (0, False)
    >>> db.find(water, -14.5) is None, len(db), db.counts  # 0.3 eV lower: another minimum
    (True, 1, [2])
    """

    def __init__(self, numbers, reference_positions=None, groups=None, energy_tol: float = 0.01,
                 rmsd_tol: float = 0.1):
        self.numbers = np.asarray(numbers, dtype=np.int64)
        if self.numbers.ndim != 1 or len(self.numbers) == 0:
            raise ValueError(f"numbers: expected a non-empty (N,) array of atomic numbers, got {self.numbers!r}")
        if energy_tol <= 0 or rmsd_tol <= 0:
            raise ValueError(f"tolerances must be positive, got energy_tol={energy_tol}, rmsd_tol={rmsd_tol}")
        if groups is None:
            if reference_positions is None:
                raise ValueError("give reference_positions (to find equivalent atoms) or groups=[] explicitly")
            groups = equivalent_groups(self.numbers, reference_positions)
        self.groups = [np.asarray(g, dtype=np.int64) for g in groups]
        self.energy_tol = float(energy_tol)
        self.rmsd_tol = float(rmsd_tol)
        self._positions: list[np.ndarray] = []
        self._fingerprints: list[np.ndarray] = []
        self.energies: list[float] = []
        self.counts: list[int] = []
        self.found_by: list[set] = []
        self._order: list[tuple[float, int]] = []  # (energy, index), sorted: the energy window

    def __len__(self) -> int:
        return len(self.energies)

    @property
    def positions(self) -> np.ndarray:
        """(M, N, 3) Angstrom: the first geometry stored for each unique minimum."""
        return np.asarray(self._positions).reshape(len(self), len(self.numbers), 3)

    def geometry(self, index: int) -> np.ndarray:
        """(N, 3) Angstrom: the stored geometry of minimum `index` (without stacking them all, as `positions` does)."""
        return self._positions[index]

    def _check(self, positions, energy) -> tuple[np.ndarray, float]:
        pos = np.asarray(positions, dtype=np.float64)
        if pos.shape != (len(self.numbers), 3):
            raise ValueError(f"positions: expected shape ({len(self.numbers)}, 3), got {pos.shape}")
        energy = float(energy)
        if not (np.all(np.isfinite(pos)) and np.isfinite(energy)):
            raise ValueError("positions and energy must be finite")
        return pos, energy

    def find(self, positions, energy) -> int | None:
        """Index of the stored minimum matching this one (positions (N, 3) Angstrom, energy eV), or None."""
        pos, energy = self._check(positions, energy)
        return self._match(pos, energy, distance_fingerprint(pos))

    def _match(self, pos, energy, fingerprint) -> int | None:
        lo = bisect.bisect_left(self._order, (energy - self.energy_tol, -1))
        hi = bisect.bisect_right(self._order, (energy + self.energy_tol, len(self)))
        best, best_rmsd = None, self.rmsd_tol
        for _, k in sorted(self._order[lo:hi], key=lambda item: abs(item[0] - energy)):
            if fingerprint_distance(fingerprint, self._fingerprints[k]) > 2 * self.rmsd_tol:
                continue
            rmsd, _ = symmetric_rmsd(self._positions[k], pos, self.groups)
            if rmsd < best_rmsd:
                best, best_rmsd = k, rmsd
        return best

    def revisit(self, index: int, trajectory=None) -> None:
        """Count one more visit of the stored minimum `index` (found by `find`), recorded under `trajectory`."""
        if not 0 <= index < len(self):
            raise IndexError(f"minimum {index} is outside the database of {len(self)} minima")
        self.counts[index] += 1
        if trajectory is not None:
            self.found_by[index].add(trajectory)

    def add(self, positions, energy, trajectory=None) -> tuple[int, bool]:
        """Count one found minimum (positions (N, 3) Angstrom, energy eV). Returns (index, is_new).
        trajectory: any hashable label recorded in `found_by`."""
        pos, energy = self._check(positions, energy)
        fingerprint = distance_fingerprint(pos)
        k = self._match(pos, energy, fingerprint)
        is_new = k is None
        if is_new:
            k = len(self)
            self._positions.append(pos)
            self._fingerprints.append(fingerprint)
            self.energies.append(energy)
            self.counts.append(0)
            self.found_by.append(set())
            bisect.insort(self._order, (energy, k))
        self.counts[k] += 1
        if trajectory is not None:
            self.found_by[k].add(trajectory)
        return k, is_new

    def to_xarray(self):
        """xarray Dataset: positions (minimum, atom, xyz) Angstrom, energy and relative_energy (minimum) eV,
        count (minimum), numbers (atom); tolerances in the attributes."""
        import xarray as xr

        e = np.asarray(self.energies, dtype=np.float64)
        return xr.Dataset(
            {"positions": (("minimum", "atom", "xyz"), self.positions, {"units": "Angstrom"}),
             "energy": (("minimum",), e, {"units": "eV"}),
             "relative_energy": (("minimum",), e - (e.min() if len(e) else 0.0), {"units": "eV"}),
             "count": (("minimum",), np.asarray(self.counts, dtype=np.int64)),
             "numbers": (("atom",), self.numbers)},
            coords={"minimum": np.arange(len(self)), "xyz": ["x", "y", "z"]},
            attrs={"energy_tol_eV": self.energy_tol, "rmsd_tol_A": self.rmsd_tol})


def minima_graph(db: MinimaDatabase, sequences) -> nx.Graph:
    """The minima graph. sequences: {trajectory label: [(frame index, minimum index), ...]}; a transition is
    counted between entries whose frame indices are consecutive (k, k + 1) and whose minima differ, so frames
    missing from a sequence (not converged, not relaxed) break the chain instead of inventing a transition.

    Node attributes: energy, relative_energy (eV), count, geometry (index into db.positions), trajectories
    (sorted list of labels as strings). Edge attributes: count, trajectories.
    """
    graph = nx.Graph()
    e_min = min(db.energies) if len(db) else 0.0
    for k in range(len(db)):
        graph.add_node(k, energy=db.energies[k], relative_energy=db.energies[k] - e_min, count=db.counts[k],
                       geometry=k, trajectories=sorted(str(t) for t in db.found_by[k]))
    for label, seq in sequences.items():
        ordered = sorted((int(f), int(m)) for f, m in seq)
        for (f0, m0), (f1, m1) in zip(ordered, ordered[1:]):
            if f1 != f0 + 1 or m0 == m1:
                continue
            for m in (m0, m1):
                if m not in graph:
                    raise ValueError(f"sequence {label!r} names minimum {m}, but the database has {len(db)}")
            if graph.has_edge(m0, m1):
                data = graph.edges[m0, m1]
                data["count"] += 1
                if str(label) not in data["trajectories"]:
                    data["trajectories"] = sorted(data["trajectories"] + [str(label)])
            else:
                graph.add_edge(m0, m1, count=1, trajectories=[str(label)])
    return graph


def save_minima(path, db: MinimaDatabase, sequences, extra: dict | None = None, bands: dict | None = None) -> Path:
    """Write `<path>.json` (format, tolerances, groups, energies, counts, found_by, sequences, the graph as
    node-link JSON, `extra`) and `<path>.npz` (numbers, positions (M, N, 3) Angstrom), each atomically.
    Sequence labels and trajectory labels are stored as strings. bands: NEB bands {(u, v): Band} of graph
    edges (`barriers.graph_barriers`): their edges carry the barrier attributes (`barriers.edge_attributes`) in
    the JSON graph, and the bands go to `<path>.bands.npz` (`barriers.save_bands`; read with `load_minima_bands`).
    Returns the JSON path."""
    from .barriers import edge_attributes, save_bands

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    npz, js = path.with_suffix(".npz"), path.with_suffix(".json")
    graph = minima_graph(db, sequences)
    for (u, v), band in (bands or {}).items():
        if not graph.has_edge(u, v):
            raise ValueError(f"a band joins minima {u} and {v}, which are not an edge of the minima graph")
        graph.edges[u, v].update(edge_attributes(band, u))
    if bands:
        save_bands(path.with_suffix(".bands.npz"), bands)
    header = {
        "format": FORMAT, "energy_tol_eV": db.energy_tol, "rmsd_tol_A": db.rmsd_tol,
        "groups": [g.tolist() for g in db.groups], "energies_eV": db.energies, "counts": db.counts,
        "found_by": [sorted(str(t) for t in s) for s in db.found_by],
        "sequences": {str(k): [[int(f), int(m)] for f, m in v] for k, v in sequences.items()},
        "graph": nx.node_link_data(graph, edges="edges"), "extra": extra or {},
    }
    def write_npz(tmp):
        with open(tmp, "wb") as fh:
            np.savez(fh, numbers=db.numbers, positions=db.positions)

    atomic_write(npz, write_npz)
    atomic_write(js, lambda tmp: Path(tmp).write_text(json.dumps(header)))
    return js


def load_minima(path) -> tuple[MinimaDatabase, dict, nx.Graph, dict]:
    """Read what `save_minima` wrote: (database, sequences {label: [(frame, minimum)]}, graph, extra). The graph's
    edges keep their barrier attributes; the bands themselves are read by `load_minima_bands(path)`."""
    path = Path(path)
    js, npz = path.with_suffix(".json"), path.with_suffix(".npz")
    for p in (js, npz):
        if not p.exists():
            raise FileNotFoundError(f"{p} is missing (save_minima writes both {js.name} and {npz.name})")
    header = json.loads(js.read_text())
    if header.get("format") != FORMAT:
        raise ValueError(f"{js}: format {header.get('format')!r} is not {FORMAT!r}")
    with np.load(npz) as arrays:
        numbers, positions = arrays["numbers"], arrays["positions"]
    if len(positions) != len(header["energies_eV"]):
        raise ValueError(f"{npz} holds {len(positions)} geometries but {js} lists {len(header['energies_eV'])}")
    db = MinimaDatabase(numbers, groups=header["groups"], energy_tol=header["energy_tol_eV"],
                        rmsd_tol=header["rmsd_tol_A"])
    for k, (pos, e) in enumerate(zip(positions, header["energies_eV"])):
        db._positions.append(np.asarray(pos, dtype=np.float64))
        db._fingerprints.append(distance_fingerprint(pos))
        db.energies.append(float(e))
        db.counts.append(int(header["counts"][k]))
        db.found_by.append(set(header["found_by"][k]))
        bisect.insort(db._order, (float(e), k))
    sequences = {k: [(int(f), int(m)) for f, m in v] for k, v in header["sequences"].items()}
    graph = nx.node_link_graph(header["graph"], edges="edges")
    return db, sequences, graph, header["extra"]


def load_minima_bands(path) -> dict:
    """The NEB bands {(u, v): Band} that `save_minima(path, ..., bands=...)` stored beside the minima at `path`
    (`<path>.bands.npz`); {} when it stored none."""
    from .barriers import load_bands as read

    stored = Path(path).with_suffix(".bands.npz")
    return read(stored) if stored.exists() else {}
