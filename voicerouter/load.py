"""`voicerouter load`: act as the carrier (or an app) against a `serve` deployment, many calls at once.

Each call does what Twilio, Telnyx or a WebSocket client would: sign and POST the voice webhook,
follow the TwiML/TeXML (`<Reject>` counts as refused), open the media stream, send the fixture's
audio in real time in 20 ms frames (mu-law for phone), then silence while it listens; it plays the
replies on its own clock, echoes marks when playback reaches them, empties its buffer on `clear`
(echoing the pending marks, as Twilio does), and keeps what it heard. The report has calls
answered/refused/failed, speech end -> first reply audio percentiles, the server's failovers
(from its /metrics), and the words PocketSphinx hears in the replies.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import os
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from voicerouter.audio.convert import frames, resample, rms_dbfs
from voicerouter.audio.g711 import PHONE_RATE
from voicerouter.session.keypad import key_schedule
from voicerouter.transports.base import WireMessage

Carrier = Literal["twilio", "telnyx", "ws"]
FRAME_MS = 20
VOICED_DBFS = -45.0  # a frame louder than this counts as speech (fixtures) or reply audio


@dataclass
class CallPlan:
    """What one call says: `pcm` (16 kHz PCM16), then optionally `barge` spoken over the reply."""

    pcm: bytes
    name: str = "fixture"
    barge: bytes | None = None
    barge_after_s: float = 0.6  # into the reply's audio
    listen_s: float = 12.0  # longest wait for replies after the caller's audio
    settle_s: float = 1.2  # quiet after the last reply audio that ends the call
    dtmf: list[tuple[float | None, str]] = field(default_factory=list)  # (at s, keys); None: after the audio


def dtmf_schedule(plan: CallPlan, audio_s: float) -> list[tuple[float, str]]:
    """Each key of the plan's --dtmf groups and when (seconds into the stream) it is pressed."""
    return key_schedule(plan.dtmf, audio_s)


@dataclass
class CallResult:
    index: int
    call_id: str
    outcome: Literal["answered", "refused", "failed"] = "failed"
    error: str | None = None
    close_code: int | None = None
    close_reason: str = ""
    heard: bytearray = field(default_factory=bytearray, repr=False)  # reply audio as played, at `rate`
    rate: int = PHONE_RATE
    latencies_s: list[float] = field(default_factory=list)  # speech end -> first reply audio
    clear_after_barge_s: float | None = None  # caller speech start (barge) -> `clear` received
    clears: int = 0
    clear_after_key_s: float | None = None  # a key pressed during a reply -> `clear` received
    keys_sent: str = ""
    marks_echoed: int = 0
    max_send_lag_s: float = 0.0
    events: list[dict[str, Any]] = field(default_factory=list)  # ws carrier: the session's events
    words: str = ""
    duration_s: float = 0.0  # media stream open -> closed


@dataclass
class LoadReport:
    calls: list[CallResult]
    failovers: float | None = None  # from the server's /metrics (delta over the run)
    wall_s: float = 0.0

    def count(self, outcome: str) -> int:
        return sum(1 for c in self.calls if c.outcome == outcome)

    def latencies(self) -> list[float]:
        return [x for c in self.calls for x in c.latencies_s]

    def percentiles(self) -> dict[str, float | None]:
        values = self.latencies()
        if not values:
            return {"p50": None, "p95": None, "p99": None}
        return {f"p{q}": float(np.percentile(values, q)) for q in (50, 95, 99)}

    def to_dict(self) -> dict[str, Any]:
        return {
            "calls": len(self.calls), "answered": self.count("answered"), "refused": self.count("refused"),
            "failed": self.count("failed"),
            "first_audio_s": {k: (None if v is None else round(v, 3)) for k, v in self.percentiles().items()},
            "failovers": self.failovers, "wall_s": round(self.wall_s, 2),
            "max_send_lag_ms": round(max((c.max_send_lag_s for c in self.calls), default=0.0) * 1000, 1),
            "results": [
                {"call_id": c.call_id, "outcome": c.outcome, "error": c.error, "close_code": c.close_code,
                 "close_reason": c.close_reason, "latencies_s": [round(x, 3) for x in c.latencies_s],
                 "reply_s": round(len(c.heard) / 2 / c.rate, 2), "clears": c.clears, "words": c.words,
                 "dtmf_sent": c.keys_sent,
                 "duration_s": round(c.duration_s, 2)}
                for c in self.calls
            ],
        }


