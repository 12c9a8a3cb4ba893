"""Vibrational spectra: velocity autocorrelation, power spectra and harmonic normal modes.

Units: time and lag in fs, velocities in Angstrom/fs, masses in amu, energies in eV, Hessians in eV/Angstrom^2,
frequencies in cm^-1 (wavenumbers, 1/lambda). Every function returns an xarray Dataset with units in attrs.

    ds = vacf(velocities, timestep_fs=5.0, numbers=numbers, mass_weighted=True)   # (time, atom, 3) in
    spec = power_spectrum(ds)                                                      # frequency in cm^-1
    modes = normal_modes_of(potential, minimum)                                    # a potential at a System
    modes = normal_modes_from_energy(energy_fn, positions, numbers)               # any (N, 3) -> eV function
    modes = normal_modes(hessian, positions, numbers)                             # a Hessian from anywhere

Conversions (CODATA 2018 constants):
- lag frequency (1/fs) to wavenumber: nu [cm^-1] = f [1/fs] * 1e15 / c, c = 2.99792458e10 cm/s,
  so 1 fs^-1 = 33356.41 cm^-1.
- Hessian eigenvalue lambda of the mass-weighted Hessian, in eV/(Angstrom^2 amu), to wavenumber:
  omega = sqrt(lambda * e / (1e-20 m^2/Angstrom^2 * u)) rad/s with e = 1.602176634e-19 J/eV,
  u = 1.66053906660e-27 kg/amu; nu = omega / (2 pi c), so nu [cm^-1] = 521.4709 * sqrt(lambda).

>>> round(PER_FS_TO_CM1, 2)  # cm^-1 per fs^-1
33356.41
>>> round(0.05 * PER_FS_TO_CM1, 1)  # a 20 fs period
1667.8
>>> round(float(EIGENVALUE_TO_CM1), 4)  # cm^-1 per sqrt(eV / (Angstrom^2 amu))
521.4709
"""

from __future__ import annotations

import numpy as np

from ..structures import Trajectory

SPEED_OF_LIGHT_CM_PER_S = 2.99792458e10
ELECTRONVOLT_J = 1.602176634e-19
AMU_KG = 1.66053906660e-27
PER_FS_TO_CM1 = 1e15 / SPEED_OF_LIGHT_CM_PER_S
"""Multiply a frequency in 1/fs by this to get a wavenumber in cm^-1 (33356.41)."""
EIGENVALUE_TO_CM1 = np.sqrt(ELECTRONVOLT_J / (1e-20 * AMU_KG)) / (2 * np.pi * SPEED_OF_LIGHT_CM_PER_S)
"""nu [cm^-1] = EIGENVALUE_TO_CM1 * sqrt(lambda [eV / (Angstrom^2 amu)]) (521.4709)."""

WINDOWS = ("hann", "blackman", "none")


# --- selection and input checks ---------------------------------------------------------------------------------
def _masses(numbers) -> np.ndarray:
    from ase.data import atomic_masses

    return np.asarray(atomic_masses)[np.asarray(numbers, int)]


def _checked_masses(numbers, masses, n_atoms: int, missing: str) -> np.ndarray:
    """(n_atoms,) positive masses in amu: `masses` if given, else those of the elements `numbers`; `missing` is
    the error when neither is given."""
    if masses is None:
        if numbers is None:
            raise ValueError(missing)
        masses = _masses(numbers)
    m = np.asarray(masses, np.float64)
    if m.shape != (n_atoms,) or not np.all(m > 0):
        raise ValueError(f"masses must be ({n_atoms},) positive amu, got {m}")
    return m


def _element_number(element) -> int:
    from ase.data import atomic_numbers, chemical_symbols

    if isinstance(element, str):
        if element not in atomic_numbers:
            raise ValueError(f"unknown element symbol {element!r}")
        return atomic_numbers[element]
    z = int(element)
    if not 0 < z < len(chemical_symbols):
        raise ValueError(f"unknown atomic number {element!r}")
    return z


