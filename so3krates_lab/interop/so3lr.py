"""The published SO3LR weights (general-molecular-simulations/so3lr, MIT) as a `Potential`.

    params = read_so3lr_params("params.pkl")                 # restricted unpickler: arrays only
    hyper = json.load(open("hyperparameters.json"))
    pot = potential_from_so3lr(params, hyper, dtype="float64")

SO3LR is a SO3krates network with the generalised pieces of `So3kratesConfig` switched on (Bernstein basis,
polynomial cutoff, post-norm blocks with a residual MLP, attention normalised by the average neighbour count,
charge and spin embeddings, per-element energy scales and shifts) plus ZBL repulsion, electrostatics of
predicted partial charges and vdW-QDO dispersion from predicted Hirshfeld ratios (`model.physics`). The
pretrained model ships converted (`so3krates_lab.pretrained.so3lr()`, `benchmarks/convert_so3lr.py`); this
module is the converter and the map between the two parameter trees.

Where one weight lands (t = block; SO3LR's paths under ``params/``, ours under ``params/`` too):

| SO3LR                                                           | so3krates_lab                         |
|-----------------------------------------------------------------|---------------------------------------|
| feature_embeddings_0/Embed_0/embedding (119, F)                 | embed/embedding                       |
| feature_embeddings_{1,2}/ChargeSpinEmbedSparse_0/Embed_0        | {charge,spin}_embed/element           |
| ... Embed_1, Embed_2 (2, F)                                     | {charge,spin}_embed/key, value        |
| ... Residual_0/layers_{0,1}/kernel                              | {charge,spin}_embed/residual_{1,2}    |
| layers_t/attention_block/radial_filter{f}_layer_{1,2}           | radial_filters/{w,b}_{hidden,out}[2t+f-1] |
| layers_t/attention_block/spherical_filter{f}_layer_{1,2}        | block_t/attention/sph_filters/...[f-1] |
| layers_t/attention_block/Wq1, Wk1, Wv1 (H, F/H, F/H), transposed | block_t/attention/q_heads, k_heads, v_heads |
| layers_t/attention_block/Wq2, Wk2 (L, F/L, F/L), transposed     | block_t/attention/q_degrees, k_degrees |
| layers_t/layer_normalization_{1,2}                              | block_t/norm_attention, norm_interaction |
| layers_t/res_mlp_1_layer_{1,2}                                  | block_t/mlp_hidden, mlp_out           |
| layers_t/exchange_block/mlp_layer_2                             | block_t/interaction/mix               |
| observables_0/energy_dense_regression, energy_dense_final       | readout_hidden, readout_out           |
| observables_0/atomic_scales, energy_offset (119,)               | element_scale, element_shift          |
| observables_0/zbl_repulsion/{a1..a4,c1..c4,p,d}                 | zbl/...                               |
| observables_0/electrostatic_energy/partial_charges/Embed_0 (100, 1) | charge_bias (rows 100.. zero)     |
| .../charge_dense_regression_vec, charge_dense_final_vec         | charge_hidden, charge_out             |
| observables_2/Embed_0 (100, 1), Embed_1 (100, F/2)              | hirshfeld_bias, hirshfeld_query       |
| observables_2/hirshfeld_ratios_dense_{regression,final}         | hirshfeld_hidden, hirshfeld_out       |

(SO3LR's per-head maps act as W x, this model's as x W: they are transposed on the way.)
"""

from __future__ import annotations

import importlib
import pickle
from collections.abc import Mapping
from pathlib import Path

import numpy as np

__all__ = ["read_so3lr_params", "so3lr_config", "so3lr_parameter_shapes", "potential_from_so3lr",
           "SO3LR_ELEMENTS"]

# the elements SO3LR was trained on: H, C, N, O, F, P, S, Cl
SO3LR_ELEMENTS = (1, 6, 7, 8, 9, 15, 16, 17)

