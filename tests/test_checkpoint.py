"""Checkpoints: exact round trip, atomic writes, clear errors, no pickle."""

import json
import re

import jax
import numpy as np
import optax
import pytest

from so3krates_lab.data import builtin
from so3krates_lab.graph import graph_from_system
from so3krates_lab.model import Potential, So3krates, So3kratesConfig, jit_energy_and_forces, make_energy_fn
from so3krates_lab.model import checkpoint as ckpt_mod
from so3krates_lab.model.checkpoint import Checkpoint, load_checkpoint, restore_opt_state, save_checkpoint

from physics import FAST_COMPILE, fast_jit

METADATA = {
    "data": {"file": "ethanol.npz", "sha256": "ab" * 32, "splits": {"train": [0, 3, 5], "valid": [1, 2]}},
    "training": {"lr": 1e-3, "batch_size": 4, "loss_weights": [1.0, 100.0]},
    "metrics": {"valid_force_mae": np.float32(0.125), "n_train": np.int64(3), "history": np.arange(3)},
}


@pytest.fixture(scope="module")
def model():
    config = So3kratesConfig.preset("small")
    graph = graph_from_system(builtin.ethanol(), config.cutoff)
    variables = fast_jit(So3krates(config).init)(jax.random.PRNGKey(0), graph)  # = init_variables, cheaper compile
    return config, graph, variables


