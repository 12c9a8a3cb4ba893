"""The potential protocol and the model's `Potential`: shipped checkpoints load unchanged and give the low-level
numbers, save/load round trip, dtype switch, host evaluation (one structure, a list, periodic stress), compiled
code shared between potentials, `FitResult.potential`, pretrained models and shipped data, the protocol check,
the ASE calculator and the error report on analytic and model potentials."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.fd import calculate_numerical_forces

import so3krates_lab
from physics import fast_energy_and_forces, fast_energy_forces_stress, fast_jit, random_positions
from so3krates_lab import BasePotential, MorsePotential, Potential, PotentialProtocol, Prediction, pretrained
from so3krates_lab.data import Split, builtin, load_shipped, shipped_dir, shipped_models, shipped_path
from so3krates_lab.graph import graph_from_system, neighbour_pairs, pack
from so3krates_lab.interop import PotentialCalculator
from so3krates_lab.model import So3krates, So3kratesConfig, load_checkpoint, make_energy_fn, with_constants
from so3krates_lab.potential_base import check_potential, compiled_evaluator, float_dtype
from so3krates_lab.structures import Dataset, System
from so3krates_lab.train import FitResult, TrainConfig, error_report, fit, predict

CONFIG = So3kratesConfig.preset("small", dtype="float64")
SHIPPED = {"ethanol_pbe": "ethanol_pbe_500K", "ac_ala3_nhme_xtb": "ac_ala3_nhme_gfn2xtb"}  # model -> its data
METHANOL = System(numbers=[6, 8, 1, 1, 1, 1], positions=[[0, 0, 0], [1.43, 0, 0], [1.75, 0.9, 0], [-0.4, 1.0, 0],
                                                          [-0.4, -0.5, 0.87], [-0.4, -0.5, -0.87]])


def _random_variables(config: So3kratesConfig, seed: int = 0) -> dict:
    graph = graph_from_system(builtin.ethanol(), config.cutoff, dtype=np.dtype(config.dtype))
    variables = fast_jit(So3krates(config).init)(jax.random.PRNGKey(seed), graph)  # = init_variables, cheaper
    shifts = np.zeros(119)
    shifts[[1, 6, 8]] = [-13.6, -1029.5, -2041.3]
    return with_constants(variables, element_energy=shifts, energy_scale=0.7)


@pytest.fixture(scope="module")
def variables():
    return _random_variables(CONFIG)


@pytest.fixture(scope="module")
def potential(variables):
    return Potential.create(CONFIG, variables, metadata={"note": "random test model", "split": [1, 2, 3]})


def _leaves(tree) -> dict:
    return {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def _assert_bit_identical(a, b):
    la, lb = _leaves(a), _leaves(b)
    assert la.keys() == lb.keys() and la
    for k in la:
        assert la[k].dtype == lb[k].dtype and la[k].shape == lb[k].shape, k
        assert la[k].tobytes() == lb[k].tobytes(), k


def _perturbed(system: System, scale: float = 0.05, seed: int = 0) -> System:
    rng = np.random.default_rng(seed)
    return system.replace(positions=system.positions + scale * rng.normal(size=system.positions.shape))


# ----------------------------------------------------------------------------------------- shipped models


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_checkpoint_loads_unchanged_and_matches_the_low_level_path(name):
    path = shipped_path(f"models/{name}.npz")
    ck = load_checkpoint(path)
    pot = Potential.load(path)
    assert pot.config == ck.config and pot.dtype == ck.config.dtype == "float32" and pot.cutoff == ck.config.cutoff
    _assert_bit_identical(pot.variables, ck.variables)  # nothing cast, nothing dropped
    assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(pot.variables))
    assert pot.metadata == ck.metadata and "split" in pot.metadata

    data = load_shipped(SHIPPED[name])
    _, _, test = Split.from_dict(pot.metadata["split"]).apply(data)
    frames = [test[k] for k in range(6)]
    graph = pack(frames, [neighbour_pairs(s, pot.cutoff) for s in frames], None, np.float32)
    e_low, f_low = fast_energy_and_forces(make_energy_fn(ck.config), ck.variables, graph)
    e_pot, f_pot = fast_jit(lambda p, g: p.energy_and_forces(g))(pot, graph)  # same program: same bits
    np.testing.assert_array_equal(np.asarray(e_pot), np.asarray(e_low))
    np.testing.assert_array_equal(np.asarray(f_pot), np.asarray(f_low))
    # the trained model, not just any model: its errors on these test frames are of the recorded size
    shipped = json.loads(path.with_suffix(".provenance.json").read_text())["test_errors"]
    real = np.asarray(graph.atom_mask)
    force_mae = 1e3 * np.mean(np.abs(np.asarray(f_pot, np.float64)[real] - np.concatenate([s.forces for s in frames])))
    energy_mae = 1e3 * np.mean(np.abs(np.asarray(e_pot, np.float64)[:6] - np.array([s.energy for s in frames])))
    assert force_mae < 2.0 * shipped["force_mae_meV_A"], force_mae
    assert energy_mae < 4.0 * shipped["energy_mae_meV"], energy_mae


def test_pretrained_load_and_available():
    assert pretrained.available() == ["ac_ala3_nhme_xtb", "ac_ala3_nhme_xtb_hop", "ethanol_pbe", "so3lr"] == shipped_models()
    pot = pretrained.load("ethanol_pbe")
    assert isinstance(pot, Potential) and pot.dtype == "float32"
    _assert_bit_identical(pot.variables, load_checkpoint(shipped_path("models/ethanol_pbe.npz")).variables)
    wide = pretrained.load("ethanol_pbe", dtype="float64")
    assert wide.dtype == "float64" and wide.config == pot.config.replace(dtype="float64")
    assert {x.dtype for x in jax.tree.leaves(wide.variables) if jnp.issubdtype(x.dtype, jnp.floating)} == {
        jnp.dtype("float64")}
    with pytest.raises(ValueError, match=r"no shipped model 'ethanol'; available: \['ac_ala3_nhme_xtb', "
                                         r"'ac_ala3_nhme_xtb_hop', 'ethanol_pbe', 'so3lr'\]"):
        pretrained.load("ethanol")


def test_shipped_data_is_package_data_with_clear_errors():
    root = shipped_dir()
    assert root == Path(so3krates_lab.__file__).parent / "shipped"
    assert shipped_path("ethanol_pbe_500K.npz") == root / "ethanol_pbe_500K.npz"
    assert shipped_path("models/ethanol_pbe.npz").is_file()
    assert shipped_path("minima/ac_ala3_nhme_hop.npz").is_file()
    with pytest.raises(FileNotFoundError, match=r"no shipped file 'ethanol\.npz'; shipped: \[.*"
                                                r"'ethanol_pbe_500K\.npz'.*'models/ethanol_pbe\.npz'"):
        shipped_path("ethanol.npz")
    ds = load_shipped("ethanol_pbe_500K")
    assert isinstance(ds, Dataset) and len(ds) == 500 and ds[0].n_atoms == 9
    assert load_shipped("ethanol_pbe_500K.npz").sha256 == ds.sha256
    np.testing.assert_array_equal(load_shipped("ethanol_pbe_500K.npz").energies, ds.energies)
    with pytest.raises(FileNotFoundError, match="no shipped file 'ethanol_pbe.npz'"):
        load_shipped("ethanol_pbe")  # a model's name is not a data set


# -------------------------------------------------------------------------------------------- Potential


def test_save_load_round_trip(tmp_path, potential):
    path = potential.save(tmp_path / "run" / "model", step=17)
    assert path == tmp_path / "run" / "model.npz"
    again = Potential.load(path)
    assert again.config == potential.config and again.metadata == potential.metadata
    _assert_bit_identical(again.variables, potential.variables)
    assert load_checkpoint(path).step == 17 and load_checkpoint(path).opt_state_leaves is None
    # metadata given to save replaces the potential's own; dtype on load overrides the saved one
    other = Potential.load(potential.save(tmp_path / "b.npz", metadata={"x": 1}), dtype="float32")
    assert other.metadata == {"x": 1} and other.dtype == "float32" and other.config.dtype == "float32"
    assert potential.metadata == {"note": "random test model", "split": [1, 2, 3]}  # untouched
    # the metadata is a copy: editing it changes nothing
    potential.metadata["note"] = "changed"
    assert potential.metadata["note"] == "random test model"
    with pytest.raises(TypeError, match="config must be a So3kratesConfig"):
        Potential.create(CONFIG.to_dict(), potential.variables)


def test_with_dtype(potential):
    narrow = potential.with_dtype("float32")
    assert narrow.dtype == "float32" and narrow.config == CONFIG.replace(dtype="float32")
    assert narrow.metadata == potential.metadata and float_dtype(narrow) is np.float32
    for a, b in zip(jax.tree.leaves(narrow.variables), jax.tree.leaves(potential.variables)):
        assert a.dtype == (jnp.float32 if jnp.issubdtype(b.dtype, jnp.floating) else b.dtype)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b).astype(a.dtype))
    wide = narrow.with_dtype(np.float64)
    assert wide.config == CONFIG and float_dtype(wide) is np.float64
    for a, b in zip(jax.tree.leaves(wide.variables), jax.tree.leaves(narrow.variables)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b).astype(a.dtype))
    mol = _perturbed(builtin.ethanol())
    e64, e32 = potential.evaluate(mol), narrow.evaluate(mol)
    assert e32.energies[0] == pytest.approx(e64.energies[0], rel=1e-6)
    assert e32.energies[0] != e64.energies[0]  # it did compute in float32
    np.testing.assert_allclose(e32.forces[0], e64.forces[0], atol=2e-3)
    with pytest.raises(ValueError, match="dtype must be one of"):
        potential.with_dtype("float16")
    x64 = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(RuntimeError, match="jax_enable_x64"):
            narrow.with_dtype("float64")
    finally:
        jax.config.update("jax_enable_x64", x64)


def test_evaluate_one_system_a_list_and_a_periodic_system(potential, variables):
    energy_fn = make_energy_fn(CONFIG)
    mol = _perturbed(builtin.ethanol())
    systems = [mol, METHANOL, _perturbed(builtin.ethanol(), seed=3)]
    # the low-level reference: all three in one packed graph, one compiled program
    graph = pack(systems, [neighbour_pairs(s, CONFIG.cutoff) for s in systems], None, np.float64)
    e_ref, f_ref = (np.asarray(x) for x in fast_energy_and_forces(energy_fn, variables, graph))
    f_ref = np.split(f_ref[np.asarray(graph.atom_mask)], [9, 15])

    one = potential.evaluate(mol)
    assert isinstance(one, Prediction) and one.energies.shape == (1,) and one.stress is None and len(one.forces) == 1
    assert one.energies[0] == pytest.approx(e_ref[0], abs=1e-9)
    np.testing.assert_allclose(one.forces[0], f_ref[0], atol=1e-9)

    many = potential.evaluate(systems, batch_size=2)  # two batches, one of them partly filled
    assert len(many) == 3 and [f.shape for f in many.forces] == [(9, 3), (6, 3), (9, 3)]
    for k in range(3):
        assert many.energies[k] == pytest.approx(e_ref[k], abs=1e-9)
        np.testing.assert_allclose(many.forces[k], f_ref[k], atol=1e-9)

    water = builtin.water_box(2, seed=1)
    graph = graph_from_system(water, CONFIG.cutoff, dtype=np.float64)
    e_w, f_w, s_w = fast_energy_forces_stress(energy_fn, variables, graph)
    mixed = potential.evaluate([mol, water])  # stress=None: computed because one structure is periodic
    assert mixed.stress.shape == (2, 3, 3) and np.abs(mixed.stress[1]).max() > 1e-5
    np.testing.assert_array_equal(mixed.stress[0], np.zeros((3, 3)))  # free structures get zero stress
    np.testing.assert_allclose(mixed.stress[1], np.asarray(s_w)[0], atol=1e-10)
    assert mixed.energies[1] == pytest.approx(float(e_w[0]), abs=1e-9)
    np.testing.assert_allclose(mixed.forces[1], np.asarray(f_w)[:water.n_atoms], atol=1e-9)
    assert mixed.energies[0] == pytest.approx(e_ref[0], abs=1e-9)
    no_stress = potential.evaluate(water, stress=False)
    assert no_stress.stress is None and no_stress.energies[0] == pytest.approx(float(e_w[0]), abs=1e-9)
    with pytest.raises(ValueError, match="at least one System"):
        potential.evaluate([])


def test_potentials_of_one_configuration_share_compiled_code(potential):
    """A Potential is a pytree with its configuration static: a second set of variables (another checkpoint, a
    refit) runs through the same compiled function; another configuration compiles once more."""
    assert len(jax.tree.leaves(potential)) == len(jax.tree.leaves(potential.variables))
    mol = _perturbed(builtin.ethanol(), seed=5)
    run = compiled_evaluator("forces")
    first = potential.evaluate(mol)
    size = run._cache_size()
    other = Potential.create(CONFIG, _random_variables(CONFIG, seed=1), metadata={"another": "model"})
    second = other.evaluate(mol)
    assert run._cache_size() == size
    assert abs(second.energies[0] - first.energies[0]) > 1e-3  # it did use the other variables
    shifted = potential.with_constants(element_energy=potential.element_energy + 0.25)
    assert shifted.evaluate(mol).energies[0] == pytest.approx(first.energies[0] + 9 * 0.25, abs=1e-9)
    np.testing.assert_allclose(shifted.evaluate(mol).forces[0], first.forces[0], atol=1e-12)
    assert run._cache_size() == size
    # the check can fail: a different configuration (a static field) compiles again
    Potential.create(CONFIG.replace(cutoff=4.9), potential.variables).evaluate(mol)
    assert run._cache_size() == size + 1


def test_model_potential_helpers(potential, variables):
    mol = _perturbed(builtin.ethanol())
    graph = graph_from_system(mol, CONFIG.cutoff, dtype=np.float64)
    per_atom = fast_jit(lambda p, g: p.atomic_energies(g))(potential, graph)
    total = fast_jit(lambda p, g: p.energy(g))(potential, graph)
    assert float(jnp.sum(per_atom)) == pytest.approx(float(total[0]), abs=1e-9)
    assert np.all(np.asarray(per_atom)[~np.asarray(graph.atom_mask)] == 0)
    assert potential.element_energy.shape == (119,) and potential.element_energy[8] == -2041.3
    assert potential.energy_scale == pytest.approx(0.7)
    assert potential.n_parameters == sum(np.size(x) for x in jax.tree.leaves(variables["params"]))
    assert f"{potential.n_parameters:,} parameters" in repr(potential)
    assert isinstance(potential, BasePotential) and isinstance(MorsePotential(), BasePotential)
    assert isinstance(potential, PotentialProtocol) and isinstance(MorsePotential(), PotentialProtocol)
    assert not isinstance(object(), PotentialProtocol)


def test_potential_init_gives_a_fresh_model_of_the_config(variables):
    """Potential.init equals init_variables on the example's graph (same seed -> same parameters), sets the
    constants when asked, and a different seed gives different parameters."""
    config = So3kratesConfig.preset("small", layers=1)
    fresh = Potential.init(config, builtin.ethanol(), seed=3)
    graph = graph_from_system(builtin.ethanol(), config.cutoff)
    expected = jax.jit(So3krates(config).init)(jax.random.PRNGKey(3), graph)
    _assert_bit_identical(fresh.variables["params"], expected["params"])
    assert fresh.energy_scale == 1.0 and not fresh.element_energy.any() and fresh.metadata == {"init_seed": 3}
    shifts = np.zeros(119)
    shifts[6] = -1029.5
    scaled = Potential.init(config, builtin.ethanol(), seed=3, element_energy=shifts, energy_scale=0.5)
    assert scaled.element_energy[6] == -1029.5 and scaled.energy_scale == 0.5
    other = Potential.init(config, builtin.ethanol(), seed=4)
    k = jax.tree.leaves(other.variables["params"])[0]
    assert not np.array_equal(np.asarray(k), np.asarray(jax.tree.leaves(fresh.variables["params"])[0]))
    e = fresh.evaluate(METHANOL)  # shaped on ethanol, evaluates any molecule
    assert np.isfinite(e.energies).all() and e.forces[0].shape == (6, 3)


def test_fit_result_potential(tmp_path):
    data = load_shipped("ethanol_pbe_500K")
    train, valid = data[np.arange(8)], data[np.arange(8, 12)]
    config = So3kratesConfig.preset("small", features=8, layers=1, radial_basis=8)
    tc = TrainConfig(max_steps=2, eval_every=2, batch_size=4, seed=0)
    result = fit(train, valid, config, tc, checkpoint=tmp_path / "run.npz", progress=False,
                 metadata={"data": "ethanol_pbe_500K[:12]"})
    assert isinstance(result, FitResult)
    pot = result.potential
    assert isinstance(pot, Potential) and pot.config == result.config == config
    _assert_bit_identical(pot.variables, result.variables)  # the numbers follow (test_evaluate_...)
    # the caller's metadata, the best step and the elements the model was trained on (check_system's list)
    assert pot.metadata == {"data": "ethanol_pbe_500K[:12]", "best_step": result.best_step, "elements": [1, 6, 8]}
    # the best checkpoint written during the run holds the same model
    _assert_bit_identical(Potential.load(tmp_path / "run_best.npz").variables, pot.variables)


# ------------------------------------------------------------------------------------ the protocol check


def test_check_potential_names_what_is_missing():
    with pytest.raises(TypeError, match="object is not a potential: it lacks cutoff, dtype, energy"):
        check_potential(object())

    class HalfPotential:
        cutoff = 5.0

        def energy(self, graph):
            return graph.positions.sum()

    with pytest.raises(TypeError, match=r"HalfPotential is not a potential: it lacks dtype \("):
        check_potential(HalfPotential())
    with pytest.raises(TypeError, match=r"MorsePotential.dtype must be one of \('float32', 'float64'\), got "
                                        r"'float16'"):
        check_potential(MorsePotential(dtype="float16"))
    check_potential(MorsePotential())  # a potential passes
    with pytest.raises(TypeError, match="is not a potential"):
        PotentialCalculator(object())
    with pytest.raises(TypeError, match="dict is not a potential"):
        predict({"params": {}}, Dataset.from_systems([builtin.ethanol()]))  # the old (variables) call
    assert float_dtype(MorsePotential()) is np.float32 and float_dtype(MorsePotential(dtype="float64")) is np.float64


# ------------------------------------------------------------------------ analytic potential (Morse) by hand


MORSE = MorsePotential(depth=0.4, a=1.3, r0=1.6, cutoff=10.0, dtype="float64")


def _morse_by_hand(positions: np.ndarray, pot: MorsePotential = MORSE):
    """(energy eV, forces (N, 3) eV/A) of the Morse pair sum, written out with its analytic derivative."""
    energy, forces = 0.0, np.zeros_like(positions)
    for i in range(len(positions)):
        for j in range(i + 1, len(positions)):
            r = positions[i] - positions[j]
            d = np.linalg.norm(r)
            if d >= pot.cutoff:
                continue
            x = np.exp(-pot.a * (d - pot.r0))
            energy += pot.depth * ((1 - x) ** 2 - 1)
            de_dd = 2 * pot.depth * pot.a * (1 - x) * x
            forces[i] -= de_dd * r / d
            forces[j] += de_dd * r / d
    return energy, forces


def _cluster(seed: int, numbers=(6, 1, 1, 8, 1)) -> System:
    rng = np.random.default_rng(seed)
    return System(numbers=list(numbers), positions=random_positions(rng, len(numbers), (3.5, 3.5, 3.5), 1.1))


def test_calculator_works_for_an_analytic_potential_and_the_model(potential):
    cluster = _cluster(0)
    atoms = Atoms(numbers=cluster.numbers, positions=cluster.positions)
    atoms.calc = PotentialCalculator(MORSE)
    e_hand, f_hand = _morse_by_hand(cluster.positions)
    assert abs(e_hand) > 0.1 and np.abs(f_hand).max() > 0.1  # a real, non-trivial configuration
    assert atoms.get_potential_energy() == pytest.approx(e_hand, abs=1e-10)
    np.testing.assert_allclose(atoms.get_forces(), f_hand, atol=1e-10)
    np.testing.assert_allclose(calculate_numerical_forces(atoms, eps=1e-5), f_hand, atol=1e-6)
    assert isinstance(MORSE.calculator(), PotentialCalculator)
    assert MORSE.evaluate(cluster).energies[0] == pytest.approx(e_hand, abs=1e-10)

    mol = _perturbed(builtin.ethanol())
    atoms = Atoms(numbers=mol.numbers, positions=mol.positions)
    atoms.calc = potential.calculator()
    pred = potential.evaluate(mol)
    assert atoms.get_potential_energy() == pytest.approx(pred.energies[0], abs=1e-9)
    np.testing.assert_allclose(atoms.get_forces(), pred.forces[0], atol=1e-9)


def test_error_report_of_an_analytic_potential_matches_hand_computed_errors():
    rng = np.random.default_rng(4)
    systems, de, df = [], [], []
    for k in range(4):
        s = _cluster(10 + k)
        e, f = _morse_by_hand(s.positions)
        de.append(0.02 * rng.normal())
        df.append(0.03 * rng.normal(size=f.shape))
        systems.append(s.replace(energy=e - de[-1], forces=f - df[-1]))  # label = exact - offset
    data = Dataset.from_systems(systems, name="morse clusters")
    report = error_report(MORSE, data, batch_size=3)  # a full and a partly filled batch
    np.testing.assert_allclose(report.energy_error.values, 1e3 * np.array(de), atol=1e-8)
    f_err = 1e3 * np.concatenate([d.reshape(-1) for d in df])
    assert report.attrs["energy_mae_meV"] == pytest.approx(1e3 * np.mean(np.abs(de)))
    assert report.attrs["energy_rmse_meV"] == pytest.approx(1e3 * np.sqrt(np.mean(np.square(de))))
    assert report.attrs["force_mae_meV_A"] == pytest.approx(np.mean(np.abs(f_err)))
    assert report.attrs["force_rmse_meV_A"] == pytest.approx(np.sqrt(np.mean(f_err**2)))
    assert report.attrs["n_structures"] == 4 and report.attrs["name"] == "morse clusters"
    assert list(report.element.values) == ["H", "C", "O"]
    oxygen = np.concatenate([np.repeat(np.asarray(s.numbers) == 8, 3) for s in systems])
    assert float(report.element_force_mae.sel(element="O")) == pytest.approx(np.mean(np.abs(f_err[oxygen])))
    assert int(report.element_components.sel(element="H")) == 4 * 3 * 3
    np.testing.assert_allclose(report.force_pred.values,
                               np.concatenate([_morse_by_hand(s.positions)[1].reshape(-1) for s in systems]),
                               atol=1e-10)
    np.testing.assert_allclose(report.force_mae.values[2], np.mean(np.abs(1e3 * df[2])))
    energies, forces = predict(MORSE, data)
    np.testing.assert_allclose(energies, [_morse_by_hand(s.positions)[0] for s in systems], atol=1e-10)
    assert [f.shape for f in forces] == [(5, 3)] * 4
