"""Minima exploration: alignment, deduplication, the exploration pipeline on an analytic potential, the graph."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct
from scipy.spatial.transform import Rotation

from so3krates_lab import BasePotential, System
from so3krates_lab.analysis import (
    MinimaDatabase, distance_fingerprint, equivalent_groups, explore_minima, fingerprint_distance, kabsch,
    kabsch_rmsd, load_minima, minima_graph, save_minima, symmetric_rmsd,
)
from so3krates_lab.md import BatchRelaxer, ForceFunction, force_function

# ethane, staggered: C0 C1, H2-H4 on C0, H5-H7 on C1 (Angstrom)
ETHANE_NUMBERS = np.array([6, 6, 1, 1, 1, 1, 1, 1])


def ethane(twist_deg: float = 0.0) -> np.ndarray:
    """Ethane with the C1 methyl rotated by twist_deg from staggered (60 degrees: the same staggered form)."""
    pos = [[0, 0, 0], [0, 0, 1.53]]
    for k in range(3):
        a = np.radians(120 * k)
        pos.append([1.02 * np.cos(a), 1.02 * np.sin(a), -0.36])
    for k in range(3):
        a = np.radians(120 * k + 60 + twist_deg)
        pos.append([1.02 * np.cos(a), 1.02 * np.sin(a), 1.89])
    return np.asarray(pos, float)


def test_kabsch_rmsd_of_rotated_translated_copy_is_zero():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(12, 3)) * 2
    b = a @ Rotation.from_rotvec([0.3, -1.2, 2.0]).as_matrix().T + [3.0, -1.0, 7.0]
    rmsd, rotation, aligned = kabsch(a, b)
    assert rmsd < 1e-10 and np.allclose(aligned, a)
    assert np.isclose(np.linalg.det(rotation), 1.0)
    # mass weights: still zero for a rigid copy; integer weights act like repeated atoms
    w = rng.uniform(1, 16, size=12)
    assert kabsch_rmsd(a, b, weights=w) < 1e-10
    c = b + rng.normal(size=b.shape) * 0.2
    reps = np.array([3, 1, 2] + [1] * 9)
    weighted = kabsch_rmsd(a, c, weights=reps)
    assert weighted == pytest.approx(kabsch_rmsd(np.repeat(a, reps, 0), np.repeat(c, reps, 0)), rel=1e-10)
    assert abs(weighted - kabsch_rmsd(a, c)) > 1e-4


def test_kabsch_keeps_mirror_images_apart():
    a = np.array([[0, 0, 0], [1.5, 0, 0], [0, 1.5, 0], [0, 0, 1.5], [0.4, 0.7, 0.2]])
    mirror = a * [1, 1, -1]
    assert kabsch_rmsd(a, mirror) > 0.1
    assert fingerprint_distance(distance_fingerprint(a), distance_fingerprint(mirror)) < 1e-12


def test_equivalent_groups_find_methyl_hydrogens():
    groups = equivalent_groups(ETHANE_NUMBERS, ethane())
    assert sorted(map(list, groups)) == [[2, 3, 4], [5, 6, 7]]


def test_symmetric_rmsd_undoes_a_methyl_permutation():
    a = ethane()
    b = a[[0, 1, 3, 4, 2, 6, 5, 7]] @ Rotation.from_rotvec([0.2, 0.5, -0.4]).as_matrix().T
    assert kabsch_rmsd(a, b) > 0.5
    rmsd, perm = symmetric_rmsd(a, b, equivalent_groups(ETHANE_NUMBERS, a))
    assert rmsd < 1e-8 and np.allclose(kabsch(a, b[perm])[2], a)


def test_dedup_merges_permuted_copy_and_keeps_a_different_minimum_apart():
    a = ethane()
    db = MinimaDatabase(ETHANE_NUMBERS, a, energy_tol=0.01, rmsd_tol=0.05)
    k0, new0 = db.add(a, -10.0, trajectory="t0")
    swapped = a[[0, 1, 2, 4, 3, 7, 5, 6]] + [1.0, 2.0, 3.0]  # methyl hydrogens swapped, then moved
    k1, new1 = db.add(swapped, -10.002, trajectory="t1")
    eclipsed = ethane(twist_deg=60.0 + 60.0)  # 120 degrees on: staggered again (a symmetric copy)
    k2, new2 = db.add(eclipsed, -10.001)
    eclipsed_true = ethane(twist_deg=-60.0)  # eclipsed: a different geometry at nearly the same energy
    k3, new3 = db.add(eclipsed_true, -10.005)
    far_in_energy = db.add(a, -9.9)  # same geometry, energy 0.1 eV off: a different minimum by definition
    assert (k0, new0, k1, new1, k2, new2) == (0, True, 0, False, 0, False)
    assert new3 and k3 == 1 and far_in_energy == (2, True)
    assert db.counts == [3, 1, 1] and db.found_by[0] == {"t0", "t1"}
    assert db.find(eclipsed_true + 5.0, -10.004) == 1 and db.find(ethane(twist_deg=30.0), -10.0) is None
    ds = db.to_xarray()
    assert ds.positions.shape == (3, 8, 3) and float(ds.relative_energy.min()) == 0.0


def test_bad_input_gives_clear_errors(tmp_path):
    a = ethane()
    with pytest.raises(ValueError, match="expected 8 atoms, got 5"):
        kabsch(a, a[:5])
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        kabsch(a, a.ravel())
    with pytest.raises(ValueError, match="NaN"):
        kabsch(a, np.full_like(a, np.nan))
    with pytest.raises(ValueError, match="weights"):
        kabsch(a, a, weights=np.ones(3))
    db = MinimaDatabase(ETHANE_NUMBERS, a)
    with pytest.raises(ValueError, match=r"expected shape \(8, 3\)"):
        db.add(a[:4], -1.0)
    with pytest.raises(ValueError, match="finite"):
        db.add(a, float("nan"))
    with pytest.raises(ValueError, match="reference_positions"):
        MinimaDatabase(ETHANE_NUMBERS)
    with pytest.raises(ValueError, match="positive"):
        MinimaDatabase(ETHANE_NUMBERS, a, rmsd_tol=0)
    with pytest.raises(FileNotFoundError, match="missing"):
        load_minima(tmp_path / "nothing")
    with pytest.raises(ValueError, match="budget"):
        explore_minima(TORSION, _butane_system(180.0))
    with pytest.raises(TypeError, match="System"):
        explore_minima(TORSION, _butane_like(180.0), max_frames=4)


def _graph_fixture():
    db = MinimaDatabase(ETHANE_NUMBERS, groups=[])
    rng = np.random.default_rng(1)
    for k in range(4):
        db.add(ethane() + rng.normal(size=(8, 3)) * 0.5, -1.0 + 0.1 * k, trajectory=str(k % 2))
    sequences = {"0": [(0, 0), (1, 1), (2, 1), (3, 0), (4, 2), (6, 3)],  # frame 5 missing: no 2-3 edge
                 "1": [(0, 1), (1, 0), (2, 3), (3, 2)]}
    return db, sequences


def test_graph_counts_transitions_between_consecutive_frames():
    db, sequences = _graph_fixture()
    g = minima_graph(db, sequences)
    assert g.number_of_nodes() == 4
    assert {tuple(sorted(e)): d["count"] for e, d in ((e, g.edges[e]) for e in g.edges)} == {
        (0, 1): 3, (0, 2): 1, (2, 3): 1, (0, 3): 1}
    assert g.edges[0, 1]["trajectories"] == ["0", "1"]
    assert g.nodes[2]["relative_energy"] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="names minimum 9"):
        minima_graph(db, {"x": [(0, 0), (1, 9)]})


def test_save_load_round_trip(tmp_path):
    import networkx as nx

    db, sequences = _graph_fixture()
    save_minima(tmp_path / "run" / "minima", db, sequences, extra={"note": "test"})
    db2, seq2, g2, extra = load_minima(tmp_path / "run" / "minima")
    assert np.array_equal(db2.positions, db.positions) and db2.energies == db.energies
    assert db2.counts == db.counts and db2.found_by == db.found_by and extra == {"note": "test"}
    assert seq2 == sequences
    g = minima_graph(db, sequences)
    assert nx.utils.graphs_equal(g, g2)
    assert db2.find(db.positions[2], db.energies[2]) == 2  # the reloaded database still deduplicates
    (tmp_path / "run" / "minima.npz").unlink()
    with pytest.raises(FileNotFoundError):
        load_minima(tmp_path / "run" / "minima")


# ---------------------------------------------------------------------- an analytic molecule with 3 minima


def _butane_like(dihedral_deg: float) -> np.ndarray:
    """Four atoms, bonds 1.5 A, angles 110 degrees, the given dihedral."""
    t, phi = np.radians(110.0), np.radians(dihedral_deg)
    p0 = 1.5 * np.array([np.cos(t), np.sin(t), 0.0])
    p1, p2 = np.zeros(3), np.array([1.5, 0.0, 0.0])
    p3 = p2 + 1.5 * np.array([-np.cos(t), np.sin(t) * np.cos(phi), np.sin(t) * np.sin(phi)])
    return np.stack([p0, p1, p2, p3])


def _dihedral(p):
    b0, b1, b2 = p[0] - p[1], p[2] - p[1], p[3] - p[2]
    b1n = b1 / jnp.linalg.norm(b1)
    v = b0 - jnp.dot(b0, b1n) * b1n
    w = b2 - jnp.dot(b2, b1n) * b1n
    return jnp.arctan2(jnp.dot(jnp.cross(b1n, v), w), jnp.dot(v, w))


def _torsion_energy(p):
    """Harmonic bonds (20 eV/A^2, 1.5 A), angles (5 eV, cos 110 deg), V(phi) = 0.1 (1 + cos 3 phi) + 0.03
    (1 + cos phi): three minima (gauche+, gauche-, anti) separated by barriers of about 0.2 eV."""
    bond = lambda i, j: 10.0 * (jnp.linalg.norm(p[i] - p[j]) - 1.5) ** 2  # noqa: E731

    def angle(i, j, k):
        a, b = p[i] - p[j], p[k] - p[j]
        c = jnp.dot(a, b) / (jnp.linalg.norm(a) * jnp.linalg.norm(b))
        return 5.0 * (c - np.cos(np.radians(110.0))) ** 2

    phi = _dihedral(p)
    return (bond(0, 1) + bond(1, 2) + bond(2, 3) + angle(0, 1, 2) + angle(1, 2, 3)
            + 0.1 * (1 + jnp.cos(3 * phi)) + 0.03 * (1 + jnp.cos(phi)))


@struct.dataclass
class TorsionPotential(BasePotential):
    """`_torsion_energy` of every four-atom structure of a graph, on the potential protocol.

    The energy does not use the graph's pairs: each structure's atoms are its four consecutive atom slots
    (found through `atom_graph` and `atom_mask`); padding structures get a harmless stand-in geometry and no
    energy (masked, so that no NaN from a degenerate geometry reaches the gradient)."""

    cutoff: float = struct.field(pytree_node=False, default=5.0)
    dtype: str = struct.field(pytree_node=False, default="float64")

    def energy(self, graph):
        n_slots, n_graphs = graph.positions.shape[0], graph.cell.shape[0]
        slot = jnp.where(graph.atom_mask, jnp.arange(n_slots), n_slots)
        first = jax.ops.segment_min(slot, graph.atom_graph, num_segments=n_graphs)
        quads = jnp.clip(first[:, None] + jnp.arange(4), 0, n_slots - 1)  # (G, 4)
        real = graph.graph_mask & (first < n_slots)
        stand_in = jnp.asarray(_butane_like(180.0), self.dtype)
        pos = jnp.where(real[:, None, None], graph.positions.astype(self.dtype)[quads], stand_in)
        return jnp.where(real, jax.vmap(_torsion_energy)(pos), 0.0)


TORSION = TorsionPotential()


def _butane_system(dihedral_deg: float) -> System:
    return System(numbers=np.full(4, 6), positions=_butane_like(dihedral_deg))


def test_butane_like_fixture_has_the_intended_dihedral():
    assert np.degrees(float(_dihedral(jnp.asarray(_butane_like(70.0))))) == pytest.approx(70.0, abs=1e-4)


def test_torsion_potential_is_the_analytic_energy_for_one_structure_and_for_a_batch():
    """The protocol version gives `_torsion_energy` and its gradient: through md.force_function (alone and
    vmapped: the fixed graph of disjoint copies) and through the padded host evaluation of several structures."""
    geometries = [_butane_like(d) + 0.03 * np.random.default_rng(k).normal(size=(4, 3))
                  for k, d in enumerate((20.0, 100.0, -170.0))]
    ff = force_function(TORSION, _butane_system(180.0))
    assert ff.pairs == "fixed"
    energies, forces, _ = jax.jit(jax.vmap(ff.fn, in_axes=(0, None)))(jnp.asarray(np.stack(geometries)), None)
    pred = TORSION.evaluate([_butane_system(0.0).replace(positions=g) for g in geometries])
    for k, g in enumerate(geometries):
        e_ref, grad_ref = jax.value_and_grad(_torsion_energy)(jnp.asarray(g))
        e_one, f_one, _ = jax.jit(ff.fn)(jnp.asarray(g), None)
        assert float(e_one) == pytest.approx(float(e_ref), abs=1e-12)
        np.testing.assert_allclose(np.asarray(f_one), -np.asarray(grad_ref), atol=1e-10)
        assert float(energies[k]) == pytest.approx(float(e_ref), abs=1e-12)
        np.testing.assert_allclose(np.asarray(forces[k]), -np.asarray(grad_ref), atol=1e-10)
        assert pred.energies[k] == pytest.approx(float(e_ref), abs=1e-10)
        np.testing.assert_allclose(pred.forces[k], -np.asarray(grad_ref), atol=1e-10)
        assert np.isfinite(pred.forces[k]).all()


def test_batch_relaxers_find_the_three_torsion_minima_and_lbfgs_needs_fewer_steps():
    rng = np.random.default_rng(0)
    starts = np.stack([_butane_like(d) for d in (20.0, 100.0, 150.0, -170.0, -40.0, -100.0)])
    starts += rng.normal(size=starts.shape) * 0.05
    steps = {}
    force_fn = force_function(TORSION, _butane_system(180.0))
    for minimizer in ("fire", "lbfgs"):
        relaxer = BatchRelaxer(force_fn, starts[0], n_slots=4, fmax=1e-4, chunk_steps=20, minimizer=minimizer)
        pos, energies, ok = relaxer.relax_all(starts)
        assert ok.all()
        dihedrals = np.degrees([float(_dihedral(jnp.asarray(p))) for p in pos])
        # minima of 0.1 (1 + cos 3 phi) + 0.03 (1 + cos phi): near +-60 (shifted outward by the cos phi term), 180
        got = np.where(np.abs(dihedrals) > 150, 2, np.sign(dihedrals)).astype(int)
        assert np.array_equal(got, [1, 1, 2, 2, -1, -1]), (minimizer, dihedrals)
        assert np.abs(energies - energies[[0, 0, 2, 2, 0, 0]]).max() < 1e-5 and energies[2] < energies[0] - 0.04
        steps[minimizer] = relaxer.steps_done
    relaxer.load([("a", starts[0]), ("b", starts[1])])  # unfinished work is listed for a checkpoint
    assert [t for t, _ in relaxer.in_flight()] == ["a", "b"]
    assert np.allclose(relaxer.in_flight()[1][1], starts[1], atol=1e-6)
    assert steps["lbfgs"] < steps["fire"] / 2, steps
    with pytest.raises(ValueError, match="minimizer must be one of"):
        BatchRelaxer(force_fn, starts[0], n_slots=2, minimizer="bfgs")


def test_a_fresh_minimiser_state_steps_into_exactly_the_initial_state():
    """Minimizer.fresh: one step from it evaluates the structure without moving it and gives init's state."""
    from so3krates_lab.md import fire, lbfgs

    force_fn = force_function(TORSION, _butane_system(180.0))
    start = jnp.asarray(_butane_like(40.0))
    for make in (fire, lambda ff: lbfgs(ff, precon="exp")):
        pair = make(force_fn.fn)
        init, step = pair
        want, got = init(start, force_fn.aux), step(pair.fresh(start, force_fn.aux))
        assert int(pair.fresh(start, force_fn.aux).step) == -1
        for name in want.__dataclass_fields__:
            if name != "aux":
                np.testing.assert_allclose(np.asarray(getattr(got, name)), np.asarray(getattr(want, name)),
                                           rtol=1e-12, atol=1e-12, err_msg=name)
        # and the step after that is the same step as from init
        np.testing.assert_allclose(np.asarray(step(got).positions), np.asarray(step(want).positions), atol=1e-12)


