"""Fine-tuning: `fit` from a trained Potential, all parameters or the readout only, with test learning curves."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from so3krates_lab.model import Potential
from so3krates_lab.train import TrainConfig, fit
from so3krates_lab.train.fit import readout_mask
from test_train import CONFIG, toy_dataset


@pytest.fixture(scope="module")
def data():
    return toy_dataset(30, seed=0), toy_dataset(8, seed=1), toy_dataset(8, seed=2)


@pytest.fixture(scope="module")
def pretrained_like(data):
    """A briefly trained small model standing in for a pretrained one (with a nonzero total charge setting, so
    that the settings' propagation is visible)."""
    train, valid, _ = data
    result = fit(train, valid, CONFIG, TrainConfig(max_steps=60, eval_every=30, batch_size=2), progress=False)
    return result.potential.with_charge(1.0, 0.0)


def _flat(tree):
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_readout_only_changes_only_the_readout(data, pretrained_like):
    train, valid, test = data
    before = _flat(pretrained_like.variables["params"])
    result = fit(train, valid, pretrained_like, TrainConfig(max_steps=40, eval_every=20, batch_size=2,
                                                           learning_rate=1e-3), trainable="readout",
                 test=test, progress=False)
    after = _flat(result.variables["params"])
    mask = _flat(readout_mask(pretrained_like.variables["params"]))
    assert set(after) == set(before) and any(mask.values()) and not all(mask.values())
    for key in before:
        if mask[key]:
            assert not np.array_equal(after[key], before[key]), key
        else:
            assert np.array_equal(after[key], before[key]), key  # frozen exactly
    # the test set is evaluated at every validation, beside (not instead of) the validation set
    assert all("test_force_mae_meV_A" in h and "force_mae_meV_A" in h for h in result.history)
    assert [h["step"] for h in result.history] == [20, 40]


def test_finetuning_all_starts_from_the_potential_and_keeps_its_settings(data, pretrained_like):
    train, valid, test = data
    start_params = _flat(pretrained_like.variables["params"])
    tc = TrainConfig(max_steps=20, eval_every=20, batch_size=2, learning_rate=1e-4)
    result = fit(train, valid, pretrained_like, tc, progress=False)
    pot = result.potential
    assert isinstance(pot, Potential) and pot.total_charge == 1.0 and pot.config == pretrained_like.config
    # training started from the pretrained parameters: Adam moves each by at most ~lr per step (a fresh
    # initialisation would differ by O(0.1))
    after = _flat(result.variables["params"])
    moved = max(np.abs(after[k] - start_params[k]).max() for k in start_params)
    assert 0 < moved < 1.2 * tc.max_steps * tc.learning_rate
    # the pretrained potential is still usable: training never consumed (donated) its arrays
    assert np.isfinite(pretrained_like.evaluate(train.systems[0]).energies).all()
    # element energies refit to the residuals: the mean training energy error is ~0 before any step
    zero = fit(train, valid, pretrained_like, TrainConfig(max_steps=0, eval_every=10, batch_size=2),
               progress=False).potential
    residual = np.mean(np.array([s.energy for s in train]) - zero.evaluate(list(train)).energies)
    assert abs(residual) < 1e-3


def test_bad_choices_are_named(data, pretrained_like):
    train, valid, _ = data
    with pytest.raises(ValueError, match=r"trainable='encoder' must be one of \('all', 'readout'\)"):
        fit(train, valid, pretrained_like, trainable="encoder")
    with pytest.raises(TypeError, match="config must be a So3kratesConfig or a Potential to fine-tune"):
        fit(train, valid, {"features": 8})
