"""Torsion moves and torsion-move minima hopping / basin hopping (analysis.torsions, analysis.hopping), and the
Exp-preconditioned L-BFGS they quench with."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from ase.build import molecule

from so3krates_lab import System
from so3krates_lab.analysis import (
    backbone_torsions, bond_graph, dihedrals, evaluation_profile, hop_minima, load_minima, minima_vs_evaluations, rotatable_bonds, rotate,
    torsion_kick,
)
from so3krates_lab.data import load, shipped_path
from so3krates_lab.md import BatchRelaxer, force_function
from test_interrupts import sigint_after
from test_minima import TORSION, _butane_like, _butane_system, _dihedral


def _bonds(torsions):
    return {frozenset((t.b, t.c)) for t in torsions}


def test_the_rotatable_bonds_of_the_shipped_tetrapeptide_are_its_backbone_phi_psi_bonds():
    """Ac-Ala3-NHMe: the methyl rotors (alanine side chains, caps) spin equivalent hydrogens and the amide bonds
    are planar, so exactly the six N-CA and CA-C' bonds remain; each moves the smaller side of the chain."""
    frame = load(shipped_path("ac_ala3_nhme_gfn2xtb.npz"))[0]
    numbers, positions = np.asarray(frame.numbers), np.asarray(frame.positions)
    torsions = rotatable_bonds(numbers, positions)
    expected = {frozenset(q[1:3]) for _, q in backbone_torsions(numbers, positions)}
    assert len(expected) == 6 and _bonds(torsions) == expected
    for t in torsions:
        assert 2 * len(t.moving) <= len(numbers) and t.c in t.moving and t.b not in t.moving


@pytest.mark.parametrize("name, n_rotatable", [("CH3CH2OH", 1), ("C6H6", 0), ("C2H4", 0), ("CH3COOH", 1),
                                               ("H2O", 0)])
def test_rotatable_bonds_skip_methyl_rotors_rings_and_double_bonds(name, n_rotatable):
    """Ethanol: C-O turns (one hydroxyl H), C-C only spins a methyl. Benzene: a ring. Ethylene: C=C. Acetic
    acid: the C-O(H) bond turns, C-C spins a methyl. Water: terminal atoms only."""
    atoms = molecule(name)
    torsions = rotatable_bonds(atoms.numbers, atoms.positions)
    assert len(torsions) == n_rotatable, [(t.b, t.c) for t in torsions]
    if name == "CH3CH2OH":
        (t,), numbers = torsions, atoms.numbers
        assert {numbers[t.b], numbers[t.c]} == {6, 8}


def test_rotate_turns_the_dihedral_by_the_angle_and_keeps_every_bond():
    pos = _butane_like(60.0)
    (t,) = rotatable_bonds(np.full(4, 6), pos)
    sign = 1.0 if (t.b, t.c) == (1, 2) else -1.0  # the dihedral 0-1-2-3 turns with the axis 1 -> 2
    turned = rotate(pos, t, np.radians(75.0))
    phi = np.degrees(float(_dihedral(jnp.asarray(turned))))
    assert phi == pytest.approx(60.0 + sign * 75.0, abs=1e-6)
    d = lambda p: np.linalg.norm(p[:, None] - p[None], axis=-1)  # noqa: E731
    np.testing.assert_allclose(d(turned)[[0, 1, 2, 0], [1, 2, 3, 2]], d(pos)[[0, 1, 2, 0], [1, 2, 3, 2]],
                               atol=1e-12)


def test_torsion_kicks_keep_atoms_apart_and_give_up_when_they_cannot():
    frame = load(shipped_path("ac_ala3_nhme_gfn2xtb.npz"))[0]
    numbers, positions = np.asarray(frame.numbers), np.asarray(frame.positions)
    torsions = rotatable_bonds(numbers, positions)
    quads = np.array([q for _, q in backbone_torsions(numbers, positions)])
    rng = np.random.default_rng(0)
    before = dihedrals(positions[None], quads)[0]
    for n_turns in (1, 3):
        kicked = torsion_kick(positions, torsions, rng, n_turns, numbers=numbers)
        assert kicked is not None and np.array_equal(bond_graph(numbers, kicked), bond_graph(numbers, positions))
        change = np.abs((dihedrals(kicked[None], quads)[0] - before + 180.0) % 360.0 - 180.0)
        assert np.sum(change > 59.0) == n_turns  # each turn is at least 60 degrees; the others stay put
    assert torsion_kick(positions, torsions, rng, 1, numbers=numbers, clash=50.0, tries=3) is None
    with pytest.raises(ValueError, match="no rotatable bonds"):
        torsion_kick(positions, [], rng, 1, numbers=numbers)


