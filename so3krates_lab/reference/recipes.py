"""The recipes that generate the data sets shipped in `data/`, with their provenance.

    python -m so3krates_lab.reference ethanol-pbe      # -> data/ethanol_pbe_500K.npz (+ .provenance.json)
    python -m so3krates_lab.reference ac-ala3-xtb      # -> data/ac_ala3_nhme_gfn2xtb.npz (+ .provenance.json)
    python -m so3krates_lab.reference ethanol-pbe-harmonic   # -> data/ethanol_pbe_harmonic.npz (see harmonic.py)

Both are resumable: intermediate chunks live under --work (default results/reference/<recipe>), and rerunning
the same command continues after the last finished chunk.

ethanol-pbe: geometries from Langevin MD at 500 K driven by GFN2-xTB (a PBE-driven trajectory would cost about
3 s per step here; xTB costs about 3 ms), then every frame labelled at PBE/def2-SVP with density fitting (pyscf),
the level of theory of rMD17. The labels are PBE; only the sampling is xTB.
ac-ala3-xtb: Langevin MD of Ac-Ala3-NHMe driven by GFN2-xTB at 300, 400, 500 and 600 K (one replica each, equal
frame counts), labels from the same xTB calculation, start geometry the first MD22 frame.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import platform
import shlex
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from so3krates_lab.reference.calculators import PyscfDFT, gfn2_xtb
from so3krates_lab.reference.harmonic import ethanol_pbe_harmonic
from so3krates_lab.reference.sampling import label_frames, sample_md
from so3krates_lab.reference.store import FrameStore, write_npz
from so3krates_lab.structures import System


@dataclasses.dataclass(frozen=True)
class MDSampling:
    temperatures_K: tuple[float, ...]
    frames_per_temperature: int
    stride: int
    timestep_fs: float
    friction_per_fs: float
    burn_in_steps: int
    seed: int


def _versions(*packages: str) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _provenance(name: str, method: dict, sampling: MDSampling, start: dict, n_frames: int, seconds: float,
                extra: dict | None = None) -> dict:
    return {
        "name": name,
        "format": "MD17-style npz read by so3krates_lab.data.load: z, R (Angstrom), E (eV), F (eV/Angstrom)",
        "method": method,
        "sampling": dataclasses.asdict(sampling),
        "start_geometry": start,
        "n_frames": n_frames,
        "command": "python -m so3krates_lab.reference " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "wall_seconds_this_invocation": round(seconds, 1),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": _versions("so3krates_lab", "ase", "tblite", "pyscf", "numpy"),
        **(extra or {}),
    }


def _finish(out: Path, arrays: dict, provenance: dict) -> Path:
    digest = write_npz(out, arrays, provenance)
    side = dict(provenance, file=out.name, sha256=digest)
    tmp = out.with_suffix(".provenance.json.tmp")
    tmp.write_text(json.dumps(side, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, out.with_suffix(".provenance.json"))
    return out


def _sample_replicas(start: System, calculator_factory, work: Path, s: MDSampling, progress: bool) -> dict:
    parts = []
    for i, temperature in enumerate(s.temperatures_K):
        store = FrameStore(work / f"md_{temperature:g}K")
        sample_md(start, calculator_factory(), store, temperature_K=temperature, n_frames=s.frames_per_temperature,
                  stride=s.stride, timestep_fs=s.timestep_fs, friction_per_fs=s.friction_per_fs,
                  burn_in_steps=s.burn_in_steps, seed=s.seed + i, progress=progress)
        parts.append(store.arrays())
    return {"numbers": parts[0]["numbers"],
            **{k: np.concatenate([p[k] for p in parts]) for k in ("positions", "energy", "forces")},
            "temperature_K": np.repeat(np.asarray(s.temperatures_K, float), s.frames_per_temperature)}


def ethanol_pbe(out="data/ethanol_pbe_500K.npz", work="results/reference/ethanol-pbe", n_frames: int = 500,
                stride: int = 20, progress: bool = True) -> Path:
    from so3krates_lab.data.builtin import ethanol

    t0 = time.perf_counter()
    s = MDSampling(temperatures_K=(500.0,), frames_per_temperature=n_frames, stride=stride, timestep_fs=0.5,
                   friction_per_fs=0.01, burn_in_steps=1000, seed=17)
    work = Path(work)
    sampled = _sample_replicas(ethanol(), gfn2_xtb, work / "xtb", s, progress)
    dft = PyscfDFT(xc="PBE", basis="def2-svp", density_fit=True, conv_tol=1e-9, grids_level=3)
    labels = label_frames(sampled["numbers"], sampled["positions"], dft, FrameStore(work / "pbe"),
                          progress=progress, desc="PBE/def2-SVP").arrays()
    method = {"labels": "PBE/def2-SVP, density fitting (RI-J, pyscf default auxiliary basis), restricted KS",
              "program": "pyscf", **{k: v for k, v in dft.settings.items()},
              "sampling_driver": "GFN2-xTB (tblite, default settings) Langevin MD; labels are NOT xTB"}
    start = {"source": "so3krates_lab.data.builtin.ethanol() (anti conformer)"}
    prov = _provenance("ethanol, PBE/def2-SVP, 500 K", method, s, start, len(labels["energy"]),
                       time.perf_counter() - t0)
    return _finish(Path(out), labels, prov)


def ac_ala3_xtb(out="data/ac_ala3_nhme_gfn2xtb.npz", work="results/reference/ac-ala3-xtb",
                start_file: str | None = None, frames_per_temperature: int = 750, stride: int = 20,
                progress: bool = True) -> Path:
    from so3krates_lab.data import load

    if start_file is None:
        root = Path(os.environ.get("SO3KRATES_DATA_DIR", Path(__file__).resolve().parents[2].parent / "shared/data"))
        start_file = str(root / "md22_ac_ala3_nhme" / "md22_Ac-Ala3-NHMe_5frames.xyz")
    t0 = time.perf_counter()
    start_path = Path(start_file)
    start = load(start_path)[0]
    start = System(numbers=start.numbers, positions=start.positions)
    s = MDSampling(temperatures_K=(300.0, 400.0, 500.0, 600.0), frames_per_temperature=frames_per_temperature,
                   stride=stride, timestep_fs=1.0, friction_per_fs=0.01, burn_in_steps=500, seed=3)
    arrays = _sample_replicas(start, gfn2_xtb, Path(work), s, progress)
    method = {"labels": "GFN2-xTB", "program": "tblite", "accuracy": 1.0, "electronic_temperature_K": 300.0}
    start_info = {"source": start_path.name, "frame": 0,
                  "sha256": hashlib.sha256(start_path.read_bytes()).hexdigest(),
                  "reference": "MD22, Chmiela et al., Sci. Adv. 9, eadf0873 (2023)"}
    prov = _provenance("Ac-Ala3-NHMe, GFN2-xTB, 300-600 K", method, s, start_info, len(arrays["energy"]),
                       time.perf_counter() - t0,
                       extra={"temperature_of_frame": "frames are in blocks of equal size, one per temperature"})
    return _finish(Path(out), arrays, prov)


RECIPES = {"ethanol-pbe": ethanol_pbe, "ac-ala3-xtb": ac_ala3_xtb, "ethanol-pbe-harmonic": ethanol_pbe_harmonic}
