"""Padded batches: pack offsets and masks, capacity overflow, the capacity ladder, padding invariance of the
model, bounded compilation with the Batcher on real QM7-X data, and label packing."""

import jax
import numpy as np
import pytest

from physics import FAST_COMPILE, random_positions
from so3krates_lab.graph import (
    Batcher, Capacity, CapacityOverflow, Labels, graph_from_system, ladder_rung, neighbour_pairs, pack, pack_labels,
)
from so3krates_lab.model import So3krates, So3kratesConfig, energy_and_forces, make_energy_fn
from so3krates_lab.structures import Dataset, StructureError, System

CUTOFF = 5.0
ELEMENTS = np.array([1, 6, 7, 8])

# XLA compile time dominates these tests on a 2-core machine (~5-7 s per energy+forces program at the default
# optimisation level, ~1.5 s at level 0). The traced program and its semantics are the same.


def fast_jit(fn):
    return jax.jit(fn, compiler_options=FAST_COMPILE)


# ---------------------------------------------------------------- synthetic structures


def _labelled(rng, numbers, positions, **kw):
    n = len(numbers)
    return System(numbers=numbers, positions=positions, energy=float(rng.normal(-100.0, 10.0)),
                  forces=rng.normal(0.0, 1.0, (n, 3)), **kw)


def make_systems(seed=0):
    """Two free molecules (9 and 14 atoms) and a periodic 7-atom cell smaller than twice the cutoff."""
    rng = np.random.default_rng(seed)
    a = _labelled(rng, rng.choice(ELEMENTS, 9), random_positions(rng, 9, (4.5, 4.5, 4.5), min_dist=1.0))
    b = _labelled(rng, rng.choice(ELEMENTS, 14), random_positions(rng, 14, (5.5, 5.5, 5.5), min_dist=1.0))
    box = 6.0
    c = _labelled(rng, rng.choice(ELEMENTS, 7),
                  random_positions(rng, 7, (box, box, box), min_dist=1.0, periodic=(True, True, True)),
                  cell=np.eye(3) * box, pbc=True)
    return [a, b, c]


@pytest.fixture(scope="module")
def systems():
    return make_systems()


@pytest.fixture(scope="module")
def pairs(systems):
    return [neighbour_pairs(s, CUTOFF) for s in systems]


# ---------------------------------------------------------------- pack


