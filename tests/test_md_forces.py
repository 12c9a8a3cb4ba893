"""The compiled-MD force function (skin neighbour list inside jit) gives the model's energy and forces, for
free molecules and small periodic cells with unwrapped positions; overflow is detected, never silent."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from physics import fast_energy_and_forces, fast_jit
from so3krates_lab.data import builtin
from so3krates_lab.graph import graph_from_system
from so3krates_lab.md.forces import model_force_fn
from so3krates_lab.model import So3kratesConfig, init_variables, make_energy_fn

CONFIG = So3kratesConfig.preset("small", dtype="float64", ev_init="neighbours")


def _reference(system, variables):
    graph = graph_from_system(system, CONFIG.cutoff, dtype=np.float64)
    e, f = fast_energy_and_forces(make_energy_fn(CONFIG), variables, graph)
    return float(e[0]), np.asarray(f)[: system.n_atoms]


@pytest.mark.parametrize("kind", ["ethanol", "water-8"])
def test_skin_list_force_fn_matches_the_model(kind):
    system = builtin.ethanol() if kind == "ethanol" else builtin.water_box(2, seed=1)  # 6.2 A cell < 2 x cutoff
    variables = init_variables(CONFIG, graph_from_system(system, CONFIG.cutoff, dtype=np.float64), seed=3)
    cell, pbc = (system.cell, system.pbc) if system.periodic else (None, (False,) * 3)
    force_fn, nbrs = model_force_fn(make_energy_fn(CONFIG), variables, CONFIG.cutoff, system.numbers, system.positions, cell,
                                   pbc, skin=1.0, dtype=jnp.float64, all_pairs=False)
    step = fast_jit(force_fn)
    rng = np.random.default_rng(0)
    # A displacement below skin/2 keeps the list; one above it forces a rebuild; unwrapped coordinates (whole
    # molecules shifted by lattice vectors) must not matter.
    small = system.positions + 0.2 * rng.uniform(-1, 1, system.positions.shape) / np.sqrt(3)
    large = system.positions + 0.9 * rng.uniform(-1, 1, system.positions.shape)
    for positions, rebuilt in ((small, False), (large, True)):
        moved = system.replace(positions=positions)
        e, f, new = step(jnp.asarray(positions), nbrs)
        assert int(new.builds) == int(nbrs.builds) + rebuilt
        e_ref, f_ref = _reference(moved, variables)
        assert float(e) == pytest.approx(e_ref, abs=1e-9)
        np.testing.assert_allclose(np.asarray(f), f_ref, atol=1e-9)
        assert not bool(new.overflow)
    if system.periodic:
        unwrapped = large + np.outer(np.arange(len(large)) % 3 - 1, np.ones(3)) @ np.diag([0, 1, 0]) @ system.cell
        e_u, f_u, _ = step(jnp.asarray(unwrapped), nbrs)
        e_ref, f_ref = _reference(system.replace(positions=large), variables)
        assert float(e_u) == pytest.approx(e_ref, abs=1e-9)
        np.testing.assert_allclose(np.asarray(f_u), f_ref, atol=1e-9)


def test_overflow_is_flagged_and_sticky():
    system = builtin.ethanol()
    variables = init_variables(CONFIG, graph_from_system(system, CONFIG.cutoff, dtype=np.float64), seed=3)
    force_fn, nbrs = model_force_fn(make_energy_fn(CONFIG), variables, CONFIG.cutoff, system.numbers,
                                   system.positions, capacity=10, dtype=jnp.float64, all_pairs=False)
    assert bool(nbrs.overflow) and int(nbrs.n_pairs) == 36  # 9 atoms, all 36 pairs within 5.5 A
    grown = force_fn.reallocate(nbrs, system.positions, 40)
    assert not bool(grown.overflow) and int(jnp.sum(grown.pair_mask)) == 36
    _, _, after = jax.jit(force_fn)(jnp.asarray(system.positions + 2.0), nbrs)  # rebuild keeps the flag
    assert bool(after.overflow)


def test_a_list_built_at_nan_positions_is_rebuilt_at_good_positions():
    """A list built at NaN positions has a NaN reference; evaluated at good positions with that list, the force
    function must rebuild it and give the model's forces, not keep its empty pair set (NaN > skin is False)."""
    system = builtin.ethanol()
    variables = init_variables(CONFIG, graph_from_system(system, CONFIG.cutoff, dtype=np.float64), seed=3)
    force_fn, nbrs = model_force_fn(make_energy_fn(CONFIG), variables, CONFIG.cutoff, system.numbers,
                                   system.positions, dtype=jnp.float64, all_pairs=False)
    step = fast_jit(force_fn)
    _, _, broken = step(jnp.full_like(jnp.asarray(system.positions), jnp.nan), nbrs)
    assert np.isnan(np.asarray(broken.reference)).all() and int(jnp.sum(broken.pair_mask)) == 0
    e, f, fixed = step(jnp.asarray(system.positions), broken)
    assert int(fixed.builds) == int(broken.builds) + 1 and int(jnp.sum(fixed.pair_mask)) == 36
    e_ref, f_ref = _reference(system, variables)
    assert float(e) == pytest.approx(e_ref, abs=1e-9)
    np.testing.assert_allclose(np.asarray(f), f_ref, atol=1e-9)


