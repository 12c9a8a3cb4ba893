"""A data set packed once and kept on the device; batches are gathered inside compiled code.

Every structure is padded (with `graph.pack`) to one common per-structure capacity (a atoms, p pairs) and the
results are stacked: S structures become arrays with a leading axis S. `gather_batch(data, indices)` builds a
Graph of B structures by indexing and offsetting, so a training step needs no host work and never recompiles.
Suited to data sets of one molecule or similar sizes (the padding is per structure); for very mixed sizes use
`graph.Batcher`, whose bucketed capacities waste less.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from ..graph import Capacity, Labels, neighbour_pairs, pack, pack_labels
from ..structures import Dataset, Graph


@struct.dataclass
class DeviceData:
    """S structures padded to a atoms and p stored pairs each.

    numbers (S, a), positions (S, a, 3) Angstrom, atom_mask (S, a), receivers/senders (S, p) (local indices),
    cell_shifts (S, p, 3), pair_mask (S, p), cell (S, 3, 3) Angstrom (zeros for free molecules), energy (S,)
    eV, forces (S, a, 3) eV/A.
    """

    numbers: jax.Array
    positions: jax.Array
    atom_mask: jax.Array
    receivers: jax.Array
    senders: jax.Array
    cell_shifts: jax.Array
    pair_mask: jax.Array
    cell: jax.Array
    energy: jax.Array
    forces: jax.Array

    @property
    def size(self) -> int:
        """S, the number of structures."""
        return int(self.numbers.shape[0])


def to_device(dataset: Dataset, cutoff: float, dtype=np.float32) -> DeviceData:
    """Pack every structure of `dataset` once (neighbour pairs within `cutoff`, Angstrom) and move the stack to
    the device."""
    pairs = [neighbour_pairs(s, cutoff) for s in dataset]
    cap = Capacity(max(s.n_atoms for s in dataset) + 1, max(max(len(p) for p in pairs), 1), 1)
    graphs = [pack([s], [p], cap, dtype) for s, p in zip(dataset, pairs)]
    labels = [pack_labels([s], cap, dtype) for s in dataset]

    def stacked(field, source):
        return jnp.asarray(np.stack([getattr(x, field) for x in source]))

    return DeviceData(
        numbers=stacked("numbers", graphs), positions=stacked("positions", graphs),
        atom_mask=stacked("atom_mask", graphs), receivers=stacked("receivers", graphs),
        senders=stacked("senders", graphs), cell_shifts=stacked("cell_shifts", graphs),
        pair_mask=stacked("pair_mask", graphs), cell=stacked("cell", graphs)[:, 0],
        energy=stacked("energy", labels)[:, 0], forces=stacked("forces", labels),
    )


def gather_batch(data: DeviceData, indices: jax.Array) -> tuple[Graph, Labels]:
    """The structures `indices` (B,) as one Graph of B structures (B * a atoms, B * p pairs) and its labels."""
    b = indices.shape[0]
    a = data.numbers.shape[1]
    offsets = (jnp.arange(b, dtype=jnp.int32) * a)[:, None]

    def flat(x):
        return x[indices].reshape((b * x.shape[1],) + x.shape[2:])

    graph = Graph(
        numbers=flat(data.numbers), positions=flat(data.positions),
        atom_graph=jnp.repeat(jnp.arange(b, dtype=jnp.int32), a),
        receivers=(data.receivers[indices] + offsets).reshape(-1),
        senders=(data.senders[indices] + offsets).reshape(-1),
        cell_shifts=flat(data.cell_shifts), cell=data.cell[indices],
        atom_mask=flat(data.atom_mask), pair_mask=flat(data.pair_mask),
        graph_mask=jnp.ones(b, dtype=bool),
    )
    return graph, Labels(energy=data.energy[indices], forces=flat(data.forces))
