"""The compiled-MD force function (`md.force_function`: a potential and a structure, the skin neighbour list
inside jit) gives the model's energy and forces, for free molecules and small periodic cells with unwrapped
positions; overflow is detected, never silent."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from physics import fast_jit
from so3krates_lab import Potential, System
from so3krates_lab.data import builtin
from so3krates_lab.graph import SkinNeighbourFn, graph_from_system
from so3krates_lab.md import ForceFunction, force_function
from so3krates_lab.model import So3kratesConfig, init_variables

CONFIG = So3kratesConfig.preset("small", dtype="float64", ev_init="neighbours")

# the reference: the potential on the host-built Graph (all pairs within the cutoff, no skin list)
_reference_fn = fast_jit(lambda potential, graph: potential.energy_and_forces(graph))


def _potential(system) -> Potential:
    variables = init_variables(CONFIG, graph_from_system(system, CONFIG.cutoff, dtype=np.float64), seed=3)
    return Potential.create(CONFIG, variables)


def _reference(system, potential):
    graph = graph_from_system(system, CONFIG.cutoff, dtype=np.float64)
    e, f = _reference_fn(potential, graph)
    return float(e[0]), np.asarray(f)[: system.n_atoms]


@pytest.mark.parametrize("kind", ["ethanol", "water-8"])
def test_skin_list_force_fn_matches_the_model(kind):
    system = builtin.ethanol() if kind == "ethanol" else builtin.water_box(2, seed=1)  # 6.2 A cell < 2 x cutoff
    pot = _potential(system)
    force_fn = force_function(pot, system, skin=1.0, all_pairs=False)
    assert isinstance(force_fn, ForceFunction) and isinstance(force_fn.neighbours, SkinNeighbourFn)
    assert force_fn.pairs == "list" and force_fn.dtype == jnp.float64 and force_fn.n_pairs is None
    nbrs = force_fn.aux
    step = fast_jit(force_fn.fn)
    rng = np.random.default_rng(0)
    # A displacement below skin/2 keeps the list; one above it forces a rebuild; unwrapped coordinates (whole
    # molecules shifted by lattice vectors) must not matter.
    small = system.positions + 0.2 * rng.uniform(-1, 1, system.positions.shape) / np.sqrt(3)
    large = system.positions + 0.9 * rng.uniform(-1, 1, system.positions.shape)
    for positions, rebuilt in ((small, False), (large, True)):
        moved = system.replace(positions=positions)
        e, f, new = step(jnp.asarray(positions), nbrs)
        assert int(new.builds) == int(nbrs.builds) + rebuilt
        e_ref, f_ref = _reference(moved, pot)
        assert float(e) == pytest.approx(e_ref, abs=1e-9)
        np.testing.assert_allclose(np.asarray(f), f_ref, atol=1e-9)
        assert not bool(new.overflow)
    if system.periodic:
        unwrapped = large + np.outer(np.arange(len(large)) % 3 - 1, np.ones(3)) @ np.diag([0, 1, 0]) @ system.cell
        e_u, f_u, _ = step(jnp.asarray(unwrapped), nbrs)
        e_ref, f_ref = _reference(system.replace(positions=large), pot)
        assert float(e_u) == pytest.approx(e_ref, abs=1e-9)
        np.testing.assert_allclose(np.asarray(f_u), f_ref, atol=1e-9)


def test_overflow_is_flagged_and_sticky():
    system = builtin.ethanol()
    force_fn = force_function(_potential(system), system, capacity=10, all_pairs=False)
    nbrs = force_fn.aux
    assert bool(nbrs.overflow) and int(nbrs.n_pairs) == 36  # 9 atoms, all 36 pairs within 5.5 A
    grown = force_fn.neighbours.reallocate(nbrs, system.positions, 40)
    assert not bool(grown.overflow) and int(jnp.sum(grown.pair_mask)) == 36 and grown.capacity == 40
    _, _, after = jax.jit(force_fn.fn)(jnp.asarray(system.positions + 2.0), nbrs)  # rebuild keeps the flag
    assert bool(after.overflow)


def test_a_list_built_at_nan_positions_is_rebuilt_at_good_positions():
    """A list built at NaN positions has a NaN reference; evaluated at good positions with that list, the force
    function must rebuild it and give the model's forces, not keep its empty pair set (NaN > skin is False)."""
    system = builtin.ethanol()
    pot = _potential(system)
    force_fn = force_function(pot, system, all_pairs=False)
    step = fast_jit(force_fn.fn)
    _, _, broken = step(jnp.full_like(jnp.asarray(system.positions), jnp.nan), force_fn.aux)
    assert np.isnan(np.asarray(broken.reference)).all() and int(jnp.sum(broken.pair_mask)) == 0
    e, f, fixed = step(jnp.asarray(system.positions), broken)
    assert int(fixed.builds) == int(broken.builds) + 1 and int(jnp.sum(fixed.pair_mask)) == 36
    e_ref, f_ref = _reference(system, pot)
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
    from so3krates_lab.graph import skin as nl

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
    with pytest.raises(ValueError, match="no cell list possible"):
        force_function(_potential(system), system, cell_list=True)


