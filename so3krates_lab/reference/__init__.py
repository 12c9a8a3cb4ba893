"""Reference data: label structures with GFN2-xTB (tblite) or DFT (pyscf), sample geometries by reference MD.

Generation is resumable (chunked, atomic FrameStore) and the recipes that made the shipped `data/` files live
in `recipes.py` (`python -m so3krates_lab.reference --help`). tblite and pyscf are optional dependencies.
"""

from so3krates_lab.reference.calculators import PyscfDFT, gfn2_xtb
from so3krates_lab.reference.sampling import atoms_from_system, label_frames, sample_md
from so3krates_lab.reference.store import FrameStore, write_npz

__all__ = ["FrameStore", "PyscfDFT", "atoms_from_system", "gfn2_xtb", "label_frames", "sample_md", "write_npz"]
