"""Equal to the public reference implementation (thorben-frank/mlff's dense So3krates) to round-off.

The reference's own weights and outputs (../shared/reference_impl/mlff_so3krates/, README there) are loaded with
`so3krates_lab.interop.potential_from_mlff` and evaluated on the same four structures: float64 energies and
forces within 1e-9, float32 within float32 round-off. The per-head attention projections (`attention_projection=
"per_head"`, mlff's form) are checked without shared data too: they are the full projections with
block-diagonal weights, keep the physics, and the "mlff" preset has mlff's parameter count.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from physics import (
    evaluate, fast_jit, finite_difference_error, permutation_error, rotation_error, translation_error,
)
from so3krates_lab.data import builtin, load
from so3krates_lab.graph import graph_from_system, neighbour_pairs
from so3krates_lab.interop import mlff_parameter_shapes, potential_from_mlff
from so3krates_lab.model import Potential, So3krates, So3kratesConfig, load_checkpoint, make_energy_fn
from so3krates_lab.model.layers import block_diagonal
from so3krates_lab.model.potential import check_variables
from so3krates_lab.structures import System

MLFF_PARAMETERS = 319_213  # mlff's So3krates at its train_so3krates defaults, counted by mlff (README there)
SYSTEMS = ("ethanol", "aspirin", "buckyball_catcher", "water-192")
# float32: energies within 1e-4 eV (the brief; measured <= 1.1e-5 eV, 3 float32 ulps of water-192's -51.6 eV).
# Forces: measured max |ours - mlff| is 9.3e-8 eV/A (buckyball catcher; forces up to 0.06 eV/A), the size of
# mlff's own float32-vs-float64 deviation (up to 1.2e-7 eV/A, water-192), and ours is as close to mlff's float64
# forces (<= 1.0e-7 eV/A) as mlff's float32 is. Two correct float32 evaluations may differ by about twice that
# round-off; 5e-7 eV/A leaves margin for other CPUs, compilers and summation orders, while a modelling
# difference (a weight misplaced, a bias dropped, a sqrt(d) factor) moves the forces by >= 1e-3 eV/A.
F32_FORCE_TOL = 5e-7


def _shared_dir() -> Path:
    """$SO3KRATES_SHARED_DIR, else ../shared beside the project root."""
    env = os.environ.get("SO3KRATES_SHARED_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared"


def _data_dir() -> Path:
    env = os.environ.get("SO3KRATES_DATA_DIR")  # as tests/conftest.py
    return Path(env) if env else _shared_dir() / "data"


REFERENCE_DIR = _shared_dir() / "reference_impl" / "mlff_so3krates"


def _reference(precision: str) -> dict:
    path = REFERENCE_DIR / f"mlff_weights_and_outputs_float{precision}.npz"
    if not path.is_file():
        pytest.skip(f"mlff reference outputs {path} not found (set SO3KRATES_SHARED_DIR to the shared folder)")
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def _params(reference: dict) -> dict:
    return {k[2:]: v for k, v in reference.items() if k.startswith("p:")}


@pytest.fixture(scope="module")
def systems() -> dict:
    return reference_systems()


def reference_systems() -> dict:
    """The four structures exactly as the reference evaluated them (its README); skips when absent."""
    data = _data_dir()
    files = {"rmd17": data / "rmd17" / "rmd17_ethanol_train_01.npz",
             "bucky": data / "geometries" / "buckyball_catcher.xyz",
             "water": data / "periodic" / "water_192atoms_400frames.npz"}
    for path in files.values():
        if not path.is_file():
            pytest.skip(f"reference structure {path} not found (set SO3KRATES_SHARED_DIR or SO3KRATES_DATA_DIR)")
    out = {}
    for mol in ("ethanol", "aspirin"):
        s = load(data / "rmd17" / f"rmd17_{mol}_train_01.npz")[0]
        out[mol] = System(numbers=s.numbers, positions=s.positions)  # free molecule
    b = load(files["bucky"])[0]
    out["buckyball_catcher"] = System(numbers=b.numbers, positions=b.positions - b.positions.mean(0))
    w = load(files["water"], energy_unit="eV")[0]
    assert w.periodic and np.allclose(w.cell, 12.44466114 * np.eye(3))
    out["water-192"] = System(numbers=w.numbers, positions=w.positions, cell=w.cell, pbc=w.pbc)
    return out


@pytest.fixture(scope="module")
def reference64():
    return _reference("64")


@pytest.fixture(scope="module")
def reference32():
    return _reference("32")


def _run(pot: Potential, system: System, dtype):
    return evaluate(make_energy_fn(pot.config), pot.variables, system, pot.cutoff, dtype=dtype)


# ------------------------------------------------------------------------------------ against mlff's outputs


def test_pair_counts_match(systems, reference64):
    for name in SYSTEMS:
        stored = neighbour_pairs(systems[name], 5.0)  # unordered pairs; mlff counts directed ones
        assert 2 * len(stored) == int(reference64[f"{name}:n_pairs"]), name


def test_float64_energies_and_forces_equal_mlffs(systems, reference64):
    pot = potential_from_mlff(_params(reference64), dtype="float64")
    assert pot.n_parameters == MLFF_PARAMETERS and pot.config == So3kratesConfig.preset("mlff", dtype="float64")
    for name in SYSTEMS:
        e, f = _run(pot, systems[name], np.float64)
        e_ref, f_ref = float(reference64[f"{name}:E64"]), reference64[f"{name}:F64"]
        assert abs(e - e_ref) < 1e-9, (name, e, e_ref)  # measured <= 1.2e-11 eV (water-192)
        assert np.abs(f - f_ref).max() < 1e-9, name  # measured <= 3.6e-12 eV/A (aspirin)
        assert np.abs(f_ref).max() > 1e-2  # forces large enough for the comparison to mean something


def test_float32_energies_and_forces_equal_mlffs(systems, reference32, reference64):
    pot = potential_from_mlff(_params(reference32))  # float32, the default
    assert pot.dtype == "float32"
    with jax.default_matmul_precision("highest"):  # no reduced-precision (TF32) products on a GPU
        for name in SYSTEMS:
            e, f = _run(pot, systems[name], np.float32)
            assert abs(e - float(reference32[f"{name}:E32"])) < 1e-4, name  # measured <= 1.1e-5 eV
            assert np.abs(f - reference32[f"{name}:F32"]).max() < F32_FORCE_TOL, name  # measured <= 9.3e-8 eV/A
            # and as close to the float64 truth as mlff's own float32 result is
            assert np.abs(f - reference64[f"{name}:F64"]).max() < F32_FORCE_TOL, name


def test_mlff_weights_in_the_full_projection_form(systems, reference64):
    """The same weights as block-diagonal full F x F maps (this project's default form) give the same numbers."""
    pot = potential_from_mlff(_params(reference64), dtype="float64", attention_projection="full")
    assert pot.config.attention_projection == "full" and "qkv" in pot.variables["params"]["block_0"]["attention"]
    for name in ("ethanol", "water-192"):
        e, f = _run(pot, systems[name], np.float64)
        assert abs(e - float(reference64[f"{name}:E64"])) < 1e-9
        assert np.abs(f - reference64[f"{name}:F64"]).max() < 1e-9


# ---------------------------------------------------------------------------------------- the converter


def _random_mlff_params(seed: int = 0, **config) -> dict:
    rng = np.random.default_rng(seed)
    return {path: (0.1 * rng.normal(size=shape)).astype(np.float32)
            for path, shape in mlff_parameter_shapes(**config).items()}


def _nested(flat: dict) -> dict:
    tree: dict = {}
    for path, value in flat.items():
        *parents, leaf = path.split("/")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def _leaves(pot):
    return {"/".join(str(k.key) for k in path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(pot.variables)[0]}


def test_mlff_parameter_tree_has_mlffs_parameter_count():
    shapes = mlff_parameter_shapes()
    assert sum(int(np.prod(s)) for s in shapes.values()) == MLFF_PARAMETERS
    assert shapes["params/layers_0/FeatureBlock_0/attention_fn/VmapConvAttentionCoefficients_0/Dense_0/kernel"] \
        == (4, 33, 33)


def test_nested_and_flat_forms_give_the_same_potential():
    flat = _random_mlff_params(features=24, layers=2, heads=2, degrees=(1, 2), radial_basis=8)
    cfg = dict(features=24, layers=2, heads=2, degrees=(1, 2), radial_basis=8)
    a = _leaves(potential_from_mlff(flat, **cfg))
    nested = _nested(flat)
    for form in (nested, nested["params"], {k[len("params/"):]: v for k, v in flat.items()}):
        b = _leaves(potential_from_mlff(form, **cfg))
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_every_mlff_weight_lands_once_and_unchanged():
    """The mapping is a bijection of values: per head and per filter, each mlff array appears exactly."""
    cfg = dict(features=24, layers=2, heads=2, degrees=(1, 2), radial_basis=8)
    flat = _random_mlff_params(seed=3, **cfg)
    ours = potential_from_mlff(flat, **cfg).variables["params"]
    n_ours = sum(np.size(x) for x in jax.tree.leaves(ours))
    assert n_ours == sum(np.size(v) for v in flat.values())
    att = ours["block_1"]["attention"]
    fb = "params/layers_1/FeatureBlock_0"
    np.testing.assert_array_equal(
        att["q_heads"], flat[f"{fb}/attention_fn/VmapConvAttentionCoefficients_0/Dense_0/kernel"])
    np.testing.assert_array_equal(
        att["v_heads"], flat[f"{fb}/attention_fn/VmapAttentionAggregation_0/Dense_0/kernel"])
    np.testing.assert_array_equal(ours["radial_filters"]["w_out"][3],
                                  flat["params/layers_1/GeometricBlock_0/filter_fn/VmapMLP_0/layers_1/kernel"][0])
    np.testing.assert_array_equal(att["sph_filters"]["b_hidden"][1],
                                  flat["params/layers_1/GeometricBlock_0/filter_fn/VmapMLP_1/layers_0/bias"][0])


def test_embedding_rows_beyond_mlffs_table_are_zero():
    flat = _random_mlff_params(features=24, layers=1, heads=2, degrees=(1,), radial_basis=8)
    pot = potential_from_mlff(flat, features=24, layers=1, heads=2, degrees=(1,), radial_basis=8,
                              attention_projection="full", max_atomic_number=118)
    table = np.asarray(pot.variables["params"]["embed"]["embedding"])
    assert table.shape == (119, 24) and not table[100:].any()
    np.testing.assert_array_equal(table[:100], flat["params/feature_embeddings_0/Embed_0/embedding"])
    assert pot.config == So3kratesConfig(features=24, layers=1, heads=2, degrees=(1,), radial_basis=8)


def test_clear_errors_name_the_parameter():
    good = _random_mlff_params()
    fb = "params/layers_1/FeatureBlock_0/attention_fn/VmapConvAttentionCoefficients_0/Dense_1/kernel"

    missing = {k: v for k, v in good.items() if k != fb}
    with pytest.raises(ValueError, match="missing parameter.*layers_1/FeatureBlock_0.*Dense_1/kernel"):
        potential_from_mlff(missing)
    extra = {**good, "params/layers_0/LayerNorm_0/scale": np.ones(132, np.float32)}
    with pytest.raises(ValueError, match="unexpected parameter.*LayerNorm_0/scale.*layer_normalization"):
        potential_from_mlff(extra)
    bad_shape = {**good, fb: good[fb][:, :32]}
    with pytest.raises(ValueError, match=r"Dense_1/kernel has shape \(4, 32, 33\).*\(4, 33, 33\)"):
        potential_from_mlff(bad_shape)
    with pytest.raises(ValueError, match="embedding has shape.*features=96"):
        potential_from_mlff(good, features=96)
    with pytest.raises(ValueError, match="missing parameter.*layers_3"):
        potential_from_mlff(good, layers=4)
    poisoned = {**good, fb: np.full_like(good[fb], np.nan)}
    with pytest.raises(ValueError, match=f"{fb} has {4 * 33 * 33} non-finite"):
        potential_from_mlff(poisoned)
    with pytest.raises(ValueError, match="ev_init"):
        potential_from_mlff(good, ev_init="neighbours")
    with pytest.raises(ValueError, match="max_atomic_number=118"):
        big = dict(good)
        big["params/feature_embeddings_0/Embed_0/embedding"] = np.zeros((119, 132), np.float32)
        potential_from_mlff(big)
    with pytest.raises(TypeError, match="mapping"):
        potential_from_mlff([1, 2, 3])


def test_constants_can_be_given():
    shifts = np.zeros(119)
    shifts[[1, 8]] = [-13.6, -2041.3]
    pot = potential_from_mlff(_random_mlff_params(), element_energy=shifts, energy_scale=0.5)
    np.testing.assert_array_equal(pot.element_energy, np.asarray(shifts, np.float32))
    assert pot.energy_scale == 0.5 and pot.metadata["source"].startswith("mlff")


# ------------------------------------------------------------------- the per-head option in this model


PER_HEAD = {
    "mlff": So3kratesConfig.preset("mlff", dtype="float64"),
    "small-invariant": So3kratesConfig.preset("small", dtype="float64", degrees=(), attention_projection="per_head"),
}
MOLECULE = builtin.ethanol().replace(
    positions=builtin.ethanol().positions + 0.15 * np.random.default_rng(1).normal(size=(9, 3)))


def _random_variables(config: So3kratesConfig, system: System = MOLECULE, seed: int = 0) -> dict:
    graph = graph_from_system(system, config.cutoff, dtype=np.float64)
    variables = fast_jit(So3krates(config).init)(jax.random.PRNGKey(seed), graph)
    leaves, tree = jax.tree.flatten(variables["params"])
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
    leaves = [leaf + 0.1 * jax.random.normal(k, leaf.shape, leaf.dtype) for leaf, k in zip(leaves, keys)]
    return {**variables, "params": jax.tree.unflatten(tree, leaves)}


def _as_full(variables: dict, config: So3kratesConfig) -> dict:
    """The per-head variables as full-projection variables with block-diagonal kernels."""
    params = jax.tree.map(lambda x: x, variables["params"])  # a copy of the dict structure
    names = ["q_heads", "q_degrees", "k_heads", "v_heads", "k_degrees"] if config.degrees else \
        ["q_heads", "k_heads", "v_heads"]
    for t in range(config.layers):
        att = dict(params[f"block_{t}"]["attention"])
        kernel = jnp.concatenate([block_diagonal(att.pop(n)) for n in names], axis=1)
        params[f"block_{t}"] = {**params[f"block_{t}"], "attention": {**att, "qkv": {"kernel": kernel}}}
    return {**variables, "params": params}


@pytest.mark.parametrize("name", list(PER_HEAD))
def test_per_head_equals_full_with_block_diagonal_weights(name):
    config = PER_HEAD[name]
    variables = _random_variables(config)
    full_config = config.replace(attention_projection="full")
    full = _as_full(variables, config)
    check_variables(full, full_config)  # the tree is exactly that of the full model
    full_fn = make_energy_fn(full_config)  # one function: compiled once for both full variable sets
    e0, f0 = evaluate(make_energy_fn(config), variables, MOLECULE, config.cutoff)
    e1, f1 = evaluate(full_fn, full, MOLECULE, config.cutoff)
    assert abs(e1 - e0) < 1e-12 and np.abs(f1 - f0).max() < 1e-12
    # ... and a full model is not per-head: off-diagonal blocks change the result
    leaked = jax.tree.map(lambda x: x, full)
    kernel = leaked["params"]["block_0"]["attention"]["qkv"]["kernel"]
    leaked["params"]["block_0"]["attention"]["qkv"]["kernel"] = kernel.at[0, -1].add(0.5)
    e2, _ = evaluate(full_fn, leaked, MOLECULE, config.cutoff)
    assert abs(e2 - e0) > 1e-6


def test_block_diagonal():
    blocks = jnp.arange(2 * 2 * 3, dtype=jnp.float64).reshape(2, 2, 3) + 1
    m = np.asarray(block_diagonal(blocks))
    assert m.shape == (4, 6)
    np.testing.assert_array_equal(m[:2, :3], blocks[0])
    np.testing.assert_array_equal(m[2:, 3:], blocks[1])
    assert not m[:2, 3:].any() and not m[2:, :3].any()


@pytest.mark.parametrize("name", list(PER_HEAD))
def test_per_head_physics(name):
    """Rotation, translation and permutation invariance and F = -dE/dR, as tests/test_model_physics.py."""
    config = PER_HEAD[name]
    energy_fn, variables = make_energy_fn(config), _random_variables(config)
    assert rotation_error(energy_fn, variables, MOLECULE, config.cutoff, seed=0) < 1e-9
    assert translation_error(energy_fn, variables, MOLECULE, config.cutoff) < 1e-9
    assert permutation_error(energy_fn, variables, MOLECULE, config.cutoff, seed=0) < 1e-9
    assert finite_difference_error(energy_fn, variables, MOLECULE, config.cutoff) < 2e-6


# ------------------------------------------------------------------------ configuration and checkpoints


def test_parameter_counts():
    """mlff's count with the "mlff" preset; per-head alone keeps this project's 119-row embedding table."""
    graph = graph_from_system(MOLECULE, 5.0, dtype=np.float32)

    def count(config):
        shapes = jax.eval_shape(So3krates(config).init, jax.random.PRNGKey(0), graph)["params"]
        return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))

    assert count(So3kratesConfig.preset("mlff")) == MLFF_PARAMETERS
    assert count(So3kratesConfig.preset("default", attention_projection="per_head", max_atomic_number=99)) \
        == MLFF_PARAMETERS
    assert count(So3kratesConfig(attention_projection="per_head")) == MLFF_PARAMETERS + 19 * 132
    assert count(So3kratesConfig()) == 509_029


