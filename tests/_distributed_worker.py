"""Run by test_distributed.py as one process of a multi-process job (or alone, as the single-process baseline).

    python _distributed_worker.py train OUT STEPS PORT N_PROCESSES PROCESS_ID   # one process of N
    python _distributed_worker.py train OUT STEPS                               # one process, one device
    python _distributed_worker.py cli OUT STEPS [PORT N_PROCESSES PROCESS_ID]   # so3krates-train on OUT/toy.npz
    python _distributed_worker.py md OUT STEPS [PORT N_PROCESSES PROCESS_ID]    # 3 Langevin replicas, sharded
    python _distributed_worker.py hop OUT HOPS [PORT N_PROCESSES PROCESS_ID]    # minima hopping, walkers sharded

Trains the toy model of test_train.py (float64) with the checkpoint OUT/model.npz, and writes what this process
saw to OUT/process-<id>.json: the validation history, the step, the device count and a digest of the returned
(best) parameters.
"""

import json
import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

task, out, steps = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
if task == "cli":  # the command line initialises the job itself
    from so3krates_lab.cli import main

    job = (["--coordinator", f"127.0.0.1:{sys.argv[4]}", "--num-processes", sys.argv[5], "--process-id", sys.argv[6]]
           if len(sys.argv) > 4 else ["--cluster"])  # --cluster: the job from SLURM's variables
    raise SystemExit(main([str(out / "toy.npz"), "--out", str(out / "run"), "--config", str(out / "config.json"),
                           "--n-train", "10", "--n-valid", "3", "--steps", str(steps), "--eval-every", "2",
                           "--batch-size", "2", *job]))
if len(sys.argv) > 4:
    from so3krates_lab import distributed

    distributed.initialize(f"127.0.0.1:{sys.argv[4]}", num_processes=int(sys.argv[5]), process_id=int(sys.argv[6]),
                           timeout_s=120)

import numpy as np  # noqa: E402

from test_train import CONFIG, toy_dataset  # noqa: E402
from so3krates_lab.train import TrainConfig, fit  # noqa: E402

if task == "local":  # one process with 2 CPU devices (XLA_FLAGS): 4 replicas split over them
    from test_md import MORSE, cluster_system
    from so3krates_lab import md

    runs = {}
    for shard in (False, True):
        sim = md.simulate(MORSE, cluster_system(), md.Langevin(timestep_fs=1.0, temperature_K=300.0), replicas=4,
                          shard_replicas=shard, record_every=10, chunk_steps=50, seed=7)
        traj = sim.run(steps, progress=False)
        runs[shard] = {"positions": traj.positions.tolist(),
                       "devices": sorted({len(x.sharding.device_set) for x in jax.tree.leaves(sim.state)
                                          if hasattr(x, "sharding") and x.ndim and x.shape[0] == 4})}
    from test_minima import TORSION, _butane_system
    from so3krates_lab.analysis import hop_minima

    for shard in (False, True):  # 4 walkers' minimiser slots, split over the 2 devices when sharded
        run = hop_minima(TORSION, _butane_system(180.0), n_walkers=4, max_hops=12, shard_walkers=shard, seed=3,
                         fmax=1e-3, progress=False)
        runs[shard]["hop_energies"] = [float(e) for e in run.database.energies]
        runs[shard]["hops"] = run.stats["hops"]
    (out / "local.json").write_text(json.dumps({str(k): v for k, v in runs.items()}))
    raise SystemExit(0)
if task == "md":  # the Morse cluster of test_md.py: 3 Langevin replicas shared by the processes
    from test_md import MORSE, cluster_system
    from so3krates_lab import md

    sim = md.simulate(MORSE, cluster_system(), md.Langevin(timestep_fs=1.0, temperature_K=300.0), replicas=3,
                      store=out / "store", shard_replicas=True, record_every=10, chunk_steps=50, seed=7)
    traj = sim.run(steps)
    (out / f"process-{jax.process_index()}.json").write_text(json.dumps({
        "replica_ids": sim.replica_ids, "frames": traj.positions.shape[0], "replicas": traj.positions.shape[1]}))
    raise SystemExit(0)
if task == "hop":  # the butane-like torsion of test_minima.py: 4 walkers shared by the processes
    from test_minima import TORSION, _butane_system
    from so3krates_lab.analysis import hop_minima

    run = hop_minima(TORSION, _butane_system(180.0), n_walkers=4, max_hops=steps, checkpoint=out / "explore",
                     shard_walkers=True, seed=3, fmax=1e-3)
    db = run.database
    (out / f"process-{jax.process_index()}.json").write_text(json.dumps({
        "energies": [float(e) for e in db.energies], "sequences": {k: [list(map(int, x)) for x in v]
                                                                  for k, v in run.sequences.items()},
        "hops": run.stats["hops"], "restarts": run.stats["restarts"], "evaluations": run.stats["evaluations"],
        "steps_by_process": run.stats["relax_steps_by_process"], "relax_steps": run.stats["relax_steps"]}))
    raise SystemExit(0)
assert task == "train", task
train, valid = toy_dataset(12, seed=0), toy_dataset(4, seed=1)
tc = TrainConfig(max_steps=steps, batch_size=4, eval_every=3, seed=5)
result = fit(train, valid, CONFIG.replace(dtype="float64"), tc, checkpoint=out / "model.npz", progress=True)
leaves = [np.asarray(x) for x in jax.tree.leaves(result.variables["params"])]
out.mkdir(parents=True, exist_ok=True)
(out / f"process-{jax.process_index()}.json").write_text(json.dumps({
    "history": [[h["step"], h["train_loss"], h["valid_loss"]] for h in result.history],
    "step": result.step, "devices": jax.device_count(), "processes": jax.process_count(),
    "params_abs_sum": float(sum(np.abs(x).sum() for x in leaves))}))