def test_the_batch_relaxer_starts_a_slot_inside_the_chunk_at_no_extra_evaluation():
    """FIRE and L-BFGS start fresh slots as the slots' own first step (Minimizer.fresh): the same minima and steps
    as the old start (an init call of every slot in any chunk that loads one, the path of a minimiser without
    `fresh`), and fewer evaluations: none beyond the slots' chunk steps."""
    from so3krates_lab.md import lbfgs

    rng = np.random.default_rng(2)
    starts = np.stack([_butane_like(d) for d in (20.0, 100.0, 150.0, -170.0, -40.0, -100.0, 70.0)])
    starts += rng.normal(size=starts.shape) * 0.05
    force_fn = force_function(TORSION, _butane_system(180.0))
    old_style = lambda ff, **kw: tuple(lbfgs(ff, **kw))  # noqa: E731  a plain (init, step): no fresh state
    out = {}
    for name, minimizer in (("fused", "lbfgs"), ("init call", old_style)):
        relaxer = BatchRelaxer(force_fn, starts[0], n_slots=3, fmax=1e-4, chunk_steps=7, minimizer=minimizer)
        assert relaxer.fused_start == (name == "fused")
        finished, pending, chunks = {}, list(enumerate(starts)), 0
        while pending or relaxer.active.any():
            relaxer.load([pending.pop(0) for _ in range(min(relaxer.n_free, len(pending)))])
            chunks += 1
            for tag, pos, energy, ok, steps in relaxer.run_chunk():
                finished[tag] = (pos, energy, ok, steps)
        out[name] = (finished, relaxer.steps_done, relaxer.evaluations, chunks)
    (fused, f_steps, f_evals, f_chunks), (plain, p_steps, p_evals, p_chunks) = out["fused"], out["init call"]
    assert sorted(fused) == sorted(plain) == list(range(len(starts)))
    for tag in fused:
        assert fused[tag][2] and plain[tag][2]
        assert fused[tag][3] == plain[tag][3]  # the same minimiser steps per quench
        np.testing.assert_allclose(fused[tag][0], plain[tag][0], atol=1e-8)
        assert fused[tag][1] == pytest.approx(plain[tag][1], abs=1e-10)
    assert f_steps == p_steps
    assert f_evals == 3 * 7 * f_chunks  # every slot, every step of every chunk, nothing more
    assert p_evals > 3 * 7 * p_chunks  # the init calls of every slot on top