def test_kicks_of_minima_turn_one_torsion_of_a_known_minimum_each_and_are_seeded():
    from so3krates_lab.analysis import kicks_of_minima

    data = load(shipped_path("ac_ala3_nhme_gfn2xtb.npz"))
    numbers, minima = np.asarray(data[0].numbers), np.stack([data[i].positions for i in (0, 700, 1400)])
    torsions = rotatable_bonds(numbers, minima[0])
    quads = np.array([q for _, q in backbone_torsions(numbers, minima[0])])
    kicks = kicks_of_minima(minima, torsions, np.random.default_rng(5), 6, numbers=numbers)
    assert kicks.shape == (6, len(numbers), 3)
    for kicked in kicks:  # one torsion of one of the minima turned by at least 60 degrees, the others unchanged
        change = np.abs((dihedrals(kicked[None], quads)[0] - dihedrals(minima, quads) + 180.0) % 360.0 - 180.0)
        assert np.any((np.sum(change > 59.0, axis=1) == 1) & (np.sum(change > 1e-6, axis=1) == 1))
        assert np.array_equal(bond_graph(numbers, kicked), bond_graph(numbers, minima[0]))
    np.testing.assert_array_equal(kicks_of_minima(minima, torsions, np.random.default_rng(5), 6, numbers=numbers),
                                  kicks)
    with pytest.raises(ValueError, match="need k >= 1"):
        kicks_of_minima(minima, torsions, np.random.default_rng(5), 0, numbers=numbers)
    with pytest.raises(ValueError, match="kept their atoms apart"):
        kicks_of_minima(minima, torsions, np.random.default_rng(5), 1, numbers=numbers, clash=50.0, tries=1)


@pytest.mark.parametrize("acceptance", ["window", "metropolis", "frontier"])
def test_hopping_finds_the_three_torsion_minima_records_its_hops_and_resumes(tmp_path, acceptance):
    kw = dict(n_walkers=3, fmax=1e-4, progress=False, seed=1, acceptance=acceptance, checkpoint=tmp_path / "hop")
    run = hop_minima(TORSION, _butane_system(180.0), max_hops=30, **kw)
    st = run.stats
    assert len(run.database) == 3
    energies = sorted(run.database.energies)
    assert energies[0] == pytest.approx(0.0, abs=1e-6) and energies[1] == pytest.approx(energies[2], abs=1e-5)
    # the counters add up: the walkers' start quenches, then every hop ends new, known or back home
    assert st["hops"] >= 30 and st["converged"] == st["hops"]
    assert st["new"] + st["known"] + st["returned"] + 3 == st["hops"] and st["new"] == 3 - 1
    assert st["evaluations"] == st["relax_evaluations"] >= st["relax_steps"] > 0 and st["md_evaluations"] == 0
    assert sum(run.database.counts) == st["converged"]
    # where the evaluations go: the busy steps of finished quenches split by how each ended (the quenches in
    # flight at the stop are the rest, none when every walker's quench ended in the last chunk); the starts lie on
    # the anti minimum already
    by_outcome = [st[key] for key in ("steps_new", "steps_known", "steps_returned", "steps_start", "steps_failed")]
    assert 0 <= st["relax_steps"] - sum(by_outcome) <= 3 * 2000 and st["steps_failed"] == 0
    assert st["steps_new"] > 0 and st["steps_known"] > 0
    profile = evaluation_profile(st)
    assert sum(evaluations for *_, evaluations in profile) == st["evaluations"]
    assert [count for _, count, _ in profile[:3]] == [st["new"], st["known"], st["returned"]]
    # every hop between different minima is one edge count
    hops = sum(1 for seq in run.sequences.values() for (f0, m0), (f1, m1) in zip(seq[::2], seq[1::2]) if m0 != m1)
    assert sum(d["count"] for *_, d in run.graph.edges(data=True)) == hops == st["new"] + st["known"]
    rows = minima_vs_evaluations(run.history)
    assert rows[-1][:2] == (st["evaluations"], 3)
    more = hop_minima(TORSION, _butane_system(180.0), max_hops=45, **kw)
    assert more.stats["restarts"] == 1 and more.stats["hops"] >= 45 and len(more.database) == 3
    assert more.stats["evaluations"] > st["evaluations"]
    db, _, _, extra = load_minima(tmp_path / "hop")
    assert extra["settings"]["acceptance"] == acceptance and len(extra["walkers"]) == 3


