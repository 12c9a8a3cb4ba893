"""Fit a SO3krates model to energies and forces: one function for notebooks and terminals alike.

    result = fit(train, valid, So3kratesConfig.preset("default"), TrainConfig(max_steps=20_000),
                 checkpoint="runs/ethanol.npz")

Determinism and resumption: the batch order of epoch k is a permutation drawn from (seed, k), so step s
always sees the same batch. Every `eval_every` steps the run validates and saves `<checkpoint>` (parameters,
optimiser state, step, history; atomic) and, when validation improved, `<checkpoint stem>_best.npz`.
Calling `fit` again with the same checkpoint path resumes from the last save and reaches the same result as an
uninterrupted run (up to floating-point noise). Ctrl-C (or SIGTERM) saves after the step it lands in and returns
the result so far (interrupted=True); a second Ctrl-C stops at once (`so3krates_lab.interrupts`).
One run per checkpoint: `fit` holds the checkpoint's writer lock (`<checkpoint>.lock`, `so3krates_lab.fileio`)
from start to end, so a second `fit` (or `so3krates-train`) on the same path, in another process, stops at once
with `StoreBusyError` naming the running one instead of overwriting its checkpoints.

Data parallelism: with several local devices (GPUs, or CPU devices made with
XLA_FLAGS=--xla_force_host_platform_device_count=N) each training batch is split evenly over a one-axis mesh
("data"); every device gathers and differentiates its own share of the structures, the gradients are summed
across devices, and every device applies the same optimiser update. The data set and parameters are replicated.
With one device the same code runs on a mesh of one. The loss is normalised by the counts of the whole global
batch, so the result equals single-device training on the same batches up to summation order.

Several processes (`so3krates_lab.distributed.initialize`, on every process, before training): the mesh spans
the devices of every process, so each global batch is split over all of them and the gradients are summed
across processes. Every process must pass the same data and settings (checked: a mismatch raises before the
first step). Process 0 alone writes the checkpoints and shows progress; every process reads the checkpoint to
resume, with the same process count. Stops are agreed: a Ctrl-C, SIGTERM or time budget that ends one process's
run ends every process's after the same step. anneal_to is not available across processes (each process's clock
would give its own learning rate).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from pathlib import Path
from typing import Callable, Sequence

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax

from ..data import fit_element_energies
from ..fileio import holds_writer_lock
from ..model import (
    Potential, So3kratesConfig, compiler_options, init_variables, load_checkpoint, restore_opt_state, save_checkpoint,
    with_constants,
)
from ..interrupts import deferred_interrupts
from ..memory import ensure_tuned
from ..potential_base import float_dtype
from ..structures import Dataset
from .device_data import DeviceData, gather_batch, to_device
from .loss import absolute_errors, energy_force_loss, label_counts

DATA_AXIS = "data"


def default_batch_size(n_train: int) -> int:
    """The reference code's rule: 1 below 500 structures, 5 below 1000, 10 below 10,000, then 100."""
    return 1 if n_train < 500 else 5 if n_train < 1000 else 10 if n_train < 10_000 else 100


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (shared spec section 5 defaults).

    learning_rate with exponential decay: lr * decay_rate ** (step / decay_steps); gradients clipped to
    global norm clip_norm; Adam or AMSGrad. batch_size None follows `default_batch_size`. Validation every
    eval_every steps; early stopping after `patience` validations without improvement (None: never).
    max_seconds: stop (after a final validation) once this much wall time has passed in this call.
    anneal_to: with max_seconds, also decay the learning rate over the time budget: every update is multiplied
    by anneal_to ** (elapsed / max_seconds), so the rate ends at anneal_to times its scheduled value when the
    budget runs out (a short run then ends at a small rate instead of mid-descent). Which step sees which rate
    depends on the machine's speed, so such a run is not reproducible step for step; None: no annealing.
    """

    max_steps: int = 10_000
    max_seconds: float | None = None
    learning_rate: float = 1e-3
    decay_rate: float = 0.1
    decay_steps: int = 100_000
    clip_norm: float = 10.0
    amsgrad: bool = False
    batch_size: int | None = None
    eval_every: int = 100
    eval_batch_size: int = 50
    patience: int | None = None
    energy_weight: float = 0.01
    force_weight: float = 0.99
    seed: int = 0
    devices: int | None = None  # how many local devices to train on, per process (None: all of them)
    anneal_to: float | None = None

    def __post_init__(self):
        if self.anneal_to is not None:
            if not 0 < self.anneal_to <= 1:
                raise ValueError(f"anneal_to={self.anneal_to} must be in (0, 1]")
            if self.max_seconds is None:
                raise ValueError("anneal_to decays the learning rate over the time budget: set max_seconds too")

    def optimizer(self) -> optax.GradientTransformation:
        """The optax optimiser these settings describe: clipping, then Adam or AMSGrad on the decayed rate."""
        schedule = optax.exponential_decay(self.learning_rate, self.decay_steps, self.decay_rate)
        adam = optax.amsgrad(schedule) if self.amsgrad else optax.adam(schedule)
        return optax.chain(optax.clip_by_global_norm(self.clip_norm), adam)


@dataclasses.dataclass
class FitResult:
    """What `fit` returns: the best-validation `variables` of a model of `config`, the validation `history`,
    the last `step` and the `best_step`, whether the run was `interrupted` (Ctrl-C or SIGTERM), its `metadata`;
    `potential` is the best model as a `Potential`."""

    variables: dict  # the best-validation variables
    config: So3kratesConfig
    history: list[dict]  # one entry per validation: step, train loss, validation MAE/RMSE, seconds
    step: int
    best_step: int
    interrupted: bool = False
    metadata: dict = dataclasses.field(default_factory=dict)
    template: Potential | None = None  # the potential the run trained (its charge settings), without metadata

    @property
    def potential(self) -> Potential:
        """The best-validation model as a `Potential` (with the run's metadata; a fine-tuned model keeps the
        pretrained one's metadata under it and its total charge)."""
        meta = dict(self.metadata, best_step=self.best_step)
        if self.template is None:
            return Potential.create(self.config, self.variables, meta)
        return Potential.create(self.config, self.variables, {**self.template.metadata, **meta}).with_charge(
            self.template.total_charge, self.template.unpaired_electrons)


def _init_variables(config, train: Dataset, data: DeviceData, seed: int) -> dict:
    graph, _ = gather_batch(data, jnp.zeros(1, jnp.int32))
    variables = init_variables(config, graph, seed=seed)
    forces = np.concatenate([s.forces for s in train])
    # Element energies by least squares; the atomic-energy scale is the RMS force component times 1 A.
    return with_constants(variables, element_energy=fit_element_energies(train),
                          energy_scale=float(np.sqrt(np.mean(forces**2))))


def _errors_step(potential, data, idx, weights):
    return absolute_errors(potential, *gather_batch(data, idx), weights)


@functools.cache
def _compiled_errors_step():
    return jax.jit(_errors_step, compiler_options=compiler_options())


def evaluate(potential, data: DeviceData, batch_size: int = 50) -> dict:
    """Energy MAE/RMSE (meV) and force MAE/RMSE (meV/A) of a potential over all of `data` (device-resident,
    `to_device(dataset, potential.cutoff, ...)`). Compiled once per potential type, settings and batch shape."""
    step = _compiled_errors_step()
    n = data.size
    batch_size = min(batch_size, n)
    sums = None
    for start in range(0, n, batch_size):
        idx = np.arange(start, start + batch_size)
        weights = (idx < n).astype(np.float32)
        part = step(potential, data, jnp.asarray(np.minimum(idx, n - 1), jnp.int32), jnp.asarray(weights))
        sums = part if sums is None else jax.tree.map(jnp.add, sums, part)
    s = {k: float(v) for k, v in sums.items()}
    return {
        "energy_mae_meV": 1e3 * s["energy_abs"] / s["n_structures"],
        "energy_rmse_meV": 1e3 * math.sqrt(s["energy_sq"] / s["n_structures"]),
        "force_mae_meV_A": 1e3 * s["force_abs"] / s["n_components"],
        "force_rmse_meV_A": 1e3 * math.sqrt(s["force_sq"] / s["n_components"]),
    }


def data_mesh(devices: int | None = None) -> jax.sharding.Mesh:
    """A one-axis ("data") mesh over the first `devices` local devices (None: all) of every process of the job
    (one process without `so3krates_lab.distributed.initialize`), ordered by process."""
    local = jax.local_devices()
    n = len(local) if devices is None else devices
    if not 1 <= n <= len(local):
        raise ValueError(f"devices={devices}: this process has {len(local)} local device(s)")
    if jax.process_count() == 1:
        return jax.sharding.Mesh(np.array(local[:n]), (DATA_AXIS,))
    chosen = [[d for d in jax.devices() if d.process_index == p][:n] for p in range(jax.process_count())]
    if any(len(c) < n for c in chosen):
        raise ValueError(f"devices={n} per process, but some process has fewer: "
                         f"{[len([d for d in jax.devices() if d.process_index == p]) for p in range(len(chosen))]}")
    return jax.sharding.Mesh(np.array([d for c in chosen for d in c]), (DATA_AXIS,))


def _same_on_every_process(what: str, *parts) -> None:
    """Raise ValueError on every process unless `parts` (data sets, settings) are the same on every process."""
    import hashlib

    from jax.experimental import multihost_utils

    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, Dataset):
            for s in part:
                for x in (s.numbers, s.positions, s.energy, s.forces):
                    digest.update(b"-" if x is None else np.ascontiguousarray(x).tobytes())
        else:  # settings by their repr, arrays (a pretrained model's variables) by their bytes
            for leaf in jax.tree.leaves(part):
                digest.update(np.ascontiguousarray(leaf).tobytes() if isinstance(leaf, np.ndarray)
                              else repr(leaf).encode())
    mine = np.frombuffer(digest.digest()[:8], np.uint32)
    every = np.asarray(multihost_utils.process_allgather(mine)).reshape(jax.process_count(), -1)
    if not (every == every[0]).all():
        differ = [p for p in range(len(every)) if not (every[p] == every[0]).all()]
        raise ValueError(f"the processes of this job were given different {what}: processes {differ} differ from "
                         "process 0; every process must load the same data with the same settings")


