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
    assert leaks(outputs) == []


def leaks(outputs: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """(where, secret, form) of every form of every marker found in the outputs."""
    return [
        (where, name, form)
        for where, text in outputs
        for name, marker in MARKERS.items()
        for form in leaked_forms(marker)
        if form in text
    ]


def written_files(root: Path, *skip: Path) -> list[tuple[str, str]]:
    files = [p for p in root.rglob("*") if p.is_file() and p not in skip]
    return [(str(p), p.read_bytes().decode("latin-1")) for p in files]


# Live sessions run on this machine's CPU: the local engines are slow there, not down (the hostile
# providers fail at once and hand over to them).
LIVE = "  resilience: {retries: 0, first_result_timeout_ms: 15000, stall_timeout_ms: 10000, turn_deadline_ms: 60000}\n"


def live_table(url: str, *, phone: bool = False) -> str:
    text = table(url).replace("  resilience: {retries: 0}\n", LIVE)
    if phone:  # phone audio comes in 20 ms frames
        text = text.replace(LIVE, LIVE + "  vad: {frame_ms: 20, start_ms: 60}\n")
    return text


@pytest.mark.slow
@pytest.mark.parametrize("tenant", ["acme", "hook"])  # the openai-chat agent, then the webhook agent
def test_no_form_of_any_secret_leaves_a_live_run(tmp_path, hostile, tenant):
    sys.path.insert(0, str(ROOT / "tests" / "alsa"))
    from virtual_audio import VirtualAudio, requires_alsa

    if requires_alsa.args[0]:
        pytest.skip(requires_alsa.kwargs["reason"])
    from voicerouter.audio.io import read_audio

    routes = tmp_path / "routes.yaml"
    routes.write_text(live_table(hostile))
    before = Hostile.count
    mic = read_audio(ROOT / "samples" / "hello.wav").pcm + bytes(16000 * 2 * 40)  # outlasts --duration
    with VirtualAudio(tmp_path, mic, block_frames=480) as audio:
        env = {k: v for k, v in audio.env().items() if k not in ("VOICEROUTER_ROUTES", "VOICEROUTER_DEBUG")}
        env |= {**MARKERS, "OTEL_TRACES_EXPORTER": "console", "COLUMNS": "200"}
        out = tmp_path / "out"
        proc = subprocess.run(
            [sys.executable, "-m", "voicerouter", "run", "--routes", str(routes), "--tenant", tenant, "--json",
             "--duration", "20", "--out", str(out)],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
        )
    assert proc.returncode in (0, 1, 3), proc.stderr
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert any(e["type"] == "failover" for e in events), proc.stdout  # the hostile providers were tried
    assert Hostile.count > before
    assert (out / "events.jsonl").exists()
    outputs = [("run stdout", proc.stdout), ("run stderr", proc.stderr), *written_files(tmp_path, routes)]
    assert leaks(outputs) == []


@pytest.mark.slow
async def test_no_form_of_any_secret_leaves_serve(tmp_path, hostile):
    """A Twilio call (the carrier's auth token a marker too) and a /v1/sessions call through the
    hostile providers: serve's stdout and stderr, its event logs, /status and /metrics."""
    import aiohttp

    sys.path.insert(0, str(ROOT / "tests" / "serve"))
    from serve_helpers import serve

    from voicerouter.load import CallPlan, Target, load_fixture, place_call

    token = "cnryTwilioToken4Fs8Gh2Kq"
    markers = {**MARKERS, "TWILIO_AUTH_TOKEN": token}
    before = Hostile.count
    hello = load_fixture(ROOT / "samples" / "hello.wav")
    env = {**markers, "DG_KEY": None, "CA_KEY": None, "OTEL_TRACES_EXPORTER": "console"}
    async with serve(tmp_path, live_table(hostile, phone=True), env=env) as server, aiohttp.ClientSession() as http:
        for tenant in ("acme", "hook"):
            target = Target(server.url, "twilio", tenant=tenant, twilio_auth_token=token)
            result = await place_call(http, target, CallPlan(hello.pcm, listen_s=45))
            assert result.outcome == "answered", result.error
        async with http.ws_connect(server.url.replace("http://", "ws://") + "/v1/sessions?tenant=hook") as ws:
            await ws.send_bytes(bytes(16000 * 2))  # a second of silence, then hang up
            await ws.close()
        pages = []
        for page in ("/status", "/metrics"):
            async with http.get(server.url + page) as response:
                pages.append((page, await response.text()))
        server.signal()
        code = await server.wait()
        stdout = (await server.proc.stdout.read()).decode()  # type: ignore[union-attr]
    assert code == 0, "".join(server.stderr)
    assert Hostile.count > before
    assert list(server.out.glob("*.events.jsonl"))
    outputs = [("serve stdout", stdout), ("serve stderr", "".join(server.stderr)), *pages,
               *written_files(tmp_path, tmp_path / "routes.yaml")]
    found = [(where, name, form) for where, text in outputs for name, marker in markers.items()
             for form in leaked_forms(marker) if form in text]
    assert found == []
