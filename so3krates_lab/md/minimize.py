"""Energy minimisation as pure (init, step) pairs, and a batched driver that relaxes many structures at once.

FIRE (Bitzek et al., Phys. Rev. Lett. 97, 170201 (2006)) with unit masses: positions Angstrom, forces eV/A, the
time step dimensionless (as in ASE's FIRE, dt 0.1 growing to at most 1.0), every step's displacement capped at
`max_step` Angstrom. L-BFGS (`lbfgs`, no line search, as ASE's LBFGS) usually needs several times fewer force
calls to reach a tight force threshold. The same `force_fn(positions, aux) -> (energy, forces, aux)` as the
integrators.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


class Minimizer(tuple):
    """A minimiser's (init, step) pair, unpacked as such (`init, step = lbfgs(force_fn)`), with one more function:

    `fresh(positions, aux=None)`: a state whose next `step` evaluates the forces at `positions`, moves nothing and
    returns exactly `init(positions, aux)`: step counter -1 and zero forces. `md.BatchRelaxer` loads new
    structures this way, so that starting a quench costs its own slot one step of the compiled chunk instead of
    an extra force evaluation of every slot. A slot in that state must not be judged converged (its forces are
    zero): test `state.step < 0`.
    """

    def __new__(cls, init, step, fresh=None):
        pair = super().__new__(cls, (init, step))
        pair.fresh = fresh
        return pair


@struct.dataclass
class FireState:
    """The state of one FIRE minimisation (`relax_batch` stacks a leading (B,) axis).

    positions: (N, 3) Angstrom; velocities: (N, 3) FIRE's fictitious velocities (unit masses, Angstrom per unit
    of dt); forces: (N, 3) eV/A; energy: eV; dt: the current FIRE time step, dimensionless (unit masses, as in
    ASE); alpha: the velocity mixing; n_positive: steps since the last uphill one; step: steps taken; aux: the
    force function's own state."""

    positions: jax.Array
    velocities: jax.Array
    forces: jax.Array
    energy: jax.Array
    dt: jax.Array
    alpha: jax.Array
    n_positive: jax.Array
    step: jax.Array
    aux: object = None

    @property
    def fmax(self):
        """Largest atomic force norm (eV/A)."""
        return jnp.sqrt(jnp.max(jnp.sum(self.forces**2, axis=-1)))


def fire(force_fn, dt_start: float = 0.1, dt_max: float = 1.0, max_step: float = 0.2, n_min: int = 5,
         f_inc: float = 1.1, f_dec: float = 0.5, alpha_start: float = 0.1, f_alpha: float = 0.99):
    """(init(positions, aux=None), step(state)) for FIRE; ASE's default parameters.

    dt_start, dt_max: the initial and largest time step, dimensionless (unit masses, as in ASE's FIRE);
    max_step: the largest displacement of a step, Angstrom (the norm over all atoms); n_min, f_inc, f_dec,
    alpha_start, f_alpha: FIRE's step-growth and mixing parameters (Bitzek et al.).
    """

    def init(positions, aux=None):
        positions = jnp.asarray(positions)
        energy, forces, aux = force_fn(positions, aux)
        z = jnp.zeros((), positions.dtype)
        return FireState(positions=positions, velocities=jnp.zeros_like(positions), forces=forces.astype(
            positions.dtype), energy=energy, dt=z + dt_start, alpha=z + alpha_start,
            n_positive=jnp.zeros((), jnp.int32), step=jnp.zeros((), jnp.int32), aux=aux)

    def fresh(positions, aux=None):
        # zero forces and velocities: the next step is "uphill", so it zeroes the velocities, sets alpha to
        # alpha_start, n_positive to 0, multiplies dt by f_dec (hence dt_start / f_dec here) and moves by 0
        positions = jnp.asarray(positions)
        z = jnp.zeros((), positions.dtype)
        return FireState(positions=positions, velocities=jnp.zeros_like(positions), forces=jnp.zeros_like(positions),
                         energy=z, dt=z + dt_start / f_dec, alpha=z + alpha_start,
                         n_positive=jnp.zeros((), jnp.int32), step=jnp.full((), -1, jnp.int32), aux=aux)

    def step(s: FireState) -> FireState:
        f, v = s.forces, s.velocities
        power = jnp.sum(f * v)
        f_norm = jnp.sqrt(jnp.sum(f * f))
        v_norm = jnp.sqrt(jnp.sum(v * v))
        mixed = (1 - s.alpha) * v + s.alpha * v_norm * f / jnp.maximum(f_norm, 1e-30)
        uphill = power <= 0
        v = jnp.where(uphill, jnp.zeros_like(v), mixed)
        grow = (~uphill) & (s.n_positive > n_min)
        dt = jnp.where(uphill, s.dt * f_dec, jnp.where(grow, jnp.minimum(s.dt * f_inc, dt_max), s.dt))
        alpha = jnp.where(uphill, alpha_start, jnp.where(grow, s.alpha * f_alpha, s.alpha))
        n_positive = jnp.where(uphill, 0, s.n_positive + 1)
        v = v + dt * f
        dx = dt * v
        norm = jnp.sqrt(jnp.sum(dx * dx))
        dx = dx * jnp.minimum(1.0, max_step / jnp.maximum(norm, 1e-30))
        positions = s.positions + dx
        energy, forces, aux = force_fn(positions, s.aux)
        return FireState(positions=positions, velocities=v, forces=forces.astype(positions.dtype), energy=energy,
                         dt=dt, alpha=alpha, n_positive=n_positive, step=s.step + 1, aux=aux)

    return Minimizer(init, step, fresh)


