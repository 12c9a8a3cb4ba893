"""Run by test_train.py in a subprocess with two host CPU devices (XLA_FLAGS must be set before JAX starts).

Trains the same toy model on the same batches with 1 and with 2 devices and prints the training and validation
loss histories as JSON. (Parameters are not compared entry by entry: Adam divides by the root of the squared
gradient, so entries whose gradient is zero up to rounding move by about the learning rate either way.)
"""

import json
import sys

import jax

jax.config.update("jax_enable_x64", True)


from test_train import CONFIG, toy_dataset  # noqa: E402
from so3krates_lab.train import TrainConfig, fit  # noqa: E402

assert len(jax.local_devices()) == 2, jax.local_devices()
train, valid = toy_dataset(12, seed=0), toy_dataset(4, seed=1)
config = CONFIG.replace(dtype="float64")
runs = {}
for n in (1, 2):
    tc = TrainConfig(max_steps=6, batch_size=4, eval_every=3, seed=5, devices=n)
    runs[n] = fit(train, valid, config, tc, progress=False)
json.dump({"history": {n: [[h["train_loss"], h["valid_loss"]] for h in runs[n].history] for n in (1, 2)},
           "devices_used": [len(jax.tree.leaves(runs[n].variables["params"])[0].sharding.device_set) for n in (1, 2)]},
          sys.stdout)
