"""Fault injection: kill -9 or Ctrl-C the four long-running workflows at random moments, resume, compare.

    python -m so3krates_lab.workflows.faults run md results/faults/md/trial_003     # one job, resumable

    from so3krates_lab.workflows import faults
    faults.reference_run("md", "runs/md_ref")                     # the uninterrupted result
    row = faults.trial("md", "runs/md_t0", "runs/md_ref", signal.SIGKILL, delay_s=7.5)
    row["equal"], row["lost"], row["opened_after_fault"], row["clean_exit"]

The four jobs are small and deterministic, each writing into one folder, and each resumes from what a killed
or interrupted run left there:

training   `train.fit` of a tiny SO3krates model on 40 perturbed ethanols labelled by a Morse potential,
           4000 steps, a checkpoint (`model.npz`, resumable, and `model_best.npz`) every 200 steps. Unit: steps.
md         `md.simulate`: Langevin MD of a 7-atom Morse cluster (float64), 100 compiled chunks of 2000 steps
           of 0.5 fs, a frame every 20 steps, into a `md.TrajectoryStore`. Unit: stored frames.
minima     `analysis.explore_minima` on a four-atom chain whose torsion has three minima (`TorsionChain`
           below: gauche+, gauche-, anti), 4 replicas at 1200 K, 1500 quenched frames, checkpoint saved every
           0.25 s. Unit: quenched frames in the checkpoint.
labelling  the reference-data pipeline of `reference.recipes`: `sample_md` (ASE Langevin MD of ethanol at
           500 K with GFN2-xTB, 200 frames 5 steps apart, chunks of 10) then `label_frames` of those frames
           with a second GFN2-xTB calculator (standing in for the DFT labels; chunks of 10). ASE's EMT stands
           in for GFN2-xTB where tblite is not installed (`LABEL_CALCULATOR` says which). Unit: sampled +
           labelled frames.

The worker (`run`, the command line above) opens `interrupts.deferred_interrupts()` as its first statement and
imports everything heavy inside it, so a Ctrl-C during those imports, the set-up or a compilation is handled
at the workflow's next safe point. Before that statement only the interpreter starts and the package and this
module (standard library only; the package's names load lazily) are imported, some 0.05-0.15 s: a Ctrl-C in
that window is Python's own KeyboardInterrupt (`trial` reports the phase as "start-up"). The worker prints one
line per event on stdout:

    GUARDED t=...                   the guard is in place
    READY <unit>=<n> t=...          imports and data done, resuming from n committed units
    COMMITTED <unit>=<n> t=...      after a save: the folder now holds n units (printed after the write)
    DONE <unit>=<n> t=...           complete; exit status 0
    INTERRUPTED <unit>=<n> t=...    stopped on SIGINT/SIGTERM after saving; exit status 130

(t: the Unix time of the event.) Once the job is done the worker ignores SIGINT and SIGTERM, so that a Ctrl-C
while the interpreter shuts down (JAX's atexit clean-up) is dropped instead of printing a traceback. `trial`
starts the worker, sends the signal after `delay_s`, checks a SIGINT exit (status 130, or 0 if it had
finished, and no traceback), reads what the folder holds (`snapshot`), reruns the worker to completion and
compares the result with an uninterrupted run (`compare`).

What "equal" means (compare's `equal`):
training   the final checkpoint has the uninterrupted run's step and validation steps, and every variable
           within rtol 1e-5, atol 1e-6 of the uninterrupted run's (tests/test_train.py's tolerance for a
           resumed fit); `bit_identical` says whether they are identical.
md         the same frame times, and positions, velocities and energies identical (bit for bit).
labelling  every frame stored before the fault is the uninterrupted run's, bit for bit, and the final sampled and
           labelled frames agree within SCF convergence noise (`LABEL_ATOL`: 1e-4 A, 1e-5 A/fs, 1e-4 eV,
           1e-3 eV/A). Not bit for bit: tblite starts each SCF from the previous frame's converged result, and
           the first frame after a resume from its default guess, which moves energies by ~1e-6 eV and forces
           by ~1e-5 eV/A, and the MD carries that on (`bit_identical` says whether they are identical).
minima     a resumed exploration is not the uninterrupted one: replicas restart with new thermal velocities
           after a one-frame gap, and frames sampled after the last save of a killed run are sampled anew.
           Equal means: the quenched-frame total reaches the budget (1500), the database holds the same minima
           as the uninterrupted run's (each found in the other by `MinimaDatabase.find`: energy within 0.01 eV
           and RMSD below 0.1 A; the chain has exactly three), and every minimum the checkpoint held after the
           fault is in the final database.

"Lost" is what the folder lacks, after the fault, of the last commit the worker reported before it ended:
max(0, last COMMITTED units - units in the folder). Work done after the last commit of a killed run is not
counted (that is the documented cost of kill -9: at most one checkpoint interval or chunk).
"""

