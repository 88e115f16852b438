"""`voicerouter init`: a table that validates, samples with expectations, a CI job; never overwrites."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "VOICEROUTER_ROUTES"}
    return subprocess.run([sys.executable, "-m", "voicerouter", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def test_scaffold_validates_and_is_never_overwritten(tmp_path):
    proc = run("init", "project", "--no-audio", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    root = tmp_path / "project"
    for name in ("routes.yaml", "routes.schema.json", "samples/expectations.yaml", ".github/workflows/voicerouter.yml"):
        assert (root / name).is_file(), name
        assert f"created  {Path('project') / name}" in proc.stdout
    assert run("validate", "routes.yaml", "--strict", cwd=root).returncode == 0
    assert "acme-cloud" in (root / "routes.yaml").read_text()  # the commented cloud route
    workflow = yaml.safe_load((root / ".github/workflows/voicerouter.yml").read_text())
    steps = [s.get("run", "") for s in workflow["jobs"]["routes"]["steps"]]
    assert "voicerouter validate routes.yaml --format github --strict" in steps
    (root / "routes.yaml").write_text("# mine\n")
    again = run("init", ".", "--no-audio", cwd=root)
    assert again.returncode == 0 and "kept     routes.yaml (exists)" in again.stdout
    assert (root / "routes.yaml").read_text() == "# mine\n"
    assert "nothing to do" in again.stdout


@pytest.mark.slow
def test_scaffold_replays_its_own_sample(tmp_path):
    assert run("init", "--no-audio", cwd=tmp_path).returncode == 0
    proc = run("init", cwd=tmp_path)  # only the sample is new
    assert "created  samples/hello.wav" in proc.stdout and proc.stdout.count("kept") == 4
    replay = run("replay", "samples/hello.wav", "--routes", "routes.yaml", "--expect", "samples/expectations.yaml",
                 cwd=tmp_path)
    assert replay.returncode == 0, replay.stdout + replay.stderr
