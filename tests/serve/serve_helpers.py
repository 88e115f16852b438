"""A real `voicerouter serve` process on a free loopback port, and routing tables for it."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from voicerouter.load import Target

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
KEY = "sk-serve-canary-0042"
TOKEN = "twilio-auth-token-canary-77"
HEARD = "i would like to pay my bill today"
NUMBER = "+15550100123"  # dialled on calls in the tests: cloud_table's numbers route it to tenant acme


def cloud_table(dg_url: str, tts_url: str, extra: str = "") -> str:
    """Emulated Deepgram STT (a fixed transcript) and Cartesia TTS (a tone): cheap and deterministic."""
    return f"""\
version: 1
providers:
  dg:   {{type: deepgram, kind: stt, model: nova-3, api_key: "${{DG_KEY}}", base_url: "{dg_url}"}}
  cart: {{type: cartesia, voice: v-1, api_key: "${{CA_KEY}}", base_url: "{tts_url}"}}
defaults:
  stt: [dg]
  tts: [cart]
  # Generous deadlines: on a loaded machine an emulator (Piper in particular) is slow, not down.
  resilience: {{retries: 0, first_result_timeout_ms: 10000, turn_deadline_ms: 30000}}
routes:
  - name: acme
    match: {{tenant: acme}}
numbers:
  "+15550100*": {{tenant: acme, region: us-east-1}}
{extra}"""


LOCAL_TABLE = """\
version: 1
providers:
  local-stt: {type: pocketsphinx}
  local-tts: {type: piper}
defaults:
  stt: [local-stt]
  tts: [local-tts]
  agent: echo
  resilience: {first_result_timeout_ms: 15000, stall_timeout_ms: 10000, turn_deadline_ms: 60000}
  vad: {frame_ms: 20, start_ms: 60}     # phone audio comes in 20 ms frames
  barge_in: {min_speech_ms: 80}
routes:
  - name: local
    match: {tenant: acme}
"""


class Server:
    def __init__(self, proc: asyncio.subprocess.Process, url: str, out: Path) -> None:
        self.proc = proc
        self.url = url
        self.out = out
        self.stderr: list[str] = []

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    async def wait(self, timeout: float = 60) -> int:
        async with asyncio.timeout(timeout):
            return await self.proc.wait()


def twilio_target(server: Server) -> Target:
    """Twilio calls to NUMBER on this server, signed with the auth token it was started with."""
    return Target(server.url, "twilio", to=NUMBER, twilio_auth_token=TOKEN)


@asynccontextmanager
async def serve(tmp_path: Path, table: str, *args: str, env: dict[str, str] | None = None) -> AsyncIterator[Server]:
    routes = tmp_path / "routes.yaml"
    routes.write_text(table)
    out = tmp_path / "out"
    full_env = {**os.environ, "DG_KEY": KEY, "CA_KEY": KEY, "TWILIO_AUTH_TOKEN": TOKEN, **(env or {})}
    full_env = {k: v for k, v in full_env.items() if v is not None and v != ""}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voicerouter", "serve", "--routes", str(routes), "--port", "0", "--out", str(out), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=full_env,
    )
    lines: list[str] = []
    url = None
    try:
        async with asyncio.timeout(120):
            while url is None:
                raw = await proc.stderr.readline()  # type: ignore[union-attr]
                if not raw:
                    raise RuntimeError("serve exited: " + "".join(lines))
                line = raw.decode()
                lines.append(line)
                if found := re.search(r"listening on (http://\S+)", line):
                    url = found.group(1)
        server = Server(proc, url, out)
        server.stderr = lines

        async def pump() -> None:
            while raw := await proc.stderr.readline():  # type: ignore[union-attr]
                lines.append(raw.decode())

        pump_task = asyncio.create_task(pump())
        try:
            yield server
        finally:
            pump_task.cancel()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
