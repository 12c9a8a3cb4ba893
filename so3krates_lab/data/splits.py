"""Reproducible train / validation / test splits of a Dataset, saved as JSON next to results."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from so3krates_lab.structures import Dataset

_FORMAT = "so3krates_lab.split/1"


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
    """Frame indices of a data set of n_total frames.

    train, valid, test: (n_train,), (n_valid,), (n_test,) int64 index arrays, sorted, pairwise disjoint,
    each in [0, n_total). seed: the RNG seed that drew them. dataset_sha256: hash of the data file they
    index ("" = not recorded, no check in apply).
    """

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    seed: int
    n_total: int
    dataset_sha256: str = ""

    def __post_init__(self):
        n_total = int(self.n_total)
        if n_total < 0:
            raise ValueError(f"n_total must be >= 0, got {n_total}")
        parts = {}
        for name in ("train", "valid", "test"):
            arr = np.asarray(getattr(self, name))
            if arr.size == 0:
                arr = arr.reshape(0).astype(np.int64)
            if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
                raise ValueError(f"{name} indices must be a 1-D integer array, got {arr.dtype} {arr.shape}")
            if arr.size and (arr.min() < 0 or arr.max() >= n_total):
                raise ValueError(f"{name} indices must lie in [0, {n_total}), got {arr.min()}..{arr.max()}")
            parts[name] = np.sort(arr.astype(np.int64))
        everything = np.concatenate(list(parts.values()))
        if np.unique(everything).size != everything.size:
            raise ValueError("train, valid and test indices must be disjoint and free of duplicates")
        for name, arr in parts.items():
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        object.__setattr__(self, "n_total", n_total)
        object.__setattr__(self, "seed", int(self.seed))
        object.__setattr__(self, "dataset_sha256", str(self.dataset_sha256))

    def to_dict(self) -> dict:
        """The split as a JSON-ready dict (lists of indices, with a format tag); `from_dict` reads it back."""
        return {"format": _FORMAT, "seed": self.seed, "n_total": self.n_total,
                "dataset_sha256": self.dataset_sha256, "train": self.train.tolist(),
                "valid": self.valid.tolist(), "test": self.test.tolist()}

    def save(self, path) -> None:
        """Write JSON atomically: a temporary file in the same folder, then os.replace."""
        path = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(self.to_dict(), fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)  # readable by the group, as every other file written here (mkstemp: 0600)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path) -> "Split":
        """Read a split written by `save`."""
        with open(path) as fh:
            return cls.from_dict(json.load(fh), where=str(path))

    @classmethod
    def from_dict(cls, d: dict, where: str = "split") -> "Split":
        """Inverse of to_dict (e.g. the split stored in a checkpoint's metadata)."""
        if d.get("format") != _FORMAT:
            raise ValueError(f"{where}: not a split file (format {d.get('format')!r}, expected {_FORMAT!r})")
        return cls(train=np.asarray(d["train"], dtype=np.int64), valid=np.asarray(d["valid"], dtype=np.int64),
                   test=np.asarray(d["test"], dtype=np.int64), seed=d["seed"], n_total=d["n_total"],
                   dataset_sha256=d.get("dataset_sha256", ""))

    def apply(self, dataset: Dataset) -> tuple[Dataset, Dataset, Dataset]:
        """(train, valid, test) sub-Datasets; the data set must be the one the split was drawn for.

        An empty part cannot be a Dataset and raises; draw splits with n_valid, n_test >= 1 to apply them.
        """
        if self.dataset_sha256 and dataset.sha256 and self.dataset_sha256 != dataset.sha256:
            raise ValueError(f"split was drawn for data set sha256 {self.dataset_sha256[:12]}... but "
                             f"{dataset.name or dataset.source!r} has sha256 {dataset.sha256[:12]}...")
        if len(dataset) != self.n_total:
            raise ValueError(f"split is for {self.n_total} frames but {dataset.name!r} has {len(dataset)}")
        return dataset[self.train], dataset[self.valid], dataset[self.test]


def random_split(n_total: int, n_train: int, n_valid: int, n_test: int | None = None, seed: int = 0,
                 dataset_sha256: str = "") -> Split:
    """Draw a random split with np.random.default_rng(seed).permutation(n_total) (PCG64: same on every
    platform): the first n_train go to train, the next n_valid to valid, the next n_test (None = all
    remaining) to test.

    >>> split = random_split(100, n_train=80, n_valid=10, seed=1)
    >>> len(split.train), len(split.valid), len(split.test)
    (80, 10, 10)
    >>> sorted(set(split.train) | set(split.valid) | set(split.test)) == list(range(100))  # disjoint, complete
    True
    >>> bool((random_split(100, 80, 10, seed=1).test == split.test).all())  # the seed fixes it
    True
    """
    n_total = int(n_total)
    sizes = {"n_total": n_total, "n_train": n_train, "n_valid": n_valid, "n_test": n_test}
    if any(v is not None and int(v) < 0 for v in sizes.values()):
        raise ValueError(f"split sizes must be >= 0; got {sizes}")
    n_used = n_train + n_valid + (0 if n_test is None else n_test)
    if n_used > n_total:
        raise ValueError(f"n_train + n_valid + n_test = {n_used} exceeds n_total={n_total} ({sizes})")
    n_test = n_total - n_train - n_valid if n_test is None else n_test
    perm = np.random.default_rng(seed).permutation(n_total)
    a, b = n_train, n_train + n_valid
    return Split(train=perm[:a], valid=perm[a:b], test=perm[b:b + n_test], seed=seed, n_total=n_total,
                 dataset_sha256=dataset_sha256)
