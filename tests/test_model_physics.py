"""The physics suite (shared spec SO3KRATES.md, section 8): invariances, equivariance, forces as the exact
negative gradient, smoothness at the cutoff, the contraction's definition, and no recompilation.

Most checks run for the reference configuration and for small variants (invariant ablation, EVs initialised
from the neighbourhood), in float64. Broken models demonstrate that each check can fail.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from physics import (
    evaluate, fast_energy_and_forces, fast_energy_forces_stress, fast_jit, finite_difference_error, permutation_error, random_rotation, rotation_error, translation_error,
)
from so3krates_lab.graph import Capacity, graph_from_system, neighbour_pairs, pack
from so3krates_lab.model import (
    So3krates, So3kratesConfig, contract, cosine_cutoff, energy_and_forces,
    init_variables, make_energy_fn, physnet_rbf, spherical_harmonics, with_constants,
)
from so3krates_lab.model.basis import degree_index
from so3krates_lab.data import builtin
from so3krates_lab.structures import System

ETHANOL = builtin.ethanol()


def _perturbed(system: System, scale: float = 0.15, seed: int = 1) -> System:
    rng = np.random.default_rng(seed)
    return system.replace(positions=system.positions + scale * rng.normal(size=system.positions.shape))


MOLECULE = _perturbed(ETHANOL)

CONFIGS = {
    "default": So3kratesConfig(dtype="float64"),
    "small-neighbour-init": So3kratesConfig.preset("small", dtype="float64", ev_init="neighbours"),
    "invariant": So3kratesConfig.preset("small", dtype="float64", degrees=()),
}
NORM_AND_MLP = So3kratesConfig.preset("small", dtype="float64", layer_norm=True, residual_mlp=True)


def _model(config: So3kratesConfig, system: System = MOLECULE, seed: int = 0):
    """energy_fn and variables with non-trivial element energies and scale (so they are exercised too)."""
    graph = graph_from_system(system, config.cutoff, dtype=np.float64)
    variables = fast_jit(So3krates(config).init)(jax.random.PRNGKey(seed), graph)
    shifts = np.zeros(119)
    shifts[[1, 6, 8]] = [-13.6, -1029.5, -2041.3]
    variables = with_constants(variables, element_energy=shifts, energy_scale=0.7)
    # Random (not zero) biases, so no term is trivially absent.
    key = jax.random.PRNGKey(seed + 1)
    leaves, tree = jax.tree.flatten(variables["params"])
    keys = jax.random.split(key, len(leaves))
    leaves = [leaf + 0.1 * jax.random.normal(k, leaf.shape, leaf.dtype) for leaf, k in zip(leaves, keys)]
    variables = {**variables, "params": jax.tree.unflatten(tree, leaves)}
    return make_energy_fn(config), variables


@pytest.fixture(scope="module", params=list(CONFIGS))
def model(request):
    config = CONFIGS[request.param]
    return (config, *_model(config))


# --------------------------------------------------------------------------------------------------------
# Invariance and equivariance


def test_rotation_invariance_of_energy_and_equivariance_of_forces(model):
    config, energy_fn, variables = model
    for seed in range(3):
        assert rotation_error(energy_fn, variables, MOLECULE, config.cutoff, seed) < 1e-9


def test_optional_layer_norm_and_residual_mlp_keep_the_physics():
    energy_fn, variables = _model(NORM_AND_MLP)
    assert rotation_error(energy_fn, variables, MOLECULE, 5.0) < 1e-9
    assert translation_error(energy_fn, variables, MOLECULE, 5.0) < 1e-9
    assert finite_difference_error(energy_fn, variables, MOLECULE, 5.0) < 2e-6


def test_translation_invariance(model):
    config, energy_fn, variables = model
    assert translation_error(energy_fn, variables, MOLECULE, config.cutoff) < 1e-9


def test_permutation_invariance(model):
    config, energy_fn, variables = model
    for seed in range(2):
        assert permutation_error(energy_fn, variables, MOLECULE, config.cutoff, seed) < 1e-9


def _wigner_from_harmonics(q: np.ndarray, degrees) -> np.ndarray:
    """D with Y(Q u) = D Y(u) for the real harmonics, fitted on many directions (exact up to round-off)."""
    u = np.random.default_rng(7).normal(size=(200, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    y = np.asarray(spherical_harmonics(jnp.asarray(u), degrees))
    y_rot = np.asarray(spherical_harmonics(jnp.asarray(u @ q.T), degrees))
    d, *_ = np.linalg.lstsq(y, y_rot, rcond=None)  # y @ d = y_rot, so D = d.T
    return d.T


@pytest.mark.parametrize("name", ["default", "small-neighbour-init"])
def test_euclidean_variables_are_equivariant(name):
    """chi^(l)(Q R) = D^l(Q) chi^(l)(R) after every block; hence |chi^(l)| is invariant."""
    config = CONFIGS[name]
    energy_fn, variables = _model(config)
    model = So3krates(config)
    q = random_rotation(3)

    def chis(system):
        graph = graph_from_system(system, config.cutoff, dtype=np.float64)
        _, state = fast_jit(lambda v, g: model.apply(v, g, mutable=["intermediates"]))(variables, graph)
        return [np.asarray(c)[: system.n_atoms] for c in state["intermediates"]["chi"]]

    c = MOLECULE.positions.mean(0)
    before = chis(MOLECULE)
    after = chis(MOLECULE.replace(positions=(MOLECULE.positions - c) @ q.T + c))
    d = _wigner_from_harmonics(q, config.degrees)
    assert np.allclose(d @ d.T, np.eye(len(d)), atol=1e-10), "fitted Wigner matrix is not orthogonal"
    for chi0, chi1 in zip(before, after):
        assert np.abs(chi0).max() > 1e-3, "EVs are trivially zero: the test would not see a mistake"
        np.testing.assert_allclose(chi1, chi0 @ d.T, atol=1e-9)
        np.testing.assert_allclose(contract(chi1, config.degrees), contract(chi0, config.degrees), atol=1e-9)


def test_padding_invariance(model):
    """Extra padding atoms and pairs, and pairs beyond the cutoff, change nothing."""
    config, energy_fn, variables = model
    e0, f0 = evaluate(energy_fn, variables, MOLECULE, config.cutoff)
    e1, f1 = evaluate(energy_fn, variables, MOLECULE, config.cutoff, capacity=Capacity(40, 200, 3))
    assert abs(e1 - e0) < 1e-9 and np.abs(f1 - f0).max() < 1e-9
    far = pack([MOLECULE], [neighbour_pairs(MOLECULE, config.cutoff + 3.0)], None, np.float64)
    e2, f2 = fast_energy_and_forces(energy_fn, variables, far)
    assert abs(float(e2[0]) - e0) < 1e-9 and np.abs(np.asarray(f2)[:9] - f0).max() < 1e-9


def test_batched_structures_are_independent(model):
    config, energy_fn, variables = model
    other = _perturbed(ETHANOL, seed=5)
    graph = pack([MOLECULE, other], [neighbour_pairs(s, config.cutoff) for s in (MOLECULE, other)],
                 Capacity(24, 120, 3), np.float64)
    e, f = fast_energy_and_forces(energy_fn, variables, graph)
    e0, f0 = evaluate(energy_fn, variables, MOLECULE, config.cutoff)
    e1, f1 = evaluate(energy_fn, variables, other, config.cutoff)
    np.testing.assert_allclose(np.asarray(e), [e0, e1, 0.0], atol=1e-9)
    np.testing.assert_allclose(np.asarray(f)[:18], np.concatenate([f0, f1]), atol=1e-9)


# --------------------------------------------------------------------------------------------------------
# Forces, stress, smoothness


def test_forces_match_finite_differences(model):
    config, energy_fn, variables = model
    assert finite_difference_error(energy_fn, variables, MOLECULE, config.cutoff) < 2e-6


def _water_cell(seed: int = 0) -> System:
    """A distorted 24-atom periodic water box: a triclinic cell smaller than twice the cutoff."""
    rng = np.random.default_rng(seed)
    water = builtin.water_box(2, seed=seed)
    return water.replace(positions=water.positions + 0.2 * rng.normal(size=water.positions.shape),
                         cell=water.cell + 0.3 * rng.normal(size=(3, 3)))


def test_periodic_small_cell_forces_and_stress_match_finite_differences():
    config = So3kratesConfig.preset("small", dtype="float64")
    water = _water_cell()
    energy_fn, variables = _model(config, water)
    pairs = neighbour_pairs(water, config.cutoff + 0.5)
    graph = pack([water], [pairs], None, np.float64)
    e, f, stress = fast_energy_forces_stress(energy_fn, variables, graph)
    energy_of = fast_jit(energy_fn)
    assert np.abs(np.asarray(stress[0]) - np.asarray(stress[0]).T).max() < 1e-12
    assert finite_difference_error(energy_fn, variables, water, config.cutoff) < 2e-6
    cell0, pos0 = np.asarray(water.cell), water.positions
    volume = abs(np.linalg.det(cell0))
    h = 1e-5
    for a, b in [(0, 0), (1, 2), (2, 2), (0, 1)]:
        vals = []
        for sign in (1, -1):
            eps = np.zeros((3, 3))
            eps[a, b] += sign * h / 2
            eps[b, a] += sign * h / 2
            deform = np.eye(3) + eps
            g = graph.replace(positions=jnp.asarray(pos0 @ deform), cell=jnp.asarray((cell0 @ deform)[None]))
            vals.append(float(energy_of(variables, g)[0]))
        fd = (vals[0] - vals[1]) / (2 * h) / volume
        assert abs(fd - float(stress[0, a, b])) < 1e-7, (a, b, fd, float(stress[0, a, b]))


def test_periodic_translation_and_wrapping_invariance():
    config = So3kratesConfig.preset("small", dtype="float64")
    water = _water_cell(seed=3)
    energy_fn, variables = _model(config, water)
    moved = water.positions + np.array([1.7, -4.2, 9.1])
    frac = moved @ np.linalg.inv(water.cell)
    wrapped = water.replace(positions=(frac - np.floor(frac)) @ water.cell)
    e0, f0 = evaluate(energy_fn, variables, water, config.cutoff)
    e1, f1 = evaluate(energy_fn, variables, wrapped, config.cutoff)
    assert abs(e1 - e0) < 1e-9 and np.abs(f1 - f0).max() < 1e-9


def _cutoff_crossing_kink(energy_fn, variables, rc: float, delta: float = 1e-5):
    """Pull the hydroxyl hydrogen away from the far carbon along a line through r_c (the neighbour list is
    rebuilt at every point) and return the second differences of E and F straddling r_c.

    The pair leaves the list exactly where its cutoff weight reaches zero with zero slope. The cosine cutoff
    is C1 (its second derivative jumps at r_c), so E is C1 there: its second difference is O(delta^2), and
    F is continuous with a kink: its second difference is O(delta). A jump J in E or F shows up in full.
    """
    k_far, k_anchor = 3, 1
    direction = ETHANOL.positions[k_far] - ETHANOL.positions[k_anchor]
    direction /= np.linalg.norm(direction)

    def at(dist):
        pos = ETHANOL.positions.copy()
        pos[k_far] = ETHANOL.positions[k_anchor] + dist * direction
        others = np.delete(np.linalg.norm(pos - pos[k_far], axis=1), [k_far, k_anchor])
        assert np.abs(others - rc).min() > 1e-3, "another distance crosses r_c here: the test would be ambiguous"
        return evaluate(energy_fn, variables, ETHANOL.replace(positions=pos), rc)

    (e0, f0), (e1, f1), (e2, f2) = at(rc - 3 * delta), at(rc - delta), at(rc + delta)
    # Points at -3d, -d, +d: E(+d) - 2 E(-d) + E(-3d) is a second difference for smooth E.
    return abs(e2 - 2 * e1 + e0), float(np.abs(f2 - 2 * f1 + f0).max())


def test_energy_is_smooth_as_a_neighbour_crosses_the_cutoff(model):
    config, energy_fn, variables = model
    kink_e, kink_f = _cutoff_crossing_kink(energy_fn, variables, config.cutoff)
    assert kink_e < 1e-9  # O(delta^2): smooth energy
    assert kink_f < 1e-4  # O(delta): continuous forces (a force jump would be O(1))


# --------------------------------------------------------------------------------------------------------
# Building blocks


def test_contraction_matches_definition():
    degrees = (1, 2, 3)
    v = np.random.default_rng(0).normal(size=(5, 15))
    expected = np.stack([
        (v[:, 0:3] ** 2).sum(1) / math.sqrt(3),
        (v[:, 3:8] ** 2).sum(1) / math.sqrt(5),
        (v[:, 8:15] ** 2).sum(1) / math.sqrt(7),
    ], axis=1)
    np.testing.assert_allclose(np.asarray(contract(jnp.asarray(v), degrees)), expected, rtol=1e-12)
    np.testing.assert_array_equal(degree_index((1, 3)), [0, 0, 0, 1, 1, 1, 1, 1, 1, 1])


def test_spherical_harmonics_are_orthonormal_and_obey_the_addition_theorem():
    degrees = (1, 2, 3, 4)
    # Gauss-Legendre in cos(theta) x uniform phi: exact for the polynomial degrees involved.
    xg, wg = np.polynomial.legendre.leggauss(12)
    phis = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    ct, ph = np.meshgrid(xg, phis, indexing="ij")
    st = np.sqrt(1 - ct**2)
    u = np.stack([st * np.cos(ph), st * np.sin(ph), ct], -1).reshape(-1, 3)
    w = (wg[:, None] * np.full_like(ph, 2 * np.pi / len(phis))).reshape(-1)
    y = np.asarray(spherical_harmonics(jnp.asarray(u), degrees))
    gram = (y * w[:, None]).T @ y
    np.testing.assert_allclose(gram, np.eye(y.shape[1]), atol=1e-12)
    idx = degree_index(degrees)
    for k, l in enumerate(degrees):
        np.testing.assert_allclose((y[:, idx == k] ** 2).sum(1), (2 * l + 1) / (4 * np.pi), rtol=1e-12)
    # l = 1 is proportional to (y, z, x)
    np.testing.assert_allclose(y[:, :3], math.sqrt(3 / (4 * np.pi)) * u[:, [1, 2, 0]], atol=1e-12)


def test_radial_basis_and_cutoff_match_their_formulas():
    rc, n = 5.0, 32
    d = jnp.linspace(0.3, 6.0, 50)
    mu = np.linspace(np.exp(-rc), 1, n)
    beta = ((2 / n) * (1 - np.exp(-rc))) ** -2
    expected = np.exp(-beta * (np.exp(-np.asarray(d))[:, None] - mu) ** 2)
    np.testing.assert_allclose(np.asarray(physnet_rbf(d, rc, n)), expected, rtol=1e-12)
    phi = np.asarray(cosine_cutoff(d, rc))
    np.testing.assert_allclose(phi, np.where(np.asarray(d) < rc, 0.5 * (np.cos(np.pi * np.asarray(d) / rc) + 1), 0))
    slope = jax.grad(lambda x: cosine_cutoff(x, rc))(jnp.asarray(rc - 1e-9))
    assert abs(float(slope)) < 1e-8


def test_float32_and_float64_agree():
    c64 = So3kratesConfig(dtype="float64")
    energy_fn64, v64 = _model(c64)
    c32 = c64.replace(dtype="float32")
    v32 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), v64)
    g32 = graph_from_system(MOLECULE, 5.0, dtype=np.float32)
    e32, f32 = fast_energy_and_forces(make_energy_fn(c32), v32, g32)
    e64, f64 = evaluate(energy_fn64, v64, MOLECULE, 5.0)
    assert e32.dtype == jnp.float32 and f32.dtype == jnp.float32
    assert abs(float(e32[0]) - e64) < 1e-5 * abs(e64)
    np.testing.assert_allclose(np.asarray(f32)[:9], f64, atol=2e-3 * np.abs(f64).max())


def test_no_recompilation_when_shapes_are_reused():
    config = So3kratesConfig.preset("small")
    traces = []

    def counted(variables, graph):
        traces.append(1)  # runs only while tracing
        return energy_and_forces(make_energy_fn(config), variables, graph)

    step = jax.jit(counted)
    cap = Capacity(16, 64, 1)
    g0 = pack([MOLECULE], [neighbour_pairs(MOLECULE, 5.0)], cap, np.float32)
    variables = init_variables(config, g0)
    for seed in range(4):
        s = _perturbed(ETHANOL, seed=seed + 10)
        step(variables, pack([s], [neighbour_pairs(s, 5.0)], cap, np.float32))
    assert len(traces) == 1
    step(variables, pack([MOLECULE], [neighbour_pairs(MOLECULE, 5.0)], Capacity(24, 64, 1), np.float32))
    assert len(traces) == 2  # a new capacity is a new shape: exactly one more compilation


def test_config_presets_and_json_round_trip():
    default = So3kratesConfig.preset("default")
    assert (default.features, default.layers, default.heads, default.degrees) == (132, 3, 4, (1, 2, 3))
    assert (default.cutoff, default.radial_basis, default.n_ev) == (5.0, 32, 15)
    assert So3kratesConfig.preset("invariant").degrees == ()
    for cfg in (default, So3kratesConfig.preset("small", ev_init="neighbours")):
        assert So3kratesConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="divisible by heads"):
        So3kratesConfig(features=132, heads=5)
    with pytest.raises(ValueError, match="degree 0"):
        So3kratesConfig(degrees=(0, 1), features=132)
    with pytest.raises(ValueError, match="unknown So3kratesConfig fields"):
        So3kratesConfig.from_dict({"feature": 3})
    with pytest.raises(KeyError, match="unknown preset"):
        So3kratesConfig.preset("huge")


# --------------------------------------------------------------------------------------------------------
# The checks can fail: deliberately broken models


def test_broken_models_fail_the_invariance_checks():
    config = CONFIGS["default"]
    energy_fn, variables = _model(config)

    def cartesian_leak(v, graph):  # adds a raw coordinate to the energy
        return energy_fn(v, graph) + 0.05 * graph.positions[0, 0]

    def direction_leak(v, graph):  # adds a non-invariant function of pair directions
        r = graph.positions[graph.senders] - graph.positions[graph.receivers]
        return energy_fn(v, graph) + 0.05 * jnp.sum(jnp.where(graph.pair_mask, r[:, 2] ** 3, 0.0))

    def order_leak(v, graph):  # weights atoms by their index
        return energy_fn(v, graph) + 0.01 * jnp.sum(jnp.arange(graph.numbers.shape[0]) * graph.positions[:, 1])

    assert rotation_error(cartesian_leak, variables, MOLECULE, 5.0) > 1e-3
    assert translation_error(cartesian_leak, variables, MOLECULE, 5.0) > 1e-3
    assert rotation_error(direction_leak, variables, MOLECULE, 5.0) > 1e-3
    assert permutation_error(order_leak, variables, MOLECULE, 5.0) > 1e-3


def test_broken_cutoff_is_detected():
    """An energy with a hard (discontinuous) cutoff must fail the continuity check the model passes."""
    config = CONFIGS["default"]
    energy_fn, variables = _model(config)

    def hard_cutoff(v, graph):
        r = graph.positions[graph.senders] - graph.positions[graph.receivers]
        d = jnp.sqrt(jnp.where(graph.pair_mask, jnp.sum(r * r, -1), 1.0))
        return energy_fn(v, graph) + 0.01 * jnp.sum(jnp.where(graph.pair_mask & (d < 5.0), 1.0, 0.0))

    kink_model = _cutoff_crossing_kink(energy_fn, variables, 5.0)
    kink_hard = _cutoff_crossing_kink(hard_cutoff, variables, 5.0)
    assert kink_model[0] < 1e-9
    assert kink_hard[0] > 1e-3


def test_broken_contraction_would_break_equivariance():
    """Using one EV component (not the contraction) as the invariant breaks rotation invariance."""
    config = CONFIGS["small-neighbour-init"]
    energy_fn, variables = _model(config)
    model = So3krates(config)

    def component_leak(v, graph):
        _, state = model.apply(v, graph, mutable=["intermediates"])
        chi = state["intermediates"]["chi"][-1]
        return energy_fn(v, graph) + jnp.sum(jnp.where(graph.atom_mask, chi[:, 0], 0.0))

    assert rotation_error(energy_fn, variables, MOLECULE, config.cutoff) < 1e-9
    assert rotation_error(component_leak, variables, MOLECULE, config.cutoff) > 1e-4


def test_jit_with_cpu_compiler_options_gives_the_same_numbers():
    """The library's per-function XLA options change speed only, not results."""
    from so3krates_lab.model import jit_energy_and_forces

    config = So3kratesConfig.preset("small")
    graph = graph_from_system(MOLECULE, config.cutoff, dtype=np.float32)
    variables = init_variables(config, graph)
    energy_fn = make_energy_fn(config)
    e0, f0 = jit_energy_and_forces(energy_fn, options={})(variables, graph)
    e1, f1 = jit_energy_and_forces(energy_fn)(variables, graph)
    np.testing.assert_allclose(np.asarray(e1), np.asarray(e0), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(f1), np.asarray(f0), atol=1e-5 * float(np.abs(f0).max()) + 1e-7)


def test_per_atom_energies_sum_to_the_total(model):
    config, energy_fn, variables = model
    graph = pack([MOLECULE], [neighbour_pairs(MOLECULE, config.cutoff)], Capacity(16, 64, 2), np.float64)
    per_atom = fast_jit(lambda v, g: So3krates(config).apply(v, g, per_atom=True))(variables, graph)
    assert per_atom.shape == (16,) and np.all(np.asarray(per_atom)[9:] == 0.0)
    np.testing.assert_allclose(float(per_atom.sum()), float(fast_jit(energy_fn)(variables, graph)[0]), rtol=1e-12)