def test_exploration_of_an_analytic_potential_finds_its_three_minima(tmp_path):
    start = _butane_system(180.0)
    run = explore_minima(TORSION, start, n_replicas=4, temperature_K=1200.0,
                         timestep_fs=1.0, sample_every_fs=100.0, fmax=1e-4, max_frames=80, energy_tol=0.01, minimizer="lbfgs",
                         rmsd_tol=0.1, checkpoint=tmp_path / "explore", progress=False, seed=3)
    assert len(run.database) == 3, run.database.energies
    assert run.stats["converged"] + run.stats["not_converged"] + run.stats["rearranged"] == 80
    energies = sorted(run.database.energies)
    assert energies[0] == pytest.approx(0.0, abs=2e-3) and energies[1] == pytest.approx(energies[2], abs=2e-3)
    graph = run.graph
    assert sum(d["count"] for *_, d in graph.edges(data=True)) > 0
    # each edge count equals the transitions read off the sequences directly
    for u, v, d in graph.edges(data=True):
        n = sum(1 for seq in run.sequences.values() for (f0, m0), (f1, m1) in zip(sorted(seq), sorted(seq)[1:])
                if f1 == f0 + 1 and {m0, m1} == {u, v})
        assert d["count"] == n
    # resuming continues from the checkpoint instead of starting over
    more = explore_minima(TORSION, start, n_replicas=4, temperature_K=1200.0,
                          timestep_fs=1.0, sample_every_fs=100.0, fmax=1e-4, max_frames=100, minimizer="lbfgs",
                          checkpoint=tmp_path / "explore", progress=False, seed=3)
    assert more.stats["restarts"] == 1 and len(more.database) == 3
    assert sum(more.database.counts) == more.stats["converged"] > run.stats["converged"]


