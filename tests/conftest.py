"""Shared test fixtures: paths to the repository's samples and example table."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def repo_root() -> Path:
    return ROOT


@pytest.fixture
def example_routes() -> Path:
    return ROOT / "routes.example.yaml"