@dataclass
class Target:
    url: str  # http://host:port of the server
    carrier: Carrier = "twilio"
    to: str = "+15550100000"
    from_: str = "+15550199999"
    tenant: str | None = None
    region: str | None = None
    flags: list[str] = field(default_factory=list)
    twilio_auth_token: str | None = None
    telnyx_private_key: Any = None  # an Ed25519PrivateKey
    session_token: str | None = None  # ws: the bearer credential /v1/sessions asks for


def voiced_end_s(pcm: bytes, rate: int = 16000) -> float:
    """Where the last speech frame of `pcm` ends (seconds), 0.0 for silence."""
    end = 0.0
    for i, frame in enumerate(frames(pcm, FRAME_MS, rate)):
        if rms_dbfs(frame) > VOICED_DBFS:
            end = (i + 1) * FRAME_MS / 1000
    return end


def voiced_start_s(pcm: bytes, rate: int = 16000) -> float:
    for i, frame in enumerate(frames(pcm, FRAME_MS, rate)):
        if rms_dbfs(frame) > VOICED_DBFS:
            return i * FRAME_MS / 1000
    return 0.0


class _Playout:
    """The carrier's playback buffer: plays reply audio in real time, echoes marks as it gets there."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.items: deque[tuple[str, Any]] = deque()  # ("audio", bytes) | ("mark", name)
        self.frame = rate * FRAME_MS // 1000 * 2

    def add_audio(self, pcm: bytes) -> None:
        self.items.append(("audio", pcm))

    def add_mark(self, name: str) -> None:
        self.items.append(("mark", name))

    def clear(self) -> list[str]:
        marks = [v for k, v in self.items if k == "mark"]
        self.items.clear()
        return marks

    def busy(self) -> bool:
        return any(k == "audio" for k, _ in self.items)

    def tick(self) -> tuple[bytes, list[str]]:
        """Play one frame: (audio played, marks reached)."""
        out = bytearray()
        marks: list[str] = []
        while self.items and (len(out) < self.frame or self.items[0][0] == "mark"):
            kind, value = self.items[0]
            if kind == "mark":
                marks.append(value)
                self.items.popleft()
                continue
            take = self.frame - len(out)
            out += value[:take]
            if len(value) > take:
                self.items[0] = ("audio", value[take:])
            else:
                self.items.popleft()
        return bytes(out), marks


async def place_call(http: Any, target: Target, plan: CallPlan, index: int = 0) -> CallResult:
    """One call through the target, start to hang-up."""
    call_id = ("CA" if target.carrier == "twilio" else "v3:") + uuid.uuid4().hex
    result = CallResult(index, call_id)
    try:
        stream_url, parameters = await _dial(http, target, call_id)
        if stream_url is None:
            result.outcome = "refused"
            return result
        await _stream(http, target, plan, result, stream_url, parameters)
    except Exception as exc:  # a broken call is a result, not the end of the load run
        result.outcome = "failed"
        result.error = f"{type(exc).__name__}: {exc}"[:300]
    return result


async def _dial(http: Any, target: Target, call_id: str) -> tuple[str | None, dict[str, str]]:
    """The webhook step: (media stream URL, its parameters), or (None, {}) when the call is rejected."""
    from urllib.parse import urlencode

    base = target.url.rstrip("/")
    query = {k: v for k, v in (("tenant", target.tenant), ("region", target.region)) if v}
    qs = urlencode([*query.items(), *(("flag", f) for f in target.flags)])
    if target.carrier == "ws":
        ws_base = "ws" + base[len("http"):] if base.startswith("http") else base
        return f"{ws_base}/v1/sessions?{qs}&rate=16000" if qs else f"{ws_base}/v1/sessions?rate=16000", {}
    if target.carrier == "twilio":
        from voicerouter.transports import twilio

        url = f"{base}/twilio/voice" + (f"?{qs}" if qs else "")
        form = twilio.call_params(call_id, target.to, target.from_)
        headers = {}
        if target.twilio_auth_token:
            headers[twilio.SIGNATURE_HEADER] = twilio.signature(target.twilio_auth_token, url, form)
        async with http.post(url, data=form, headers=headers) as response:
            text = await response.text()
            if response.status != 200:
                raise RuntimeError(f"webhook answered {response.status}: {text.strip()[:200]}")
        verb, info = twilio.parse_twiml(text)
    else:
        from urllib.parse import urlencode as form_encode

        from voicerouter.transports import telnyx

        url = f"{base}/telnyx/voice" + (f"?{qs}" if qs else "")
        body = form_encode(telnyx.call_params(call_id, target.to, target.from_)).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if target.telnyx_private_key is not None:
            stamp = int(time.time())
            headers[telnyx.TIMESTAMP_HEADER] = str(stamp)
            headers[telnyx.SIGNATURE_HEADER] = telnyx.sign(target.telnyx_private_key, body, stamp)
        async with http.post(url, data=body, headers=headers) as response:
            text = await response.text()
            if response.status != 200:
                raise RuntimeError(f"webhook answered {response.status}: {text.strip()[:200]}")
        verb, info = telnyx.parse_texml(text)
    if verb == "reject":
        return None, {}
    if verb != "stream":
        raise RuntimeError(f"the webhook answered <{verb}>, not <Connect><Stream>")
    return str(info["url"]), dict(info["parameters"])


def _far_end(target: Target, call_id: str) -> Any:
    if target.carrier == "twilio":
        from voicerouter.transports.twilio import TwilioCarrier

        return TwilioCarrier(call_id, "MZ" + uuid.uuid4().hex)
    if target.carrier == "telnyx":
        from voicerouter.transports.telnyx import TelnyxCarrier

        return TelnyxCarrier(call_id, str(uuid.uuid4()))
    from voicerouter.transports.websocket import AppClient

    return AppClient()


async def _stream(http: Any, target: Target, plan: CallPlan, result: CallResult, url: str,
                  parameters: dict[str, str]) -> None:
    import aiohttp

    far = _far_end(target, result.call_id)
    rate = far.rate
    result.rate = rate
    caller = _at_rate(plan.pcm, rate)
    frame_bytes = rate * FRAME_MS // 1000 * 2
    wire = _wire_frames(caller, rate, far.payload)  # the fixture encoded once, not once a frame per call
    silence = far.payload(bytes(frame_bytes))
    speech_end = voiced_end_s(plan.pcm)
    playout = _Playout(rate)
    loop = asyncio.get_running_loop()
    state: dict[str, Any] = {"speech_end_t": None, "awaiting_reply": False, "last_audio_t": None,
                             "reply_started_t": None, "barge_voice_t": None, "closed": False, "key_t": None}
    keys = dtmf_schedule(plan, len(caller) / 2 / rate)

    opened = loop.time()
    headers = {"Authorization": f"Bearer {target.session_token}"} if target.carrier == "ws" and target.session_token else {}
    async with http.ws_connect(url, max_msg_size=1 << 22, headers=headers) as ws:
        for message in far.opening(parameters):
            await ws.send_str(message)

        async def receive() -> None:
            while True:
                msg = await ws.receive()
                if msg.type == aiohttp.WSMsgType.CLOSE:
                    result.close_reason = str(msg.extra or "")
                if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    break
                kind, value = far.reply(msg.data)
                now = loop.time()
                if kind == "media":
                    if state["awaiting_reply"] and rms_dbfs(value) > VOICED_DBFS:
                        result.latencies_s.append(now - state["speech_end_t"])
                        state["awaiting_reply"] = False
                        state["reply_started_t"] = state["reply_started_t"] or now
                    state["last_audio_t"] = now
                    playout.add_audio(value)
                elif kind == "mark":
                    playout.add_mark(value)
                elif kind == "clear":
                    result.clears += 1
                    if state["barge_voice_t"] is not None and result.clear_after_barge_s is None:
                        result.clear_after_barge_s = now - state["barge_voice_t"]
                    if state["key_t"] is not None and result.clear_after_key_s is None:
                        result.clear_after_key_s = now - state["key_t"]
                    for name in playout.clear():
                        await ws.send_str(far.mark(name))
                        result.marks_echoed += 1
                elif kind == "event":
                    result.events.append(value)
            state["closed"] = True

        receiver = asyncio.create_task(receive())
        try:
            t0 = loop.time()
            i = 0
            barge_at: float | None = None
            barge = resample(plan.barge, 16000, rate) if plan.barge and rate != 16000 else plan.barge
            barge_pos = 0
            caller_end = len(caller)
            barge_voice = voiced_start_s(plan.barge) if plan.barge else 0.0
            keys_planned = bool(keys)
            last_key_s = keys[-1][0] if keys else 0.0
            while not state["closed"]:
                due = t0 + i * FRAME_MS / 1000
                now = loop.time()
                if due > now:
                    await asyncio.sleep(due - now)
                result.max_send_lag_s = max(result.max_send_lag_s, loop.time() - due)
                pos = i * frame_bytes
                if pos < caller_end:
                    payload = wire[i]
                elif barge is not None and barge_at is not None and loop.time() >= barge_at and barge_pos < len(barge):
                    if barge_pos == 0:
                        state["barge_voice_t"] = loop.time() + barge_voice
                    chunk = barge[barge_pos : barge_pos + frame_bytes]
                    barge_pos += frame_bytes
                    payload = far.payload(chunk + bytes(frame_bytes - len(chunk)))
                else:
                    payload = silence
                message = far.media_payload(payload, frame_bytes // 2)
                try:
                    if isinstance(message, bytes):
                        await ws.send_bytes(message)
                    else:
                        await ws.send_str(message)
                except ConnectionError:
                    break  # the server closed the stream (a refusal says why in its close code)
                if state["speech_end_t"] is None and (i + 1) * FRAME_MS / 1000 >= speech_end and speech_end > 0:
                    state["speech_end_t"] = loop.time()
                    state["awaiting_reply"] = True
                while keys and keys[0][0] <= (i + 1) * FRAME_MS / 1000:
                    _, key = keys.pop(0)
                    await ws.send_str(far.dtmf(key))
                    result.keys_sent += key
                    state["key_t"] = loop.time() if playout.busy() else None
                    if not keys:  # the entry is typed: its reply is timed from the last key
                        state["speech_end_t"] = loop.time()
                        state["awaiting_reply"] = True
                played, marks = playout.tick()
                result.heard += played
                for name in marks:
                    await ws.send_str(far.mark(name))
                    result.marks_echoed += 1
                if barge is not None and barge_at is None and state["reply_started_t"] is not None:
                    barge_at = state["reply_started_t"] + plan.barge_after_s
                i += 1
                elapsed = i * FRAME_MS / 1000
                after_caller = elapsed - max(caller_end / 2 / rate, last_key_s)
                barge_done = barge is None or barge_pos >= len(barge)
                quiet = state["last_audio_t"] is None or loop.time() - state["last_audio_t"] > plan.settle_s
                replied = state["reply_started_t"] is not None and not (keys_planned and state["awaiting_reply"])
                if after_caller > 0 and barge_done and not keys and not playout.busy() and quiet and (
                    replied or after_caller > plan.listen_s
                ):
                    break
                if after_caller > plan.listen_s + 30:
                    break
            if not state["closed"]:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await ws.send_str(far.stop())
                await ws.close()
        finally:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait([receiver], timeout=2.0)
            receiver.cancel()
        result.close_code = ws.close_code
        result.duration_s = loop.time() - opened
        if ws.close_code not in (None, 1000) and not result.heard:
            result.outcome = "refused" if ws.close_code == 1013 else "failed"
            result.error = f"stream closed with {ws.close_code}"
            return
    result.outcome = "answered"


@functools.lru_cache(maxsize=32)
def _at_rate(pcm: bytes, rate: int) -> bytes:
    """A fixture (16 kHz) at the carrier's rate; every call of a run speaks the same few fixtures."""
    return resample(pcm, 16000, rate) if rate != 16000 else pcm