def test_config_field_round_trips_and_stays_out_of_old_configs():
    mlff = So3kratesConfig.preset("mlff")
    assert (mlff.attention_projection, mlff.max_atomic_number, mlff.n_embeddings) == ("per_head", 99, 100)
    assert mlff.replace(attention_projection="full", max_atomic_number=118) == So3kratesConfig()
    for cfg in (mlff, So3kratesConfig.preset("small", attention_projection="per_head"), So3kratesConfig()):
        assert So3kratesConfig.from_json(cfg.to_json()) == cfg
        assert So3kratesConfig.from_dict(json.loads(cfg.to_json())) == cfg
    # a configuration that does not use the new fields is written exactly as before them
    old = {"cutoff": 5.0, "degrees": [1, 2, 3], "dtype": "float32", "ev_init": "zeros", "features": 132,
           "heads": 4, "layer_norm": False, "layers": 3, "radial_basis": 32, "residual_mlp": False}
    assert So3kratesConfig().to_dict() == old and So3kratesConfig.from_dict(old) == So3kratesConfig()
    assert mlff.to_dict()["attention_projection"] == "per_head" and mlff.to_dict()["max_atomic_number"] == 99
    with pytest.raises(ValueError, match="attention_projection"):
        So3kratesConfig(attention_projection="diagonal")
    with pytest.raises(ValueError, match="max_atomic_number"):
        So3kratesConfig(max_atomic_number=119)
    with pytest.raises(ValueError, match="max_atomic_number"):
        So3kratesConfig(max_atomic_number=True)
    assert So3kratesConfig(max_atomic_number=np.int64(99)).max_atomic_number == 99