def _selected_atoms(n_atoms: int, numbers, atoms, element) -> np.ndarray:
    """Indices of the atoms to include: all, an explicit list, or those of one element."""
    if atoms is not None and element is not None:
        raise ValueError("give either atoms= or element=, not both")
    if element is not None:
        if numbers is None:
            raise ValueError("element= needs numbers= (atomic numbers of the trajectory's atoms)")
        z = _element_number(element)
        index = np.flatnonzero(np.asarray(numbers) == z)
        if index.size == 0:
            raise ValueError(f"no atom of element {element!r} in this trajectory (numbers {list(numbers)})")
        return index
    if atoms is None:
        return np.arange(n_atoms)
    index = np.atleast_1d(np.asarray(atoms))
    if index.dtype == bool:
        if index.shape != (n_atoms,):
            raise ValueError(f"boolean atoms mask must have shape ({n_atoms},), got {index.shape}")
        index = np.flatnonzero(index)
    if index.size == 0 or not np.issubdtype(index.dtype, np.integer):
        raise ValueError(f"atoms= must be a non-empty list of atom indices, got {atoms!r}")
    if index.min() < -n_atoms or index.max() >= n_atoms:
        raise ValueError(f"atom index out of range for {n_atoms} atoms: {atoms!r}")
    return index % n_atoms


def _check_velocities(velocities, timestep_fs) -> np.ndarray:
    v = np.asarray(velocities, dtype=np.float64)
    if v.ndim != 3 or v.shape[2] != 3:
        raise ValueError(f"velocities must have shape (time, atom, 3) in Angstrom/fs, got {v.shape}")
    if v.shape[0] < 4:
        raise ValueError(f"trajectory too short for a VACF: {v.shape[0]} frames (need at least 4)")
    if v.shape[1] == 0:
        raise ValueError("velocities hold no atoms")
    if not np.all(np.isfinite(v)):
        bad = np.argwhere(~np.isfinite(v))[0]
        raise ValueError(f"non-finite velocity at frame {bad[0]}, atom {bad[1]}")
    if not (np.isscalar(timestep_fs) and np.isfinite(timestep_fs) and timestep_fs > 0):
        raise ValueError(f"timestep_fs must be a positive number (fs between frames), got {timestep_fs!r}")
    return v


# --- velocity autocorrelation -------------------------------------------------------------------------------
def _autocorrelation(x: np.ndarray, n_lags: int) -> np.ndarray:
    """sum over columns of the time-origin-averaged autocorrelation of x (time, k), lags 0..n_lags-1.

    Zero-padded to at least twice the length so the FFT's circular correlation equals the linear one; each lag
    tau is divided by its number of time origins, T - tau.
    """
    n_time = x.shape[0]
    n_fft = 1 << int(np.ceil(np.log2(2 * n_time)))
    spectrum = np.fft.rfft(x, n=n_fft, axis=0)
    summed = np.fft.irfft(np.sum(np.abs(spectrum) ** 2, axis=1), n=n_fft)[:n_lags]
    return summed / (n_time - np.arange(n_lags))