def _leaves_with_paths(tree):
    return {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def _assert_bit_identical(a, b):
    la, lb = _leaves_with_paths(a), _leaves_with_paths(b)
    assert la.keys() == lb.keys()
    for k in la:
        assert la[k].dtype == lb[k].dtype and la[k].shape == lb[k].shape, k
        assert la[k].tobytes() == lb[k].tobytes(), k


def _rewrite_metadata(path, change):
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    header = json.loads(str(arrays["metadata"][()]))
    change(header)
    arrays["metadata"] = np.array(json.dumps(header))
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def test_round_trip(tmp_path, model):
    config, graph, variables = model
    tx = optax.adam(1e-3)
    # non-trivial moments and count, so the comparison means something (numpy: no per-leaf compiles)
    rng = np.random.default_rng(0)
    opt_state = jax.tree_util.tree_map(lambda x: (np.asarray(x) + rng.integers(1, 9, np.shape(x))).astype(x.dtype),
                                       tx.init(variables["params"]))

    path = save_checkpoint(tmp_path / "run" / "best", config, variables, step=123, opt_state=opt_state,
                           metadata=METADATA)
    assert path == tmp_path / "run" / "best.npz" and path.is_file()
    import stat

    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # group-readable, like every other file written (not 0600)

    ck = load_checkpoint(path)
    assert isinstance(ck, Checkpoint)
    assert ck.config == config and ck.step == 123 and ck.version == 1 and ck.created
    _assert_bit_identical(ck.variables, variables)
    assert isinstance(ck.variables["params"], dict)
    expected_meta = json.loads(json.dumps({**METADATA, "metrics": {
        "valid_force_mae": 0.125, "n_train": 3, "history": [0, 1, 2]}}))
    assert ck.metadata == expected_meta
    assert isinstance(ck.metadata["metrics"]["n_train"], int)

    restored = restore_opt_state(tx.init(variables["params"]), ck.opt_state_leaves)
    assert jax.tree_util.tree_structure(restored) == jax.tree_util.tree_structure(opt_state)
    _assert_bit_identical(restored, opt_state)

    pot = Potential.load(path)
    assert pot.config == config and isinstance(pot.variables["params"]["embed"]["embedding"], jax.Array)
    assert pot.metadata == expected_meta
    _assert_bit_identical(pot.variables, variables)
    e_ref, f_ref = jit_energy_and_forces(make_energy_fn(config), FAST_COMPILE)(variables, graph)
    e, f = fast_jit(lambda p, g: p.energy_and_forces(g))(pot, graph)
    np.testing.assert_array_equal(np.asarray(e), np.asarray(e_ref))
    np.testing.assert_array_equal(np.asarray(f), np.asarray(f_ref))
    # a Checkpoint object works as well as a path (not called: one compile is enough)
    from_ck = Potential.from_checkpoint(ck)
    assert from_ck.config == config and from_ck.metadata == expected_meta
    _assert_bit_identical(from_ck.variables, variables)


def test_file_is_pickle_free_and_documented_layout(tmp_path, model):
    config, _, variables = model
    opt_state = optax.adam(1e-3).init(variables["params"])
    path = save_checkpoint(tmp_path / "c.npz", config, variables, step=7, opt_state=opt_state)
    with np.load(path, allow_pickle=False) as f:
        contents = {k: f[k] for k in f.files}  # every key readable without pickle
    assert "variables/params/block_0/attention/qkv/kernel" in contents
    assert contents["variables/constants/element_energy"].shape == (119,)
    assert contents["variables/constants/energy_scale"].shape == ()
    n_opt = len(jax.tree_util.tree_leaves(opt_state))
    assert [k for k in sorted(contents) if k.startswith("opt_state/")] == [f"opt_state/{i:05d}" for i in range(n_opt)]
    header = json.loads(str(contents["metadata"][()]))
    assert header["format"] == "so3krates_lab.checkpoint" and header["version"] == 1
    assert header["units"] == {"energy": "eV", "length": "Angstrom", "forces": "eV/Angstrom"}
    assert header["model_config"] == config.to_dict() and header["step"] == 7 and header["metadata"] == {}
    assert load_checkpoint(path).opt_state_leaves is not None
    assert load_checkpoint(save_checkpoint(tmp_path / "d.npz", config, variables)).opt_state_leaves is None


def _perturbed(variables):
    return jax.tree_util.tree_map(lambda x: np.asarray(x) + 1, variables)


def test_atomic_when_replace_fails(tmp_path, model, monkeypatch):
    config, _, variables = model
    path = save_checkpoint(tmp_path / "ck.npz", config, variables, step=1)

    def boom(*args, **kwargs):
        raise OSError("simulated crash during rename")

    monkeypatch.setattr(ckpt_mod.os, "replace", boom)
    with pytest.raises(OSError, match="simulated crash"):
        save_checkpoint(path, config, _perturbed(variables), step=2)
    monkeypatch.undo()

    ck = load_checkpoint(path)
    assert ck.step == 1
    _assert_bit_identical(ck.variables, variables)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.npz"]


def test_atomic_when_write_fails_midway(tmp_path, model, monkeypatch):
    config, _, variables = model
    path = save_checkpoint(tmp_path / "ck.npz", config, variables, step=1)

    def partial_savez(file, *args, **kwargs):
        file.write(b"PK\x03\x04" + b"\0" * 1000)
        raise RuntimeError("simulated disk full")

    monkeypatch.setattr(ckpt_mod.np, "savez", partial_savez)
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(path, config, _perturbed(variables), step=2)
    monkeypatch.undo()

    ck = load_checkpoint(path)
    assert ck.step == 1
    _assert_bit_identical(ck.variables, variables)
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.npz"]


def test_load_errors(tmp_path, model):
    config, _, variables = model
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load_checkpoint(tmp_path / "nope.npz")

    other = tmp_path / "other.npz"
    np.savez(other, x=np.arange(3))
    with pytest.raises(ValueError, match=r"not a so3krates_lab\.checkpoint file: no 'metadata'.*'x'"):
        load_checkpoint(other)

    good = save_checkpoint(tmp_path / "good.npz", config, variables)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(truncated)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"hello, not a zip file" * 10)
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(garbage)

    wrong_format = save_checkpoint(tmp_path / "wf.npz", config, variables)
    _rewrite_metadata(wrong_format, lambda h: h.update(format="someone.else"))
    with pytest.raises(ValueError, match="format is 'someone.else'"):
        load_checkpoint(wrong_format)

    future = save_checkpoint(tmp_path / "future.npz", config, variables)
    _rewrite_metadata(future, lambda h: h.update(version=99))
    with pytest.raises(ValueError, match="version 99 is newer than the supported version 1"):
        load_checkpoint(future)


def test_non_json_metadata_rejected(tmp_path, model):
    config, _, variables = model
    with pytest.raises(TypeError, match=r"metadata\['data'\]\['tags'\] has type set"):
        save_checkpoint(tmp_path / "m.npz", config, variables, metadata={"data": {"tags": {"a", "b"}}})
    with pytest.raises(TypeError, match="must be a string"):
        save_checkpoint(tmp_path / "m.npz", config, variables, metadata={"splits": {0: [1, 2]}})
    assert list(tmp_path.iterdir()) == []


def test_restore_opt_state_checks(model):
    _, _, variables = model
    tx = optax.adam(1e-3)
    template = tx.init(variables["params"])
    leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves(template)]
    with pytest.raises(ValueError, match=f"{len(leaves) - 1} saved leaves but the template has {len(leaves)}"):
        restore_opt_state(template, leaves[:-1])
    i = next(i for i, x in enumerate(leaves) if x.ndim == 2)
    bad = list(leaves)
    bad[i] = np.zeros(bad[i].shape[::-1] + (1,), bad[i].dtype)
    with pytest.raises(ValueError, match=rf"leaf {i}: saved shape \(\d+, \d+, 1\) != template shape"):
        restore_opt_state(template, bad)
    with pytest.raises(ValueError, match="no optimiser state"):
        restore_opt_state(template, None)


