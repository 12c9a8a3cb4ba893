"""The SO3krates network: Graph -> per-structure energies (eV)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ..structures import Graph
from . import physics
from .basis import cutoff_function, radial_basis, spherical_harmonics
from .config import So3kratesConfig
from .layers import ChargeSpinEmbedding, TransformerBlock, _dense, radial_filters, scatter_to_receivers, silu

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


class ZblParameters(nn.Module):
    """The ZBL screening parameters a1..a4, c1..c4, p, d, each (1,), stored before their softplus (as SO3LR
    stores them: the softplus keeps them positive while they are trained), initialised at ZBL's values."""

    dtype: jnp.dtype

    @nn.compact
    def __call__(self) -> dict:
        return {k: self.param(k, lambda rng, v=v: jnp.full((1,), physics.softplus_inverse(v), self.dtype))
                for k, v in physics.ZBL_DEFAULTS.items()}


class So3krates(nn.Module):
    """SO3krates (Frank et al. 2024). Call: energies (G,) in eV = So3krates(config).apply(variables, graph).

    Variables: "params" (trained) and "constants" (element_energy (119,) eV and energy_scale (), fitted from
    data, not trained). E_i = energy_scale * MLP(x_i) + element_energy[z_i]; E = sum over real atoms. With
    config.element_readout, MLP(x_i) is first scaled and shifted per element by learned parameters; the physical
    terms the config switches on (ZBL, electrostatics, dispersion: `model.physics`) add their atomic energies.

    total_charge and unpaired_electrons (per structure, scalars or (G,)) feed the charge and spin embeddings and
    the charge conservation of the partial charges; models without those ignore them.
    """

    config: So3kratesConfig

    @nn.compact
    def __call__(self, graph: Graph, per_atom: bool = False, total_charge=0.0, unpaired_electrons=0.0,
                 outputs: bool = False):
        """Energies (G,) in eV; with per_atom=True the atomic energies (A,) instead (0 on padding).

        outputs=True returns a dict instead: "energy" (G,) or (A,), and the per-atom "partial_charges" (e),
        "hirshfeld_ratios", and the per-atom energy terms "network", "zbl", "electrostatics", "dispersion" (eV)
        of the parts the model has.
        """
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        F, degrees = cfg.features, cfg.degrees
        n_atoms = graph.numbers.shape[0]
        n_graphs = graph.cell.shape[0]

        # Stored pairs (P) carry the symmetric quantities; directed pairs (2, P) are [(i <- j), (j <- i)].
        _, d, u = pair_geometry(graph, dtype)
        phi_half = cutoff_function(d, cfg.cutoff, cfg.cutoff_function) * graph.pair_mask.astype(dtype)  # (P,)
        rbf = radial_basis(d, cfg.cutoff, cfg.radial_basis, cfg.radial_function)  # (P, K), symmetric in i, j
        y = spherical_harmonics(u, degrees)  # (P, M); Y_l(u_ji) = Y_l(-u_ij) = (-1)^l Y_l(u_ij)
        parity = jnp.asarray(np.array([(-1.0) ** l for l in degrees for _ in range(2 * l + 1)]), dtype)
        sph = jnp.stack([y, y * parity])  # (2, P, M)
        phi = jnp.stack([phi_half, phi_half])  # (2, P)
        receivers = jnp.stack([graph.receivers, graph.senders])  # (2, P)
        senders = jnp.stack([graph.senders, graph.receivers])

        x = nn.Embed(cfg.n_embeddings, F, dtype=dtype, param_dtype=dtype, name="embed")(graph.numbers)
        charge = jnp.broadcast_to(jnp.asarray(total_charge, dtype), (n_graphs,))
        if cfg.charge_spin_embedding:
            spin = jnp.broadcast_to(jnp.asarray(unpaired_electrons, dtype), (n_graphs,))
            embed = dict(numbers=graph.numbers, atom_graph=graph.atom_graph, atom_mask=graph.atom_mask,
                         n_graphs=n_graphs)
            e_q = ChargeSpinEmbedding(F, cfg.n_embeddings, dtype, name="charge_embed")(psi=charge, **embed)
            e_s = ChargeSpinEmbedding(F, cfg.n_embeddings, dtype, name="spin_embed")(psi=spin, **embed)
            x = (x + e_q + e_s) / jnp.asarray(np.sqrt(3.0), dtype)
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
                cfg.block_layout, cfg.attention_normalization, name=f"block_{t}",
            )(x, chi, w_rad[t * n_filters:(t + 1) * n_filters], phi, sph, receivers, senders)
            # Recorded only when applied with mutable=["intermediates"] (tests, analysis); free otherwise.
            self.sow("intermediates", "chi", chi)

        e = _dense(1, dtype, name="readout_out")(silu(_dense(F, dtype, name="readout_hidden")(x)))[:, 0]
        if cfg.element_readout:
            rows = cfg.n_embeddings
            scales = self.param("element_scale", nn.initializers.ones, (rows,), dtype)
            shifts = self.param("element_shift", nn.initializers.zeros, (rows,), dtype)
            e = e * scales[graph.numbers] + shifts[graph.numbers]
        shift = self.variable("constants", "element_energy", lambda: jnp.zeros(N_ELEMENTS, dtype))
        scale = self.variable("constants", "energy_scale", lambda: jnp.ones((), dtype))
        # jnp.asarray: constants loaded from a checkpoint may be NumPy arrays, which cannot be indexed by a tracer
        e = jnp.asarray(scale.value, dtype) * e + jnp.asarray(shift.value, dtype)[graph.numbers]
        e = jnp.where(graph.atom_mask, e, jnp.zeros_like(e))
        terms = {"network": e}
        mask = graph.atom_mask
        if cfg.zbl:
            zbl_params = ZblParameters(dtype, name="zbl")()
            z = graph.numbers.astype(dtype)
            terms["zbl"] = physics.zbl_energy(zbl_params, z[graph.receivers], z[graph.senders], d, phi_half,
                                              graph.pair_mask, graph.receivers, graph.senders, n_atoms)
        quantities = {}
        if cfg.long_range:
            r_lr, mask_lr, ok = physics.dense_pairs(graph, dtype, cfg.long_range_cutoff)
            if cfg.electrostatics:
                q = self._partial_charges(x, graph, charge, n_graphs)
                quantities["partial_charges"] = q
                terms["electrostatics"] = physics.coulomb_energy(q, r_lr, mask_lr, cfg.electrostatics_sigma,
                                                                 cfg.long_range_cutoff)
            if cfg.dispersion:
                h = self._hirshfeld_ratios(x, graph)
                quantities["hirshfeld_ratios"] = h
                terms["dispersion"] = physics.dispersion_energy(graph.numbers, h, r_lr, mask_lr,
                                                                cfg.dispersion_scale, cfg.long_range_cutoff,
                                                                cfg.dispersion_damping)
            # a periodic structure whose cell is too small for the minimum image at the long-range cutoff
            bad = ~ok[graph.atom_graph] & mask
            terms = {k: jnp.where(bad, jnp.full_like(v, jnp.nan), v) for k, v in terms.items()}
        atomic = sum(terms.values())
        atomic = jnp.where(mask, atomic, jnp.zeros_like(atomic))
        energy = atomic if per_atom else jax.ops.segment_sum(atomic, graph.atom_graph, num_segments=n_graphs)
        if not outputs:
            return energy
        return {"energy": energy, **quantities, **terms}

    def _partial_charges(self, x, graph: Graph, total_charge, n_graphs: int):
        """(A,) charges (e): q_i = b[Z_i] + MLP(x_i), shifted equally within each structure to its total charge."""
        cfg, dtype = self.config, jnp.dtype(self.config.dtype)
        bias = nn.Embed(cfg.n_embeddings, 1, dtype=dtype, param_dtype=dtype, name="charge_bias")(graph.numbers)
        hidden = silu(_dense(cfg.features, dtype, name="charge_hidden")(x))
        q = bias[:, 0] + _dense(1, dtype, name="charge_out")(hidden)[:, 0]
        q = jnp.where(graph.atom_mask, q, jnp.zeros_like(q))
        count = jax.ops.segment_sum(graph.atom_mask.astype(dtype), graph.atom_graph, num_segments=n_graphs)
        excess = total_charge - jax.ops.segment_sum(q, graph.atom_graph, num_segments=n_graphs)
        q = q + (excess / jnp.maximum(count, 1.0))[graph.atom_graph]
        return jnp.where(graph.atom_mask, q, jnp.zeros_like(q))

    def _hirshfeld_ratios(self, x, graph: Graph):
        """(A,) Hirshfeld volume ratios |b[Z_i] + <E[Z_i], MLP(x_i)> / sqrt(F/2)|."""
        cfg, dtype = self.config, jnp.dtype(self.config.dtype)
        half = cfg.features // 2
        bias = nn.Embed(cfg.n_embeddings, 1, dtype=dtype, param_dtype=dtype, name="hirshfeld_bias")(graph.numbers)
        query = nn.Embed(cfg.n_embeddings, half, dtype=dtype, param_dtype=dtype, name="hirshfeld_query")(graph.numbers)
        key = _dense(half, dtype, name="hirshfeld_out")(silu(_dense(half, dtype, name="hirshfeld_hidden")(x)))
        h = jnp.abs(bias[:, 0] + (query * key).sum(-1) / jnp.asarray(np.sqrt(half), dtype))
        return jnp.where(graph.atom_mask, h, jnp.zeros_like(h))
