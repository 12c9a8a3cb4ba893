"""Training: device batching equals host packing, loss goes down, no recompilation, resume = uninterrupted."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from physics import fast_energy_and_forces
from so3krates_lab import BasePotential
from so3krates_lab.data import builtin
from so3krates_lab.graph import neighbour_pairs, pack
from so3krates_lab.model import So3kratesConfig, load_checkpoint, make_energy_fn
from so3krates_lab.structures import Dataset, System
from so3krates_lab.train import TrainConfig, evaluate, fit, gather_batch, to_device

CONFIG = So3kratesConfig.preset("small", features=16, layers=1, heads=2, radial_basis=8)
ELEMENT_ENERGY = {1: -13.6, 6: -1029.5, 8: -2041.3}


def toy_dataset(n: int, seed: int = 0) -> Dataset:
    """Perturbed ethanol labelled by harmonic bonds (k = 10 eV/A^2) plus per-element energies."""
    ref = builtin.ethanol()
    d0 = np.linalg.norm(ref.positions[:, None] - ref.positions[None], axis=-1)
    bonds = np.argwhere(np.triu((d0 > 0) & (d0 < 1.6)))

    def energy(pos):
        d = jnp.linalg.norm(pos[bonds[:, 0]] - pos[bonds[:, 1]], axis=-1)
        return 10.0 * jnp.sum((d - d0[bonds[:, 0], bonds[:, 1]]) ** 2)

    grad = jax.jit(jax.value_and_grad(energy))
    offset = sum(ELEMENT_ENERGY[int(z)] for z in ref.numbers)
    rng = np.random.default_rng(seed)
    systems = []
    for _ in range(n):
        pos = ref.positions + 0.08 * rng.normal(size=ref.positions.shape)
        e, g = grad(jnp.asarray(pos))
        systems.append(System(numbers=ref.numbers, positions=pos, energy=float(e) + offset, forces=-np.asarray(g)))
    return Dataset.from_systems(systems, name="toy-ethanol")


@pytest.fixture(scope="module")
def data():
    return toy_dataset(40, seed=0), toy_dataset(10, seed=1)


def test_device_batch_equals_host_packing(data):
    train, _ = data
    config = CONFIG.replace(dtype="float64")
    device = to_device(train, config.cutoff, np.float64)
    idx = np.array([3, 0, 7])
    graph, labels = gather_batch(device, jnp.asarray(idx, jnp.int32))
    systems = [train[int(k)] for k in idx]
    host = pack(systems, [neighbour_pairs(s, config.cutoff) for s in systems], None, np.float64)
    from so3krates_lab.model import init_variables

    variables = init_variables(config, host)
    energy_fn = make_energy_fn(config)
    e_dev, f_dev = fast_energy_and_forces(energy_fn, variables, graph)
    e_host, f_host = fast_energy_and_forces(energy_fn, variables, host)
    np.testing.assert_allclose(np.asarray(e_dev), np.asarray(e_host)[:3], rtol=1e-12)
    real = np.asarray(graph.atom_mask)
    np.testing.assert_allclose(np.asarray(f_dev)[real], np.asarray(f_host)[:27], atol=1e-12)
    np.testing.assert_allclose(np.asarray(labels.energy), [s.energy for s in systems])
    np.testing.assert_allclose(np.asarray(labels.forces)[real], np.concatenate([s.forces for s in systems]))


def test_training_reduces_the_force_error(data, tmp_path):
    train, valid = data
    tc = TrainConfig(max_steps=120, eval_every=40, batch_size=4, learning_rate=3e-3, seed=0)
    result = fit(train, valid, CONFIG, tc, progress=False)
    first, last = result.history[0], result.history[-1]
    assert len(result.history) == 3 and result.step == 120
    assert last["force_mae_meV_A"] < 0.7 * first["force_mae_meV_A"], result.history
    # The returned variables are the best-validation ones and reproduce the best recorded error.
    best = min(result.history, key=lambda r: r["valid_loss"])
    again = evaluate(result.potential, to_device(valid, CONFIG.cutoff))
    assert result.best_step == best["step"]
    assert again["force_mae_meV_A"] == pytest.approx(best["force_mae_meV_A"], rel=1e-4)
    # it knows the elements it was trained on (H, C, O) and refuses others instead of guessing
    assert result.potential.info.data["elements"] == [1, 6, 8]
    with pytest.raises(ValueError, match="trained on H, C, O only; the structure has N"):
        result.potential.check_system(train[0].replace(numbers=np.where(train[0].numbers == 8, 7, train[0].numbers)))


def test_interrupted_run_resumes_to_the_same_result(data, tmp_path):
    train, valid = data
    tc = TrainConfig(max_steps=30, eval_every=10, batch_size=4, seed=3)
    straight = fit(train, valid, CONFIG, tc, checkpoint=tmp_path / "a.npz", progress=False)
    # Stop after 10 steps (as a kill after the step-10 checkpoint would), then resume to 30.
    fit(train, valid, CONFIG, TrainConfig(**{**tc.__dict__, "max_steps": 10}), checkpoint=tmp_path / "b.npz",
        progress=False)
    assert load_checkpoint(tmp_path / "b.npz").step == 10
    resumed = fit(train, valid, CONFIG, tc, checkpoint=tmp_path / "b.npz", progress=False)
    assert resumed.step == 30 and [r["step"] for r in resumed.history] == [10, 20, 30]
    for a, b in zip(jax.tree.leaves(straight.variables), jax.tree.leaves(resumed.variables)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    assert resumed.history[-1]["force_mae_meV_A"] == pytest.approx(straight.history[-1]["force_mae_meV_A"],
                                                                     rel=1e-4)


def test_callback_stops_training_and_keyboard_interrupt_saves(data, tmp_path):
    train, valid = data
    tc = TrainConfig(max_steps=50, eval_every=5, batch_size=4)
    stopped = fit(train, valid, CONFIG, tc, progress=False, callbacks=[lambda rec: rec["step"] >= 10])
    assert stopped.step == 10

    def interrupt(rec):
        if rec["step"] == 15:
            raise KeyboardInterrupt

    result = fit(train, valid, CONFIG, tc, checkpoint=tmp_path / "c.npz", progress=False, callbacks=[interrupt])
    assert result.interrupted and result.step == 15
    assert load_checkpoint(tmp_path / "c.npz").step == 15


def test_annealing_over_the_time_budget_shrinks_the_updates(data, monkeypatch):
    """TrainConfig(anneal_to=...) multiplies each update by anneal_to ** (elapsed / max_seconds). With a fake
    clock (1 s per reading, about 2 readings per step, budget 100 s) and anneal_to=1e-10 the rate falls by 10x
    every 5 steps, so 20 annealed steps move the parameters far less than 20 plain ones; anneal_to=1 changes
    nothing at all."""
    import importlib
    import types

    fit_module = importlib.import_module("so3krates_lab.train.fit")
    clock = iter(range(10**6))
    monkeypatch.setattr(fit_module, "time", types.SimpleNamespace(perf_counter=lambda: float(next(clock))))
    train, valid = data
    base = dict(max_steps=20, eval_every=20, batch_size=4, learning_rate=3e-3, seed=0, max_seconds=100.0)
    start = fit(train, valid, CONFIG, TrainConfig(**{**base, "max_steps": 0}), progress=False).variables["params"]

    def moved(**kw):
        result = fit(train, valid, CONFIG, TrainConfig(**base, **kw), progress=False)
        assert result.step == 20  # the fake budget never runs out
        return result.variables["params"], sum(float(jnp.sum((a - b) ** 2)) for a, b in
                                              zip(jax.tree.leaves(result.variables["params"]), jax.tree.leaves(start)))

    plain, d_plain = moved()
    _, d_annealed = moved(anneal_to=1e-10)
    same, _ = moved(anneal_to=1.0)
    assert d_annealed < 0.2 * d_plain, (d_annealed, d_plain)
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(same)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="max_seconds"):
        TrainConfig(anneal_to=0.1)
    with pytest.raises(ValueError, match="anneal_to"):
        TrainConfig(anneal_to=0.0, max_seconds=10.0)


def test_the_train_step_compiles_once(data, monkeypatch):
    """Per-step cost is the compiled step: after warm-up nothing recompiles."""
    import sys

    fit_module = sys.modules["so3krates_lab.train.fit"]  # the package attribute `fit` is the function

    traces = []
    original = fit_module.energy_force_loss

    def counting(*args, **kw):
        traces.append(1)  # runs only while tracing
        return original(*args, **kw)

    monkeypatch.setattr(fit_module, "energy_force_loss", counting)
    train, valid = data
    fit(train, valid, CONFIG, TrainConfig(max_steps=25, eval_every=25, batch_size=4), progress=False)
    assert len(traces) == 1


def test_data_parallel_training_equals_single_device():
    """Two host CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=2) give the single-device result."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    here = Path(__file__).parent
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", PYTHONPATH=str(here))
    out = subprocess.run([sys.executable, str(here / "_data_parallel_worker.py")], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["devices_used"] == [1, 2]
    one, two = np.array(result["history"]["1"]), np.array(result["history"]["2"])
    assert one.shape == (2, 2)  # two validations, each (train loss, validation loss)
    # Forgetting to sum gradients over devices (each applying half a gradient) changes these at 1e-3.
    np.testing.assert_allclose(two, one, rtol=1e-6)


def test_cli_trains_resumes_and_reports(tmp_path, capsys):
    """The command line over fit: split file, checkpoints, a per-element error report and a parity plot."""
    import json

    from so3krates_lab.reference import write_npz
    from so3krates_lab.cli import main

    ds = toy_dataset(16, seed=3)
    arrays = {"numbers": ds[0].numbers, "positions": np.stack([s.positions for s in ds]),
              "energy": ds.energies, "forces": np.stack([s.forces for s in ds])}
    write_npz(tmp_path / "toy.npz", arrays, {"method": "harmonic bonds"})
    cfg = tmp_path / "config.json"
    cfg.write_text(CONFIG.to_json())
    argv = [str(tmp_path / "toy.npz"), "--out", str(tmp_path / "run"), "--config", str(cfg), "--n-train", "10",
            "--n-valid", "3", "--steps", "4", "--eval-every", "2", "--batch-size", "2", "--no-progress"]
    assert main(argv) == 0
    report = json.loads((tmp_path / "run" / "test_errors.json").read_text())
    assert report["n_structures"] == 3 and report["steps"] == 4
    assert set(report["element_force_mae_meV_A"]) == {"C", "H", "O"}
    assert report["force_mae_meV_A"] > 0
    assert (tmp_path / "run" / "parity.html").stat().st_size > 10_000
    ckpt = load_checkpoint(tmp_path / "run" / "model.npz")
    assert ckpt.metadata["data_sha256"] and len(ckpt.metadata["split"]["train"]) == 10
    # Same command with more steps resumes from step 4 (and keeps the saved split).
    assert main(argv[:-5] + ["--steps", "6", "--eval-every", "2", "--batch-size", "2", "--no-progress"]) == 0
    assert load_checkpoint(tmp_path / "run" / "model.npz").step == 6
    assert "F H" in capsys.readouterr().out


@struct.dataclass
class Trap(BasePotential):
    """E = k_scale * 0.5 k sum |r|^2 (forces -k_scale k r) plus optional per-element energies: a potential with a
    known answer. k_scale and elements (the element energies) are leaves; k, cutoff and dtype are static."""

    k_scale: float = 1.0
    elements: jax.Array | None = None  # (119,) eV, or None for no element energies
    k: float = struct.field(pytree_node=False, default=2.0)
    cutoff: float = struct.field(pytree_node=False, default=5.0)
    dtype: str = struct.field(pytree_node=False, default="float64")

    def energy(self, graph):
        per_atom = self.k_scale * 0.5 * self.k * jnp.sum(graph.positions**2, axis=-1)
        if self.elements is not None:
            per_atom = per_atom + self.elements[graph.numbers]
        per_atom = jnp.where(graph.atom_mask, per_atom, 0.0)
        return jax.ops.segment_sum(per_atom, graph.atom_graph, num_segments=graph.graph_mask.shape[0])

    # what refit_element_energies uses, as on the model's Potential
    @property
    def element_energy(self) -> np.ndarray:
        return np.array(self.elements, np.float64)

    def with_constants(self, element_energy=None, energy_scale=None):
        assert energy_scale is None
        return self.replace(elements=jnp.asarray(element_energy, jnp.float64))


def test_error_report_matches_hand_computed_errors():
    """error_report with a known analytic potential E = 0.5 k sum |r|^2 (forces -k r) against shifted labels."""
    from so3krates_lab.train import error_report, error_table
    from so3krates_lab.widgets import parity_plot

    k = 2.0
    potential = Trap(k=k)

    rng = np.random.default_rng(0)
    ref = builtin.ethanol()
    systems, e_off, f_off = [], [], []
    for i in range(5):
        pos = ref.positions + 0.1 * rng.normal(size=ref.positions.shape)
        de, dfs = 0.01 * (i - 2), 0.02 * rng.normal(size=pos.shape)  # label = exact - offset
        systems.append(System(numbers=ref.numbers, positions=pos, energy=0.5 * k * np.sum(pos**2) - de,
                              forces=-k * pos - dfs))
        e_off.append(de)
        f_off.append(dfs)
    report = error_report(potential, Dataset.from_systems(systems), batch_size=2)
    np.testing.assert_allclose(report.energy_error.values, 1e3 * np.array(e_off), atol=1e-8)
    f_err = 1e3 * np.concatenate([f.reshape(-1) for f in f_off])
    assert report.attrs["force_mae_meV_A"] == pytest.approx(np.mean(np.abs(f_err)))
    assert report.attrs["energy_rmse_meV"] == pytest.approx(1e3 * np.sqrt(np.mean(np.square(e_off))))
    hydrogen = np.concatenate([np.repeat(ref.numbers == 1, 3)] * 5)
    assert float(report.element_force_mae.sel(element="H")) == pytest.approx(np.mean(np.abs(f_err[hydrogen])))
    assert list(report.element.values) == ["H", "C", "O"]
    np.testing.assert_allclose(report.force_mae.values[1], np.mean(np.abs(1e3 * f_off[1])))
    assert "F O" in error_table(report)
    # refitting element energies on these structures removes the mean energy error, forces untouched
    from so3krates_lab.train import refit_element_energies

    # the analytic energy plus (wrong) element energies: a constant offset of 14 meV per ethanol to remove
    shifted = Trap(k=k, elements=jnp.zeros(119, jnp.float64).at[1].set(0.003).at[6].set(-0.002))
    data = Dataset.from_systems(systems)
    assert float(error_report(shifted, data).energy_error.mean()) == pytest.approx(14.0)
    refit = refit_element_energies(shifted, data)
    assert isinstance(refit, Trap)
    after = error_report(refit, data)
    assert abs(float(after.energy_error.mean())) < 1e-6
    np.testing.assert_allclose(after.energy_error.values, report.energy_error.values
                               - report.energy_error.values.mean(), atol=1e-6)
    np.testing.assert_allclose(after.force_pred.values, report.force_pred.values)
    assert len(parity_plot(report).data) == 1 + 3 + 2  # energy, one trace per element, two diagonals


def test_predicting_again_compiles_nothing():
    """A second evaluation with another potential of the same type and settings (other leaves) and the same batch
    shape reuses the compiled batch function."""
    from so3krates_lab.train import evaluation

    data = toy_dataset(6)
    compiled = evaluation._batch_predictor(3, to_device(data, 5.0, np.float64).numbers.shape[1])
    before = compiled._cache_size()  # the cache is shared by the whole session: count what this test adds
    first = evaluation.predict(Trap(k_scale=1.0), data, batch_size=3)
    sizes = compiled._cache_size()
    again = evaluation.predict(Trap(k_scale=2.0), data, batch_size=3)
    assert compiled._cache_size() == sizes == before + 1
    np.testing.assert_allclose(again[0], 2.0 * first[0])