from __future__ import annotations

import json
import os
import signal as signals
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..interrupts import deferred_interrupts

WORKFLOWS = ("training", "md", "minima", "labelling")
UNIT = {"training": "steps", "md": "frames", "minima": "frames", "labelling": "frames"}

# training: a tiny model on a tiny synthetic data set
TRAIN_STEPS, TRAIN_EVAL_EVERY = 4000, 200
# md: 7-atom Morse cluster
MD_CHUNK_STEPS, MD_CHUNKS, MD_RECORD_EVERY = 2000, 100, 20
# minima: torsion chain
MINIMA_FRAMES, MINIMA_SAVE_EVERY_S = 1500, 0.25
MINIMA_SETTINGS = dict(n_replicas=4, temperature_K=1200.0, timestep_fs=1.0, sample_every_fs=100.0, fmax=1e-4,
                       minimizer="lbfgs", energy_tol=0.01, rmsd_tol=0.1)
# labelling: ethanol, GFN2-xTB
LABEL_FRAMES, LABEL_STRIDE, LABEL_MD_CHUNK, LABEL_CHUNK = 200, 5, 10, 10

TRAIN_RTOL, TRAIN_ATOL = 1e-5, 1e-6
# labelling: GFN2-xTB (tblite) starts each SCF from the previous frame's result, a resumed run's first frame from
# the default guess, so the frames after a resume differ at the SCF convergence level and the MD carries that on
# (measured over 190 frames: 7e-6 A, 2e-6 eV, 2e-5 eV/A); these bounds are some 15 to 50 times that
LABEL_ATOL = {"positions": 1e-4, "velocities": 1e-5, "energy": 1e-4, "forces": 1e-3}


# ------------------------------------------------------------------------------------------------ the jobs
def _say(kind: str, **fields) -> None:
    text = " ".join([kind, *(f"{k}={v}" for k, v in fields.items()), f"t={time.time():.6f}"])
    print(text, flush=True)


def _training_data(seed: int):
    """40 perturbed ethanols (0.05 A noise) labelled by a Morse potential: 30 to train, 10 to validate."""
    import numpy as np
    from ..analytic import MorsePotential
    from ..data import builtin
    from ..structures import Dataset, System

    ref = builtin.ethanol()
    rng = np.random.default_rng([seed, 17])
    systems = [System(numbers=ref.numbers, positions=ref.positions + 0.05 * rng.normal(size=ref.positions.shape))
               for _ in range(40)]
    pred = MorsePotential(cutoff=6.0).evaluate(systems)
    systems = [s.replace(energy=float(e), forces=np.asarray(f)) for s, e, f in zip(systems, pred.energies,
                                                                                   pred.forces)]
    return Dataset.from_systems(systems[:30], name="train"), Dataset.from_systems(systems[30:], name="valid")


def _training_config():
    from ..model import So3kratesConfig

    return So3kratesConfig.preset("small", features=8, layers=1, heads=1, degrees=(1,), radial_basis=4)


def _train_config(seed: int):
    from ..train import TrainConfig

    return TrainConfig(max_steps=TRAIN_STEPS, eval_every=TRAIN_EVAL_EVERY, batch_size=4, learning_rate=3e-3,
                       seed=seed)


def _run_training(folder: Path, seed: int) -> bool:
    from ..model import load_checkpoint
    from ..train import fit

    train, valid = _training_data(seed)
    checkpoint = folder / "model.npz"
    _say("READY", steps=load_checkpoint(checkpoint).step if checkpoint.exists() else 0)
    result = fit(train, valid, _training_config(), _train_config(seed), checkpoint=checkpoint, progress=False,
                 callbacks=[lambda record: _say("COMMITTED", steps=record["step"])])  # called after the save
    steps = load_checkpoint(checkpoint).step if checkpoint.exists() else 0
    if result.interrupted:
        _say("COMMITTED", steps=steps)  # the save on Ctrl-C (or the last validation's, if it stopped before)
        return False
    return steps == TRAIN_STEPS


def cluster_system():
    """The 7-atom cluster of tests/test_md.py: a pentagonal bipyramid with 1.5 A edges."""
    import numpy as np
    from ..structures import System

    ring = 1.5 / (2 * np.sin(np.pi / 5))
    angles = 2 * np.pi * np.arange(5) / 5
    h = np.sqrt(1.5**2 - ring**2)
    positions = np.vstack([np.c_[ring * np.cos(angles), ring * np.sin(angles), np.zeros(5)], [[0, 0, h], [0, 0, -h]]])
    return System(numbers=np.array([6, 1, 8, 6, 1, 7, 1]), positions=positions)


