"""Readers against the real reference data, load() dispatch, and bad-input errors on synthetic files."""

import hashlib
import re

import numpy as np
import pytest

from so3krates_lab.data import (
    FormatError,
    check_overlaps,
    detect_format,
    load,
    read_ase,
    read_md17_npz,
    read_md22_xyz,
    read_padded_npz,
    read_rmd17,
)
from so3krates_lab.structures import StructureError, System
from so3krates_lab.units import KCAL_PER_MOL, UnitError

ETHANOL = "rmd17/rmd17_ethanol_train_01.npz"
MD17_TRAJ = "md17_ethanol_trajectory/md17_ethanol_2000.npz"
MD22 = "md22_ac_ala3_nhme/md22_Ac-Ala3-NHMe_5frames.xyz"
MD22_DISP = "md22_ac_ala3_nhme/md22_Ac-Ala3-NHMe_disp_100frames.extxyz"
LI3PO4 = "periodic/li3po4_192atoms_50frames.extxyz"
WATER = "periodic/water_192atoms_400frames.npz"
QM7X_NATIVE = "qm7x/qm7x_226.npz"
QM7X_PADDED = "qm7x/qm7x_250_small.npz"


@pytest.fixture(scope="module")
def ethanol(shared_data):
    return read_rmd17(shared_data / ETHANOL)


# ---------------------------------------------------------------- real data


def test_rmd17_ethanol(shared_data, ethanol):
    raw = np.load(shared_data / ETHANOL)
    assert len(ethanol) == 1000
    assert set(ethanol.n_atoms) == {9}
    assert ethanol[0].numbers.tolist() == [6, 6, 8, 1, 1, 1, 1, 1, 1]
    assert ethanol.file_units == {"energy": "kcal/mol", "length": "Angstrom"}
    assert ethanol.name == "rmd17_ethanol_train_01"
    assert ethanol.source == str((shared_data / ETHANOL).resolve())
    assert ethanol.sha256 == hashlib.sha256((shared_data / ETHANOL).read_bytes()).hexdigest()
    e = ethanol.energies
    assert -4220 < e.mean() < -4200  # about -97,080 kcal/mol
    np.testing.assert_allclose(e, raw["energies"] * KCAL_PER_MOL, rtol=1e-12)
    np.testing.assert_allclose(ethanol[7].forces, raw["forces"][7] * KCAL_PER_MOL, rtol=1e-12)
    np.testing.assert_array_equal(ethanol[7].positions, raw["coords"][7])
    assert ethanol[0].cell is None and not ethanol[0].periodic


def test_rmd17_old_labels(shared_data, ethanol):
    old = read_rmd17(shared_data / ETHANOL, labels="old")
    raw = np.load(shared_data / ETHANOL)
    np.testing.assert_allclose(old.energies, raw["old_energies"] * KCAL_PER_MOL, rtol=1e-12)
    # different level of theory: MD17 (PBE+vdW-TS) energies are ~119 kcal/mol (~5 eV) lower
    assert 4.0 < (ethanol.energies - old.energies).mean() < 6.0
    with pytest.raises(ValueError, match="labels"):
        read_rmd17(shared_data / ETHANOL, labels="older")


def test_rmd17_aspirin(shared_data):
    ds = read_rmd17(shared_data / "rmd17/rmd17_aspirin_train_01.npz")
    assert len(ds) == 1000 and set(ds.n_atoms) == {21}
    assert np.bincount(ds[0].numbers).tolist()[:9] == [0, 8, 0, 0, 0, 0, 9, 0, 4]  # C9H8O4
    assert -17700 < ds.energies.mean() < -17500


def test_md17_trajectory_layout(shared_data):
    ds = read_md17_npz(shared_data / MD17_TRAJ)
    raw = np.load(shared_data / MD17_TRAJ)
    assert len(ds) == 2000 and set(ds.n_atoms) == {9}
    assert ds.file_units["energy"] == "kcal/mol"
    np.testing.assert_allclose(ds.energies, raw["energy"][:, 0] * KCAL_PER_MOL, rtol=1e-12)
    np.testing.assert_allclose(ds[5].forces, raw["forces"][5] * KCAL_PER_MOL, rtol=1e-12)
    with pytest.raises(UnitError, match="stores energy in 'kcal/mol'"):
        read_md17_npz(shared_data / MD17_TRAJ, energy_unit="eV")


