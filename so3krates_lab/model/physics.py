"""Physical energy terms that a SO3krates network can carry beside its learned energy (as SO3LR does).

Each term is a pure function of pair distances and per-atom quantities, returning per-atom energies in eV
(each pair's energy split equally between its two atoms), so that the model sums them with the network's
atomic energies:

* `zbl_energy`: Ziegler-Biersack-Littmark nuclear repulsion on the short-range pairs, switched off smoothly
  between 0 and 1.5 Angstrom and multiplied by the model's cutoff function, with the screening parameters as
  (trainable) parameters.
* `coulomb_energy`: electrostatics of predicted partial charges, erf-damped at short range (1/r -> erf(r/sigma)/r)
  and, with a long-range cutoff r_lr, force-shifted and switched to zero at r_lr.
* `dispersion_energy`: many-body-free pairwise dispersion from the vdW-QDO model: C6, C8, C10 from free-atom
  polarisabilities and C6 scaled by predicted Hirshfeld volume ratios, damped at short range, switched to zero
  between r_lr - damping and r_lr.

Formulas and constants are those of SO3LR (Kabylda, Frank et al., J. Am. Chem. Soc. 147, 33723 (2025)) as its
public code evaluates them, including ASE's CODATA-2014 Bohr and Hartree, so that the pretrained SO3LR
weights reproduce its own energies to round-off (tests/test_so3lr.py).

Long-range pairs: `dense_pairs` takes every pair of atoms of the same structure (no neighbour list: O(A^2)
per padded Graph, fine up to a few thousand atoms), under the minimum-image convention for a structure with a
cell, which is exact when r_lr is at most half the cell's smallest perpendicular width; a structure whose cell
is too small gets NaN energies rather than silently missing images. A structure with a nonzero cell is treated
as periodic along all three lattice vectors.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

# ASE's CODATA-2014 values, which SO3LR's code uses
BOHR = 0.5291772105638411  # Angstrom
HARTREE = 27.211386024367243  # eV
FINE_STRUCTURE = 0.007297352566206496
COULOMB_CONSTANT = 14.399645351950548  # e^2 / (4 pi eps0) in eV Angstrom (= Bohr * Hartree)

# Free-atom static dipole polarisabilities (Bohr^3) and C6 coefficients (Hartree Bohr^6), the Tkatchenko-Scheffler
# reference values SO3LR's dispersion uses, indexed by atomic number - 1.
FREE_ATOM_POLARIZABILITY = np.array([  # Z = 1..102
    4.5, 1.38, 164.2, 38.0, 21.0, 12.0, 7.4, 5.4, 3.8, 2.67,
    162.7, 71.0, 60.0, 37.0, 25.0, 19.6, 15.0, 11.1, 292.9, 160.0,
    120.0, 98.0, 84.0, 78.0, 63.0, 56.0, 50.0, 48.0, 42.0, 40.0,
    60.0, 41.0, 29.0, 25.0, 20.0, 16.8, 319.2, 199.0, 126.74, 119.97,
    101.6, 88.42, 80.08, 65.89, 56.1, 23.68, 50.6, 39.7, 70.22, 55.95,
    43.67, 37.65, 35.0, 27.3, 399.9, 275.0, 213.7, 204.7, 215.8, 208.4,
    200.2, 192.1, 184.2, 158.3, 169.5, 164.64, 156.3, 150.2, 144.3, 138.9,
    137.2, 99.52, 82.53, 71.04, 63.04, 55.06, 42.51, 39.68, 36.5, 33.9,
    69.92, 61.8, 49.02, 45.01, 38.93, 33.54, 317.8, 246.2, 203.3, 217.0,
    154.4, 127.8, 150.5, 132.2, 131.2, 143.6, 125.3, 121.5, 117.5, 113.4,
    109.4, 105.4,
])
FREE_ATOM_C6 = np.array([  # Z = 1..102
    6.5, 1.46, 1387.0, 214.0, 99.5, 46.6, 24.2, 15.6, 9.52, 6.38,
    1556.0, 627.0, 528.0, 305.0, 185.0, 134.0, 94.6, 64.3, 3897.0, 2221.0,
    1383.0, 1044.0, 832.0, 602.0, 552.0, 482.0, 408.0, 373.0, 253.0, 284.0,
    498.0, 354.0, 246.0, 210.0, 162.0, 129.6, 4691.0, 3170.0, 1968.58, 1677.91,
    1263.61, 1028.73, 1390.87, 609.75, 469.0, 157.5, 339.0, 452.0, 707.05, 587.42,
    459.32, 396.0, 385.0, 285.9, 6846.0, 5727.0, 3884.5, 3708.33, 3911.84, 3908.75,
    3847.68, 3708.69, 3511.71, 2781.53, 3124.41, 2984.29, 2839.95, 2724.12, 2576.78, 2387.53,
    2371.8, 1274.8, 1019.92, 847.93, 710.2, 596.67, 359.1, 347.1, 298.0, 392.0,
    717.44, 697.0, 571.0, 530.92, 457.53, 390.63, 4224.44, 4851.32, 3604.41, 4047.54,
    2367.42, 1877.1, 2507.88, 2117.27, 2110.98, 2403.22, 1985.82, 1891.92, 1851.1, 1787.07,
    1701.0, 1578.18,
])

# The initial ZBL screening (Ziegler, Biersack, Littmark): coefficients c_k and exponents a_k of the universal
# screening function, the exponent p of Z and the inverse screening length 1 / (0.8854 a0) in 1/Angstrom.
ZBL_DEFAULTS = {"a1": 3.2, "a2": 0.9423, "a3": 0.4028, "a4": 0.2016, "c1": 0.1818, "c2": 0.5099, "c3": 0.2802,
                "c4": 0.02817, "p": 0.23, "d": 1.0 / (0.8854 * BOHR)}
ZBL_SWITCH_OFF = 1.5  # Angstrom: the repulsion is switched off between 0 and this distance
COULOMB_SWITCH_ON = 0.45  # the Coulomb switch starts at this fraction of the long-range cutoff


def softplus_inverse(y):
    """x with softplus(x) = y (y > 0), NumPy float64: ZBL parameters are stored before their softplus."""
    y = np.asarray(y, np.float64)
    return y + np.log(-np.expm1(-y))


def _sigma(x):
    """exp(-1/x) for x > 0, else 0: C-infinity, with a gradient that is finite everywhere."""
    positive = x > 0
    safe = jnp.where(positive, x, jnp.ones_like(x))
    return jnp.where(positive, jnp.exp(-1.0 / safe), jnp.zeros_like(x))


def switch_off(r, r_on: float, r_off: float):
    """A smooth step: 1 for r <= r_on, 0 for r >= r_off, s(1 - c) / (s(1 - c) + s(c)) between, c = (r - r_on) /
    (r_off - r_on) and s(x) = exp(-1/x): every derivative vanishes at both ends."""
    c = (r - r_on) / (r_off - r_on)
    a, b = _sigma(1.0 - c), _sigma(c)
    return a / (a + b)


def zbl_energy(params: dict, z_i, z_j, d, phi, pair_mask, receivers, senders, n_atoms: int):
    """Per-atom ZBL repulsion (A,) eV of the stored (unordered) pairs.

    params: the raw (pre-softplus) a1..a4, c1..c4, p, d, each shape (1,). z_i, z_j: (P,) atomic numbers (float),
    d: (P,) Angstrom, phi: (P,) the model's cutoff function on d. E_pair = w(d) phi(d) k_e Z_i Z_j / d *
    sum_k c_k exp(-a_k d (Z_i^p + Z_j^p) / a_s), with c_k normalised to sum 1 and w switching off at 1.5 A.
    """
    sp = {k: jax.nn.softplus(jnp.asarray(v, d.dtype)[0]) for k, v in params.items()}
    c = [sp[f"c{k}"] for k in range(1, 5)]
    c_sum = c[0] + c[1] + c[2] + c[3]
    x = d * (z_i ** sp["p"] + z_j ** sp["p"]) * sp["d"]
    screening = sum(c[k] / c_sum * jnp.exp(-sp[f"a{k + 1}"] * x) for k in range(4))
    pair = switch_off(d, 0.0, ZBL_SWITCH_OFF) * phi * COULOMB_CONSTANT * z_i * z_j / d * screening
    pair = jnp.where(pair_mask, pair, jnp.zeros_like(pair))
    half = 0.5 * pair
    return (jax.ops.segment_sum(half, receivers, num_segments=n_atoms)
            + jax.ops.segment_sum(half, senders, num_segments=n_atoms))


def dense_pairs(graph, dtype, cutoff: float | None):
    """Every pair of atoms of the same structure, for the long-range terms.

    Returns (r (A, A) Angstrom, mask (A, A) bool, ok (G,) bool): r[i, j] = |R_j - R_i| under the minimum image of
    the structure's cell (none for a zero cell); mask excludes i == j, padding atoms and pairs across structures
    (their r is set to 1, so nothing is NaN); ok is False for a periodic structure whose cell is too small for
    the minimum image at `cutoff` (None: no cutoff, only free structures are ok).
    """
    pos = graph.positions.astype(dtype)
    a = pos.shape[0]
    g_i = graph.atom_graph
    same = (g_i[:, None] == g_i[None, :]) & graph.atom_mask[:, None] & graph.atom_mask[None, :]
    mask = same & ~jnp.eye(a, dtype=bool)
    # zero outside the mask before anything nonlinear: a structure with non-finite positions (an exploded
    # replica, an empty minimiser slot) must not reach another structure's energy or its gradient
    rij = jnp.where(same[..., None], pos[None, :, :] - pos[:, None, :], jnp.zeros((), dtype))  # (A, A, 3)
    cells = graph.cell.astype(dtype)  # (G, 3, 3), rows are lattice vectors
    periodic = jnp.any(cells != 0, axis=(1, 2))  # (G,)
    safe_cells = jnp.where(periodic[:, None, None], cells, jnp.eye(3, dtype=dtype)[None])
    inv = jnp.linalg.inv(safe_cells)  # (G, 3, 3)
    frac = jnp.einsum("ijc,icd->ijd", rij, inv[g_i])
    frac = frac - jnp.where(periodic[g_i][:, None, None], jnp.round(frac), jnp.zeros_like(frac))
    rij = jnp.einsum("ijd,idc->ijc", frac, safe_cells[g_i])
    r2 = jnp.sum(rij * rij, axis=-1)
    r = jnp.sqrt(jnp.where(mask, r2, jnp.ones_like(r2)))
    # the minimum image holds every pair within `cutoff` when cutoff <= half the smallest perpendicular width
    volume = jnp.abs(jnp.linalg.det(safe_cells))
    cross = jnp.stack([jnp.cross(safe_cells[:, 1], safe_cells[:, 2]), jnp.cross(safe_cells[:, 2], safe_cells[:, 0]),
                       jnp.cross(safe_cells[:, 0], safe_cells[:, 1])], axis=1)
    widths = volume[:, None] / jnp.linalg.norm(cross, axis=-1)  # (G, 3)
    if cutoff is None:
        ok = ~periodic
    else:
        ok = ~periodic | (jnp.min(widths, axis=-1) >= 2.0 * cutoff)
    return r, mask, ok


def pair_operands(values, mask):
    """(v_i, v_j), each (A, A), of per-atom values (A,), zero where `mask` is False. Pair terms are built from
    these, never from the outer product masked afterwards: masking a product keeps its value finite but not its
    gradient (0 * NaN is NaN), so one structure's non-finite charges would reach every other structure's."""
    zero = jnp.zeros((), values.dtype)
    return jnp.where(mask, values[:, None], zero), jnp.where(mask, values[None, :], zero)


def coulomb_energy(q, r, mask, sigma: float, cutoff: float | None):
    """Per-atom electrostatic energy (A,) eV of partial charges q (A,) (e) over the dense pairs.

    phi(r) = erf(r / sigma) / r. Without a cutoff: E_ij = k_e q_i q_j phi(r). With cutoff r_c: the force-shifted
    form phi_sf(r) = phi(r) - phi(r_c) - phi'(r_c) (r - r_c) is blended in by the switch f from 0.45 r_c to r_c,
    E_ij = k_e q_i q_j (f (phi(r) - phi(r_c)) + (1 - f) phi_sf(r)) for r < r_c, else 0.
    """
    dtype = r.dtype
    s = jnp.asarray(sigma, dtype)

    def phi(x):
        return jax.lax.erf(x / s) / x

    q_i, q_j = pair_operands(q, mask)
    qq = q_i * q_j
    if cutoff is None:
        pair = COULOMB_CONSTANT * qq * phi(r)
    else:
        rc = jnp.asarray(cutoff, dtype)
        dphi_rc = (2.0 * rc * jnp.exp(-(rc / s) ** 2) / (math.sqrt(math.pi) * s) - jax.lax.erf(rc / s)) / rc ** 2
        f = switch_off(r, COULOMB_SWITCH_ON * cutoff, cutoff)
        shifted = phi(r) - phi(rc)
        blended = f * shifted + (1.0 - f) * (shifted - dphi_rc * (r - rc))
        pair = jnp.where(r < rc, COULOMB_CONSTANT * qq * blended, jnp.zeros_like(r))
    pair = jnp.where(mask, pair, jnp.zeros_like(pair))
    return 0.5 * jnp.sum(pair, axis=1)


def dispersion_energy(numbers, hirshfeld_ratios, r, mask, scale: float, cutoff: float | None, damping: float):
    """Per-atom dispersion energy (A,) eV over the dense pairs (vdW-QDO with TS-scaled free-atom references).

    alpha_i = alpha_free(Z_i) h_i, C6_i = C6_free(Z_i) h_i^2 (h: Hirshfeld ratios), combined as alpha_ij =
    (alpha_i + alpha_j) / 2 and C6_ij = 2 C6_i C6_j alpha_i alpha_j / (alpha_i^2 C6_j + alpha_j^2 C6_i); the QDO
    gamma_ij from a cubic fit in the vdW radius R_vdW = FINE_STRUCTURE^(-4/21) alpha_ij^(1/7); C8 = 5 C6 / gamma,
    C10 = 245 C6 / (8 gamma^2); damping length p = scale * 2 * 2.54 alpha_ij^(1/7) (Bohr);
    E_ij = -sum_n C_n / (R^n + p^n), n = 6, 8, 10, R in Bohr, switched off between cutoff - damping and cutoff.
    """
    dtype = r.dtype
    idx = jnp.clip(numbers - 1, 0, FREE_ATOM_POLARIZABILITY.size - 1)
    alpha = jnp.asarray(FREE_ATOM_POLARIZABILITY, dtype)[idx] * hirshfeld_ratios
    c6 = jnp.asarray(FREE_ATOM_C6, dtype)[idx] * hirshfeld_ratios ** 2
    a_i, a_j = pair_operands(alpha, mask)
    c_i, c_j = pair_operands(c6, mask)
    # padding atoms have h = 0: keep their (masked) entries finite
    alpha_ij = jnp.where(mask, 0.5 * (a_i + a_j), jnp.ones_like(r))
    denominator = jnp.where(mask, a_i ** 2 * c_j + a_j ** 2 * c_i, jnp.ones_like(r))
    c6_ij = jnp.where(mask, 2.0 * c_i * c_j * a_i * a_j / denominator, jnp.zeros_like(r))
    radius = FINE_STRUCTURE ** (-4.0 / 21.0) * alpha_ij ** (1.0 / 7.0)
    width = -0.00078893 * radius ** 3 + 0.04125273 * radius ** 2 + 0.24428889 * radius - 0.00433008
    gamma = 0.5 / width ** 2
    c8 = 5.0 / gamma * c6_ij
    c10 = 245.0 / 8.0 / gamma ** 2 * c6_ij
    p = jnp.asarray(scale, dtype) * 2.0 * 2.54 * alpha_ij ** (1.0 / 7.0)
    x = r / BOHR
    pair = -(c6_ij / (x ** 6 + p ** 6) + c8 / (x ** 8 + p ** 8) + c10 / (x ** 10 + p ** 10)) * HARTREE
    if cutoff is not None:
        pair = pair * switch_off(r, cutoff - damping, cutoff)
    pair = jnp.where(mask, pair, jnp.zeros_like(pair))
    return 0.5 * jnp.sum(pair, axis=1)