def _stored_frames(folder: Path) -> int:
    """Frames a trajectory store holds (0 for a folder that is not a store yet or holds no chunk)."""
    from ..md import TrajectoryStore

    if not (folder / "meta.json").exists():
        return 0
    store = TrajectoryStore(folder)
    return len(store.open().time_fs) if store.chunk_paths() else 0


def _run_md(folder: Path, seed: int) -> bool:
    import numpy as np
    import jax

    jax.config.update("jax_enable_x64", True)  # this process is the workflow's: the Morse cluster runs in float64
    from .. import md
    from ..analytic import MorsePotential

    potential = MorsePotential(depth=0.5, a=1.6, r0=1.5, cutoff=10.0, dtype="float64")
    # the cluster rearranges at 300 K (no covalent bonds to watch); every other watchdog stays on
    sim = md.simulate(potential, cluster_system(), md.Langevin(timestep_fs=0.5, temperature_K=300.0), store=folder,
                      seed=seed, chunk_steps=MD_CHUNK_STEPS, record_every=MD_RECORD_EVERY,
                      watchdogs=md.Watchdogs(max_bond_deviation=None))
    done = int(np.max(np.asarray(sim.state.step)))
    frames = _stored_frames(folder)
    _say("READY", frames=frames)
    for chunk in sim.chunks(MD_CHUNK_STEPS * MD_CHUNKS - done, progress=False):
        frames += len(chunk.time_fs)  # yielded after the chunk and the state were stored
        _say("COMMITTED", frames=frames)
    if sim.interrupted:
        return False
    if sim.stop_reason:
        raise RuntimeError(f"the MD stopped early: {sim.stop_reason}")
    return True


def _torsion_chain_class():
    import numpy as np
    import jax
    import jax.numpy as jnp
    from flax import struct

    from ..potential_base import BasePotential

    def dihedral(p):
        b1 = p[2] - p[1]
        axis = b1 / jnp.linalg.norm(b1)
        u = (p[0] - p[1]) - jnp.dot(p[0] - p[1], axis) * axis
        w = (p[3] - p[2]) - jnp.dot(p[3] - p[2], axis) * axis
        return jnp.arctan2(jnp.dot(jnp.cross(axis, u), w), jnp.dot(u, w))

    def chain_energy(p):
        def stretch(i, j):
            return 10.0 * (jnp.linalg.norm(p[i] - p[j]) - 1.5) ** 2

        def bend(i, j, k):
            a, b = p[i] - p[j], p[k] - p[j]
            return 5.0 * (jnp.dot(a, b) / (jnp.linalg.norm(a) * jnp.linalg.norm(b)) - np.cos(np.radians(110.0))) ** 2

        phi = dihedral(p)
        return (stretch(0, 1) + stretch(1, 2) + stretch(2, 3) + bend(0, 1, 2) + bend(1, 2, 3)
                + 0.1 * (1.0 + jnp.cos(3.0 * phi)) + 0.03 * (1.0 + jnp.cos(phi)))

    @struct.dataclass
    class TorsionChain(BasePotential):
        """Four atoms in a chain: harmonic bonds (1.5 A), angles (110 degrees) and the torsion
        V = 0.1 (1 + cos 3 phi) + 0.03 (1 + cos phi) eV, whose three minima (gauche+, gauche-, anti, barriers
        about 0.2 eV) are all the minima there are. Each structure of a graph is four consecutive atom slots;
        the graph's pairs are not used. Padding structures get a stand-in geometry and zero energy."""

        cutoff: float = struct.field(pytree_node=False, default=5.0)
        dtype: str = struct.field(pytree_node=False, default="float64")

        def energy(self, graph):
            n_slots, n_graphs = graph.positions.shape[0], graph.cell.shape[0]
            slot = jnp.where(graph.atom_mask, jnp.arange(n_slots), n_slots)
            first = jax.ops.segment_min(slot, graph.atom_graph, num_segments=n_graphs)
            quads = jnp.clip(first[:, None] + jnp.arange(4), 0, n_slots - 1)
            real = graph.graph_mask & (first < n_slots)
            stand_in = jnp.asarray(torsion_chain_positions(180.0), self.dtype)
            pos = jnp.where(real[:, None, None], graph.positions.astype(self.dtype)[quads], stand_in)
            return jnp.where(real, jax.vmap(chain_energy)(pos), 0.0)

    return TorsionChain


