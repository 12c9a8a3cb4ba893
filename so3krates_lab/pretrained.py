"""Pretrained models shipped with the toolkit, as `Potential` objects in one call.

    pot = so3krates_lab.pretrained.load("ethanol_pbe")      # SO3krates trained on the shipped ethanol PBE data
    pot = so3krates_lab.pretrained.so3lr(total_charge=0)    # SO3LR, the published general organic model
    so3krates_lab.pretrained.available()   # ['ac_ala3_nhme_xtb', 'ac_ala3_nhme_xtb_hop', 'ethanol_pbe', 'so3lr']

Each model's provenance (data, split, training command, measured test errors) is in its checkpoint metadata
(`pot.metadata`) and in the `.provenance.json` beside it (`so3krates_lab.data.shipped_dir() / "models"`).
"""

from __future__ import annotations

from .data.shipped import shipped_models, shipped_path
from .model import Potential


def available() -> list[str]:
    """Names of the shipped models."""
    return shipped_models()


def load(name: str, dtype=None) -> Potential:
    """A shipped model by name (see `available()`); dtype overrides its float type ("float32"/"float64")."""
    if name not in available():
        raise ValueError(f"no shipped model {name!r}; available: {available()}")
    return Potential.load(shipped_path(f"models/{name}.npz"), dtype=dtype)


def so3lr(total_charge: float = 0.0, unpaired_electrons: float = 0.0, *, dtype=None,
          long_range_cutoff: float | None = 12.0, dispersion_damping: float = 2.0) -> Potential:
    """SO3LR (Kabylda, Frank et al., J. Am. Chem. Soc. 147, 33723 (2025); MIT licence): the published pretrained
    SO3krates model with ZBL repulsion, electrostatics and dispersion, for molecules and materials of H, C, N, O,
    F, P, S and Cl (other elements raise ValueError when evaluated).

    total_charge (e) and unpaired_electrons: of the structures it will evaluate. dtype: "float32" (default, the
    weights' own) or "float64" (needs jax_enable_x64). long_range_cutoff, dispersion_damping (Angstrom): the
    long-range terms' cutoff and the width of the dispersion switch-off (SO3LR's defaults 12 and 2; None: no
    cutoff, free molecules only). Its energies are relative: it was trained on forces, dipoles and Hirshfeld
    ratios, not total energies. Shipped as models/so3lr.npz with its licence and provenance beside it.
    """
    pot = load("so3lr", dtype=dtype)
    cfg = pot.config
    if long_range_cutoff is not None and not float(long_range_cutoff) > 0:
        raise ValueError(f"long_range_cutoff must be None or > 0 Angstrom, got {long_range_cutoff!r}")
    changes = {"long_range_cutoff": None if long_range_cutoff is None else float(long_range_cutoff),
               "dispersion_damping": float(dispersion_damping)}
    if any(getattr(cfg, k) != v for k, v in changes.items()):
        pot = pot.replace(config=cfg.replace(**changes))
    return pot.with_charge(total_charge, unpaired_electrons)


__all__ = ["available", "load", "so3lr"]