def test_a_two_stage_quench_finds_the_same_minima_with_fewer_evaluations():
    """prescreen_fmax: frames relaxed loosely first, matched against the database, refined only when new. Same
    frames (same seed), same three minima at the same energies and the same visit counts, fewer minimiser
    evaluations; the evaluation counters add up (MD: every replica every step; minimiser: every slot every
    step, so at least the busy slots' steps)."""
    kw = dict(n_replicas=4, temperature_K=1200.0, timestep_fs=1.0, sample_every_fs=100.0, fmax=1e-4,
              max_frames=60, minimizer="fire", progress=False, seed=3)
    one = explore_minima(TORSION, _butane_system(180.0), **kw)
    two = explore_minima(TORSION, _butane_system(180.0), prescreen_fmax=2e-2, **kw)
    for run in (one, two):
        s = run.stats
        assert s["md_evaluations"] == s["frames"] // kw["n_replicas"] * 100 * kw["n_replicas"]
        assert s["evaluations"] == s["md_evaluations"] + s["relax_evaluations"] >= s["md_evaluations"] + s["relax_steps"]
        assert run.evaluations_per_minimum == s["evaluations"] / len(run.database)
    assert len(one.database) == len(two.database) == 3 and one.stats["prescreen_matches"] == 0
    np.testing.assert_allclose(sorted(one.database.energies), sorted(two.database.energies), atol=1e-6)
    assert sorted(one.database.counts) == sorted(two.database.counts) and sum(two.database.counts) == 60
    assert two.stats["prescreen_matches"] >= 30  # most frames end in a minimum found before
    assert two.stats["relax_steps"] < 0.8 * one.stats["relax_steps"], (one.stats, two.stats)
    with pytest.raises(ValueError, match="prescreen_fmax must be above fmax"):
        explore_minima(TORSION, _butane_system(180.0), prescreen_fmax=1e-5, **kw)