# what a pickle of NumPy arrays may reference; anything else is refused (a pickle can run arbitrary code)
_ALLOWED_GLOBALS = {
    ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a parameter file may hold only NumPy "
                                         "arrays in nested dicts")
        return getattr(importlib.import_module(module), name)


def read_so3lr_params(path) -> dict:
    """{'/'-joined path: float32 array} from SO3LR's ``params.pkl``, read with an unpickler that allows only
    NumPy arrays (never plain ``pickle.load``)."""
    path = Path(path)
    with open(path, "rb") as fh:
        try:
            tree = _ArraysOnly(fh).load()
        except pickle.UnpicklingError as exc:
            raise ValueError(f"{path}: not a SO3LR parameter file ({exc})") from None
    flat = _flatten(tree)
    bad = [k for k, v in flat.items() if not isinstance(v, np.ndarray)]
    if bad:
        raise ValueError(f"{path}: entries that are not arrays: {bad[:5]}")
    return flat


def _flatten(tree, prefix: str = "") -> dict:
    if not isinstance(tree, Mapping):
        return {prefix: tree}
    out = {}
    for key, value in tree.items():
        out.update(_flatten(value, f"{prefix}/{key}" if prefix else str(key)))
    return out


# SO3LR hyperparameters (its hyperparameters.json "model" section) this model reproduces, and the value each
# must have; the numbers among them map onto So3kratesConfig fields in `so3lr_config`.
_REQUIRED = {
    "activation_fn": "silu", "energy_activation_fn": "silu", "qk_non_linearity": "identity",
    "radial_basis_fn": "bernstein", "cutoff_fn": "phys", "message_normalization": "avg_num_neighbors",
    "layer_normalization_1": True, "layer_normalization_2": True, "residual_mlp_1": True, "residual_mlp_2": False,
    "use_charge_embed": True, "use_spin_embed": True, "energy_learn_atomic_type_scales": True,
    "energy_learn_atomic_type_shifts": True, "zbl_repulsion_bool": True, "electrostatic_energy_bool": True,
    "dispersion_energy_bool": True, "input_convention": "positions",
}