def relax_batch(init, step, positions, fmax: float = 1e-3, max_steps: int = 5000, aux=None):
    """Relax a batch of structures, positions (B, N, 3) Angstrom, in one compiled loop until every max force <
    fmax (eV/A) or max_steps. init, step: a minimiser (`fire` or `lbfgs`). Converged structures stop moving.
    Returns the final batched state (state.fmax per structure via vmap) and a (B,) bool array of which
    converged.

    aux: a batched aux (e.g. neighbour lists stacked with jax.tree.map) or None.
    """
    states = jax.vmap(init)(jnp.asarray(positions), aux) if aux is not None else jax.vmap(init)(
        jnp.asarray(positions))
    vstep = jax.vmap(step)
    vfmax = jax.vmap(lambda s: s.fmax)

    def cond(carry):
        s, k = carry
        return (k < max_steps) & jnp.any(vfmax(s) >= fmax)

    def body(carry):
        s, k = carry
        done = vfmax(s) < fmax
        new = vstep(s)
        keep = lambda a, b: jnp.where(done.reshape(done.shape + (1,) * (a.ndim - 1)), a, b)  # noqa: E731
        return jax.tree.map(keep, s, new), k + 1

    final, _ = jax.jit(lambda s: jax.lax.while_loop(cond, body, (s, 0)))(states)
    return final, vfmax(final) < fmax


@struct.dataclass
class LbfgsState:
    """The state of one L-BFGS minimisation (`relax_batch` stacks a leading (B,) axis).

    positions: (N, 3) Angstrom; forces: (N, 3) eV/A; energy: eV; s_hist, y_hist, rho: the step memory (below);
    step: steps taken; aux: the force function's own state."""

    positions: jax.Array
    forces: jax.Array
    energy: jax.Array
    s_hist: jax.Array  # (memory, N, 3) position steps, newest last (Angstrom)
    y_hist: jax.Array  # (memory, N, 3) gradient changes, newest last (eV/A)
    rho: jax.Array  # (memory,) 1 / (s . y); 0 marks an empty slot
    step: jax.Array
    aux: object = None

    @property
    def fmax(self):
        """Largest atomic force norm (eV/A)."""
        return jnp.sqrt(jnp.max(jnp.sum(self.forces**2, axis=-1)))


