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
                                   pbc, skin=1.0, dtype=jnp.float64)
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
                                   system.positions, capacity=10, dtype=jnp.float64)
    assert bool(nbrs.overflow) and int(nbrs.n_pairs) == 36  # 9 atoms, all 36 pairs within 5.5 A
    grown = force_fn.reallocate(nbrs, system.positions, 40)
    assert not bool(grown.overflow) and int(jnp.sum(grown.pair_mask)) == 36
    _, _, after = jax.jit(force_fn)(jnp.asarray(system.positions + 2.0), nbrs)  # rebuild keeps the flag
    assert bool(after.overflow)
