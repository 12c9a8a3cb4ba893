"""Unit factors, unit arguments of the readers, and physical cross-checks that catch a wrong factor."""

import numpy as np
import pytest

from so3krates_lab.data import read_md17_npz, read_rmd17
from so3krates_lab.units import (
    BOHR,
    HARTREE,
    KCAL_PER_MOL,
    UnitError,
    canonical_energy_unit,
    energy_factor,
    force_factor,
    length_factor,
)

MD17_TRAJ = "md17_ethanol_trajectory/md17_ethanol_2000.npz"
AVOGADRO = 6.02214076e23
ELEMENTARY_CHARGE = 1.602176634e-19


# ---------------------------------------------------------------- factors


def test_kcal_per_mol_value():
    # 1 kcal/mol = 4184 J/mol / N_A, in eV (exact SI constants); rMD17 README quotes 0.0433641043
    assert KCAL_PER_MOL == pytest.approx(4184.0 / AVOGADRO / ELEMENTARY_CHARGE, rel=1e-8)
    assert energy_factor("kcal/mol") == pytest.approx(0.0433641043, rel=1e-10)
    assert 1.0 / energy_factor("kcal/mol") == pytest.approx(23.0605, rel=1e-5)


def test_other_factors_and_aliases():
    assert energy_factor("eV") == 1.0 and energy_factor("meV") == 1e-3
    assert energy_factor("Ha") == HARTREE == pytest.approx(27.211386, rel=1e-7)
    assert energy_factor("kJ/mol") == pytest.approx(1000.0 / AVOGADRO / ELEMENTARY_CHARGE, rel=1e-7)
    assert length_factor("Bohr") == BOHR == pytest.approx(0.52917721, rel=1e-7)
    assert length_factor("Ang") == length_factor("angstrom") == 1.0
    assert canonical_energy_unit(" KCAL/MOL ") == "kcal/mol"
    assert force_factor("Hartree", "Bohr") == pytest.approx(HARTREE / BOHR)
    assert force_factor("kcal/mol") == KCAL_PER_MOL


@pytest.mark.parametrize("bad", ["kcal", "electronvolt", "", "J"])
def test_unknown_unit_string(bad):
    with pytest.raises(UnitError, match="unknown energy unit"):
        energy_factor(bad)


def test_missing_unit_is_an_error():
    with pytest.raises(UnitError, match="required"):
        energy_factor(None)


# ---------------------------------------------------------------- unit arguments of readers


def write_bare(path, energy_scale=1.0, force_scale=1.0, **extra):
    rng = np.random.default_rng(1)
    R = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
    np.savez(path, R=np.stack([R, R + 0.01]), z=np.array([8, 1, 1]),
             E=energy_scale * np.array([-100.0, -100.1]), F=force_scale * rng.normal(size=(2, 3, 3)), **extra)
    return path


def test_bare_npz_requires_energy_unit(tmp_path):
    path = write_bare(tmp_path / "bare.npz")
    with pytest.raises(UnitError, match=r"energy unit of this file is not known; pass energy_unit=.*'kcal/mol'"):
        read_md17_npz(path)
    ds = read_md17_npz(path, energy_unit="kcal/mol")
    assert ds[0].energy == pytest.approx(-100.0 * KCAL_PER_MOL)
    assert ds.file_units == {"energy": "kcal/mol", "length": "Angstrom"}
    with pytest.raises(UnitError, match="unknown energy unit 'kcal'"):
        read_md17_npz(path, energy_unit="kcal")
    with pytest.raises(UnitError, match="unknown length unit 'inch'"):
        read_md17_npz(path, energy_unit="eV", length_unit="inch")


def test_declared_units_are_used_and_enforced(tmp_path):
    path = write_bare(tmp_path / "sgdml.npz", e_unit=np.array("kcal/mol"), r_unit=np.array("Bohr"))
    ds = read_md17_npz(path)
    assert ds.file_units == {"energy": "kcal/mol", "length": "Bohr"}
    raw = np.load(path)
    np.testing.assert_allclose(ds[1].positions, raw["R"][1] * BOHR)
    np.testing.assert_allclose(ds[1].forces, raw["F"][1] * KCAL_PER_MOL / BOHR)
    assert read_md17_npz(path, energy_unit="KCAL/MOL", length_unit="bohr")[0].energy == ds[0].energy
    with pytest.raises(UnitError, match=r"stores energy in 'kcal/mol' but energy_unit='eV'"):
        read_md17_npz(path, energy_unit="eV")
    with pytest.raises(UnitError, match=r"stores length in 'Bohr' but length_unit='Angstrom'"):
        read_md17_npz(path, length_unit="Angstrom")


