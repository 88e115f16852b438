"""G.711 mu-law (PCMU), the audio of phone calls: 8 kHz, one byte per sample.

Twilio Media Streams and Telnyx media streaming carry it base64-encoded. Both directions are
table lookups (256 entries to decode, 65536 to encode), built once with numpy.
"""

from __future__ import annotations

import numpy as np

PHONE_RATE = 8000
_BIAS = 0x84
_CLIP14 = 8159
_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])


def _decode_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    return np.where(sign != 0, -magnitude, magnitude).astype("<i2")


def _encode_table() -> np.ndarray:
    # The reference (ITU-T G.711 / Sun) encoder on 14-bit magnitudes: segment by the end points.
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 2
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(pcm), _CLIP14) + (_BIAS >> 2)
    segment = np.searchsorted(_SEG_END, magnitude, side="left")
    value = (np.minimum(segment, 7) << 4) | ((magnitude >> (np.minimum(segment, 7) + 1)) & 0x0F)
    value = np.where(segment >= 8, 0x7F, value)
    return ((value ^ mask) & 0xFF).astype(np.uint8)


_DECODE = _decode_table()
_ENCODE = _encode_table()


def ulaw_to_pcm16(data: bytes) -> bytes:
    """mu-law bytes to signed 16-bit little-endian PCM (same sample rate)."""
    return _DECODE[np.frombuffer(data, dtype=np.uint8)].tobytes()


def pcm16_to_ulaw(pcm: bytes) -> bytes:
    """Signed 16-bit little-endian PCM to mu-law bytes (same sample rate)."""
    # The table is indexed by sample + 32768; on the raw 16 bits that is flipping the top bit.
    index = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<u2") ^ 0x8000
    return _ENCODE[index].tobytes()
