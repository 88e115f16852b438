"""Telnyx: the TeXML voice webhook, its Ed25519 signatures, and bidirectional media streaming.

Everything Telnyx-specific lives here, for both sides of the wire (`TelnyxMedia` for `serve`,
`TelnyxCarrier` for `voicerouter load` and tests).

- Webhook: a TeXML application POSTs form parameters (CallSid, From, To, ...) and expects TeXML;
  `<Connect><Stream url bidirectionalMode="rtp" bidirectionalCodec="PCMU">` streams the call both
  ways, `<Reject reason="busy"/>` first declines it unanswered. The stream's `start` frame names
  the call by `call_control_id`, not the TeXML CallSid, so the routing context and the CallSid
  travel in the stream URL's query.
- Signature: `telnyx-signature-ed25519` is base64(Ed25519 signature of `{telnyx-timestamp}|{raw
  body}`), checked with the account's public key (base64, 32 bytes); timestamps older than
  `TOLERANCE_S` are refused (replays).
- Media: in `connected`, `start` (stream_id, media_format PCMU 8000 mono), `media` (base64 RTP
  payload; frame order is not guaranteed, so frames are put back in `sequence_number` order),
  `dtmf`, `mark`, `stop`; out `media`, `mark`, `clear`.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl
from xml.etree import ElementTree

from voicerouter.audio.g711 import PHONE_RATE
from voicerouter.transports.base import Audio, Inbound, Started, Stopped, WireMessage
from voicerouter.transports.carrier import (
    CarrierEnd,
    call_event,
    inbound_audio,
    json_object,
    parse_document,
    payload_of,
    reject_document,
    reply_of,
    xml_document,
)

SIGNATURE_HEADER = "telnyx-signature-ed25519"
TIMESTAMP_HEADER = "telnyx-timestamp"
TOLERANCE_S = 300
REORDER_WINDOW = 8  # frames held back at most while waiting for a missing sequence number


# ---- webhook ---------------------------------------------------------------------------------


def signature_valid(public_key: str, body: bytes, header: str | None, timestamp: str | None,
                    *, now: float | None = None) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if not header or not timestamp:
        return False
    try:
        if abs((now if now is not None else time.time()) - int(timestamp)) > TOLERANCE_S:
            return False
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key))
        key.verify(base64.b64decode(header), timestamp.encode() + b"|" + body)
        return True
    except (InvalidSignature, ValueError, binascii.Error):
        return False


def sign(private_key: Any, body: bytes, timestamp: int) -> str:
    """The signature header for `body` (carrier side; `private_key` is an Ed25519PrivateKey)."""
    return base64.b64encode(private_key.sign(str(timestamp).encode() + b"|" + body)).decode()


def webhook_params(body: bytes, content_type: str) -> dict[str, str]:
    """A TeXML webhook's parameters (form-encoded; JSON accepted too)."""
    if content_type == "application/json":
        data = json.loads(body or b"{}")
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def connect_stream_texml(stream_url: str, parameters: Mapping[str, str]) -> str:
    from urllib.parse import urlencode

    response = ElementTree.Element("Response")
    connect = ElementTree.SubElement(response, "Connect")
    url = stream_url + ("&" if "?" in stream_url else "?") + urlencode(dict(parameters)) if parameters else stream_url
    ElementTree.SubElement(connect, "Stream", url=url, bidirectionalMode="rtp", bidirectionalCodec="PCMU")
    return xml_document(response)


reject_texml = reject_document  # TeXML's `<Reject>` is TwiML's


# ---- media stream, server side -----------------------------------------------------------------


