"""Command line: python -m so3krates_lab.reference {ethanol-pbe, ac-ala3-xtb, ethanol-pbe-harmonic} [options]."""

from __future__ import annotations

import argparse
import sys

from so3krates_lab.interrupts import Interrupted, deferred_interrupts



def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m so3krates_lab.reference",
                                     description="Generate the reference data sets shipped in data/ (resumable).")
    sub = parser.add_subparsers(dest="recipe", required=True)
    e = sub.add_parser("ethanol-pbe", help="ethanol, xTB-sampled 500 K MD, PBE/def2-SVP labels")
    e.add_argument("--frames", type=int, default=500)
    e.add_argument("--stride", type=int, default=20, help="MD steps (0.5 fs) between frames")
    a = sub.add_parser("ac-ala3-xtb", help="Ac-Ala3-NHMe, GFN2-xTB MD at 300/400/500/600 K")
    a.add_argument("--frames-per-temperature", type=int, default=750)
    a.add_argument("--stride", type=int, default=20, help="MD steps (1 fs) between frames")
    a.add_argument("--start", default=None, help="start geometry file (default: the first MD22 frame)")
    h = sub.add_parser("ethanol-pbe-harmonic", help="ethanol PBE/def2-SVP minimum, Hessian and harmonic frequencies")
    h.add_argument("--fmax", type=float, default=1e-3, help="relaxation threshold, eV/A")
    h.add_argument("--hessian", choices=("analytic", "fd"), default="analytic",
                   help="pyscf analytic DF-RKS Hessian, or central differences of analytic forces")
    h.add_argument("--fd-step", type=float, default=0.005, help="finite-difference step, Angstrom")
    for p in (e, a, h):
        p.add_argument("--out", default=None, help="output .npz (default under data/)")
        p.add_argument("--work", default=None, help="folder for resumable chunks (default results/reference/...)")
        p.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    with deferred_interrupts():  # Ctrl-C / SIGTERM: the chunk in progress is stored, then exit 130
        try:
            _run(args)
        except Interrupted as stop:
            print(f"python -m so3krates_lab.reference: {stop}", file=sys.stderr)
            return 130
    return 0


def _run(args) -> None:
    # imported here, under the Ctrl-C guard: pyscf, tblite and JAX take seconds to load
    from so3krates_lab.reference.harmonic import ethanol_pbe_harmonic
    from so3krates_lab.reference.recipes import ac_ala3_xtb, ethanol_pbe

    common = {k: v for k, v in (("out", args.out), ("work", args.work)) if v is not None}
    if args.recipe == "ethanol-pbe":
        path = ethanol_pbe(n_frames=args.frames, stride=args.stride, progress=not args.no_progress, **common)
    elif args.recipe == "ethanol-pbe-harmonic":
        path = ethanol_pbe_harmonic(fmax=args.fmax, hessian=args.hessian, fd_step=args.fd_step,
                                    progress=not args.no_progress, **common)
    else:
        path = ac_ala3_xtb(frames_per_temperature=args.frames_per_temperature, stride=args.stride,
                           start_file=args.start, progress=not args.no_progress, **common)
    print(f"wrote {path} and {path.with_suffix('.provenance.json')}")


if __name__ == "__main__":
    raise SystemExit(main())