def vacf(velocities, timestep_fs: float, *, numbers=None, mass_weighted: bool = False, masses=None, atoms=None,
         element=None, max_lag_fs: float | None = None):
    """Velocity autocorrelation function C(tau) = < sum_i w_i v_i(t) . v_i(t + tau) >_t by FFT.

    velocities: (time, atom, 3) Angstrom/fs, frames `timestep_fs` fs apart (e.g. the MD step times the record
    interval). numbers: (atom,) atomic numbers (needed for element= and for mass weighting without masses=).
    mass_weighted: weight each atom by its mass (from masses= or the elements' standard weights); the sum
    is then twice the kinetic-energy autocorrelation, and its spectrum is the vibrational density of states.
    masses: (atom,) amu, for mass_weighted (default: the standard atomic weights of `numbers`).
    atoms: indices (or a boolean mask) of the atoms to include; element: one element (symbol or Z); default all.
    max_lag_fs: longest lag kept (default half the trajectory; longer lags average over few origins).

    The average over time origins normalises lag tau by its number of origins (T - tau). Returns a Dataset:
    `vacf` (lag) in Angstrom^2/fs^2 (amu Angstrom^2/fs^2 if mass-weighted), `vacf_normalized` = C/C(0), coord
    `lag` in fs, attrs with units, the selection, the number of frames and whether it is mass-weighted.

    Two atoms at a constant 1 Angstrom/fs along x, y and z: C(tau) = 2 x 3 at every lag (x (1 + 16) amu when
    mass-weighted with masses 1 and 16 amu):

    >>> import numpy as np
    >>> ds = vacf(np.ones((8, 2, 3)), timestep_fs=0.5)
    >>> np.round(ds.vacf.values, 6).tolist(), ds.lag.values.tolist()
    ([6.0, 6.0, 6.0, 6.0], [0.0, 0.5, 1.0, 1.5])
    >>> np.round(vacf(np.ones((8, 2, 3)), 0.5, mass_weighted=True, masses=[1.0, 16.0]).vacf.values, 6).tolist()
    [51.0, 51.0, 51.0, 51.0]
    """
    import xarray as xr

    v = _check_velocities(velocities, timestep_fs)
    n_time, n_atoms, _ = v.shape
    if numbers is not None and np.asarray(numbers).shape != (n_atoms,):
        raise ValueError(f"numbers must have shape ({n_atoms},) to match the velocities, got "
                         f"{np.asarray(numbers).shape}")
    index = _selected_atoms(n_atoms, numbers, atoms, element)
    weights = _checked_masses(numbers, masses, n_atoms, "mass_weighted=True needs numbers= or masses=") \
        if mass_weighted else np.ones(n_atoms)
    n_lags = n_time // 2 if max_lag_fs is None else int(np.floor(max_lag_fs / timestep_fs)) + 1
    if not 2 <= n_lags <= n_time:
        raise ValueError(f"max_lag_fs={max_lag_fs} gives {n_lags} lags; need 2..{n_time} for {n_time} frames "
                         f"{timestep_fs} fs apart")
    weighted = v[:, index, :] * np.sqrt(weights[index])[None, :, None]
    c = _autocorrelation(weighted.reshape(n_time, -1), n_lags)
    unit = "amu Angstrom^2/fs^2" if mass_weighted else "Angstrom^2/fs^2"
    return xr.Dataset(
        {"vacf": ("lag", c, {"units": unit, "long_name": "velocity autocorrelation, summed over atoms"}),
         "vacf_normalized": ("lag", c / c[0], {"units": "1", "long_name": "C(tau) / C(0)"})},
        coords={"lag": ("lag", np.arange(n_lags) * float(timestep_fs), {"units": "fs"})},
        attrs={"timestep_fs": float(timestep_fs), "n_frames": n_time, "atoms": index.tolist(),
               "mass_weighted": int(mass_weighted), "lag_units": "fs"},
    )


def vacf_by_element(velocities, timestep_fs: float, numbers, **kw):
    """vacf() for each element present, stacked along a new `element` dimension (chemical symbols).

    velocities: (time, atom, 3) Angstrom/fs, frames `timestep_fs` fs apart; numbers: (atom,) atomic numbers;
    other keywords as `vacf`.
    """
    import xarray as xr
    from ase.data import chemical_symbols

    elements = sorted(set(int(z) for z in np.asarray(numbers)))
    parts = [vacf(velocities, timestep_fs, numbers=numbers, element=z, **kw) for z in elements]
    out = xr.concat(parts, dim="element", combine_attrs="drop_conflicts")
    return out.assign_coords(element=("element", [chemical_symbols[z] for z in elements]))


