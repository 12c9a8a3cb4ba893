"""The SO3krates configuration: one frozen dataclass, named presets, JSON round trip."""

from __future__ import annotations

import dataclasses
import json
import operator

EV_INITS = ("zeros", "neighbours")
DTYPES = ("float32", "float64")
ATTENTION_PROJECTIONS = ("full", "per_head")
RADIAL_FUNCTIONS = ("physnet", "bernstein")
CUTOFF_FUNCTIONS = ("cosine", "polynomial")
BLOCK_LAYOUTS = ("pre_norm", "post_norm")
MAX_ATOMIC_NUMBER = 118

# Fields added after the first checkpoint format: `to_dict` writes them only where they differ from their
# default, so the configuration of a model that does not use them reads exactly as before (and older versions
# of the package, which refuse unknown fields, still read its checkpoints).
_LATER_FIELDS = {
    "attention_projection": "full", "max_atomic_number": MAX_ATOMIC_NUMBER,
    "radial_function": "physnet", "cutoff_function": "cosine", "attention_normalization": None,
    "block_layout": "pre_norm", "charge_spin_embedding": False, "element_readout": False,
    "zbl": False, "electrostatics": False, "electrostatics_sigma": 4.0, "dispersion": False,
    "dispersion_scale": 1.2, "long_range_cutoff": None, "dispersion_damping": 2.0,
}