def torsion_chain_positions(dihedral_deg: float) -> np.ndarray:
    """Four atoms, bonds 1.5 A, angles 110 degrees, the given dihedral (Angstrom)."""
    import numpy as np
    t, phi = np.radians(110.0), np.radians(dihedral_deg)
    p3 = np.array([1.5, 0.0, 0.0]) + 1.5 * np.array([-np.cos(t), np.sin(t) * np.cos(phi), np.sin(t) * np.sin(phi)])
    return np.stack([1.5 * np.array([np.cos(t), np.sin(t), 0.0]), np.zeros(3), np.array([1.5, 0.0, 0.0]), p3])


def torsion_chain():
    """(potential, System): the minima workflow's analytic molecule (anti start, four carbons)."""
    import numpy as np
    import jax

    jax.config.update("jax_enable_x64", True)
    from ..structures import System

    return _torsion_chain_class()(), System(numbers=np.full(4, 6), positions=torsion_chain_positions(180.0))


def _quenched(stats: dict) -> int:
    return int(stats["converged"] + stats["not_converged"] + stats["rearranged"])


def _minima_done(path: Path) -> int | None:
    """Quenched frames in the exploration checkpoint at `path` (None: no checkpoint)."""
    from ..analysis import load_minima

    if not path.with_suffix(".json").exists():
        return None
    return _quenched(load_minima(path)[3]["stats"])


def _run_minima(folder: Path, seed: int) -> bool:
    from ..analysis import explore, explore_minima, load_minima

    potential, system = torsion_chain()
    checkpoint = folder / "minima"
    done = _minima_done(checkpoint) or 0
    _say("READY", frames=done)
    if done >= MINIMA_FRAMES and not load_minima(checkpoint)[3].get("pending"):
        return True  # complete: a rerun would only recompile
    # explore_minima has no save callback: report each save by wrapping the save_minima it calls
    original = explore.save_minima

    def reporting_save(path, db, sequences, extra=None):
        out = original(path, db, sequences, extra)
        _say("COMMITTED", frames=_quenched(extra["stats"]))
        return out

    explore.save_minima = reporting_save
    try:
        run = explore_minima(potential, system, max_frames=MINIMA_FRAMES, checkpoint=checkpoint,
                             save_every_s=MINIMA_SAVE_EVERY_S, seed=seed, progress=False, **MINIMA_SETTINGS)
    finally:
        explore.save_minima = original
    return not run.stats.get("interrupted")


LABEL_CALCULATOR = "GFN2-xTB (tblite)"


def _label_calculators():
    """(sampling calculator, labelling calculator, name): GFN2-xTB twice, or ASE's EMT without tblite."""
    global LABEL_CALCULATOR
    # one OpenMP thread unless told otherwise: on a busy 2-core machine tblite's default threads made each
    # ethanol call 9x slower (18 ms instead of 2 ms)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import tblite.ase  # noqa: F401
    except ImportError:
        from ase.calculators.emt import EMT

        LABEL_CALCULATOR = "EMT (ASE; tblite not installed)"
        return EMT(), EMT(), LABEL_CALCULATOR
    from ..reference.calculators import gfn2_xtb

    return gfn2_xtb(), gfn2_xtb(), LABEL_CALCULATOR


class _ReportingFrameStore:
    """A `reference.FrameStore` that prints COMMITTED after each chunk it has written (a subclass made on
    first use, so that importing this module does not import ASE)."""

    _made = None

    @classmethod
    def make(cls, directory, offset: int = 0):
        if cls._made is None:
            from ..reference import FrameStore

            class Reporting(FrameStore):
                def __init__(self, directory, offset=0):
                    super().__init__(directory)
                    self.offset = offset

                def append(self, *args, **kwargs):
                    path = super().append(*args, **kwargs)
                    _say("COMMITTED", frames=self.offset + len(self))
                    return path

            cls._made = Reporting
        return cls._made(directory, offset)


def _label_count(folder: Path) -> int:
    from ..reference import FrameStore

    return sum(len(FrameStore(folder / part)) if (folder / part).exists() else 0 for part in ("md", "labels"))


def _run_labelling(folder: Path, seed: int) -> bool:
    from ..data import builtin
    from ..reference import label_frames, sample_md

    sampler, labeller, _ = _label_calculators()
    _say("READY", frames=_label_count(folder))
    md_store = _ReportingFrameStore.make(folder / "md")
    sample_md(builtin.ethanol(), sampler, md_store, temperature_K=500.0, n_frames=LABEL_FRAMES, stride=LABEL_STRIDE,
              seed=seed, chunk_frames=LABEL_MD_CHUNK, progress=False)
    md_store.close()
    sampled = md_store.arrays()
    labels = _ReportingFrameStore.make(folder / "labels", offset=len(sampled["energy"]))
    label_frames(sampled["numbers"], sampled["positions"], labeller, labels, chunk_frames=LABEL_CHUNK,
                 progress=False)
    labels.close()
    return True


_RUNNERS = {"training": _run_training, "md": _run_md, "minima": _run_minima, "labelling": _run_labelling}


