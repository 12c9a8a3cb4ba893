"""Weights of the public reference implementation (thorben-frank/mlff, its dense `So3krates`) as a `Potential`.

    pot = potential_from_mlff(params)                        # mlff's `train_so3krates` defaults
    pot = potential_from_mlff(params, features=96, layers=2, cutoff=4.0, dtype="float64")

`params` is mlff's parameter tree: a mapping from its parameter paths, e.g.
``params/layers_0/FeatureBlock_0/attention_fn/VmapConvAttentionCoefficients_0/Dense_0/kernel``, to arrays, or
the nested dict flax keeps (``{"params": {"layers_0": ...}}``, with or without the top ``params`` level). The
keywords are `So3kratesConfig` fields; they default to the ``"mlff"`` preset (F=132, 3 layers, 4 heads,
degrees 1, 2, 3, cutoff 5 A, 32 radial functions, per-head projections, a 100-row embedding), and must describe
the mlff model the weights come from (its ``hyperparameters.json``: F, n_layer, n_heads, degrees, r_cut, n_rbf,
num_embeddings - 1).

The two models compute the same function (SO3KRATES.md; measured to round-off by tests/test_mlff_equivalence.py):
the same PhysNet basis without cutoff, cosine cutoff on the attention coefficients, real orthonormal spherical
harmonics Y_l(u_ij) with u_ij from i to its neighbour j (mlff orders m = -l..l and has no Condon-Shortley phase,
as here), the contraction (1/sqrt(2l+1)) sum_m v_lm^2, filters MLP_rad(rbf) + MLP_sph(c(chi_j - chi_i)), heads as
contiguous feature slices, 1/sqrt(head width), no softmax, the residual x + dx before the interaction layer,
chi starting at zero, and E = sum_i MLP(x_i). mlff evaluates the filters once per directed pair, this model once
per unordered pair (they are symmetric in i and j).

Where one weight lands (t = block; mlff's leading vmap axis of size 1 dropped; FB = layers_t/FeatureBlock_0,
GB = layers_t/GeometricBlock_0, Coeff = attention_fn/VmapConvAttentionCoefficients_0, Agg =
attention_fn/VmapAttentionAggregation_0; both sides under ``params/``):

| mlff                                                  | so3krates_lab                                      |
|-------------------------------------------------------|----------------------------------------------------|
| feature_embeddings_0/Embed_0/embedding (Z, F)         | embed/embedding (first Z rows; any further rows 0) |
| FB/filter_fn/VmapMLP_0/layers_0/{kernel,bias}         | radial_filters/{w,b}_hidden[2t]                    |
| FB/filter_fn/VmapMLP_0/layers_1/{kernel,bias}         | radial_filters/{w,b}_out[2t]                       |
| GB/filter_fn/VmapMLP_0/layers_{0,1}/{kernel,bias}     | radial_filters/...[2t + 1]                         |
| FB/filter_fn/VmapMLP_1/layers_{0,1}/{kernel,bias}     | block_t/attention/sph_filters/...[0]               |
| GB/filter_fn/VmapMLP_1/layers_{0,1}/{kernel,bias}     | block_t/attention/sph_filters/...[1]               |
| FB/Coeff/Dense_0/kernel (H, F/H, F/H)                 | block_t/attention/q_heads                          |
| FB/Coeff/Dense_1/kernel (H, F/H, F/H)                 | block_t/attention/k_heads                          |
| FB/Agg/Dense_0/kernel (H, F/H, F/H)                   | block_t/attention/v_heads                          |
| GB/Coeff/Dense_0/kernel (L, F/L, F/L)                 | block_t/attention/q_degrees                        |
| GB/Coeff/Dense_1/kernel (L, F/L, F/L)                 | block_t/attention/k_degrees                        |
| layers_t/InteractionBlock_0/MLP_0/layers_0 (F + L)    | block_t/interaction/mix/{kernel,bias}              |
| observables_0/MLP_0/layers_0/{kernel,bias}            | readout_hidden/{kernel,bias}                       |
| observables_0/MLP_0/layers_1/{kernel,bias}            | readout_out/{kernel,bias}                          |

With ``attention_projection="full"`` the per-head matrices are placed on the diagonals of the full kernel
``block_t/attention/qkv`` = [Wq | Wq' | Wk | Wv | Wk'] instead (the same function, in this project's default
form, e.g. to fine-tune from mlff's weights). mlff's energy module has no learned shift or scale: the constants
start at element_energy 0 and energy_scale 1 unless given (mlff's `per_atom_shift` and a uniform
`per_atom_scale` map onto them).

Not representable, refused: mlff's layer normalisation and residual MLPs (their parameters would be
`unexpected`; this project's optional `layer_norm` / `residual_mlp` are placed and built differently), the ZBL
repulsion, the neighbourhood initialisation of chi (`sphc_normalization`, divided by a constant there, by
1 + sum_j phi_ij here), radial-only filters, and the invariant ablation (mlff needs degrees).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["MLFF_PRESET", "mlff_parameter_shapes", "potential_from_mlff"]

MLFF_PRESET = "mlff"

_FB = "FeatureBlock_0"
_GB = "GeometricBlock_0"
_COEFF = "attention_fn/VmapConvAttentionCoefficients_0"
_HINTS = {
    "LayerNorm": "mlff's layer_normalization, which this model does not reproduce",
    "ResidualMLP": "mlff's residual_mlp_1 / residual_mlp_2, which this model does not reproduce",
    "ZBLRepulsion": "mlff's ZBL repulsion, which this model does not have",
    "feature_embeddings_1": "a second feature embedding, which this model does not have",
    "observables_1": "a second observable, which this model does not have",
}


def _config(overrides: dict):
    from ..model import So3kratesConfig  # lazy: interop adapters load the model only when used

    config = So3kratesConfig.preset(MLFF_PRESET, **overrides)
    refused = []
    if not config.degrees:
        refused.append("degrees=() (mlff's So3krates needs at least one degree)")
    if config.ev_init != "zeros":
        refused.append(f"ev_init={config.ev_init!r} (mlff starts chi at zero unless sphc_normalization is set, "
                       "and then normalises differently)")
    if config.layer_norm:
        refused.append("layer_norm=True (mlff's layer_normalization normalises at other places)")
    if config.residual_mlp:
        refused.append("residual_mlp=True (mlff's residual MLPs are built differently)")
    if refused:
        raise ValueError("potential_from_mlff: no mlff model matches " + "; ".join(refused))
    return config


def mlff_parameter_shapes(config=None, n_embeddings: int | None = None, **overrides) -> dict[str, tuple]:
    """{mlff parameter path: shape} of the mlff So3krates that `config` (default: the "mlff" preset with
    `overrides`) corresponds to; n_embeddings: rows of mlff's embedding table (default max_atomic_number + 1)."""
    if config is None:
        config = _config(overrides)
    F, H, L, K = config.features, config.heads, len(config.degrees), config.radial_basis
    rows = config.n_embeddings if n_embeddings is None else int(n_embeddings)
    shapes = {"params/feature_embeddings_0/Embed_0/embedding": (rows, F)}
    for t in range(config.layers):
        layer = f"params/layers_{t}"
        for block in (_FB, _GB):
            filters = f"{layer}/{block}/filter_fn"
            shapes.update({
                f"{filters}/VmapMLP_0/layers_0/kernel": (1, K, F), f"{filters}/VmapMLP_0/layers_0/bias": (1, F),
                f"{filters}/VmapMLP_0/layers_1/kernel": (1, F, F), f"{filters}/VmapMLP_0/layers_1/bias": (1, F),
                f"{filters}/VmapMLP_1/layers_0/kernel": (1, L, F // 4),
                f"{filters}/VmapMLP_1/layers_0/bias": (1, F // 4),
                f"{filters}/VmapMLP_1/layers_1/kernel": (1, F // 4, F), f"{filters}/VmapMLP_1/layers_1/bias": (1, F),
            })
        shapes[f"{layer}/{_FB}/{_COEFF}/Dense_0/kernel"] = (H, F // H, F // H)
        shapes[f"{layer}/{_FB}/{_COEFF}/Dense_1/kernel"] = (H, F // H, F // H)
        shapes[f"{layer}/{_FB}/attention_fn/VmapAttentionAggregation_0/Dense_0/kernel"] = (H, F // H, F // H)
        shapes[f"{layer}/{_GB}/{_COEFF}/Dense_0/kernel"] = (L, F // L, F // L)
        shapes[f"{layer}/{_GB}/{_COEFF}/Dense_1/kernel"] = (L, F // L, F // L)
        shapes[f"{layer}/InteractionBlock_0/MLP_0/layers_0/kernel"] = (F + L, F + L)
        shapes[f"{layer}/InteractionBlock_0/MLP_0/layers_0/bias"] = (F + L,)
    shapes.update({
        "params/observables_0/MLP_0/layers_0/kernel": (F, F), "params/observables_0/MLP_0/layers_0/bias": (F,),
        "params/observables_0/MLP_0/layers_1/kernel": (F, 1), "params/observables_0/MLP_0/layers_1/bias": (1,),
    })
    return shapes


def _flatten(tree, prefix: str = "") -> dict[str, np.ndarray]:
    """{'/'-joined path: array} of a flat or nested mapping (keys may themselves contain '/')."""
    if not isinstance(tree, Mapping):
        return {prefix: tree}
    out: dict = {}
    for key, value in tree.items():
        if not isinstance(key, str) or not key.strip("/"):
            raise ValueError(f"potential_from_mlff: parameter key {key!r} under {prefix or '<root>'!r} is not a "
                             "path (a non-empty string)")
        path = f"{prefix}/{key.strip('/')}" if prefix else key.strip("/")
        out.update(_flatten(value, path))
    return out


def _with_params_root(flat: dict) -> dict:
    """Paths relative to the variables (``params/...``) whether or not the caller included that level."""
    if flat and all(k == "params" or k.startswith("params/") for k in flat):
        return flat
    return {f"params/{k}": v for k, v in flat.items()}


def _hint(path: str) -> str:
    for marker, hint in _HINTS.items():
        if marker in path:
            return f"{path} ({hint})"
    return path


def _describe(config) -> str:
    return (f"features={config.features}, layers={config.layers}, heads={config.heads}, "
            f"degrees={config.degrees}, radial_basis={config.radial_basis}, "
            f"max_atomic_number={config.max_atomic_number}")


_KEYWORDS = ("pass the mlff model's hyper-parameters as keywords (features=F, layers=n_layer, heads=n_heads, "
             "degrees=..., radial_basis=n_rbf, cutoff=r_cut, max_atomic_number=num_embeddings - 1)")


def _checked_arrays(params, config) -> dict[str, np.ndarray]:
    if not isinstance(params, Mapping):
        raise TypeError(f"potential_from_mlff: params must be a mapping from mlff parameter paths to arrays "
                        f"(or flax's nested dict), got {type(params).__name__}")
    found = _with_params_root(_flatten(params))
    arrays = {}
    for path, value in found.items():
        arr = np.asarray(value)
        if not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"potential_from_mlff: parameter {path} is not a floating-point array "
                             f"(dtype {arr.dtype})")
        arrays[path] = arr
    embedding = "params/feature_embeddings_0/Embed_0/embedding"
    rows = None
    if embedding in arrays and arrays[embedding].ndim == 2:
        rows = arrays[embedding].shape[0]
        if rows - 1 > config.max_atomic_number:
            raise ValueError(f"potential_from_mlff: parameter {embedding} has {rows} rows (atomic numbers up to "
                             f"{rows - 1}), more than max_atomic_number={config.max_atomic_number} holds; pass "
                             f"max_atomic_number={rows - 1}")
        if rows < 2:
            raise ValueError(f"potential_from_mlff: parameter {embedding} has {rows} row(s): no element")
    expected = mlff_parameter_shapes(config, n_embeddings=rows)
    missing = [k for k in expected if k not in arrays]
    unexpected = [_hint(k) for k in arrays if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing parameter(s) {missing}")
        if unexpected:
            parts.append(f"unexpected parameter(s) {unexpected}")
        raise ValueError("potential_from_mlff: the parameters are not those of mlff's So3krates with "
                         f"{_describe(config)}: " + "; ".join(parts) + f". If the model differs, {_KEYWORDS}")
    for path, shape in expected.items():
        if arrays[path].shape != shape:
            raise ValueError(f"potential_from_mlff: parameter {path} has shape {arrays[path].shape}, but mlff's "
                             f"So3krates with {_describe(config)} has {shape}; {_KEYWORDS}")
    for path, arr in arrays.items():
        if not np.isfinite(arr).all():
            bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
            raise ValueError(f"potential_from_mlff: parameter {path} has {bad} non-finite value(s) of {arr.size}")
    return arrays


def _block_diagonal(blocks: np.ndarray) -> np.ndarray:
    n, a, b = blocks.shape
    out = np.zeros((n * a, n * b), blocks.dtype)
    for h in range(n):
        out[h * a:(h + 1) * a, h * b:(h + 1) * b] = blocks[h]
    return out


def _our_params(arrays: dict, config, dtype) -> dict:
    """This model's "params" tree (numpy, `dtype`) from mlff's checked arrays (table in the module docstring)."""
    def get(path):
        return np.asarray(arrays[f"params/{path}"], dtype)

    table = get("feature_embeddings_0/Embed_0/embedding")
    embedding = np.zeros((config.n_embeddings, config.features), dtype)
    embedding[:table.shape[0]] = table  # rows beyond mlff's table: elements it has no embedding for
    params = {"embed": {"embedding": embedding}}

    radial = {"w_hidden": [], "b_hidden": [], "w_out": [], "b_out": []}
    for t in range(config.layers):
        layer = f"layers_{t}"
        for block in (_FB, _GB):  # filter w1 (invariant branch) then w2 (equivariant branch), as radial_filters
            mlp = f"{layer}/{block}/filter_fn/VmapMLP_0"
            radial["w_hidden"].append(get(f"{mlp}/layers_0/kernel")[0])
            radial["b_hidden"].append(get(f"{mlp}/layers_0/bias")[0])
            radial["w_out"].append(get(f"{mlp}/layers_1/kernel")[0])
            radial["b_out"].append(get(f"{mlp}/layers_1/bias")[0])
        sph = {"w_hidden": [], "b_hidden": [], "w_out": [], "b_out": []}
        for block in (_FB, _GB):
            mlp = f"{layer}/{block}/filter_fn/VmapMLP_1"
            sph["w_hidden"].append(get(f"{mlp}/layers_0/kernel")[0])
            sph["b_hidden"].append(get(f"{mlp}/layers_0/bias")[0])
            sph["w_out"].append(get(f"{mlp}/layers_1/kernel")[0])
            sph["b_out"].append(get(f"{mlp}/layers_1/bias")[0])
        q = get(f"{layer}/{_FB}/{_COEFF}/Dense_0/kernel")
        k = get(f"{layer}/{_FB}/{_COEFF}/Dense_1/kernel")
        v = get(f"{layer}/{_FB}/attention_fn/VmapAttentionAggregation_0/Dense_0/kernel")
        q_ev = get(f"{layer}/{_GB}/{_COEFF}/Dense_0/kernel")
        k_ev = get(f"{layer}/{_GB}/{_COEFF}/Dense_1/kernel")
        attention = {"sph_filters": {name: np.stack(parts) for name, parts in sph.items()}}
        if config.attention_projection == "per_head":
            attention.update(q_heads=q, k_heads=k, v_heads=v, q_degrees=q_ev, k_degrees=k_ev)
        else:  # the full kernel [Wq | Wq' | Wk | Wv | Wk'] with the per-head maps on its diagonal blocks
            attention["qkv"] = {"kernel": np.concatenate(
                [_block_diagonal(m) for m in (q, q_ev, k, v, k_ev)], axis=1)}
        params[f"block_{t}"] = {
            "attention": attention,
            "interaction": {"mix": {"kernel": get(f"{layer}/InteractionBlock_0/MLP_0/layers_0/kernel"),
                                    "bias": get(f"{layer}/InteractionBlock_0/MLP_0/layers_0/bias")}},
        }
    params["radial_filters"] = {name: np.stack(parts) for name, parts in radial.items()}
    params["readout_hidden"] = {"kernel": get("observables_0/MLP_0/layers_0/kernel"),
                                "bias": get("observables_0/MLP_0/layers_0/bias")}
    params["readout_out"] = {"kernel": get("observables_0/MLP_0/layers_1/kernel"),
                             "bias": get("observables_0/MLP_0/layers_1/bias")}
    return params


def potential_from_mlff(params, *, element_energy=None, energy_scale=None, metadata: dict | None = None,
                        **config):
    """A `Potential` computing what mlff's So3krates computes with the weights `params` (module docstring).

    params: {mlff parameter path: array} or the nested dict form. config: `So3kratesConfig` fields over the
    "mlff" preset, e.g. dtype="float64" (needs jax_enable_x64) or attention_projection="full".
    element_energy (119,) eV and energy_scale: the constants (default 0 and 1: mlff's energy has none).
    Raises ValueError naming the parameter path when one is missing, unexpected, mis-shaped or not finite.
    """
    import jax
    import jax.numpy as jnp

    from ..model import Potential
    from ..model.potential import check_variables

    cfg = _config(config)
    if cfg.dtype == "float64" and not jax.config.jax_enable_x64:
        raise RuntimeError("dtype='float64' needs `jax.config.update('jax_enable_x64', True)` before creating "
                           "arrays (this package never changes global JAX settings itself)")
    dtype = np.dtype(cfg.dtype)
    arrays = _checked_arrays(params, cfg)
    variables = {
        "params": _our_params(arrays, cfg, dtype),
        "constants": {"element_energy": np.zeros(119, dtype), "energy_scale": np.ones((), dtype)},
    }
    check_variables(variables, cfg, "potential_from_mlff")  # the mapping's own consistency, against the model
    variables = jax.tree.map(lambda x: jnp.asarray(x, dtype), variables)
    info = {"source": "mlff (thorben-frank/mlff So3krates) parameters, via so3krates_lab.interop.potential_from_mlff"}
    pot = Potential.create(cfg, variables, {**info, **(metadata or {})})
    if element_energy is None and energy_scale is None:
        return pot
    return pot.with_constants(element_energy, energy_scale)
