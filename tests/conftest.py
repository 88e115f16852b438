"""Shared test fixtures: paths to the repository's samples and example table."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# A shell without job control starts background commands with SIGINT ignored, and an ignored signal
# stays ignored across exec: the commands the tests start would then never see the Ctrl-C some tests
# send them. The test process takes Python's own handler back, so its children start with the default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
# The project's own pytest plugin (installed as a pytest11 entry point; listed here too so the
# tests run from a checkout that is not installed).
pytest_plugins = ["voicerouter.testing.pytest_plugin"]


@pytest.fixture(scope="session", autouse=True)
def private_cli_cache(tmp_path_factory):
    """`validate`/`resolve` cache their answers; the tests' go to a temporary folder, not ~/.cache."""
    import os

    previous = os.environ.get("VOICEROUTER_CACHE_DIR")
    os.environ["VOICEROUTER_CACHE_DIR"] = str(tmp_path_factory.mktemp("voicerouter-cache"))
    yield
    if previous is None:
        os.environ.pop("VOICEROUTER_CACHE_DIR", None)
    else:
        os.environ["VOICEROUTER_CACHE_DIR"] = previous


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
