"""Nudged elastic band with a climbing image (analysis.barriers) on the analytic butane-like torsion potential."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from so3krates_lab.analysis import MinimaDatabase, equivalent_groups, kabsch, minima_graph
from so3krates_lab.analysis import graph_barriers, neb, neb_many
from so3krates_lab.analysis.barriers import interpolate
from so3krates_lab.md import force_function
from test_minima import ETHANE_NUMBERS, TORSION, _butane_like, _butane_system, _dihedral, _torsion_energy, ethane

SYSTEM = _butane_system(180.0)
FMAX = 0.01  # eV/A: tight enough to put the climbing image within a degree of the saddle


def _degrees(p) -> float:
    return float(np.degrees(_dihedral(jnp.asarray(p))))


@pytest.fixture(scope="module")
def analytic():
    """The gauche minimum and the gauche-anti saddle of V(phi) on a 0.01 degree grid. With ideal bonds and angles
    the gradient of the bond and angle terms vanishes, so these rigid geometries are exact stationary points of
    the whole potential (up to the grid step)."""
    grid = np.arange(0.0, 180.0 + 1e-9, 0.01)
    energies = np.asarray(jax.jit(jax.vmap(_torsion_energy))(jnp.asarray(np.stack([_butane_like(p) for p in grid]))))
    gauche = int(np.argmin(np.where(grid < 120.0, energies, np.inf)))
    saddle = int(np.argmax(np.where(grid > grid[gauche], energies, -np.inf)))
    return {"gauche_deg": grid[gauche], "saddle_deg": grid[saddle], "barrier": energies[saddle] - energies[gauche],
            "anti_minus_gauche": energies[-1] - energies[gauche]}


@pytest.fixture(scope="module")
def climbing_band(analytic):
    return neb(TORSION, SYSTEM, _butane_like(analytic["gauche_deg"]), _butane_like(180.0), n_images=8, fmax=FMAX)


def test_interpolate_keeps_the_end_points_and_ignores_rigid_motion_and_relabelling():
    a, b = _butane_like(60.0), _butane_like(180.0)
    band = interpolate(a, b, 5)
    assert band.shape == (7, 4, 3)
    np.testing.assert_allclose(band[0], a, atol=1e-12)
    np.testing.assert_allclose(band[-1], kabsch(a, b)[2], atol=1e-12)
    gaps = np.linalg.norm(np.diff(band, axis=0).reshape(6, -1), axis=1)
    np.testing.assert_allclose(gaps, gaps[0], rtol=1e-10)  # evenly spaced
    rotation = Rotation.from_rotvec([0.4, -1.1, 2.3]).as_matrix()
    np.testing.assert_allclose(interpolate(a, b @ rotation.T + [2.0, -3.0, 5.0], 5), band, atol=1e-10)
    # ethane with two hydrogens swapped in each methyl group, then moved: the same band once permuted back
    e0, e1 = ethane(), ethane(twist_deg=20.0)
    groups = equivalent_groups(ETHANE_NUMBERS, e0)
    relabelled = e1[[0, 1, 3, 2, 4, 6, 5, 7]] @ rotation.T + [1.0, 0.0, -2.0]
    np.testing.assert_allclose(interpolate(e0, relabelled, 3, groups), interpolate(e0, e1, 3, groups), atol=1e-8)


def test_climbing_image_finds_the_analytic_gauche_anti_saddle(climbing_band, analytic):
    band = climbing_band
    assert band.converged and 0 < band.steps < 1000
    assert band.positions.shape == (10, 4, 3) and band.energies.shape == (10,)
    assert band.climbing == int(np.argmax(band.energies)) and 0 < band.climbing < 9
    assert band.evaluations >= 8 * band.steps + 2
    assert _degrees(band.saddle) == pytest.approx(analytic["saddle_deg"], abs=2.0)
    assert band.barrier == pytest.approx(analytic["barrier"], abs=5e-3)
    assert band.barrier - band.reverse_barrier == pytest.approx(analytic["anti_minus_gauche"], abs=1e-6)
    _, forces, _ = jax.jit(force_function(TORSION, SYSTEM).fn)(jnp.asarray(band.saddle), None)
    assert np.sqrt(np.max(np.sum(np.asarray(forces) ** 2, axis=1))) < 3 * FMAX
    # the dihedral goes from gauche to anti monotonically, and the path length accumulates image distances
    dihedrals = [_degrees(p) for p in band.positions]
    assert np.all(np.diff(dihedrals) > 0)
    assert band.path_length[0] == 0.0 and np.all(np.diff(band.path_length) > 0)


def test_without_climbing_the_highest_image_underestimates_the_barrier(climbing_band, analytic):
    plain = neb(TORSION, SYSTEM, _butane_like(analytic["gauche_deg"]), _butane_like(180.0), n_images=8, fmax=FMAX,
                climb=False)
    assert plain.converged and plain.climbing == -1
    assert plain.barrier <= climbing_band.barrier + 1e-9


def test_a_neighbour_list_per_image_gives_the_same_band_as_the_fixed_graph(analytic):
    pairs = [(_butane_like(analytic["gauche_deg"]), _butane_like(180.0))]
    kw = dict(n_images=3, max_steps=30, chunk_steps=10, climb=False)
    fixed = neb_many(TORSION, SYSTEM, pairs, **kw)[0]
    listed = neb_many(TORSION, SYSTEM, pairs, all_pairs=False, **kw)[0]
    assert fixed.steps == listed.steps == 30 and not fixed.converged
    assert fixed.evaluations == 2 + 3 * (30 + 1)
    np.testing.assert_allclose(listed.energies, fixed.energies, atol=1e-10)
    np.testing.assert_allclose(listed.positions, fixed.positions, atol=1e-10)


def _three_minima(analytic):
    """anti, gauche+ and gauche- in a database, and their graph with the edges anti-gauche+ and anti-gauche-."""
    energy_of = jax.jit(force_function(TORSION, SYSTEM).fn)
    db = MinimaDatabase(SYSTEM.numbers, groups=[])
    for phi in (180.0, analytic["gauche_deg"], -analytic["gauche_deg"]):
        geometry = _butane_like(phi)
        db.add(geometry, float(energy_of(jnp.asarray(geometry), None)[0]))
    return db, minima_graph(db, {"t": [(0, 1), (1, 0), (2, 2)]})


def test_graph_barriers_label_the_edges_of_a_minima_graph(climbing_band, analytic):
    db, graph = _three_minima(analytic)
    assert sorted(map(sorted, graph.edges)) == [[0, 1], [0, 2]]
    graph, bands = graph_barriers(TORSION, SYSTEM, db, graph, n_images=8, fmax=FMAX)
    assert len(bands) == 2
    for u, v in graph.edges:
        data = graph.edges[u, v]
        start, end = data["neb_from"], v if data["neb_from"] == u else u
        assert data["neb_converged"] is True
        assert data["barrier_forward_eV"] - data["barrier_backward_eV"] == pytest.approx(
            db.energies[end] - db.energies[start], abs=1e-9)
        # from anti: the barrier of the gauche-anti transition seen from the anti side (the same by symmetry)
        assert data["barrier_forward_eV"] == pytest.approx(climbing_band.reverse_barrier, abs=1e-3)
        assert data["saddle_energy"] == pytest.approx(climbing_band.energies.max(), abs=1e-3)
    assert graph_barriers(TORSION, SYSTEM, db, graph, max_edges=0)[1] == {}


def test_graph_barriers_resume_from_their_checkpoint_and_bands_round_trip(tmp_path, analytic):
    """A checkpointed call that computed one edge's band leaves it in the file; a second call loads it, runs only
    the other edge, and labels both; the file holds the same bands as returned; the minima file (save_minima with
    bands) carries the barrier attributes on its edges and the bands beside it."""
    from so3krates_lab.analysis import load_bands, load_minima, load_minima_bands, save_bands, save_minima

    db, graph = _three_minima(analytic)
    path = tmp_path / "bands.npz"
    kw = dict(n_images=4, fmax=0.05)
    _, first = graph_barriers(TORSION, SYSTEM, db, graph, max_edges=1, checkpoint=path, **kw)
    assert len(first) == 1 and list(load_bands(path)) == list(first)
    (edge, band), = first.items()
    assert graph.edges[edge]["barrier_forward_eV"] == pytest.approx(band.barrier)

    _, both = graph_barriers(TORSION, SYSTEM, db, minima_graph(db, {"t": [(0, 1), (1, 0), (2, 2)]}),
                             checkpoint=path, **kw)
    assert sorted(both) == [(0, 1), (0, 2)] and both[edge].steps == band.steps  # loaded, not rerun
    np.testing.assert_array_equal(both[edge].positions, band.positions)
    stored = load_bands(path)
    for key in both:
        for name in ("positions", "energies", "climbing", "converged", "steps", "evaluations"):
            np.testing.assert_array_equal(getattr(stored[key], name), getattr(both[key], name))

    js = save_minima(tmp_path / "minima", db, {"t": [(0, 1), (1, 0), (2, 2)]}, bands=both)
    _, _, loaded, _ = load_minima(js)
    for (u, v), b in both.items():
        assert loaded.edges[u, v]["saddle_energy"] == pytest.approx(b.energies.max())
        assert loaded.edges[u, v]["neb_from"] == u
    assert sorted(load_minima_bands(js)) == sorted(both)

    with pytest.raises(ValueError, match="not an edge of the graph"):
        graph_barriers(TORSION, SYSTEM, db, minima_graph(db, {"t": [(0, 1)]}), checkpoint=path, **kw)
    with pytest.raises(ValueError, match="different shapes"):
        save_bands(tmp_path / "x.npz", {(0, 1): both[0, 1], (0, 2): neb(TORSION, SYSTEM, db.geometry(0),
                                                                          db.geometry(2), n_images=2, fmax=0.5)})
    np.savez(tmp_path / "other.npz", format=np.asarray("so3krates_lab.bands/9"), edges=np.zeros((0, 2)))
    with pytest.raises(ValueError, match="not a band file"):
        load_bands(tmp_path / "other.npz")


def test_idpp_turns_a_methyl_group_as_a_rotor_where_the_straight_line_cuts_through():
    """Ethane's methyl turned by 120 degrees (atoms not relabelled): on the straight band each hydrogen cuts the
    chord of its circle, so its C-H bond shrinks by about a tenth halfway; the IDPP band keeps the bonds (and the
    H-H distances) near their values at both ends, as a rigid rotor turning; both bands share their end points."""
    from so3krates_lab.analysis.barriers import idpp_interpolate

    a, b = ethane(0.0), ethane(120.0)
    linear, idpp = interpolate(a, b, 6, groups=[]), idpp_interpolate(a, b, 6, groups=[])
    np.testing.assert_allclose(idpp[[0, -1]], linear[[0, -1]], atol=1e-12)

    def worst(band, i, j):  # the largest relative change of the i-j distance along the band
        d = np.linalg.norm(band[:, i] - band[:, j], axis=-1)
        return np.max(np.abs(d / d[0] - 1.0))

    assert worst(linear, 1, 5) > 0.1 and worst(idpp, 1, 5) < 0.03, (worst(linear, 1, 5), worst(idpp, 1, 5))
    assert worst(idpp, 5, 6) < 0.06 < worst(linear, 5, 6)
    with pytest.raises(ValueError, match="interpolation"):
        neb(TORSION, SYSTEM, _butane_like(60.0), _butane_like(180.0), interpolation="cubic")


def test_torsion_interpolation_turns_the_bond_the_open_way_round_and_finds_the_same_saddle(analytic):
    """From 60 to -150 degrees the torsion may turn +150 (through anti) or -210 (through eclipsed, where the end
    atoms, three bonds apart, meet): the band turns +150, every image exactly at its interpolated dihedral with
    bonds and angles kept, and a climbing-image NEB started on it finds the analytic saddle as the IDPP start does."""
    from so3krates_lab.analysis import torsion_interpolate
    from so3krates_lab.analysis.barriers import idpp_interpolate

    a, b = _butane_like(60.0), _butane_like(-150.0)
    band = torsion_interpolate(a, b, 9, numbers=SYSTEM.numbers)
    assert band.shape == (11, 4, 3)
    np.testing.assert_allclose(band[0], a, atol=1e-12)
    np.testing.assert_allclose(band[-1], kabsch(band[-1], b)[2], atol=1e-10)  # b, moved rigidly
    turned = [(_degrees(x) - 60.0 + 1.0) % 360.0 - 1.0 for x in band]
    np.testing.assert_allclose(turned, np.linspace(0.0, 150.0, 11), atol=1e-8)
    d = lambda x: np.linalg.norm(x[:, None] - x[None], axis=-1)[[0, 1, 2, 0, 1], [1, 2, 3, 2, 3]]  # noqa: E731
    for x in band:
        np.testing.assert_allclose(d(x), d(a), atol=1e-10)  # bonds and bond angles (1-3 distances) unchanged
    gauche = _butane_like(analytic["gauche_deg"])
    turned_band = neb(TORSION, SYSTEM, gauche, _butane_like(180.0), n_images=8, fmax=FMAX, interpolation="torsion")
    assert turned_band.converged
    assert turned_band.barrier == pytest.approx(analytic["barrier"], abs=1e-4)
    assert _degrees(turned_band.saddle) == pytest.approx(analytic["saddle_deg"], abs=1.0)
    bent = _butane_like(60.0)[:3]  # a 3-atom chain has no rotatable bond: the IDPP band
    np.testing.assert_allclose(torsion_interpolate(bent, bent + 0.05, 1, numbers=[6, 6, 6]),
                               idpp_interpolate(bent, bent + 0.05, 1), atol=1e-12)


def test_bad_input_gives_clear_errors():
    a, b = _butane_like(60.0), _butane_like(180.0)
    with pytest.raises(ValueError, match="a has 4 atoms, b has 3 atoms"):
        interpolate(a, b[:3], 4)
    with pytest.raises(ValueError, match="n_images"):
        interpolate(a, b, 0)
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        interpolate(a.ravel(), b, 4)
    with pytest.raises(ValueError, match="finite"):
        interpolate(a, np.full_like(b, np.nan), 4)
    with pytest.raises(ValueError, match="a has 8 atoms but the system has 4 atoms"):
        neb(TORSION, SYSTEM, ethane(), ethane(30.0))
    with pytest.raises(ValueError, match="n_images"):
        neb(TORSION, SYSTEM, a, b, n_images=0)
    with pytest.raises(ValueError, match="k_spring must be positive"):
        neb(TORSION, SYSTEM, a, b, k_spring=0.0)
    with pytest.raises(TypeError, match="unexpected keyword"):
        neb_many(TORSION, SYSTEM, [(a, b)], n_image=4)


def test_reference_neb_on_the_same_potential_reproduces_the_barrier(climbing_band, analytic):
    """ASE's climbing-image NEB on the same analytic potential, started from the straight band, finds our band's
    barrier: two independent NEB implementations agree on the saddle (and both on the analytic barrier); started
    from our converged band it takes no step."""
    from so3krates_lab.analysis import Band, reference_neb
    from so3krates_lab.interop import PotentialCalculator

    ends = climbing_band.positions[[0, -1]]
    straight = Band(positions=interpolate(ends[0], ends[1], 8), energies=np.zeros(10), climbing=-1, converged=False,
                    steps=0, evaluations=0)
    checked = reference_neb(lambda: PotentialCalculator(TORSION), SYSTEM.numbers, straight, fmax=FMAX, max_steps=1000)
    assert checked.converged and checked.steps > 10 and checked.positions.shape == climbing_band.positions.shape
    assert checked.barrier == pytest.approx(climbing_band.barrier, abs=1e-3)
    assert checked.barrier == pytest.approx(analytic["barrier"], abs=1e-3)
    assert abs(_degrees(checked.saddle) - analytic["saddle_deg"]) < 1.0
    assert checked.evaluations >= 8 * checked.steps
    again = reference_neb(PotentialCalculator(TORSION), SYSTEM.numbers, climbing_band, fmax=FMAX, relax_ends=False)
    assert again.converged and again.steps == 0 and again.evaluations == 2 + 2 * 8  # a shared calculator
    assert again.barrier == pytest.approx(climbing_band.barrier, abs=1e-6)
    with pytest.raises(ValueError, match="band.positions"):
        reference_neb(PotentialCalculator(TORSION), SYSTEM.numbers[:3], climbing_band)


def test_edge_report_and_plausible_bands_describe_the_bands(analytic):
    """edge_report gives each band's ends, barriers, RMSD and turned torsions (anti-gauche: one torsion, 120
    degrees); plausible_bands keeps the converged ones below the ceiling."""
    from so3krates_lab.analysis import Band, edge_report, plausible_bands
    from so3krates_lab.analysis.torsions import Torsion

    db, graph = _three_minima(analytic)
    _, bands = graph_barriers(TORSION, SYSTEM, db, graph, n_images=4, fmax=0.05)
    rows = edge_report(db, bands, torsions=[Torsion(b=1, c=2, moving=(2, 3), a=0, d=3)])
    assert [(r["u"], r["v"]) for r in rows] == list(bands)
    for r, band in zip(rows, bands.values()):
        assert r["torsions_turned"] == 1 and r["rmsd_A"] > 0.3 and r["energy_u_eV"] == pytest.approx(0.0, abs=1e-9)
        assert r["barrier_forward_eV"] == band.barrier and r["converged"] == band.converged
    high = Band(positions=bands[0, 1].positions, energies=bands[0, 1].energies + np.r_[0, 2.0 * np.ones(4), 0],
                climbing=2, converged=True, steps=1, evaluations=1)
    stuck = Band(positions=high.positions, energies=bands[0, 1].energies, climbing=2, converged=False, steps=1,
                 evaluations=1)
    assert list(plausible_bands({**bands, (1, 2): high, (2, 3): stuck})) == list(bands)
    assert plausible_bands({(1, 2): high}, max_barrier_eV=5.0) == {(1, 2): high}
