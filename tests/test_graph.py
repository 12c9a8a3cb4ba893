"""Neighbour pairs: vesin-based `neighbour_pairs` against brute force and an independent reference.

Conventions under test (so3krates_lab.graph.neighbours): each unordered pair is stored once as (i, j, S) with
r_ij = R_j - R_i + S @ cell and the reverse (j, i, -S) implied; `Pairs.directed()` expands to all directed
pairs; `brute_force_pairs` returns every directed pair. Pair sets are compared as sets of (i, j, s0, s1, s2).
"""

import itertools
import re

import numpy as np
import pytest

from physics import random_positions
from so3krates_lab.graph import Pairs, brute_force_pairs, neighbour_pairs
from so3krates_lab.structures import StructureError, System

CUTOFF = 5.0
ELEMENTS = np.array([1, 6, 7, 8])


# ---------------------------------------------------------------- helpers


def triples(receivers, senders, shifts) -> set:
    """Set of (i, j, s0, s1, s2) python-int tuples."""
    shifts = np.asarray(shifts).reshape(-1, 3)
    return {(int(i), int(j), *map(int, s)) for i, j, s in zip(receivers, senders, shifts)}


def directed_set(pairs: Pairs) -> set:
    return triples(*pairs.directed())


def brute_set(system: System, cutoff: float) -> set:
    b = brute_force_pairs(system, cutoff)
    return triples(b.receivers, b.senders, b.shifts)


def box_of(system: System) -> np.ndarray:
    if system.cell is None or not system.periodic:
        return np.zeros((3, 3))
    return system.cell


def reference_set(system: System, cutoff: float) -> set:
    """Independent reference: all directed pairs (i, j, S) with 0 < |R_j - R_i + S @ cell| < cutoff.

    Works for positions anywhere (unwrapped coordinates): atoms are first moved into the cell by integer
    lattice vectors n_i (R_i = W_i + n_i @ cell), images of the wrapped positions are enumerated over one
    more than the needed range, and shifts are mapped back: S = S_w + n_i - n_j.
    """
    pos = system.positions
    if system.periodic:
        cell = system.cell
        frac = pos @ np.linalg.inv(cell)
        n_img = np.where(system.pbc, np.floor(frac), 0.0).astype(int)
        wpos = pos - n_img @ cell
        volume = abs(np.linalg.det(cell))
        ranges = []
        for k in range(3):
            height = volume / np.linalg.norm(np.cross(cell[(k + 1) % 3], cell[(k + 2) % 3]))
            m = int(np.ceil(cutoff / height)) + 1 if system.pbc[k] else 0
            ranges.append(range(-m, m + 1))
    else:
        cell = np.zeros((3, 3))
        n_img = np.zeros((len(pos), 3), int)
        wpos = pos
        ranges = [range(1)] * 3
    out = set()
    diff = wpos[None, :, :] - wpos[:, None, :]
    for shift in itertools.product(*ranges):
        d = np.linalg.norm(diff + np.array(shift, float) @ cell, axis=-1)
        ii, jj = np.nonzero((d < cutoff) & (d > 0))
        back = np.array(shift)[None, :] + n_img[ii] - n_img[jj]
        out.update(zip(ii.tolist(), jj.tolist(), *back.T.tolist()))
    return out


def distances(system: System, receivers, senders, shifts) -> np.ndarray:
    r = system.positions[senders] - system.positions[receivers] + np.asarray(shifts, float) @ box_of(system)
    return np.linalg.norm(r, axis=-1)


def random_cell_system(rng, n, cell, pbc=True, min_dist=0.9):
    """n atoms at random fractional coordinates in a (possibly triclinic) cell, no close contacts (any image)."""
    cell = np.asarray(cell, float)
    system = None
    for _ in range(200):
        pos = rng.uniform(0.0, 1.0, (n, 3)) @ cell
        system = System(numbers=rng.choice(ELEMENTS, n), positions=pos, cell=cell, pbc=pbc)
        b = brute_force_pairs(system, min_dist)
        if len(b) == 0:
            return system
    raise RuntimeError("could not place atoms without close contacts")


def inside_cell(system: System) -> bool:
    """True when every fractional coordinate along a periodic axis lies in [0, 1)."""
    if not system.periodic:
        return True
    frac = system.positions @ np.linalg.inv(system.cell)
    return bool(((frac >= 0) & (frac < 1))[:, system.pbc].all())


def _diff_message(got: set, want: set, what: str) -> str:
    return (f"neighbour_pairs != {what}: {len(got - want)} extra, {len(want - got)} missing; "
            f"e.g. extra {sorted(got - want)[:3]}, missing {sorted(want - got)[:3]}")


