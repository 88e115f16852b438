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


async def evaluate(http: aiohttp.ClientSession, devtools: str, expression: str) -> object:
    """Run `expression` in the page (Chrome DevTools Protocol) and return its value."""
    async with http.get(f"{devtools}/json/list") as r:
        pages = [p for p in await r.json() if p.get("type") == "page"]
    async with http.ws_connect(pages[0]["webSocketDebuggerUrl"]) as ws:
        await ws.send_json({"id": 1, "method": "Runtime.evaluate", "params": {"expression": expression, "returnByValue": True}})
        async for msg in ws:
            data = json.loads(msg.data)
            if data.get("id") == 1:
                return data["result"]["result"].get("value")
    return None


async def page_state(http: aiohttp.ClientSession, devtools: str) -> dict:
    value = await evaluate(http, devtools, "JSON.stringify(window.voicerouter || null)")
    return json.loads(value) or {} if isinstance(value, str) else {}


async def run_page(tmp_path, http: aiohttp.ClientSession, page_url: str, done, then=None) -> dict:
    """Open `page_url` in headless Chromium with speech as its microphone; the page's state once
    `done(state)`; then, if given, `await then(devtools)` and the state once it returns."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    speech = load_fixture(SAMPLES / "hello.wav").pcm + bytes(16000 * 2 * 3)  # then silence (the file loops)
    wav = tmp_path / "speech.wav"
    sf.write(wav, np.frombuffer(speech, dtype="<i2"), 16000, subtype="PCM_16")
    profile = tmp_path / "profile"
    profile.mkdir()
    browser = subprocess.Popen([
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={wav}",
        "--disable-background-networking", "--disable-component-update", "--no-first-run",
        "--autoplay-policy=no-user-gesture-required", f"--user-data-dir={profile}", "--remote-debugging-port=0",
        page_url,
    ], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async with asyncio.timeout(30):
            while not (profile / "DevToolsActivePort").exists():
                await asyncio.sleep(0.1)
        devtools = f"http://127.0.0.1:{(profile / 'DevToolsActivePort').read_text().split()[0]}"
        state: dict = {}
        async with asyncio.timeout(60):  # on timeout, `state` shows how far the page got
            while not done(state):
                await asyncio.sleep(0.5)
                with contextlib.suppress(aiohttp.ClientError, KeyError, IndexError):
                    state = await page_state(http, devtools)
        if then is not None:
            async with asyncio.timeout(60):
                state = await then(devtools)
        return state
    finally:
        browser.terminate()
        browser.wait(10)


def replied(state: dict) -> bool:
    return bool(state.get("replies") and state.get("playedSeconds", 0) > 0.5 and state.get("marksEchoed"))


async def test_browser_page_round_trip_in_headless_chromium(tmp_path):
    async with emulate("deepgram", api_key=KEY, transcript=HEARD) as dg, emulate("cartesia", api_key=KEY) as ca, \
            serve(tmp_path, cloud_table(dg.url, ca.url)) as server, aiohttp.ClientSession() as http:
        state = await run_page(tmp_path, http, f"{server.url}/?tenant=acme&autostart=1", replied)
    assert state["error"] is None and state["route"] == "acme"
    assert HEARD in state["transcripts"]
    assert f"You said: {HEARD}." in state["replies"]
    # The reply was played by the page (it echoed the marks after playing), and the server logged the session.
    logs = list(server.out.glob("ws-*.events.jsonl"))
    assert logs, list(server.out.iterdir())
    events = [json.loads(line) for line in logs[0].read_text().splitlines()]
    assert {"session_start", "final_transcript", "tts_first_audio"} <= {e["type"] for e in events}


async def test_browser_page_with_a_session_token(tmp_path):
    """With auth on, the operator's backend mints a token and links the page with it in the fragment."""
    secret = "browser-secret-canary-8086"
    table = 'serve: {auth_token: "${VR_SECRET}"}\n'
    async with emulate("deepgram", api_key=KEY, transcript=HEARD) as dg, emulate("cartesia", api_key=KEY) as ca, \
            serve(tmp_path, cloud_table(dg.url, ca.url, table), env={"VR_SECRET": secret}) as server, \
            aiohttp.ClientSession() as http:
        async with http.post(server.url + "/v1/tokens", json={"tenant": "acme"},
                             headers={"Authorization": f"Bearer {secret}"}) as r:
            token = (await r.json())["token"]
        refused = await run_page(tmp_path / "without", http, f"{server.url}/?autostart=1",
                                 lambda state: state.get("error"))
        assert "access token" in refused["error"] and refused["route"] is None

        async def press_keys(devtools: str) -> dict:
            # The keypad: 4, 2, # is a keypad turn, answered like speech.
            for key in "42#":
                await evaluate(http, devtools, f"document.querySelector('[data-key=\"{key}\"]').click()")
            state: dict = {}
            while "You said: 42." not in state.get("replies", []):
                await asyncio.sleep(0.3)
                state = await page_state(http, devtools)
            return state

        state = await run_page(tmp_path / "with", http, f"{server.url}/?autostart=1#token={token}", replied, press_keys)
    assert state["error"] is None and state["route"] == "acme"  # the token's tenant
    assert f"You said: {HEARD}." in state["replies"]
    assert state["keys"] == ["4", "2", "#"] and "42" in state["transcripts"]
