"""Energy minimisation as pure (init, step) pairs, and a batched driver that relaxes many structures at once.

FIRE (Bitzek et al., Phys. Rev. Lett. 97, 170201 (2006)) with unit masses: positions Angstrom, forces eV/A, the
time step dimensionless (as in ASE's FIRE, dt 0.1 growing to at most 1.0), every step's displacement capped at
`max_step` Angstrom. The same `force_fn(positions, aux) -> (energy, forces, aux)` as the integrators.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class FireState:
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
    """(init(positions, aux=None), step(state)) for FIRE; ASE's default parameters."""

    def init(positions, aux=None):
        positions = jnp.asarray(positions)
        energy, forces, aux = force_fn(positions, aux)
        z = jnp.zeros((), positions.dtype)
        return FireState(positions=positions, velocities=jnp.zeros_like(positions), forces=forces.astype(
            positions.dtype), energy=energy, dt=z + dt_start, alpha=z + alpha_start,
            n_positive=jnp.zeros((), jnp.int32), step=jnp.zeros((), jnp.int32), aux=aux)

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

    return init, step


def relax_batch(init, step, positions, fmax: float = 1e-3, max_steps: int = 5000, aux=None):
    """Relax a batch of structures (B, N, 3) in one compiled loop until every max force < fmax (eV/A) or
    max_steps. Converged structures stop moving. Returns the final batched state (state.fmax per structure via
    vmap) and a (B,) bool array of which converged.

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