def check_against_references(system: System, cutoff: float) -> Pairs:
    """neighbour_pairs vs the independent reference, and vs brute_force_pairs (positions inside the cell)."""
    pairs = neighbour_pairs(system, cutoff)
    got = directed_set(pairs)
    ref = reference_set(system, cutoff)
    assert len(got) == 2 * len(pairs), "a directed pair appears twice (stored pair duplicated or reversed)"
    assert got == ref, _diff_message(got, ref, "independent reference")
    if inside_cell(system):
        brute = brute_set(system, cutoff)
        assert got == brute, _diff_message(got, brute, "brute_force_pairs")
    d = distances(system, *pairs.directed())
    if d.size:
        assert d.max() < cutoff
        assert d.min() > 0
    return pairs


def check_canonical(pairs: Pairs) -> None:
    i, j, s = pairs.receivers, pairs.senders, pairs.shifts
    assert i.dtype == np.int32 and j.dtype == np.int32 and s.dtype == np.int32
    assert s.shape == (len(pairs), 3)
    for a, b, sh in zip(i, j, s):
        if a == b:
            nz = sh[sh != 0]
            assert nz.size and nz[0] > 0, f"self-image pair ({a}, {b}, {sh}) is not canonical"
        else:
            assert a < b, f"pair ({a}, {b}, {sh}) is not canonical (i > j)"
    keys = set()
    for a, b, sh in zip(i, j, s):
        fwd = (int(a), int(b), *map(int, sh))
        rev = (int(b), int(a), *map(int, -sh))
        key = min(fwd, rev)
        assert key not in keys, f"unordered pair {key} stored twice"
        keys.add(key)


# ---------------------------------------------------------------- synthetic structures


def free_molecule(seed=0, n=20):
    rng = np.random.default_rng(seed)
    pos = random_positions(rng, n, (6.0, 6.0, 6.0), min_dist=0.9)
    return System(numbers=rng.choice(ELEMENTS, n), positions=pos)


def test_free_molecule_matches_brute_force():
    system = free_molecule()
    for cutoff in (2.5, CUTOFF, 20.0):
        pairs = check_against_references(system, cutoff)
        check_canonical(pairs)
        assert not pairs.shifts.any(), "a free molecule has only zero shifts"
    # large cutoff: every pair of the 20 atoms, exactly once
    assert len(neighbour_pairs(system, 20.0)) == 20 * 19 // 2


def test_cell_without_pbc_is_a_free_molecule():
    system = free_molecule(seed=1)
    boxed = System(numbers=system.numbers, positions=system.positions, cell=np.eye(3) * 4.0, pbc=False)
    assert directed_set(neighbour_pairs(boxed, CUTOFF)) == directed_set(neighbour_pairs(system, CUTOFF))


def test_orthorhombic_box_matches_brute_force():
    rng = np.random.default_rng(2)
    lengths = (7.0, 8.0, 9.0)
    pos = random_positions(rng, 30, lengths, min_dist=1.0, periodic=(True, True, True))
    system = System(numbers=rng.choice(ELEMENTS, 30), positions=pos, cell=np.diag(lengths), pbc=True)
    pairs = check_against_references(system, CUTOFF)
    check_canonical(pairs)
    assert pairs.shifts.any(), "a periodic box should produce pairs across the boundary"


def test_triclinic_cell_matches_brute_force():
    rng = np.random.default_rng(3)
    cell = np.array([[6.0, 0.0, 0.0], [2.5, 5.5, 0.0], [1.5, -1.8, 6.2]])
    system = random_cell_system(rng, 16, cell)
    pairs = check_against_references(system, CUTOFF)
    check_canonical(pairs)


def test_cell_smaller_than_twice_the_cutoff():
    # 3 A cubic cell, cutoff 5 A: each atom sees many images of its neighbour and of itself.
    system = System(numbers=[8, 1], positions=[[0.3, 0.4, 0.5], [1.7, 2.1, 1.1]], cell=np.eye(3) * 3.0, pbc=True)
    pairs = check_against_references(system, CUTOFF)
    check_canonical(pairs)
    # self images: lattice vectors n with |3 n| < 5, n != 0, i.e. |n|^2 in {1, 2}: 6 + 12 = 18 per atom,
    # stored once per +-n pair: 9 per atom
    n_self = int((pairs.receivers == pairs.senders).sum())
    assert n_self == 2 * 9
    rec, sen, _ = pairs.directed()
    assert int((rec == sen).sum()) == 2 * 18
    # atom 0 <-> atom 1 images: count from the reference
    ref = reference_set(system, CUTOFF)
    n_cross = sum(1 for t in ref if t[0] == 0 and t[1] == 1)
    assert int(((pairs.receivers == 0) & (pairs.senders == 1)).sum()) == n_cross
    assert n_cross > 8, "the neighbour should be seen through many images"
    assert len(pairs) == 18 + n_cross


