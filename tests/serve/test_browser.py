"""The browser page at `/` in a real headless Chromium: its fake microphone plays a speech file,
the page streams it to /v1/sessions, and shows the route, the transcript and the reply it played."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess

import aiohttp
import numpy as np
import pytest
import soundfile as sf
from serve_helpers import HEARD, KEY, SAMPLES, cloud_table, serve

from voicerouter.load import load_fixture
from voicerouter.testing import emulate

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package (scripts/setup.sh installs it)")


async def page_state(http: aiohttp.ClientSession, devtools: str) -> dict:
    async with http.get(f"{devtools}/json/list") as r:
        pages = [p for p in await r.json() if p.get("type") == "page"]
    async with http.ws_connect(pages[0]["webSocketDebuggerUrl"]) as ws:
        await ws.send_json({"id": 1, "method": "Runtime.evaluate",
                            "params": {"expression": "JSON.stringify(window.voicerouter || null)", "returnByValue": True}})
        async for msg in ws:
            data = json.loads(msg.data)
            if data.get("id") == 1:
                value = data["result"]["result"].get("value")
                return json.loads(value) or {} if value else {}
    return {}


async def test_browser_page_round_trip_in_headless_chromium(tmp_path):
    speech = load_fixture(SAMPLES / "hello.wav").pcm + bytes(16000 * 2 * 3)  # then silence (the file loops)
    wav = tmp_path / "speech.wav"
    sf.write(wav, np.frombuffer(speech, dtype="<i2"), 16000, subtype="PCM_16")
    profile = tmp_path / "profile"
    profile.mkdir()
    async with emulate("deepgram", api_key=KEY, transcript=HEARD) as dg, emulate("cartesia", api_key=KEY) as ca, \
            serve(tmp_path, cloud_table(dg.url, ca.url)) as server, aiohttp.ClientSession() as http:
        browser = subprocess.Popen([
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={wav}",
            "--disable-background-networking", "--disable-component-update", "--no-first-run",
            "--autoplay-policy=no-user-gesture-required", f"--user-data-dir={profile}", "--remote-debugging-port=0",
            f"{server.url}/?tenant=acme&autostart=1",
        ], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            async with asyncio.timeout(30):
                while not (profile / "DevToolsActivePort").exists():
                    await asyncio.sleep(0.1)
            devtools = f"http://127.0.0.1:{(profile / 'DevToolsActivePort').read_text().split()[0]}"
            state: dict = {}
            async with asyncio.timeout(60):  # on timeout, `state` shows how far the page got
                while not (state.get("replies") and state.get("playedSeconds", 0) > 0.5 and state.get("marksEchoed")):
                    await asyncio.sleep(0.5)
                    with contextlib.suppress(aiohttp.ClientError, KeyError, IndexError):
                        state = await page_state(http, devtools)
        finally:
            browser.terminate()
            browser.wait(10)
    assert state["error"] is None and state["route"] == "acme"
    assert HEARD in state["transcripts"]
    assert f"You said: {HEARD}." in state["replies"]
    # The reply was played by the page (it echoed the marks after playing), and the server logged the session.
    logs = list(server.out.glob("ws-*.events.jsonl"))
    assert logs, list(server.out.iterdir())
    events = [json.loads(line) for line in logs[0].read_text().splitlines()]
    assert {"session_start", "final_transcript", "tts_first_audio"} <= {e["type"] for e in events}
