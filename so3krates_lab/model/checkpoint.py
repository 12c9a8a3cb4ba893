"""Versioned, pickle-free checkpoints: model config, variables, optional optimiser state and provenance.

Format specification (version 1)
================================

A checkpoint is ONE file ``<name>.npz`` written by ``np.savez`` (uncompressed zip of ``.npy`` members). It
never contains object arrays, so it is read with ``np.load(path, allow_pickle=False)`` and every key loads.

Keys
----
``variables/<path>``
    One array per leaf of the model variables. ``<path>`` is the '/'-joined flax tree path of the leaf, e.g.
    ``variables/params/block_0/attention/qkv/kernel`` or ``variables/constants/element_energy`` (shape (119,),
    eV) and ``variables/constants/energy_scale`` (shape ()). Arrays keep their dtype and shape exactly
    (bit-identical round trip). Dict keys must be non-empty strings without '/'; empty sub-dicts are not
    stored.
``opt_state/<index:05d>`` (optional)
    The leaves of an optimiser state, in ``jax.tree_util.tree_leaves`` order, as a flat list
    ``opt_state/00000``, ``opt_state/00001``, ... (contiguous from 0). The tree structure is NOT stored: the
    caller rebuilds it from its own optimiser (``tx.init(params)``) and fills it with
    :func:`restore_opt_state`, which checks the leaf count and every shape.
``metadata``
    A 0-d numpy unicode array holding a UTF-8 JSON object::

        {
          "format": "so3krates_lab.checkpoint",
          "version": 1,
          "model_config": {...So3kratesConfig.to_dict()...},
          "step": <int>,
          "units": {"energy": "eV", "length": "Angstrom", "forces": "eV/Angstrom"},
          "created": "<ISO 8601 UTC time>",
          "metadata": {...free caller dict: data provenance (file sha256, split indices), training config,
                       metrics...}
        }

    The caller's dict must be JSON-representable: numpy / jax scalars and arrays are converted to Python
    numbers and (nested) lists, tuples to lists; anything else (sets, objects, non-string keys) raises
    TypeError naming the offending key. Non-finite floats are written as Python's ``NaN``/``Infinity``
    tokens, which ``json.loads`` reads back.

Versioning: a reader accepts every version <= its own (currently 1) and refuses newer versions with a
ValueError naming both. Additions that old readers may ignore keep the version; anything else bumps it.

Writing is atomic: the file is written to a temporary ``*.tmp`` in the same directory, flushed and fsync'ed,
then moved onto the final name with ``os.replace``. A crash or error mid-save leaves any previous checkpoint
at that path untouched and removes the temporary file. While it writes, ``save_checkpoint`` holds the file's
writer lock (``<name>.npz.lock``, see ``so3krates_lab.fileio.WriterLock``): another process writing the same
checkpoint at that moment, or training into it (``fit`` holds the lock for its whole run), makes it raise
``StoreBusyError`` naming that process.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import operator
import os
import tempfile
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import WriterLock, not_npz_reason, read_head
from .config import So3kratesConfig

FORMAT = "so3krates_lab.checkpoint"
VERSION = 1
UNITS = {"energy": "eV", "length": "Angstrom", "forces": "eV/Angstrom"}
VARIABLES_PREFIX = "variables/"
OPT_STATE_PREFIX = "opt_state/"
METADATA_KEY = "metadata"

__all__ = [
    "FORMAT", "VERSION", "UNITS", "Checkpoint", "save_checkpoint", "load_checkpoint", "restore_opt_state",
]


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint.

    Fields::

        config:           the model's So3kratesConfig
        variables:        nested dicts of numpy arrays, same structure, dtypes and values as saved
        step:             training step at save time
        opt_state_leaves: flat list of optimiser-state leaves (see restore_opt_state), or None if not saved
        metadata:         the caller's free metadata dict (JSON round-tripped)
        created:          ISO 8601 UTC time of writing
        version:          format version of the file
    """

    config: So3kratesConfig
    variables: dict
    step: int
    opt_state_leaves: list[np.ndarray] | None
    metadata: dict
    created: str
    version: int


# ----------------------------------------------------------------------------------------------- writing


def _flatten_variables(tree: Mapping, prefix: str = "") -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        if not isinstance(key, str) or not key or "/" in key:
            raise ValueError(f"variable key {key!r} at {prefix or '<root>'!r} must be a non-empty string "
                             "without '/'")
        path = f"{prefix}/{key}" if prefix else key
        if isinstance(value, Mapping):
            out.update(_flatten_variables(value, path))
        else:
            out[path] = _as_plain_array(value, f"variables/{path}")
    return out


