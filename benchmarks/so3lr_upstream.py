"""Run the published SO3LR model through ITS OWN code (general-molecular-simulations/so3lr + kabylda/mlff,
glp, jax-md), for checking and timing the project's independent re-implementation against it.

Run it with the python of the environment built by ``benchmarks/so3lr_upstream_env.sh`` (default
``/work/so3lr_upstream/venv/bin/python``). It never imports ``so3krates_lab``; nothing of the upstream code
is part of this package: this script only calls it and writes numbers.

Subcommands
-----------
reference --out DIR [--precision float64|float32]
    Energy and forces of ``dha`` (56 atoms) and ``bb`` (148 atoms) as free molecules (cell removed, pbc
    False) and of ``water`` (``water_64.xyz`` repeated 2x2x2 = 1536 atoms, periodic 24.8 A cubic cell)
    through SO3LR's ASE calculator (``mlffCalculatorSparse.create_from_ckpt_dir`` with lr_cutoff 12 A,
    dispersion damping 2 A, ``from_file=True``: the exact call of so3lr ``tests/test_ase.py``), and the same
    molecules through SO3LR's JAX-MD path (``so3lr.So3lrPotential`` + ``so3lr.jaxmd_utils.to_jax_md``, as in
    ``tests/test_jaxmd.py``). Prints max |dE| and max |dF| against ``*_ase.npz`` and ``*_jaxmd.npz`` in
    /work/shared/so3lr/reference_outputs and writes DIR/reference_<precision>.json and
    DIR/<name>_{ase,jaxmd}_<precision>.npz (keys ``energy`` eV, ``forces`` eV/A).
    ``float64`` turns on ``jax_enable_x64``; ``float32`` leaves it off (then the calculator's
    ``dtype=np.float64`` only casts the outputs: the computation is float32). Note: the shipped
    ``*_ase.npz`` references are float32 numbers (every value is exactly representable in float32), i.e.
    they were made with x64 off; the ``*_jaxmd.npz`` references are genuine float64.
    Upstream's float64 is not float64 throughout: the parameters are float32, and the ZBL coefficients
    softplus(a1..a4, c1..c4, p, d) are evaluated in float32, so E_zbl carries a ~1e-7 relative ambiguity
    (dha: -8.0e-7 eV if the params are cast to float64 first; -8.6e-8 eV if the params are jit arguments
    instead of closed-over constants that XLA folds). All other terms agree to ~1e-14 between those variants.
    This is the likely cause of the 5e-7 (dha, bb) / 7e-5 eV (water) offsets versus the ``*_jaxmd.npz`` files.

terms --out DIR
    For dha, bb and water, in float64, through the same ASE calculator, writes DIR/<name>_terms.npz
    (compressed) with the keys below. Shapes: N atoms, P short-range pair slots, L long-range pair slots.
    Pair slots beyond ``num_pairs``/``num_pairs_lr`` are padding: index N in idx_*, the padded capacity is
    the calculator's capacity_multiplier 1.25 (``int(hits * 1.25 + 1)``).

      atomic_numbers (N,) int; positions (N,3) A: the positions the calculator saw
      cell (3,3) A: ASE cell (rows = lattice vectors), zeros for the free molecules; pbc (3,) bool
      total_charge (1,) e, num_unpaired_electrons (1,): the values the calculator passed to the model
          (glp.atoms_to_system: atoms.info['charge'] else 0; atoms.info['multiplicity'] - 1 else 0)
      energy () eV: total energy returned by the calculator (sum of atomic_energy)
      forces (N,3) eV/A: the calculator's forces (-dE/dR, autodiff through the neighbour displacements)
      atomic_energy (N,) eV: per-atom total = atomic_energy_nn + zbl + electrostatic + dispersion
      atomic_energy_nn (N,) eV: the network's per-atom energy before the physical terms, i.e.
          energy_dense_final(.)*atomic_scales[Z] + energy_offset[Z] (computed as atomic_energy minus the three
          physical per-atom terms; energy_dense_final_raw holds the raw dense output, before scale/offset)
      energy_dense_final_raw (N,): output of EnergySparse's final dense layer (no scale, no shift)
      zbl_energy (N,) eV: ZBLRepulsionSparse per-atom (pair term /2 summed over the short-range list)
      electrostatic_energy (N,) eV: ElectrostaticEnergySparse per-atom (sparse format: pair term * 0.5,
          summed over idx_i_lr)
      dispersion_energy (N,) eV: DispersionEnergySparse per-atom (same 0.5 convention)
      partial_charges (N,) e: after charge equilibration to total_charge
      hirshfeld_ratios (N,): |v_eff|, the model's Hirshfeld volume ratios
      dipole_vec (1,3) e*A: sum_i q_i R_i (from the model's DipoleVecSparse observable)
      x_embed_atom_type, x_embed_charge, x_embed_spin (N,128): the three feature embeddings
      x_embed (N,128): x entering layer 0 = sum of the three embeddings / sqrt(3) (captured as layer 0's input)
      x_layer{k} (N,128), ev_layer{k} (N,24): x and the equivariant features ev after layer k = 0, 1, 2
          (x_layer2 is the x the observables read; ev before layer 0 is zero)
      idx_i, idx_j (P,) int: short-range list (centers, others) exactly as the calculator built it
      idx_i_lr, idx_j_lr (L,) int: long-range list
      num_pairs, num_pairs_lr () int: number of real (non-padding) entries, which come first
      displacements (P,3), displacements_lr (L,3) A: r_ij = R[j] - R[i] (+ minimum image), as the model saw
      cell_offsets (P,3), cell_offsets_lr (L,3) int: integer image shifts n with
          displacements = R[idx_j] - R[idx_i] + n @ cell (cell rows = lattice vectors); zeros for molecules.
          Upstream never stores offsets: glp applies the minimum image to fractional coordinates; these are
          reconstructed from the displacements.
      d_ij (P,), d_ij_lr (L,) A: distances (GeometryEmbedSparse); cut (P,): the cutoff function (phys, 4.5 A);
      rbf_ij (P,32): Bernstein radial basis (dha and bb only, to keep the water file small)
      energy_check_apply () eV: the same energy from a separate model.apply (under value_and_grad, like the
          calculator) that produced the x_* arrays; it agrees with `energy` to ~1e-14 eV

time --system {dha,bb,water} --dtype {float32,float64} --repeats N [--md-steps 200] [--dt-fs 0.5]
    Median wall time per energy+forces call (compiled, after warm-up) through
      * the ASE calculator (``calc.calculate(atoms)`` on slightly displaced positions each call, so the
        neighbour list is updated each time, as in an ASE MD run; and its jitted ``calculate_fn`` alone with
        fixed neighbours),
      * the JAX-MD potential (``So3lrPotential`` + ``to_jax_md``; value_and_grad of the energy, fixed
        neighbour lists),
    and MD steps per second for an NVT Nose-Hoover run (300 K, ``--dt-fs`` fs, ``--md-steps`` steps) through
    the so3lr CLI's own path as in its ``perform_md``: ``handle_box``, ``process_model`` (``to_jax_md_custom``),
    ``create_nhc_fn`` step with both neighbour-list updates, inside one jitted ``lax.fori_loop`` (compiled on a
    2-step run first). Prints one JSON line.
"""
import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