def run(workflow: str, folder, seed: int = 0) -> int:
    """Run (or resume) one job into `folder`; returns the exit status: 0 complete, 130 interrupted."""
    with deferred_interrupts() as interrupt:
        _say("GUARDED", pid=os.getpid())
        from ..interrupts import Interrupted

        if workflow not in _RUNNERS:
            raise ValueError(f"unknown workflow {workflow!r}; one of {', '.join(WORKFLOWS)}")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        try:
            complete = _RUNNERS[workflow](folder, seed)
        except Interrupted as stop:  # labelling: the chunk in progress was stored
            print(f"interrupted: {stop}", file=sys.stderr, flush=True)
            complete = False
        units = _units(workflow, folder)
        if not complete:
            _say("INTERRUPTED", **{UNIT[workflow]: units}, signal=interrupt.requested)
            return 130
        _say("DONE", **{UNIT[workflow]: units})
        return 0


# ------------------------------------------------------------------------------------------ reading results
def _units(workflow: str, folder: Path) -> int:
    folder = Path(folder)
    if workflow == "training":
        from ..model import load_checkpoint

        return load_checkpoint(folder / "model.npz").step if (folder / "model.npz").exists() else 0
    if workflow == "md":
        return _stored_frames(folder)
    if workflow == "minima":
        return _minima_done(folder / "minima") or 0
    if workflow == "labelling":
        return _label_count(folder)
    raise ValueError(f"unknown workflow {workflow!r}")


def _minima_list(folder: Path) -> list:
    from ..analysis import load_minima

    if not (folder / "minima.json").exists():
        return []
    db = load_minima(folder / "minima")[0]
    return [[float(e), p.tolist()] for e, p in zip(db.energies, db.positions)]


def snapshot(workflow: str, folder, reference=None) -> dict:
    """What `folder` holds (after a fault, before resuming): units, opened (every store and checkpoint read
    without error), error (the first error's text) and, with the uninterrupted run's folder `reference`,
    prefix (md, labelling: the stored frames equal the reference's first frames; None elsewhere). For minima
    also `minima`: [energy, positions] of each minimum in the checkpoint."""
    import numpy as np
    folder = Path(folder)
    out = {"units": None, "opened": True, "error": None, "prefix": None}
    try:
        out["units"] = _units(workflow, folder)
        if workflow == "training" and (folder / "model_best.npz").exists():
            from ..model import load_checkpoint

            load_checkpoint(folder / "model_best.npz")
        if workflow == "minima":
            out["minima"] = _minima_list(folder)
        if reference is not None and workflow in ("md", "labelling") and out["units"]:
            got, ref = _frames(workflow, folder), _frames(workflow, Path(reference))
            out["prefix"] = all(np.array_equal(got[k], ref[k][:len(got[k])]) for k in got)
    except Exception as err:  # noqa: BLE001 - a store that does not open is what is being measured
        out["opened"], out["error"] = False, f"{type(err).__name__}: {err}"
    return out


def _frames(workflow: str, folder: Path) -> dict:
    """name -> array of everything the md or labelling folder holds."""
    import numpy as np
    if workflow == "md":
        from ..md import TrajectoryStore

        traj = TrajectoryStore(folder).open()
        return {k: np.asarray(getattr(traj, k)) for k in ("time_fs", "positions", "velocities", "potential",
                                                           "kinetic")}
    from ..reference import FrameStore

    out = {}
    for part in ("md", "labels"):
        store = FrameStore(folder / part)
        if store.n_chunks:
            out.update({f"{part}/{k}": v for k, v in store.arrays().items() if k != "numbers"})
    return out


def compare(workflow: str, folder, reference_folder, *, after_fault: dict | None = None,
            committed: int | None = None) -> dict:
    """Compare a finished (resumed) job in `folder` with the uninterrupted one in `reference_folder`.

    Returns equal (bool, see the module docstring for what it means per workflow), opened (the result's
    stores and checkpoints read without error), error (text, or None), lost (max(0, committed - units held
    after the fault), given `committed`, the last commit the worker reported, and `after_fault`, the
    folder's `snapshot` after the fault; else None) and details (differences, counts)."""
    folder, reference_folder = Path(folder), Path(reference_folder)
    out = {"equal": False, "opened": True, "error": None, "lost": None, "details": {}}
    if committed is not None and after_fault is not None and after_fault.get("units") is not None:
        out["lost"] = max(0, int(committed) - int(after_fault["units"]))
    try:
        out["equal"], out["details"] = _COMPARE[workflow](folder, reference_folder, after_fault or {})
    except Exception as err:  # noqa: BLE001
        out["opened"], out["error"] = False, f"{type(err).__name__}: {err}"
    return out