def as_trajectory(trajectory) -> Trajectory:
    """A `Trajectory` from a Trajectory, a `md.TrajectoryStore` (its frames) or an xarray Dataset in the
    trajectory layout (`Trajectory.to_xarray`); anything else raises TypeError."""
    from ..md import TrajectoryStore

    if isinstance(trajectory, Trajectory):
        return trajectory
    if isinstance(trajectory, TrajectoryStore):
        return trajectory.open()
    if hasattr(trajectory, "data_vars"):
        return Trajectory.from_xarray(trajectory)
    raise TypeError(f"expected a Trajectory, a TrajectoryStore or its xarray Dataset, got {type(trajectory).__name__}")


def trajectory_velocities(trajectory, skip_fs: float = 0.0):
    """(velocities (time, atom, 3) Å/fs, frame spacing fs, atomic numbers) of a one-structure trajectory (see
    `as_trajectory`), without the first `skip_fs` fs (equilibration); checks that at least 4 evenly spaced frames
    remain."""
    traj = as_trajectory(trajectory)
    if traj.n_replicas is not None:
        raise ValueError("a VACF needs one structure's trajectory: take trajectory.replica(r) first")
    traj = traj.since(skip_fs)
    if len(traj) < 4:
        raise ValueError(f"trajectory too short for a VACF: {len(traj)} frames after skipping {skip_fs} fs")
    return traj.velocities, traj.frame_spacing_fs, traj.numbers


def vacf_from_trajectory(trajectory, *, skip_fs: float = 0.0, **kw):
    """vacf() of a `Trajectory` (or a `md.TrajectoryStore`, see `as_trajectory`). skip_fs drops
    the first frames (equilibration). Other arguments as vacf()."""
    velocities, timestep_fs, numbers = trajectory_velocities(trajectory, skip_fs)
    return vacf(velocities, timestep_fs, numbers=kw.pop("numbers", numbers), **kw)


# --- power spectrum ------------------------------------------------------------------------------------------
def _lag_window(name: str, n: int) -> np.ndarray:
    """The decaying half of a symmetric window over lags 0..n-1 (1 at lag 0, 0 beyond the last lag)."""
    x = np.arange(n) / n
    if name == "hann":
        return 0.5 * (1 + np.cos(np.pi * x))
    if name == "blackman":
        return 0.42 + 0.5 * np.cos(np.pi * x) + 0.08 * np.cos(2 * np.pi * x)
    if name == "none":
        return np.ones(n)
    raise ValueError(f"unknown window {name!r}; choose one of {WINDOWS}")


