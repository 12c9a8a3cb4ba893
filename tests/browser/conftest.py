"""Fixtures for the real-browser tests: one JupyterLab server and one Chromium per test session.

The tests skip (with the reason) when Chromium, Playwright or JupyterLab is missing, unless
SO3KRATES_REQUIRE_BROWSER=1, which turns the skip into a failure (CI sets it).
SO3KRATES_LAB_PYTHON: the interpreter that runs JupyterLab and the kernels (default: the one running pytest;
tools/check_binder.sh points it at an environment built from binder/).
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import labdriver  # noqa: E402

SCREENSHOT_DIR = labdriver.REPO / "results" / "browser"
LAB_PYTHON = os.environ.get("SO3KRATES_LAB_PYTHON", sys.executable)


@functools.lru_cache(maxsize=None)
def _missing() -> str | None:
    return labdriver.missing_requirements(LAB_PYTHON)


def _require_browser() -> None:
    reason = _missing()
    if reason is None:
        return
    if os.environ.get("SO3KRATES_REQUIRE_BROWSER") == "1":
        pytest.fail(f"SO3KRATES_REQUIRE_BROWSER=1 but the browser tests cannot run: {reason}")
    pytest.skip(reason)


def _data_dir_env() -> dict:
    """SO3KRATES_DATA_DIR for the kernels: the notebooks run from a copy outside the checkout, so the default
    reference-data folder ../shared/data beside the project root (as in tests/conftest.py) is passed on
    explicitly when it exists."""
    if os.environ.get("SO3KRATES_DATA_DIR"):
        return {}  # inherited by the server and its kernels
    path = labdriver.REPO.parent / "shared" / "data"
    return {"SO3KRATES_DATA_DIR": str(path)} if path.is_dir() else {}


def _jax_cache_env(work: Path) -> dict:
    """JAX_COMPILATION_CACHE_DIR for the kernels: one persistent compilation cache shared by the notebooks of this
    test session (a program compiled by one notebook is loaded from disk when a later notebook compiles the same
    program), fresh per session so that no run depends on an earlier one. An inherited JAX_COMPILATION_CACHE_DIR
    is used as it is."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return {}
    return {"JAX_COMPILATION_CACHE_DIR": str(work / "jax_cache")}


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 serving a fresh copy of notebooks/ with SO3KRATES_SMOKE=1; stopped
    (process group) at the end of the session, also when a test fails."""
    _require_browser()
    work = tmp_path_factory.mktemp("jupyterlab")
    root = labdriver.prepare_root(work / "root")
    server = labdriver.start_lab(root, work, python=LAB_PYTHON,
                                 env_extra={"SO3KRATES_SMOKE": "1", **_data_dir_env(), **_jax_cache_env(work)})
    yield server
    server.stop()


@pytest.fixture(scope="session")
def chromium():
    """Debian's Chromium, headless, through Playwright's sync API."""
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = labdriver.launch_chromium(playwright)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium, lab):
    """A fresh browser page; afterwards the page is closed and every kernel is shut down."""
    context = chromium.new_context(viewport=labdriver.VIEWPORT)
    page = context.new_page()
    yield page
    context.close()
    lab.shutdown_kernels()


@pytest.fixture
def console(page):
    """The page's browser console (labdriver.ConsoleLog), recorded from before the notebook is opened."""
    return labdriver.ConsoleLog(page)


@pytest.fixture(scope="session")
def screenshot_dir() -> Path:
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    return SCREENSHOT_DIR