def _as_plain_array(value: Any, name: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.hasobject:
        raise TypeError(f"{name}: object arrays cannot be stored without pickle (got {type(value).__name__})")
    return arr


def _jsonable(value: Any, where: str) -> Any:
    """A JSON-representable copy of `value` (numpy/jax -> Python), or TypeError naming `where`."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return value.item() if isinstance(value, np.generic) else value
    if isinstance(value, np.generic):
        return _jsonable(value.item(), where)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"metadata key {where}[{k!r}] must be a string, got {type(k).__name__}")
            out[k] = _jsonable(v, f"{where}[{k!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.ndarray) or (hasattr(value, "__array__") and hasattr(value, "dtype")):
        arr = np.asarray(value)
        if arr.dtype.hasobject or arr.dtype.kind not in "biufU":
            raise TypeError(f"metadata value {where} is an array of dtype {arr.dtype}, not JSON-serialisable")
        return arr.tolist()
    raise TypeError(f"metadata value {where} has type {type(value).__name__}, not JSON-serialisable "
                    "(use str, int, float, bool, None, lists and dicts with string keys)")


def _final_path(path) -> Path:
    path = Path(path)
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def save_checkpoint(path, config: So3kratesConfig, variables: Mapping, *, step: int = 0, opt_state=None,
                    metadata: Mapping | None = None) -> Path:
    """Write a checkpoint (format above) atomically; returns the final path (``.npz`` appended if missing).
    Raises ``so3krates_lab.fileio.StoreBusyError`` when another process writes the same file (see above).

    variables: {"params": ..., "constants": ...} with jax or numpy leaves.
    opt_state: any pytree of arrays (e.g. an optax state); only its leaves are stored.
    metadata:  free JSON-representable dict (provenance, splits, training config, metrics).
    """
    if not isinstance(config, So3kratesConfig):
        raise TypeError(f"config must be a So3kratesConfig, got {type(config).__name__}")
    if not isinstance(variables, Mapping):
        raise TypeError(f"variables must be a dict of dicts, got {type(variables).__name__}")
    step = operator.index(step)
    if isinstance(step, bool):
        raise TypeError("step must be an int, not bool")
    user_meta = _jsonable(dict(metadata or {}), "metadata")

    arrays = {VARIABLES_PREFIX + k: v for k, v in _flatten_variables(variables).items()}
    if opt_state is not None:
        import jax  # only needed to flatten an arbitrary pytree

        for i, leaf in enumerate(jax.tree_util.tree_leaves(opt_state)):
            arrays[f"{OPT_STATE_PREFIX}{i:05d}"] = _as_plain_array(leaf, f"opt_state leaf {i}")
    header = {
        "format": FORMAT,
        "version": VERSION,
        "model_config": config.to_dict(),
        "step": step,
        "units": dict(UNITS),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "metadata": user_meta,
    }
    text = json.dumps(header, sort_keys=True)
    arrays[METADATA_KEY] = np.array(text, dtype=np.str_)

    final = _final_path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    with WriterLock(final):  # StoreBusyError if another process writes this checkpoint
        tmp = tempfile.NamedTemporaryFile(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp", delete=False)
        try:
            with tmp:
                np.savez(tmp, **arrays)
                tmp.flush()
                os.fsync(tmp.fileno())
            os.chmod(tmp.name, 0o644)  # readable by the group, as every other file written here (mkstemp: 0600)
            os.replace(tmp.name, final)
        except BaseException:
            try:
                os.unlink(tmp.name)
            except FileNotFoundError:
                pass
            raise
        _fsync_dir(final.parent)
    return final


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable where the platform allows (best effort; not possible on Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------------------------- reading

_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError, UnicodeDecodeError)


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    reason = not_npz_reason(read_head(path))  # before numpy, whose errors on other files advise unpickling
    if reason is not None:
        raise ValueError(f"{path} is not a readable checkpoint: not an .npz archive ({reason})")
    try:
        loaded = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except _READ_ERRORS as err:
        raise ValueError(f"{path} is not a readable checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} is not a readable checkpoint: it holds a single .npy array, not an .npz archive")
    try:
        with loaded:
            return {key: loaded[key] for key in loaded.files}
    except _READ_ERRORS as err:
        raise ValueError(f"{path} is not a readable checkpoint ({type(err).__name__}: {err})") from err


def _parse_header(path: Path, arrays: Mapping[str, np.ndarray]) -> dict:
    if METADATA_KEY not in arrays:
        keys = sorted(arrays)
        shown = keys[:8] + (["..."] if len(keys) > 8 else [])
        raise ValueError(f"{path} is not a {FORMAT} file: no {METADATA_KEY!r} entry (found keys {shown})")
    raw = arrays[METADATA_KEY]
    if raw.shape != () or raw.dtype.kind != "U":
        raise ValueError(f"{path} is not a {FORMAT} file: {METADATA_KEY!r} is a {raw.dtype} array of shape "
                         f"{raw.shape}, expected a 0-d unicode string")
    try:
        header = json.loads(str(raw[()]))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not a {FORMAT} file: {METADATA_KEY!r} is not valid JSON ({err})") from err
    if not isinstance(header, dict):
        raise ValueError(f"{path} is not a {FORMAT} file: metadata is a JSON {type(header).__name__}, not an object")
    fmt = header.get("format")
    if fmt != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} file: metadata format is {fmt!r}")
    version = header.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{path}: invalid checkpoint version {version!r}")
    if version > VERSION:
        raise ValueError(f"{path}: checkpoint version {version} is newer than the supported version {VERSION}; "
                         "upgrade so3krates_lab to read it")
    units = header.get("units")
    if units != UNITS:
        raise ValueError(f"{path}: checkpoint units {units!r} differ from the package's units {UNITS!r}")
    for field in ("model_config", "step", "created", "metadata"):
        if field not in header:
            raise ValueError(f"{path}: checkpoint metadata lacks the required field {field!r}")
    return header


def _unflatten(flat: Mapping[str, np.ndarray]) -> dict:
    tree: dict = {}
    for path, arr in flat.items():
        *parents, leaf = path.split("/")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = arr
    return tree


def load_checkpoint(path) -> Checkpoint:
    """Read a checkpoint written by save_checkpoint (never unpickles anything).

    Raises FileNotFoundError for a missing file, ValueError for a file that is not a (readable, supported)
    checkpoint: corrupted or truncated, another format, or a newer version.
    """
    path = Path(path)
    if not path.exists() and path.suffix != ".npz" and _final_path(path).exists():
        path = _final_path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    arrays = _read_arrays(path)
    header = _parse_header(path, arrays)

    try:
        config = So3kratesConfig.from_dict(header["model_config"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: invalid model_config in checkpoint: {err}") from err

    variables = _unflatten({k[len(VARIABLES_PREFIX):]: v for k, v in arrays.items() if k.startswith(VARIABLES_PREFIX)})
    opt_keys = sorted(k for k in arrays if k.startswith(OPT_STATE_PREFIX))
    opt_leaves = None
    if opt_keys:
        expected = [f"{OPT_STATE_PREFIX}{i:05d}" for i in range(len(opt_keys))]
        if opt_keys != expected:
            raise ValueError(f"{path}: optimiser-state keys are not contiguous from 00000: {opt_keys[:5]}...")
        opt_leaves = [arrays[k] for k in opt_keys]
    unknown = sorted(k for k in arrays if k != METADATA_KEY and not k.startswith((VARIABLES_PREFIX, OPT_STATE_PREFIX)))
    if unknown:
        raise ValueError(f"{path}: unexpected entries in checkpoint: {unknown}")

    return Checkpoint(config=config, variables=variables, step=int(header["step"]), opt_state_leaves=opt_leaves,
                      metadata=header["metadata"], created=str(header["created"]), version=header["version"])


def restore_opt_state(template, leaves):
    """Put saved optimiser-state `leaves` into the tree structure of `template` (e.g. ``tx.init(params)``).

    Raises ValueError when the leaf count or any leaf shape differs. Leaves take the template leaf's dtype.
    """
    import jax
    import jax.numpy as jnp

    if leaves is None:
        raise ValueError("the checkpoint holds no optimiser state")
    template_leaves, treedef = jax.tree_util.tree_flatten(template)
    leaves = list(leaves)
    if len(leaves) != len(template_leaves):
        raise ValueError(f"optimiser state has {len(leaves)} saved leaves but the template has "
                         f"{len(template_leaves)}: a different optimiser or model?")
    restored = []
    for i, (t, saved) in enumerate(zip(template_leaves, leaves)):
        saved = np.asarray(saved)
        if tuple(np.shape(t)) != saved.shape:
            raise ValueError(f"optimiser state leaf {i}: saved shape {saved.shape} != template shape "
                             f"{tuple(np.shape(t))}")
        restored.append(jnp.asarray(saved, dtype=getattr(t, "dtype", saved.dtype)))
    return jax.tree_util.tree_unflatten(treedef, restored)
