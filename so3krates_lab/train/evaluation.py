"""Test-set evaluation as an xarray Dataset: totals, per element, per structure; a printable table.

    report = error_report(potential, test)          # xarray.Dataset, errors in meV and meV/A
    print(error_table(report))
    parity_plot(report).write_html("parity.html")       # so3krates_lab.widgets.plots (plotly)

Variables of the report (dims in brackets):
  energy_ref, energy_pred [structure] eV; energy_error [structure] meV
  force_mae, force_rmse [structure] meV/A (per structure, over its force components)
  force_ref, force_pred [component] eV/A (every force component; coordinate `element` per component)
  element_force_mae, element_force_rmse, element_components [element] meV/A (per chemical element)
and the data set totals as attributes: energy_mae_meV, energy_rmse_meV, force_mae_meV_A, force_rmse_meV_A.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ..autodiff import compiler_options, energy_and_forces
from ..potential_base import check_potential, float_dtype, graph_energy
from ..structures import Dataset
from .device_data import gather_batch, to_device

_SYMBOLS = None


def _symbol(z: int) -> str:
    global _SYMBOLS
    if _SYMBOLS is None:
        from ase.data import chemical_symbols

        _SYMBOLS = chemical_symbols
    return _SYMBOLS[z]



@functools.lru_cache(maxsize=32)
def _batch_predictor(batch: int, atoms: int):
    """The jitted (potential, device data, indices) -> (energies (batch,), forces (batch, atoms, 3)), one per batch
    shape; the potential is an argument (a pytree), so evaluating another potential of the same configuration (a
    later checkpoint, another split) compiles nothing."""

    def run(potential, d, idx):
        graph, _ = gather_batch(d, idx)
        e, f = energy_and_forces(graph_energy, potential, graph)
        return e, f.reshape(batch, atoms, 3)

    return jax.jit(run, compiler_options=compiler_options())


def predict(potential, dataset: Dataset, batch_size: int = 32):
    """Energies (S,) eV and a list of forces (n_atoms, 3) eV/A of `potential` for every structure of `dataset`.

    The data set is packed once; batches of `batch_size` structures run through one compiled function (the last
    batch is filled with repeats and the extras dropped), so nothing recompiles within a call.
    """
    check_potential(potential)
    if len(dataset) == 0:
        raise ValueError("cannot evaluate an empty data set")
    data = to_device(dataset, potential.cutoff, float_dtype(potential))
    n, a = data.size, data.numbers.shape[1]
    b = min(batch_size, n)
    run = _batch_predictor(b, a)
    energies, forces = [], []
    for start in range(0, n, b):
        idx = np.minimum(np.arange(start, start + b), n - 1)
        e, f = run(potential, data, jnp.asarray(idx, jnp.int32))
        keep = min(b, n - start)
        energies.append(np.asarray(e[:keep], np.float64))
        forces.extend(np.asarray(f[:keep], np.float64))
    return np.concatenate(energies), [f[: s.n_atoms] for f, s in zip(forces, dataset)]


def error_report(potential, dataset: Dataset, batch_size: int = 32, name: str | None = None):
    """Energy and force errors of a potential on a labelled data set, as an xarray Dataset (see module doc)."""
    import xarray as xr

    if any(s.energy is None or s.forces is None for s in dataset):
        raise ValueError("error_report needs energies and forces on every structure")
    e_pred, f_pred = predict(potential, dataset, batch_size)
    e_ref = dataset.energies
    f_ref = [s.forces for s in dataset]
    e_err = 1e3 * (e_pred - e_ref)
    df = [1e3 * (p - r) for p, r in zip(f_pred, f_ref)]
    all_df = np.concatenate([d.reshape(-1) for d in df])
    elements = np.concatenate([np.repeat(s.numbers, 3) for s in dataset])
    zs = np.unique(elements)
    per_elem_mae = [float(np.mean(np.abs(all_df[elements == z]))) for z in zs]
    per_elem_rmse = [float(np.sqrt(np.mean(all_df[elements == z] ** 2))) for z in zs]
    report = xr.Dataset(
        {
            "energy_ref": ("structure", e_ref, {"units": "eV"}),
            "energy_pred": ("structure", e_pred, {"units": "eV"}),
            "energy_error": ("structure", e_err, {"units": "meV", "description": "predicted - reference"}),
            "n_atoms": ("structure", dataset.n_atoms),
            "force_mae": ("structure", [float(np.mean(np.abs(d))) for d in df], {"units": "meV/Angstrom"}),
            "force_rmse": ("structure", [float(np.sqrt(np.mean(d**2))) for d in df], {"units": "meV/Angstrom"}),
            "force_ref": ("component", np.concatenate([f.reshape(-1) for f in f_ref]), {"units": "eV/Angstrom"}),
            "force_pred": ("component", np.concatenate([f.reshape(-1) for f in f_pred]), {"units": "eV/Angstrom"}),
            "element_force_mae": ("element", per_elem_mae, {"units": "meV/Angstrom"}),
            "element_force_rmse": ("element", per_elem_rmse, {"units": "meV/Angstrom"}),
            "element_components": ("element", [int(np.sum(elements == z)) for z in zs]),
        },
        coords={"structure": np.arange(len(dataset)), "element": [_symbol(int(z)) for z in zs],
                "component_element": ("component", [_symbol(int(z)) for z in elements])},
        attrs={
            "name": name or dataset.name or "",
            "energy_mae_meV": float(np.mean(np.abs(e_err))),
            "energy_rmse_meV": float(np.sqrt(np.mean(e_err**2))),
            "force_mae_meV_A": float(np.mean(np.abs(all_df))),
            "force_rmse_meV_A": float(np.sqrt(np.mean(all_df**2))),
            "n_structures": len(dataset),
        },
    )
    return report


def error_table(report) -> str:
    """A plain-text table of a report: totals, then per-element force errors."""
    a = report.attrs
    lines = [f"{a.get('name') or 'data set'}: {a['n_structures']} structures",
             f"{'':<10}{'MAE':>10}{'RMSE':>10}",
             f"{'E (meV)':<10}{a['energy_mae_meV']:>10.2f}{a['energy_rmse_meV']:>10.2f}",
             f"{'F (meV/A)':<10}{a['force_mae_meV_A']:>10.2f}{a['force_rmse_meV_A']:>10.2f}"]
    for el in report.element.values:
        sel = report.sel(element=el)
        lines.append(f"{'F ' + str(el):<10}{float(sel.element_force_mae):>10.2f}"
                     f"{float(sel.element_force_rmse):>10.2f}")
    return "\n".join(lines)


def refit_element_energies(potential, dataset: Dataset, batch_size: int = 32):
    """A copy of `potential` (a `Potential`) whose per-element energies absorb its mean energy error on `dataset`
    (least squares).

    The loss weights forces 99:1 over energies, so a trained model's energies can carry a near-constant offset
    that forces cannot see. Adding per-element corrections delta_z fitted by least squares to the residuals
    E_ref - E_pred (with the element counts of each structure as regressors) removes it without touching forces.
    For data sets of one composition only the composition-weighted sum of the corrections is determined; the
    minimum-norm solution is used. Fit on the training set, never on the test set.
    """
    e_pred, _ = predict(potential, dataset, batch_size)
    residual = dataset.energies - e_pred
    counts = np.zeros((len(dataset), 119))
    for k, s in enumerate(dataset):
        np.add.at(counts[k], s.numbers, 1.0)
    used = np.nonzero(counts.sum(0))[0]
    delta, *_ = np.linalg.lstsq(counts[:, used], residual, rcond=None)
    element_energy = potential.element_energy.copy()
    element_energy[used] += delta
    return potential.with_constants(element_energy=element_energy)
