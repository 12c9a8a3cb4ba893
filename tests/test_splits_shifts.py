"""Data splits (reproducible, disjoint, saved atomically) and per-element reference energies."""

import json

import numpy as np
import pytest

from so3krates_lab.data import (
    Split,
    element_energy_sum,
    fit_element_energies,
    random_split,
    read_padded_npz,
    read_rmd17,
)
from so3krates_lab.structures import Dataset, System


def toy_dataset(n=10, sha="abc123"):
    systems = [System(numbers=np.array([1, 1]), positions=np.array([[0.0, 0, 0], [0.74, 0, 0]]), energy=-float(k))
               for k in range(n)]
    return Dataset(systems=tuple(systems), name="toy", sha256=sha)


# ---------------------------------------------------------------- splits


def test_split_reproducible_and_disjoint():
    a = random_split(1000, 600, 200, seed=3)
    b = random_split(1000, 600, 200, seed=3)
    c = random_split(1000, 600, 200, seed=4)
    for name in ("train", "valid", "test"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.train, c.train)
    assert (len(a.train), len(a.valid), len(a.test)) == (600, 200, 200)
    union = np.concatenate([a.train, a.valid, a.test])
    np.testing.assert_array_equal(np.sort(union), np.arange(1000))
    assert len(random_split(1000, 600, 200, n_test=50).test) == 50


def test_split_golden_values():
    # np.random.default_rng(0).permutation(10) = [4 6 2 7 3 5 9 0 8 1] (PCG64, platform independent)
    s = random_split(10, 4, 3, seed=0)
    assert s.train.tolist() == [2, 4, 6, 7]
    assert s.valid.tolist() == [3, 5, 9]
    assert s.test.tolist() == [0, 1, 8]


@pytest.mark.parametrize("args, message", [
    ((10, 8, 3), "exceeds n_total=10"),
    ((10, 5, 3, 5), "exceeds n_total=10"),
    ((10, -1, 3), ">= 0"),
    ((10, 2, 3, -1), ">= 0"),
])
def test_split_size_errors(args, message):
    with pytest.raises(ValueError, match=message):
        random_split(*args)


def test_split_rejects_overlap_and_out_of_range():
    with pytest.raises(ValueError, match="disjoint"):
        Split(train=np.array([0, 1]), valid=np.array([1]), test=np.array([2]), seed=0, n_total=5)
    with pytest.raises(ValueError, match=r"in \[0, 5\)"):
        Split(train=np.array([0, 5]), valid=np.array([1]), test=np.array([2]), seed=0, n_total=5)


def test_split_save_load_roundtrip(tmp_path):
    s = random_split(50, 30, 10, seed=7, dataset_sha256="abc123")
    path = tmp_path / "split.json"
    s.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["split.json"]  # no temporary file left behind
    assert path.stat().st_mode & 0o777 == 0o644  # group-readable (mkstemp alone makes 0600)
    assert json.loads(path.read_text())["seed"] == 7
    back = Split.load(path)
    for name in ("train", "valid", "test"):
        np.testing.assert_array_equal(getattr(back, name), getattr(s, name))
    assert (back.seed, back.n_total, back.dataset_sha256) == (7, 50, "abc123")
    s2 = random_split(50, 20, 10, seed=8)
    s2.save(path)  # overwrite in place
    assert len(Split.load(path).train) == 20
    (tmp_path / "other.json").write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="not a split file"):
        Split.load(tmp_path / "other.json")


def test_split_apply_checks_dataset():
    ds = toy_dataset(10)
    s = random_split(10, 5, 3, seed=1, dataset_sha256="abc123")
    train, valid, test = s.apply(ds)
    assert (len(train), len(valid), len(test)) == (5, 3, 2)
    assert sorted(-train.energies) == s.train.tolist()
    assert train.sha256 == "abc123"
    with pytest.raises(ValueError, match="sha256 abc123"):
        s.apply(toy_dataset(10, sha="fff000"))
    random_split(10, 5, 3, seed=1).apply(toy_dataset(10, sha="fff000"))  # no recorded hash: no check
    with pytest.raises(ValueError, match="split is for 10 frames"):
        s.apply(toy_dataset(12))


# ---------------------------------------------------------------- per-element energies


def test_fit_recovers_known_element_energies():
    truth = np.zeros(119)
    truth[[1, 6, 8]] = [-13.6, -1029.5, -2041.3]
    formulas = [[1, 1], [8, 1, 1], [6, 1, 1, 1, 1], [6, 8, 8], [6, 8]]
    systems = []
    for numbers in formulas * 2:
        positions = np.arange(len(numbers))[:, None] * np.array([1.1, 0.0, 0.0])
        systems.append(System(numbers=np.array(numbers), positions=positions,
                              energy=element_energy_sum(numbers, truth)))
    fitted = fit_element_energies(Dataset(systems=tuple(systems)))
    assert fitted.shape == (119,)
    np.testing.assert_allclose(fitted, truth, atol=1e-8)
    assert element_energy_sum([8, 1, 1, 0, 0], fitted) == pytest.approx(-2041.3 - 27.2)  # padding adds 0
    ridged = fit_element_energies(Dataset(systems=tuple(systems)), ridge=1.0)
    assert np.linalg.norm(ridged) < np.linalg.norm(fitted)
    with pytest.raises(ValueError, match="ridge"):
        fit_element_energies(Dataset(systems=tuple(systems)), ridge=-1.0)
    with pytest.raises(ValueError, match=r"shape \(119,\)"):
        element_energy_sum([1], truth[:10])


def test_fit_single_composition_rmd17(shared_data):
    """One molecule: only the total shift is determined; minimum norm spreads it e[Z] ~ n_Z."""
    ds = read_rmd17(shared_data / "rmd17/rmd17_ethanol_train_01.npz")
    e = fit_element_energies(ds)
    shift = element_energy_sum(ds[0].numbers, e)
    residual = ds.energies - shift
    assert abs(residual.mean()) < 1e-6 * abs(ds.energies.mean())
    assert abs(residual.mean()) < 1e-3  # eV
    assert e[1] / e[6] == pytest.approx(6 / 2)  # C2H6O
    assert np.count_nonzero(e) == 3


def test_fit_many_compositions_qm7x(shared_data):
    ds = read_padded_npz(shared_data / "qm7x/qm7x_250_small.npz", energy_unit="eV")
    e = fit_element_energies(ds)
    residual = ds.energies - np.array([element_energy_sum(s.numbers, e) for s in ds])
    assert np.std(ds.energies) > 1000.0  # raw totals differ by molecule size (thousands of eV)
    assert np.std(residual) < 0.01 * np.std(ds.energies)
    assert -20.0 < e[1] < -10.0  # a hydrogen atom near -13.6 eV