def test_prescreen_distances_shrink_with_the_loose_threshold():
    """`prescreen_distances` on the torsion potential: a loose structure is never below its minimum, lies closer
    to it the tighter the loose threshold, and the two stages' steps add up to the relaxers' counts."""
    from so3krates_lab.analysis import prescreen_distances
    from so3krates_lab.md import force_function

    frames = np.stack([_butane_system(phi).positions for phi in (100.0, 150.0, -100.0, 20.0)])
    force_fn = force_function(TORSION, _butane_system(180.0))
    far = prescreen_distances(force_fn, frames, 5e-2, 1e-4)
    near = prescreen_distances(force_fn, frames, 2e-3, 1e-4)
    for r in (far, near):
        assert r["converged"].all() and r["rmsd"].shape == (4,) and np.all(r["energy_above"] > -1e-7)
        assert r["loose_steps"] > 0 and r["tail_steps"] > 0
    assert np.median(near["rmsd"]) < np.median(far["rmsd"]) and near["tail_steps"] < far["tail_steps"]
    with pytest.raises(ValueError, match="must be above fmax"):
        prescreen_distances(force_fn, frames, 1e-4, 1e-3)


def test_minima_vs_time_reads_the_history_at_wall_time_marks():
    from so3krates_lab.analysis import minima_vs_time

    history = [(30.0, 1, 2), (90.0, 3, 6), (150.0, 4, 9), (330.0, 7, 20)]  # (seconds, unique, quenched)
    assert minima_vs_time(history, marks_min=(1, 2, 5, 10)) == [(1, 1, 2), (2, 3, 6), (5, 4, 9), (5.5, 7, 20)]
    assert minima_vs_time([]) == []