@dataclasses.dataclass(frozen=True)
class So3kratesConfig:
    """Hyper-parameters of a SO3krates model (see shared spec SO3KRATES.md); the fields::

        features:      F, width of the invariant features (divisible by heads, by len(degrees) and by 4)
        layers:        T, number of Euclidean transformer blocks (parameters not shared)
        heads:         H, heads of the invariant attention
        degrees:       L, degrees of the Euclidean variables; () gives the invariant ablation
        cutoff:        r_c in Angstrom
        radial_basis:  K, number of PhysNet radial functions
        ev_init:       "zeros" (chi starts at 0) or "neighbours" (cutoff-weighted neighbourhood sum of Y_l)
        dtype:         "float32" or "float64" for parameters and computation
        layer_norm:    pre-LayerNorm on x in each block
        residual_mlp:  a residual MLP on x after each block's interaction
        attention_projection:
                       "full": the query, key and value maps of the attention are full F x F matrices, which mix
                       all features before the heads are split; "per_head": each head projects only its own slice
                       of the features with its own (F/H x F/H) matrix (F/|L| x F/|L| for the per-degree heads of
                       the equivariant branch), i.e. block-diagonal maps, as the public reference implementation
                       (mlff) does and spec section 3a writes (Wq^h x_i^h). "full" contains "per_head" as a
                       special case and has about 1.6x the parameters at the defaults (509,029 vs 321,721).
        max_atomic_number:
                       the largest atomic number the embedding table has a row for (118: every element; mlff's
                       table has 100 rows, i.e. 99). A structure with a larger one evaluates to NaN.

    The pieces below generalise the block and the energy so that published variants are configurations of
    this one model (SO3LR: the "so3lr" preset). Their defaults are the original SO3krates::

        radial_function: "physnet" (exp(-beta (exp(-d) - mu_k)^2)) or "bernstein" (Bernstein polynomials of
                       exp(-gamma d), SO3LR's basis)
        cutoff_function: "cosine" ((cos(pi d / r_c) + 1) / 2) or "polynomial" (PhysNet's 1 - 6x^5 + 15x^4 - 10x^3,
                       x = d / r_c, SO3LR's)
        attention_normalization:
                       None: attention coefficients are divided by sqrt(head width); a number (SO3LR: the training
                       data's average neighbour count, 13.17) divides both branches' coefficients by it
        block_layout:  "pre_norm": [LayerNorm] -> attention -> interaction -> [residual MLP]; "post_norm" (SO3LR):
                       attention -> [LayerNorm] -> [pre-activated residual MLP] -> interaction -> [LayerNorm], with
                       `layer_norm` and `residual_mlp` switching the bracketed parts
        charge_spin_embedding:
                       add SpookyNet-style embeddings of the total charge and of the number of unpaired electrons
                       (given to the potential, not learned from geometry); the three embeddings are summed / sqrt(3)
        element_readout:
                       the atomic energy MLP(x_i) is multiplied by a learned per-element scale and shifted by a
                       learned per-element offset (parameters; the constants still apply on top)
        zbl:           add ZBL nuclear repulsion (model.physics) on the short-range pairs
        electrostatics, electrostatics_sigma:
                       add the Coulomb energy of predicted partial charges (a charge head, conserving the total
                       charge), erf-damped with length sigma (Angstrom)
        dispersion, dispersion_scale:
                       add vdW-QDO dispersion from predicted Hirshfeld ratios (a Hirshfeld head); the scale
                       multiplies the short-range damping length
        long_range_cutoff, dispersion_damping:
                       Angstrom. None: the long-range terms have no cutoff (free structures only); a cutoff r_lr
                       switches Coulomb (force-shifted, from 0.45 r_lr) and dispersion (from r_lr - damping) to zero
                       at r_lr. Long-range pairs are every pair of a structure (model.physics.dense_pairs)
    """

    features: int = 132
    layers: int = 3
    heads: int = 4
    degrees: tuple[int, ...] = (1, 2, 3)
    cutoff: float = 5.0
    radial_basis: int = 32
    ev_init: str = "zeros"
    dtype: str = "float32"
    layer_norm: bool = False
    residual_mlp: bool = False
    attention_projection: str = "full"
    max_atomic_number: int = MAX_ATOMIC_NUMBER
    radial_function: str = "physnet"
    cutoff_function: str = "cosine"
    attention_normalization: float | None = None
    block_layout: str = "pre_norm"
    charge_spin_embedding: bool = False
    element_readout: bool = False
    zbl: bool = False
    electrostatics: bool = False
    electrostatics_sigma: float = 4.0
    dispersion: bool = False
    dispersion_scale: float = 1.2
    long_range_cutoff: float | None = None
    dispersion_damping: float = 2.0

    def __post_init__(self):
        object.__setattr__(self, "degrees", tuple(int(d) for d in self.degrees))
        if not isinstance(self.max_atomic_number, bool):
            try:  # NumPy integers too (e.g. from an embedding table's shape)
                object.__setattr__(self, "max_atomic_number", operator.index(self.max_atomic_number))
            except TypeError:
                pass  # reported below
        errors = []
        if self.features < 4 or self.features % 4:
            errors.append(f"features={self.features} must be a positive multiple of 4 (MLP_sph uses F/4)")
        if self.heads < 1 or self.features % self.heads:
            errors.append(f"features={self.features} must be divisible by heads={self.heads}")
        if self.degrees and self.features % len(self.degrees):
            errors.append(f"features={self.features} must be divisible by len(degrees)={len(self.degrees)}")
        if any(d < 1 for d in self.degrees) or len(set(self.degrees)) != len(self.degrees):
            errors.append(f"degrees={self.degrees} must be distinct and >= 1 (degree 0 is never an EV)")
        if self.layers < 1:
            errors.append(f"layers={self.layers} must be >= 1")
        if not self.cutoff > 0:
            errors.append(f"cutoff={self.cutoff} must be > 0 Angstrom")
        if self.radial_basis < 1:
            errors.append(f"radial_basis={self.radial_basis} must be >= 1")
        if self.ev_init not in EV_INITS:
            errors.append(f"ev_init={self.ev_init!r} must be one of {EV_INITS}")
        if self.dtype not in DTYPES:
            errors.append(f"dtype={self.dtype!r} must be one of {DTYPES}")
        if self.attention_projection not in ATTENTION_PROJECTIONS:
            errors.append(f"attention_projection={self.attention_projection!r} must be one of "
                          f"{ATTENTION_PROJECTIONS}")
        n = self.max_atomic_number
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_ATOMIC_NUMBER:
            errors.append(f"max_atomic_number={self.max_atomic_number!r} must be an integer from 1 to "
                          f"{MAX_ATOMIC_NUMBER}")
        for name, allowed in (("radial_function", RADIAL_FUNCTIONS), ("cutoff_function", CUTOFF_FUNCTIONS),
                              ("block_layout", BLOCK_LAYOUTS)):
            if getattr(self, name) not in allowed:
                errors.append(f"{name}={getattr(self, name)!r} must be one of {allowed}")
        if self.attention_normalization is not None and not float(self.attention_normalization) > 0:
            errors.append(f"attention_normalization={self.attention_normalization} must be None or > 0")
        if not self.electrostatics_sigma > 0:
            errors.append(f"electrostatics_sigma={self.electrostatics_sigma} must be > 0 Angstrom")
        if self.long_range_cutoff is not None:
            if not self.long_range_cutoff > 0:
                errors.append(f"long_range_cutoff={self.long_range_cutoff} must be None or > 0 Angstrom")
            elif self.dispersion and not 0 < self.dispersion_damping <= self.long_range_cutoff:
                errors.append(f"dispersion_damping={self.dispersion_damping} must be in (0, long_range_cutoff]")
        if errors:
            raise ValueError("invalid So3kratesConfig: " + "; ".join(errors))

    @property
    def n_ev(self) -> int:
        """M, the number of Euclidean-variable channels: sum of (2l+1) over degrees."""
        return sum(2 * d + 1 for d in self.degrees)

    def replace(self, **changes) -> "So3kratesConfig":
        """A copy with some fields changed (validated again).

        >>> So3kratesConfig.preset("small").replace(cutoff=4.0).cutoff
        4.0
        """
        return dataclasses.replace(self, **changes)

    @property
    def long_range(self) -> bool:
        """Whether the model has long-range terms (electrostatics or dispersion) over every pair of a structure."""
        return bool(self.electrostatics or self.dispersion)

    @property
    def n_embeddings(self) -> int:
        """Rows of the element embedding table: atomic numbers 0 (padding) to max_atomic_number."""
        return self.max_atomic_number + 1

    def to_dict(self) -> dict:
        """All fields, except those added later (attention_projection and after) at their default."""
        d = dataclasses.asdict(self)
        d["degrees"] = list(self.degrees)
        for name, default in _LATER_FIELDS.items():
            if d[name] == default:
                del d[name]
        return d

    def to_json(self) -> str:
        """`to_dict` as JSON text (sorted keys); `from_json` reads it back.

        >>> config = So3kratesConfig.preset("so3lr")
        >>> So3kratesConfig.from_json(config.to_json()) == config
        True
        """
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "So3kratesConfig":
        """The configuration of a `to_dict` dict (missing later fields take their defaults); unknown fields
        raise ValueError."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown So3kratesConfig fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> "So3kratesConfig":
        """The configuration of a `to_json` text."""
        return cls.from_dict(json.loads(text))

    @classmethod
    def preset(cls, name: str, **overrides) -> "So3kratesConfig":
        """The named configuration of `PRESETS`, with `overrides` replaced.

        >>> config = So3kratesConfig.preset("small", layers=1)
        >>> config.features, config.layers, config.degrees, config.n_ev  # n_ev: 3 + 5 channels for degrees 1, 2
        (24, 1, (1, 2), 8)
        """
        if name not in PRESETS:
            raise KeyError(f"unknown preset {name!r}; presets: {sorted(PRESETS)}")
        return PRESETS[name].replace(**overrides)


#: Named configurations for `So3kratesConfig.preset`: "default", "invariant", "small", "mlff" and "so3lr".
PRESETS: dict[str, So3kratesConfig] = {
    # The reference configuration of the paper's MD17 experiments.
    "default": So3kratesConfig(),
    # The invariant ablation: the same machinery without Euclidean variables.
    "invariant": So3kratesConfig(degrees=()),
    # Small and quick, for tests, tutorials and smoke runs.
    "small": So3kratesConfig(features=24, layers=2, heads=2, degrees=(1, 2), radial_basis=16),
    # The public reference implementation's model (thorben-frank/mlff, `train_so3krates` defaults): per-head
    # attention projections and a 100-row embedding table; 319,213 parameters, as mlff's own model. Its weights
    # load with `so3krates_lab.interop.potential_from_mlff`.
    "mlff": So3kratesConfig(attention_projection="per_head", max_atomic_number=99),
    # SO3LR (Kabylda, Frank et al., JACS 2025): the published pretrained model's network and physical terms, as
    # its hyperparameters.json describes them (avg_num_neighbors 13.169 of its training data); its weights ship
    # as data/models/so3lr.npz (`so3krates_lab.pretrained.so3lr()`). Long-range cutoff and damping are the
    # settings of SO3LR's own examples and tests (12 A, 2 A).
    "so3lr": So3kratesConfig(
        features=128, layers=3, heads=4, degrees=(1, 2, 3, 4), cutoff=4.5, radial_basis=32,
        attention_projection="per_head", radial_function="bernstein", cutoff_function="polynomial",
        attention_normalization=13.168995780096482, block_layout="post_norm", layer_norm=True,
        residual_mlp=True, charge_spin_embedding=True, element_readout=True, zbl=True, electrostatics=True,
        electrostatics_sigma=4.0, dispersion=True, dispersion_scale=1.2, long_range_cutoff=12.0,
        dispersion_damping=2.0),
}
