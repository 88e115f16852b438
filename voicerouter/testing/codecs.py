"""Audio in the vendors' formats for the emulators: encode synthesized PCM16, decode uploads.

Vendors answer TTS in MP3, Ogg/Opus, FLAC, WAV, mu-law/a-law and float PCM, and take uploads in
most containers; the official SDKs default to some of these (OpenAI and ElevenLabs to MP3). One
home for the conversions, built on what libsndfile (through soundfile) already provides. AAC and
the telephone codecs libsndfile lacks (AMR, G.729, Speex) are not offered.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)

# encoding name -> (libsndfile RAW/WAV subtype)
PCM_SUBTYPES = {"pcm_s16le": "PCM_16", "pcm_s32le": "PCM_32", "pcm_f32le": "FLOAT",
                "pcm_mulaw": "ULAW", "pcm_alaw": "ALAW"}


@dataclass(frozen=True)
class AudioFormat:
    """What a vendor was asked for: `container` raw|wav|mp3|ogg|flac, `encoding` for raw/wav, the rate."""

    container: str
    sample_rate: int
    encoding: str = "pcm_s16le"

    @property
    def content_type(self) -> str:
        if self.container == "raw":
            return {"pcm_mulaw": "audio/basic", "pcm_alaw": "audio/x-alaw-basic"}.get(self.encoding, "audio/pcm")
        return {"wav": "audio/wav", "mp3": "audio/mpeg", "ogg": "audio/ogg", "flac": "audio/flac"}[self.container]

    def check(self) -> str | None:
        """Why this combination cannot be produced, or None."""
        if self.container in ("raw", "wav") and self.encoding not in PCM_SUBTYPES:
            return f"encoding {self.encoding!r} is not a PCM encoding"
        if self.container == "mp3" and self.sample_rate not in MP3_RATES:
            return f"mp3 has no {self.sample_rate} Hz rate"
        if self.container == "ogg" and self.sample_rate not in OPUS_RATES:
            return f"opus has no {self.sample_rate} Hz rate"
        if self.container not in ("raw", "wav", "mp3", "ogg", "flac"):
            return f"container {self.container!r} is not produced"
        return None


def encode(pcm: bytes, fmt: AudioFormat) -> bytes:
    """Mono PCM16 at `fmt.sample_rate` in the asked format (the PCM is already at that rate)."""
    import soundfile as sf

    if fmt.container == "raw" and fmt.encoding == "pcm_s16le":
        return pcm
    samples = np.frombuffer(pcm, dtype="<i2")
    if fmt.container == "raw" and fmt.encoding == "pcm_f32le":
        return (samples.astype(np.float32) / 32768.0).astype("<f4").tobytes()
    major, subtype = {
        "raw": ("RAW", PCM_SUBTYPES.get(fmt.encoding)), "wav": ("WAV", PCM_SUBTYPES.get(fmt.encoding)),
        "mp3": ("MP3", "MPEG_LAYER_III"), "ogg": ("OGG", "OPUS"), "flac": ("FLAC", "PCM_16"),
    }[fmt.container]
    buffer = io.BytesIO()
    sf.write(buffer, samples, fmt.sample_rate, format=major, subtype=subtype)
    return buffer.getvalue()


def decode(data: bytes) -> tuple[bytes, int]:
    """A containerized upload (WAV, FLAC, Ogg, MP3, AIFF, ...) -> mono PCM16 and its rate; ValueError if unreadable."""
    import soundfile as sf

    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="int16", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise ValueError(f"undecodable audio: {exc}") from None
    return _mono(samples), int(rate)


def decode_raw(data: bytes, encoding: str, sample_rate: int, channels: int = 1) -> bytes:
    """Headerless audio (`pcm_s16le`, `pcm_s32le`, `pcm_f32le`, `pcm_mulaw`, `pcm_alaw`) -> mono PCM16."""
    import soundfile as sf

    subtype = PCM_SUBTYPES.get(encoding)
    if subtype is None or channels < 1:
        raise ValueError(f"raw encoding {encoding!r} is not decodable")
    if encoding == "pcm_f32le":
        usable = len(data) - len(data) % (4 * channels)
        floats = np.frombuffer(data[:usable], dtype="<f4").reshape(-1, channels)
        samples = (np.clip(floats, -1.0, 1.0) * 32767).astype(np.int16)
    else:
        samples, _ = sf.read(io.BytesIO(data), dtype="int16", always_2d=True, format="RAW", subtype=subtype,
                             samplerate=sample_rate, channels=channels)
    return _mono(samples)


def _mono(samples: np.ndarray) -> bytes:
    if samples.shape[1] > 1:
        samples = samples.mean(axis=1).astype(np.int16)[:, None]
    return samples[:, 0].astype("<i2").tobytes()
