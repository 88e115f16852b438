"""The far end of an emulated carrier call: fetch the TwiML/TeXML, and on `<Connect><Stream>` connect
the media stream and speak a WAV into it as the callee, as Twilio and Telnyx do.

Media stream wire (WebSocket text frames, JSON; audio is base64 8 kHz mu-law, 20 ms per frame):
- Twilio Media Streams: `connected` {protocol, version}, `start` {streamSid, start: {accountSid, callSid,
  tracks, customParameters, mediaFormat}}, `media` {media: {track, chunk, timestamp, payload}}, `mark`
  (echoed once the audio sent before it has played), `stop`; every message after `connected` has a
  `sequenceNumber` string and the `streamSid`. The server sends `media` {payload}, `mark`, `clear`.
- Telnyx media streaming: the same events with `stream_id`, `sequence_number`, and `start` {call_control_id,
  media_format: {encoding: PCMU, sample_rate, channels}}.
The callee records what the server sends back (`reply_pcm`, marks), so a test can check the spoken reply.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

RATE = 8000
FRAME_BYTES = 160  # 20 ms of 8 kHz mu-law
FRAME_S = 0.02
QUIET_AFTER_REPLY_S = 1.0  # the callee hangs up once the reply has been quiet this long
MAX_CALL_S = 30.0

Dialect = Literal["twilio", "telnyx"]


def ulaw_encode(pcm: bytes) -> bytes:
    """PCM16 little-endian -> G.711 mu-law."""
    x = np.frombuffer(pcm, dtype="<i2").astype(np.int32)
    sign = np.where(x < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(x), 32635) + 0x84
    exponent = np.floor(np.log2(magnitude)).astype(np.int32) - 7
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


def ulaw_decode(data: bytes) -> bytes:
    """G.711 mu-law -> PCM16 little-endian."""
    u = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    sign, exponent, mantissa = u & 0x80, (u >> 4) & 0x07, u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(sign != 0, -magnitude, magnitude).astype("<i2").tobytes()


def wav_pcm_8k(path: str) -> bytes:
    """A WAV file as 8 kHz mono PCM16 (what a phone line carries)."""
    from voicerouter.audio.io import read_audio

    return read_audio(path, sample_rate=RATE).pcm


@dataclass
class CallScript:
    """What the TwiML/TeXML document asks for."""

    stream_url: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    said: list[str] = field(default_factory=list)
    hangup: bool = False


def parse_document(text: str) -> CallScript:
    """The verbs the emulator acts on: <Connect><Stream url> (with <Parameter>s), <Say>, <Hangup>."""
    root = ET.fromstring(text)
    if root.tag != "Response":
        raise ValueError(f"the document's root is <{root.tag}>, not <Response>")
    script = CallScript()
    for verb in root:
        if verb.tag == "Say":
            script.said.append((verb.text or "").strip())
        elif verb.tag == "Hangup":
            script.hangup = True
            break
        elif verb.tag == "Connect":
            stream = verb.find("Stream")
            if stream is not None and stream.get("url"):
                script.stream_url = stream.get("url")
                script.parameters = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
                break
    return script


@dataclass
class CalleeResult:
    connected: bool = False
    sent_frames: int = 0
    reply_pcm: bytes = b""  # 8 kHz PCM16 the server played to the callee
    marks: list[str] = field(default_factory=list)
    cleared: int = 0
    error: str | None = None


async def speak_into_stream(
    url: str, *, dialect: Dialect, ids: dict[str, str], pcm: bytes, parameters: dict[str, str] | None = None,
    realtime: bool = True, max_call_s: float = MAX_CALL_S,
) -> CalleeResult:
    """Connect to `url` as the carrier, speak `pcm` (8 kHz PCM16) and keep the line open (silence) until
    the server's reply has gone quiet, then `stop`. Returns what the server sent."""
    import websockets

    result = CalleeResult()
    stream_id = ids.get("stream_id", "MZ" + ids.get("call_id", "")[-32:])
    seq = 0

    def message(event: str, **body: Any) -> str:
        nonlocal seq
        seq += 1
        if dialect == "twilio":
            return json.dumps({"event": event, "sequenceNumber": str(seq), "streamSid": stream_id, **body})
        return json.dumps({"event": event, "sequence_number": str(seq), "stream_id": stream_id, **body})

    if dialect == "twilio":
        start = {"accountSid": ids.get("account_sid", ""), "streamSid": stream_id, "callSid": ids.get("call_id", ""),
                 "tracks": ["inbound"], "customParameters": parameters or {},
                 "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": RATE, "channels": 1}}
    else:
        start = {"call_control_id": ids.get("call_id", ""), "call_session_id": ids.get("call_session_id", ""),
                 "from": ids.get("from", ""), "to": ids.get("to", ""), "custom_parameters": parameters or {},
                 "media_format": {"encoding": "PCMU", "sample_rate": RATE, "channels": 1}}
    last_reply = [0.0]
    try:
        async with websockets.connect(url, open_timeout=5, max_size=2**22) as ws:
            result.connected = True
            connected = {"event": "connected", "protocol": "Call", "version": "1.0.0"}
            if dialect == "telnyx":
                connected = {"event": "connected", "version": "1.0.0"}
            await ws.send(json.dumps(connected))
            await ws.send(message("start", start=start))

            async def receive() -> None:
                async for raw in ws:
                    if not isinstance(raw, str):
                        continue
                    data = json.loads(raw)
                    event = data.get("event")
                    if event == "media":
                        payload = (data.get("media") or {}).get("payload") or ""
                        result.reply_pcm += ulaw_decode(base64.b64decode(payload))
                        last_reply[0] = time.monotonic()
                    elif event == "mark":
                        name = (data.get("mark") or {}).get("name", "")
                        result.marks.append(name)
                        await ws.send(message("mark", mark={"name": name}))  # played: echo it back
                    elif event == "clear":
                        result.cleared += 1

            receiver = asyncio.create_task(receive())
            began = time.monotonic()
            audio = ulaw_encode(pcm)
            silence = ulaw_encode(b"\x00\x00" * (FRAME_BYTES))
            chunk = 0
            try:
                while time.monotonic() - began < max_call_s and not receiver.done():
                    offset = chunk * FRAME_BYTES
                    frame = audio[offset: offset + FRAME_BYTES] if offset < len(audio) else silence
                    frame = frame.ljust(FRAME_BYTES, silence[:1])
                    chunk += 1
                    media = {"track": "inbound", "chunk": str(chunk), "timestamp": str(chunk * 20),
                             "payload": base64.b64encode(frame).decode()}
                    await ws.send(message("media", media=media))
                    result.sent_frames += 1
                    spoken = offset >= len(audio)
                    if spoken and last_reply[0] and time.monotonic() - last_reply[0] > QUIET_AFTER_REPLY_S:
                        break
                    if realtime:
                        await asyncio.sleep(FRAME_S)
                stop = ({"accountSid": ids.get("account_sid", ""), "callSid": ids.get("call_id", "")}
                        if dialect == "twilio" else {"call_control_id": ids.get("call_id", "")})
                await ws.send(message("stop", stop=stop))
            finally:
                receiver.cancel()
                await asyncio.gather(receiver, return_exceptions=True)
    except Exception as exc:  # refused, timed out, closed: the call ends, the emulator lives on
        result.error = f"{type(exc).__name__}: {exc}"
    return result
