"""Losses and error metrics of a potential on padded batches (masks respected).

The potential is anything following the potential protocol (`potential.energy(graph)`); training
differentiates through it with respect to the parameters it holds (fit builds it from the parameters inside the
compiled step).
"""

from __future__ import annotations

import jax.numpy as jnp

from ..autodiff import energy_and_forces
from ..graph import Labels
from ..potential_base import graph_energy
from ..structures import Graph



def label_counts(graph: Graph):
    """(number of real structures, number of real force components) in a padded batch."""
    return jnp.sum(graph.graph_mask.astype(jnp.float32)), 3.0 * jnp.sum(graph.atom_mask.astype(jnp.float32))


def squared_errors(potential, graph: Graph, labels: Labels):
    """(sum of squared energy errors (eV^2), sum of squared force-component errors (eV^2/A^2)); padding excluded."""
    energies, forces = energy_and_forces(graph_energy, potential, graph)
    g = graph.graph_mask.astype(energies.dtype)
    a = graph.atom_mask.astype(forces.dtype)[:, None]
    return jnp.sum(g * (energies - labels.energy) ** 2), jnp.sum(a * (forces - labels.forces) ** 2)


def energy_force_loss(potential, graph: Graph, labels: Labels, energy_weight: float, force_weight: float,
                      counts=None):
    """w_E * MSE(E) + w_F * MSE(F): energy MSE per structure (eV^2), force MSE per component (eV^2/A^2).

    Returns (loss, (energy_mse, force_mse)). Padding structures and atoms are excluded from both means.
    counts: the (structures, force components) to divide by; default this batch's own (`label_counts`). A
    data-parallel step passes the counts of the whole global batch, so that the per-device losses sum to it.
    """
    n_structures, n_components = label_counts(graph) if counts is None else counts
    energy_sq, force_sq = squared_errors(potential, graph, labels)
    energy_mse = energy_sq / jnp.maximum(n_structures, 1.0)
    force_mse = force_sq / jnp.maximum(n_components, 1.0)
    return energy_weight * energy_mse + force_weight * force_mse, (energy_mse, force_mse)


def absolute_errors(potential, graph: Graph, labels: Labels, weights):
    """Sums for MAE/RMSE over a batch whose structures carry `weights` (B,) (0 for filler entries).

    Returns a dict of sums: energy_abs, energy_sq (eV, eV^2), force_abs, force_sq (per component), and the
    counts n_structures, n_components. Each structure's atoms are weighted by its structure weight.
    """
    energies, forces = energy_and_forces(graph_energy, potential, graph)
    de = (energies - labels.energy) * weights
    atom_w = graph.atom_mask.astype(forces.dtype) * weights[graph.atom_graph]
    df = (forces - labels.forces) * atom_w[:, None]
    return {
        "energy_abs": jnp.sum(jnp.abs(de)), "energy_sq": jnp.sum(de**2),
        "force_abs": jnp.sum(jnp.abs(df)), "force_sq": jnp.sum(df**2),
        "n_structures": jnp.sum(weights), "n_components": 3.0 * jnp.sum(atom_w),
    }
