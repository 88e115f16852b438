"""Help, completion and verbosity: what users of gh, ruff or uv expect of a command line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from voicerouter.cli.app import COMMANDS


def run(*args: str, env: dict[str, str] | None = None, cwd=None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != "VOICEROUTER_ROUTES"}
    return subprocess.run(
        [sys.executable, "-m", "voicerouter", *args], capture_output=True, text=True, timeout=120,
        env=base | {"COLUMNS": "120"} | (env or {}), cwd=cwd,
    )


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_short_help_and_plain_metavars(command):
    args = [command] if command else []
    short, long = run(*args, "-h"), run(*args, "--help")
    assert short.returncode == long.returncode == 0, short.stderr
    assert short.stdout == long.stdout and "Usage: voicerouter" in short.stdout
    for noise in ("<bool>", "<list[", "<str>", "<path>", "<int>", "{"):
        assert noise not in short.stdout, (command, noise)


def test_argument_metavars_read_like_other_tools():
    out = run("validate", "-h").stdout
    assert "Usage: voicerouter validate [OPTIONS] FILE..." in out
    assert "--format" in out and "text|json|github" in out


@pytest.mark.parametrize("shell, marker", [("bash", "complete "), ("zsh", "compdef"), ("fish", "complete --command voicerouter")])
def test_completion_scripts(shell, marker):
    # Typer detects the shell from the parent process; its test switch takes the shell as a value.
    proc = run("--show-completion", shell, env={"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"})
    assert proc.returncode == 0, proc.stderr
    assert marker in proc.stdout and "_VOICEROUTER_COMPLETE" in proc.stdout


def test_completion_completes_commands():
    proc = run(env={"_VOICEROUTER_COMPLETE": "complete_bash", "COMP_WORDS": "voicerouter val", "COMP_CWORD": "1"})
    assert "validate" in proc.stdout.split()


def test_quiet_drops_notes(tmp_path):
    sample = tmp_path / "silence.wav"
    import numpy as np
    import soundfile as sf

    sf.write(sample, np.zeros(8000, dtype="int16"), 16000)
    normal = run("replay", str(sample), "--json", cwd=tmp_path)
    quiet = run("-q", "replay", str(sample), "--json", cwd=tmp_path)
    assert normal.returncode == quiet.returncode == 0, quiet.stderr
    assert "built-in offline table" in normal.stderr and quiet.stderr == ""
