"""Fixed (non-learned) geometric building blocks: radial basis, cutoff, real spherical harmonics, contraction.

All functions are pure jax.numpy and keep the dtype of their input.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np


def physnet_rbf(d, cutoff: float, n: int):
    """PhysNet exponential-normal basis: exp(-beta (exp(-d) - mu_k)^2).

    d: (P,) Angstrom -> (P, n). mu_k evenly spaced on [exp(-cutoff), 1], beta = ((2/n)(1 - exp(-cutoff)))^-2.
    Not multiplied by the cutoff function (the attention is).
    """
    start = math.exp(-cutoff)
    mu = jnp.asarray(np.linspace(start, 1.0, n), dtype=d.dtype)
    beta = ((2.0 / n) * (1.0 - start)) ** -2
    return jnp.exp(-beta * (jnp.exp(-d)[:, None] - mu) ** 2)


def cosine_cutoff(d, cutoff: float):
    """phi(d) = (cos(pi d / r_c) + 1) / 2 for d < r_c, else 0. Value and slope vanish at r_c."""
    return jnp.where(d < cutoff, 0.5 * (jnp.cos(jnp.pi * d / cutoff) + 1.0), jnp.zeros_like(d))


def spherical_harmonics(u, degrees: tuple[int, ...]):
    """Real, orthonormal spherical harmonics of unit vectors, concatenated over `degrees`.

    u: (P, 3) unit vectors -> (P, sum(2l+1)), for each l the order m = -l..l.
    Built from the associated-Legendre recursion in Cartesian form (no angles, so smooth everywhere):
    Y_lm = N_lm Q_l^|m|(z) * Re((x+iy)^m) for m > 0, Im((x+iy)^|m|) for m < 0.
    """
    if not degrees:
        return jnp.zeros(u.shape[:-1] + (0,), u.dtype)
    x, y, z = u[..., 0], u[..., 1], u[..., 2]
    lmax = max(degrees)
    # A_m + i B_m = (x + i y)^m
    A, B = [jnp.ones_like(x)], [jnp.zeros_like(x)]
    for m in range(lmax):
        A.append(x * A[m] - y * B[m])
        B.append(x * B[m] + y * A[m])
    # Q[l][m]: P_l^m(z) = (1 - z^2)^(m/2) Q_l^m(z), without the Condon-Shortley phase.
    Q = [[None] * (lmax + 1) for _ in range(lmax + 1)]
    for m in range(lmax + 1):
        Q[m][m] = jnp.full_like(z, float(np.prod(np.arange(1, 2 * m, 2)) if m > 0 else 1.0))
        if m + 1 <= lmax:
            Q[m + 1][m] = (2 * m + 1) * z * Q[m][m]
        for l in range(m + 2, lmax + 1):
            Q[l][m] = ((2 * l - 1) * z * Q[l - 1][m] - (l + m - 1) * Q[l - 2][m]) / (l - m)
    out = []
    for l in degrees:
        for m in range(-l, l + 1):
            am = abs(m)
            norm = math.sqrt((2 * l + 1) / (4 * math.pi) * math.factorial(l - am) / math.factorial(l + am))
            if m == 0:
                out.append(norm * Q[l][0])
            elif m > 0:
                out.append(math.sqrt(2.0) * norm * Q[l][am] * A[am])
            else:
                out.append(math.sqrt(2.0) * norm * Q[l][am] * B[am])
    return jnp.stack(out, axis=-1)


def degree_index(degrees: tuple[int, ...]) -> np.ndarray:
    """(M,) position in `degrees` of each EV channel, e.g. (1, 2) -> [0,0,0,1,1,1,1,1]."""
    return np.concatenate([np.full(2 * l + 1, k) for k, l in enumerate(degrees)]).astype(np.int32) \
        if degrees else np.zeros(0, np.int32)


def contraction_matrix(degrees: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    """(M, |L|) matrix C with C[(l,m), l] = 1/sqrt(2l+1), so that c(v) = (v * v) @ C."""
    idx = degree_index(degrees)
    C = np.zeros((idx.size, len(degrees)), dtype)
    for row, k in enumerate(idx):
        C[row, k] = 1.0 / math.sqrt(2 * degrees[k] + 1)
    return C


def contract(v, degrees: tuple[int, ...]):
    """Per-degree contraction c_l(v) = (1/sqrt(2l+1)) sum_m v_(l,m)^2: (..., M) -> (..., |L|), rotation invariant."""
    C = jnp.asarray(contraction_matrix(degrees, np.float64), dtype=v.dtype)
    return (v * v) @ C