REF_DIR = pathlib.Path(os.environ.get('SO3LR_REF_DIR', '/work/shared/so3lr/reference_outputs'))
LR_CUTOFF = 12.0
DISP_DAMPING = 2.0
SYSTEMS = ('dha', 'bb', 'water')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = p.add_subparsers(dest='cmd', required=True)
    r = sub.add_parser('reference')
    r.add_argument('--out', required=True)
    r.add_argument('--precision', choices=('float64', 'float32'), default='float64')
    r.add_argument('--systems', default=','.join(SYSTEMS))
    r.add_argument('--no-jaxmd', action='store_true', help='skip the JAX-MD path')
    t = sub.add_parser('terms')
    t.add_argument('--out', required=True)
    t.add_argument('--systems', default=','.join(SYSTEMS))
    m = sub.add_parser('time')
    m.add_argument('--system', choices=SYSTEMS, required=True)
    m.add_argument('--dtype', choices=('float32', 'float64'), default='float32')
    m.add_argument('--repeats', type=int, default=10)
    m.add_argument('--md-steps', type=int, default=200)
    m.add_argument('--dt-fs', type=float, default=0.5)
    m.add_argument('--skip-md', action='store_true')
    return p.parse_args(argv)


ARGS = parse_args()

import jax  # noqa: E402

