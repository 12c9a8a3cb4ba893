"""The pieces of one Euclidean transformer block (shared spec SO3KRATES.md, sections 3a and 3b).

Shapes: A atoms, P directed pairs i <- j, F features, K radial functions, L = len(degrees), M = sum(2l+1).
Pairs are sorted by receiver i; padding pairs carry phi = 0 and so contribute nothing.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from .basis import contract, degree_index


def _dense(features: int, dtype, use_bias: bool = True, name: str | None = None) -> nn.Dense:
    return nn.Dense(features, use_bias=use_bias, dtype=dtype, param_dtype=dtype, name=name)


class Filter(nn.Module):
    """w_ij = MLP_rad(rbf_ij) + MLP_sph(s_ij), in R^F (one filter; a block uses two).

    MLP_rad: Dense(F) -> SiLU -> Dense(F);  MLP_sph: Dense(F/4) -> SiLU -> Dense(F).
    """

    features: int
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, rbf, s):  # rbf (P, K), s (P, L) -> (P, F)
        F = self.features
        w = _dense(F, self.dtype, name="rad_out")(nn.silu(_dense(F, self.dtype, name="rad_hidden")(rbf)))
        if s.shape[-1]:
            w = w + _dense(F, self.dtype, name="sph_out")(nn.silu(_dense(F // 4, self.dtype, name="sph_hidden")(s)))
        return w


def _attention_coefficients(q_i, w, k_j, heads: int):
    """alpha^h_ij = <q_i^h, w_ij^h * k_j^h> / sqrt(F/H): (P, F) x3 -> (P, H), no softmax."""
    P, F = q_i.shape
    width = F // heads
    prod = (q_i * w * k_j).reshape(P, heads, width)
    return prod.sum(-1) / jnp.asarray(math.sqrt(width), q_i.dtype)


def _scatter_to_receivers(messages, receivers, n_atoms: int):
    """sum over j of messages_ij for each receiver i: (P, D) -> (A, D)."""
    return jax.ops.segment_sum(messages, receivers, num_segments=n_atoms, indices_are_sorted=True)


class EuclideanAttention(nn.Module):
    """Invariant multi-head attention on x and per-degree attention updating chi (section 3a)."""

    features: int
    heads: int
    degrees: tuple[int, ...]
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x, chi, rbf, phi, sph, receivers, senders):
        F, H, L = self.features, self.heads, len(self.degrees)
        n_atoms = x.shape[0]
        # s_ij = c(chi_j - chi_i): the only way neighbour EVs enter (no tensor products).
        s = contract(chi[senders] - chi[receivers], self.degrees)  # (P, L)
        w_inv = Filter(F, self.dtype, name="filter_inv")(rbf, s)
        # Fused projections: queries gathered at i, keys/values at j.
        n_q = 2 if L else 1
        n_kv = 3 if L else 2
        q_all = _dense(n_q * F, self.dtype, use_bias=False, name="query")(x)  # [Wq | Wq']
        kv_all = _dense(n_kv * F, self.dtype, use_bias=False, name="key_value")(x)  # [Wk | Wv | Wk']
        q_i = q_all[receivers]
        kv_j = kv_all[senders]
        alpha = _attention_coefficients(q_i[:, :F], w_inv, kv_j[:, :F], H) * phi[:, None]  # (P, H)
        v_j = kv_j[:, F:2 * F].reshape(-1, H, F // H)
        dx = _scatter_to_receivers((alpha[:, :, None] * v_j).reshape(-1, F), receivers, n_atoms)
        if not L:
            return dx, jnp.zeros_like(chi)
        w_ev = Filter(F, self.dtype, name="filter_ev")(rbf, s)
        beta = _attention_coefficients(q_i[:, F:], w_ev, kv_j[:, 2 * F:], L) * phi[:, None]  # (P, L)
        dchi = _scatter_to_receivers(beta[:, degree_index(self.degrees)] * sph, receivers, n_atoms)
        return dx, dchi


class Interaction(nn.Module):
    """Exchange between invariants and EVs (section 3b): one linear layer on [x, c(chi)], gating chi per degree."""

    features: int
    degrees: tuple[int, ...]
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x, chi):
        F, L = self.features, len(self.degrees)
        if not L:
            return x + _dense(F, self.dtype, name="mix")(x), chi
        y = jnp.concatenate([x, contract(chi, self.degrees)], axis=-1)
        ab = _dense(F + L, self.dtype, name="mix")(y)
        a, b = ab[:, :F], ab[:, F:]
        return x + a, chi + b[:, degree_index(self.degrees)] * chi


class TransformerBlock(nn.Module):
    features: int
    heads: int
    degrees: tuple[int, ...]
    dtype: jnp.dtype
    layer_norm: bool = False
    residual_mlp: bool = False

    @nn.compact
    def __call__(self, x, chi, rbf, phi, sph, receivers, senders):
        h = nn.LayerNorm(dtype=self.dtype, param_dtype=self.dtype)(x) if self.layer_norm else x
        dx, dchi = EuclideanAttention(self.features, self.heads, self.degrees, self.dtype, name="attention")(
            h, chi, rbf, phi, sph, receivers, senders
        )
        x, chi = x + dx, chi + dchi
        x, chi = Interaction(self.features, self.degrees, self.dtype, name="interaction")(x, chi)
        if self.residual_mlp:
            F = self.features
            x = x + _dense(F, self.dtype, name="mlp_out")(nn.silu(_dense(F, self.dtype, name="mlp_hidden")(x)))
        return x, chi
