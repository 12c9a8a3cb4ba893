"""Shared pytest fixtures."""

import os
from pathlib import Path

import pytest


def shared_data_dir() -> Path:
    """Reference data folder: $SO3KRATES_DATA_DIR, else ../shared/data beside the project root."""
    env = os.environ.get("SO3KRATES_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of the reference data folder; skips the test when it is absent."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"reference data folder {path} not found; set SO3KRATES_DATA_DIR")
    return path


# The physics tests need float64 (finite differences, 1e-10 invariance checks). JAX's precision switch is
# process-global, so it is set once here for the whole test session; float32 tests pass explicit dtypes.
# The library itself never changes this setting (see DESIGN.md, principle 7).
import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