def test_shipped_checkpoints_keep_their_configuration():
    from so3krates_lab.data import shipped_dir

    paths = sorted((shipped_dir() / "models").glob("*.npz"))
    assert paths
    for path in paths:
        ckpt = load_checkpoint(path)
        with np.load(path) as f:
            header = json.loads(str(f["metadata"][()]))
        if path.stem == "so3lr":  # the converted SO3LR weights: its own configuration (tests/test_so3lr.py)
            assert ckpt.config == So3kratesConfig.preset("so3lr")
        else:  # trained here before the later fields existed: they stay at their defaults
            assert ckpt.config.attention_projection == "full" and ckpt.config.n_embeddings == 119
        assert ckpt.config.to_dict() == header["model_config"]  # re-saving writes the same configuration
        Potential.from_checkpoint(ckpt)  # the tree matches the model of the configuration


def test_per_head_checkpoint_round_trip(tmp_path):
    config = So3kratesConfig.preset("mlff", dtype="float64")
    pot = Potential.create(config, _random_variables(config))
    path = pot.save(tmp_path / "per_head")
    with np.load(path) as f:
        header = json.loads(str(f["metadata"][()]))
    assert header["model_config"]["attention_projection"] == "per_head"
    assert header["model_config"]["max_atomic_number"] == 99
    back = Potential.load(path)
    assert back.config == config and back.n_parameters == MLFF_PARAMETERS
    e0, f0 = _run(pot, MOLECULE, np.float64)
    e1, f1 = _run(back, MOLECULE, np.float64)
    assert e0 == e1 and np.array_equal(f0, f1)
    as_full = dataclasses.replace(load_checkpoint(path), config=config.replace(attention_projection="full"))
    with pytest.raises(ValueError, match="q_heads"):  # per-head weights read as a full model are refused
        Potential.from_checkpoint(as_full)
