"""Reference data: label structures with GFN2-xTB (tblite) or DFT (pyscf), sample geometries by reference MD.

Generation is resumable (chunked, atomic FrameStore) and the recipes that made the shipped `data/` files live
in `recipes.py` (`python -m so3krates_lab.reference --help`). tblite and pyscf are optional dependencies.
Names are imported on first use, so the command line installs its Ctrl-C guard before ASE and pyscf load.
"""

import importlib

_NAMES = {"PyscfDFT": "calculators", "gfn2_xtb": "calculators", "atoms_from_system": "sampling",
          "label_frames": "sampling", "sample_md": "sampling", "FrameStore": "store", "write_npz": "store"}


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_NAMES))


__all__ = ["FrameStore", "PyscfDFT", "atoms_from_system", "gfn2_xtb", "label_frames", "sample_md", "write_npz"]
