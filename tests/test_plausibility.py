"""The unit-plausibility check (so3krates_lab.data.plausibility) that every reader runs on every load.

Part 1 needs only the shipped data: correct files load, relabelled copies (the values as a unit mistake makes
them) raise UnitError naming the true unit, tiny or random data stay inconclusive, check_units=False skips.
Part 2 runs on every file type of ../shared/data (skipped without it): correct labels never raise, every
relabelling raises, and the exact mistake of the issue (rMD17 kcal/mol data declared as eV) raises.
"""

import re
import time
from pathlib import Path

import numpy as np
import pytest

from so3krates_lab import data
from so3krates_lab.data import (
    load,
    read_ase,
    read_md17_npz,
    read_md22_xyz,
    read_padded_npz,
    read_rmd17,
    shipped_path,
)
from so3krates_lab.data.plausibility import RELABELLINGS, check_units, relabel, unit_evidence
from so3krates_lab.structures import System
from so3krates_lab.units import BOHR, HARTREE, KCAL_PER_MOL, UnitError

KB = 8.617333262e-5


@pytest.fixture(scope="module")
def ethanol():
    """The shipped ethanol PBE 500 K set (eV, Angstrom), loaded with the check on."""
    return load(shipped_path("ethanol_pbe_500K.npz"))


def _arrays(ds):
    R = np.stack([s.positions for s in ds])
    E = np.array([s.energy for s in ds])
    F = np.stack([s.forces for s in ds])
    return R, ds[0].numbers, E, F


# ---------------------------------------------------------------- shipped data, correct


def test_shipped_data_loads_without_alarm(ethanol):
    ev = unit_evidence(ethanol)
    assert ev["length_verdict"] is None and ev["energy_verdict"] is None
    assert 0.95 < ev["bond_length_ratio"] < 1.05  # measured 1.00
    assert 20 < ev["bond_stiffness"] < 50  # measured 34 eV/A^2 (C-H, C-C, C-O, O-H)
    assert 1.0 < ev["energy_ratio"] < 1.02  # all-electron PBE total energies
    assert 300 < ev["bond_temperature"] < 900  # 500 K MD, measured 568
    xtb = load(shipped_path("ac_ala3_nhme_gfn2xtb.npz"))  # GFN2-xTB: no absolute-energy match, no alarm
    ev = unit_evidence(xtb)
    assert ev["energy_verdict"] is None and 20 < ev["bond_stiffness"] < 50 and ev["energy_ratio"] < 0.1


def test_shipped_single_frames_are_inconclusive_for_energies():
    h = np.load(shipped_path("ethanol_pbe_harmonic.npz"))
    minimum = System(numbers=h["numbers"], positions=h["positions"], energy=float(h["energy"]), forces=h["forces"])
    ev = check_units([minimum], ("eV", "Angstrom"))
    assert ev["bond_stiffness"] is None and "5 labelled frames" in ev["bond_stiffness_note"]
    assert 0.95 < ev["bond_length_ratio"] < 1.1
    # even 23 x too large: one near-zero-force frame is no evidence beyond the absolute energy -> inconclusive
    assert check_units([minimum.replace(energy=minimum.energy / KCAL_PER_MOL)], ("eV", "Angstrom"))
    with pytest.raises(UnitError, match="length_unit='Bohr'"):  # the geometry alone still decides lengths
        check_units([minimum.replace(positions=minimum.positions / BOHR)], ("eV", "Angstrom"))
    m = np.load(shipped_path("minima/ac_ala3_nhme_hop.npz"))
    geometries = [System(numbers=m["numbers"], positions=p) for p in m["positions"]]
    assert check_units(geometries)["length_verdict"] is None


# ---------------------------------------------------------------- relabelled copies of shipped data