def test_rmd17_rejects_contradicting_units(tmp_path):
    path = tmp_path / "rmd17_like.npz"
    R = np.array([[[0.0, 0.0, 0.0], [0.96, 0.0, 0.0]]])
    np.savez(path, nuclear_charges=np.array([1, 1]), coords=R, energies=np.array([-700.0]), forces=np.zeros((1, 2, 3)))
    with pytest.raises(UnitError, match=r"stores energy in 'kcal/mol' but energy_unit='eV'"):
        read_rmd17(path, energy_unit="eV")
    with pytest.raises(UnitError, match=r"stores length in 'Angstrom' but length_unit='Bohr'"):
        read_rmd17(path, length_unit="Bohr")
    assert read_rmd17(path, energy_unit="kcal/mol")[0].energy == pytest.approx(-700 * KCAL_PER_MOL)


def test_rms_force_guard(tmp_path):
    path = write_bare(tmp_path / "f.npz", force_scale=30.0)  # typical kcal/mol/A forces
    read_md17_npz(path, energy_unit="kcal/mol")
    message = r"RMS force is .* eV/Angstrom after converting from Hartree/Angstrom.*probably wrong"
    with pytest.raises(UnitError, match=message):
        read_md17_npz(path, energy_unit="Hartree")


# ---------------------------------------------------------------- cross-checks on real data


@pytest.fixture(scope="module")
def md17_trajectory(shared_data):
    return read_md17_npz(shared_data / MD17_TRAJ)


def test_rmd17_old_labels_match_md17_trajectory(shared_data, md17_trajectory):
    """rMD17 old_indices point into the MD17 trajectory: same geometry, same (converted) old label."""
    matched = 0
    for path in sorted((shared_data / "rmd17").glob("rmd17_ethanol_*.npz")):
        old_indices = np.load(path)["old_indices"]
        rows = np.flatnonzero(old_indices < len(md17_trajectory))
        if rows.size == 0:
            continue
        rmd17_old = read_rmd17(path, labels="old")
        for row in rows:
            frame = md17_trajectory[int(old_indices[row])]
            np.testing.assert_allclose(rmd17_old[row].positions, frame.positions, atol=1e-10)
            assert rmd17_old[row].energy == pytest.approx(frame.energy, rel=1e-12)
            np.testing.assert_allclose(rmd17_old[row].forces, frame.forces, rtol=1e-10, atol=1e-12)
            matched += 1
    assert matched >= 10  # 35 frames across the 10 ethanol files


def _work_mismatch(energies, forces, positions):
    """Relative RMS error of dE vs the trapezoidal work -0.5 * sum((F_t + F_t+1) . (R_t+1 - R_t))."""
    dE = np.diff(energies)
    work = -0.5 * np.sum((forces[1:] + forces[:-1]) * (positions[1:] - positions[:-1]), axis=(1, 2))
    return float(np.sqrt(np.mean((dE - work) ** 2)) / np.std(dE)), float(np.corrcoef(dE, work)[0, 1])


def test_md17_energy_matches_force_work(md17_trajectory):
    """Along the 0.5 fs trajectory the energy change equals the work of the forces, in eV and eV/A."""
    E = md17_trajectory.energies
    F = np.stack([s.forces for s in md17_trajectory])
    R = np.stack([s.positions for s in md17_trajectory])
    rel, corr = _work_mismatch(E, F, R)
    assert corr > 0.999 and rel < 0.05  # measured: corr 0.9998, rel 0.019
    # the check has teeth: a force off by the kcal/mol <-> eV factor fails it
    assert _work_mismatch(E, 23.06 * F, R)[0] > 1.0
    assert _work_mismatch(E, F / 23.06, R)[0] > 0.5
    assert 0.005 < np.std(np.diff(E)) < 0.1  # eV per 0.5 fs step (0.67 kcal/mol)