# ---------------------------------------------------------------------- reference validation and coverage


def _lj_trimer(side: float = 2 ** (1 / 6)) -> np.ndarray:
    return np.array([[0.0, 0.0, 0.0], [side, 0.0, 0.0], [side / 2, side * np.sqrt(3) / 2, 0.0]])


def test_reference_relax_reports_minima_and_structures_that_relax_away():
    from ase.calculators.lj import LennardJones

    from so3krates_lab.analysis import reference_relax

    minimum = _lj_trimer()  # the LJ trimer's minimum: an equilateral triangle with side 2^(1/6) sigma
    stretched = _lj_trimer(1.6)  # not a minimum: it contracts by about 0.4 A per bond
    calc = LennardJones(sigma=1.0, epsilon=1.0, rc=10.0, smooth=False)
    val = reference_relax(calc, [18, 18, 18], np.stack([minimum, stretched]), [-3.0, -2.0], fmax=1e-4,
                          rmsd_tol=0.1, progress=False)
    assert val.rmsd[0] < 1e-3 and val.rmsd[1] > 0.1
    assert val.relaxed_away.values.tolist() == [False, True] and val.attrs["relaxed_away"] == 1
    # both end in the minimum (ASE shifts the LJ energy by its value at rc: -3 + 1.2e-5)
    assert val.reference_energy.values == pytest.approx([-3.0, -3.0], abs=1e-4)
    # model says the second lies 1 eV higher, the reference (relaxed) says 0: error 1 eV on it
    assert val.error.values == pytest.approx([0.0, 1.0], abs=1e-6)
    with pytest.raises(ValueError, match="model_energies"):
        reference_relax(calc, [18, 18, 18], minimum[None], [1.0, 2.0], progress=False)