def _compare_training(folder: Path, reference: Path, after_fault: dict):
    import numpy as np
    import jax

    from ..model import load_checkpoint

    got, ref = load_checkpoint(folder / "model.npz"), load_checkpoint(reference / "model.npz")
    load_checkpoint(folder / "model_best.npz")
    a, b = jax.tree.leaves(got.variables), jax.tree.leaves(ref.variables)
    diff = max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)))) for x, y in zip(a, b))
    close = len(a) == len(b) and all(np.allclose(x, y, rtol=TRAIN_RTOL, atol=TRAIN_ATOL) for x, y in zip(a, b))
    steps = [r["step"] for r in got.metadata.get("history", [])]
    ref_steps = [r["step"] for r in ref.metadata.get("history", [])]
    equal = got.step == ref.step and steps == ref_steps and close
    return equal, {"step": got.step, "max_abs_diff": diff, "bit_identical": diff == 0.0,
                   "history_steps_equal": steps == ref_steps}


def _compare_arrays(got: dict, ref: dict):
    import numpy as np
    same_keys = set(got) == set(ref)
    shapes = same_keys and all(got[k].shape == ref[k].shape for k in ref)
    diff = max((float(np.max(np.abs(got[k] - ref[k]))) if got[k].size else 0.0) for k in ref) if shapes else None
    equal = bool(shapes and all(np.array_equal(got[k], ref[k]) for k in ref))
    return equal, {"max_abs_diff": diff, "shapes_equal": bool(shapes),
                   "counts": {k: int(len(v)) for k, v in got.items()}}


def _compare_md(folder: Path, reference: Path, after_fault: dict):
    from ..md import TrajectoryStore

    equal, details = _compare_arrays(_frames("md", folder), _frames("md", reference))
    stop = TrajectoryStore(folder).stop_reason()
    details["stop_reason"] = stop
    return equal and stop == TrajectoryStore(reference).stop_reason(), details


def _compare_labelling(folder: Path, reference: Path, after_fault: dict):
    import numpy as np
    got, ref = _frames("labelling", folder), _frames("labelling", reference)
    identical, details = _compare_arrays(got, ref)
    close = details["shapes_equal"] and all(
        np.allclose(got[k], ref[k], rtol=0.0, atol=LABEL_ATOL[k.split("/")[1]]) for k in ref)
    details["bit_identical"] = identical
    # every frame stored before the fault must be the uninterrupted run's, bit for bit
    prefix = after_fault.get("prefix")
    return bool(close and prefix is not False), details


def _compare_minima(folder: Path, reference: Path, after_fault: dict):
    import numpy as np
    from ..analysis import load_minima

    db, _, _, extra = load_minima(folder / "minima")
    ref, _, _, ref_extra = load_minima(reference / "minima")
    quenched = _quenched(extra["stats"])
    in_ref = [ref.find(p, e) is not None for e, p in zip(db.energies, db.positions)]
    in_got = [db.find(p, e) is not None for e, p in zip(ref.energies, ref.positions)]
    kept = [db.find(np.asarray(p), e) is not None for e, p in after_fault.get("minima", [])]
    equal = (quenched == MINIMA_FRAMES and len(db) == len(ref) and all(in_ref) and all(in_got) and all(kept)
             and not extra.get("pending"))
    return equal, {"quenched": quenched, "minima": len(db), "reference_minima": len(ref),
                   "energies": sorted(db.energies), "kept_from_before_fault": f"{sum(kept)}/{len(kept)}",
                   "restarts": extra["stats"].get("restarts"), "pending": len(extra.get("pending", []))}


_COMPARE = {"training": _compare_training, "md": _compare_md, "minima": _compare_minima,
            "labelling": _compare_labelling}