# (what the file's numbers are, e_unit it declares, r_unit it declares, the unit the error must name)
MISTAKES = {
    "kcal/mol declared as eV": (1 / KCAL_PER_MOL, 1 / KCAL_PER_MOL, 1.0, "eV", "Angstrom", "energy_unit='kcal/mol'"),
    "eV declared as kcal/mol": (1.0, 1.0, 1.0, "kcal/mol", "Angstrom", "energy_unit='eV'"),
    "Hartree declared as eV": (1 / HARTREE, 1 / HARTREE, 1.0, "eV", "Angstrom", "energy_unit='Hartree'"),
    "Hartree, Hartree/Bohr declared as eV, eV/A": (1 / HARTREE, BOHR / HARTREE, 1.0, "eV", "Angstrom",
                                                    "energy_unit='Hartree'"),
    "Bohr declared as Angstrom": (1.0, BOHR, 1 / BOHR, "eV", "Angstrom", "length_unit='Bohr'"),
}


def _write_relabelled(path, ds, e_scale, f_scale, r_scale, e_unit, r_unit):
    R, z, E, F = _arrays(ds)
    np.savez(path, R=R * r_scale, z=z, E=E * e_scale, F=F * f_scale, e_unit=np.array(e_unit),
             r_unit=np.array(r_unit))
    return path


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_relabelled_copy_raises_naming_the_unit(tmp_path, ethanol, mistake):
    e_scale, f_scale, r_scale, e_unit, r_unit, names = MISTAKES[mistake]
    path = _write_relabelled(tmp_path / "relabelled.npz", ethanol, e_scale, f_scale, r_scale, e_unit, r_unit)
    with pytest.raises(UnitError) as err:
        load(path)
    message = str(err.value)
    assert names in message and str(path) in message and "check_units=False" in message
    assert "\n" not in message
    if mistake.startswith("Bohr"):
        assert re.search(r"median nearest-neighbour distance is 1\.[89]\d x the covalent bond length", message)
    else:
        assert "stretching stiffness" in message
    ds = load(path, check_units=False)  # the check can be switched off
    assert len(ds) == len(ethanol)


def test_relabelled_copy_loads_once_declared_right(tmp_path, ethanol):
    """The fix the message suggests works: the same kcal/mol numbers declared as kcal/mol load and match."""
    path = _write_relabelled(tmp_path / "kcal.npz", ethanol, 1 / KCAL_PER_MOL, 1 / KCAL_PER_MOL, 1.0,
                             "kcal/mol", "Angstrom")
    ds = load(path)
    np.testing.assert_allclose(ds.energies, ethanol.energies, rtol=1e-12)
    bare = tmp_path / "bare.npz"
    R, z, E, F = _arrays(ethanol)
    np.savez(bare, R=R, z=z, E=E / KCAL_PER_MOL, F=F / KCAL_PER_MOL)
    with pytest.raises(UnitError, match="probably in kcal/mol .*energy_unit='kcal/mol'"):
        load(bare, energy_unit="eV")  # the issue's mistake, on the shipped data
    assert load(bare, energy_unit="kcal/mol")[3].energy == pytest.approx(ethanol[3].energy)


def test_every_reader_runs_the_check_and_takes_check_units(tmp_path, ethanol):
    """rMD17, MD17, padded, MD22 xyz and ASE readers and load() all check, and all accept check_units=False."""
    R, z, E, F = _arrays(ethanol[:40])
    rmd17 = tmp_path / "rmd17_like.npz"  # rMD17 layout (kcal/mol by format) holding eV numbers
    np.savez(rmd17, nuclear_charges=z, coords=R, energies=E, forces=F)
    padded = tmp_path / "padded.npz"  # zero-padded layout, eV numbers, declared kcal/mol below
    pad = np.zeros((len(R), 2, 3))
    np.savez(padded, R=np.concatenate([R, pad], axis=1), F=np.concatenate([F, pad], axis=1), E=E,
             z=np.concatenate([np.tile(z, (len(R), 1)), np.zeros((len(R), 2), dtype=int)], axis=1))
    md22 = tmp_path / "md22_like.xyz"  # MD22 raw xyz (kcal/mol by format) holding eV numbers
    with open(md22, "w") as fh:
        for k in range(len(R)):
            fh.write(f"{len(z)}\nEnergy={E[k]:.10f} Properties=species:S:1:pos:R:3:forces:R:3\n")
            for atom in range(len(z)):
                fh.write(f"{['', 'H', '', '', '', '', 'C', '', 'O'][z[atom]]} "
                         + " ".join(f"{x:.8f}" for x in (*R[k, atom], *F[k, atom])) + "\n")
    cases = [
        (read_rmd17, rmd17, {}, "energy_unit='eV'"),
        (read_md17_npz, padded.with_name("bare.npz"), {"energy_unit": "kcal/mol"}, "energy_unit='eV'"),
        (read_padded_npz, padded, {"energy_unit": "kcal/mol"}, "energy_unit='eV'"),
        (read_md22_xyz, md22, {}, "energy_unit='eV'"),
        (read_ase, md22, {"energy_unit": "kcal/mol"}, "energy_unit='eV'"),
        (load, rmd17, {}, "energy_unit='eV'"),
    ]
    np.savez(padded.with_name("bare.npz"), R=R, z=z, E=E, F=F)
    for reader, path, kw, names in cases:
        with pytest.raises(UnitError, match=re.escape(names)):
            reader(path, **kw)
        assert len(reader(path, check_units=False, **kw)) == len(R)