def test_md22_xyz(shared_data):
    ds = read_md22_xyz(shared_data / MD22)
    assert len(ds) == 5 and set(ds.n_atoms) == {42}
    assert set(ds.elements) == {1, 6, 7, 8}
    assert ds[0].energy == pytest.approx(-620726.002662 * KCAL_PER_MOL, rel=1e-12)
    np.testing.assert_allclose(ds[0].forces[0], np.array([1.07102, 1.79039, -3.86023]) * KCAL_PER_MOL)
    np.testing.assert_allclose(ds[0].positions[0], [2.04866, 3.0397, -1.90538])
    # ASE parses the same file; told the units, it must agree with our own parser
    via_ase = read_ase(shared_data / MD22, energy_unit="kcal/mol")
    np.testing.assert_allclose(via_ase.energies, ds.energies, rtol=1e-12)
    np.testing.assert_allclose(via_ase[4].forces, ds[4].forces, rtol=1e-12)


def test_md22_displacements_extxyz(shared_data):
    ds = read_ase(shared_data / MD22_DISP)
    assert len(ds) == 98 and set(ds.n_atoms) == {42}
    assert all(s.energy is None and s.forces is None and s.cell is None for s in ds)
    np.testing.assert_allclose(ds[0].positions[0], [2.04866, 3.0397, -1.90538])


def test_li3po4_periodic(shared_data):
    ds = read_ase(shared_data / LI3PO4)
    assert len(ds) == 50 and set(ds.n_atoms) == {192}
    assert ds.file_units == {"energy": "eV", "length": "Angstrom"}
    s = ds[0]
    assert s.pbc.all()
    np.testing.assert_allclose(np.diag(s.cell), [10.54544, 12.319383, 14.856735])
    assert s.energy == pytest.approx(-1202.43358566)
    np.testing.assert_allclose(s.forces[0], [-0.073899, -0.006582, 0.020927])
    assert set(ds.elements) == {3, 8, 15}


def test_water_npz_needs_unit(shared_data):
    with pytest.raises(UnitError, match=r"energy_unit=.*'kcal/mol'.*'eV'"):
        read_md17_npz(shared_data / WATER)
    ds = read_md17_npz(shared_data / WATER, energy_unit="eV")
    raw = np.load(shared_data / WATER)
    assert len(ds) == 400 and set(ds.n_atoms) == {192}
    assert np.bincount(ds[0].numbers)[[1, 8]].tolist() == [128, 64]
    assert ds[3].pbc.all()
    np.testing.assert_allclose(ds[3].cell, raw["cell"][3])
    assert ds[3].energy == pytest.approx(raw["E"][3])
    np.testing.assert_allclose(ds[3].forces, raw["F"][3])


def test_qm7x_native_keys(shared_data):
    ds = read_padded_npz(shared_data / QM7X_NATIVE)
    assert len(ds) == 100 and set(ds.n_atoms) == {18}
    assert np.bincount(ds[0].numbers)[[1, 6]].tolist() == [12, 6]
    assert ds[0].energy == pytest.approx(-6410.478429)
    assert ds.file_units == {"energy": "eV", "length": "Angstrom"}
    with pytest.raises(UnitError, match="stores energy in 'eV'"):
        read_padded_npz(shared_data / QM7X_NATIVE, energy_unit="kcal/mol")


def test_qm7x_padded(shared_data):
    ds = read_padded_npz(shared_data / QM7X_PADDED, energy_unit="eV")
    raw = np.load(shared_data / QM7X_PADDED)
    assert len(ds) == 2500
    n = ds.n_atoms
    assert n.min() == 4 and n.max() == 23
    np.testing.assert_array_equal(n, (raw["z"] > 0).sum(axis=1))
    assert all((s.numbers > 0).all() for s in ds)
    k = int(np.argmin(n))
    real = raw["z"][k] > 0
    np.testing.assert_array_equal(ds[k].positions, raw["R"][k][real])
    np.testing.assert_array_equal(ds[k].forces, raw["F"][k][real])
    with pytest.raises(UnitError, match="energy_unit"):
        read_padded_npz(shared_data / QM7X_PADDED)


@pytest.mark.parametrize("name, n_atoms", [("at-at.xyz", 60), ("buckyball_catcher.xyz", 148), ("dha.xyz", 56)])
def test_geometries_fake_box(shared_data, name, n_atoms):
    path = shared_data / "geometries" / name
    ds = read_ase(path)
    s = ds[0]
    assert len(ds) == 1 and s.n_atoms == n_atoms and s.forces is None
    # the file's 999.9 A "periodic" box is vacuum padding: read as a free molecule
    assert s.cell is None and not s.periodic
    kept = read_ase(path, vacuum_gap=None)[0]
    assert kept.pbc.all() and kept.cell[0, 0] == pytest.approx(999.900024)
    np.testing.assert_array_equal(kept.positions, s.positions)
    assert read_ase(path, labels=False)[0].energy is None


