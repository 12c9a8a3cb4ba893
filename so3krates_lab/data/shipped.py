"""The data and models this project ships (the repository's `data/` folder, installed as package data).

    shipped_path("ethanol_pbe_500K.npz")           # a Path inside the installed package
    so3krates_lab.pretrained.load("ethanol_pbe")   # a shipped model as a Potential
    load_shipped("ethanol_pbe_500K")               # -> Dataset

Found through `importlib.resources`, so they work the same from a source checkout, an editable install and a
wheel; nothing depends on where the package lies on disk.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

PACKAGE = "so3krates_lab.shipped"


def shipped_dir() -> Path:
    """The folder of the shipped files."""
    try:
        root = resources.files(PACKAGE)
    except ModuleNotFoundError as err:  # pragma: no cover - a broken install
        raise FileNotFoundError(f"the shipped data package {PACKAGE} is not installed; reinstall so3krates_lab") \
            from err
    return Path(str(root))


def shipped_path(name: str) -> Path:
    """The path of a shipped file, e.g. "ethanol_pbe_500K.npz" or "models/ethanol_pbe.npz"."""
    path = shipped_dir() / name
    if not path.exists():
        available = sorted(str(p.relative_to(shipped_dir())) for p in shipped_dir().rglob("*.npz"))
        raise FileNotFoundError(f"no shipped file {name!r}; shipped: {available}")
    return path


def shipped_models() -> list[str]:
    """Names of the shipped models (for `so3krates_lab.pretrained.load`)."""
    return sorted(p.stem for p in (shipped_dir() / "models").glob("*.npz"))


def load_shipped(name: str):
    """A shipped data set by name (with or without ".npz"), read with `data.load`."""
    from .readers import load

    return load(shipped_path(name if name.endswith(".npz") else name + ".npz"))