def test_periodic_frames_use_the_minimum_image(tmp_path, ethanol):
    """Ethanol wrapped into a 7 A periodic box (bonds cross the boundary): same evidence as the free molecule;
    kcal/mol written as eV and Bohr written as Angstrom raise through read_ase."""
    import ase.io
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    def write(path, e_scale=1.0, f_scale=1.0, r_scale=1.0):
        images = []
        for s in ethanol[:60]:
            atoms = Atoms(numbers=s.numbers, positions=(s.positions + 5.5) * r_scale,
                          cell=np.eye(3) * 7.0 * r_scale, pbc=True)
            atoms.wrap()
            atoms.calc = SinglePointCalculator(atoms, energy=s.energy * e_scale, forces=s.forces * f_scale)
            images.append(atoms)
        ase.io.write(path, images, format="extxyz")
        return path

    ds = read_ase(write(tmp_path / "box.extxyz"))
    assert ds[0].periodic
    free = unit_evidence(ethanol[:60])
    boxed = unit_evidence(ds)
    assert boxed["bond_length_ratio"] == pytest.approx(free["bond_length_ratio"], rel=1e-6)
    assert boxed["bond_stiffness"] == pytest.approx(free["bond_stiffness"], rel=1e-6)
    with pytest.raises(UnitError, match="energy_unit='kcal/mol'"):
        read_ase(write(tmp_path / "kcal.extxyz", 1 / KCAL_PER_MOL, 1 / KCAL_PER_MOL))
    with pytest.raises(UnitError, match="length_unit='Bohr'"):
        read_ase(write(tmp_path / "bohr.extxyz", 1.0, BOHR, 1 / BOHR))


def test_stiffness_is_a_bond_constant_independent_of_temperature():
    """Canonical samples of the shipped ethanol PBE Hessian: the bond slope gives the same relaxed stretching
    constant at 100 K and 600 K, and -cov(f, d) gives the temperature."""
    h = np.load(shipped_path("ethanol_pbe_harmonic.npz"))
    H = h["hessian"]
    w, V = np.linalg.eigh(H)
    modes = w > 0.1  # leave out the six rigid-body directions
    rng = np.random.default_rng(7)
    found = {}
    for T in (100.0, 600.0):
        x = (rng.normal(size=(400, modes.sum())) * np.sqrt(KB * T / w[modes])) @ V[:, modes].T
        systems = [System(numbers=h["numbers"], positions=h["positions"] + d.reshape(-1, 3),
                          energy=float(h["energy"]) + 0.5 * d @ H @ d, forces=-(H @ d).reshape(-1, 3)) for d in x]
        ev = check_units(systems, ("eV", "Angstrom"))
        assert ev["bond_temperature"] == pytest.approx(T, rel=0.2)
        found[T] = ev["bond_stiffness"]
        with pytest.raises(UnitError, match="energy_unit='kcal/mol'"):
            check_units(relabel(systems, ("eV", "Angstrom"), "kcal/mol as eV")[0], ("eV", "Angstrom"))
    assert 15 < found[100.0] < 50 and found[600.0] == pytest.approx(found[100.0], rel=0.2)


# ---------------------------------------------------------------- no evidence, no alarm


