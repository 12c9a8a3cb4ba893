"""Reference-data generation: the chunk store is crash-safe, MD sampling resumes exactly, and the reference
calculators return forces in eV/Angstrom that equal minus the gradient of their energy (finite differences)."""

import importlib.util

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.lj import LennardJones

from so3krates_lab.data import load
from so3krates_lab.reference import FrameStore, label_frames, sample_md, write_npz
from so3krates_lab.structures import System


def _argon_trimer() -> System:
    return System(numbers=[18, 18, 18], positions=[[0, 0, 0], [3.8, 0, 0], [1.9, 3.3, 0.1]])


def _lj():
    return LennardJones(sigma=3.4, epsilon=0.0104, rc=8.0, smooth=True)


def test_store_appends_atomically_and_ignores_partial_files(tmp_path):
    store = FrameStore(tmp_path / "s")
    numbers = np.array([8, 1, 1])
    R = np.random.default_rng(0).normal(size=(4, 3, 3))
    store.append(numbers, R[:2], [1.0, 2.0], np.zeros((2, 3, 3)))
    (store.directory / "junk.tmp").write_bytes(b"half a chunk")  # what a kill mid-write leaves
    store.append(numbers, R[2:], [3.0, 4.0], np.ones((2, 3, 3)))
    assert len(FrameStore(tmp_path / "s")) == 4
    a = store.arrays()
    np.testing.assert_array_equal(a["energy"], [1, 2, 3, 4])
    np.testing.assert_array_equal(a["positions"], R)
    with pytest.raises(ValueError, match="inconsistent chunk shapes"):
        store.append(numbers, R[:2], [1.0], np.zeros((2, 3, 3)))


def test_md_sampling_resumes_to_the_same_frames(tmp_path):
    kw = dict(temperature_K=60.0, n_frames=6, stride=3, timestep_fs=2.0, burn_in_steps=5, seed=4, chunk_frames=2,
              progress=False)
    full = sample_md(_argon_trimer(), _lj(), FrameStore(tmp_path / "full"), **kw).arrays()
    # "Killed" after the first chunk: a run asked for 2 frames leaves exactly one chunk; rerun with 6 continues.
    part = FrameStore(tmp_path / "part")
    sample_md(_argon_trimer(), _lj(), part, **dict(kw, n_frames=2))
    assert part.n_chunks == 1
    resumed = sample_md(_argon_trimer(), _lj(), part, **kw).arrays()
    for key in ("positions", "velocities", "energy", "forces"):
        np.testing.assert_array_equal(resumed[key], full[key])
    assert np.ptp(full["energy"]) > 0  # the atoms moved


def test_labelling_resumes_and_round_trips_through_the_shipped_format(tmp_path):
    rng = np.random.default_rng(1)
    positions = _argon_trimer().positions + 0.05 * rng.normal(size=(5, 3, 3))
    store = FrameStore(tmp_path / "lab")
    label_frames([18] * 3, positions[:2], _lj(), store, chunk_frames=2, progress=False)
    label_frames([18] * 3, positions, _lj(), store, chunk_frames=2, progress=False)
    a = store.arrays()
    atoms = Atoms("Ar3", positions=positions[4], calculator=_lj())
    assert a["energy"][4] == pytest.approx(atoms.get_potential_energy())
    write_npz(tmp_path / "d.npz", a, {"method": "LJ"})
    ds = load(tmp_path / "d.npz")  # units come from the file (e_unit = eV), nothing to pass
    assert len(ds) == 5
    np.testing.assert_allclose(ds.energies, a["energy"])
    np.testing.assert_allclose(ds[4].forces, a["forces"][4], rtol=1e-6, atol=1e-6)


def _fd_force(atoms: Atoms, atom: int, axis: int, h: float = 1e-3) -> float:
    def energy(shift):
        moved = atoms.copy()
        moved.calc = atoms.calc
        moved.positions[atom, axis] += shift
        return moved.get_potential_energy()

    return -(energy(h) - energy(-h)) / (2 * h)


def _water() -> Atoms:
    return Atoms("OH2", positions=[[0, 0, 0.12], [0, 0.76, -0.47], [0, -0.74, -0.49]])


@pytest.mark.skipif(importlib.util.find_spec("tblite") is None, reason="tblite not installed")
def test_gfn2_xtb_forces_are_minus_the_energy_gradient_in_ev_per_angstrom():
    from so3krates_lab.reference import gfn2_xtb

    atoms = _water()
    atoms.calc = gfn2_xtb()
    forces = atoms.get_forces()
    assert atoms.get_potential_energy() == pytest.approx(-137.97, abs=0.5)  # GFN2 water, about -5.07 Hartree
    assert forces[1, 1] == pytest.approx(_fd_force(atoms, 1, 1), rel=1e-4, abs=1e-4)


@pytest.mark.skipif(importlib.util.find_spec("pyscf") is None, reason="pyscf not installed")
def test_pyscf_pbe_forces_are_minus_the_energy_gradient_in_ev_per_angstrom():
    from so3krates_lab.reference import PyscfDFT

    atoms = _water()
    atoms.calc = PyscfDFT(xc="PBE", basis="def2-svp", conv_tol=1e-11)
    forces = atoms.get_forces()
    # PBE/def2-SVP water is about -76.27 Hartree = -2075 eV
    assert atoms.get_potential_energy() == pytest.approx(-76.27 * 27.2114, abs=3.0)
    assert forces[1, 1] == pytest.approx(_fd_force(atoms, 1, 1), rel=2e-3, abs=2e-3)
    with pytest.raises(ValueError, match="periodic"):
        Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]], cell=[5, 5, 5], pbc=True,
              calculator=PyscfDFT()).get_potential_energy()