def _local(tree):
    """This process's copy of replicated (possibly multi-process) arrays, as single-device arrays."""
    return jax.tree.map(lambda x: x.addressable_data(0) if isinstance(x, jax.Array) else x, tree)


def _epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def _checkpoint_file(path: Path) -> Path:
    """The file save_checkpoint writes for `path` (".npz" appended if missing): the one fit locks."""
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


TRAINABLE = ("all", "readout")


def readout_mask(params) -> dict:
    """{parameter path: True} for the energy readout of a "params" tree (the atomic-energy MLP and, where the
    model has them, the per-element scales and shifts): what `fit(..., trainable="readout")` trains."""
    readout = ("readout_hidden", "readout_out", "element_scale", "element_shift")
    return {k: jax.tree.map(lambda _: k in readout, v) for k, v in params.items()}


@holds_writer_lock("checkpoint", _checkpoint_file, main_process_only=True)
def fit(
    train: Dataset,
    valid: Dataset,
    config: So3kratesConfig | Potential,
    train_config: TrainConfig = TrainConfig(),
    *,
    checkpoint: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
    callbacks: Sequence[Callable[[dict], bool | None]] = (),
    metadata: dict | None = None,
    trainable: str = "all",
    refit_element_energies: bool = True,
    test: Dataset | None = None,
) -> FitResult:
    """Train on `train`, validate on `valid`, keep the best-validation parameters.

    config: a `So3kratesConfig` trains a fresh model of it (random parameters from train_config.seed, element
    energies by least squares, the energy scale from the RMS force). A `Potential` (e.g.
    `so3krates_lab.pretrained.so3lr()`) fine-tunes it: training starts from its parameters, keeps its
    configuration, total charge and constants, and, with refit_element_energies, first shifts its element
    energies by the least-squares fit of the training energies' residuals (a pretrained model's energy zero
    is rarely the new data's). trainable: "all" parameters, or "readout" only (the atomic-energy MLP and the
    per-element scales and shifts; the representation stays as it was).
    test: a held-out set evaluated at every validation too (records gain "test_force_mae_meV_A" etc.), for
    learning curves; it never influences training or the choice of the best model.

    callbacks: called with each validation record; returning True stops training (a widget's stop button).
    metadata: stored in the checkpoints (e.g. data provenance: file hashes and split indices).
    checkpoint: saved to and resumed from (see the module docstring); another process training into the same
    path makes this call raise `so3krates_lab.fileio.StoreBusyError` before it does any work.
    Ctrl-C or SIGTERM (in the main thread) stops after the current step, saves the checkpoint and returns with
    `interrupted=True`; one that arrives while the data are prepared or the step compiles stops before the first
    step. A second Ctrl-C raises KeyboardInterrupt at once.
    """
    if trainable not in TRAINABLE:
        raise ValueError(f"trainable={trainable!r} must be one of {TRAINABLE}")
    start = None
    if isinstance(config, Potential):
        start, config = config, config.config
    elif not isinstance(config, So3kratesConfig):
        raise TypeError(f"config must be a So3kratesConfig or a Potential to fine-tune, got {type(config).__name__}")
    with deferred_interrupts() as interrupt:
        return _fit(train, valid, config, train_config, checkpoint=checkpoint, resume=resume, progress=progress,
                    callbacks=callbacks, metadata=metadata, interrupt=interrupt, start=start, trainable=trainable,
                    refit=refit_element_energies, test=test)