def _water(n_frames, seed=0, force_scale=1.0):
    rng = np.random.default_rng(seed)
    base = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
    return [System(numbers=np.array([8, 1, 1]), positions=base + 0.03 * rng.normal(size=(3, 3)),
                   energy=-2080.0 + rng.normal(), forces=force_scale * rng.normal(size=(3, 3)))
            for _ in range(n_frames)]


def test_tiny_and_random_data_are_inconclusive(ethanol):
    for systems in (_water(2), _water(12), _water(12, force_scale=20.0)):  # random forces, even large ones
        ev = check_units(systems, ("eV", "Angstrom"))
        assert ev["bond_stiffness"] is None and ev["energy_verdict"] is None
    rng = np.random.default_rng(5)
    for scale in (0.05, 1.0, 20.0):  # real ethanol geometries with random forces of any size
        systems = [s.replace(forces=scale * rng.normal(size=s.forces.shape)) for s in ethanol[:100]]
        ev = check_units(systems, ("eV", "Angstrom"))
        assert ev["bond_stiffness"] is None and "do not follow the bond lengths" in ev["bond_stiffness_note"]
    stretched_h2 = [System(numbers=[1, 1], positions=[[0, 0, 0], [0.96, 0, 0]], energy=-30.0)]
    assert "fewer than 3 atoms" in check_units(stretched_h2)["bond_length_note"]
    single_atom = [System(numbers=[6], positions=[[0.0, 0.0, 0.0]], energy=-1029.0)]
    assert check_units(single_atom)["bond_length_ratio"] is None


def test_noble_gases_and_unbonded_atoms_are_inconclusive():
    from ase.cluster import Icosahedron

    argon = Icosahedron("Ar", noshells=2, latticeconstant=5.26)  # nearest neighbours 3.7 A = 1.75 x 2 r_cov
    frame = System(numbers=argon.numbers, positions=argon.positions)
    ev = check_units([frame, frame.replace(positions=frame.positions / BOHR)])
    assert ev["bond_length_ratio"] is None and "noble-gas" in ev["bond_length_note"]
    rng = np.random.default_rng(3)
    gas = System(numbers=np.full(20, 6), positions=rng.uniform(0, 60, size=(20, 3)))  # isolated C atoms
    ev = check_units([gas])
    assert ev["bond_length_ratio"] > 2.6 and "not bonded" in ev["bond_length_note"]


def test_rms_force_above_50_raises_on_its_own(tmp_path):
    """The former check_force_scale bound: even two frames raise when the RMS force exceeds 50 eV/A."""
    systems = _water(2, force_scale=100.0)
    with pytest.raises(UnitError, match=r"RMS force is .* eV/Angstrom after converting from eV/Angstrom"):
        check_units(systems, ("eV", "Angstrom"), source="two_frames.npz")
    assert data.MAX_RMS_FORCE == 50.0


def test_check_is_fast():
    """Well under 0.2 s on 2,500 frames (measured 20-40 ms of CPU time)."""
    xtb = load(shipped_path("ac_ala3_nhme_gfn2xtb.npz"), check_units=False)[:2500]
    best = np.inf
    for _ in range(3):
        t0 = time.process_time()
        unit_evidence(xtb)
        best = min(best, time.process_time() - t0)
    assert best < 0.2


# ---------------------------------------------------------------- every file of ../shared/data

ONE_PER_MOLECULE = [f"rmd17/rmd17_{m}_train_01.npz" for m in
                    ("aspirin", "benzene", "ethanol", "malonaldehyde", "naphthalene", "salicylic", "toluene", "uracil")]
OTHER_FILES = {
    "md17_ethanol_trajectory/md17_ethanol_2000.npz": {},
    "md22_ac_ala3_nhme/md22_Ac-Ala3-NHMe_5frames.xyz": {},
    "md22_ac_ala3_nhme/md22_Ac-Ala3-NHMe_disp_100frames.extxyz": {},
    "periodic/li3po4_192atoms_50frames.extxyz": {},
    "periodic/water_192atoms_400frames.npz": {"energy_unit": "eV"},
    "qm7x/qm7x_226.npz": {},
    "qm7x/qm7x_250_small.npz": {"energy_unit": "eV"},
    "geometries/at-at.xyz": {},
    "geometries/buckyball_catcher.xyz": {},
    "geometries/dha.xyz": {},
}
SHARED = {**{f: {} for f in ONE_PER_MOLECULE}, **OTHER_FILES}
TRUE_UNIT = {"kcal/mol as eV": "kcal/mol", "eV as kcal/mol": "eV", "Hartree as eV": "Hartree",
             "Ha, Ha/Bohr as eV, eV/A": "Hartree", "Bohr as Angstrom": "Bohr"}
