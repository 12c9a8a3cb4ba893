"""The pieces of one Euclidean transformer block (shared spec SO3KRATES.md, sections 3a and 3b).

Shapes: A atoms, P stored (unordered) pairs, 2P directed pairs i <- j ordered as [stored, reversed],
F features, K radial functions, T blocks, L = len(degrees), M = sum(2l+1). Padding pairs carry phi = 0 and so
contribute nothing.

Both filter halves are symmetric in i and j (MLP_rad sees d_ij; MLP_sph sees s_ij = c(chi_j - chi_i), and c
is even), so filters are evaluated once per stored pair and used for both directions: exactly the spec's
model at half the cost of its most expensive part.

Each block uses two filters w_ij = MLP_rad(rbf_ij) + MLP_sph(s_ij) (w1 for the invariant branch, w2 for the
equivariant one). The radial halves depend only on distances, so `RadialFilters` evaluates them for all
blocks at once (the same independent per-block MLPs, batched into two large matrix products: on a CPU the
number of kernels, not the arithmetic, dominates small molecules). `SphericalFilters` does the same for
the two filters of one block.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from .basis import contract, degree_index


def _dense(features: int, dtype, use_bias: bool = True, name: str | None = None) -> nn.Dense:
    return nn.Dense(features, use_bias=use_bias, dtype=dtype, param_dtype=dtype, name=name)


@jax.custom_jvp
def silu(x):
    """SiLU x * sigmoid(x) with a hand-written derivative s (1 + x (1 - s)).

    Same values as jax.nn.silu; the explicit rule keeps XLA from materialising broadcast constants in the
    backward pass (measurably cheaper on CPUs for the large pair arrays).
    """
    return x * jax.nn.sigmoid(x)


@silu.defjvp
def _silu_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    sig = jax.nn.sigmoid(x)
    return x * sig, dx * (sig * (1 + x * (1 - sig)))


class BatchedMLP(nn.Module):
    """n independent two-layer MLPs Dense(hidden) -> SiLU -> Dense(out) on the same input.

    (P, D_in) -> list of n arrays (P, out). Parameters are stored stacked (w_hidden (n, D_in, H), w_out
    (n, H, O)); each MLP is evaluated with plain matrix products, which XLA's CPU backend runs without
    layout changes.
    """

    n: int
    hidden: int
    out: int
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, inp):
        n, H, O = self.n, self.hidden, self.out
        init = nn.initializers.lecun_normal(batch_axis=(0,))
        w1 = self.param("w_hidden", init, (n, inp.shape[-1], H), self.dtype)
        b1 = self.param("b_hidden", nn.initializers.zeros, (n, H), self.dtype)
        w2 = self.param("w_out", init, (n, H, O), self.dtype)
        b2 = self.param("b_out", nn.initializers.zeros, (n, O), self.dtype)
        return [silu(inp @ w1[k] + b1[k]) @ w2[k] + b2[k] for k in range(n)]


def radial_filters(rbf, layers: int, features: int, n_filters: int, dtype, name="radial_filters"):
    """MLP_rad for every block and filter: rbf (P, K) -> list of layers * n_filters arrays (P, F)."""
    return BatchedMLP(layers * n_filters, features, features, dtype, name=name)(rbf)


def _attention_coefficients(q_i, w, k_j, heads: int, normalization: float | None = None):
    """alpha^h_ij = <q_i^h, w_ij^h * k_j^h> / n: (..., F) -> (..., H), no softmax; n = sqrt(F/H) by default,
    else the given number (SO3LR: the average neighbour count)."""
    F = q_i.shape[-1]
    width = F // heads
    prod = (q_i * w * k_j).reshape(q_i.shape[:-1] + (heads, width))
    n = math.sqrt(width) if normalization is None else float(normalization)
    return prod.sum(-1) / jnp.asarray(n, q_i.dtype)


def scatter_to_receivers(messages, receivers, n_atoms: int):
    """sum over j of messages_ij for each receiver i: (..., D) with matching (...) indices -> (A, D)."""
    d = messages.shape[-1]
    return jax.ops.segment_sum(messages.reshape(-1, d), receivers.reshape(-1), num_segments=n_atoms)


def block_diagonal(blocks):
    """(n, a, b) -> (n a, n b): the matrix with blocks[h] on its diagonal and exact zeros elsewhere."""
    n, a, b = blocks.shape
    eye = jnp.eye(n, dtype=blocks.dtype)
    return (blocks[:, :, None, :] * eye[:, None, :, None]).reshape(n * a, n * b)


def _per_head_kernel(module: nn.Module, name: str, n_heads: int, features: int, dtype):
    """One (F/n x F/n) matrix per head, stored (n, F/n, F/n), as the block-diagonal (F, F) map it is."""
    width = features // n_heads
    init = nn.initializers.lecun_normal(batch_axis=(0,))  # fan-in F/n, as a Dense layer of each head
    return block_diagonal(module.param(name, init, (n_heads, width, width), dtype))


class EuclideanAttention(nn.Module):
    """Invariant multi-head attention on x and per-degree attention updating chi (section 3a).

    w_rad: list of n_filters arrays (P, F), this block's radial filter halves on stored pairs (1 filter
    without EVs, else 2). Directed quantities have a leading axis of 2 (the stored direction i <- j, then
    the reverse j <- i): phi (2, P), sph (2, P, M), receivers and senders (2, P).

    projection "full": one Dense kernel "qkv" (F, 5F) = [Wq | Wq' | Wk | Wv | Wk'] (F, 3F without EVs), each
    map F x F. "per_head": each head maps only its own feature slice: "q_heads", "k_heads", "v_heads"
    (H, F/H, F/H) and, with EVs, "q_degrees", "k_degrees" (|L|, F/|L|, F/|L|); they are assembled into the
    same block-diagonal (F, 5F) kernel, so both forms run the same computation.
    """

    features: int
    heads: int
    degrees: tuple[int, ...]
    dtype: jnp.dtype
    projection: str = "full"
    normalization: float | None = None

    @nn.compact
    def __call__(self, x, chi, w_rad, phi, sph, receivers, senders):
        F, H, L = self.features, self.heads, len(self.degrees)
        n_atoms = x.shape[0]
        if L:
            # s_ij = c(chi_j - chi_i): the only way neighbour EVs enter (no tensor products). Even in i, j.
            s = contract(chi[senders[0]] - chi[receivers[0]], self.degrees)  # (P, L)
            w_sph = BatchedMLP(2, F // 4, F, self.dtype, name="sph_filters")(s)
            w = [w_rad[0] + w_sph[0], w_rad[1] + w_sph[1]]  # 2 x (P, F)
        else:
            w = w_rad
        # One projection for everything: [Wq | Wq'] gathered at i, [Wk | Wv | Wk'] gathered at j.
        n_q = 2 if L else 1
        if self.projection == "per_head":
            maps = [_per_head_kernel(self, "q_heads", H, F, self.dtype)]
            if L:
                maps.append(_per_head_kernel(self, "q_degrees", L, F, self.dtype))
            maps += [_per_head_kernel(self, "k_heads", H, F, self.dtype),
                     _per_head_kernel(self, "v_heads", H, F, self.dtype)]
            if L:
                maps.append(_per_head_kernel(self, "k_degrees", L, F, self.dtype))
            proj = x @ jnp.concatenate(maps, axis=1)
        elif self.projection == "full":
            proj = _dense((2 * n_q + 1) * F, self.dtype, use_bias=False, name="qkv")(x)
        else:
            raise ValueError(f"unknown attention projection {self.projection!r}")
        q_i = proj[receivers, : n_q * F]  # (2, P, n_q F)
        kv_j = proj[senders, n_q * F:]  # (2, P, (n_q + 1) F)
        # w_ij = w_ji: one filter array serves both directions by broadcasting over the leading axis.
        norm = self.normalization
        alpha = _attention_coefficients(q_i[..., :F], w[0][None], kv_j[..., :F], H, norm) * phi[..., None]  # (2,P,H)
        v_j = kv_j[..., F:2 * F].reshape(alpha.shape + (F // H,))
        msg_x = (alpha[..., None] * v_j).reshape(alpha.shape[:2] + (F,))
        if not L:
            return scatter_to_receivers(msg_x, receivers, n_atoms), jnp.zeros_like(chi)
        beta = _attention_coefficients(q_i[..., F:], w[1][None], kv_j[..., 2 * F:], L, norm) * phi[..., None]  # (2,P,L)
        msg_chi = beta[..., degree_index(self.degrees)] * sph  # (2, P, M)
        upd = scatter_to_receivers(jnp.concatenate([msg_x, msg_chi], axis=-1), receivers, n_atoms)
        return upd[:, :F], upd[:, F:]


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
    """One Euclidean transformer block in either layout (config.block_layout).

    "pre_norm":  h = [LayerNorm](x); x, chi += attention(h, chi); interaction; [x += MLP(x)]
    "post_norm": x, chi += attention(x, chi); [x = LayerNorm(x)]; [x += MLP(silu(x))]; interaction;
                 [x = LayerNorm(x)]  (SO3LR's block: layer_normalization_1/2 and residual_mlp_1)
    """

    features: int
    heads: int
    degrees: tuple[int, ...]
    dtype: jnp.dtype
    layer_norm: bool = False
    residual_mlp: bool = False
    projection: str = "full"
    layout: str = "pre_norm"
    normalization: float | None = None

    def _layer_norm(self, x, name=None):
        return nn.LayerNorm(dtype=self.dtype, param_dtype=self.dtype, name=name)(x)

    @nn.compact
    def __call__(self, x, chi, w_rad, phi, sph, receivers, senders):
        F = self.features
        attention = EuclideanAttention(F, self.heads, self.degrees, self.dtype, self.projection,
                                       self.normalization, name="attention")
        interaction = Interaction(F, self.degrees, self.dtype, name="interaction")
        if self.layout == "post_norm":
            dx, dchi = attention(x, chi, w_rad, phi, sph, receivers, senders)
            x, chi = x + dx, chi + dchi
            if self.layer_norm:
                x = self._layer_norm(x, "norm_attention")
            if self.residual_mlp:
                hidden = silu(_dense(F, self.dtype, name="mlp_hidden")(silu(x)))
                x = x + _dense(F, self.dtype, name="mlp_out")(hidden)
            x, chi = interaction(x, chi)
            if self.layer_norm:
                x = self._layer_norm(x, "norm_interaction")
            return x, chi
        if self.layout != "pre_norm":
            raise ValueError(f"unknown block layout {self.layout!r}")
        h = self._layer_norm(x) if self.layer_norm else x
        dx, dchi = attention(h, chi, w_rad, phi, sph, receivers, senders)
        x, chi = x + dx, chi + dchi
        x, chi = interaction(x, chi)
        if self.residual_mlp:
            x = x + _dense(F, self.dtype, name="mlp_out")(silu(_dense(F, self.dtype, name="mlp_hidden")(x)))
        return x, chi


class ChargeSpinEmbedding(nn.Module):
    """SpookyNet's embedding of a per-structure number psi (total charge, or unpaired electrons) onto atoms.

    q_i = E_q[Z_i], k and v = E_k[s], E_v[s] with s = 0 for psi >= 0 and 1 for psi < 0; a_i = psi y_i / sum_j y_j,
    y_i = softplus(<q_i, k> / sqrt(F)) over the atoms of the structure; returns e_i = R(a_i v) (A, F) with R the
    residual block u + W2 silu(W1 silu(u)) (no biases). psi = 0 gives e = 0.
    """

    features: int
    n_embeddings: int
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, numbers, psi, atom_graph, atom_mask, n_graphs: int):
        F, dt = self.features, self.dtype
        q = nn.Embed(self.n_embeddings, F, dtype=dt, param_dtype=dt, name="element")(numbers)  # (A, F)
        sign = (psi < 0).astype(jnp.int32)  # (G,)
        k = nn.Embed(2, F, dtype=dt, param_dtype=dt, name="key")(sign)[atom_graph]  # (A, F)
        v = nn.Embed(2, F, dtype=dt, param_dtype=dt, name="value")(sign)[atom_graph]
        y = jax.nn.softplus((q * k).sum(-1) / jnp.asarray(math.sqrt(F), dt))
        y = jnp.where(atom_mask, y, jnp.zeros_like(y))
        total = jax.ops.segment_sum(y, atom_graph, num_segments=n_graphs)
        total = jnp.where(total > 0, total, jnp.ones_like(total))
        a = psi.astype(dt)[atom_graph] * y / total[atom_graph]
        u = a[:, None] * v
        h = _dense(F, dt, use_bias=False, name="residual_1")(silu(u))
        return u + _dense(F, dt, use_bias=False, name="residual_2")(silu(h))