_X64 = (getattr(ARGS, 'precision', None) == 'float64' or ARGS.cmd == 'terms'
        or getattr(ARGS, 'dtype', None) == 'float64')
jax.config.update('jax_enable_x64', bool(_X64))

import logging  # noqa: E402
import warnings  # noqa: E402

warnings.filterwarnings('ignore')
logging.getLogger().setLevel(logging.ERROR)

import numpy as np  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from ase.io import read  # noqa: E402

import so3lr  # noqa: E402
from mlff.md.calculator_sparse import mlffCalculatorSparse  # noqa: E402

PARAMS_DIR = pathlib.Path(so3lr.__file__).resolve().parent / 'params'


def load_atoms(name):
    """The geometries exactly as so3lr's tests/test_ase.py prepares them."""
    if name == 'water':
        atoms = read(REF_DIR / 'water_64.xyz') * [2, 2, 2]
    else:
        atoms = read(REF_DIR / f'{name}.xyz')
        atoms.cell = None
        atoms.pbc = False
    atoms.calc = None
    return atoms


def make_ase_calc(dtype, **kw):
    return mlffCalculatorSparse.create_from_ckpt_dir(
        ckpt_dir=PARAMS_DIR,
        lr_cutoff=LR_CUTOFF,
        dispersion_energy_cutoff_lr_damping=DISP_DAMPING,
        from_file=True,
        dtype=dtype,
        **kw,
    )


def jaxmd_setup(name, dtype):
    """so3lr's JAX-MD path as in tests/test_jaxmd.py (free space for molecules, fractional periodic for water)."""
    from jax_md import space
    from so3lr import jaxmd_utils
    from so3lr import So3lrPotential

    if name == 'water':
        mol = read(REF_DIR / 'water_64.xyz')
        mol.wrap()
        mol = mol.repeat([2, 2, 2])
        box = jnp.array(np.diag(mol.get_cell().T), dtype=dtype)
        R0 = jnp.array(mol.get_positions(), dtype=dtype) / box
        displacement, shift = space.periodic_general(box, fractional_coordinates=True)
        disable_cell_list = False
    else:
        mol = read(REF_DIR / f'{name}.xyz')
        box = None
        R0 = jnp.array(mol.get_positions(), dtype=dtype)
        displacement, shift = space.free()
        disable_cell_list = True
    species = jnp.array(mol.get_atomic_numbers())
    potential = So3lrPotential(dtype=dtype, lr_cutoff=LR_CUTOFF,
                               dispersion_energy_cutoff_lr_damping=DISP_DAMPING)
    neighbor_fn, neighbor_fn_lr, energy_fn = jaxmd_utils.to_jax_md(
        potential=potential,
        displacement_or_metric=displacement,
        box_size=box,
        species=species,
        capacity_multiplier=1.25,
        buffer_size_multiplier_sr=1.25,
        buffer_size_multiplier_lr=1.25,
        minimum_cell_size_multiplier_sr=1.0,
        disable_cell_list=disable_cell_list,
    )
    return dict(mol=mol, box=box, R0=R0, shift=shift, species=species, neighbor_fn=neighbor_fn,
                neighbor_fn_lr=neighbor_fn_lr, energy_fn=energy_fn)


def jaxmd_energy_forces(setup):
    energy_fn = setup['energy_fn']
    box = setup['box']
    R0 = setup['R0']
    nbrs = setup['neighbor_fn'].allocate(R0, box=box)
    nbrs_lr = setup['neighbor_fn_lr'].allocate(R0, box=box)

    @jax.jit
    def ef(R, nb, nb_lr):
        e, g = jax.value_and_grad(lambda r: energy_fn(r, neighbor=nb, neighbor_lr=nb_lr, box=box))(R)
        return e, -g

    return ef, nbrs, nbrs_lr