@functools.lru_cache(maxsize=32)
def _wire_frames(pcm: bytes, rate: int, encode: Callable[[bytes], WireMessage]) -> tuple[WireMessage, ...]:
    """`pcm` as the carrier's encoded 20 ms frames (the last one padded with silence)."""
    return tuple(encode(frame) for frame in frames(pcm, FRAME_MS, rate))


async def answer_stream(http: Any, carrier: Carrier, plan: CallPlan, url: str, parameters: dict[str, str],
                        call_id: str) -> CallResult:
    """The carrier's side of one media stream already dialled (the carrier emulators' callee): speak,
    listen, hang up. Failures are in the result, like `place_call`'s."""
    result = CallResult(0, call_id)
    try:
        await _stream(http, Target(url=url, carrier=carrier), plan, result, url, parameters)
    except Exception as exc:  # a broken stream ends the call, not the emulator
        result.outcome = "failed"
        result.error = f"{type(exc).__name__}: {exc}"[:300]
    return result


async def run_load(
    target: Target,
    plans: list[CallPlan],
    *,
    calls: int,
    concurrency: int,
    rate: float | None = None,
    transcribe: bool = True,
    on_result: Any = None,
) -> LoadReport:
    """`calls` calls, `concurrency` at a time, started at most `rate` per second; fixtures in turn."""
    import aiohttp

    started = time.monotonic()
    gate = asyncio.Semaphore(concurrency)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
        before = await _failovers(http, target.url)

        async def one(index: int) -> CallResult:
            async with gate:
                result = await place_call(http, target, plans[index % len(plans)], index)
            if transcribe and result.heard:
                result.words = await asyncio.to_thread(_transcribe, bytes(result.heard), result.rate)
            if on_result is not None:
                on_result(result)
            return result

        tasks = []
        for index in range(calls):
            tasks.append(asyncio.create_task(one(index)))
            if rate:
                await asyncio.sleep(1.0 / rate)
        results = list(await asyncio.gather(*tasks))
        after = await _failovers(http, target.url)
    failovers = None if before is None or after is None else after - before
    return LoadReport(results, failovers=failovers, wall_s=time.monotonic() - started)


async def _failovers(http: Any, url: str) -> float | None:
    """voicerouter_failovers_total summed over labels, from the server's /metrics (None if unavailable)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        async with http.get(url.rstrip("/") + "/metrics") as response:
            if response.status != 200:
                return None
            text = await response.text()
    except Exception:
        return None
    total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name == "voicerouter_failovers":
            total += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return total


def _transcribe(pcm: bytes, rate: int) -> str:
    from voicerouter.providers.local.pocketsphinx import transcribe_pcm

    return transcribe_pcm(pcm, rate)


def load_fixture(path: str | os.PathLike[str]) -> CallPlan:
    from voicerouter.audio.io import read_audio

    chunk = read_audio(path)
    return CallPlan(resample(chunk.pcm, chunk.sample_rate, 16000), name=os.fspath(path))


def telnyx_private_key(text: str) -> Any:
    """An Ed25519 private key from base64 (32 raw bytes) or PEM."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    text = text.strip()
    if text.startswith("-----BEGIN"):
        return serialization.load_pem_private_key(text.encode(), password=None)
    return Ed25519PrivateKey.from_private_bytes(base64.b64decode(text))