# ----------------------------------------------------------------------------------------------- processes
class _Worker:
    """One worker process with its stdout lines (Unix time read, line) and stderr collected by threads."""

    def __init__(self, workflow: str, folder: Path, seed: int, python: str, env: dict | None):
        folder = Path(folder).resolve()
        folder.parent.mkdir(parents=True, exist_ok=True)
        cmd = [python, "-m", "so3krates_lab.workflows.faults", "run", workflow, str(folder), "--seed", str(seed)]
        environment = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        self.started = time.time()
        # `python -m` puts the working directory first on sys.path: start in the folder's parent, so that the
        # package comes from PYTHONPATH (a frozen copy of the code, say) or the installed one, never from
        # whatever source tree the caller happens to be in
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=environment, cwd=folder.parent)
        self.lines: list[str] = []
        self.stderr: list[str] = []
        self._threads = [threading.Thread(target=self._read, args=(self.proc.stdout, self.lines), daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr), daemon=True)]
        for t in self._threads:
            t.start()

    @staticmethod
    def _read(stream, sink):
        for line in stream:
            sink.append(line.rstrip("\n"))

    def events(self) -> list[tuple[str, dict]]:
        out = []
        for line in list(self.lines):
            kind, *rest = line.split()
            if kind in ("GUARDED", "READY", "COMMITTED", "DONE", "INTERRUPTED"):
                out.append((kind, dict(item.split("=", 1) for item in rest if "=" in item)))
        return out

    def wait_for_units(self, units: int, timeout_s: float) -> bool:
        """Wait until the worker reported a commit of at least `units` (False: it ended or timed out first)."""
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if any(kind == "COMMITTED" and int(next(iter(f.values()))) >= units for kind, f in self.events()):
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.005)
        return False

    def finish(self, timeout_s: float) -> tuple[int | None, bool]:
        """Wait for the exit; (status, timed out). A worker still running at the deadline is killed."""
        try:
            return self.proc.wait(timeout=timeout_s), False
        except subprocess.TimeoutExpired:
            self.stop()
            return self.proc.returncode, True
        finally:
            for t in self._threads:
                t.join(timeout=10)

    def stop(self) -> None:
        """Kill the worker (by its pid) and reap it, if it still runs."""
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signals.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()


def _units_of(fields: dict) -> int:
    return int(next(v for k, v in fields.items() if k in ("steps", "frames")))


def reference_run(workflow: str, folder, *, seed: int = 0, timeout_s: float = 900.0, python: str = sys.executable,
                  env: dict | None = None) -> dict:
    """Run the job uninterrupted into `folder` (a new folder). Returns rc, seconds (wall time of the process),
    units, commit_times_s (seconds after the start of each commit) and stderr (its tail, if rc != 0)."""
    worker = _Worker(workflow, Path(folder), seed, python, env)
    try:
        rc, timed_out = worker.finish(timeout_s)
    finally:
        worker.stop()
    seconds = time.time() - worker.started
    events = worker.events()
    commits = [(float(f["t"]) - worker.started, _units_of(f)) for kind, f in events if kind == "COMMITTED"]
    guarded = [float(f["t"]) - worker.started for kind, f in events if kind == "GUARDED"]
    return {"workflow": workflow, "rc": rc, "timed_out": timed_out, "seconds": seconds,
            "units": commits[-1][1] if commits else None, "guarded_s": guarded[0] if guarded else None,
            "commit_times_s": [c[0] for c in commits], "stderr": "\n".join(worker.stderr[-30:]) if rc else ""}


def _phase(events: list, started: float, t_signal: float, exited: bool) -> str:
    """Where in the worker's life the signal landed: "start-up" (before its guard), "set-up/compile" (before its
    first new commit), "running", "finishing" (after the commit that completed the job), "after exit"."""
    if exited:
        return "after exit"
    times, ready = {}, 0
    final = next((_units_of(f) for kind, f in events if kind == "DONE"), None)
    for kind, f in events:
        t = float(f["t"])
        if kind == "READY":
            ready = _units_of(f)
        if kind == "COMMITTED" and "first_progress" not in times and _units_of(f) > ready:
            times["first_progress"] = t
        if kind == "COMMITTED" and final is not None and _units_of(f) >= final:
            times.setdefault("complete", t)
        times.setdefault(kind, t)
    if "GUARDED" not in times or t_signal < times["GUARDED"]:
        return "start-up"
    if "complete" in times and t_signal >= times["complete"]:
        return "finishing"
    if "first_progress" not in times or t_signal < times["first_progress"]:
        return "set-up/compile"
    return "running"