def _dev(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


# ---------------------------------------------------------------------------------------------- reference
def cmd_reference(args):
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dtype = np.float64 if args.precision == 'float64' else np.float32
    summary = dict(precision=args.precision, jax_enable_x64=bool(jax.config.jax_enable_x64),
                   jax=jax.__version__, device=str(jax.devices()[0]), systems={})
    for name in args.systems.split(','):
        res = {}
        ref = np.load(REF_DIR / f'{name}_ase.npz')
        atoms = load_atoms(name)
        atoms.calc = make_ase_calc(np.float64)  # as in tests/test_ase.py (dtype only casts outputs)
        t0 = time.perf_counter()
        e = float(atoms.get_potential_energy())
        f = np.asarray(atoms.get_forces())
        res['ase_seconds_first_call'] = time.perf_counter() - t0
        res['ase_energy'] = e
        res['ase_ref_energy'] = float(ref['energy'])
        res['ase_max_abs_dE_vs_ase_ref'] = abs(e - float(ref['energy']))
        res['ase_max_abs_dF_vs_ase_ref'] = _dev(f, ref['forces'])
        np.savez(out / f'{name}_ase_{args.precision}.npz', energy=np.float64(e), forces=f.astype(np.float64))
        if name == 'dha':
            # the public wrapper so3lr.So3lrCalculator (same settings by default) gives the same numbers
            a2 = load_atoms(name)
            a2.calc = so3lr.So3lrCalculator(dtype=np.float64)
            res['so3lr_calculator_vs_mlff_calculator_dE'] = abs(float(a2.get_potential_energy()) - e)
            res['so3lr_calculator_vs_mlff_calculator_dF'] = _dev(a2.get_forces(), f)
        refj = np.load(REF_DIR / f'{name}_jaxmd.npz')
        res['ase_max_abs_dE_vs_jaxmd_ref'] = abs(e - float(refj['energy']))
        res['ase_max_abs_dF_vs_jaxmd_ref'] = _dev(f, refj['forces'])
        print(f'[{args.precision}] {name:5s} ASE   E={e:.8f} dE(ase ref)={res["ase_max_abs_dE_vs_ase_ref"]:.2e} '
              f'dF(ase ref)={res["ase_max_abs_dF_vs_ase_ref"]:.2e} | vs jaxmd ref dE='
              f'{res["ase_max_abs_dE_vs_jaxmd_ref"]:.2e} dF={res["ase_max_abs_dF_vs_jaxmd_ref"]:.2e}', flush=True)
        if not args.no_jaxmd:
            setup = jaxmd_setup(name, jnp.float64 if dtype == np.float64 else jnp.float32)
            ef, nbrs, nbrs_lr = jaxmd_energy_forces(setup)
            ej, fj = ef(setup['R0'], nbrs.idx, nbrs_lr.idx)
            ej = float(ej)
            fj = np.asarray(fj)
            res['jaxmd_energy'] = ej
            res['jaxmd_max_abs_dE_vs_jaxmd_ref'] = abs(ej - float(refj['energy']))
            res['jaxmd_max_abs_dF_vs_jaxmd_ref'] = _dev(fj, refj['forces'])
            res['jaxmd_max_abs_dE_vs_ase_ref'] = abs(ej - float(ref['energy']))
            res['jaxmd_max_abs_dF_vs_ase_ref'] = _dev(fj, ref['forces'])
            np.savez(out / f'{name}_jaxmd_{args.precision}.npz', energy=np.float64(ej), forces=fj.astype(np.float64))
            print(f'[{args.precision}] {name:5s} JAXMD E={ej:.8f} dE(jaxmd ref)={res["jaxmd_max_abs_dE_vs_jaxmd_ref"]:.2e} '
                  f'dF(jaxmd ref)={res["jaxmd_max_abs_dF_vs_jaxmd_ref"]:.2e} | vs ase ref dE='
                  f'{res["jaxmd_max_abs_dE_vs_ase_ref"]:.2e} dF={res["jaxmd_max_abs_dF_vs_ase_ref"]:.2e}', flush=True)
        summary['systems'][name] = res
    with open(out / f'reference_{args.precision}.json', 'w') as fh:
        json.dump(summary, fh, indent=1)
    print(json.dumps(summary))


# -------------------------------------------------------------------------------------------------- terms
INTERMEDIATE_KEYS = ['zbl_repulsion', 'partial_charges', 'electrostatic_energy', 'dispersion_energy',
                     'd_ij', 'd_ij_lr', 'cut', 'rbf_ij']


def _capture_apply(net, params, inputs):
    """model.apply with flax method interception: record inputs/outputs of the embeddings and layers."""
    import flax.linen as nn

    rec = {}

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == '__call__' and context.module.scope is not None:
            path = tuple(context.module.scope.path)  # e.g. ('layers_0',) for a direct child of StackNetSparse
            name = path[-1] if path else None
            if len(path) == 1 and (name.startswith('feature_embeddings_') or name.startswith('layers_')):
                if name.startswith('layers_'):
                    rec[name + '/in_x'] = kwargs['x']
                    rec[name + '/in_ev'] = kwargs['ev']
                rec[name] = out
            elif path == ('observables_0', 'energy_dense_final'):
                rec['energy_dense_final'] = out
        return out

    with nn.intercept_methods(interceptor):
        y = net.apply(params, inputs)
    return y, rec


def cmd_terms(args):
    from glp import atoms_to_system
    from glp.graph import system_to_graph
    from mlff.mdx.potential.mlff_potential_sparse import load_model_from_workdir

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    net, params = load_model_from_workdir(
        PARAMS_DIR, model='so3krates', from_file=True,
        long_range_kwargs=dict(cutoff_lr=LR_CUTOFF, dispersion_energy_cutoff_lr_damping=DISP_DAMPING,
                               neighborlist_format_lr='sparse'))
    # the same conventions MLFFPotentialSparse.create_from_workdir sets
    net.reset_input_convention('displacements')
    net.reset_output_convention('per_atom')

    def _inputs(graph, N):
        # the dict MLFFPotentialSparse.graph_to_mlff_input + get_observable_fn_sparse hand to model.apply
        return dict(
            positions=graph.positions, displacements=graph.edges, atomic_numbers=graph.nodes,
            idx_i=graph.centers, idx_j=graph.others, total_charge=graph.total_charge,
            num_unpaired_electrons=graph.num_unpaired_electrons, cell=graph.cell,
            displacements_lr=graph.edges_lr, idx_i_lr=graph.idx_i_lr, idx_j_lr=graph.idx_j_lr,
            cell_offset=None, batch_segments=jnp.zeros_like(graph.nodes),
            node_mask=jnp.ones((N,), dtype=bool), graph_mask=jnp.ones((1,), dtype=bool))

    def _energy_with_capture(R, system, nb):
        # same structure as the calculator's calculate_fn: energy as a function of R, displacements built
        # from R by glp inside, differentiated (the forward value under value_and_grad differs from a
        # forward-only apply by ~1e-9 relative, so we capture inside value_and_grad, like the calculator).
        graph = system_to_graph(system._replace(R=R), nb, pme=False)
        y, rec = _capture_apply(net, params, _inputs(graph, R.shape[0]))
        return jnp.sum(y['energy']), (y, rec)

    capture = jax.jit(jax.value_and_grad(_energy_with_capture, has_aux=True))

    for name in args.systems.split(','):
        atoms = load_atoms(name)
        calc = make_ase_calc(np.float64, has_aux=True, output_intermediate_quantities=INTERMEDIATE_KEYS)
        atoms.calc = calc
        energy = float(atoms.get_potential_energy())
        forces = np.asarray(atoms.get_forces())
        aux = {k: np.asarray(v) for k, v in calc.results['aux'].items()}
        nb = calc.neighbors
        N = len(atoms)

        # Rebuild exactly what the calculator fed the model (same glp calls as calculator_sparse.calculate).
        system = atoms_to_system(atoms, dtype=np.float64)
        graph = system_to_graph(system, nb, pme=False)
        idx_i = np.asarray(nb.centers)
        idx_j = np.asarray(nb.others)
        idx_i_lr = np.asarray(nb.idx_i_lr)
        idx_j_lr = np.asarray(nb.idx_j_lr)
        num_pairs = int(np.sum(idx_i < N))
        num_pairs_lr = int(np.sum(idx_i_lr < N))
        assert np.all(idx_i[:num_pairs] < N) and np.all(idx_i[num_pairs:] == N)
        assert np.all(idx_i_lr[:num_pairs_lr] < N) and np.all(idx_i_lr[num_pairs_lr:] == N)
        R = np.asarray(system.R)
        disp = np.asarray(graph.edges)
        disp_lr = np.asarray(graph.edges_lr)
        ase_cell = np.asarray(atoms.get_cell().array, np.float64)

        def offsets(ii, jj, d, n_real):
            off = np.zeros(d.shape, dtype=np.int32)
            if system.cell is not None:
                raw = R[np.minimum(jj[:n_real], N - 1)] - R[np.minimum(ii[:n_real], N - 1)]
                frac = (d[:n_real] - raw) @ np.linalg.inv(ase_cell)
                n = np.rint(frac)
                assert np.max(np.abs(frac - n)) < 1e-6
                off[:n_real] = n.astype(np.int32)
            return off

        (e_apply, (y, rec)), dEdR = capture(system.R, system, nb)
        rec = jax.tree_util.tree_map(np.asarray, rec)

        e_nn = aux['energy'] - aux['zbl_repulsion'] - aux['electrostatic_energy'] - aux['dispersion_energy']
        data = dict(
            atomic_numbers=np.asarray(atoms.get_atomic_numbers()),
            positions=R,
            cell=ase_cell,
            pbc=np.asarray(atoms.get_pbc()),
            total_charge=np.asarray(system.total_charge),
            num_unpaired_electrons=np.asarray(system.num_unpaired_electrons),
            energy=np.float64(energy),
            forces=forces,
            atomic_energy=aux['energy'],
            atomic_energy_nn=e_nn,
            energy_dense_final_raw=rec['energy_dense_final'].reshape(-1),
            zbl_energy=aux['zbl_repulsion'],
            electrostatic_energy=aux['electrostatic_energy'],
            dispersion_energy=aux['dispersion_energy'],
            partial_charges=aux['partial_charges'],
            hirshfeld_ratios=aux['hirshfeld_ratios'],
            dipole_vec=aux['dipole_vec'],
            x_embed_atom_type=rec['feature_embeddings_0'],
            x_embed_charge=rec['feature_embeddings_1'],
            x_embed_spin=rec['feature_embeddings_2'],
            x_embed=rec['layers_0/in_x'],
            idx_i=idx_i, idx_j=idx_j, idx_i_lr=idx_i_lr, idx_j_lr=idx_j_lr,
            num_pairs=np.int64(num_pairs), num_pairs_lr=np.int64(num_pairs_lr),
            displacements=disp, displacements_lr=disp_lr,
            cell_offsets=offsets(idx_i, idx_j, disp, num_pairs),
            cell_offsets_lr=offsets(idx_i_lr, idx_j_lr, disp_lr, num_pairs_lr),
            d_ij=aux['d_ij'], d_ij_lr=aux['d_ij_lr'], cut=aux['cut'],
            energy_check_apply=np.float64(e_apply),
        )
        if name != 'water':
            data['rbf_ij'] = aux['rbf_ij']
        k = 0
        while f'layers_{k}' in rec:
            data[f'x_layer{k}'] = rec[f'layers_{k}']['x']
            data[f'ev_layer{k}'] = rec[f'layers_{k}']['ev']
            k += 1
        # internal consistency checks (all should be ~1e-12 in float64)
        checks = dict(
            sum_atomic_vs_energy=abs(float(np.sum(aux['energy'])) - energy),
            apply_vs_calculator=abs(float(data['energy_check_apply']) - energy),
            apply_forces_vs_calculator=_dev(-np.asarray(dEdR), forces),
            apply_atomic_vs_calculator=_dev(np.asarray(y['energy']), aux['energy']),
            x_embed_vs_sum_of_embeddings=_dev(
                data['x_embed'], (rec['feature_embeddings_0'] + rec['feature_embeddings_1']
                                  + rec['feature_embeddings_2']) / np.sqrt(3.0)),
            charge_sum=float(np.sum(aux['partial_charges'])),
        )
        np.savez_compressed(out / f'{name}_terms.npz', **data)
        print(json.dumps(dict(system=name, file=str(out / f'{name}_terms.npz'), N=N,
                              num_pairs=num_pairs, pair_slots=len(idx_i), num_pairs_lr=num_pairs_lr,
                              pair_slots_lr=len(idx_i_lr), energy=energy,
                              E_nn=float(np.sum(e_nn)), E_zbl=float(np.sum(aux['zbl_repulsion'])),
                              E_elec=float(np.sum(aux['electrostatic_energy'])),
                              E_disp=float(np.sum(aux['dispersion_energy'])),
                              total_charge=data['total_charge'].tolist(),
                              num_unpaired_electrons=data['num_unpaired_electrons'].tolist(),
                              checks=checks, keys=sorted(data))), flush=True)


# --------------------------------------------------------------------------------------------------- time
def _median_time(fn, repeats):
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts)), ts