@pytest.mark.parametrize("rel, fmt, kw", [
    (ETHANOL, "rmd17", {}),
    (MD17_TRAJ, "md17", {}),
    (MD22, "md22", {}),
    (MD22_DISP, "ase", {}),
    (LI3PO4, "ase", {}),
    (WATER, "md17", {"energy_unit": "eV"}),
    (QM7X_NATIVE, "padded", {}),
    (QM7X_PADDED, "padded", {"energy_unit": "eV"}),
    ("geometries/dha.xyz", "ase", {}),
])
def test_load_dispatch(shared_data, rel, fmt, kw):
    assert detect_format(shared_data / rel) == fmt
    if rel not in (MD17_TRAJ, QM7X_PADDED):  # the two slowest files are read elsewhere
        ds = load(shared_data / rel, **kw)
        assert ds.sha256 == hashlib.sha256((shared_data / rel).read_bytes()).hexdigest()


def test_load_format_override(shared_data):
    ds = load(shared_data / MD22, format="ase", energy_unit="kcal/mol")
    assert ds[0].energy == pytest.approx(-620726.002662 * KCAL_PER_MOL)
    with pytest.raises(ValueError, match="unknown format 'xyz'"):
        load(shared_data / MD22, format="xyz")


# ---------------------------------------------------------------- synthetic bad inputs

R3 = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])  # a water-like triangle, Angstrom


def write_rmd17(path, z=(8, 1, 1), n_frames=5, **override):
    rng = np.random.default_rng(0)
    arrays = {
        "nuclear_charges": np.asarray(z),
        "coords": np.repeat(R3[None, : len(z)], n_frames, axis=0) + 0.01 * rng.normal(size=(n_frames, len(z), 3)),
        "energies": -47000.0 + rng.normal(size=n_frames),
        "forces": 20 * rng.normal(size=(n_frames, len(z), 3)),
    }
    arrays.update(override)
    np.savez(path, **arrays)
    return path


def test_synthetic_rmd17_reads(tmp_path):
    ds = read_rmd17(write_rmd17(tmp_path / "ok.npz"))
    assert len(ds) == 5 and ds[0].energy == pytest.approx(-47000 * KCAL_PER_MOL, rel=1e-3)


@pytest.mark.parametrize("z, message", [
    ((8, 0, 1), r"atom 1: unknown element: atomic number 0"),
    ((8, 119, 1), r"frame 0: unknown element: atomic number 119 at atom 1"),
])
def test_unknown_element(tmp_path, z, message):
    with pytest.raises(StructureError, match=message):
        read_rmd17(write_rmd17(tmp_path / "bad.npz", z=z))


def test_nan_position_names_frame(tmp_path):
    good = write_rmd17(tmp_path / "x.npz")
    coords = np.load(good)["coords"].copy()
    coords[2, 1, 0] = np.nan
    with pytest.raises(StructureError, match=r"frame 2: non-finite .*position at atom 1"):
        read_rmd17(write_rmd17(tmp_path / "nan.npz", coords=coords))


def test_nan_energy_names_frame(tmp_path):
    energies = np.full(5, -47000.0)
    energies[3] = np.nan
    with pytest.raises(StructureError, match=r"frame 3: energy is not finite"):
        read_rmd17(write_rmd17(tmp_path / "nan.npz", energies=energies))


def test_coincident_atoms(tmp_path):
    coords = np.repeat(R3[None], 5, axis=0)
    coords[4, 2] = coords[4, 0] + [0.0, 0.0, 0.05]
    with pytest.raises(StructureError, match=r"frame 4: overlapping atoms: atoms 0 and 2 .*0\.05 Angstrom"):
        read_rmd17(write_rmd17(tmp_path / "overlap.npz", coords=coords))
    assert len(read_rmd17(tmp_path / "overlap.npz", min_distance=None)) == 5