def trial(workflow: str, folder, reference, signal: int, delay_s: float, *, after_units: int | None = None,
          seed: int = 0, timeout_s: float = 900.0, python: str = sys.executable, env: dict | None = None) -> dict:
    """One fault: start the job into `folder` (a new folder), send `signal` (signal.SIGKILL or signal.SIGINT)
    `delay_s` after the start (or, with `after_units`, that long after the worker reported a commit of at least
    that many units), wait for it to end, read what the folder holds, rerun the job to completion and compare it
    with the uninterrupted run in `reference`. Every process started here is stopped (by its pid) before this
    returns.

    Returns a dict: workflow, signal ("SIGKILL"/"SIGINT"), delay_s, phase (where the signal landed: "start-up"
    before the worker's guard, "set-up/compile" before its first new commit, "running", "finishing" after the
    commit that completed the job, "after exit"), rc (the faulted run's exit status), clean_exit (SIGINT: rc
    130, or 0 if the job was complete when the signal came, and no traceback or KeyboardInterrupt on stderr;
    None for SIGKILL), ignored (SIGINT: status 0 although the signal came before the job was complete),
    exit_latency_s (signal to exit), committed (last commit the worker reported), events (the worker's lines:
    kind, units, seconds after the start), after_fault (`snapshot`), lost, opened_after_fault, resume_rc,
    resume_s, equal, opened, error, details (`compare`), stderr (tails).
    """
    folder = Path(folder)
    name = signals.Signals(signal).name
    row = {"workflow": workflow, "signal": name, "delay_s": float(delay_s), "after_units": after_units}
    worker = _Worker(workflow, folder, seed, python, env)
    resumed = None
    try:
        if after_units is not None and not worker.wait_for_units(after_units, timeout_s):
            raise RuntimeError(f"the worker never reported {after_units} units: "
                               + "\n".join(worker.stderr[-20:]))
        start = time.time() if after_units is not None else worker.started
        remaining = start + delay_s - time.time()
        exited = False
        if remaining > 0:
            try:
                worker.proc.wait(timeout=remaining)
                exited = True
            except subprocess.TimeoutExpired:
                pass
        else:
            exited = worker.proc.poll() is not None
        t_signal = time.time()
        if not exited:
            try:
                os.kill(worker.proc.pid, signal)
            except ProcessLookupError:
                exited = True
        rc, hung = worker.finish(timeout_s)
        t_exit = time.time()
        events = worker.events()
        stderr = "\n".join(worker.stderr)
        row.update(phase=_phase(events, worker.started, t_signal, exited), rc=rc, hung=hung,
                   signal_at_s=t_signal - worker.started, exit_latency_s=None if exited else t_exit - t_signal)
        # a traceback, or a KeyboardInterrupt reported as "Exception ignored in ..." (which may come without one)
        traceback = any(text in stderr for text in ("Traceback (most recent call last)", "KeyboardInterrupt",
                                                     "Exception ignored"))
        row["traceback"] = traceback
        finished = row["phase"] in ("finishing", "after exit")
        # a SIGINT that landed before the job was complete must stop it (130); status 0 then means it was ignored
        row["ignored"] = None if signal == signals.SIGKILL else bool(rc == 0 and not finished)
        row["clean_exit"] = None if signal == signals.SIGKILL else \
            bool((rc == 130 or (rc == 0 and finished)) and not traceback and not hung)
        commits = [_units_of(f) for kind, f in events if kind == "COMMITTED"]
        row["committed"] = commits[-1] if commits else 0
        row["events"] = [[kind, f.get("steps", f.get("frames")), round(float(f["t"]) - worker.started, 4)]
                         for kind, f in events]
        if signal != signals.SIGKILL:
            row["stderr_tail"] = "\n".join(worker.stderr[-8:])
        after = snapshot(workflow, folder, reference)
        row["after_fault"] = {k: v for k, v in after.items() if k != "minima"}
        row["opened_after_fault"] = after["opened"]
        if rc not in (0, 130, -signals.SIGKILL) or (signal == signals.SIGINT and not row["clean_exit"]):
            row["stderr"] = "\n".join(worker.stderr[-25:])
        resumed = _Worker(workflow, folder, seed, python, env)
        resume_rc, resume_hung = resumed.finish(timeout_s)
        row.update(resume_rc=resume_rc, resume_hung=resume_hung, resume_s=time.time() - resumed.started)
        if resume_rc != 0:
            row["resume_stderr"] = "\n".join(resumed.stderr[-25:])
        result = compare(workflow, folder, reference, after_fault=after, committed=row["committed"])
        row.update(equal=bool(result["equal"] and resume_rc == 0), opened=result["opened"], error=result["error"],
                   lost=result["lost"], details=result["details"])
        return row
    finally:
        worker.stop()
        if resumed is not None:
            resumed.stop()


# -------------------------------------------------------------------------------------------- command line
def main(argv=None) -> int:
    with deferred_interrupts():  # the first statement: a Ctrl-C from here on is handled at a safe point
        status = _main(argv)
    # The job is over and saved: ignore SIGINT/SIGTERM for the rest of the process. At exit the interpreter runs
    # JAX's and the writer locks' atexit clean-up, where a Ctrl-C would print a KeyboardInterrupt traceback
    # ("Exception ignored in atexit callback") for a job that had finished. (Blocking the signals would not do:
    # JAX's threads would still receive them.)
    for sig in (signals.SIGINT, signals.SIGTERM):
        signals.signal(sig, signals.SIG_IGN)
    return status


def _main(argv) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m so3krates_lab.workflows.faults",
                                     description="the fault-injection jobs (see the module docstring)")
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run or resume one job into a folder")
    r.add_argument("workflow", choices=WORKFLOWS)
    r.add_argument("folder", type=Path)
    r.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    return run(args.workflow, args.folder, args.seed)


if __name__ == "__main__":
    raise SystemExit(main())