def test_mixed_pbc_periodic_in_x_and_y_only():
    rng = np.random.default_rng(4)
    cell = np.array([[6.0, 0.0, 0.0], [0.7, 6.5, 0.0], [0.0, 0.0, 7.0]])
    system = random_cell_system(rng, 14, cell, pbc=(True, True, False))
    pairs = check_against_references(system, 4.5)
    check_canonical(pairs)
    assert not pairs.shifts[:, 2].any(), "no images along the non-periodic z direction"
    assert pairs.shifts[:, :2].any()


def test_cutoff_is_strict():
    system = System(numbers=[1, 1], positions=[[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    assert len(neighbour_pairs(system, 2.0)) == 0
    assert len(neighbour_pairs(system, 2.0 + 1e-6)) == 1
    with pytest.raises(ValueError):
        neighbour_pairs(system, 0.0)


def test_single_atom_and_empty_lists():
    system = System(numbers=[6], positions=[[0.0, 0.0, 0.0]])
    pairs = neighbour_pairs(system, CUTOFF)
    assert len(pairs) == 0 and pairs.n_directed == 0
    rec, sen, sh = pairs.directed()
    assert rec.shape == (0,) and sen.shape == (0,) and sh.shape == (0, 3)
    assert len(brute_force_pairs(system, CUTOFF)) == 0


def test_directed_and_n_directed():
    pairs = neighbour_pairs(free_molecule(seed=5), 3.0)
    rec, sen, sh = pairs.directed()
    h = len(pairs)
    assert pairs.n_directed == 2 * h == rec.size
    np.testing.assert_array_equal(rec[:h], pairs.receivers)
    np.testing.assert_array_equal(rec[h:], pairs.senders)
    np.testing.assert_array_equal(sh[h:], -pairs.shifts)


# ---------------------------------------------------------------- overlaps


def _assert_names_atoms(message: str, a: int, b: int) -> None:
    assert re.search(rf"\b{a}\b.*\b{b}\b|\b{b}\b.*\b{a}\b", message), f"message does not name atoms {a}, {b}: {message}"


def test_overlapping_atoms_raise():
    system = free_molecule(seed=6, n=10)
    pos = system.positions.copy()
    pos[7] = pos[3] + np.array([0.03, 0.0, 0.02])
    bad = System(numbers=system.numbers, positions=pos)
    with pytest.raises(StructureError) as err:
        neighbour_pairs(bad, CUTOFF)
    _assert_names_atoms(str(err.value), 3, 7)
    assert "overlap" in str(err.value)


def test_overlap_across_the_periodic_boundary_raises():
    pos = np.array([[0.02, 3.0, 3.0], [2.0, 1.0, 1.0], [5.98, 3.0, 3.0]])
    system = System(numbers=[1, 1, 1], positions=pos, cell=np.eye(3) * 6.0, pbc=True)
    with pytest.raises(StructureError) as err:
        neighbour_pairs(system, CUTOFF)
    _assert_names_atoms(str(err.value), 0, 2)
    # without periodicity the two atoms are 5.96 A apart: fine
    free = System(numbers=[1, 1, 1], positions=pos)
    assert len(neighbour_pairs(free, CUTOFF)) == 2


# ---------------------------------------------------------------- invariances


def _periodic_example(seed=7):
    rng = np.random.default_rng(seed)
    cell = np.array([[7.0, 0.0, 0.0], [1.0, 6.8, 0.0], [0.5, 0.8, 7.2]])
    return random_cell_system(rng, 18, cell)


@pytest.mark.parametrize("kind", ["free", "periodic"])
def test_permutation_invariance(kind):
    system = free_molecule(seed=8) if kind == "free" else _periodic_example()
    perm = np.random.default_rng(9).permutation(system.n_atoms)  # new atom k is old atom perm[k]
    permuted = system.replace(numbers=system.numbers[perm], positions=system.positions[perm])
    base = directed_set(neighbour_pairs(system, CUTOFF))
    new = directed_set(neighbour_pairs(permuted, CUTOFF))
    mapped = {(int(perm[i]), int(perm[j]), *s) for i, j, *s in new}
    assert mapped == base
    check_canonical(neighbour_pairs(permuted, CUTOFF))


@pytest.mark.parametrize("kind", ["free", "periodic"])
def test_translation_invariance(kind):
    system = free_molecule(seed=10) if kind == "free" else _periodic_example()
    base = directed_set(neighbour_pairs(system, CUTOFF))
    for t in ([0.37, -1.2, 2.5], [31.7, -45.2, 25.0]):  # the second moves every atom far outside the cell
        moved = system.replace(positions=system.positions + np.asarray(t))
        assert directed_set(neighbour_pairs(moved, CUTOFF)) == base, f"pair set changed under translation {t}"


def test_moving_one_atom_by_a_lattice_vector_relabels_shifts():
    system = _periodic_example(seed=11)
    k, n = 4, np.array([1, -2, 1])
    pos = system.positions.copy()
    pos[k] += n @ system.cell
    moved = system.replace(positions=pos)
    pairs = check_against_references(moved, CUTOFF)  # unwrapped positions, checked against the wide reference
    base = directed_set(neighbour_pairs(system, CUTOFF))
    expected = set()
    for i, j, *s in base:
        s = np.array(s) + (n if i == k else 0) - (n if j == k else 0)
        expected.add((i, j, *map(int, s)))
    assert directed_set(pairs) == expected


# ---------------------------------------------------------------- real periodic data


def wrapped(system: System) -> System:
    """The same structure with every atom moved into the cell along periodic axes (frac in [0, 1))."""
    frac = system.positions @ np.linalg.inv(system.cell)
    frac[:, system.pbc] -= np.floor(frac[:, system.pbc])
    frac[:, system.pbc] %= 1.0  # -1e-17 % 1 can round to 1.0
    frac = np.where(frac >= 1.0, 0.0, frac)
    return system.replace(positions=frac @ system.cell)


def _check_real_frame(system: System, cutoff: float = CUTOFF) -> None:
    # as stored (the water frames are unwrapped MD coordinates, far outside the cell): independent reference
    pairs = neighbour_pairs(system, cutoff)
    got = directed_set(pairs)
    ref = reference_set(system, cutoff)
    assert got == ref, _diff_message(got, ref, "independent reference")
    assert len(got) == pairs.n_directed
    check_canonical(pairs)
    d = distances(system, *pairs.directed())
    assert d.max() < cutoff and d.min() > 0.5
    # wrapped into the cell: vesin list == brute_force_pairs
    inner = wrapped(system)
    assert inside_cell(inner)
    got_w = directed_set(neighbour_pairs(inner, cutoff))
    brute = brute_set(inner, cutoff)
    assert got_w == brute, _diff_message(got_w, brute, "brute_force_pairs")
    assert len(got_w) == len(got), "wrapping changed the number of pairs"


def _load_frame0(shared_data, relpath, **kw) -> System:
    from so3krates_lab.data import load

    path = shared_data / relpath
    if not path.exists():
        pytest.skip(f"{path} not found")
    return load(path, **kw)[0]


def test_real_water_frame0(shared_data):
    system = _load_frame0(shared_data, "periodic/water_192atoms_400frames.npz", energy_unit="eV")
    assert system.periodic and system.n_atoms == 192
    _check_real_frame(system)


def test_real_li3po4_frame0(shared_data):
    system = _load_frame0(shared_data, "periodic/li3po4_192atoms_50frames.extxyz", index=0)
    assert system.periodic and system.n_atoms == 192
    _check_real_frame(system)


def test_brute_force_pairs_with_positions_outside_the_cell(shared_data):
    """brute_force_pairs is the documented reference; it must also hold for unwrapped coordinates.

    KNOWN PACKAGE BUG (so3krates_lab/graph/neighbours.py, brute_force_pairs): the image range
    m = ceil(cutoff / height) assumes fractional coordinates in [0, 1); for atoms outside the cell (the water
    frames store unwrapped MD coordinates, fractional -0.6 .. 1.5) pairs needing |shift| > m are missed.
    Fix: widen the range by the spread of the fractional coordinates along each periodic axis:
        frac = pos @ np.linalg.inv(box)
        m = int(np.ceil(cutoff / height + np.ptp(frac[:, k])))
    """
    synthetic = _periodic_example(seed=12)
    pos = synthetic.positions.copy()
    pos[3] += np.array([2, -1, 0]) @ synthetic.cell
    unwrapped = synthetic.replace(positions=pos)
    systems = {"synthetic (one atom moved by a lattice vector)": unwrapped}
    water = shared_data / "periodic" / "water_192atoms_400frames.npz"
    if water.exists():
        from so3krates_lab.data import load

        systems["water frame 0 (unwrapped MD coordinates)"] = load(water, energy_unit="eV")[0]
    for name, system in systems.items():
        ref = reference_set(system, CUTOFF)
        assert directed_set(neighbour_pairs(system, CUTOFF)) == ref, f"{name}: neighbour_pairs wrong"
        brute = brute_set(system, CUTOFF)
        assert brute == ref, (
            f"PACKAGE BUG in brute_force_pairs ({name}): misses {len(ref - brute)} of {len(ref)} directed pairs "
            f"(e.g. {sorted(ref - brute)[:2]}) because its image range ceil(cutoff/height) assumes positions "
            f"inside the cell; widen it by np.ptp of the fractional coordinates"
        )