def test_all_pairs_force_fn_matches_the_neighbour_list_beyond_the_cutoff():
    """Two ethanols 7 A apart (some pairs beyond the 5 A cutoff): the fixed all-pairs graph gives the same
    energy and forces as the skin list, because the cutoff function zeroes the far pairs."""
    single = builtin.ethanol()
    numbers = np.concatenate([single.numbers, single.numbers])
    positions = np.concatenate([single.positions, single.positions + [7.0, 0.0, 0.0]])
    system = System(numbers=numbers, positions=positions)
    pot = _potential(single)
    listed = force_function(pot, system, all_pairs=False)
    every = force_function(pot, system, all_pairs=True)
    nbrs = listed.aux
    assert every.aux is None and every.pairs == "fixed" and every.neighbours is None
    assert every.n_pairs == len(numbers) * (len(numbers) - 1) // 2
    assert int(nbrs.n_pairs) < len(numbers) * (len(numbers) - 1) // 2  # some pairs are far
    moved = jnp.asarray(positions + 0.1 * np.random.default_rng(1).normal(size=positions.shape))
    e_list, f_list, _ = fast_jit(listed.fn)(moved, nbrs)
    e_all, f_all, _ = fast_jit(every.fn)(moved, None)
    assert float(e_all) == pytest.approx(float(e_list), abs=1e-9)
    np.testing.assert_allclose(np.asarray(f_all), np.asarray(f_list), atol=1e-9)
    # vmapped (a batch of structures) it evaluates one graph of disjoint copies: the same numbers per structure
    batch = jnp.stack([moved, moved * 1.03, moved + 0.7])  # the second stretched, the third translated
    e_b, f_b, _ = fast_jit(jax.vmap(every.fn, in_axes=(0, None)))(batch, None)
    for k in range(len(batch)):
        e_k, f_k, _ = fast_jit(every.fn)(batch[k], None)
        assert float(e_b[k]) == pytest.approx(float(e_k), abs=1e-9)
        np.testing.assert_allclose(np.asarray(f_b[k]), np.asarray(f_k), atol=1e-9)
    assert float(e_b[1]) != pytest.approx(float(e_b[0]), abs=1e-6)  # a stretched copy has another energy
    assert float(e_b[2]) == pytest.approx(float(e_b[0]), abs=1e-9)  # a translated one the same
    with pytest.raises(ValueError, match="free molecules"):
        force_function(pot, system.replace(cell=np.eye(3) * 20, pbc=np.ones(3, bool)), all_pairs=True)


def test_the_fixed_all_pairs_graph_is_chosen_only_where_it_has_no_more_pair_slots_than_a_list():
    """Default all_pairs=None: ethanol (36 pairs, list capacity about 47) gets the fixed graph; a list capacity
    below 36, a periodic cell or an explicit all_pairs=False gets the neighbour list. Same energy either way."""
    system = builtin.ethanol()
    pot = _potential(system)

    auto = force_function(pot, system)
    assert auto.pairs == "fixed" and auto.aux is None and auto.n_pairs == 36
    for kw in ({"capacity": 35}, {"all_pairs": False}):
        listed = force_function(pot, system, **kw)
        assert listed.pairs == "list" and listed.aux is not None
    water = builtin.water_box(2, seed=1)
    periodic = force_function(pot, water)
    assert periodic.pairs == "list" and periodic.aux is not None
    listed = force_function(pot, system, all_pairs=False)
    moved = jnp.asarray(system.positions + 0.05 * np.random.default_rng(2).normal(size=system.positions.shape))
    e_auto, f_auto, _ = fast_jit(auto.fn)(moved, None)
    e_list, f_list, _ = fast_jit(listed.fn)(moved, listed.aux)
    assert float(e_auto) == pytest.approx(float(e_list), abs=1e-9)
    np.testing.assert_allclose(np.asarray(f_auto), np.asarray(f_list), atol=1e-9)


def test_force_function_rejects_what_is_not_a_potential():
    """The protocol is checked up front, naming what is missing (the old (energy_fn, variables, cutoff) call is
    gone)."""
    system = builtin.ethanol()
    with pytest.raises(TypeError, match="lacks cutoff, dtype, energy"):
        force_function(lambda graph: graph, system)
