"""The SO3krates network: Graph -> per-structure energies (eV)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ..structures import Graph
from .basis import cosine_cutoff, physnet_rbf, spherical_harmonics
from .config import So3kratesConfig
from .layers import TransformerBlock, _dense, radial_filters, scatter_to_receivers, silu

N_ELEMENTS = 119  # index = atomic number; 0 is padding (the constants; the embedding has config.n_embeddings rows)


def pair_geometry(graph: Graph, dtype):
    """Pair vectors r_ij = R_j - R_i + shift @ cell of the stored pairs, with distances safe on padding.

    Returns r (P, 3), d (P,), u (P, 3). Padding pairs (i == j, no shift) get d = 1 so that nothing is NaN,
    not even a gradient.
    """
    pos = graph.positions.astype(dtype)
    cell_of_pair = graph.cell.astype(dtype)[graph.atom_graph[graph.receivers]]  # (P, 3, 3)
    offset = jnp.einsum("pk,pkc->pc", graph.cell_shifts.astype(dtype), cell_of_pair)
    r = pos[graph.senders] - pos[graph.receivers] + offset
    r2 = jnp.sum(r * r, axis=-1)
    r2 = jnp.where(graph.pair_mask, r2, jnp.ones_like(r2))
    d = jnp.sqrt(r2)
    return r, d, r / d[:, None]


class So3krates(nn.Module):
    """SO3krates (Frank et al. 2024). Call: energies (G,) in eV = So3krates(config).apply(variables, graph).

    Variables: "params" (trained) and "constants" (element_energy (119,) eV and energy_scale (), fitted from
    data, not trained). E_i = energy_scale * MLP(x_i) + element_energy[z_i]; E = sum over real atoms.
    """

    config: So3kratesConfig

    @nn.compact
    def __call__(self, graph: Graph, per_atom: bool = False):
        """Energies (G,) in eV; with per_atom=True the atomic energies (A,) instead (0 on padding)."""
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        F, degrees = cfg.features, cfg.degrees
        n_atoms = graph.numbers.shape[0]

        # Stored pairs (P) carry the symmetric quantities; directed pairs (2, P) are [(i <- j), (j <- i)].
        _, d, u = pair_geometry(graph, dtype)
        phi_half = cosine_cutoff(d, cfg.cutoff) * graph.pair_mask.astype(dtype)  # (P,), 0 on padding
        rbf = physnet_rbf(d, cfg.cutoff, cfg.radial_basis)  # (P, K), symmetric in i, j
        y = spherical_harmonics(u, degrees)  # (P, M); Y_l(u_ji) = Y_l(-u_ij) = (-1)^l Y_l(u_ij)
        parity = jnp.asarray(np.array([(-1.0) ** l for l in degrees for _ in range(2 * l + 1)]), dtype)
        sph = jnp.stack([y, y * parity])  # (2, P, M)
        phi = jnp.stack([phi_half, phi_half])  # (2, P)
        receivers = jnp.stack([graph.receivers, graph.senders])  # (2, P)
        senders = jnp.stack([graph.senders, graph.receivers])

        x = nn.Embed(cfg.n_embeddings, F, dtype=dtype, param_dtype=dtype, name="embed")(graph.numbers)
        if cfg.ev_init == "neighbours" and degrees:
            # chi_i = (1/c_i) sum_j phi_ij Y(u_ij), c_i = 1 + sum_j phi_ij (smooth, never zero)
            c = 1.0 + scatter_to_receivers(phi[..., None], receivers, n_atoms)
            chi = scatter_to_receivers(phi[..., None] * sph, receivers, n_atoms) / c
        else:
            chi = jnp.zeros((n_atoms, cfg.n_ev), dtype)

        n_filters = 2 if degrees else 1
        w_rad = radial_filters(rbf, cfg.layers, F, n_filters, dtype)  # T * n_filters arrays (P, F)
        for t in range(cfg.layers):
            x, chi = TransformerBlock(
                F, cfg.heads, degrees, dtype, cfg.layer_norm, cfg.residual_mlp, cfg.attention_projection,
                name=f"block_{t}",
            )(x, chi, w_rad[t * n_filters:(t + 1) * n_filters], phi, sph, receivers, senders)
            # Recorded only when applied with mutable=["intermediates"] (tests, analysis); free otherwise.
            self.sow("intermediates", "chi", chi)

        e = _dense(1, dtype, name="readout_out")(silu(_dense(F, dtype, name="readout_hidden")(x)))[:, 0]
        shift = self.variable("constants", "element_energy", lambda: jnp.zeros(N_ELEMENTS, dtype))
        scale = self.variable("constants", "energy_scale", lambda: jnp.ones((), dtype))
        # jnp.asarray: constants loaded from a checkpoint may be NumPy arrays, which cannot be indexed by a tracer
        e = jnp.asarray(scale.value, dtype) * e + jnp.asarray(shift.value, dtype)[graph.numbers]
        e = jnp.where(graph.atom_mask, e, jnp.zeros_like(e))
        if per_atom:
            return e
        n_graphs = graph.cell.shape[0]
        return jax.ops.segment_sum(e, graph.atom_graph, num_segments=n_graphs)
