"""Reference electronic-structure methods as ASE calculators (eV, eV/Angstrom).

- `gfn2_xtb()`: GFN2-xTB through tblite (milliseconds per small molecule).
- `PyscfDFT`: Kohn-Sham DFT through pyscf, by default PBE/def2-SVP with density fitting (the rMD17 level of
  theory), seconds per ethanol frame. Consecutive calls reuse the previous density matrix as the initial guess,
  which roughly halves the cost along an MD trajectory.

Both packages are optional (`pip install so3krates_lab[reference]`); importing this module does not need them.
"""

from __future__ import annotations

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from so3krates_lab.units import BOHR, HARTREE


def _missing(package: str, err: Exception) -> ImportError:
    return ImportError(f"{package} is needed for this reference method: pip install 'so3krates_lab[reference]' "
                       f"(import failed: {err})")


def gfn2_xtb(accuracy: float = 1.0, electronic_temperature: float = 300.0, charge: int = 0):
    """GFN2-xTB ASE calculator (tblite), quiet. Settings are tblite's defaults unless given.

    accuracy: tblite's accuracy factor (smaller is tighter); electronic_temperature: the Fermi smearing
    temperature, K; charge: the total charge (e).
    """
    try:
        from tblite.ase import TBLite
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise _missing("tblite", err) from err
    return TBLite(method="GFN2-xTB", accuracy=accuracy, electronic_temperature=electronic_temperature,
                  charge=charge, verbosity=0)


class PyscfDFT(Calculator):
    """Closed-shell Kohn-Sham DFT energy and forces from pyscf.

    xc, basis: functional and basis set names as pyscf spells them ("PBE", "def2-svp").
    density_fit: use the RI (density fitting) approximation for the Coulomb term (auxiliary basis chosen by pyscf).
    conv_tol: SCF energy convergence in Hartree. grids_level: pyscf integration grid level (0-9). charge: the
    total charge (e); spin: the number of unpaired electrons (pyscf's 2S; not 0 runs unrestricted Kohn-Sham).
    grid_response: include the response of the atom-centred integration grid in the forces (slower). Without
    it the forces are not exactly the energy's gradient: at PBE/def2-SVP grid level 3 they carry a spurious net
    force and torque of about 1e-3 eV/A, which stalls a relaxation below that threshold.
    Free molecules only: a periodic `atoms` is refused.
    """

    implemented_properties = ["energy", "forces"]

    def __init__(self, xc: str = "PBE", basis: str = "def2-svp", density_fit: bool = True, conv_tol: float = 1e-9,
                 grids_level: int = 3, charge: int = 0, spin: int = 0, grid_response: bool = False, **kw):
        super().__init__(**kw)
        try:
            import pyscf  # noqa: F401
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise _missing("pyscf", err) from err
        self.settings = dict(xc=xc, basis=basis, density_fit=density_fit, conv_tol=conv_tol,
                             grids_level=grids_level, charge=charge, spin=spin, grid_response=grid_response)
        self._dm = None
        self._dm_numbers = None

    def describe(self) -> str:
        """The method in words, e.g. "PBE/def2-svp (density fitting)"."""
        s = self.settings
        return f"{s['xc']}/{s['basis']}" + (" (density fitting)" if s["density_fit"] else "")

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        from pyscf import dft, gto

        if self.atoms.pbc.any():
            raise ValueError("PyscfDFT handles free molecules only; this structure is periodic")
        s = self.settings
        numbers = self.atoms.numbers
        mol = gto.M(atom=[(int(z), tuple(p)) for z, p in zip(numbers, self.atoms.positions)], basis=s["basis"],
                    unit="Angstrom", charge=s["charge"], spin=s["spin"], verbose=0)
        mf = dft.RKS(mol, xc=s["xc"]) if s["spin"] == 0 else dft.UKS(mol, xc=s["xc"])
        if s["density_fit"]:
            mf = mf.density_fit()
        mf.conv_tol = s["conv_tol"]
        mf.grids.level = s["grids_level"]
        same_molecule = self._dm_numbers is not None and np.array_equal(self._dm_numbers, numbers)
        energy = mf.kernel(dm0=self._dm if same_molecule else None)
        if not mf.converged:
            raise RuntimeError(f"pyscf SCF did not converge ({self.describe()}, {len(numbers)} atoms)")
        gradient_method = mf.nuc_grad_method()
        gradient_method.grid_response = s["grid_response"]
        gradient = gradient_method.kernel()
        self._dm, self._dm_numbers = mf.make_rdm1(), numbers.copy()
        self.results["energy"] = float(energy) * HARTREE
        self.results["forces"] = -np.asarray(gradient) * (HARTREE / BOHR)
