"""What the Twilio and Telnyx transports share: the media stream's framing and the webhook's documents.

Both carriers stream a call as JSON messages carrying base64 G.711 mu-law at 8 kHz (`media`), with
`mark`, `dtmf` and `stop` events of the same shape, and both answer a voice webhook with a TwiML
document (Telnyx's TeXML is a dialect of TwiML: the same `<Reject>`, the same `<Connect><Stream>`).
What differs on the wire (streamSid or stream_id, sequenceNumber or sequence_number, the `start`
frame, Telnyx's reordering) stays in each carrier's module.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from xml.etree import ElementTree

from voicerouter.audio.g711 import PHONE_RATE, pcm16_to_ulaw, ulaw_to_pcm16
from voicerouter.transports.base import Audio, Digit, Inbound, MarkEcho, Stopped, WireMessage

# ---- webhook documents -----------------------------------------------------------------------


def xml_document(root: ElementTree.Element) -> str:
    return '<?xml version="1.0" encoding="UTF-8"?>' + ElementTree.tostring(root, encoding="unicode")


def reject_document(reason: str = "busy") -> str:
    """`<Reject>` as the first verb: the call is not answered (and not billed)."""
    response = ElementTree.Element("Response")
    ElementTree.SubElement(response, "Reject", reason=reason)
    return xml_document(response)


def parse_document(text: str) -> tuple[str, dict[str, Any]]:
    """("stream", {url, parameters}) for `<Connect><Stream>`, ("reject", {reason}), or (verb, {})."""
    root = ElementTree.fromstring(text)
    first = next(iter(root), None)
    if first is None:
        return "empty", {}
    if first.tag == "Reject":
        return "reject", {"reason": first.get("reason", "rejected")}
    if first.tag == "Connect" and (stream := first.find("Stream")) is not None:
        params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
        return "stream", {"url": stream.get("url", ""), "parameters": params}
    return first.tag.lower(), {}


# ---- media stream messages --------------------------------------------------------------------


def payload_of(pcm: bytes) -> str:
    """A media message's `payload`: PCM16 at 8 kHz as base64 mu-law."""
    return base64.b64encode(pcm16_to_ulaw(pcm)).decode()


def pcm_of(media: dict[str, Any]) -> bytes:
    """The PCM16 (8 kHz) of a `media` object's base64 mu-law payload."""
    return ulaw_to_pcm16(base64.b64decode(media.get("payload") or ""))


def json_object(message: WireMessage, what: str) -> dict[str, Any]:
    data = json.loads(message)
    if not isinstance(data, dict):
        raise ValueError(f"a {what} message is a JSON object")
    return data


def inbound_audio(data: dict[str, Any]) -> Audio | None:
    """The caller's audio in a `media` message (None for another track)."""
    media = data.get("media") or {}
    if media.get("track", "inbound") != "inbound":
        return None
    return Audio(pcm_of(media), PHONE_RATE)


def call_event(event: Any, data: dict[str, Any]) -> list[Inbound]:
    """The events both carriers send alike: a mark echoed back, a key pressed, the hang-up (else nothing)."""
    if event == "mark":
        return [MarkEcho(str((data.get("mark") or {}).get("name", "")))]
    if event == "dtmf":
        return [Digit(str((data.get("dtmf") or {}).get("digit", "")))]
    if event == "stop":
        return [Stopped("hangup")]
    return []  # connected, and anything newer than this code


def reply_of(data: dict[str, Any]) -> tuple[str, Any]:
    """What the server sent, as the carrier side reads it: ("media", PCM16 8 kHz), ("mark", name),
    or (event, data) for `clear` and anything else."""
    event = str(data.get("event"))
    if event == "media":
        return "media", pcm_of(data.get("media") or {})
    if event == "mark":
        return "mark", str((data.get("mark") or {}).get("name", ""))
    return event, data


class CarrierEnd:
    """The carrier's half of a media stream (for `voicerouter load` and tests): it numbers its messages
    and keeps the media chunk count and timestamp; each carrier writes its own messages' fields."""

    rate = PHONE_RATE
    payload = staticmethod(payload_of)  # a load generator encodes its fixture once

    def __init__(self) -> None:
        self._seq = 0
        self._chunk = 0
        self._timestamp_ms = 0

    def _next(self) -> str:
        self._seq += 1
        return str(self._seq)

    def media(self, pcm: bytes) -> str:
        """One 20 ms frame of caller audio (PCM16 at 8 kHz)."""
        return self.media_payload(self.payload(pcm), len(pcm) // 2)

    def media_payload(self, payload: str, samples: int) -> str:
        """The media message carrying an encoded `payload` of `samples` samples (what `media` sends)."""
        raise NotImplementedError
