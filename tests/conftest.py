"""Shared test fixtures: paths to the repository's samples and example table."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The project's own pytest plugin (installed as a pytest11 entry point; listed here too so the
# tests run from a checkout that is not installed).
pytest_plugins = ["voicerouter.testing.pytest_plugin"]


@pytest.fixture
def repo_root() -> Path:
    return ROOT


@pytest.fixture
def example_routes() -> Path:
    return ROOT / "routes.example.yaml"


# Property-based tests are reproducible: a fixed derivation of examples (no random seed, no example
# database on disk), so CI and a laptop see the same cases. HYPOTHESIS_PROFILE=explore for fresh ones.
try:
    from hypothesis import settings as _hypothesis_settings

    _hypothesis_settings.register_profile("repeatable", derandomize=True, database=None, print_blob=True)
    _hypothesis_settings.register_profile("explore", derandomize=False)
    import os as _os

    _hypothesis_settings.load_profile(_os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))
except ModuleNotFoundError:  # the dev extra is not installed
    pass