def test_reached_by_marks_the_minima_other_minima_reach():
    from so3krates_lab.analysis import reached_by

    db, _ = _graph_fixture()
    hit = reached_by(db, db.positions[[2, 2, 0]] + 3.0, np.asarray(db.energies)[[2, 2, 0]])
    assert hit.tolist() == [True, False, True, False]


def test_exploration_restarts_from_starts_and_known_minima_without_edges_across_restarts(tmp_path):
    """At 150 K the 0.2 eV torsion barriers are not crossed within 50 fs, so one start finds one minimum;
    three starts (one per basin) find all three. restart_every=1 restarts every replica after each frame (from
    a known minimum), so no two frames of a chain are consecutive and the graph has no edge."""
    kwargs = dict(n_replicas=3, n_slots=3, temperature_K=150.0, timestep_fs=1.0, sample_every_fs=50.0, fmax=1e-4,
                  max_frames=12, minimizer="lbfgs", progress=False, seed=1)
    one = explore_minima(TORSION, _butane_system(180.0), **kwargs)
    assert len(one.database) == 1
    starts = np.stack([_butane_like(d) for d in (180.0, 65.0, -65.0)])
    three = explore_minima(TORSION, _butane_system(180.0), starts=starts, restart_every=1, **kwargs)
    assert len(three.database) == 3 and three.stats["minimum_restarts"] > 0
    assert three.graph.number_of_edges() == 0
    for seq in three.sequences.values():
        frames = sorted(f for f, _ in seq)
        assert all(b - a >= 2 for a, b in zip(frames, frames[1:])), frames
    with pytest.raises(ValueError, match="bond graph"):
        explore_minima(TORSION, _butane_system(180.0), starts=starts * [1.0, 1.0, 3.0], **kwargs)
    with pytest.raises(ValueError, match="restart_every"):
        explore_minima(TORSION, _butane_system(180.0), restart_every=0, **kwargs)