def test_pack_offsets_and_masks(systems, pairs):
    n_atoms = sum(s.n_atoms for s in systems)
    n_pairs = sum(len(p) for p in pairs)
    cap = Capacity(n_atoms + 7, n_pairs + 11, 5)
    g = pack(systems, pairs, cap)
    A, P, G = cap.atoms, cap.pairs, cap.graphs
    assert g.capacity == (A, P, G)
    assert g.numbers.shape == (A,) and g.positions.shape == (A, 3) and g.atom_graph.shape == (A,)
    assert g.receivers.shape == (P,) and g.senders.shape == (P,) and g.cell_shifts.shape == (P, 3)
    assert g.cell.shape == (G, 3, 3)
    assert g.numbers.dtype == np.int32 and g.receivers.dtype == np.int32 and g.senders.dtype == np.int32
    assert g.atom_graph.dtype == np.int32 and g.positions.dtype == np.float32

    # masks: real entries first
    np.testing.assert_array_equal(g.atom_mask, np.arange(A) < n_atoms)
    np.testing.assert_array_equal(g.pair_mask, np.arange(P) < n_pairs)
    np.testing.assert_array_equal(g.graph_mask, np.arange(G) < len(systems))

    a0 = p0 = 0
    for k, (s, pr) in enumerate(zip(systems, pairs)):
        n, m = s.n_atoms, len(pr)
        np.testing.assert_array_equal(g.numbers[a0:a0 + n], s.numbers)
        np.testing.assert_allclose(g.positions[a0:a0 + n], s.positions, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(g.atom_graph[a0:a0 + n], k)
        np.testing.assert_array_equal(g.receivers[p0:p0 + m], pr.receivers + a0)
        np.testing.assert_array_equal(g.senders[p0:p0 + m], pr.senders + a0)
        np.testing.assert_array_equal(g.cell_shifts[p0:p0 + m], pr.shifts)
        expected_cell = s.cell if s.periodic else np.zeros((3, 3))
        np.testing.assert_allclose(g.cell[k], expected_cell, rtol=1e-6)
        a0 += n
        p0 += m
    assert (a0, p0) == (n_atoms, n_pairs)

    # real pairs never cross structures
    r, s_ = g.receivers[:n_pairs], g.senders[:n_pairs]
    np.testing.assert_array_equal(g.atom_graph[r], g.atom_graph[s_])
    assert g.atom_mask[r].all() and g.atom_mask[s_].all()

    # padding atoms: number 0, zero positions, assigned to a padding graph
    assert (g.numbers[n_atoms:] == 0).all()
    assert (g.positions[n_atoms:] == 0).all()
    assert not g.graph_mask[g.atom_graph[n_atoms:]].any(), "padding atoms should belong to a padding graph"
    # padding pairs: masked self-pairs of a padding atom, zero shift
    pr_, ps_ = g.receivers[n_pairs:], g.senders[n_pairs:]
    np.testing.assert_array_equal(pr_, ps_)
    assert not g.atom_mask[pr_].any(), "padding pairs must point at a padding atom"
    assert (g.cell_shifts[n_pairs:] == 0).all()
    assert (g.cell[len(systems):] == 0).all()


def test_pack_default_and_exact_capacity(systems, pairs):
    n_atoms = sum(s.n_atoms for s in systems)
    n_pairs = sum(len(p) for p in pairs)
    g = pack(systems, pairs)
    assert g.capacity == (n_atoms + 1, n_pairs, len(systems))
    assert g.atom_mask.sum() == n_atoms and g.numbers[-1] == 0
    # exactly full: fits, nothing truncated
    g = pack(systems, pairs, Capacity(n_atoms, n_pairs, len(systems)))
    assert g.atom_mask.all() and g.pair_mask.all() and g.graph_mask.all()
    np.testing.assert_array_equal(g.numbers, np.concatenate([s.numbers for s in systems]))
    # graph_from_system == pack of one
    one = graph_from_system(systems[2], CUTOFF)
    ref = pack([systems[2]], [pairs[2]])
    for name in ("numbers", "positions", "receivers", "senders", "cell_shifts", "cell", "atom_mask", "pair_mask"):
        np.testing.assert_array_equal(getattr(one, name), getattr(ref, name))


@pytest.mark.parametrize("short", ["atoms", "pairs", "graphs"])
def test_capacity_overflow(systems, pairs, short):
    need = {"atoms": sum(s.n_atoms for s in systems), "pairs": sum(len(p) for p in pairs), "graphs": len(systems)}
    cap = dict(need)
    cap[short] -= 1
    with pytest.raises(CapacityOverflow) as err:
        pack(systems, pairs, Capacity(**cap))
    msg = str(err.value)
    for key, value in need.items():
        assert f"{key}={value}" in msg, f"overflow message should state the needed {key}: {msg}"
    assert f"{short}={cap[short]}" in msg
    # one more than needed everywhere fits
    assert pack(systems, pairs, Capacity(*(v + 1 for v in need.values()))).atom_mask.sum() == need["atoms"]


def test_pack_bad_arguments(systems, pairs):
    with pytest.raises(StructureError):
        pack([], [])
    with pytest.raises(ValueError):
        pack(systems, pairs[:2])


# ---------------------------------------------------------------- ladder


def test_ladder_rung_properties():
    ns = np.arange(1, 10_001)
    rungs = np.array([ladder_rung(int(n)) for n in ns])
    assert (rungs >= ns).all()
    assert (rungs % 8 == 0).all()
    assert (np.diff(rungs) >= 0).all(), "ladder_rung must be monotone"
    assert rungs[0] == 8
    # waste bounded: a rung is at most growth * n + one multiple
    assert (rungs < 1.25 * ns + 8).all(), "a rung exceeds growth x n + multiple"
    distinct = np.unique(rungs)
    assert all(ladder_rung(int(r)) == r for r in distinct), "a rung must map to itself"
    ratios = distinct[1:] / distinct[:-1]
    assert ratios.max() <= 2.0
    big = distinct[:-1] >= 64
    assert (ratios[big] <= 1.25 + 8 / distinct[:-1][big] + 1e-12).all()
    # log(10000 / 8) / log(1.25) ~ 32 rungs
    assert len(distinct) <= 40, f"{len(distinct)} rungs between 8 and 10000"
    # a larger growth gives fewer rungs; growth <= 1 is rejected
    assert len({ladder_rung(int(n), growth=1.5) for n in ns[::7]}) < len(distinct)
    with pytest.raises(ValueError):
        ladder_rung(10, growth=1.0)


# ---------------------------------------------------------------- padding invariance of the model


@pytest.fixture(scope="module")
def small_model():
    """(config, variables) of preset "small" (float32).

    Same as model.init_variables(cfg, graph, seed=3) (which only adds a float64 check), compiled with
    FAST_COMPILE: the shapes of the variables do not depend on the graph.
    """
    cfg = So3kratesConfig.preset("small")
    assert cfg.dtype == "float32"
    graph = graph_from_system(make_systems()[0], cfg.cutoff)
    variables = fast_jit(So3krates(cfg).init)(jax.random.PRNGKey(3), graph)
    return cfg, variables


@pytest.fixture(scope="module")
def model(small_model):
    cfg, variables = small_model
    energy_fn = make_energy_fn(cfg)
    ef = fast_jit(lambda v, g: energy_and_forces(energy_fn, v, g))
    return cfg, variables, ef


def _close(got, want, what, rtol=1e-5):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = max(np.abs(want).max(), 1e-3)
    err = np.abs(got - want).max()
    assert err <= rtol * scale, f"{what}: max |diff| {err:.3g} > {rtol} x {scale:.3g}"


def test_padding_invariance_of_energies_and_forces(systems, pairs, model):
    """Energies and forces do not depend on padding or on batch neighbours (3 compilations in all)."""
    cfg, variables, ef = model
    assert cfg.cutoff == CUTOFF
    sizes = [s.n_atoms for s in systems]
    assert sizes[1] == max(sizes)
    n_real = sum(sizes)

    # reference: structure 0 alone at its exact size (+1 padding atom, no padding pairs)
    e, f = ef(variables, pack([systems[0]], [pairs[0]]))
    exact0 = (float(e[0]), np.asarray(f)[:sizes[0]])
    assert np.abs(exact0[1]).max() > 1e-4, "forces are trivially zero: the test would prove nothing"

    # each structure alone in one shared capacity (one compilation): extra padding atoms, pairs and graphs for
    # structures 0 and 2; structure 1 fills every atom slot, so its padding pairs sit (masked) on a real atom
    common = Capacity(max(sizes), max(len(p) for p in pairs) + 13, 3)
    alone = []
    for s, pr in zip(systems, pairs):
        g = pack([s], [pr], common)
        assert int(g.pair_mask.sum()) < common.pairs
        e, f = ef(variables, g)
        e, f = np.asarray(e), np.asarray(f)
        assert np.all(e[1:] == 0), "padding graphs must have zero energy"
        assert np.all(f[s.n_atoms:] == 0), "padding atoms must have zero force"
        alone.append((float(e[0]), f[:s.n_atoms]))
    _close(alone[0][0], exact0[0], "energy of structure 0: alone exact vs alone with extra padding")
    _close(alone[0][1], exact0[1], "forces of structure 0: alone exact vs alone with extra padding")
    assert len({round(a[0], 3) for a in alone}) == 3, "different structures should have different energies"

    # together, in another order, with extra padding in atoms, pairs and graphs
    order = [2, 0, 1]
    n_pairs = sum(len(p) for p in pairs)
    g = pack([systems[k] for k in order], [pairs[k] for k in order], Capacity(n_real + 17, n_pairs + 40, 6))
    e, f = ef(variables, g)
    e, f = np.asarray(e), np.asarray(f)
    assert np.all(e[3:] == 0) and np.all(f[n_real:] == 0)
    a0 = 0
    for slot, k in enumerate(order):
        _close(e[slot], alone[k][0], f"energy of structure {k}: padded batch vs alone")
        _close(f[a0:a0 + sizes[k]], alone[k][1], f"forces of structure {k}: padded batch vs alone")
        a0 += sizes[k]


# ---------------------------------------------------------------- bounded compilation on real data


def test_batcher_bounded_compilation(shared_data, small_model):
    from so3krates_lab.data import load

    path = shared_data / "qm7x" / "qm7x_250_small.npz"
    if not path.exists():
        pytest.skip(f"{path} not found")
    dataset = load(path, energy_unit="eV")[:300]
    assert len(dataset) == 300
    assert 4 <= dataset.n_atoms.min() and dataset.n_atoms.max() <= 23

    cfg, variables = small_model
    batcher = Batcher(dataset, cfg.cutoff, batch_size=8)
    energy_fn = make_energy_fn(cfg)
    traces = {"n": 0}

    def counted(variables, graph):
        traces["n"] += 1  # runs only while tracing
        return energy_fn(variables, graph)

    jitted = fast_jit(counted)
    real_total = int(dataset.n_atoms.sum())

    energies_ref = dataset.energies

    def run(batches, order):
        caps, padded, real, seen = set(), 0, 0, 0
        for graph, labels in batches:
            n_graphs = int(graph.graph_mask.sum())
            caps.add(graph.capacity)
            assert graph.capacity[2] == 8
            cap = batcher.capacity_for(int(graph.atom_mask.sum()))
            assert graph.capacity == (cap.atoms, cap.pairs, cap.graphs)
            assert labels.forces.shape == (graph.capacity[0], 3) and labels.energy.shape == (8,)
            np.testing.assert_allclose(labels.energy[:n_graphs], energies_ref[order[seen:seen + n_graphs]],
                                       rtol=1e-6, err_msg="batch labels out of order")
            energies = np.asarray(jitted(variables, graph))
            assert np.isfinite(energies).all() and (energies[n_graphs:] == 0).all()
            padded += graph.capacity[0]
            real += int(graph.atom_mask.sum())
            seen += n_graphs
        assert seen == len(dataset) and real == real_total, "structures or atoms lost in batching"
        return caps, padded

    in_order = np.arange(len(dataset))
    caps1, padded = run(batcher.iterate(), in_order)
    first = traces["n"]
    waste = padded / real_total
    print(f"\nqm7x 300 structures, batch 8: {first} compilations for {len(caps1)} capacities "
          f"{sorted(caps1)}; padded/real atoms = {waste:.3f}")
    assert first <= len(caps1), f"{first} compilations for {len(caps1)} distinct capacities"
    assert first <= 8, f"too many compilations: {first}"
    assert waste <= 1.6, f"padded atoms are {waste:.2f} x the real atoms"

    caps2, _ = run(batcher.iterate(), in_order)
    assert caps2 == caps1
    assert traces["n"] == first, f"second pass (same order) compiled {traces['n'] - first} new programs"

    shuffled = np.random.default_rng(123).permutation(len(dataset))  # Batcher's documented shuffle
    caps3, _ = run(batcher.iterate(shuffle=True, seed=123), shuffled)
    assert traces["n"] == first, (
        f"reshuffled pass compiled {traces['n'] - first} new programs (new capacities {sorted(caps3 - caps1)})"
    )


# ---------------------------------------------------------------- labels


def test_pack_labels_aligned(systems, pairs):
    n_atoms = sum(s.n_atoms for s in systems)
    cap = Capacity(n_atoms + 5, sum(len(p) for p in pairs) + 3, 4)
    g = pack(systems, pairs, cap)
    labels = pack_labels(systems, cap)
    assert isinstance(labels, Labels)
    assert labels.energy.shape == (cap.graphs,) and labels.forces.shape == (cap.atoms, 3)
    assert labels.energy.dtype == np.float32 and labels.forces.dtype == np.float32
    a0 = 0
    for k, s in enumerate(systems):
        assert g.atom_graph[a0] == k
        np.testing.assert_allclose(labels.energy[k], s.energy, rtol=1e-6)
        np.testing.assert_allclose(labels.forces[a0:a0 + s.n_atoms], s.forces, rtol=1e-6, atol=1e-6)
        a0 += s.n_atoms
    assert (labels.forces[~g.atom_mask] == 0).all()
    assert (labels.energy[~g.graph_mask] == 0).all()
    # float64 on request
    assert pack_labels(systems, cap, dtype=np.float64).forces.dtype == np.float64


@pytest.mark.parametrize("missing", ["energy", "forces"])
def test_missing_labels_raise(systems, pairs, missing):
    broken = list(systems)
    broken[1] = broken[1].replace(**{missing: None})
    cap = Capacity(64, 512, 4)
    with pytest.raises(StructureError, match="structure 1"):
        pack_labels(broken, cap)
    # the Batcher raises too when labels are requested, and not when they are not
    batcher = Batcher(Dataset.from_systems(broken), CUTOFF, batch_size=3)
    with pytest.raises(StructureError):
        batcher.batch([0, 1, 2])
    assert batcher.batch([0, 1, 2], labels=False).graph_mask.sum() == 3


def test_batcher_capacity_is_monotone_and_sufficient(systems):
    batcher = Batcher(Dataset.from_systems(systems), CUTOFF, batch_size=2)
    caps = [batcher.capacity_for(n) for n in range(1, 200)]
    assert all(c.graphs == 2 for c in caps)
    for n, c in zip(range(1, 200), caps):
        assert c.atoms >= n + 1 and c.pairs >= c.atoms * batcher.pairs_per_atom - 1e-9
    assert all(b.atoms >= a.atoms and b.pairs >= a.pairs for a, b in zip(caps, caps[1:]))
    for idx in ([0, 1], [1, 2], [2], [0, 2]):
        g, labels = batcher.batch(idx)
        assert g.graph_mask.sum() == len(idx) and g.capacity[2] == 2
        assert labels.forces.shape == (g.capacity[0], 3)
    with pytest.raises(ValueError):
        Batcher(Dataset.from_systems(systems), CUTOFF, batch_size=0)