def power_spectrum(vacf_ds, *, variable: str = "vacf", window: str = "hann", zero_pad: int = 4,
                   max_frequency_cm1: float | None = 4500.0):
    """Power spectrum I(nu) = integral over tau of w(tau) C(tau) cos(2 pi nu tau), from a vacf() Dataset.

    The VACF is even in the lag, so its Fourier transform is real: the windowed one-sided VACF is mirrored,
    zero-padded to `zero_pad` times its mirrored length (a finer frequency grid, not more resolution) and
    transformed. window: "hann" (default), "blackman" or "none" (rectangular; sinc ripples). Any dimensions
    besides `lag` (e.g. `element`) are kept. Frequencies in cm^-1 up to max_frequency_cm1 (None: Nyquist).
    Returns a Dataset: `intensity` in (units of C) * fs, `intensity_normalized` (peak 1 per spectrum), coord
    `frequency` in cm^-1.

    >>> import numpy as np
    >>> v = np.zeros((2000, 1, 3))
    >>> v[:, 0, 0] = np.cos(2 * np.pi * np.arange(2000) / 20.0)  # 1 fs frames, a 20 fs period
    >>> spec = power_spectrum(vacf(v, timestep_fs=1.0))
    >>> spec.frequency.attrs["units"], float(spec.intensity_normalized.max())
    ('cm^-1', 1.0)
    >>> abs(float(spec.frequency[spec.intensity.values.argmax()]) - 1667.8) < 10  # 0.05 fs^-1 in cm^-1
    True
    """
    import xarray as xr

    if variable not in vacf_ds or "lag" not in vacf_ds[variable].dims:
        raise ValueError(f"expected a vacf() Dataset with a `{variable}` variable along `lag`")
    if int(zero_pad) < 1:
        raise ValueError(f"zero_pad must be an integer >= 1, got {zero_pad!r}")
    c = vacf_ds[variable].transpose(..., "lag")
    lag = vacf_ds.lag.values
    dt = float(lag[1] - lag[0])
    n = lag.size
    w = _lag_window(window, n)
    cw = c.values * w
    n_fft = int(zero_pad) * (2 * n - 1)
    mirrored = np.zeros(cw.shape[:-1] + (n_fft,))
    mirrored[..., :n] = cw
    mirrored[..., n_fft - n + 1:] = cw[..., :0:-1]
    intensity = np.fft.rfft(mirrored, axis=-1).real * dt
    frequency = np.fft.rfftfreq(n_fft, d=dt) * PER_FS_TO_CM1
    keep = frequency <= max_frequency_cm1 if max_frequency_cm1 is not None else slice(None)
    intensity, frequency = intensity[..., keep], frequency[keep]
    dims = c.dims[:-1] + ("frequency",)
    peak = np.max(np.abs(intensity), axis=-1, keepdims=True)
    units = f"({c.attrs.get('units', '')}) fs"
    coords = {k: vacf_ds.coords[k] for k in c.dims[:-1] if k in vacf_ds.coords}
    return xr.Dataset(
        {"intensity": (dims, intensity, {"units": units, "long_name": "power spectrum of the VACF"}),
         "intensity_normalized": (dims, intensity / np.where(peak > 0, peak, 1.0), {"units": "1"})},
        coords={**coords, "frequency": ("frequency", frequency, {"units": "cm^-1"})},
        attrs={**vacf_ds.attrs, "window": window, "zero_pad": int(zero_pad),
               "resolution_cm1": float(PER_FS_TO_CM1 / (n * dt)), "frequency_units": "cm^-1"},
    )


def spectrum_peaks(spectrum, *, variable: str = "intensity", n_peaks: int = 10,
                   min_separation_cm1: float = 30.0, min_frequency_cm1: float = 100.0) -> np.ndarray:
    """Frequencies (cm^-1, ascending) of the `n_peaks` highest local maxima of a 1-D power spectrum at least
    `min_separation_cm1` apart and above `min_frequency_cm1` (excludes the diffusive/rotational peak at 0).

    A synthetic spectrum with lines at 1000 and 3000 cm^-1 (the larger one first in height):

    >>> import numpy as np, xarray as xr
    >>> f = np.arange(0.0, 4000.0, 10.0)
    >>> y = np.exp(-((f - 1000) / 40) ** 2) + 2 * np.exp(-((f - 3000) / 40) ** 2) + 5 * np.exp(-(f / 40) ** 2)
    >>> spectrum = xr.Dataset({"intensity": ("frequency", y)}, coords={"frequency": f})
    >>> spectrum_peaks(spectrum).tolist()  # the peak at 0 is below min_frequency_cm1
    [1000.0, 3000.0]
    >>> spectrum_peaks(spectrum, n_peaks=1).tolist()
    [3000.0]
    """
    y = spectrum[variable].values
    f = spectrum.frequency.values
    if y.ndim != 1:
        raise ValueError(f"spectrum_peaks needs a 1-D spectrum; select one first (dims {spectrum[variable].dims})")
    is_max = np.r_[False, (y[1:-1] > y[:-2]) & (y[1:-1] >= y[2:]), False] & (f >= min_frequency_cm1)
    chosen: list[int] = []
    for i in np.flatnonzero(is_max)[np.argsort(-y[is_max])]:
        if all(abs(f[i] - f[j]) >= min_separation_cm1 for j in chosen):
            chosen.append(int(i))
        if len(chosen) == n_peaks:
            break
    return np.sort(f[chosen])