def cmd_time(args):
    dtype = np.float64 if args.dtype == 'float64' else np.float32
    jdtype = jnp.float64 if args.dtype == 'float64' else jnp.float32
    result = dict(system=args.system, dtype=args.dtype, jax=jax.__version__,
                  jax_enable_x64=bool(jax.config.jax_enable_x64), device=str(jax.devices()[0]),
                  backend=jax.default_backend(), platform=platform.platform(), cpu_count=os.cpu_count(),
                  repeats=args.repeats)
    rng = np.random.default_rng(0)

    # --- ASE calculator
    atoms = load_atoms(args.system)
    result['num_atoms'] = len(atoms)
    calc = make_ase_calc(dtype)
    atoms.calc = calc
    t0 = time.perf_counter()
    calc.calculate(atoms)
    result['ase_first_call_s'] = time.perf_counter() - t0
    pos0 = atoms.get_positions().copy()
    for _ in range(2):  # warm-up of the update path
        atoms.set_positions(pos0 + 1e-4 * rng.standard_normal(pos0.shape))
        calc.calculate(atoms)

    def ase_call():
        atoms.set_positions(pos0 + 1e-4 * rng.standard_normal(pos0.shape))
        calc.calculate(atoms)
        _ = calc.results['forces']

    result['ase_calculate_median_s'], _ = _median_time(ase_call, args.repeats)

    from glp import atoms_to_system
    system = atoms_to_system(atoms, dtype=dtype)
    nbrs = calc.neighbors
    jax.block_until_ready(calc.calculate_fn(system, nbrs))
    result['ase_calculate_fn_only_median_s'], _ = _median_time(
        lambda: jax.block_until_ready(calc.calculate_fn(system, nbrs)), args.repeats)
    result['ase_num_pair_slots'] = int(nbrs.centers.shape[0])
    result['ase_num_pair_slots_lr'] = int(nbrs.idx_i_lr.shape[0])

    # --- JAX-MD potential
    setup = jaxmd_setup(args.system, jdtype)
    ef, nbrs_sr, nbrs_lr = jaxmd_energy_forces(setup)
    t0 = time.perf_counter()
    jax.block_until_ready(ef(setup['R0'], nbrs_sr.idx, nbrs_lr.idx))
    result['jaxmd_first_call_s'] = time.perf_counter() - t0
    jax.block_until_ready(ef(setup['R0'], nbrs_sr.idx, nbrs_lr.idx))
    result['jaxmd_energy_forces_median_s'], _ = _median_time(
        lambda: jax.block_until_ready(ef(setup['R0'], nbrs_sr.idx, nbrs_lr.idx)), args.repeats)
    result['jaxmd_num_pair_slots'] = int(nbrs_sr.idx.shape[1])
    result['jaxmd_num_pair_slots_lr'] = int(nbrs_lr.idx.shape[1])

    # --- JAX-MD NVT: the so3lr CLI's own path (so3lr.cli.so3lr_md.perform_md): handle_box, process_model
    # (to_jax_md_custom featurizer), create_nhc_fn step with both neighbour-list updates, lax.fori_loop.
    if not args.skip_md:
        from so3lr.cli import so3lr_md
        from so3lr import So3lrPotential
        from jax_md import units, quantity
        mol = load_atoms(args.system)
        if args.system == 'water':
            mol.wrap()
            cell = so3lr_md.check_cell(np.array(mol.get_cell()), LR_CUTOFF, None, None)
            shift_displacement = 'periodic'
        else:
            cell = None
            shift_displacement = 'free'
        geo = so3lr_md.atoms_to_jnp(mol, precision=jdtype)
        position, box, displacement, shift, fractional = so3lr_md.handle_box(
            shift_displacement, geo['positions'], cell)
        potential = So3lrPotential(dtype=jdtype, lr_cutoff=LR_CUTOFF,
                                   dispersion_energy_cutoff_lr_damping=DISP_DAMPING)
        neighbor_fn, neighbor_fn_lr, energy_or_obs_fn = so3lr_md.process_model(
            potential=potential, species=geo['species'], displacement=displacement, box=box,
            total_charge=0., precision=jdtype, fractional_coordinates=fractional,
            buffer_size_multiplier_lr=1.25, buffer_size_multiplier_sr=1.25)
        energy_fn = jax.jit(lambda R, **kw: energy_or_obs_fn(R, has_aux=False, k_smearing=None, **kw))
        md_nbrs = neighbor_fn.allocate(position, box=box)
        md_nbrs_lr = neighbor_fn_lr.allocate(position, box=box)
        unit = so3lr_md.handle_units(units.metal_unit_system, args.dt_fs / 1000.0, 300.0, None)
        nhc_kwargs = dict(chain_length=3, chain_steps=2, sy_steps=3, tau=unit['dt'] * 100.0)
        init_fn, step_fn = so3lr_md.create_nhc_fn(energy_fn, shift, unit['dt'], unit['T'], box,
                                                  nhc_kwargs, True)
        state = init_fn(jax.random.PRNGKey(52), position, box=box, neighbor=md_nbrs.idx,
                        neighbor_lr=md_nbrs_lr.idx, kT=unit['T'], mass=geo['masses'],
                        velocities=geo.get('velocities'), k_grid=None)
        run = jax.jit(lambda carry, n: jax.lax.fori_loop(0, n, step_fn, carry))
        carry = (state, md_nbrs, md_nbrs_lr, box, None)
        t0 = time.perf_counter()
        carry = jax.block_until_ready(run(carry, 2))
        result['md_compile_and_2_steps_s'] = time.perf_counter() - t0
        t0 = time.perf_counter()
        carry = jax.block_until_ready(run(carry, args.md_steps))
        dt_md = time.perf_counter() - t0
        st, nb1, nb2 = carry[0], carry[1], carry[2]
        result['md_path'] = 'so3lr.cli.so3lr_md: process_model + create_nhc_fn (NVT Nose-Hoover, 300 K)'
        result['md_steps'] = args.md_steps
        result['md_dt_fs'] = args.dt_fs
        result['md_wall_s'] = dt_md
        result['md_steps_per_s'] = args.md_steps / dt_md
        result['md_ms_per_step'] = 1e3 * dt_md / args.md_steps
        result['md_neighbor_overflow'] = bool(nb1.did_buffer_overflow or nb2.did_buffer_overflow)
        result['md_final_T_K'] = float(quantity.temperature(momentum=st.momentum, mass=st.mass)
                                       / units.metal_unit_system()['temperature'])
    print(json.dumps(result), flush=True)


if __name__ == '__main__':
    {'reference': cmd_reference, 'terms': cmd_terms, 'time': cmd_time}[ARGS.cmd](ARGS)