def _start_variables(start: Potential, train: Dataset, refit: bool) -> dict:
    """The pretrained variables, with the element energies shifted to the training energies when `refit`."""
    # copies: the training step donates its parameter buffers, which must not be the pretrained potential's own
    variables = jax.tree.map(lambda x: jnp.array(x, copy=True), start.variables)
    if not refit or any(s.energy is None for s in train):
        return variables
    residual = [s.replace(energy=s.energy - float(e)) for s, e in zip(train, start.evaluate(list(train)).energies)]
    shift = fit_element_energies(Dataset(tuple(residual), name=train.name))
    return with_constants(variables, element_energy=start.element_energy + np.asarray(shift))


def _fit(train, valid, config, train_config, *, checkpoint, resume, progress, callbacks, metadata,
         interrupt, start=None, trainable="all", refit=True, test=None) -> FitResult:
    ensure_tuned()
    # the elements the model knows (a fine-tuned one: its own and the new data's): Potential.check_system refuses
    # structures with others instead of predicting nonsense for them
    known = {int(z) for s in train for z in np.asarray(s.numbers)}
    if start is not None and start.info.data.get("elements"):
        known |= {int(z) for z in start.info.data["elements"]}
    metadata = {"elements": sorted(known), **(metadata or {})}
    tc = train_config
    batch_size = tc.batch_size or default_batch_size(len(train))
    if batch_size > len(train):
        raise ValueError(f"batch_size {batch_size} exceeds the {len(train)} training structures")
    mesh = data_mesh(tc.devices)
    n_devices = mesh.devices.size
    multi = jax.process_count() > 1  # this process is one of several (so3krates_lab.distributed)
    main = jax.process_index() == 0
    if batch_size % n_devices:
        raise ValueError(f"batch_size {batch_size} does not split evenly over {n_devices} devices; "
                         f"pick a multiple of {n_devices} or set TrainConfig(devices=...)")
    if multi:
        if tc.anneal_to is not None:
            raise ValueError("anneal_to follows each process's own clock, so processes would train with different "
                             "learning rates: leave it None when training across processes")
        _same_on_every_process("training, validation or test data, or settings", train, valid,
                               test if test is not None else "no test set", config, tc, trainable, refit,
                               None if start is None else jax.tree.map(np.asarray, start.variables))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(DATA_AXIS))
    dtype = float_dtype(config)
    train_local = to_device(train, config.cutoff, dtype)
    # the training set lives on every device of the mesh; validation and test stay on this process's own device
    # (each process evaluates the same model on them: the same numbers everywhere, no collectives)
    train_data = jax.device_put(jax.tree.map(np.asarray, train_local) if multi else train_local, replicated)
    place = (lambda d: d) if multi else (lambda d: jax.device_put(d, replicated))
    valid_data = place(to_device(valid, config.cutoff, dtype))
    test_data = None if test is None else place(to_device(test, config.cutoff, dtype))
    tx = tc.optimizer()
    if start is None:
        variables = _init_variables(config, train, train_local, tc.seed)
        template = Potential.create(config, variables)
    else:
        variables = _start_variables(start, train, refit)
        template = start
    for part in (train, valid) + (() if test is None else (test,)):
        for system in part:  # an element the model has never seen, a cell too small for its long-range terms
            template.check_system(system)
    if trainable == "readout":
        mask = readout_mask(variables["params"])
        tx = optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()},
                                   jax.tree.map(lambda m: "train" if m else "freeze", mask))
    opt_state = tx.init(variables["params"])
    step, history, best = 0, [], {"loss": math.inf, "step": 0, "variables": variables}
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    if checkpoint is not None and checkpoint.suffix != ".npz":  # the file save_checkpoint writes
        checkpoint = checkpoint.with_name(checkpoint.name + ".npz")
    best_path = checkpoint.with_name(checkpoint.stem + "_best.npz") if checkpoint else None
    if checkpoint is not None and resume and checkpoint.exists():
        saved = load_checkpoint(checkpoint)
        if saved.config != config:
            raise ValueError(f"{checkpoint} was trained with {saved.config}, not {config}; pass resume=False "
                             "(so3krates-train: --fresh) or another checkpoint path")
        variables = jax.tree.map(jnp.asarray, saved.variables)
        opt_state = restore_opt_state(opt_state, saved.opt_state_leaves)
        step, history = saved.step, list(saved.metadata.get("history", []))
        best_saved = load_checkpoint(best_path) if best_path.exists() else saved
        best = {"loss": saved.metadata.get("best_loss", math.inf), "step": saved.metadata.get("best_step", 0),
                "variables": jax.tree.map(jnp.asarray, best_saved.variables)}
    if multi:  # a process that found no checkpoint (no shared file system) would start over alone
        _same_on_every_process("checkpoints to resume from (every process must read the same checkpoint path, on a "
                               f"shared file system; this one is at step {step})", step)

    def local_step(params, opt_state, constants, data, indices, rate_factor, votes):
        # One device's share of the batch; sums over the mesh make loss and gradients those of the whole batch.
        # rate_factor scales the optimiser's updates (the learning rate: Adam's update is proportional to it).
        # votes: each device's (stop requested, out of time) flags; their sum tells every process the same.
        graph, labels = gather_batch(data, indices)
        counts = jax.lax.psum(jnp.stack(label_counts(graph)), DATA_AXIS)  # one all-reduce for both counts
        counts = (counts[0], counts[1])

        def loss_of(p):
            potential = template.replace(variables={"params": p, "constants": constants})
            return energy_force_loss(potential, graph, labels, tc.energy_weight, tc.force_weight, counts)

        (loss, parts), grads = jax.value_and_grad(loss_of, has_aux=True)(params)
        # One all-reduce of one flat buffer for loss, parts, gradients and votes: a collective has a fixed cost
        # (about 3 ms with Gloo between CPU processes), so one per parameter array (30 for the default model)
        # cost 10 times the step itself (benchmarks/distributed_training.py).
        flat, unflatten = jax.flatten_util.ravel_pytree((loss, parts, grads, votes.sum(0).astype(loss.dtype)))
        loss, parts, grads, agreed = unflatten(jax.lax.psum(flat, DATA_AXIS))
        updates, opt_state = tx.update(grads, opt_state, params)
        updates = jax.tree.map(lambda u: u * rate_factor.astype(u.dtype), updates)
        return optax.apply_updates(params, updates), opt_state, loss, parts, agreed

    rep, shard = jax.sharding.PartitionSpec(), jax.sharding.PartitionSpec(DATA_AXIS)
    # check_vma=False: the step sums what must be summed itself (one flat psum). With the check on, JAX marks the
    # replicated parameters as varying where they meet per-device data and its backward pass adds a collective
    # per parameter array: 102 against 9.6 ms per toy-model step across two CPU processes (the results agree).
    train_step = jax.jit(jax.shard_map(local_step, mesh=mesh, check_vma=False,
                                       in_specs=(rep, rep, rep, rep, shard, rep, shard),
                                       out_specs=(rep, rep, rep, rep, rep)),
                         donate_argnums=(0, 1), compiler_options=compiler_options())
    to_mesh = (lambda tree: jax.device_put(jax.tree.map(np.asarray, tree), replicated)) if multi else \
        (lambda tree: jax.device_put(tree, replicated))
    params, opt_state = to_mesh((variables["params"], opt_state))
    variables = {"params": params, "constants": to_mesh(variables["constants"])}
    n_local = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)

    per_device = batch_size // n_devices
    mine = [k for k, d in enumerate(mesh.devices.flat) if d.process_index == jax.process_index()]

    def batch_indices(global_batch):
        """The global batch's structure indices, split over the mesh. Several processes: each passes only its
        devices' share (a device_put of the whole batch would first check, in a collective, that every process
        passed the same, at every step)."""
        if not multi:
            return jax.device_put(global_batch, split)
        local = np.concatenate([global_batch[k * per_device:(k + 1) * per_device] for k in mine])
        return jax.make_array_from_process_local_data(split, local, (batch_size,))

    def votes(*flags):
        """This process's stop flags as the step's per-device input (the first local device carries them)."""
        local = np.zeros((n_local, len(flags)), np.int32)
        local[0] = flags
        return jax.make_array_from_process_local_data(split, local) if multi else jax.device_put(local, split)

    no_votes = votes(False, False)  # one process decides on its own flags: the same input at every step

    def save(current):
        if checkpoint is None or not main:
            return
        meta = dict(metadata or {}, history=history, best_loss=best["loss"], best_step=best["step"],
                    train_config=dataclasses.asdict(tc), batch_size=batch_size)
        save_checkpoint(checkpoint, config, current, step=step, opt_state=opt_state, metadata=meta)

    steps_per_epoch = len(train) // batch_size
    # With only a time budget the step count is open-ended: show a rate, not a misleading total.
    bar = _progress(progress and main, None if tc.max_seconds is not None and tc.max_steps >= 10**8 else tc.max_steps,
                    step)
    params, constants = variables["params"], variables["constants"]
    interrupted, stop, losses, t0 = False, False, [], time.perf_counter()
    try:
        while step < tc.max_steps and not stop:
            # (several processes: a stop that arrived before the first step is carried by the first step's votes)
            if interrupt.requested and not multi:  # arrived before the first step (while compiling): nothing to save
                interrupted = True
                break
            epoch, k = divmod(step, steps_per_epoch)
            order = _epoch_order(tc.seed, epoch, len(train))
            indices = batch_indices(np.asarray(order[k * batch_size:(k + 1) * batch_size], np.int32))
            rate_factor = 1.0 if tc.anneal_to is None else \
                tc.anneal_to ** min((time.perf_counter() - t0) / tc.max_seconds, 1.0)
            out_of_time = tc.max_seconds is not None and time.perf_counter() - t0 > tc.max_seconds
            params, opt_state, loss, _, agreed = train_step(params, opt_state, constants, train_data, indices,
                                                            np.float32(rate_factor),
                                                            votes(bool(interrupt.requested), out_of_time)
                                                            if multi else no_votes)
            step += 1
            losses.append(loss)
            bar.update(1)
            if multi:  # what every process decides alike: any process's stop request or time budget
                requested, out_of_time = (bool(v) for v in np.asarray(agreed) > 0)
            else:
                requested = bool(interrupt.requested)
                out_of_time = tc.max_seconds is not None and time.perf_counter() - t0 > tc.max_seconds
            if requested:  # Ctrl-C or SIGTERM during the step: params hold a complete step now
                interrupted = True
                save({"params": params, "constants": constants})
                break
            if step % tc.eval_every == 0 or step == tc.max_steps or out_of_time:
                current = {"params": params, "constants": constants}
                local = _local(current) if multi else current  # this process's copy, beside its valid_data
                metrics = evaluate(template.replace(variables=local), valid_data, tc.eval_batch_size)
                val_loss = (tc.energy_weight * (metrics["energy_rmse_meV"] / 1e3) ** 2
                            + tc.force_weight * (metrics["force_rmse_meV_A"] / 1e3) ** 2)
                record = {"step": step, "train_loss": float(np.mean([float(x) for x in losses])),
                          "valid_loss": val_loss, **metrics, "seconds": time.perf_counter() - t0}
                if test_data is not None:
                    tested = evaluate(template.replace(variables=local), test_data, tc.eval_batch_size)
                    record.update({f"test_{k}": v for k, v in tested.items()})
                losses = []
                history.append(record)
                if val_loss < best["loss"]:
                    best = {"loss": val_loss, "step": step, "variables": jax.tree.map(jnp.copy, local)}
                    if best_path is not None and main:
                        save_checkpoint(best_path, config, current, step=step, metadata=dict(metadata or {}))
                save(current)
                bar.set_postfix(loss=f"{record['train_loss']:.3g}", E_mae=f"{metrics['energy_mae_meV']:.3g}",
                                F_mae=f"{metrics['force_mae_meV_A']:.3g}", refresh=False)
                stop = any(bool(cb(record)) for cb in callbacks)
                if multi:  # a callback's stop on one process stops them all (the other checks agree already)
                    from ..distributed import agree_any

                    stop = agree_any(stop)
                if tc.patience is not None and (step - best["step"]) >= tc.patience * tc.eval_every:
                    stop = True
                stop = stop or out_of_time
    except KeyboardInterrupt:
        # raised in Python code (a callback, a notebook), or a second Ctrl-C that landed inside the step
        interrupted = True
        try:
            save({"params": params, "constants": constants})
        except RuntimeError:  # the step had taken (donated) the parameters: the last validation's checkpoint stands
            raise KeyboardInterrupt from None
    finally:
        bar.close()
    return FitResult(variables=best["variables"], config=config, history=history, step=step,
                     best_step=best["step"], interrupted=interrupted, metadata=dict(metadata or {}),
                     template=template)


def _progress(enabled: bool, total: int | None, initial: int):
    """tqdm (notebook-aware, throttled so a notebook output is not flooded) or a silent stand-in."""
    if enabled:
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc="fit", unit="step", mininterval=0.5)

    class _Silent:
        def update(self, n):
            pass

        def set_postfix(self, **kw):
            pass

        def close(self):
            pass

    return _Silent()