# --- harmonic normal modes -----------------------------------------------------------------------------------
def _rigid_body_basis(positions: np.ndarray, masses: np.ndarray, tol: float = 1e-6) -> np.ndarray:
    """Orthonormal columns spanning mass-weighted translations and rotations (Eckart): 6, or 5 if linear.

    Translation along a: sqrt(m_i) e_a; rotation about a: sqrt(m_i) (e_a x (r_i - r_com)). For a linear
    molecule the rotation about its axis is zero, and the rank test drops it.
    """
    sqrt_m = np.sqrt(masses)
    centred = positions - (masses @ positions) / masses.sum()
    vectors = []
    for a in range(3):
        e = np.zeros(3)
        e[a] = 1.0
        vectors.append((sqrt_m[:, None] * e).ravel())
        vectors.append((sqrt_m[:, None] * np.cross(e, centred)).ravel())
    u, s, _ = np.linalg.svd(np.stack(vectors, axis=1), full_matrices=False)
    return u[:, s > tol * s.max()]


def normal_modes(hessian, positions, numbers=None, *, masses=None, project: bool = True):
    """Harmonic frequencies (cm^-1) and normal modes from a Cartesian Hessian.

    hessian: (3N, 3N) or (N, 3, N, 3) in eV/Angstrom^2 (symmetrised here); positions (N, 3) Angstrom at a
    stationary point; numbers: (N,) atomic numbers; masses: (N,) amu (default: standard atomic weights of
    `numbers`).
    project: remove translations and rotations (Eckart; 5 for a linear molecule, 6 otherwise) by projecting the
    mass-weighted Hessian onto their orthogonal complement, leaving 3N-6 (3N-5) vibrational modes.
    Imaginary frequencies are reported as negative numbers.

    Returns a Dataset over `mode` (ascending frequency): `frequency` (cm^-1), `eigenvalue`
    (eV/(Angstrom^2 amu)), `modes` (mode, atom, xyz): Cartesian displacement vectors (mass-weighted eigenvector
    divided by sqrt(m), normalised to unit length), `reduced_mass` (amu; 1 / sum_i (l_i . l_i) / m_i for the
    normalised mass-weighted eigenvector l, the convention quantum-chemistry programs print), plus `positions`
    and `atomic_number` for animation. attrs: number of rigid-body modes removed, largest residual frequency of
    the removed space.

    Two 1 amu atoms on a 1 eV/Angstrom^2 spring: one vibration at 521.4709 sqrt(k / mu) = 521.4709 sqrt(2) cm^-1
    (mu = 0.5 amu, the two-body reduced mass) after the 5 rigid-body modes of a linear molecule are removed; its
    `reduced_mass` in the quantum-chemistry convention is 1 amu:

    >>> import numpy as np
    >>> hessian = np.zeros((6, 6))
    >>> hessian[np.ix_([0, 3], [0, 3])] = [[1.0, -1.0], [-1.0, 1.0]]  # k along x, the bond axis
    >>> modes = normal_modes(hessian, [[0.0, 0.0, 0.0], [0.74, 0.0, 0.0]], masses=[1.0, 1.0])
    >>> modes.sizes["mode"], int(modes.attrs["n_rigid_body_modes_removed"])
    (1, 5)
    >>> round(float(modes.frequency[0]), 2), round(float(modes.reduced_mass[0]), 6)
    (737.47, 1.0)
    """
    import xarray as xr

    r = np.asarray(positions, np.float64)
    if r.ndim != 2 or r.shape[1] != 3 or r.shape[0] < 2:
        raise ValueError(f"positions must have shape (N >= 2, 3) in Angstrom, got {r.shape}")
    n = r.shape[0]
    h = np.asarray(hessian, np.float64).reshape(-1)
    if h.size != (3 * n) ** 2:
        raise ValueError(f"hessian must have shape ({3 * n}, {3 * n}) or ({n}, 3, {n}, 3) for {n} atoms, got "
                         f"{np.shape(hessian)}")
    if not np.all(np.isfinite(h)) or not np.all(np.isfinite(r)):
        raise ValueError("hessian and positions must be finite")
    h = h.reshape(3 * n, 3 * n)
    h = 0.5 * (h + h.T)
    m = _checked_masses(numbers, masses, n, "give numbers= (atomic numbers) or masses= (amu)")
    inv_sqrt_m = np.repeat(1.0 / np.sqrt(m), 3)
    hm = h * inv_sqrt_m[:, None] * inv_sqrt_m[None, :]
    n_rigid, rigid_residual = 0, 0.0
    if project:
        basis = _rigid_body_basis(r, m)
        n_rigid = basis.shape[1]
        rigid_residual = float(np.abs(_to_cm1(np.linalg.eigvalsh(basis.T @ hm @ basis))).max())
        complement = np.linalg.svd(np.eye(3 * n) - basis @ basis.T)[0][:, : 3 * n - n_rigid]
        eigenvalues, vectors = np.linalg.eigh(complement.T @ hm @ complement)
        vectors = complement @ vectors
    else:
        eigenvalues, vectors = np.linalg.eigh(hm)
    cartesian = (vectors * inv_sqrt_m[:, None]).T.reshape(-1, n, 3)
    norm = np.linalg.norm(cartesian.reshape(len(eigenvalues), -1), axis=1)
    cartesian /= norm[:, None, None]
    reduced_mass = 1.0 / norm**2
    atomic_number = np.asarray(numbers, np.int32) if numbers is not None else np.zeros(n, np.int32)
    return xr.Dataset(
        {"frequency": ("mode", _to_cm1(eigenvalues), {"units": "cm^-1", "long_name": "harmonic wavenumber; "
                                                        "imaginary ones negative"}),
         "eigenvalue": ("mode", eigenvalues, {"units": "eV/(Angstrom^2 amu)"}),
         "modes": (("mode", "atom", "xyz"), cartesian, {"units": "1", "long_name": "normalised Cartesian "
                                                           "displacement"}),
         "reduced_mass": ("mode", reduced_mass, {"units": "amu"}),
         "positions": (("atom", "xyz"), r, {"units": "Angstrom"}),
         "masses": ("atom", m, {"units": "amu"})},
        coords={"mode": np.arange(len(eigenvalues)), "atomic_number": ("atom", atomic_number)},
        attrs={"n_rigid_body_modes_removed": n_rigid, "rigid_body_residual_cm1": rigid_residual,
               "frequency_units": "cm^-1", "conversion": "nu[cm^-1] = 521.4709 sqrt(lambda[eV/(A^2 amu)])"},
    )


