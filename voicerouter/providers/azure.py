"""Azure Speech over REST: short-audio recognition (WAV, 16 kHz) and SSML synthesis to raw PCM.

Both hosts are regional ({region}.stt / {region}.tts.speech.microsoft.com) unless `base_url` points
both at one server. Auth is `Ocp-Apim-Subscription-Key`; Azure sends no error body to speak of, so
errors are told apart by status, and recognition failures by `RecognitionStatus`.

Table fields: region (or base_url), language (default en-US), voice (default en-US-ChristopherNeural),
sample_rate (TTS raw PCM rate, default 24000); options: profanity (masked, removed, raw).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import httpx

from voicerouter.config.schema import ProviderConfig
from voicerouter.errors import ConfigError, RequestError, TransientProviderError
from voicerouter.providers import http
from voicerouter.providers._common import (
    batch_only,
    build_vendor,
    pcm_rate,
    probe_synthesis,
    silence,
    wav_bytes,
)
from voicerouter.providers.base import PIPELINE_RATE, AudioChunk, BuildContext, Kind, PartialCallback, Transcript

DEFAULT_KEY_REF = "${AZURE_SPEECH_KEY}"
OPTIONS = frozenset({"profanity"})
DEFAULT_LANGUAGE = "en-US"
DEFAULT_VOICE = "en-US-ChristopherNeural"
STT_RATE = 16000  # short-audio recognition takes 16 kHz mono WAV
MAX_STT_SECONDS = 60
OUTPUT_FORMATS = {
    8000: "raw-8khz-16bit-mono-pcm", 16000: "raw-16khz-16bit-mono-pcm", 22050: "raw-22050hz-16bit-mono-pcm",
    24000: "raw-24khz-16bit-mono-pcm", 44100: "raw-44100hz-16bit-mono-pcm", 48000: "raw-48khz-16bit-mono-pcm",
}
DEFAULT_TTS_RATE = 24000  # neural voices are native 24 kHz
EMPTY_STATUSES = ("NoMatch", "InitialSilenceTimeout", "BabbleTimeout")


def create(name: str, kind: Kind, config: ProviderConfig, ctx: BuildContext) -> AzureSTT | AzureTTS:
    """Factory named by the registry: an Azure Speech STT or TTS provider for one routing-table entry."""
    def regional(kind: str) -> str:
        if not config.region:
            raise ConfigError(
                f"provider {name}: azure needs a region (or a base_url)", hint="e.g. region: westeurope"
            )
        return f"https://{config.region}.{kind}.speech.microsoft.com"

    return build_vendor(
        name, kind, config, ctx, vendor="azure", classes={"stt": AzureSTT, "tts": AzureTTS},
        options=OPTIONS, key_ref=DEFAULT_KEY_REF, base_url=regional,
    )


def to_16k(pcm: bytes, sample_rate: int) -> bytes:
    if sample_rate == STT_RATE or not pcm:
        return pcm
    import numpy as np
    import soxr

    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2")
    return soxr.resample(samples, sample_rate, STT_RATE).astype("<i2").tobytes()


def ssml(text: str, voice: str, language: str) -> str:
    """The SSML document for one sentence; the text is escaped so `<`, `&`, `>` are spoken, not parsed."""
    return (
        f"<speak version='1.0' xmlns='http://www.w3.org/2001/10/synthesis' xml:lang={quoteattr(language)}>"
        f"<voice name={quoteattr(voice)}>{escape(text)}</voice></speak>"
    )


class _Base(http.ClientProvider):
    type = "azure"

    def __init__(self, name: str, config: ProviderConfig, *, key: str, base_url: str, timeout_s: float) -> None:
        super().__init__(name, config, base_url=base_url, timeout_s=timeout_s, headers={"Ocp-Apim-Subscription-Key": key})
        self.language = config.language or DEFAULT_LANGUAGE


class AzureSTT(_Base):
    kind: Kind = "stt"
    supports_streaming = False

    async def transcribe(self, audio: AudioChunk) -> Transcript:
        """POST the utterance as 16 kHz WAV to short-audio recognition; final result only."""
        if audio.duration_s > MAX_STT_SECONDS:
            raise RequestError(
                f"utterance is {audio.duration_s:.0f} s; Azure short-audio recognition takes at most "
                f"{MAX_STT_SECONDS} s", provider=self.name,
            )
        params: dict[str, Any] = {"language": self.language, "format": "simple"}
        if "profanity" in self.config.options:
            params["profanity"] = self.config.options["profanity"]
        headers = {
            "Content-Type": f"audio/wav; codecs=audio/pcm; samplerate={STT_RATE}",
            "Accept": "application/json",
        }
        body = wav_bytes(to_16k(audio.pcm, audio.sample_rate), STT_RATE)
        try:
            response = await self._client.post(
                "/speech/recognition/conversation/cognitiveservices/v1", params=params, headers=headers, content=body
            )
        except httpx.HTTPError as exc:
            raise self._error(exc) from None
        await http.raise_for_response(response, provider=self.name)
        try:
            data = response.json()
            status = data["RecognitionStatus"]
        except (ValueError, KeyError, TypeError):
            raise http.malformed("recognition result", response.content, provider=self.name) from None
        if status == "Success":
            text = data.get("DisplayText")
            if not isinstance(text, str):
                raise http.malformed("Success without DisplayText", response.content, provider=self.name)
            return Transcript(text.strip(), True, None, self.name)
        if status in EMPTY_STATUSES:
            return Transcript("", True, None, self.name)
        if status == "Error":
            raise TransientProviderError("recognition failed (RecognitionStatus Error)", provider=self.name)
        raise http.malformed(f"RecognitionStatus {status!r}", response.content, provider=self.name)

    async def open_stream(
        self, sample_rate: int = PIPELINE_RATE, on_partial: PartialCallback | None = None
    ) -> Any:
        raise batch_only("azure short-audio recognition", provider=self.name)

    async def probe(self) -> None:
        """A 200 ms silent recognition (answers NoMatch/InitialSilenceTimeout): proves key, region, language."""
        await self.transcribe(silence(0.2, STT_RATE))


class AzureTTS(_Base):
    kind: Kind = "tts"

    def __init__(self, name: str, config: ProviderConfig, **kw: Any) -> None:
        super().__init__(name, config, **kw)
        self.sample_rate = pcm_rate(name, config, DEFAULT_TTS_RATE, OUTPUT_FORMATS, what="azure has no raw PCM output")
        self.voice = config.voice or DEFAULT_VOICE

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        """POST SSML to /cognitiveservices/v1 with a raw-*-16bit-mono-pcm output format."""
        headers = {
            "Content-Type": "application/ssml+xml",
            "X-Microsoft-OutputFormat": OUTPUT_FORMATS[self.sample_rate],
        }
        body = ssml(text, self.voice, self.language).encode("utf-8")
        async for chunk in self._post_for_pcm("/cognitiveservices/v1", self.sample_rate, headers=headers, content=body):
            yield chunk

    async def probe(self) -> None:
        """A one-word synthesis, read to its first audio chunk."""
        await probe_synthesis(self, what="synthesis")