# ------------------------------------------------------------ clear errors for files that are not checkpoints


def _other_files(tmp_path):
    import pickle

    (tmp_path / "json.npz").write_text(json.dumps({"model_config": {}, "variables": [1, 2]}))
    (tmp_path / "pickle.npz").write_bytes(pickle.dumps({"params": np.arange(3)}))
    (tmp_path / "text.npz").write_text("energy forces\n1.0 2.0\n")
    np.save(tmp_path / "lone.npy", np.arange(3))
    (tmp_path / "lone.npy").rename(tmp_path / "lone.npz")
    return {"json.npz": r"starts with '\{', like a JSON file", "pickle.npz": "like a Python pickle; so3krates_lab "
            "never unpickles files", "text.npz": "starts with 'energy forces.*', like a text file",
            "lone.npz": r"single \.npy array"}


def test_load_names_what_a_non_npz_file_is(tmp_path):
    for name, what in _other_files(tmp_path).items():
        with pytest.raises(ValueError) as err:
            load_checkpoint(tmp_path / name)
        message = str(err.value)
        assert "allow_pickle" not in message and "pickled (object) data" not in message, message
        assert message.startswith(str(tmp_path / name)), message
        assert re.search(rf"is not a readable checkpoint: not an \.npz archive \(it .*{what}", message), message


# ------------------------------------------------------------ Potential.load checks the weights against the config


def _numpy_variables(variables):
    return jax.tree_util.tree_map(lambda x: np.array(x), variables)


def _a_kernel(variables):
    """('/'-joined path, keys) of the first 2-D parameter."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(variables["params"]):
        if np.ndim(leaf) == 2:
            keys = ["params"] + [k.key for k in path]
            return "/".join(keys), keys
    raise AssertionError("no 2-D parameter")


def _set(tree, keys, value):
    node = tree
    for k in keys[:-1]:
        node = node[k]
    if value is None:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value


def test_potential_load_checks_tree_shapes_and_finiteness(tmp_path, model):
    config, _, variables = model
    good = save_checkpoint(tmp_path / "good.npz", config, variables)
    assert Potential.load(good).n_parameters > 0
    name, keys = _a_kernel(variables)

    def write(fname, change):
        v = _numpy_variables(variables)
        change(v)
        return save_checkpoint(tmp_path / fname, config, v)

    def leaf(v):
        node = v
        for k in keys:
            node = node[k]
        return node

    shape = leaf(_numpy_variables(variables)).shape
    wrong = write("shape.npz", lambda v: _set(v, keys, np.zeros((shape[0] + 1, shape[1]), np.float32)))
    with pytest.raises(ValueError, match=rf"shape\.npz: parameter {re.escape(name)} has shape "
                                         rf"\({shape[0] + 1}, {shape[1]}\), .*expects \({shape[0]}, {shape[1]}\)"):
        Potential.load(wrong)

    missing = write("missing.npz", lambda v: _set(v, keys, None))
    with pytest.raises(ValueError, match=rf"missing\.npz: .*missing parameter\(s\) \['{re.escape(name)}'\]"):
        Potential.load(missing)

    extra = write("extra.npz", lambda v: v["params"].update(stray=np.zeros(3, np.float32)))
    with pytest.raises(ValueError, match=r"extra\.npz: .*unexpected parameter\(s\) \['params/stray'\]"):
        Potential.load(extra)

    def poison(v):
        x = leaf(v).copy()
        x[0, 0] = np.nan
        x[1, 0] = np.inf
        _set(v, keys, x)

    nan = write("nan.npz", poison)
    assert np.isnan(leaf(load_checkpoint(nan).variables)).any()  # load_checkpoint stays a faithful reader
    with pytest.raises(ValueError, match=rf"nan\.npz: parameter {re.escape(name)} has 2 non-finite value"):
        Potential.load(nan)
    with pytest.raises(ValueError, match=rf"^checkpoint: parameter {re.escape(name)} has 2 non-finite"):
        Potential.from_checkpoint(load_checkpoint(nan))
    with pytest.raises(ValueError, match=rf"^run7: parameter {re.escape(name)}"):
        Potential.from_checkpoint(load_checkpoint(nan), where="run7")