def test_refined_hopping_stores_tight_minima_and_matches_known_ones_loosely():
    """refine_fmax: a quench to fmax is compared with the database and relaxed on only when new, so the stored
    minima are tight (their energies equal the fmax=1e-5 minima) while most hops stop at the loose threshold
    (on the peptide the saving is measured in benchmarks/README.md)."""
    run = hop_minima(TORSION, _butane_system(180.0), n_walkers=2, max_hops=20, fmax=1e-2, refine_fmax=1e-5,
                     progress=False, seed=2)
    tight = hop_minima(TORSION, _butane_system(180.0), n_walkers=2, max_hops=20, fmax=1e-5, progress=False, seed=2)
    assert len(run.database) == len(tight.database) == 3
    np.testing.assert_allclose(sorted(run.database.energies), sorted(tight.database.energies), atol=1e-8)
    # the starts are quenched tightly at once; each of the two other minima is refined once per walker at most
    # (two walkers may reach a new minimum before either has stored it), every other hop stops at fmax
    assert 2 <= run.stats["refined"] <= 2 * 2 and run.stats["refined"] < run.stats["hops"] / 2
    outcome = sum(run.stats[k] for k in ("steps_new", "steps_known", "steps_returned", "steps_start", "steps_failed"))
    assert 0 <= run.stats["relax_steps"] - outcome <= 2 * 2000  # both stages of a refined quench are counted


def test_the_kick_taboo_keeps_every_kick_away_from_earlier_kicks_and_survives_a_resume(tmp_path):
    """taboo_kicks: a kick whose torsion angles lie within taboo_deg of an earlier kick's is drawn again, so on
    the one-torsion model no two kicks are closer than taboo_deg (2 degrees leaves room for every draw), and the
    exploration still finds the three minima."""
    def kicks(taboo_kicks, path, hops):
        run = hop_minima(TORSION, _butane_system(180.0), n_walkers=2, max_hops=hops, fmax=1e-3, taboo_deg=2.0,
                         taboo_kicks=taboo_kicks, progress=False, seed=4, checkpoint=path)
        return run, np.asarray(load_minima(path)[3].get("kick_angles", []))

    def closest_to_an_earlier_one(angles):
        return min(np.min(np.abs((angles[:i] - angles[i] + 180.0) % 360.0 - 180.0)) for i in range(1, len(angles)))

    run, angles = kicks(True, tmp_path / "taboo", 20)
    assert angles.shape[1] == 1 and len(angles) >= run.stats["hops"] - 2  # one row per kick (not the 2 starts)
    assert closest_to_an_earlier_one(angles) >= 2.0 and run.stats["taboo_redraws"] > 0
    more, more_angles = kicks(True, tmp_path / "taboo", 30)  # resumed: the earlier kicks still count
    np.testing.assert_array_equal(more_angles[:len(angles)], angles)
    assert len(more_angles) > len(angles) and closest_to_an_earlier_one(more_angles) >= 2.0
    _, free = kicks(False, tmp_path / "free", 20)
    assert len(free) == 0 and len(run.database) == len(more.database) == 3  # (not recorded without the taboo)


