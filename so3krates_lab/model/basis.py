"""Fixed (non-learned) geometric building blocks: radial basis, cutoff, real spherical harmonics, contraction.

All functions are pure jax.numpy and keep the dtype of their input.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np


def physnet_rbf(d, cutoff: float, n: int):
    """PhysNet exponential-normal basis: exp(-beta (exp(-d) - mu_k)^2).

    d: (P,) Angstrom -> (P, n). mu_k evenly spaced on [exp(-cutoff), 1], beta = ((2/n)(1 - exp(-cutoff)))^-2,
    with cutoff in Angstrom. Not multiplied by the cutoff function (the attention is).

    >>> import jax.numpy as jnp
    >>> rbf = physnet_rbf(jnp.array([0.0, 1.0, 2.0]), cutoff=5.0, n=8)
    >>> rbf.shape, round(float(rbf[0, -1]), 6)  # d = 0 sits on the last centre, mu = 1
    ((3, 8), 1.0)
    """
    start = math.exp(-cutoff)
    mu = jnp.asarray(np.linspace(start, 1.0, n), dtype=d.dtype)
    beta = ((2.0 / n) * (1.0 - start)) ** -2
    return jnp.exp(-beta * (jnp.exp(-d)[:, None] - mu) ** 2)


# SO3LR's Bernstein exponent (1/Angstrom), as its code holds it: the float32 nearest to 0.9448630629184640
BERNSTEIN_GAMMA = float(np.float32(0.9448630629184640))


def bernstein_rbf(d, n: int, gamma: float = BERNSTEIN_GAMMA):
    """Bernstein basis of x = exp(-gamma d): b_k(x) = C(n-1, k) x^k (1 - x)^(n-1-k), k = 0..n-1.

    d: (P,) Angstrom -> (P, n), evaluated in log form; 0 where x is 0 or 1 (d = 0 or infinite: padding).
    Not multiplied by the cutoff function (the attention is).
    """
    k = np.arange(n)
    log_binomial = np.array([math.lgamma(n) - math.lgamma(j + 1) - math.lgamma(n - j) for j in k])
    x = jnp.exp(-jnp.asarray(gamma, d.dtype) * d)[:, None]
    inside = (x != 0) & (x != 1)
    x = jnp.where(inside, x, jnp.full_like(x, 0.5))
    kk = jnp.asarray(k, d.dtype)
    log_b = jnp.asarray(log_binomial, d.dtype) + kk * jnp.log(x) + (n - 1 - kk) * jnp.log1p(-x)
    return jnp.where(inside, jnp.exp(log_b), jnp.zeros_like(log_b))


def radial_basis(d, cutoff: float, n: int, kind: str = "physnet"):
    """The config's radial basis (P,) -> (P, n): "physnet" or "bernstein"."""
    if kind == "physnet":
        return physnet_rbf(d, cutoff, n)
    if kind == "bernstein":
        return bernstein_rbf(d, n)
    raise ValueError(f"unknown radial function {kind!r}")


def polynomial_cutoff(d, cutoff: float):
    """PhysNet's phi(d) = 1 - 6x^5 + 15x^4 - 10x^3, x = d / r_c, for d < r_c, else 0 (value, slope and curvature
    vanish at r_c)."""
    x = d / cutoff
    value = 1.0 - 6.0 * x ** 5 + 15.0 * x ** 4 - 10.0 * x ** 3
    return jnp.where(d < cutoff, value, jnp.zeros_like(d))


def cutoff_function(d, cutoff: float, kind: str = "cosine"):
    """The config's cutoff function: "cosine" or "polynomial"."""
    if kind == "cosine":
        return cosine_cutoff(d, cutoff)
    if kind == "polynomial":
        return polynomial_cutoff(d, cutoff)
    raise ValueError(f"unknown cutoff function {kind!r}")


def cosine_cutoff(d, cutoff: float):
    """phi(d) = (cos(pi d / r_c) + 1) / 2 for d < r_c, else 0. Value and slope vanish at r_c.

    d: distances, Angstrom (any shape); cutoff: r_c, Angstrom.

    >>> import jax.numpy as jnp
    >>> [round(float(x), 6) for x in cosine_cutoff(jnp.array([0.0, 2.5, 5.0, 6.0]), cutoff=5.0)]
    [1.0, 0.5, 0.0, 0.0]
    """
    return jnp.where(d < cutoff, 0.5 * (jnp.cos(jnp.pi * d / cutoff) + 1.0), jnp.zeros_like(d))


def spherical_harmonics(u, degrees: tuple[int, ...]):
    """Real, orthonormal spherical harmonics of unit vectors, concatenated over `degrees`.

    u: (P, 3) unit vectors -> (P, sum(2l+1)), for each l the order m = -l..l.
    Built from the associated-Legendre recursion in Cartesian form (no angles, so smooth everywhere):
    Y_lm = N_lm Q_l^abs(m)(z) * Re((x+iy)^m) for m > 0, Im((x+iy)^abs(m)) for m < 0.

    >>> import jax.numpy as jnp
    >>> y = spherical_harmonics(jnp.array([[0.0, 0.0, 1.0]]), (1,))  # m = -1, 0, 1 along z
    >>> [round(float(v), 6) for v in y[0]]  # Y_10 = sqrt(3 / (4 pi)) z
    [0.0, 0.488603, 0.0]
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
    """(M, len(degrees)) matrix C with C[(l,m), l] = 1/sqrt(2l+1), so that c(v) = (v * v) @ C."""
    idx = degree_index(degrees)
    C = np.zeros((idx.size, len(degrees)), dtype)
    for row, k in enumerate(idx):
        C[row, k] = 1.0 / math.sqrt(2 * degrees[k] + 1)
    return C


def contract(v, degrees: tuple[int, ...]):
    """Per-degree contraction c_l(v) = (1/sqrt(2l+1)) sum_m v_(l,m)^2: (..., M) -> (..., len(degrees)), rotation
    invariant.

    Of spherical harmonics: sqrt(2l+1) / (4 pi) in every direction (the addition theorem):

    >>> import numpy as np, jax.numpy as jnp
    >>> u = jnp.array([[0.0, 0.0, 1.0], [0.6, 0.0, 0.8], [0.0, -1.0, 0.0]])
    >>> c = contract(spherical_harmonics(u, (1, 2, 3)), (1, 2, 3))
    >>> bool(np.allclose(c, np.sqrt([3.0, 5.0, 7.0]) / (4 * np.pi), atol=1e-6))
    True
    """
    C = jnp.asarray(contraction_matrix(degrees, np.float64), dtype=v.dtype)
    return (v * v) @ C
