"""Per-element reference energies: E_total ~= sum over atoms of e[Z].

Energies in eV. Element energy vectors have shape (119,): index = atomic number, entry 0 unused (0.0),
so padding atoms (Z = 0) contribute nothing.
"""

from __future__ import annotations

import numpy as np

from so3krates_lab.structures import MAX_ATOMIC_NUMBER, Dataset

N_ELEMENTS = MAX_ATOMIC_NUMBER + 1


def composition_matrix(dataset: Dataset) -> np.ndarray:
    """(S, 119) element counts per structure."""
    counts = np.zeros((len(dataset), N_ELEMENTS))
    for k, system in enumerate(dataset):
        np.add.at(counts[k], system.numbers, 1.0)
    return counts


def fit_element_energies(dataset: Dataset, ridge: float = 0.0) -> np.ndarray:
    """Least-squares per-element energies (119,) eV fitted to the total energies of `dataset`.

    Solves min ||C e - E||^2 + ridge ||e||^2 over the elements present (C: element counts); absent
    elements get 0. With ridge = 0 np.linalg.lstsq returns the minimum-norm solution when C is rank
    deficient. For a single-composition data set (one molecule, e.g. rMD17) only the total shift
    sum_Z n_Z e[Z] (= the mean energy) is determined; the split among elements is arbitrary
    (minimum norm puts e[Z] proportional to n_Z).
    """
    energies = dataset.energies
    counts = composition_matrix(dataset)
    present = np.flatnonzero(counts.any(axis=0))
    C = counts[:, present]
    if ridge > 0:
        C = np.vstack([C, np.sqrt(ridge) * np.eye(len(present))])
        energies = np.concatenate([energies, np.zeros(len(present))])
    elif ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    solution, *_ = np.linalg.lstsq(C, energies, rcond=None)
    result = np.zeros(N_ELEMENTS)
    result[present] = solution
    return result


def element_energy_sum(numbers, element_energies: np.ndarray) -> float:
    """sum_i element_energies[numbers[i]] in eV for one structure; numbers (N,) atomic numbers (0 = padding)."""
    numbers = np.asarray(numbers, dtype=np.int64)
    element_energies = np.asarray(element_energies, dtype=np.float64)
    if element_energies.shape != (N_ELEMENTS,):
        raise ValueError(f"element_energies must have shape ({N_ELEMENTS},), got {element_energies.shape}")
    return float(element_energies[numbers].sum())
