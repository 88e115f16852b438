"""Twilio: the voice webhook's TwiML, request signatures, and the Media Streams WebSocket protocol.

Everything Twilio-specific lives here, for both sides of the wire: `TwilioMedia` is what `serve`
speaks to Twilio; `TwilioCarrier`, `call_params` and `parse_twiml` are what Twilio does, for
`voicerouter load`, the carrier emulator and tests.

- Webhook: Twilio POSTs form parameters (CallSid, From, To, ...) and expects TwiML back.
  `<Connect><Stream url="wss://...">` with `<Parameter name value>` children opens a
  bidirectional stream whose `start` message carries those parameters as `customParameters`;
  `<Reject reason="busy"/>` as the first verb declines the call without answering (no charge).
- Signature: `X-Twilio-Signature` is base64(HMAC-SHA1(auth token, URL + each POST parameter
  name and value, sorted by name)); for https URLs Twilio's own validator also accepts the URL
  without an explicit port.
- Media Streams: in `connected`, `start` (streamSid, callSid, customParameters, mediaFormat
  audio/x-mulaw 8000 Hz mono), `media` (base64 mu-law, 20 ms), `dtmf`, `mark`, `stop`; out
  `media`, `mark` (echoed back once the audio before it has played) and `clear` (drop buffered
  audio; Twilio then echoes the pending marks).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from xml.etree import ElementTree

from voicerouter.audio.g711 import PHONE_RATE
from voicerouter.transports.base import Inbound, Started, WireMessage
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

SIGNATURE_HEADER = "X-Twilio-Signature"
MULAW = "audio/x-mulaw"


# ---- webhook ---------------------------------------------------------------------------------


def signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """The X-Twilio-Signature of a request to `url` with these POST parameters."""
    payload = url + "".join(f"{key}{params[key]}" for key in sorted(params))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def signature_valid(auth_token: str, url: str, params: Mapping[str, str], header: str | None) -> bool:
    if not header:
        return False
    candidates = {url}
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.port:  # Twilio signs https URLs with or without the port
        candidates.add(urlunsplit(parts._replace(netloc=parts.hostname or "")))
    return any(hmac.compare_digest(signature(auth_token, u, params), header) for u in candidates)


def connect_stream_twiml(stream_url: str, parameters: Mapping[str, str]) -> str:
    """`<Connect><Stream>`: a bidirectional media stream, with the routing context as parameters."""
    response = ElementTree.Element("Response")
    connect = ElementTree.SubElement(response, "Connect")
    stream = ElementTree.SubElement(connect, "Stream", url=stream_url)
    for name, value in parameters.items():
        ElementTree.SubElement(stream, "Parameter", name=name, value=value)
    return xml_document(response)


reject_twiml = reject_document  # `<Reject>` first: the call is not answered (and not billed)


# ---- media stream, server side -----------------------------------------------------------------


class TwilioMedia:
    """Media Streams messages <-> call audio (mu-law 8 kHz both ways)."""

    name = "twilio"
    wire_rate = PHONE_RATE

    def __init__(self) -> None:
        self.stream_sid: str | None = None

    def decode(self, message: WireMessage) -> list[Inbound]:
        data = json_object(message, "Media Streams")
        event = data.get("event")
        if event == "media":
            audio = inbound_audio(data)
            return [audio] if audio is not None else []
        if event == "start":
            start = data.get("start") or {}
            fmt = start.get("mediaFormat") or {}
            if fmt.get("encoding", MULAW) != MULAW or int(fmt.get("sampleRate", PHONE_RATE)) != PHONE_RATE:
                raise ValueError(f"unsupported media format {fmt}; expected {MULAW} at {PHONE_RATE} Hz")
            self.stream_sid = str(start.get("streamSid") or data.get("streamSid") or "")
            params = {str(k): str(v) for k, v in (start.get("customParameters") or {}).items()}
            return [Started(str(start.get("callSid") or ""), self.stream_sid, params, PHONE_RATE)]
        return call_event(event, data)

    def encode_audio(self, pcm: bytes) -> WireMessage:
        # Twilio plays outbound media of any length in order; one message may hold many frames.
        return json.dumps({"event": "media", "streamSid": self.stream_sid, "media": {"payload": payload_of(pcm)}})

    def encode_mark(self, name: str) -> WireMessage:
        return json.dumps({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})

    def encode_clear(self) -> WireMessage:
        return json.dumps({"event": "clear", "streamSid": self.stream_sid})


# ---- media stream, carrier side (what Twilio sends; for `load` and tests) -------------------


class TwilioCarrier(CarrierEnd):
    """Twilio's half of a media stream: numbered messages from the caller, decoded replies."""

    name = "twilio"

    def __init__(self, call_sid: str, stream_sid: str, account_sid: str = "AC" + "0" * 32) -> None:
        super().__init__()
        self.call_sid = call_sid
        self.stream_sid = stream_sid
        self.account_sid = account_sid
        self._sid_json = json.dumps(stream_sid)

    def opening(self, parameters: Mapping[str, str]) -> list[str]:
        connected = json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        start = json.dumps({
            "event": "start",
            "sequenceNumber": self._next(),
            "start": {
                "accountSid": self.account_sid,
                "streamSid": self.stream_sid,
                "callSid": self.call_sid,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": MULAW, "sampleRate": PHONE_RATE, "channels": 1},
                "customParameters": dict(parameters),
            },
            "streamSid": self.stream_sid,
        })
        return [connected, start]

    def media_payload(self, payload: str, samples: int) -> str:
        """The media message carrying an encoded `payload` of `samples` samples (what `media` sends).

        Formatted directly (the same JSON `json.dumps` writes): a load generator sends fifty of these
        a second per call, and building a dict to serialize each one cost more than the rest of its frame.
        """
        self._chunk += 1
        message = (f'{{"event": "media", "sequenceNumber": "{self._next()}", "media": {{"track": "inbound", '
                   f'"chunk": "{self._chunk}", "timestamp": "{self._timestamp_ms}", "payload": "{payload}"}}, '
                   f'"streamSid": {self._sid_json}}}')
        self._timestamp_ms += samples * 1000 // PHONE_RATE
        return message

    def mark(self, name: str) -> str:
        return json.dumps({"event": "mark", "sequenceNumber": self._next(), "streamSid": self.stream_sid,
                           "mark": {"name": name}})

    def dtmf(self, digit: str) -> str:
        return json.dumps({"event": "dtmf", "sequenceNumber": self._next(), "streamSid": self.stream_sid,
                           "dtmf": {"track": "inbound_track", "digit": digit}})

    def stop(self) -> str:
        return json.dumps({"event": "stop", "sequenceNumber": self._next(), "streamSid": self.stream_sid,
                           "stop": {"accountSid": self.account_sid, "callSid": self.call_sid}})

    def reply(self, message: WireMessage) -> tuple[str, Any]:
        """What the server sent: ("media", PCM16 8 kHz), ("mark", name), or (event, data)."""
        return reply_of(json_object(message, "Media Streams"))


def call_params(call_sid: str, to: str, from_: str, account_sid: str = "AC" + "0" * 32) -> dict[str, str]:
    """The form parameters of Twilio's voice webhook for an incoming call."""
    return {
        "AccountSid": account_sid, "ApiVersion": "2010-04-01", "CallSid": call_sid, "CallStatus": "ringing",
        "Called": to, "Caller": from_, "Direction": "inbound", "From": from_, "To": to,
    }


parse_twiml = parse_document  # ("stream", {url, parameters}), ("reject", {reason}) or (verb, {})
