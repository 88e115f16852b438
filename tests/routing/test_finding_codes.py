"""Finding rules: stable ids and names, every one registered and documented, ruff-style selection,
and "did you mean" for the names people mistype."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from voicerouter.routing.findings import RULES
from voicerouter.routing.validate import validate_file

ROOT = Path(__file__).resolve().parents[2]
EMITTED = re.compile(r"""(?:out\.add|Finding)\(\s*"(?:error|warning|info)",\s*"([a-z-]+)"|code = "([a-z-]+)"|"(insecure-url|bad-url)\"""")


def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_KEY", "_TOKEN"))}
    return subprocess.run([sys.executable, "-m", "voicerouter", *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd, env=base | (env or {}))


def test_every_emitted_rule_is_registered_and_documented():
    emitted = set()
    for path in (ROOT / "voicerouter").rglob("*.py"):
        for match in EMITTED.finditer(path.read_text()):
            emitted.add(next(g for g in match.groups() if g))
    names = {r.name for r in RULES}
    assert emitted and emitted <= names, emitted - names
    ids = [r.id for r in RULES]
    assert len(set(ids)) == len(ids) and len(names) == len(RULES)
    readme = (ROOT / "README.md").read_text()
    for rule in RULES:
        assert re.search(rf"\| `{rule.id}` \| `{rule.name}` \|", readme), f"{rule.id} {rule.name} not in the README"


def test_readme_ci_snippet_passes_as_written_on_the_example_without_keys(tmp_path):
    readme = (ROOT / "README.md").read_text()
    line = next(x for x in readme.splitlines() if "run: voicerouter validate" in x)
    command = line.split("run: ", 1)[1].strip()
    assert command == "voicerouter validate routes/*.yaml --format github --strict"
    (tmp_path / "routes").mkdir()
    shutil.copy(ROOT / "routes.example.yaml", tmp_path / "routes" / "routes.yaml")
    args = command.split()[1:]
    args[1] = str(tmp_path / "routes" / "routes.yaml")  # the shell's glob
    proc = run(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "::notice " in proc.stdout and "VR501 unset-env" in proc.stdout and "::error" not in proc.stdout


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "routes.yaml"
    path.write_text(text)
    return path


TYPOS = (
    "version: 1\n"
    "providers:\n"
    "  dg: {type: deepgrm, kind: stt, api_key: $DEEPGRAM_API_KEY}\n"
    "  local-tts: {type: piper}\n"
    "  local-stt: {type: pocketsphinx}\n"
    "defaults:\n"
    "  stt: [dgg, local-stt]\n"
    "  tts: [local-tts]\n"
    "  turn: {silence: 500}\n"
    "routes:\n"
    "  - name: a\n"
    "    match: {tenants: acme}\n"
)


def test_did_you_mean(tmp_path):
    path = write(tmp_path, TYPOS)
    keys = {f.message for f in validate_file(path, env={}) if f.code == "unknown-key"}
    assert keys == {"unknown key defaults.turn.silence (did you mean 'silence_ms'?)",
                    "unknown key routes[0].match.tenants (did you mean 'tenant'?)"}
    fixed = write(tmp_path, TYPOS.replace("silence:", "silence_ms:").replace("tenants:", "tenant:"))
    messages = {f.code: f.message for f in validate_file(fixed, env={})}
    assert "unknown type 'deepgrm' (did you mean 'deepgram'?)" in messages["unknown-type"]
    assert "uses 'dgg', which is not defined under providers (did you mean 'dg'?)" in messages["unknown-provider"]
    assert messages["bare-env-ref"] == "api_key: '$DEEPGRAM_API_KEY' is not an environment reference; write \"${DEEPGRAM_API_KEY}\" (with braces)"


def test_select_and_ignore(tmp_path):
    path = write(tmp_path, TYPOS.replace("silence:", "silence_ms:").replace("tenants:", "tenant:"))
    every = json.loads(run("validate", str(path), "--json").stdout)
    assert {f["code"] for f in every["findings"]} == {"unknown-type", "unknown-provider", "bare-env-ref", "unused-provider"}
    assert every["ok"] is every["valid"] is False
    only = json.loads(run("validate", str(path), "--json", "--select", "VR2").stdout)
    assert {f["id"] for f in only["findings"]} == {"VR201", "VR205", "VR210"}
    rest = json.loads(run("validate", str(path), "--json", "--ignore", "VR2,bare-env-ref").stdout)
    assert rest["findings"] == [] and rest["ok"] is True
    bad = run("validate", str(path), "--ignore", "unknown-provders")
    assert bad.returncode == 2 and "did you mean 'unknown-provider'?" in bad.stderr


def test_text_names_rule_id_and_name(tmp_path):
    path = write(tmp_path, TYPOS.replace("silence:", "silence_ms:").replace("tenants:", "tenant:"))
    proc = run("validate", str(path))
    assert proc.returncode == 1
    assert f"{path}:3:14: error: provider 'dg': unknown type 'deepgrm' (did you mean 'deepgram'?) [VR201 unknown-type]" in proc.stdout
    assert "\x1b[" not in proc.stdout  # no colour in a pipe
    colour = run("validate", str(path), env={"TTY_COMPATIBLE": "1", "FORCE_COLOR": "1"})
    assert "\x1b[" in colour.stdout
    plain = run("validate", str(path), env={"TTY_COMPATIBLE": "1", "NO_COLOR": "1"})
    assert "\x1b[31" not in plain.stdout and "\x1b[33" not in plain.stdout


@pytest.mark.parametrize("flag, hint", [("s2s:true", "write --flag s2s or --flag s2s=true"),
                                        ("beta=maybe", "value must be true or false")])
def test_bad_flag_syntax(flag, hint):
    proc = run("resolve", "--routes", str(ROOT / "routes.example.yaml"), "--flag", flag)
    assert proc.returncode == 2 and hint in proc.stderr


def test_flag_no_route_uses_is_a_warning():
    proc = run("resolve", "--routes", str(ROOT / "routes.example.yaml"), "--flag", "s2", "--json")
    assert proc.returncode == 0
    assert "warning: flag 's2' is not used by any route" in proc.stderr and "did you mean 's2s'?" in proc.stderr
    used = run("resolve", "--routes", str(ROOT / "routes.example.yaml"), "--flag", "s2s", "--json")
    assert "not used by any route" not in used.stderr
