"""The offline default route runs with no network at all: nothing is downloaded, no socket opened.

A fresh interpreter (so every model loads under the guard, none is cached from other tests) gets
a socket guard before voicerouter is imported: any attempt to resolve a name or connect anywhere
but a Unix socket is recorded and refused. Then it replays real speech on the built-in table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from voicerouter.testing.speech import word_error_rate

ROOT = Path(__file__).resolve().parents[2]
JFK_SAID = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."

GUARD = r"""
import socket, sys
attempts = []

def refuse(what):
    def blocked(*args, **kwargs):
        attempts.append(f"{what} {args[1:2] or args[:1]}")
        raise OSError(f"network disabled in this test: {what}")
    return blocked

_connect = socket.socket.connect
def connect(self, address):
    if self.family == getattr(socket, "AF_UNIX", None):
        return _connect(self, address)
    return refuse("connect")(self, address)

socket.socket.connect = connect
socket.socket.connect_ex = lambda self, address: connect(self, address)
socket.getaddrinfo = refuse("getaddrinfo")
socket.gethostbyname = refuse("gethostbyname")
socket.create_connection = refuse("create_connection")

import atexit
from voicerouter.cli.app import main
sys.argv = ["voicerouter", *sys.argv[1:]]
# The command ends the process itself (atexit handlers run, no interpreter finalization).
atexit.register(lambda: print("NETWORK-ATTEMPTS " + repr(attempts), file=sys.stderr))
main()
"""


@pytest.mark.slow
def test_the_offline_route_hears_real_speech_without_any_network(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "VOICEROUTER_ROUTES"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])  # this checkout
    env["HOME"] = str(tmp_path)  # no model cache of the user's to fall back on
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    proc = subprocess.run(
        [sys.executable, "-c", GUARD, "replay", str(ROOT / "tests" / "fixtures" / "jfk.flac"), "--json"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "NETWORK-ATTEMPTS []" in proc.stderr, proc.stderr
    session = json.loads(proc.stdout)["sessions"][0]
    assert session["errors"] == []
    heard = " ".join(turn["transcript"] for turn in session["turns"])
    assert word_error_rate(JFK_SAID, heard) <= 0.06, heard
    assert not list(tmp_path.rglob("*.bin")) and not list(tmp_path.rglob("*.onnx"))  # nothing fetched


def test_the_guard_sees_a_connection_attempt(tmp_path):
    # The guard itself must work, or the test above proves nothing.
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "version: 1\nproviders:\n  remote: {type: openai-compatible, kind: stt, base_url: 'https://192.0.2.1:9/v1'}\n"
        "  local-tts: {type: piper}\ndefaults: {stt: [remote], tts: [local-tts]}\nroutes:\n  - name: all\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", GUARD, "check", "--routes", str(routes), "--timeout-ms", "2000"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert "NETWORK-ATTEMPTS []" not in proc.stderr and "NETWORK-ATTEMPTS" in proc.stderr, proc.stderr


@pytest.mark.slow
async def test_the_offline_route_hears_real_speech_through_a_phone_line(tmp_path):
    import numpy as np
    import soundfile as sf

    from voicerouter.audio.io import read_audio
    from voicerouter.config.loader import builtin_routes
    from voicerouter.routing.plan import RouteContext
    from voicerouter.session.replay import replay_files
    from voicerouter.testing.speech import corpus_word_error_rate, moonshine_readings, phone_line

    # JFK, and readings of Beckett and Dickens that ship with the moonshine-voice wheel (MIT): the
    # benchmark's corpus, cut into turns by the route's VAD as a call would be.
    corpus = [(ROOT / "tests" / "fixtures" / "jfk.flac", JFK_SAID)]
    corpus += [(path, said) for _, path, said in moonshine_readings()]
    paths = []
    for source, _ in corpus:
        path = tmp_path / f"{source.stem}-8k.wav"
        sf.write(path, np.frombuffer(phone_line(read_audio(source).pcm, 16000), "<i2"), 8000, subtype="PCM_16")
        paths.append(path)
    results = await replay_files(paths, RouteContext(session_id="phone"), builtin_routes(), concurrency=2)
    heard = [" ".join(t.transcript for t in r.session.turns) for r in results]
    pairs = [(said, got) for (_, said), got in zip(corpus, heard, strict=True)]
    assert corpus_word_error_rate(pairs) <= 0.10, heard