def _pair_set(nbrs):
    """Pairs as a set of (i, j, shift) with each unordered pair written one canonical way."""
    m = np.asarray(nbrs.pair_mask)
    found = set()
    for i, j, s in zip(np.asarray(nbrs.receivers)[m], np.asarray(nbrs.senders)[m], np.asarray(nbrs.cell_shifts)[m]):
        key = min((int(i), int(j), tuple(int(x) for x in s)), (int(j), int(i), tuple(-int(x) for x in s)))
        assert key not in found, f"pair {key} listed twice"
        found.add(key)
    return found


@pytest.mark.parametrize("kind", ["triclinic", "free"])
def test_cell_list_finds_exactly_the_all_pairs_list(kind):
    from so3krates_lab.md import neighbours as nl

    rng = np.random.default_rng(7)
    reach = 5.5
    if kind == "triclinic":
        cell = np.array([[18.0, 0, 0], [3.0, 17.0, 0], [2.0, 1.5, 17.5]])
        pbc = (True,) * 3
        # unwrapped positions: atoms scattered over many periodic images
        positions = rng.uniform(size=(450, 3)) @ cell + rng.normal(scale=8.0, size=(450, 3))
    else:
        cell, pbc = None, (False,) * 3
        positions = rng.uniform(size=(450, 3)) * 22.0
    grid = nl.cell_grid(positions, cell, pbc, reach, min_atoms=0)
    assert grid is not None and min(grid.counts) >= 3
    if kind == "free":  # atoms that wandered far outside the binned box still find their neighbours
        positions[:40] += np.array([30.0, -25.0, 12.0])
    cell_j = jnp.zeros((3, 3)) if cell is None else jnp.asarray(cell)
    shifts = nl.image_shifts(cell, pbc, reach)
    everything = nl.build(jnp.asarray(positions), cell_j, shifts, reach, 30_000, pbc)
    binned = nl.build(jnp.asarray(positions), cell_j, None, reach, 30_000, pbc, grid=grid, bin_capacity=80)
    assert not bool(everything.overflow) and not bool(binned.overflow)
    assert int(binned.n_pairs) == int(everything.n_pairs) > 1000
    assert _pair_set(binned) == _pair_set(everything)
    # a bin with more atoms than slots is an overflow, never a silently shorter list
    starved = nl.build(jnp.asarray(positions), cell_j, None, reach, 30_000, pbc, grid=grid, bin_capacity=4)
    assert bool(starved.overflow) and int(starved.max_bin_count) > 4


def test_no_cell_list_where_the_cell_is_too_narrow():
    system = builtin.water_box(2, seed=1)  # 6.2 A cell: fewer than three bins of cutoff + skin
    variables = init_variables(CONFIG, graph_from_system(system, CONFIG.cutoff, dtype=np.float64), seed=3)
    with pytest.raises(ValueError, match="no cell list possible"):
        model_force_fn(make_energy_fn(CONFIG), variables, CONFIG.cutoff, system.numbers, system.positions,
                       system.cell, system.pbc, cell_list=True, dtype=jnp.float64)


