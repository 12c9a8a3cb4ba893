"""Analytic potentials that follow the potential protocol: for tests, tutorials and checking integrators.

    pot = MorsePotential(depth=0.5, a=1.6, r0=1.5, cutoff=10.0)     # eV, 1/A, A, A
    sim = md.simulate(pot, cluster, md.NVE(0.5), temperature_K=300.0)

Each is a flax struct (a pytree: its parameters are leaves, so they could be fitted) with `cutoff`, `dtype` and
`energy(graph)`, and inherits evaluation, forces, stress and the ASE calculator from `BasePotential`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from .potential_base import BasePotential
from .structures import Graph


def pair_distances(graph: Graph, dtype):
    """Distances (P,) in Angstrom of the stored pairs (each unordered pair once), 1 on padding pairs."""
    pos = graph.positions.astype(dtype)
    cell_of_pair = graph.cell.astype(dtype)[graph.atom_graph[graph.receivers]]
    offset = jnp.einsum("pk,pkc->pc", graph.cell_shifts.astype(dtype), cell_of_pair)
    r = pos[graph.senders] - pos[graph.receivers] + offset
    r2 = jnp.where(graph.pair_mask, jnp.sum(r * r, axis=-1), 1.0)
    return jnp.sqrt(r2)


@struct.dataclass
class MorsePotential(BasePotential):
    """E = sum over pairs closer than `cutoff` of depth ((1 - exp(-a (d - r0)))^2 - 1), in eV.

    There is no switching function: the energy jumps where a pair crosses the cutoff, so choose a cutoff beyond
    every distance that matters (the default 10 A holds a small cluster whole).

    depth: the well depth, eV; a: the width parameter, 1/Angstrom; r0: the equilibrium distance, Angstrom;
    cutoff: Angstrom; dtype: "float32" or "float64".
    """

    depth: float = 0.5  # eV
    a: float = 1.6  # 1/Angstrom
    r0: float = 1.5  # Angstrom
    cutoff: float = struct.field(pytree_node=False, default=10.0)
    dtype: str = struct.field(pytree_node=False, default="float32")

    def energy(self, graph: Graph):
        dtype = jnp.dtype(self.dtype)
        d = pair_distances(graph, dtype)
        pair = self.depth * ((1.0 - jnp.exp(-self.a * (d - self.r0))) ** 2 - 1.0)
        pair = jnp.where(graph.pair_mask & (d < self.cutoff), pair, 0.0)
        return jax.ops.segment_sum(pair, graph.atom_graph[graph.receivers], num_segments=graph.cell.shape[0])


__all__ = ["MorsePotential", "pair_distances"]
