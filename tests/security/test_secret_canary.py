"""Canary: every referenced secret is set to a marker, every command runs against a hostile server
that echoes whatever credentials it receives in every encoding (JSON and long plain bodies, the
key straddling the 200-character cut), and no output or written file holds any form of a marker."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import pytest

ROOT = Path(__file__).resolve().parents[2]

MARKERS = {
    "DEEPGRAM_API_KEY": "cnryDeepgramKey7Q2vX9pL4mZ8",
    "ELEVENLABS_API_KEY": "cnryElevenKey3Hk8sW1nB6yT0",
    "OPENAI_API_KEY": "cnryOpenaiKey5Jd2rF7cV9eU4",
    "CHAT_KEY": "cnryChatKey8Wm3tG5hN1aQ6z",
    "URL_PASS": "cnry+Pass=Word~4Rt7Yk2",
    "URL_TOKEN": "cnryUrlToken6Bv1Xc9Lp3",
    "HOOK_KEY": "cnryHookKey2Nf8Ds4Ja7",
}


def encodings(value: str) -> list[str]:
    """How `value` may be echoed: raw, URL-encoded, hex, base64 (std/url-safe, padded or not,
    alone or after other text, as in `Bearer KEY` or `user:PASS`)."""
    raw = value.encode()
    forms = [value, quote(value, safe=""), quote(value, safe="").lower(), raw.hex(), raw.hex().upper()]
    for prefix in (b"", b"a", b"ab", b"user:", b"Bearer "):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            forms.append(encode(prefix + raw).decode())
    return forms


def leaked_forms(marker: str) -> list[str]:
    """What must never appear: the marker and its encodings, and any 3-byte-aligned base64 run of
    its bytes (the part of a base64 echo that depends on the marker alone), and its first 10 characters."""
    raw = marker.encode()
    forms = [marker, marker[:10], quote(marker, safe=""), raw.hex(), raw.hex().upper()]
    for shift in (0, 1, 2):
        core = raw[shift:][: (len(raw) - shift) // 3 * 3]
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            forms.append(encode(core).decode())
    return forms


class Hostile(BaseHTTPRequestHandler):
    """Answers every request with an error that echoes every credential it was sent."""

    count = 0

    def log_message(self, *args) -> None:  # quiet
        pass

    def echo(self) -> str:
        seen = [self.path] + [v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")]
        parts = []
        for value in seen:
            for word in [value, *value.split()]:
                parts += encodings(word)
        return " ".join(parts)

    def reply(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        echo = self.echo() + " " + body[:2000].decode("utf-8", "replace")
        Hostile.count += 1
        if Hostile.count % 2:
            text = "x" * 190 + echo  # a key right across the 200-character cut of plain bodies
            payload, ctype = text.encode(), "text/plain"
        else:
            payload = json.dumps({"error": {"message": echo}, "err_msg": echo, "detail": echo, "message": echo}).encode()
            ctype = "application/json"
        self.send_response(401 if Hostile.count % 3 == 0 else 400)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = reply


@pytest.fixture
def hostile():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def table(url: str) -> str:
    host = url.removeprefix("http://")
    return f"""\
version: 1
providers:
  local-stt: {{type: pocketsphinx}}
  local-tts: {{type: piper}}
  dg: {{type: deepgram, kind: stt, api_key: "${{DEEPGRAM_API_KEY}}", base_url: "{url}"}}
  oai: {{type: openai, kind: stt, api_key: "${{OPENAI_API_KEY}}", base_url: "{url}/v1"}}
  compat: {{type: openai-compatible, kind: stt, base_url: "http://user:${{URL_PASS}}@{host}/${{URL_TOKEN}}/v1"}}
  eleven: {{type: elevenlabs, kind: tts, api_key: "${{ELEVENLABS_API_KEY}}", base_url: "{url}"}}
defaults:
  stt: [dg, oai, compat, local-stt]
  tts: [eleven, local-tts]
  agent:
    type: openai-chat
    model: gpt-4o-mini
    base_url: "{url}/${{URL_TOKEN}}/v1"
    api_key: "${{CHAT_KEY}}"
    fallback_reply: Sorry.
  resilience: {{retries: 0}}
routes:
  - name: hook
    match: {{tenant: hook}}
    agent: {{type: webhook, url: "{url}/hook/${{URL_TOKEN}}", headers: {{X-Api-Key: "${{HOOK_KEY}}"}}}}
"""


def run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "voicerouter", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_no_form_of_any_secret_reaches_any_output(tmp_path, hostile):
    routes = tmp_path / "routes.yaml"
    routes.write_text(table(hostile))
    env = {**os.environ, **MARKERS, "OTEL_TRACES_EXPORTER": "console", "COLUMNS": "200",
           "VOICEROUTER_CACHE_DIR": str(tmp_path / "cache")}  # cached command outputs are written files too
    out, timelines = tmp_path / "out", tmp_path / "timelines"
    sample = str(ROOT / "samples" / "hello.wav")
    expect = tmp_path / "expect.yaml"
    expect.write_text("'*':\n  turns: 1\n")
    commands = [
        ["validate", str(routes)],
        ["validate", str(routes), "--json"],
        ["resolve", "--routes", str(routes)],
        ["resolve", "--routes", str(routes), "--json"],
        ["resolve", "--routes", str(routes), "--tenant", "hook", "--json"],
        ["check", "--routes", str(routes), "--all"],
        ["check", "--routes", str(routes), "--all", "--json"],
        ["replay", "--routes", str(routes), sample, "--out", str(out), "--expect", str(expect),
         "--junit", str(tmp_path / "junit.xml"), "--timeline", str(timelines)],
        ["replay", "--routes", str(routes), sample, "--json", "--tenant", "hook", "--out", str(out / "hook")],
        ["report", str(out), "--turns", "--text-timeline", "--otel"],
        ["report", str(out), "--json", "--by", "provider"],
    ]
    outputs: list[tuple[str, str]] = []
    for args in commands:
        proc = run(args, tmp_path, env)
        assert "internal error" not in proc.stderr, (args, proc.stderr)
        outputs.append((" ".join(args[:2]) + " stdout", proc.stdout))
        outputs.append((" ".join(args[:2]) + " stderr", proc.stderr))
    assert Hostile.count > 10  # the providers really talked to the hostile server
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p != routes]
    assert any(p.suffix == ".jsonl" for p in written) and (tmp_path / "junit.xml").exists()
    for path in written:
        outputs.append((str(path), path.read_bytes().decode("latin-1")))
    hits = [
        (where, name, form)
        for where, text in outputs
        for name, marker in MARKERS.items()
        for form in leaked_forms(marker)
        if form in text
    ]
    assert hits == []