def test_check_overlaps_periodic_image():
    cell = np.eye(3) * 5.0
    positions = np.array([[0.01, 1.0, 1.0], [4.98, 1.0, 1.0], [2.5, 2.5, 2.5]])
    free = System(numbers=np.array([1, 1, 8]), positions=positions)
    check_overlaps(free)  # 4.97 A apart without periodicity: fine
    periodic = System(numbers=np.array([1, 1, 8]), positions=positions, cell=cell, pbc=np.ones(3, bool))
    with pytest.raises(StructureError, match=r"atoms 0 and 1 are only 0\.03 Angstrom apart"):
        check_overlaps(periodic)
    check_overlaps(periodic, min_distance=0.02)


@pytest.mark.parametrize("override, message", [
    ({"forces": np.zeros((5, 4, 3))}, r"forces has shape \(5, 4, 3\) but coords has shape \(5, 3, 3\)"),
    ({"forces": np.zeros((6, 3, 3))}, r"forces has shape \(6, 3, 3\) but coords has shape \(5, 3, 3\)"),
    ({"energies": np.zeros(4)}, r"energies has shape \(4,\) but coords has shape \(5, 3, 3\)"),
    ({"nuclear_charges": np.array([8, 1])}, r"nuclear_charges has shape \(2,\) but coords has shape \(5, 3, 3\)"),
])
def test_mismatched_shapes(tmp_path, override, message):
    with pytest.raises(StructureError, match=message):
        read_rmd17(write_rmd17(tmp_path / "shape.npz", **override))


def test_empty_inputs(tmp_path):
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(StructureError, match=r"empty\.npz: file is empty \(0 bytes\)"):
        read_rmd17(tmp_path / "empty.npz")
    zero = write_rmd17(tmp_path / "zero.npz", n_frames=0)
    with pytest.raises(StructureError, match=r"empty \(0 frames"):
        read_rmd17(zero)
    (tmp_path / "blank.xyz").write_text("\n  \n")
    with pytest.raises(StructureError, match=r"empty \(0 frames\)"):
        read_md22_xyz(tmp_path / "blank.xyz")


def test_missing_key_and_unreadable(tmp_path):
    np.savez(tmp_path / "odd.npz", something=np.zeros(3))
    with pytest.raises(FormatError, match=r"odd\.npz: unrecognised \.npz key layout \['something'\]"):
        load(tmp_path / "odd.npz")
    missing = r"missing key\(s\) \['nuclear_charges', 'coords', 'energies', 'forces'\]; the file has keys \['some"
    with pytest.raises(FormatError, match=missing):
        read_rmd17(tmp_path / "odd.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip archive")
    with pytest.raises(FormatError, match=r"junk\.npz: not a readable \.npz"):
        read_rmd17(tmp_path / "junk.npz")
    (tmp_path / "data.weird").write_text("hello\n")
    with pytest.raises(FormatError, match=r"data\.weird: ASE could not read"):
        load(tmp_path / "data.weird")
    with pytest.raises(FileNotFoundError, match="nothere.npz"):
        load(tmp_path / "nothere.npz")


def test_md17_zero_atomic_number_hint(tmp_path):
    z = np.tile([8, 1, 1], (2, 1))
    z[1, 2] = 0
    np.savez(tmp_path / "z0.npz", R=np.stack([R3, R3]), z=z, E=np.zeros(2), F=np.zeros((2, 3, 3)))
    with pytest.raises(StructureError, match=r"frame 1: atom 2: unknown element: atomic number 0.*read_padded_npz"):
        read_md17_npz(tmp_path / "z0.npz", energy_unit="eV")
    assert detect_format(tmp_path / "z0.npz") == "padded"
    ds = load(tmp_path / "z0.npz", energy_unit="eV")
    assert ds.n_atoms.tolist() == [3, 2]


def test_padded_frame_without_atoms(tmp_path):
    z = np.array([[8, 1, 1], [0, 0, 0]])
    np.savez(tmp_path / "pad.npz", R=np.stack([R3, R3]), z=z, E=np.zeros((2, 1)), F=np.zeros((2, 3, 3)))
    with pytest.raises(StructureError, match=r"frame 1: a System needs at least one atom"):
        read_padded_npz(tmp_path / "pad.npz", energy_unit="eV")


def test_padded_custom_keys(tmp_path):
    np.savez(tmp_path / "c.npz", pos=R3[None], Z=np.array([[8, 1, 0]]), U=np.array([-2.0]))
    ds = read_padded_npz(tmp_path / "c.npz", energy_unit="Hartree",
                         keys={"positions": "pos", "numbers": "Z", "energy": "U"})
    assert ds[0].n_atoms == 2 and ds[0].forces is None
    assert ds[0].energy == pytest.approx(-2.0 * 27.211386245988)


