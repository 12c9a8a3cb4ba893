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