def test_all_pairs_force_fn_matches_the_neighbour_list_beyond_the_cutoff():
    """Two ethanols 7 A apart (some pairs beyond the 5 A cutoff): the fixed all-pairs graph gives the same
    energy and forces as the skin list, because the cutoff function zeroes the far pairs."""
    system = builtin.ethanol()
    numbers = np.concatenate([system.numbers, system.numbers])
    positions = np.concatenate([system.positions, system.positions + [7.0, 0.0, 0.0]])
    variables = init_variables(CONFIG, graph_from_system(system, CONFIG.cutoff, dtype=np.float64), seed=3)
    energy_fn = make_energy_fn(CONFIG)
    listed, nbrs = model_force_fn(energy_fn, variables, CONFIG.cutoff, numbers, positions, dtype=jnp.float64,
                                  all_pairs=False)
    every, aux = model_force_fn(energy_fn, variables, CONFIG.cutoff, numbers, positions, dtype=jnp.float64,
                                all_pairs=True)
    assert aux is None and int(nbrs.n_pairs) < len(numbers) * (len(numbers) - 1) // 2  # some pairs are far
    moved = jnp.asarray(positions + 0.1 * np.random.default_rng(1).normal(size=positions.shape))
    e_list, f_list, _ = fast_jit(listed)(moved, nbrs)
    e_all, f_all, _ = fast_jit(every)(moved, None)
    assert float(e_all) == pytest.approx(float(e_list), abs=1e-9)
    np.testing.assert_allclose(np.asarray(f_all), np.asarray(f_list), atol=1e-9)
    # vmapped (a batch of structures) it evaluates one graph of disjoint copies: the same numbers per structure
    batch = jnp.stack([moved, moved * 1.03, moved + 0.7])  # the second stretched, the third translated
    e_b, f_b, _ = fast_jit(jax.vmap(every, in_axes=(0, None)))(batch, None)
    for k in range(len(batch)):
        e_k, f_k, _ = fast_jit(every)(batch[k], None)
        assert float(e_b[k]) == pytest.approx(float(e_k), abs=1e-9)
        np.testing.assert_allclose(np.asarray(f_b[k]), np.asarray(f_k), atol=1e-9)
    assert float(e_b[1]) != pytest.approx(float(e_b[0]), abs=1e-6)  # a stretched copy has another energy
    assert float(e_b[2]) == pytest.approx(float(e_b[0]), abs=1e-9)  # a translated one the same
    with pytest.raises(ValueError, match="free molecules"):
        model_force_fn(energy_fn, variables, CONFIG.cutoff, numbers, positions, cell=np.eye(3) * 20,
                       pbc=(True, True, True), all_pairs=True)


def test_the_fixed_all_pairs_graph_is_chosen_only_where_it_has_no_more_pair_slots_than_a_list():
    """Default all_pairs=None: ethanol (36 pairs, list capacity about 47) gets the fixed graph; a list capacity
    below 36, a periodic cell or an explicit all_pairs=False gets the neighbour list. Same energy either way."""
    system = builtin.ethanol()
    variables = init_variables(CONFIG, graph_from_system(system, CONFIG.cutoff, dtype=np.float64), seed=3)
    energy_fn = make_energy_fn(CONFIG)

    def build(**kw):
        return model_force_fn(energy_fn, variables, CONFIG.cutoff, system.numbers, system.positions,
                              dtype=jnp.float64, **kw)

    auto, aux = build()
    assert auto.pairs == "fixed" and aux is None
    for kw in ({"capacity": 35}, {"all_pairs": False}):
        listed, nbrs = build(**kw)
        assert listed.pairs == "list" and nbrs is not None
    water = builtin.water_box(2, seed=1)
    periodic, nbrs = model_force_fn(energy_fn, variables, CONFIG.cutoff, water.numbers, water.positions, water.cell,
                                    water.pbc, dtype=jnp.float64)
    assert periodic.pairs == "list" and nbrs is not None
    listed, nbrs = build(all_pairs=False)
    moved = jnp.asarray(system.positions + 0.05 * np.random.default_rng(2).normal(size=system.positions.shape))
    e_auto, f_auto, _ = fast_jit(auto)(moved, None)
    e_list, f_list, _ = fast_jit(listed)(moved, nbrs)
    assert float(e_auto) == pytest.approx(float(e_list), abs=1e-9)
    np.testing.assert_allclose(np.asarray(f_auto), np.asarray(f_list), atol=1e-9)