def so3lr_config(hyperparameters: Mapping, *, long_range_cutoff: float | None = 12.0,
                 dispersion_damping: float = 2.0, dtype: str = "float32"):
    """The `So3kratesConfig` of a SO3LR ``hyperparameters.json`` (the whole file or its "model" section).

    long_range_cutoff, dispersion_damping (Angstrom): not part of the trained model; SO3LR's own calculators
    default to 12 and 2. Raises ValueError naming each setting this model does not reproduce.
    """
    from ..model import So3kratesConfig

    model = hyperparameters.get("model", hyperparameters)
    wrong = [f"{k}={model.get(k)!r} (needs {v!r})" for k, v in _REQUIRED.items() if model.get(k) != v]
    if model.get("num_features_head") not in (None, model.get("num_features", 0) // max(model.get("num_heads", 1), 1)):
        wrong.append(f"num_features_head={model.get('num_features_head')} (needs num_features / num_heads)")
    if wrong:
        raise ValueError("so3lr_config: these SO3LR settings are not reproduced here: " + "; ".join(wrong))
    avg = hyperparameters.get("data", {}).get("avg_num_neighbors", model.get("avg_num_neighbors"))
    if avg is None:
        raise ValueError("so3lr_config: the hyperparameters give no avg_num_neighbors (data section), which the "
                         "attention normalisation needs")
    return So3kratesConfig.preset(
        "so3lr", features=int(model["num_features"]), layers=int(model["num_layers"]),
        heads=int(model["num_heads"]), degrees=tuple(int(d) for d in model["degrees"]),
        cutoff=float(model["cutoff"]), radial_basis=int(model["num_radial_basis_fn"]),
        attention_normalization=float(avg), electrostatics_sigma=float(model["electrostatic_energy_scale"]),
        dispersion_scale=float(model["dispersion_energy_scale"]),
        long_range_cutoff=None if long_range_cutoff is None else float(long_range_cutoff),
        dispersion_damping=float(dispersion_damping), dtype=dtype)


def so3lr_parameter_shapes(config) -> dict[str, tuple]:
    """{SO3LR parameter path: shape} for a `so3lr_config`."""
    F, H, L, K = config.features, config.heads, len(config.degrees), config.radial_basis
    rows = config.n_embeddings
    shapes = {"params/feature_embeddings_0/Embed_0/embedding": (rows, F)}
    for e in (1, 2):
        base = f"params/feature_embeddings_{e}/ChargeSpinEmbedSparse_0"
        shapes.update({f"{base}/Embed_0/embedding": (rows, F), f"{base}/Embed_1/embedding": (2, F),
                       f"{base}/Embed_2/embedding": (2, F), f"{base}/Residual_0/layers_0/kernel": (F, F),
                       f"{base}/Residual_0/layers_1/kernel": (F, F)})
    for t in range(config.layers):
        layer = f"params/layers_{t}"
        att = f"{layer}/attention_block"
        for f in (1, 2):
            shapes.update({
                f"{att}/radial_filter{f}_layer_1/kernel": (K, F), f"{att}/radial_filter{f}_layer_1/bias": (F,),
                f"{att}/radial_filter{f}_layer_2/kernel": (F, F), f"{att}/radial_filter{f}_layer_2/bias": (F,),
                f"{att}/spherical_filter{f}_layer_1/kernel": (L, F // 4),
                f"{att}/spherical_filter{f}_layer_1/bias": (F // 4,),
                f"{att}/spherical_filter{f}_layer_2/kernel": (F // 4, F),
                f"{att}/spherical_filter{f}_layer_2/bias": (F,),
            })
        for name in ("Wq1", "Wk1", "Wv1"):
            shapes[f"{att}/{name}"] = (H, F // H, F // H)
        for name in ("Wq2", "Wk2"):
            shapes[f"{att}/{name}"] = (L, F // L, F // L)
        shapes.update({f"{layer}/exchange_block/mlp_layer_2/kernel": (F + L, F + L),
                       f"{layer}/exchange_block/mlp_layer_2/bias": (F + L,)})
        for n in (1, 2):
            shapes.update({f"{layer}/layer_normalization_{n}/scale": (F,),
                           f"{layer}/layer_normalization_{n}/bias": (F,),
                           f"{layer}/res_mlp_1_layer_{n}/kernel": (F, F), f"{layer}/res_mlp_1_layer_{n}/bias": (F,)})
    obs = "params/observables_0"
    shapes.update({f"{obs}/energy_dense_regression/kernel": (F, F), f"{obs}/energy_dense_regression/bias": (F,),
                   f"{obs}/energy_dense_final/kernel": (F, 1), f"{obs}/energy_dense_final/bias": (1,),
                   f"{obs}/atomic_scales": (rows,), f"{obs}/energy_offset": (rows,)})
    shapes.update({f"{obs}/zbl_repulsion/{k}": (1,) for k in ("a1", "a2", "a3", "a4", "c1", "c2", "c3", "c4",
                                                              "p", "d")})
    charges = f"{obs}/electrostatic_energy/partial_charges"
    shapes.update({f"{charges}/Embed_0/embedding": (100, 1),
                   f"{charges}/charge_dense_regression_vec/kernel": (F, F),
                   f"{charges}/charge_dense_regression_vec/bias": (F,),
                   f"{charges}/charge_dense_final_vec/kernel": (F, 1), f"{charges}/charge_dense_final_vec/bias": (1,)})
    hirsh = "params/observables_2"
    shapes.update({f"{hirsh}/Embed_0/embedding": (100, 1), f"{hirsh}/Embed_1/embedding": (100, F // 2),
                   f"{hirsh}/hirshfeld_ratios_dense_regression/kernel": (F, F // 2),
                   f"{hirsh}/hirshfeld_ratios_dense_regression/bias": (F // 2,),
                   f"{hirsh}/hirshfeld_ratios_dense_final/kernel": (F // 2, F // 2),
                   f"{hirsh}/hirshfeld_ratios_dense_final/bias": (F // 2,)})
    return shapes


def _checked(params: Mapping, config) -> dict[str, np.ndarray]:
    flat = _flatten(params) if any(isinstance(v, Mapping) for v in params.values()) else dict(params)
    if flat and not all(k.startswith("params/") for k in flat):
        flat = {f"params/{k}": v for k, v in flat.items()}
    expected = so3lr_parameter_shapes(config)
    missing = [k for k in expected if k not in flat]
    unexpected = [k for k in flat if k not in expected]
    if missing or unexpected:
        raise ValueError(f"potential_from_so3lr: missing parameter(s) {missing}, unexpected parameter(s) "
                         f"{unexpected} for the SO3LR model of these hyperparameters")
    arrays = {}
    for path, shape in expected.items():
        arr = np.asarray(flat[path])
        if arr.shape != shape:
            raise ValueError(f"potential_from_so3lr: parameter {path} has shape {arr.shape}, expected {shape}")
        if not np.issubdtype(arr.dtype, np.floating) or not np.isfinite(arr).all():
            raise ValueError(f"potential_from_so3lr: parameter {path} is not a finite floating-point array")
        arrays[path] = arr
    return arrays


def _our_params(arrays: dict, config, dtype) -> dict:
    def get(path):
        return np.asarray(arrays[f"params/{path}"], dtype)

    def dense(path):
        return {"kernel": get(f"{path}/kernel"), "bias": get(f"{path}/bias")}

    def padded(path, rows):  # SO3LR's 100-row per-element tables into this model's n_embeddings rows
        table = get(path)
        out = np.zeros((rows,) + table.shape[1:], dtype)
        out[:table.shape[0]] = table
        return out

    def transposed(path):  # W x (SO3LR) -> x W (here)
        return np.ascontiguousarray(np.swapaxes(get(path), 1, 2))

    rows = config.n_embeddings
    params = {"embed": {"embedding": get("feature_embeddings_0/Embed_0/embedding")}}
    for e, name in ((1, "charge_embed"), (2, "spin_embed")):
        base = f"feature_embeddings_{e}/ChargeSpinEmbedSparse_0"
        params[name] = {"element": {"embedding": get(f"{base}/Embed_0/embedding")},
                        "key": {"embedding": get(f"{base}/Embed_1/embedding")},
                        "value": {"embedding": get(f"{base}/Embed_2/embedding")},
                        "residual_1": {"kernel": get(f"{base}/Residual_0/layers_0/kernel")},
                        "residual_2": {"kernel": get(f"{base}/Residual_0/layers_1/kernel")}}
    radial = {"w_hidden": [], "b_hidden": [], "w_out": [], "b_out": []}
    for t in range(config.layers):
        layer = f"layers_{t}"
        att = f"{layer}/attention_block"
        sph = {"w_hidden": [], "b_hidden": [], "w_out": [], "b_out": []}
        for f in (1, 2):
            for parts, kind in ((radial, "radial"), (sph, "spherical")):
                parts["w_hidden"].append(get(f"{att}/{kind}_filter{f}_layer_1/kernel"))
                parts["b_hidden"].append(get(f"{att}/{kind}_filter{f}_layer_1/bias"))
                parts["w_out"].append(get(f"{att}/{kind}_filter{f}_layer_2/kernel"))
                parts["b_out"].append(get(f"{att}/{kind}_filter{f}_layer_2/bias"))
        params[f"block_{t}"] = {
            "attention": {"sph_filters": {k: np.stack(v) for k, v in sph.items()},
                          "q_heads": transposed(f"{att}/Wq1"), "k_heads": transposed(f"{att}/Wk1"),
                          "v_heads": transposed(f"{att}/Wv1"), "q_degrees": transposed(f"{att}/Wq2"),
                          "k_degrees": transposed(f"{att}/Wk2")},
            "interaction": {"mix": dense(f"{layer}/exchange_block/mlp_layer_2")},
            "norm_attention": {"scale": get(f"{layer}/layer_normalization_1/scale"),
                               "bias": get(f"{layer}/layer_normalization_1/bias")},
            "norm_interaction": {"scale": get(f"{layer}/layer_normalization_2/scale"),
                                 "bias": get(f"{layer}/layer_normalization_2/bias")},
            "mlp_hidden": dense(f"{layer}/res_mlp_1_layer_1"),
            "mlp_out": dense(f"{layer}/res_mlp_1_layer_2"),
        }
    params["radial_filters"] = {k: np.stack(v) for k, v in radial.items()}
    obs = "observables_0"
    charges = f"{obs}/electrostatic_energy/partial_charges"
    params.update({
        "readout_hidden": dense(f"{obs}/energy_dense_regression"),
        "readout_out": dense(f"{obs}/energy_dense_final"),
        "element_scale": get(f"{obs}/atomic_scales"),
        "element_shift": get(f"{obs}/energy_offset"),
        "zbl": {k: get(f"{obs}/zbl_repulsion/{k}") for k in ("a1", "a2", "a3", "a4", "c1", "c2", "c3", "c4",
                                                             "p", "d")},
        "charge_bias": {"embedding": padded(f"{charges}/Embed_0/embedding", rows)},
        "charge_hidden": dense(f"{charges}/charge_dense_regression_vec"),
        "charge_out": dense(f"{charges}/charge_dense_final_vec"),
        "hirshfeld_bias": {"embedding": padded("observables_2/Embed_0/embedding", rows)},
        "hirshfeld_query": {"embedding": padded("observables_2/Embed_1/embedding", rows)},
        "hirshfeld_hidden": dense("observables_2/hirshfeld_ratios_dense_regression"),
        "hirshfeld_out": dense("observables_2/hirshfeld_ratios_dense_final"),
    })
    return params


def potential_from_so3lr(params: Mapping, hyperparameters: Mapping, *, total_charge: float = 0.0,
                         unpaired_electrons: float = 0.0, long_range_cutoff: float | None = 12.0,
                         dispersion_damping: float = 2.0, dtype: str = "float32", metadata: dict | None = None):
    """A `Potential` computing what SO3LR computes with `params` ({path: array} or nested, as
    `read_so3lr_params` gives) and its `hyperparameters` (the parsed hyperparameters.json).

    total_charge: the system's charge in elementary charges (e); unpaired_electrons: the number of unpaired
    electrons; long_range_cutoff, dispersion_damping (Angstrom): as in `so3lr_config`; dtype: "float32" or
    "float64"; metadata: extra entries for the Potential's metadata. `pretrained.so3lr()` gives the shipped copy.

    The float32 weights are used as they are in either dtype (float64 evaluates them exactly, as SO3LR's own
    float64 mode does). Raises ValueError naming a missing, unexpected, mis-shaped or non-finite parameter.
    """
    import jax
    import jax.numpy as jnp

    from ..model import Potential
    from ..model.potential import check_variables

    config = so3lr_config(hyperparameters, long_range_cutoff=long_range_cutoff,
                          dispersion_damping=dispersion_damping, dtype=dtype)
    if config.dtype == "float64" and not jax.config.jax_enable_x64:
        raise RuntimeError("dtype='float64' needs `jax.config.update('jax_enable_x64', True)` before creating "
                           "arrays (this package never changes global JAX settings itself)")
    np_dtype = np.dtype(config.dtype)
    arrays = _checked(params, config)
    variables = {"params": _our_params(arrays, config, np_dtype),
                 "constants": {"element_energy": np.zeros(119, np_dtype), "energy_scale": np.ones((), np_dtype)}}
    check_variables(variables, config, "potential_from_so3lr")
    variables = jax.tree.map(lambda x: jnp.asarray(x, np_dtype), variables)
    info = {"source": "SO3LR (general-molecular-simulations/so3lr, MIT) weights, via "
                      "so3krates_lab.interop.potential_from_so3lr"}
    pot = Potential.create(config, variables, {**info, **(metadata or {})})
    return pot.with_charge(total_charge, unpaired_electrons)
