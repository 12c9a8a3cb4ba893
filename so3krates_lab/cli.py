"""Command line over `fit`: train a model on a data file, evaluate it on the held-out test frames.

    so3krates-train data/ethanol_pbe_500K.npz --n-train 400 --n-valid 50 --minutes 10 --out runs/ethanol
    python -m so3krates_lab.cli --help          # the same, without the console script

Writes into --out: model.npz (last state, for resuming), model_best.npz (best validation: the model to use),
split.json (the seeded split, tied to the data file's hash), test_errors.json and parity.html. Rerunning the
same command resumes from model.npz (with the saved split); --fresh starts over. A rerun that asks for another
split (--n-train, --n-valid, --n-test, --seed), names another data file or another model configuration than the
run in --out stops with a message (exit code 2) instead: use --fresh or another --out. So does a second command
on an --out that another process is writing (it holds --out/.writer.lock for its whole run): the message names
that process.

Several processes train as one job (the global batch split over all their devices): start the same command on
every process with --coordinator HOST:PORT --num-processes N --process-id I (process 0 listens on HOST:PORT), or
with --cluster under a scheduler JAX understands (SLURM, Open MPI, Kubernetes). --out must be the same folder
for every process (a shared file system): process 0 writes it, every process reads it to resume.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

# model.PRESETS' names, without importing the model (and JAX) to print --help; tests/test_cli.py checks them
PRESET_NAMES = ("default", "invariant", "small", "mlff", "so3lr")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="so3krates-train", description=__doc__.split("\n\n")[0])
    p.add_argument("data", help="data file (rMD17/MD17/MD22/padded npz, extxyz, ASE db, ...)")
    p.add_argument("--energy-unit", default=None, help="energy unit of the file when its format does not say")
    p.add_argument("--length-unit", default=None)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    g = p.add_argument_group("split")
    g.add_argument("--n-train", type=int, default=None, help="training frames (default: 80%%)")
    g.add_argument("--n-valid", type=int, default=None, help="validation frames (default: 10%%)")
    g.add_argument("--n-test", type=int, default=None, help="test frames (default: all the rest)")
    g.add_argument("--split", type=Path, default=None, help="use this split.json instead of drawing one")
    m = p.add_argument_group("model")
    m.add_argument("--preset", default="default",
                   help="So3kratesConfig preset: " + ", ".join(PRESET_NAMES) + " (model.PRESETS)")
    m.add_argument("--config", type=Path, default=None, help="So3kratesConfig JSON (overrides --preset)")
    m.add_argument("--init", default=None, metavar="MODEL",
                   help="fine-tune: start from this model (a checkpoint file or a shipped model name, e.g. "
                        "ac_ala3_nhme_xtb); its configuration is used, --preset/--config are ignored")
    m.add_argument("--dtype", choices=("float32", "float64"), default=None)
    t = p.add_argument_group("optimisation")
    t.add_argument("--steps", type=int, default=None, help="training steps (default 10,000 unless --minutes)")
    t.add_argument("--minutes", type=float, default=None, help="wall-clock budget for this call")
    t.add_argument("--batch-size", type=int, default=None, help="default: the spec's rule by training set size")
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--decay-steps", type=int, default=100_000, help="steps per factor-10 learning-rate decay")
    t.add_argument("--anneal-to", type=float, default=None,
                   help="with --minutes: decay the learning rate to this fraction of its value over the budget")
    t.add_argument("--amsgrad", action="store_true")
    t.add_argument("--eval-every", type=int, default=100)
    t.add_argument("--patience", type=int, default=None, help="validations without improvement before stopping")
    t.add_argument("--energy-weight", type=float, default=0.01)
    t.add_argument("--force-weight", type=float, default=0.99)
    t.add_argument("--devices", type=int, default=None, help="local devices to use (default: all)")
    t.add_argument("--seed", type=int, default=None, help="seed of the split and of training (default 0)")
    t.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint instead of resuming")
    t.add_argument("--no-progress", action="store_true")
    d = p.add_argument_group("several processes (so3krates_lab.distributed)")
    d.add_argument("--coordinator", default=None, metavar="HOST:PORT", help="process 0's address, the same on every process")
    d.add_argument("--num-processes", type=int, default=None, metavar="N", help="processes in the job")
    d.add_argument("--process-id", type=int, default=None, metavar="I", help="this process's index, 0 to N-1")
    d.add_argument("--cluster", action="store_true",
                   help="read coordinator, process count and index from the cluster scheduler (SLURM, ...)")
    t.add_argument("--no-refit-energies", action="store_true",
                   help="keep the element energies as trained (default: refit them to the training set's "
                        "energy residuals by least squares after training; forces are unaffected)")
    return p


def _fail(message: str) -> int:
    """Print a one-paragraph error (no traceback) and return the exit code of a usage error."""
    print(f"so3krates-train: error: {message}", file=sys.stderr)
    return 2


def _split_mismatch(split, args, data) -> str:
    """'' when the saved split agrees with the data and with the split options given on the command line,
    else what differs (saved value -> new value). Options left out are not compared: resuming keeps the split."""
    if split.dataset_sha256 and data.sha256 and split.dataset_sha256 != data.sha256:
        return (f"it was drawn for another data file (sha256 {split.dataset_sha256[:12]}..., "
                f"{args.data} has sha256 {data.sha256[:12]}...)")
    if split.n_total != len(data):
        return f"it indexes {split.n_total} frames and {args.data} has {len(data)}"
    saved = {"--n-train": len(split.train), "--n-valid": len(split.valid), "--n-test": len(split.test),
             "--seed": split.seed}
    given = {"--n-train": args.n_train, "--n-valid": args.n_valid, "--n-test": args.n_test, "--seed": args.seed}
    diff = [f"{k} {saved[k]} -> {v}" for k, v in given.items() if v is not None and v != saved[k]]
    return "this command asks for another split: " + ", ".join(diff) + " (saved -> new)" if diff else ""


def main(argv=None) -> int:
    """The command; Ctrl-C or SIGTERM at any moment (loading, compiling, training) saves what training has done
    and exits with status 130 and a one-line message: rerunning the same command resumes."""
    args = build_parser().parse_args(argv)
    from contextlib import nullcontext

    from .fileio import StoreBusyError, WriterLock
    from .interrupts import deferred_interrupts

    several = (args.coordinator, args.num_processes, args.process_id)
    if args.cluster or any(v is not None for v in several):
        from . import distributed

        try:  # before anything else uses JAX
            distributed.initialize(*several, auto=args.cluster and all(v is None for v in several))
        except ValueError as err:
            return _fail(f"--coordinator, --num-processes and --process-id go together (or --cluster): {err}")
        main_process = distributed.is_main_process()
    else:
        main_process = True
    args.out.mkdir(parents=True, exist_ok=True)
    try:  # one run per --out: a second one stops here, before it loads or writes anything
        out_lock = WriterLock(args.out, folder=True) if main_process else nullcontext()
    except StoreBusyError as err:
        return _fail(str(err))
    with out_lock, deferred_interrupts() as interrupt:
        try:
            return _main(args, interrupt, argv)
        except StoreBusyError as err:  # e.g. a notebook training into the same model.npz
            return _fail(str(err))
        except KeyboardInterrupt:  # a second Ctrl-C: stopped at once, the last checkpoint stands
            print("so3krates-train: stopped at once (second Ctrl-C); the last saved checkpoint in "
                  f"{args.out} stands: rerun the same command to resume", file=sys.stderr)
            return 130


def _main(args, interrupt, argv) -> int:
    import jax

    from .data import Split, load, random_split
    from .model import Potential, So3kratesConfig
    from .train import TrainConfig, error_report, error_table, fit, refit_element_energies
    from .widgets.plots import parity_plot

    main_process = jax.process_index() == 0  # with several processes, process 0 writes and prints
    say = print if main_process else (lambda *a, **k: None)
    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    data = load(args.data, energy_unit=args.energy_unit, length_unit=args.length_unit)
    n = len(data)
    args.out.mkdir(parents=True, exist_ok=True)
    split_path = args.out / "split.json"
    seed = 0 if args.seed is None else args.seed
    if args.split is not None:
        split = Split.load(args.split)
    elif split_path.exists() and not args.fresh:
        split = Split.load(split_path)
        problem = _split_mismatch(split, args, data)
        if problem:
            return _fail(f"{split_path} holds the split of an earlier run in {args.out}, but {problem}. Rerun "
                         f"with --fresh to start a new run in {args.out} (this replaces its split and checkpoints), "
                         "or choose another --out" + ("; drop the differing options to resume the earlier run."
                                                      if problem.startswith("this command") else "."))
    else:
        n_train = args.n_train if args.n_train is not None else int(0.8 * n)
        n_valid = args.n_valid if args.n_valid is not None else max(1, int(0.1 * n))
        split = random_split(n, n_train, n_valid, args.n_test, seed=seed, dataset_sha256=data.sha256)
    try:
        train, valid, test = split.apply(data)
    except ValueError as e:
        return _fail(f"{args.split or split_path} does not fit {args.data}: {e}")
    if main_process:
        split.save(split_path)

    start = None  # --init: the model to fine-tune
    if args.init is not None:
        from . import pretrained

        try:
            start = (pretrained.load(args.init, dtype=args.dtype) if args.init in pretrained.available()
                     else Potential.load(args.init, dtype=args.dtype))
        except (OSError, ValueError) as e:
            return _fail(f"--init {args.init}: neither a shipped model ({', '.join(pretrained.available())}) nor a "
                         f"readable checkpoint: {e}")
        config = start.config
    else:
        config = (So3kratesConfig.from_json(args.config.read_text()) if args.config
                  else So3kratesConfig.preset(args.preset))
        if args.dtype:
            config = config.replace(dtype=args.dtype)
    ckpt_path = args.out / "model.npz"
    if ckpt_path.exists() and not args.fresh:
        from .model import load_checkpoint

        saved = load_checkpoint(ckpt_path).config
        if saved != config:
            diff = ", ".join(f"{k} {getattr(saved, k)!r} -> {getattr(config, k)!r}"
                             for k in config.__dataclass_fields__ if getattr(saved, k) != getattr(config, k))
            return _fail(f"{ckpt_path} was trained with another model configuration than this command asks for "
                         f"({diff}), so it cannot be resumed. Rerun with --fresh to start a new run in {args.out} "
                         "(this replaces its checkpoints), or choose another --out; to resume the earlier run, "
                         "use the --preset/--config/--dtype it was started with.")
    steps = args.steps if args.steps is not None else (10**9 if args.minutes is not None else 10_000)
    tc = TrainConfig(max_steps=steps, max_seconds=None if args.minutes is None else 60 * args.minutes,
                     learning_rate=args.lr, decay_steps=args.decay_steps, amsgrad=args.amsgrad,
                     batch_size=args.batch_size, eval_every=args.eval_every, patience=args.patience,
                     energy_weight=args.energy_weight, force_weight=args.force_weight, seed=seed,
                     devices=args.devices, anneal_to=args.anneal_to)
    provenance = {"data_file": str(Path(args.data).resolve()), "data_sha256": data.sha256, "split": split.to_dict(),
                  "units": {"energy": "eV", "length": "Angstrom", "forces": "eV/Angstrom"},
                  "command": "so3krates-train " + " ".join(sys.argv[1:] if argv is None else argv)}
    say(f"{data.name or args.data}: {n} frames -> train {len(train)}, valid {len(valid)}, test {len(test)}")
    t0 = time.perf_counter()
    result = fit(train, valid, config if start is None else start, tc, checkpoint=ckpt_path, resume=not args.fresh,
                 progress=not args.no_progress, metadata=provenance)
    wall = time.perf_counter() - t0
    if result.interrupted or interrupt.requested:
        say(f"interrupted ({interrupt.requested or 'stopped'}) at step {result.step}: {ckpt_path} holds it; "
              "rerun the same command to resume")
        return 130
    if not main_process:  # the model, its report and plot are process 0's to write
        return 0
    potential = result.potential
    if not args.no_refit_energies:
        # The 99:1 force:energy loss leaves energies free to carry a near-constant offset; remove it.
        potential = refit_element_energies(potential, train)
        best = args.out / "model_best.npz"
        if best.exists():
            saved = Potential.load(best)
            potential.save(best, step=result.best_step,
                           metadata=dict(saved.metadata, element_energies="refit to training residuals"))
    report = error_report(potential, test, name=f"test set of {Path(args.data).name}")
    print(error_table(report))
    summary = {**report.attrs, "steps": result.step, "best_step": result.best_step,
               "wall_seconds_this_call": round(wall, 1),
               "element_force_mae_meV_A": dict(zip(report.element.values.tolist(),
                                                   report.element_force_mae.values.tolist()))}
    (args.out / "test_errors.json").write_text(json.dumps(summary, indent=2) + "\n")
    parity_plot(report).write_html(args.out / "parity.html", include_plotlyjs=True)
    print(f"best model (step {result.best_step} of {result.step}): {args.out / 'model_best.npz'}; "
          f"test errors: {args.out / 'test_errors.json'}; parity plot: {args.out / 'parity.html'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