def test_hopping_rejects_what_it_cannot_explore():
    linear = System(numbers=np.array([6, 6, 6]), positions=np.array([[0, 0, 0], [1.5, 0, 0], [3.0, 0, 0.0]]))
    with pytest.raises(ValueError, match="no rotatable bonds"):
        hop_minima(TORSION, linear, max_hops=1, progress=False)
    with pytest.raises(ValueError, match="give a budget"):
        hop_minima(TORSION, _butane_system(180.0), progress=False)
    with pytest.raises(ValueError, match="acceptance must be one of"):
        hop_minima(TORSION, _butane_system(180.0), max_hops=1, acceptance="greedy", progress=False)
    with pytest.raises(ValueError, match="refine_fmax must lie between"):
        hop_minima(TORSION, _butane_system(180.0), max_hops=1, fmax=1e-3, refine_fmax=1e-2, progress=False)
    with pytest.raises(ValueError, match="different covalent bond graph"):
        hop_minima(TORSION, _butane_system(180.0), max_hops=1, starts=_butane_like(60.0)[None] * 3, progress=False)


def test_ctrl_c_during_hopping_saves_and_the_same_call_resumes(tmp_path):
    kw = dict(n_walkers=2, fmax=1e-4, checkpoint=tmp_path / "hop", progress=False, seed=3)
    first = sigint_after(3.0, lambda: hop_minima(TORSION, _butane_system(180.0), max_hops=10**6, minutes=2.0, **kw))
    assert first.stats["interrupted"] == "SIGINT"
    db, _, _, extra = load_minima(tmp_path / "hop")  # saved at the interrupt, with the walkers' quenches
    assert len(db) == len(first.database) and extra["stats"]["hops"] == first.stats["hops"]
    assert len(extra["pending"]) == 2  # one quench in flight or queued per walker
    more = hop_minima(TORSION, _butane_system(180.0), max_hops=first.stats["hops"] + 6, **kw)
    assert "interrupted" not in more.stats and more.stats["restarts"] == 1
    assert more.stats["hops"] >= first.stats["hops"] + 6


def test_the_exp_preconditioned_lbfgs_reaches_the_same_minima():
    """precon="exp" changes the path, not the minimum: the three torsion minima at the same energies."""
    starts = np.stack([_butane_like(d) for d in (20.0, 100.0, 150.0, -170.0, -40.0, -100.0)])
    starts += np.random.default_rng(0).normal(size=starts.shape) * 0.05
    force_fn = force_function(TORSION, _butane_system(180.0))
    out = {}
    for precon in (None, "exp"):
        relaxer = BatchRelaxer(force_fn, starts[0], n_slots=3, fmax=1e-5, chunk_steps=20, minimizer="lbfgs",
                               precon=precon)
        pos, energies, ok = relaxer.relax_all(starts)
        assert ok.all()
        out[precon] = (pos, energies)
    np.testing.assert_allclose(out["exp"][1], out[None][1], atol=1e-8)
    phi = lambda p: np.degrees([float(_dihedral(jnp.asarray(x))) for x in p])  # noqa: E731
    turn = (phi(out["exp"][0]) - phi(out[None][0]) + 180.0) % 360.0 - 180.0  # 180 and -180 are one angle
    np.testing.assert_allclose(turn, 0.0, atol=0.05)
    with pytest.raises(ValueError, match="precon must be"):
        BatchRelaxer(force_fn, starts[0], n_slots=1, minimizer="lbfgs", precon="ff")


def test_diverse_backbone_frames_take_each_backbone_state_in_turn():
    from so3krates_lab.analysis import diverse_backbone_frames
    from so3krates_lab.analysis.peptide import ramachandran_regions

    data = load(shipped_path("ac_ala3_nhme_gfn2xtb.npz"))
    frames = np.stack([data[i].positions for i in range(0, 3000, 25)])
    numbers, reference = np.asarray(data[0].numbers), frames[0]
    quads = np.array([q for _, q in backbone_torsions(numbers, reference)])
    states = ramachandran_regions(dihedrals(frames, quads))
    n_states = len(np.unique(states))
    assert n_states >= 2
    picked, regions = diverse_backbone_frames(numbers, reference, frames, n_states, seed=1)
    assert len(picked) == n_states and len(np.unique(regions)) == n_states  # one frame of every state first
    np.testing.assert_array_equal(regions, states[picked])
    again, _ = diverse_backbone_frames(numbers, reference, frames, n_states, seed=1)
    np.testing.assert_array_equal(picked, again)  # seeded
    assert len(diverse_backbone_frames(numbers, reference, frames, 10**6)[0]) == len(frames)  # at most all
