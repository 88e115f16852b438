"""Cartesia: TTS over POST /tts/bytes with raw PCM16 output, streamed as the body arrives.

Every request names a dated `Cartesia-Version`; errors are plain `Title: Message` text on older
versions and a JSON `{error_code, title, message}` envelope from 2026-03-01 on, so both are parsed.

Table fields: voice (voice id), model (default sonic-3), language (sent only when set), sample_rate
(default 24000); options: version (Cartesia-Version date, default 2026-08-14, the current SDK's),
auth (bearer, the documented server-side scheme, or x-api-key), speed.
The voice goes as a plain id from version 2026-08-14 on and as `{"mode": "id", "id": ...}` before.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

from voicerouter.config.schema import ProviderConfig
from voicerouter.errors import ConfigError
from voicerouter.providers import http
from voicerouter.providers._common import build_vendor, pcm_rate, probe_synthesis
from voicerouter.providers.base import AudioChunk, BuildContext, Kind

DEFAULT_BASE_URL = "https://api.cartesia.ai"
DEFAULT_KEY_REF = "${CARTESIA_API_KEY}"
OPTIONS = frozenset({"version", "auth", "speed"})
DEFAULT_VERSION = "2026-08-14"  # what cartesia-python 4.x sends
PLAIN_VOICE_FROM = "2026-08-14"  # the first version whose voice is a plain id (no `mode`)
DEFAULT_MODEL = "sonic-3"
DEFAULT_VOICE = "694f9389-aac1-45b6-b726-9d9369183238"  # the voice of the vendor's quickstart
PCM_RATES = (8000, 16000, 22050, 24000, 44100, 48000)
DEFAULT_RATE = 24000
_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def create(name: str, kind: Kind, config: ProviderConfig, ctx: BuildContext) -> CartesiaTTS:
    """Factory named by the registry: a Cartesia TTS provider for one routing-table entry."""
    return build_vendor(
        name, kind, config, ctx, vendor="cartesia", classes={"tts": CartesiaTTS},
        options=OPTIONS, key_ref=DEFAULT_KEY_REF, base_url=DEFAULT_BASE_URL,
    )


def error_message(body: bytes) -> str | None:
    """JSON `{error_code, title, message}` (new versions) or plain `Title: Message` text (older ones)."""
    try:
        data = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        return text or None
    if not isinstance(data, dict):
        return None
    code, title, message = data.get("error_code"), data.get("title"), data.get("message") or data.get("error")
    head = " ".join(str(p) for p in (code, title) if p)
    if head and message:
        return f"{head}: {message}"
    return head or (str(message) if message else None)


class CartesiaTTS(http.ClientProvider):
    type = "cartesia"
    kind: Kind = "tts"

    def __init__(self, name: str, config: ProviderConfig, *, key: str, base_url: str, timeout_s: float) -> None:
        options = config.options
        self.sample_rate = pcm_rate(name, config, DEFAULT_RATE, PCM_RATES, what="cartesia has no raw output")
        self.version = str(options.get("version", DEFAULT_VERSION))
        if not _VERSION.match(self.version):
            raise ConfigError(
                f"provider {name}: options.version {self.version!r} is not a Cartesia-Version date",
                hint=f"e.g. version: {DEFAULT_VERSION}",
            )
        auth = str(options.get("auth", "bearer")).lower()
        if auth not in ("x-api-key", "bearer"):
            raise ConfigError(f"provider {name}: options.auth must be x-api-key or bearer, not {auth!r}")
        headers = {"Cartesia-Version": self.version}
        headers.update({"X-API-Key": key} if auth == "x-api-key" else {"Authorization": f"Bearer {key}"})
        super().__init__(name, config, base_url=base_url, timeout_s=timeout_s, headers=headers)

    def _body(self, text: str) -> dict[str, Any]:
        voice_id = self.config.voice or DEFAULT_VOICE
        body: dict[str, Any] = {
            "model_id": self.config.model or DEFAULT_MODEL,
            "transcript": text,
            "voice": voice_id if self.version >= PLAIN_VOICE_FROM else {"mode": "id", "id": voice_id},
            "output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": self.sample_rate},
        }
        if self.config.language:
            body["language"] = self.config.language.split("-")[0].lower()
        if "speed" in self.config.options:
            body["speed"] = self.config.options["speed"]
        return body

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        """POST /tts/bytes (raw pcm_s16le): audio chunks as the HTTP body streams in."""
        async for chunk in self._post_for_pcm(
            "/tts/bytes", self.sample_rate, message_of=error_message, json=self._body(text)
        ):
            yield chunk

    async def probe(self) -> None:
        """A one-word synthesis, read to its first audio chunk."""
        await probe_synthesis(self, what="tts/bytes")