def _to_cm1(eigenvalues) -> np.ndarray:
    e = np.asarray(eigenvalues, np.float64)
    return np.sign(e) * np.sqrt(np.abs(e)) * EIGENVALUE_TO_CM1


def hessian_of(energy_fn, positions) -> np.ndarray:
    """Cartesian Hessian (3N, 3N) in eV/Angstrom^2 of energy_fn ((N, 3) Angstrom -> scalar eV) by jax.hessian,
    at `positions` (N, 3) Angstrom.

    Computed in the positions' dtype: pass float64 positions (with jax_enable_x64) for frequencies to 0.1 cm^-1.

    >>> import numpy as np, jax.numpy as jnp
    >>> spring = lambda r: 0.5 * 2.0 * (jnp.linalg.norm(r[1] - r[0]) - 1.0) ** 2  # k = 2 eV/Angstrom^2
    >>> h = hessian_of(spring, np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]], np.float32))
    >>> h.shape, np.round(h[[0, 3]][:, [0, 3]], 4).tolist()
    ((6, 6), [[2.0, -2.0], [-2.0, 2.0]])
    """
    import jax
    import jax.numpy as jnp

    r = jnp.asarray(positions)
    if r.ndim != 2 or r.shape[1] != 3:
        raise ValueError(f"positions must have shape (N, 3) in Angstrom, got {r.shape}")
    h = jax.jit(jax.hessian(lambda x: energy_fn(x.reshape(r.shape))))(r.reshape(-1))
    h = np.asarray(h, np.float64)
    if not np.all(np.isfinite(h)):
        raise ValueError("the energy function's Hessian is not finite at these positions")
    return h