def test_backbone_torsions_of_the_shipped_tetrapeptide_match_ase():
    from ase import Atoms

    from so3krates_lab.analysis import backbone_torsions, dihedrals
    from so3krates_lab.data import load_shipped

    frame = load_shipped("ac_ala3_nhme_gfn2xtb")[0]
    torsions = backbone_torsions(frame.numbers, frame.positions)
    assert [name for name, _ in torsions] == ["phi1", "psi1", "phi2", "psi2", "phi3", "psi3"]
    quads = np.array([q for _, q in torsions])
    numbers = np.asarray(frame.numbers)
    assert np.all(numbers[quads[0::2, 1]] == 7) and np.all(numbers[quads[1::2, 3]] == 7)  # phi via N_i, psi to N_i+1
    angles = dihedrals(frame.positions, quads)
    atoms = Atoms(numbers=numbers, positions=frame.positions)
    expected = np.array([atoms.get_dihedral(*q) for q in quads])
    np.testing.assert_allclose((angles - expected + 180.0) % 360.0 - 180.0, 0.0, atol=1e-6)
    # a batch of frames gives (frames, torsions); a mirror image flips every sign
    assert dihedrals(np.stack([frame.positions] * 2), quads).shape == (2, 6)
    np.testing.assert_allclose(dihedrals(frame.positions * [1, 1, -1], quads), -angles, atol=1e-9)
    with pytest.raises(ValueError, match="not a peptide"):
        backbone_torsions(ETHANE_NUMBERS, ethane())
    from so3krates_lab.analysis.peptide import ramachandran_regions

    regions = ramachandran_regions(np.array([[60.0, -80.0, -70.0, -30.0, -90.0, 150.0],
                                             [-60.0, -40.0, -150.0, 160.0, 70.0, 20.0]]))
    assert regions.tolist() == ["LAB", "ABL"]
    assert ramachandran_regions(angles).shape == ()


def test_exploration_of_an_exploding_potential_stops_with_a_clear_error():
    """Forces that are NaN everywhere: every MD round leaves every replica non-finite. The search must say so
    after a bounded number of restarts instead of resampling for ever."""
    @struct.dataclass
    class Exploding(BasePotential):
        cutoff: float = struct.field(pytree_node=False, default=5.0)
        dtype: str = struct.field(pytree_node=False, default="float64")

        def energy(self, graph):
            per_atom = jnp.where(graph.atom_mask, jnp.nan * jnp.sum(graph.positions, axis=-1), 0.0)
            return jax.ops.segment_sum(per_atom, graph.atom_graph, num_segments=graph.cell.shape[0])

    energy, forces, _ = force_function(Exploding(), _butane_system(180.0))(jnp.asarray(_butane_like(180.0)))
    assert np.isnan(float(energy)) and np.isnan(np.asarray(forces)).all()
    with pytest.raises(RuntimeError, match="non-finite .* rounds in a row"):
        explore_minima(Exploding(), _butane_system(180.0), n_replicas=2, n_slots=2, temperature_K=300.0,
                       timestep_fs=1.0, sample_every_fs=5.0, max_frames=4, progress=False)


def test_a_plain_force_function_relaxes_in_the_batch_relaxer_too():
    """BatchRelaxer takes any ForceFunction: the hand-written torsion forces (ForceFunction.from_callable) reach
    the same minima as the potential on the protocol."""
    def plain(positions, aux):
        e, g = jax.value_and_grad(_torsion_energy)(positions)
        return e, -g, aux

    starts = np.stack([_butane_like(d) for d in (20.0, 150.0, -40.0)])
    out = {}
    for name, ff in (("plain", ForceFunction.from_callable(plain, dtype=jnp.float64)),
                     ("potential", force_function(TORSION, _butane_system(180.0)))):
        out[name] = BatchRelaxer(ff, starts[0], n_slots=2, fmax=1e-4, chunk_steps=20).relax_all(starts)
        assert out[name][2].all()
    np.testing.assert_allclose(out["plain"][0], out["potential"][0], atol=1e-6)
    np.testing.assert_allclose(out["plain"][1], out["potential"][1], atol=1e-9)
