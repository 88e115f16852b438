"""`validate` and `resolve` answer from a cache keyed by the file's bytes: the same output as a
fresh check, and a miss whenever the file, the referenced variables or the arguments change."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, cache: Path | None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("VOICEROUTER_ROUTES", "DEEPGRAM_API_KEY")}
    base.pop("VOICEROUTER_CACHE_DIR", None)
    extra = {"VOICEROUTER_CACHE_DIR": str(cache)} if cache else {"VOICEROUTER_NO_CACHE": "1"}
    return subprocess.run([sys.executable, "-m", "voicerouter", *args], capture_output=True, text=True, timeout=120,
                          env=base | extra | (env or {}))


def test_cached_answers_equal_fresh_ones(tmp_path, example_routes):
    cache = tmp_path / "cache"
    commands = [
        ("validate", str(example_routes)),
        ("validate", str(example_routes), "--format", "github", "--strict"),
        ("validate", str(example_routes), "--json", "--ignore", "VR5"),
        ("resolve", "--routes", str(example_routes), "--tenant", "globex", "--session-id", "s-9", "--json"),
        ("resolve", "--routes", str(example_routes), "--tenant", "acme", "--region", "eu-west-1", "--session-id", "s-1"),
        ("resolve", "--routes", str(example_routes), "--flag", "nope", "--session-id", "s-2"),
    ]
    for args in commands:
        fresh = run(*args, cache=None)
        first, second = run(*args, cache=cache), run(*args, cache=cache)
        for got in (first, second):
            assert (got.returncode, got.stdout, got.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr), args
    assert len(list(cache.glob("*.json"))) == 1 + 3  # one per file for validate (filters apply after), one per resolve


def test_a_miss_when_the_file_or_the_environment_changes(tmp_path):
    cache = tmp_path / "cache"
    table = tmp_path / "routes.yaml"
    table.write_text("providers:\n  s: {type: pocketsphinx}\n  t: {type: piper}\n"
                     "  dg: {type: deepgram, kind: stt, api_key: '${DEEPGRAM_API_KEY}'}\n"
                     "defaults: {stt: [dg, s], tts: [t]}\n")
    unset = run("validate", str(table), "--json", cache=cache)
    assert [f["code"] for f in json.loads(unset.stdout)["findings"]] == ["unset-env"]
    set_ = run("validate", str(table), "--json", cache=cache, env={"DEEPGRAM_API_KEY": "k"})
    assert json.loads(set_.stdout)["findings"] == []
    table.write_text(table.read_text().replace("[dg, s]", "[dgg, s]"))
    broken = run("validate", str(table), cache=cache, env={"DEEPGRAM_API_KEY": "k"})
    assert broken.returncode == 1 and "did you mean 'dg'?" in broken.stdout


def test_a_split_without_session_id_is_never_served_from_the_cache(tmp_path, example_routes):
    cache = tmp_path / "cache"
    picks = set()
    for _ in range(6):
        plan = json.loads(run("resolve", "--routes", str(example_routes), "--tenant", "globex", "--json", cache=cache).stdout)
        picks.add(plan["session_id"])
        assert plan["stages"]["tts"]["picked"] == plan["tts"][0]
    assert len(picks) == 6  # a fresh session id (and its own sticky pick) every time
    plain = json.loads(run("resolve", "--routes", str(example_routes), "--tenant", "acme", "--json", cache=cache).stdout)
    again = json.loads(run("resolve", "--routes", str(example_routes), "--tenant", "acme", "--json", cache=cache).stdout)
    assert plain["session_id"] != again["session_id"] and {**plain, "session_id": ""} == {**again, "session_id": ""}