class TelnyxMedia:
    """Telnyx media frames <-> call audio; inbound media is reordered by `sequence_number`."""

    name = "telnyx"
    wire_rate = PHONE_RATE

    def __init__(self, query: Mapping[str, str] | None = None) -> None:
        self.query = dict(query or {})
        self.stream_id: str | None = None
        self._next_seq: int | None = None
        self._held: dict[int, Audio] = {}

    def decode(self, message: WireMessage) -> list[Inbound]:
        data = json_object(message, "media streaming")
        event = data.get("event")
        if event == "media":
            audio = inbound_audio(data)
            return self._in_order(data.get("sequence_number"), audio) if audio is not None else []
        if event == "start":
            start = data.get("start") or {}
            fmt = start.get("media_format") or {}
            if str(fmt.get("encoding", "PCMU")).upper() != "PCMU" or int(fmt.get("sample_rate", PHONE_RATE)) != PHONE_RATE:
                raise ValueError(f"unsupported media format {fmt}; expected PCMU at {PHONE_RATE} Hz")
            self.stream_id = str(data.get("stream_id") or "")
            self._next_seq = _seq(data.get("sequence_number"))
            self._next_seq = None if self._next_seq is None else self._next_seq + 1
            call_id = self.query.get("call") or str(start.get("call_control_id") or self.stream_id)
            params = {k: v for k, v in self.query.items() if k != "call"}
            return [Started(call_id, self.stream_id, params, PHONE_RATE)]
        if event == "stop":
            return [*self._release_all(), Stopped("hangup")]  # the frames still held back come first
        return call_event(event, data)

    def _in_order(self, sequence: Any, audio: Audio) -> list[Inbound]:
        seq = _seq(sequence)
        if seq is None or self._next_seq is None:
            return [audio]
        if seq < self._next_seq:
            return []  # a duplicate, or too late to be played in order
        self._held[seq] = audio
        out: list[Inbound] = []
        while self._next_seq in self._held:
            out.append(self._held.pop(self._next_seq))
            self._next_seq += 1
        if len(self._held) > REORDER_WINDOW:  # a frame is lost: skip the gap rather than stall
            out.extend(self._release_all())
        return out

    def _release_all(self) -> list[Inbound]:
        out: list[Inbound] = [self._held[s] for s in sorted(self._held)]
        if self._held:
            self._next_seq = max(self._held) + 1
        self._held.clear()
        return out

    def encode_audio(self, pcm: bytes) -> WireMessage:
        return json.dumps({"event": "media", "media": {"payload": payload_of(pcm)}})

    def encode_mark(self, name: str) -> WireMessage:
        return json.dumps({"event": "mark", "mark": {"name": name}})

    def encode_clear(self) -> WireMessage:
        return json.dumps({"event": "clear"})


def _seq(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# ---- media stream, carrier side ---------------------------------------------------------------


class TelnyxCarrier(CarrierEnd):
    """Telnyx's half of a media stream, for `voicerouter load` and tests."""

    name = "telnyx"

    def __init__(self, call_control_id: str, stream_id: str) -> None:
        super().__init__()
        self.call_control_id = call_control_id
        self.stream_id = stream_id
        self._id_json = json.dumps(stream_id)

    def opening(self, parameters: Mapping[str, str]) -> list[str]:
        connected = json.dumps({"event": "connected", "version": "1.0.0"})
        start = json.dumps({
            "event": "start", "sequence_number": self._next(), "stream_id": self.stream_id,
            "start": {"user_id": "00000000-0000-0000-0000-000000000000", "call_control_id": self.call_control_id,
                      "client_state": None, "media_format": {"encoding": "PCMU", "sample_rate": PHONE_RATE, "channels": 1}},
        })
        return [connected, start]

    def media_payload(self, payload: str, samples: int) -> str:
        """The media message carrying an encoded `payload` (the JSON `json.dumps` writes, built directly)."""
        self._chunk += 1
        message = (f'{{"event": "media", "sequence_number": "{self._next()}", "stream_id": {self._id_json}, '
                   f'"media": {{"track": "inbound", "chunk": "{self._chunk}", "timestamp": "{self._timestamp_ms}", '
                   f'"payload": "{payload}"}}}}')
        self._timestamp_ms += samples * 1000 // PHONE_RATE
        return message

    def mark(self, name: str) -> str:
        return json.dumps({"event": "mark", "sequence_number": self._next(), "stream_id": self.stream_id,
                           "mark": {"name": name}})

    def dtmf(self, digit: str) -> str:
        return json.dumps({"event": "dtmf", "sequence_number": self._next(), "stream_id": self.stream_id,
                           "dtmf": {"digit": digit}})

    def stop(self) -> str:
        return json.dumps({"event": "stop", "sequence_number": self._next(), "stream_id": self.stream_id,
                           "stop": {"user_id": "00000000-0000-0000-0000-000000000000",
                                    "call_control_id": self.call_control_id}})

    def reply(self, message: WireMessage) -> tuple[str, Any]:
        return reply_of(json.loads(message))


def call_params(call_sid: str, to: str, from_: str) -> dict[str, str]:
    """The form parameters of a TeXML application's voice webhook for an incoming call."""
    return {"AccountSid": "00000000-0000-0000-0000-000000000000", "CallSid": call_sid, "CallStatus": "ringing",
            "Direction": "inbound", "From": from_, "To": to, "CallbackSource": "call-progress-events"}


parse_texml = parse_document  # ("stream", {url, parameters}), ("reject", {reason}) or (verb, {})
