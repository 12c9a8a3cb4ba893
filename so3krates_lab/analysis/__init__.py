"""Analyses of trajectories and potential-energy surfaces; each receives data or an energy function.

spectra: velocity autocorrelation, power spectra (cm^-1) and harmonic normal modes.
"""

from .spectra import (
    EIGENVALUE_TO_CM1, PER_FS_TO_CM1, hessian_of, normal_modes, normal_modes_from_energy, power_spectrum,
    spectrum_peaks, vacf, vacf_by_element, vacf_from_trajectory,
)

__all__ = ["EIGENVALUE_TO_CM1", "PER_FS_TO_CM1", "hessian_of", "normal_modes", "normal_modes_from_energy",
           "power_spectrum", "spectrum_peaks", "vacf", "vacf_by_element", "vacf_from_trajectory"]
