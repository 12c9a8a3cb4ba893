"""Transition states between two minima of one molecule: the nudged elastic band (NEB) with a climbing image.

    band = neb(potential, system, a, b)            # a, b: (N, 3) Angstrom, two minima of the molecule `system`
    band.barrier, band.saddle                      # eV above a; (N, 3) Angstrom, the highest image
    graph, bands = graph_barriers(potential, system, db, graph)   # barriers on the edges of a minima graph
    save_bands("bands.npz", bands); bands = load_bands("bands.npz")   # {(u, v): Band}

The band. M = n_images + 2 images R_0 ... R_{M-1} (Angstrom). R_0 = a and R_{M-1} = b stay fixed; b is first
aligned onto a (`interpolate`: symmetry-equivalent atoms permuted to match, then a Kabsch rotation, so the band
carries no overall rotation or translation) and the inner images start on the image-dependent pair potential
path between them (`idpp_interpolate`), or with interpolation="linear" on the straight line.

The force. Inner image i (energy V_i, potential force F = -dV/dR in eV/A) moves under the NEB force

    F_NEB = F - (F . tau) tau + k (|R_{i+1} - R_i| - |R_i - R_{i-1}|) tau

with k = k_spring (eV/A^2) and tau the improved unit tangent of Henkelman and Jonsson (J. Chem. Phys. 113, 9978
(2000)): R_{i+1} - R_i when the energy rises through the image, R_i - R_{i-1} when it falls, and at an energy
extremum along the band a mix of both weighted by the energy differences to the neighbours. The perpendicular
part of F pulls the band onto the minimum-energy path; the springs only act along it and keep the images evenly
spaced. With the climbing image (Henkelman, Uberuaga and Jonsson, J. Chem. Phys. 113, 9901 (2000)) the highest
inner image instead feels F - 2 (F . tau) tau and no spring: it climbs up along the path while relaxing
perpendicular to it, so it ends on the saddle point rather than next to it. It is switched on once the band is
roughly relaxed (largest NEB force below `climb_after_fmax`, or after a third of `max_steps`); from then on it
is whichever inner image is currently the highest.

The optimiser. All inner images' coordinates form ONE vector (n_images, N, 3), moved by FIRE (`md.minimize.fire`:
unit masses, dimensionless time step, the whole step capped at `max_step` Angstrom, as ASE's NEB with FIRE). Every
step evaluates the potential on all inner images at once (`jax.vmap` of `md.force_function`), and `chunk_steps`
steps run as one compiled `jax.lax.scan`. Positions and forces are in the potential's dtype (float32 for the
shipped models); the returned `Band` is in float64.

The start matters: the straight line moves the atoms of a turning group through each other (on the peptide's
graph edges, to 0.23-0.39 A apart), and from there FIRE often ran out of steps at barriers of several eV; the
IDPP path keeps them about 1 A apart or more and costs no evaluations of the potential.

Converged means: the largest atomic NEB force over all inner images, the climbing image's included, is below
`fmax` (eV/A), with the climbing image on when `climb=True`. The climbing image is then a first-order saddle
point to that tolerance: the highest point of the minimum-energy path nearest the starting interpolation. Another
path, with a lower barrier, may exist between the same minima; NEB does not search for it.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ..autodiff import compiler_options
from ..md.driver import overflowed, blank_like, stack_states
from ..md.forces import force_function
from ..md.minimize import fire
from .alignment import equivalent_groups, kabsch, symmetric_rmsd


@dataclasses.dataclass
class Band:
    """A nudged elastic band between two minima.

    positions: (M, N, 3) Angstrom, the images with both fixed end points (M = n_images + 2; the last end point is
    b aligned onto a). energies: (M,) eV. climbing: index of the climbing image, -1 without one. converged: see
    the module docstring. steps: FIRE steps taken. evaluations: energy + forces evaluations computed (inner
    images times steps, plus the two end points and one restart of all inner images when the climbing image is
    switched on).
    """

    positions: np.ndarray
    energies: np.ndarray
    climbing: int
    converged: bool
    steps: int
    evaluations: int

    @property
    def barrier(self) -> float:
        """The highest energy of the band minus the energy of the first end point a (eV)."""
        return float(self.energies.max() - self.energies[0])

    @property
    def reverse_barrier(self) -> float:
        """The highest energy of the band minus the energy of the last end point b (eV)."""
        return float(self.energies.max() - self.energies[-1])

    @property
    def saddle(self) -> np.ndarray:
        """(N, 3) Angstrom: the highest image (the climbing image when the band has one)."""
        return self.positions[int(np.argmax(self.energies))]

    @property
    def path_length(self) -> np.ndarray:
        """(M,) Angstrom: the distance along the band from the first end point (image-to-image distances in all
        3N coordinates, summed)."""
        gaps = np.linalg.norm((self.positions[1:] - self.positions[:-1]).reshape(len(self.positions) - 1, -1), axis=1)
        return np.concatenate([[0.0], np.cumsum(gaps)])


def _as_positions(x, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"{name}: expected positions of shape (N, 3) in Angstrom, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: positions must be finite (found NaN or infinite values)")
    return arr


def _check_n_images(n_images) -> int:
    if int(n_images) != n_images or n_images < 1:
        raise ValueError(f"n_images (inner images of the band) must be an integer >= 1, got {n_images!r}")
    return int(n_images)


def interpolate(a, b, n_images: int, groups=()) -> np.ndarray:
    """The straight band from a to b: (n_images + 2, N, 3) Angstrom, float64, both end points included.

    a, b: (N, 3) Angstrom, the same atoms in the same order. b is aligned onto a first: its atoms are permuted
    within each group of `groups` (symmetry-equivalent atoms, e.g. `alignment.equivalent_groups`) to match a
    best (`symmetric_rmsd`), then rotated and translated onto a (Kabsch). So the band's first image is a, its last
    the aligned b, and a rigidly moved or relabelled copy of b gives the same band.
    """
    a, b = _as_positions(a, "a"), _as_positions(b, "b")
    if len(a) != len(b):
        raise ValueError(f"a and b must be the same molecule: a has {len(a)} atoms, b has {len(b)} atoms")
    n_images = _check_n_images(n_images)
    _, permutation = symmetric_rmsd(a, b, groups)
    _, _, b = kabsch(a, b[permutation])
    t = np.linspace(0.0, 1.0, n_images + 2)[:, None, None]
    return a + t * (b - a)


def _pair_distances(x):
    """(..., N, N) distances of positions (..., N, 3), with ones on the diagonal (never divided by zero)."""
    n = x.shape[-2]
    d2 = jnp.sum((x[..., :, None, :] - x[..., None, :, :]) ** 2, axis=-1)
    return jnp.sqrt(d2 + jnp.eye(n, dtype=x.dtype))


@jax.jit
def _idpp_relax(ends, inner, k_spring, fmax, max_steps):
    """FIRE on the image-dependent pair potential, NEB-projected: (inner images, steps taken)."""
    n = inner.shape[1]
    t = jnp.linspace(0.0, 1.0, inner.shape[0] + 2, dtype=inner.dtype)[1:-1, None, None]
    d_ends = _pair_distances(ends)
    targets = d_ends[0] + t * (d_ends[1] - d_ends[0])  # (K, N, N): the distances interpolated linearly
    off = 1.0 - jnp.eye(n, dtype=inner.dtype)

    def objective(x):  # (K,) one value per image: sum over pairs of (d_target - d)^2 / d^4
        d = _pair_distances(x)
        return 0.5 * jnp.sum(off * (targets - d) ** 2 / d**4, axis=(1, 2))

    def neb_force_fn(x, aux):
        values = objective(x)
        forces = -jax.grad(lambda y: jnp.sum(objective(y)))(x)
        return values, _neb_forces(ends, jnp.zeros(2, x.dtype), x, values, forces, k_spring, False), aux

    init, step = fire(neb_force_fn, max_step=0.1)
    state = jax.lax.while_loop(lambda s: (s.fmax >= fmax) & (s.step < max_steps), step, init(inner))
    return state.positions, state.step


def idpp_interpolate(a, b, n_images: int, groups=(), *, fmax: float = 0.1, max_steps: int = 1000,
                     k_spring: float = 1.0) -> np.ndarray:
    """The band from a to b started on the image-dependent pair potential (IDPP; Smidstrup, Pedersen, Stokbro and
    Jonsson, J. Chem. Phys. 140, 214106 (2014)): (n_images + 2, N, 3) Angstrom, float64.

    The straight band (`interpolate`, b aligned onto a) moves atoms of a turning group straight through each
    other: a torsion of 120 degrees brings atoms a few tenths of an Angstrom apart, tens of eV up, and the NEB
    then starts far from the minimum-energy path. IDPP instead asks image k at t_k = k / (n_images + 1) for the
    pair distances d_ij(t_k) = (1 - t_k) d_ij(a) + t_k d_ij(b), weighted by 1 / d_ij^4 (short distances matter
    most), and relaxes the band on that objective with the NEB projection (springs k_spring, FIRE, until the
    largest NEB force on it is below fmax or after max_steps), so rotations stay rotations. It needs no energy
    evaluations of the potential.
    """
    positions = interpolate(a, b, n_images, groups)
    ends = jnp.asarray(positions[[0, -1]])
    inner, _ = _idpp_relax(ends, jnp.asarray(positions[1:-1]), float(k_spring), float(fmax), int(max_steps))
    positions[1:-1] = np.asarray(inner, np.float64)
    return positions


def _improved_tangent(energies, forward, backward):
    """Unit tangents (K, N, 3) at the K inner images (Henkelman and Jonsson 2000).

    energies: (K + 2,) eV of the whole band; forward = R_{i+1} - R_i, backward = R_i - R_{i-1}: (K, N, 3)."""
    up = energies[2:] - energies[1:-1]  # V_{i+1} - V_i
    down = energies[1:-1] - energies[:-2]  # V_i - V_{i-1}
    rising, falling = (up > 0) & (down > 0), (up < 0) & (down < 0)
    big = jnp.maximum(jnp.abs(up), jnp.abs(down))
    small = jnp.minimum(jnp.abs(up), jnp.abs(down))
    next_higher = up + down > 0  # at an extremum: is V_{i+1} > V_{i-1}?
    w_forward = jnp.where(rising, 1.0, jnp.where(falling, 0.0, jnp.where(next_higher, big, small)))
    w_backward = jnp.where(rising, 0.0, jnp.where(falling, 1.0, jnp.where(next_higher, small, big)))
    tangent = w_forward[:, None, None] * forward + w_backward[:, None, None] * backward
    norm = jnp.sqrt(jnp.sum(tangent**2, axis=(1, 2), keepdims=True))
    return tangent / jnp.maximum(norm, 1e-30)


def _neb_forces(ends, end_energies, inner, energies, forces, k_spring, climbing):
    """NEB forces (K, N, 3) eV/A on the K inner images (positions (K, N, 3) Angstrom, energies (K,) eV, potential
    forces (K, N, 3) eV/A), given the fixed end points ends (2, N, 3) with energies (2,). climbing: a bool, whether
    the highest inner image climbs."""
    band = jnp.concatenate([ends[:1], inner, ends[1:]])
    band_energies = jnp.concatenate([end_energies[:1], energies, end_energies[1:]])
    forward, backward = band[2:] - band[1:-1], band[1:-1] - band[:-2]
    tangent = _improved_tangent(band_energies, forward, backward)
    along = jnp.sum(forces * tangent, axis=(1, 2), keepdims=True)  # F . tau, (K, 1, 1)
    length = lambda d: jnp.sqrt(jnp.sum(d**2, axis=(1, 2), keepdims=True))  # noqa: E731
    spring = k_spring * (length(forward) - length(backward)) * tangent
    nudged = forces - along * tangent + spring
    climber = climbing & (jnp.arange(len(energies)) == jnp.argmax(energies))
    return jnp.where(climber[:, None, None], forces - 2 * along * tangent, nudged)


def torsion_interpolate(a, b, n_images: int, groups=(), *, numbers, torsions=None, max_flips: int = 6
                        ) -> np.ndarray:
    """The band from a to b along its torsions: (n_images + 2, N, 3) Angstrom, float64, both end points included.

    Two minima of a flexible molecule that differ by a large turn of one or more rotatable bonds are joined badly
    by any interpolation of Cartesian coordinates or pair distances: half the chain swings through the other half.
    Here image k at t_k = k / (n_images + 1) is a with each torsion (`torsions`, default
    `torsions.rotatable_bonds(numbers, a)`) turned by t_k times its change from a to b (b aligned onto a as in
    `interpolate`), plus t_k times what the turns leave over (b aligned onto the fully turned a, minus it: the
    small changes of bond angles, methyl rotors and amide bends). Rotations about different bonds leave each
    other's dihedrals unchanged, so the turned images have exactly the interpolated torsion angles (the leftover
    then shifts them a little) and keep every bond length and angle of a. A torsion that
    changes by more than 90 degrees may turn either way round; of the 2^k ways for the k largest such changes (k at
    most max_flips) the band keeps the one whose closest approach of atoms three or more bonds apart, relative
    to the sum of their covalent radii, is largest. numbers: (N,) atomic numbers. Needs no energy evaluations.
    A molecule without rotatable bonds gets `idpp_interpolate`'s band.
    """
    import itertools

    from ase.data import covalent_radii

    from .torsions import far_pairs, rotatable_bonds, rotate, torsion_angles

    straight = interpolate(a, b, 1, groups)
    a, b = straight[0], straight[-1]
    numbers = np.asarray(numbers)
    torsions = rotatable_bonds(numbers, a) if torsions is None else list(torsions)
    if not torsions:
        return idpp_interpolate(a, b, n_images, groups)
    n_images = _check_n_images(n_images)
    change = (torsion_angles(b, torsions) - torsion_angles(a, torsions) + 180.0) % 360.0 - 180.0
    large = [k for k in np.argsort(-np.abs(change)) if abs(change[k]) > 90.0][:max_flips]
    i, j = far_pairs(numbers, a)
    limit = np.asarray(covalent_radii)[numbers][i] + np.asarray(covalent_radii)[numbers][j]
    t = np.linspace(0.0, 1.0, n_images + 2)

    def turned(turns, fraction):
        pos = a
        for torsion, angle in zip(torsions, turns):
            pos = rotate(pos, torsion, np.radians(fraction * angle))
        return pos

    best = None
    for flips in itertools.product((False, True), repeat=len(large)):
        turns = change.copy()
        for k, flip in zip(large, flips):
            if flip:
                turns[k] -= 360.0 * np.sign(turns[k])
        images = [turned(turns, f) for f in t]
        closest = min(float(np.min(np.linalg.norm(x[i] - x[j], axis=-1) / limit)) for x in images) if len(i) else 0.0
        if best is None or closest > best[0]:
            best = (closest, images)
    images = np.asarray(best[1])
    _, _, b_on_turned = kabsch(images[-1], b)  # b moved rigidly onto the fully turned a: the end of the band
    rest = b_on_turned - images[-1]
    return images + t[:, None, None] * rest


INTERPOLATIONS = ("idpp", "linear", "torsion")  # the starting bands `neb` offers


class _BandRunner:
    """The NEB of one molecule for bands of `n_images` inner images: built once (its jitted chunk compiles on the
    first band) and then run on any number of end-point pairs. The keywords are `neb`'s."""

    def __init__(self, potential, system, *, n_images, k_spring, fmax, climb, climb_after_fmax, max_steps,
                 chunk_steps, all_pairs, max_step, interpolation):
        self.n_images = _check_n_images(n_images)
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
        numbers = np.asarray(system.numbers)
        self.start_band = {"idpp": idpp_interpolate, "linear": interpolate,
                           "torsion": lambda a, b, n, groups: torsion_interpolate(a, b, n, groups, numbers=numbers)
                           }[interpolation]
        for name, value in (("k_spring", k_spring), ("fmax", fmax), ("climb_after_fmax", climb_after_fmax),
                            ("max_step", max_step)):
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        if max_steps < 1 or chunk_steps < 1:
            raise ValueError(f"max_steps and chunk_steps must be >= 1, got {max_steps} and {chunk_steps}")
        self.fmax, self.climb, self.climb_after_fmax = float(fmax), bool(climb), float(climb_after_fmax)
        self.max_steps = int(max_steps)
        self.n_atoms = system.n_atoms
        self.numbers = np.asarray(system.numbers)
        ff = force_function(potential, system, all_pairs=all_pairs)
        self.dtype = ff.dtype
        evaluate = jax.vmap(ff.fn)  # all images at once: positions (K, N, 3), aux stacked per image

        def optimiser(ends, end_energies, climbing):
            """FIRE's (init, step) on the NEB force of the inner images."""
            def neb_force_fn(inner, aux):
                energies, forces, aux = evaluate(inner, aux)
                return energies, _neb_forces(ends, end_energies, inner, energies, forces, k_spring, climbing), aux

            return fire(neb_force_fn, max_step=max_step)

        def advance(state, ends, end_energies, restart, climbing, threshold, step_limit):
            """(Re)start FIRE from rest when `restart` (a new band, or the climbing image just switched on), then
            up to chunk_steps steps; the band stops moving once its largest NEB force is below `threshold` (eV/A)
            or after `step_limit` steps in all."""
            init, step = optimiser(ends, end_energies, climbing)
            state = jax.lax.cond(restart, lambda s: init(s.positions, s.aux).replace(step=s.step), lambda s: s, state)

            def body(s, _):
                finished = (s.fmax < threshold) | (s.step >= step_limit)
                return jax.lax.cond(finished, lambda s: s, step, s), None

            state = jax.lax.scan(body, state, None, length=chunk_steps)[0]
            return state, state.fmax < threshold

        self._advance = jax.jit(advance, compiler_options=compiler_options())
        self._energies = jax.jit(lambda positions, aux: evaluate(positions, aux)[0],
                                 compiler_options=compiler_options())
        self._inner_aux = stack_states([ff.aux] * self.n_images)
        self._end_aux = stack_states([ff.aux] * 2)
        # the FIRE state's layout, from tracing (not running) the model once; every band starts from it
        inner = jnp.zeros((self.n_images, self.n_atoms, 3), self.dtype)
        init = optimiser(inner[:2], jnp.zeros(2, self.dtype), False)[0]
        self._blank = blank_like(jax.eval_shape(init, inner, self._inner_aux))

    def run(self, a, b, groups=None) -> Band:
        """The band from a to b ((N, 3) Angstrom each); groups: equivalent atoms for the alignment (default: from a)."""
        a, b = _as_positions(a, "a"), _as_positions(b, "b")
        for name, x in (("a", a), ("b", b)):
            if len(x) != self.n_atoms:
                raise ValueError(f"{name} has {len(x)} atoms but the system has {self.n_atoms} atoms")
        if groups is None:
            groups = equivalent_groups(self.numbers, a)
        positions = self.start_band(a, b, self.n_images, groups)
        ends = jnp.asarray(positions[[0, -1]], self.dtype)
        end_energies = self._energies(ends, self._end_aux)
        state = self._blank.replace(positions=jnp.asarray(positions[1:-1], self.dtype), aux=self._inner_aux)
        # with a climbing image, two phases: the plain band until its largest force is below climb_after_fmax (or
        # for a third of max_steps), then with the climbing image; each phase starts FIRE from rest
        phases = [(max(self.fmax, self.climb_after_fmax), self.max_steps // 3, False),
                  (self.fmax, self.max_steps, True)]
        evaluations, steps = 2, 0
        for threshold, step_limit, climbing in (phases if self.climb else [(self.fmax, self.max_steps, False)]):
            restart = True
            while True:
                state, done = self._advance(state, ends, end_energies, np.bool_(restart), np.bool_(climbing),
                                            np.asarray(threshold, self.dtype), np.int32(step_limit))
                if overflowed(state.aux):
                    raise RuntimeError("the neighbour list overflowed in the NEB; build the force function with a "
                                       "larger capacity (for a small molecule: all_pairs=True)")
                evaluations += self.n_images * (int(state.step) - steps + restart)
                steps, restart, done = int(state.step), False, bool(done)
                if done or steps >= step_limit:
                    break
        inner_energies = np.asarray(state.energy, np.float64)
        positions[1:-1] = np.asarray(state.positions, np.float64)
        energies = np.concatenate([np.asarray(end_energies, np.float64)[:1], inner_energies,
                                   np.asarray(end_energies, np.float64)[1:]])
        return Band(positions=positions, energies=energies,
                    climbing=1 + int(np.argmax(inner_energies)) if climbing else -1,
                    converged=done, steps=steps, evaluations=evaluations)


def neb(potential, system, a, b, *, n_images: int = 8, k_spring: float = 1.0, fmax: float = 0.05, climb: bool = True,
        climb_after_fmax: float = 0.5, max_steps: int = 1000, chunk_steps: int = 50, groups=None, all_pairs=None,
        max_step: float = 0.2, interpolation: str = "idpp") -> Band:
    """The climbing-image NEB from minimum a to minimum b ((N, 3) Angstrom each) of the molecule `system`.

    potential: anything `md.force_function` takes (the shipped models, analytic potentials). n_images: inner
    images (the band has n_images + 2). k_spring: spring constant (eV/A^2). fmax: convergence threshold on the
    largest atomic NEB force (eV/A). climb: use a climbing image, switched on when the largest NEB force falls
    below climb_after_fmax (eV/A) or after max_steps // 3 steps (FIRE then starts again from rest). max_steps:
    FIRE steps at most, both phases together. chunk_steps: steps per compiled call. groups: equivalent atoms for
    aligning b onto a (default: `alignment.equivalent_groups` of a; [] for none). all_pairs: passed to
    `md.force_function` (the fixed graph of every pair, its default for small free molecules; otherwise a
    neighbour list, one copy per image). max_step: the largest FIRE step of the whole band (Angstrom), all inner
    images together. interpolation: the starting band, "idpp" (`idpp_interpolate`, default: turning groups stay
    apart), "torsion" (`torsion_interpolate`: the rotatable bonds turned step by step, for minima that differ by
    large turns) or "linear" (`interpolate`, the straight line). Returns a `Band` (float64).
    """
    runner = _BandRunner(potential, system, n_images=n_images, k_spring=k_spring, fmax=fmax, climb=climb,
                         climb_after_fmax=climb_after_fmax, max_steps=max_steps, chunk_steps=chunk_steps,
                         all_pairs=all_pairs, max_step=max_step, interpolation=interpolation)
    return runner.run(a, b, groups)


def neb_many(potential, system, pairs_of_positions, *, progress: bool = False, **kw) -> list[Band]:
    """One band per (a, b) pair of end points, positions (N, 3) Angstrom each, in `pairs_of_positions` of the
    molecule `system`: a list of `Band` objects, in order.

    kw: `neb`'s keywords (the same settings for every band). The bands run one after another through ONE
    compiled NEB: the force function and the jitted chunk are built once and reused for every pair, so the
    model is compiled once for all of them. progress: a tqdm bar over the pairs.
    """
    from tqdm.auto import tqdm

    runner, groups = _runner(potential, system, kw)
    return [runner.run(a, b, groups) for a, b in tqdm(list(pairs_of_positions), desc="neb", unit="band",
                                                      disable=not progress)]


def _runner(potential, system, kw: dict):
    """(the `_BandRunner` for `neb`'s keywords kw, kw's groups); a TypeError names an unknown keyword."""
    options = inspect.signature(neb).bind(potential, system, None, None, **kw)
    options.apply_defaults()
    settings = {name: value for name, value in options.arguments.items()
                if name not in ("potential", "system", "a", "b")}
    groups = settings.pop("groups")
    return _BandRunner(potential, system, **settings), groups


def edge_attributes(band: Band, start: int) -> dict:
    """The attributes `graph_barriers` puts on an edge whose band ran from minimum `start`: saddle_energy (eV, the
    band's highest energy), barrier_forward_eV (saddle_energy minus the start's energy), barrier_backward_eV
    (saddle_energy minus the other end's energy), neb_converged, neb_from (start), neb_steps, neb_evaluations."""
    return {"saddle_energy": float(band.energies.max()), "barrier_forward_eV": band.barrier,
            "barrier_backward_eV": band.reverse_barrier, "neb_converged": bool(band.converged),
            "neb_from": int(start), "neb_steps": int(band.steps), "neb_evaluations": int(band.evaluations)}


BANDS_FORMAT = "so3krates_lab.bands/1"


def save_bands(path, bands: dict) -> Path:
    """Write bands {(u, v): Band} (the band runs from minimum u to minimum v) to the npz file `path`, atomically:
    edges (E, 2), positions (E, M, N, 3) Angstrom, energies (E, M) eV, climbing, converged, steps, evaluations
    (E,). All bands must have the same number of images and atoms. Returns the path."""
    from ..fileio import atomic_write

    path = Path(path)
    keys = list(bands)
    shapes = {bands[k].positions.shape for k in keys}
    if len(shapes) > 1:
        raise ValueError(f"bands of different shapes (images, atoms, 3) cannot share one file: {sorted(shapes)}")
    m, n = next(iter(shapes))[:2] if shapes else (0, 0)
    arrays = {
        "format": np.asarray(BANDS_FORMAT), "edges": np.asarray(keys, np.int64).reshape(-1, 2),
        "positions": np.asarray([bands[k].positions for k in keys], np.float64).reshape(-1, m, n, 3),
        "energies": np.asarray([bands[k].energies for k in keys], np.float64).reshape(-1, m),
        **{name: np.asarray([getattr(bands[k], name) for k in keys], dtype).reshape(-1)
           for name, dtype in (("climbing", np.int64), ("converged", bool), ("steps", np.int64),
                               ("evaluations", np.int64))},
    }

    def write(tmp):
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    atomic_write(path, write)
    return path


def load_bands(path) -> dict:
    """Read what `save_bands` wrote: {(u, v): Band}, in the stored order."""
    path = Path(path)
    with np.load(path) as z:
        if "format" not in z or str(z["format"]) != BANDS_FORMAT:
            raise ValueError(f"{path} is not a band file written by save_bands (format {BANDS_FORMAT!r})")
        return {(int(u), int(v)): Band(positions=z["positions"][k], energies=z["energies"][k],
                                       climbing=int(z["climbing"][k]), converged=bool(z["converged"][k]),
                                       steps=int(z["steps"][k]), evaluations=int(z["evaluations"][k]))
                for k, (u, v) in enumerate(z["edges"])}


def graph_barriers(potential, system, db, graph, *, max_edges: int | None = None, bands: dict | None = None,
                   checkpoint=None, **kw):
    """Barriers on the edges of a minima graph (`minima.minima_graph`), one band per edge.

    db: the `MinimaDatabase` behind the graph (geometries and `db.groups` for the alignment); system: the molecule
    (its atomic numbers; the positions only size the force function). Each edge {u, v} is oriented u < v, the
    band runs from db.geometry(u) to db.geometry(v), and the edge gets `edge_attributes(band, u)`: saddle_energy,
    barrier_forward_eV, barrier_backward_eV, neb_converged, neb_from, neb_steps and neb_evaluations, from the
    potential's energies of the band. max_edges: run only the max_edges edges with the most observed transitions
    (`count`), skipping those among them that already have a band. bands: bands already computed {(u, v): Band}; their edges
    are labelled and not run again. checkpoint: an npz path (`save_bands`): the bands stored there are loaded as
    `bands`, and it is rewritten after every new band, so an interrupted call resumes where it stopped. kw:
    `neb_many`'s keywords (`neb`'s, and progress). Returns (graph, modified in place; {(u, v): Band} for every
    labelled edge, the bands given or loaded first, then the new ones in the order computed).
    """
    from tqdm.auto import tqdm

    if max_edges is not None and (int(max_edges) != max_edges or max_edges < 0):
        raise ValueError(f"max_edges must be None or an integer >= 0, got {max_edges!r}")
    done = dict(bands or {})
    if checkpoint is not None and Path(checkpoint).exists():
        done.update(load_bands(checkpoint))
    for u, v in done:
        if not graph.has_edge(u, v):
            raise ValueError(f"a band joins minima {u} and {v}, which are not an edge of the graph")
    edges = sorted((tuple(sorted(edge)) for edge in graph.edges), key=lambda e: -graph.edges[e].get("count", 0))
    edges = edges[:max_edges]
    known = {tuple(sorted(edge)) for edge in done}
    todo = [edge for edge in edges if edge not in known]
    progress = kw.pop("progress", False)
    if todo:
        runner, _ = _runner(potential, system, kw)
        for u, v in tqdm(todo, desc="neb", unit="band", disable=not progress):
            done[u, v] = runner.run(db.geometry(u), db.geometry(v), db.groups)
            if checkpoint is not None:
                save_bands(checkpoint, done)
    for (u, v), band in done.items():
        graph.edges[u, v].update(edge_attributes(band, u))
    return graph, done


def plausible_bands(bands: dict, max_barrier_eV: float = 1.0) -> dict:
    """The bands {(u, v): Band} that read as a barrier of one conformational step: converged, and below
    max_barrier_eV from their first end point. A band between minima that no single step joins (a hop that swung
    part of the molecule around) crosses the molecule and ends eV high, converged or not."""
    return {edge: band for edge, band in bands.items() if band.converged and band.barrier < max_barrier_eV}


def edge_report(db, bands: dict, torsions=None, turned_deg: float = 60.0) -> list[dict]:
    """One row per band {(u, v): Band} of minima in `db`: u, v, energies of both ends above the lowest minimum
    (eV), the barriers both ways (eV), steps, converged, the end points' symmetric RMSD (Angstrom) and how many
    torsions (`torsions`, default `rotatable_bonds` of minimum 0) differ by more than turned_deg between them."""
    from .torsions import rotatable_bonds, torsion_angles

    torsions = rotatable_bonds(db.numbers, db.geometry(0)) if torsions is None else torsions
    lowest = min(db.energies)
    rows = []
    for (u, v), band in bands.items():
        a, b = db.geometry(u), db.geometry(v)
        turn = np.abs((torsion_angles(a, torsions) - torsion_angles(b, torsions) + 180.0) % 360.0 - 180.0)
        rows.append({"u": u, "v": v, "energy_u_eV": db.energies[u] - lowest, "energy_v_eV": db.energies[v] - lowest,
                     "barrier_forward_eV": band.barrier, "barrier_backward_eV": band.reverse_barrier,
                     "steps": band.steps, "converged": band.converged, "evaluations": band.evaluations,
                     "rmsd_A": float(symmetric_rmsd(a, b, db.groups)[0]),
                     "torsions_turned": int((turn > turned_deg).sum())})
    return rows


__all__ = ["Band", "edge_attributes", "edge_report", "plausible_bands", "graph_barriers", "idpp_interpolate", "interpolate", "torsion_interpolate", "load_bands", "neb",
           "neb_many", "save_bands"]
