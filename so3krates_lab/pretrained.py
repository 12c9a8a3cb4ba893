"""Pretrained models shipped with the toolkit, as `Potential`s in one call.

    pot = so3krates_lab.pretrained.load("ethanol_pbe")      # SO3krates trained on the shipped ethanol PBE data
    so3krates_lab.pretrained.available()                   # ['ac_ala3_nhme_xtb', 'ethanol_pbe']

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


__all__ = ["available", "load"]
