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
