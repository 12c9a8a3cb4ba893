"""The ASE calculator: same numbers as the model, numerical forces and stress agree, compiled code reused."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress

from physics import evaluate, fast_jit
from so3krates_lab.data import builtin
from so3krates_lab.graph import graph_from_system
from so3krates_lab.interop import PotentialCalculator, system_from_atoms
from so3krates_lab.model import Potential, So3krates, So3kratesConfig, load_checkpoint, make_energy_fn

CONFIG = So3kratesConfig.preset("small", dtype="float64")


@pytest.fixture(scope="module")
def variables():
    import jax

    graph = graph_from_system(builtin.ethanol(), CONFIG.cutoff, dtype=np.float64)
    return fast_jit(So3krates(CONFIG).init)(jax.random.PRNGKey(0), graph)


@pytest.fixture(scope="module")
def potential(variables):
    return Potential.create(CONFIG, variables)


def _atoms(system):
    return Atoms(numbers=system.numbers, positions=system.positions,
                 cell=system.cell if system.cell is not None else None, pbc=system.pbc)


def test_energy_and_forces_match_the_model_and_numerical_forces(variables, potential):
    mol = builtin.ethanol()
    atoms = _atoms(mol)
    atoms.calc = PotentialCalculator(potential)
    e_ref, f_ref = evaluate(make_energy_fn(CONFIG), variables, mol, CONFIG.cutoff)
    assert atoms.get_potential_energy() == pytest.approx(e_ref, abs=1e-10)
    np.testing.assert_allclose(atoms.get_forces(), f_ref, atol=1e-10)
    numerical = calculate_numerical_forces(atoms, eps=1e-5)
    np.testing.assert_allclose(atoms.get_forces(), numerical, atol=1e-6)


def test_periodic_stress_matches_numerical_stress(potential):
    water = builtin.water_box(2, seed=1)
    atoms = _atoms(water)
    atoms.calc = potential.calculator()
    stress = atoms.get_stress()
    numerical = calculate_numerical_stress(atoms, eps=1e-6, force_consistent=False)
    assert np.abs(stress).max() > 1e-5  # a real, non-zero stress is being compared
    np.testing.assert_allclose(stress, numerical, atol=1e-7)


def test_compiled_code_is_reused_across_similar_structures(potential):
    calc = PotentialCalculator(potential)
    rng = np.random.default_rng(0)
    for _ in range(5):  # an MD-like sequence of small displacements
        atoms = _atoms(builtin.ethanol())
        atoms.positions += 0.05 * rng.normal(size=atoms.positions.shape)
        atoms.calc = calc
        atoms.get_forces()
    assert calc.compiled_shapes == 1
    methanol = Atoms("COHHHH", positions=[[0, 0, 0], [1.43, 0, 0], [1.75, 0.9, 0], [-0.4, 1.0, 0],
                                          [-0.4, -0.5, 0.87], [-0.4, -0.5, -0.87]])
    methanol.calc = calc
    methanol.get_potential_energy()
    assert calc.compiled_shapes <= 2  # a smaller molecule may reuse a rung or need one more, never more


def test_from_file(variables, potential, tmp_path):
    path = potential.save(tmp_path / "m.npz")
    atoms = _atoms(builtin.ethanol())
    atoms.calc = PotentialCalculator.from_file(path)
    assert isinstance(atoms.calc.potential, Potential) and atoms.calc.potential.config == CONFIG
    e_ref, _ = evaluate(make_energy_fn(CONFIG), variables, system_from_atoms(atoms), CONFIG.cutoff)
    assert atoms.get_potential_energy() == pytest.approx(e_ref, abs=1e-10)
    assert load_checkpoint(path).config == CONFIG