def test_md22_parser_robustness(tmp_path):
    text = (
        "  3 \n Energy=-100.5   extra=stuff \n"
        "O   0.0  0.0\t0.0   1.0 0.0 0.0\n H 0.96 0 0  -1 0 0 \nH -0.24 0.93 0 0 0 0\n\n"
        "3\nno labels here\nO 0 0 0\nH 0.96 0 0\nH -0.24 0.93 0\n"
    )
    (tmp_path / "m.xyz").write_text(text)
    ds = read_md22_xyz(tmp_path / "m.xyz")
    assert len(ds) == 2
    assert ds[0].energy == pytest.approx(-100.5 * KCAL_PER_MOL)
    np.testing.assert_allclose(ds[0].forces[1], [-KCAL_PER_MOL, 0, 0])
    assert ds[1].energy is None and ds[1].forces is None
    assert detect_format(tmp_path / "m.xyz") == "md22"


@pytest.mark.parametrize("text, error, message", [
    ("3\nEnergy=1\nO 0 0 0\nH 1 0 0\n", StructureError, r"frame 0: the count line says 3 atoms but 2"),
    ("2\nEnergy=1\nO 0 0 0 1\nH 1 0 0\n", FormatError, r"line 3: expected 'El x y z'"),
    ("2\nEnergy=1\nO 0 0 0\nXx 1 0 0\n", StructureError, r"frame 0: unknown element symbol 'Xx' at atom 1"),
    ("two\nEnergy=1\nO 0 0 0\n", FormatError, r"line 1: expected the atom count of frame 0"),
    ("1\nEnergy=1 Properties=species:S:1:pos:R:3:charges:R:1\nO 0 0 0 1\n", FormatError, r"not the MD22 layout"),
])
def test_md22_parser_errors(tmp_path, text, error, message):
    (tmp_path / "bad.xyz").write_text(text)
    with pytest.raises(error, match=message):
        read_md22_xyz(tmp_path / "bad.xyz")


def test_ase_db_roundtrip(tmp_path):
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.db import connect

    forces = np.array([[0.1, 0.0, 0.0], [-0.1, 0.0, 0.0], [0.0, 0.2, 0.0]])
    with connect(tmp_path / "x.db") as db:
        for k in range(3):
            atoms = Atoms("OH2", positions=R3 + k * 0.01, cell=np.eye(3) * 6.0, pbc=True)
            atoms.calc = SinglePointCalculator(atoms, energy=-10.0 - k, forces=forces)
            db.write(atoms)
        db.write(Atoms("OH2", positions=R3))
    ds = load(tmp_path / "x.db")
    assert len(ds) == 4
    assert ds[1].energy == pytest.approx(-11.0) and ds[1].pbc.all()
    np.testing.assert_allclose(ds[2].forces, forces)
    np.testing.assert_allclose(ds[0].cell, np.eye(3) * 6.0)
    assert ds[3].energy is None and ds[3].forces is None and ds[3].cell is None
    hartree = read_ase(tmp_path / "x.db", index="1:2", energy_unit="Hartree", length_unit="Bohr")
    assert len(hartree) == 1
    assert hartree[0].energy == pytest.approx(-11.0 * 27.211386245988)
    np.testing.assert_allclose(hartree[0].positions, (R3 + 0.01) * 0.529177210903)
    np.testing.assert_allclose(hartree[0].forces, forces * 27.211386245988 / 0.529177210903)


def test_load_names_what_a_non_npz_file_is(tmp_path):
    import pickle

    (tmp_path / "x.npz").write_text("R z E F\n0.0 1 -1.0 0.0\n")
    (tmp_path / "j.npz").write_text('[{"R": [[0, 0, 0]], "z": [1]}]')
    (tmp_path / "p.npz").write_bytes(pickle.dumps({"R": np.zeros((1, 1, 3))}))
    cases = {"x.npz": r"it starts with 'R z E F.*', like a text file\)",
             "j.npz": r"it starts with '\[', like a JSON file\)",
             "p.npz": r"it starts with byte 0x80, like a Python pickle; so3krates_lab never unpickles files\)"}
    for name, what in cases.items():
        for reader in (load, read_rmd17, read_md17_npz, read_padded_npz):
            with pytest.raises(FormatError) as err:
                reader(tmp_path / name)
            message = str(err.value)
            assert "allow_pickle" not in message and "pickled (object) data" not in message, message
            assert re.search(rf"{re.escape(name)}: not a readable \.npz archive \({what}", message), message