_LOADED: dict = {}


def _load_shared(root: Path, rel: str):
    if rel not in _LOADED:
        _LOADED[rel] = load(root / rel, **SHARED.get(rel, {}))  # the check runs: a false alarm fails here
    return _LOADED[rel]


def _assert_every_relabelling_raises(ds):
    units = (ds.file_units["energy"], ds.file_units["length"])
    labelled = any(s.forces is not None for s in ds)
    checked = 0
    for label, *_ in RELABELLINGS[1:]:
        if label != "Bohr as Angstrom" and not labelled:
            continue  # energy relabellings apply to files with forces
        systems, declared = relabel(ds.systems, units, label)
        unit = TRUE_UNIT[label]
        with pytest.raises(UnitError, match=re.escape(f"_unit={unit!r}")):
            check_units(systems, declared, source=f"{ds.source} ({label})")
        checked += 1
    return checked


@pytest.mark.parametrize("rel", sorted(SHARED))
def test_shared_file_correct_and_relabelled(shared_data, rel):
    ds = _load_shared(shared_data, rel)
    ev = unit_evidence(ds)
    assert ev["length_verdict"] is None and ev["energy_verdict"] is None
    assert _assert_every_relabelling_raises(ds) >= 1


def test_issue_rmd17_ethanol_kcal_declared_as_ev(shared_data, tmp_path):
    """The mistake of issue 17 item 7: rMD17 ethanol numbers (kcal/mol) declared as eV. Before this check it
    loaded with an RMS force of 22.5 'eV/A' and E = -97,078 'eV'."""
    raw = np.load(shared_data / "rmd17/rmd17_ethanol_train_01.npz")
    bare = tmp_path / "ethanol_from_rmd17.npz"
    np.savez(bare, R=raw["coords"], z=raw["nuclear_charges"], E=raw["energies"], F=raw["forces"])
    with pytest.raises(UnitError, match=r"probably in kcal/mol \(the absolute energies match that unit\)"):
        load(bare, energy_unit="eV")
    declared = tmp_path / "ethanol_sgdml.npz"
    np.savez(declared, R=raw["coords"], z=raw["nuclear_charges"], E=raw["energies"], F=raw["forces"],
             e_unit=np.array("eV"), r_unit=np.array("Ang"))
    with pytest.raises(UnitError, match=re.escape("energy_unit='kcal/mol'")):
        load(declared)
    assert len(load(bare, energy_unit="kcal/mol")) == 1000


@pytest.mark.parametrize("rel, wrong, names", [
    ("periodic/water_192atoms_400frames.npz", {"energy_unit": "kcal/mol"}, "energy_unit='eV'"),
    ("periodic/li3po4_192atoms_50frames.extxyz", {"energy_unit": "kcal/mol"}, "energy_unit='eV'"),
    ("qm7x/qm7x_250_small.npz", {"energy_unit": "kcal/mol"}, "energy_unit='eV'"),
    ("md22_ac_ala3_nhme/md22_Ac-Ala3-NHMe_5frames.xyz", {"format": "ase"}, "energy_unit='kcal/mol'"),
])
def test_shared_files_read_with_a_wrong_unit_keyword(shared_data, rel, wrong, names):
    """File-level mistakes through the readers: a wrong energy_unit= raises naming the right one."""
    with pytest.raises(UnitError, match=re.escape(names)):
        load(shared_data / rel, **wrong)


@pytest.mark.slow
def test_full_sweep_every_shared_file(shared_data):
    """All 80 rMD17 files and every other file: correct labels never raise, every relabelling raises."""
    paths = sorted(p for p in shared_data.rglob("*") if p.suffix in (".npz", ".xyz", ".extxyz"))
    assert len(paths) >= 90
    for path in paths:
        ds = load(path, **OTHER_FILES.get(str(path.relative_to(shared_data)), {}))
        _assert_every_relabelling_raises(ds)