def normal_modes_from_energy(energy_fn, positions, numbers=None, *, masses=None, project: bool = True):
    """normal_modes() of the Hessian of energy_fn ((N, 3) Angstrom -> scalar eV) at `positions` (N, 3) Angstrom,
    by jax.hessian; numbers: (N,) atomic numbers, or masses: (N,) amu, as `normal_modes`.

    The positions should be a relaxed geometry of energy_fn (a large residual force gives spurious low modes).
    """
    return normal_modes(hessian_of(energy_fn, positions), np.asarray(positions), numbers, masses=masses,
                        project=project)


def potential_hessian(potential, system, block: int = 24) -> np.ndarray:
    """(3N, 3N) Hessian (eV/A^2) of a potential at a free System's geometry, in the potential's dtype.

    Column blocks of -dF/dR by forward-mode derivatives of the forces (`jax.linearize`, `block` columns at a time)
    on the graph of the pairs within the cutoff: exact, since a pair beyond the cutoff contributes an energy that
    is identically zero there, and the memory stays that of a few force evaluations (jax.hessian on every pair
    needs 3N tangents of the whole network at once). Symmetrised.
    """
    import jax
    import jax.numpy as jnp

    from ..graph import graph_from_system
    from ..potential_base import check_potential, float_dtype

    if system.periodic:
        raise ValueError("potential_hessian is for free molecules; the system is periodic")
    check_potential(potential)
    dtype = float_dtype(potential)
    graph = graph_from_system(system, potential.cutoff, dtype=dtype)
    n = system.n_atoms

    def forces(x):
        g = graph.replace(positions=jnp.asarray(graph.positions).at[:n].set(x.reshape(n, 3)))
        return potential.energy_and_forces(g)[1][:n].reshape(-1)

    _, jvp = jax.linearize(forces, jnp.asarray(system.positions, dtype).reshape(-1))
    jvp_block = jax.jit(jax.vmap(jvp))
    eye = np.eye(3 * n, dtype=dtype)
    h = -np.concatenate([np.asarray(jvp_block(jnp.asarray(eye[k:k + block])), np.float64)
                         for k in range(0, 3 * n, block)], axis=0)
    return 0.5 * (h + h.T)


def normal_modes_of(potential, system, *, project: bool = True):
    """normal_modes() of a potential at a System's geometry (relax it first, e.g. with `md.relax`), from
    `potential_hessian` (a free molecule). Computed in the potential's dtype: use a float64 potential
    (`Potential.with_dtype("float64")`, with jax_enable_x64) for frequencies to 0.1 cm^-1."""
    return normal_modes(potential_hessian(potential, system), np.asarray(system.positions), system.numbers,
                        project=project)


def mode_animation(modes_ds, mode: int, *, amplitude: float = 0.3, n_frames: int = 24) -> np.ndarray:
    """Frames (n_frames, N, 3) in Angstrom of one period of a normal mode: positions + A sin(phase) * mode.

    modes_ds: a normal_modes() Dataset (its `positions` and unit-length Cartesian `modes`); mode: index along
    `mode`; amplitude: largest total displacement (Angstrom, the norm of the 3N displacement vector);
    phases 2 pi k / n_frames, k = 0..n_frames-1 (the first frame is the equilibrium geometry).
    """
    n_modes = modes_ds.sizes["mode"]
    if not 0 <= int(mode) < n_modes:
        raise ValueError(f"mode {mode} is out of range: this Dataset has {n_modes} modes (0..{n_modes - 1})")
    if not (np.isfinite(amplitude) and amplitude > 0) or int(n_frames) < 2:
        raise ValueError(f"need amplitude > 0 Angstrom and n_frames >= 2, got {amplitude!r}, {n_frames!r}")
    r0 = np.asarray(modes_ds.positions.values, np.float64)
    displacement = np.asarray(modes_ds.modes.values[int(mode)], np.float64)
    phase = np.sin(2 * np.pi * np.arange(int(n_frames)) / int(n_frames))
    return r0[None] + amplitude * phase[:, None, None] * displacement[None]