def lbfgs(force_fn, memory: int = 10, max_step: float = 0.2, curvature: float = 70.0, precon: str | None = None,
          r_nn: float = 1.1, precon_A: float = 3.0, precon_cutoff: float = 2.0, c_stab: float = 0.1):
    """(init(positions, aux=None), step(state)) for limited-memory BFGS without line search (as ASE's LBFGS).

    The inverse Hessian is built from the last `memory` (step, gradient change) pairs by the two-loop recursion,
    starting from 1/curvature (curvature in eV/A^2, ASE's default 70) and, once pairs exist, from the usual
    scaling s.y / y.y. Each step is scaled so that no atom moves more than max_step Angstrom. A pair with
    s.y <= 0 (negative curvature) is not stored, and a non-descent direction clears the memory and falls back to
    steepest descent. No energy comparisons: near convergence float32 energies are rounding noise.

    precon="exp": the Exp preconditioner (Packwood et al., J. Chem. Phys. 144, 164109 (2016)) as the initial
    inverse Hessian: P = L + c_stab I, with L the graph Laplacian of the weights exp(-A (r_ij / r_nn - 1)) of atom
    pairs closer than precon_cutoff x r_nn (A = precon_A, r_nn Angstrom, a typical bond length), rebuilt from the
    current positions at every step (an (N, N) Cholesky factorisation, negligible beside a model evaluation) and
    scaled by s.y / (y.P^-1 y). It moves bonded neighbours together, so soft collective motions (the torsions of
    a chain) relax in fewer steps: measured on Ac-Ala3-NHMe after a torsion kick, see benchmarks/README.md.
    """
    if precon not in (None, "exp"):
        raise ValueError(f"precon must be None or 'exp', got {precon!r}")

    def precon_matrix(positions):
        d = jnp.sqrt(jnp.sum((positions[:, None] - positions[None]) ** 2, -1) + jnp.eye(len(positions)))
        w = jnp.where((d < precon_cutoff * r_nn) & ~jnp.eye(len(positions), dtype=bool),
                      jnp.exp(-precon_A * (d / r_nn - 1.0)), 0.0)
        return jnp.diag(w.sum(1) + c_stab) - w

    def precon_solver(positions):
        """(P^-1 applied to (N, 3) arrays, the mean diagonal of P) from one build and factorisation of P."""
        p = precon_matrix(positions)
        factor = jax.scipy.linalg.cho_factor(p)
        return (lambda v: jax.scipy.linalg.cho_solve(factor, v)), jnp.mean(jnp.diag(p))

    def init(positions, aux=None):
        positions = jnp.asarray(positions)
        energy, forces, aux = force_fn(positions, aux)
        hist = jnp.zeros((memory,) + positions.shape, positions.dtype)
        return LbfgsState(positions=positions, forces=forces.astype(positions.dtype), energy=energy,
                          s_hist=hist, y_hist=hist, rho=jnp.zeros(memory, positions.dtype),
                          step=jnp.zeros((), jnp.int32), aux=aux)

    def fresh(positions, aux=None):
        # zero forces and an empty memory: the next step's direction is zero (a "reset" that clears nothing),
        # so it evaluates the forces where the structure is and stores no pair (s.y = 0)
        positions = jnp.asarray(positions)
        hist = jnp.zeros((memory,) + positions.shape, positions.dtype)
        return LbfgsState(positions=positions, forces=jnp.zeros_like(positions), energy=jnp.zeros((), positions.dtype),
                          s_hist=hist, y_hist=hist, rho=jnp.zeros(memory, positions.dtype),
                          step=jnp.full((), -1, jnp.int32), aux=aux)

    def direction(s: LbfgsState):
        g = -s.forces
        q, alphas = g, []
        for i in range(memory - 1, -1, -1):  # newest to oldest; empty slots have rho = 0 and do nothing
            a = s.rho[i] * jnp.sum(s.s_hist[i] * q)
            q = q - a * s.y_hist[i]
            alphas.append(a)
        if precon is None:
            sy, yy = jnp.sum(s.s_hist[-1] * s.y_hist[-1]), jnp.sum(s.y_hist[-1] ** 2)
            gamma = jnp.where(s.rho[-1] > 0, sy / jnp.maximum(yy, 1e-30), 1.0 / curvature)
            r = gamma * q
        else:
            solve, p_diag = precon_solver(s.positions)
            sy = jnp.sum(s.s_hist[-1] * s.y_hist[-1])
            yPy = jnp.sum(s.y_hist[-1] * solve(s.y_hist[-1]))
            gamma = jnp.where(s.rho[-1] > 0, sy / jnp.maximum(yPy, 1e-30), p_diag / curvature)
            r = gamma * solve(q)
        for i, a in zip(range(memory), reversed(alphas)):  # oldest to newest
            b = s.rho[i] * jnp.sum(s.y_hist[i] * r)
            r = r + (a - b) * s.s_hist[i]
        return -r, g

    def step(s: LbfgsState) -> LbfgsState:
        d, g = direction(s)
        descent = jnp.sum(d * g) < 0
        d = jnp.where(descent, d, -g / curvature)
        longest = jnp.sqrt(jnp.max(jnp.sum(d * d, axis=-1)))
        dx = d * jnp.minimum(1.0, max_step / jnp.maximum(longest, 1e-30))
        positions = s.positions + dx
        energy, forces, aux = force_fn(positions, s.aux)
        forces = forces.astype(positions.dtype)
        y = s.forces - forces  # change of the gradient
        sy = jnp.sum(dx * y)
        keep = jnp.where(descent, 1.0, 0.0).astype(positions.dtype)  # a reset clears the memory
        s_hist, y_hist, rho = s.s_hist * keep, s.y_hist * keep, s.rho * keep
        store = sy > 1e-12
        s_hist = jnp.where(store, jnp.concatenate([s_hist[1:], dx[None]]), s_hist)
        y_hist = jnp.where(store, jnp.concatenate([y_hist[1:], y[None]]), y_hist)
        rho = jnp.where(store, jnp.concatenate([rho[1:], (1.0 / jnp.where(store, sy, 1.0))[None]]), rho)
        return LbfgsState(positions=positions, forces=forces, energy=energy, s_hist=s_hist, y_hist=y_hist,
                          rho=rho, step=s.step + 1, aux=aux)

    return Minimizer(init, step, fresh)
