"""Static plotly figures: parity plots of an error report, energies and temperature of an MD run, disconnectivity
graphs.

Display only: the numbers come from the library (`train.error_report`, `md.Simulation`).
"""

from __future__ import annotations

import numpy as np


def parity_plot(report, max_points: int = 20_000, seed: int = 0):
    """Plotly figure: predicted vs reference energies (relative to the reference mean) and force components,
    forces coloured by element. At most `max_points` force components are drawn (a seeded random subset)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    a = report.attrs
    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        f"energy: MAE {a['energy_mae_meV']:.1f} meV", f"forces: MAE {a['force_mae_meV_A']:.1f} meV/Å"))
    e_ref = report.energy_ref.values
    shift = float(np.mean(e_ref))
    fig.add_trace(go.Scattergl(x=e_ref - shift, y=report.energy_pred.values - shift, mode="markers",
                               marker={"size": 4}, name="energy"), row=1, col=1)
    n = report.sizes["component"]
    pick = np.sort(np.random.default_rng(seed).choice(n, size=min(n, max_points), replace=False))
    sub = report.isel(component=pick)
    for el in report.element.values:
        mask = sub.component_element.values == el
        fig.add_trace(go.Scattergl(x=sub.force_ref.values[mask], y=sub.force_pred.values[mask], mode="markers",
                                   marker={"size": 3}, name=f"F {el}"), row=1, col=2)
    for col, values in ((1, np.concatenate([e_ref - shift, report.energy_pred.values - shift])),
                        (2, np.concatenate([sub.force_ref.values, sub.force_pred.values]))):
        lo, hi = float(np.min(values)), float(np.max(values))
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line={"color": "grey", "dash": "dash"},
                                 showlegend=False), row=1, col=col)
    fig.update_xaxes(title_text="reference E - mean (eV)", row=1, col=1)
    fig.update_yaxes(title_text="predicted E - mean (eV)", row=1, col=1)
    fig.update_xaxes(title_text="reference F (eV/Å)", row=1, col=2)
    fig.update_yaxes(title_text="predicted F (eV/Å)", row=1, col=2)
    fig.update_layout(title=a.get("name") or "parity", width=1000, height=480)
    return fig


def md_energy_plot(times_fs, potential, kinetic, temperature, title: str = "MD"):
    """Potential, kinetic and total energy (relative to the start) and temperature against time.

    times_fs: (K,) fs; potential, kinetic: (K,) eV; temperature: (K,) K (e.g. a one-structure `Trajectory`'s
    time_fs, potential, kinetic and temperature).
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, subplot_titles=("energy (eV, relative to start)",
                                                                           "temperature (K)"))
    e0 = potential[0] + kinetic[0]
    for name, y in (("potential", potential - e0), ("kinetic", kinetic), ("total", potential + kinetic - e0)):
        fig.add_trace(go.Scatter(x=times_fs, y=y, name=name, mode="lines"), row=1, col=1)
    fig.add_trace(go.Scatter(x=times_fs, y=temperature, name="T", mode="lines"), row=2, col=1)
    fig.update_xaxes(title_text="time (fs)", row=2, col=1)
    fig.update_layout(title=title, height=600, width=900)
    return fig


def disconnectivity_figure(tree, title: str = "disconnectivity graph", reference: float | None = None,
                           unit: str = "eV"):
    """Plotly figure of an `analysis.DisconnectivityTree`: the tree (trace 0, WebGL lines, `tree.segments()`) and
    the minima (trace 1, markers at the leaves' bottoms, customdata = minimum; hover "minimum N: energy").
    Energies relative to `reference` (eV; default: the lowest minimum), shown in `unit` ("eV" or "meV")."""
    import plotly.graph_objects as go

    if unit not in ("eV", "meV"):
        raise ValueError(f"unit must be 'eV' or 'meV', got {unit!r}")
    scale, digits = (1.0, 3) if unit == "eV" else (1e3, 0)
    leaves = [node for node in tree.nodes if node["minimum"] is not None]
    e0 = min(node["energy"] for node in leaves) if reference is None else reference
    xs, ys = tree.segments()
    fig = go.Figure()
    fig.add_trace(go.Scattergl(x=xs, y=[None if y is None else scale * (y - e0) for y in ys], mode="lines",
                               line={"color": "#444", "width": 1}, hoverinfo="skip", name="tree"))
    fig.add_trace(go.Scatter(x=[node["x"] for node in leaves], y=[scale * (node["energy"] - e0) for node in leaves],
                             mode="markers", marker={"size": 6, "color": "#1f77b4"}, name="minima",
                             customdata=[node["minimum"] for node in leaves],
                             hovertemplate=f"minimum %{{customdata}}: %{{y:.{digits}f}} {unit}<extra></extra>"))
    fig.update_layout(title=title, yaxis_title=f"energy above the lowest minimum ({unit})", showlegend=False,
                      hovermode="closest", xaxis={"showticklabels": False, "zeroline": False, "showgrid": False})
    return fig
