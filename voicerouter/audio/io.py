"""Audio files in and out: read anything libsndfile reads as 16 kHz mono int16, write PCM16 WAV.

Every failure becomes an `AudioFileError` naming the file, what is wrong and how to fix it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from voicerouter.audio.convert import float_to_int16
from voicerouter.errors import AudioFileError
from voicerouter.providers.base import PIPELINE_RATE, AudioChunk

_CONVERT_HINT = (
    "check that it is an undamaged WAV, FLAC or OGG file; convert other formats with e.g. "
    "ffmpeg -i input.mp3 -ar 16000 -ac 1 output.wav"
)
# libsndfile logs "data : <declared> (should be <present>)" when a WAV's data chunk is cut short.
_SHORT_DATA = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
# Sizes recorders write when they stream and never patch the header; not a sign of truncation.
_STREAMING_SIZES = {0, 0xFFFFFFFF, 0x7FFFFFFF, 0x7FFFF000}


def read_audio(path: str | os.PathLike[str], sample_rate: int = PIPELINE_RATE) -> AudioChunk:
    """Read a whole audio file (any rate, bit depth, channel count) as mono int16 at `sample_rate`."""
    p = Path(path)
    _check_path(p)
    try:
        info = sf.info(str(p))
        _check_truncated(p, info.extra_info or "")
        data, rate = sf.read(str(p), dtype="float32", always_2d=True)
    except sf.SoundFileError as exc:
        raise AudioFileError(
            f"{p}: not a readable audio file ({_libsndfile_reason(exc)})", hint=_CONVERT_HINT
        ) from None
    except OSError as exc:
        raise AudioFileError(
            f"{p}: cannot be read ({exc.strerror or exc})", hint="check the file's permissions"
        ) from None
    if data.shape[0] == 0:
        raise AudioFileError(f"{p}: contains no audio (0 frames)", hint="record or export the audio again")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ")
    return AudioChunk(float_to_int16(mono).astype("<i2").tobytes(), sample_rate)


def write_wav(path: str | os.PathLike[str], pcm: bytes, sample_rate: int) -> Path:
    """Write mono int16 PCM as a PCM_16 WAV file, creating parent directories; returns the path."""
    p = Path(path)
    if len(pcm) % 2:
        raise ValueError(f"PCM16 data must have an even number of bytes, got {len(pcm)}")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(p), np.frombuffer(pcm, dtype="<i2"), sample_rate, subtype="PCM_16", format="WAV")
    except (OSError, sf.SoundFileError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise AudioFileError(
            f"{p}: cannot write WAV file ({reason})", hint="check that the directory is writable and has space"
        ) from None
    return p


def _check_path(p: Path) -> None:
    if not p.exists():
        raise AudioFileError(f"{p}: audio file not found", hint="check the path and the working directory")
    if p.is_dir():
        raise AudioFileError(f"{p}: is a directory, not an audio file", hint="pass the path of a WAV/FLAC/OGG file")
    if not os.access(p, os.R_OK):
        raise AudioFileError(f"{p}: permission denied", hint="make the file readable (chmod +r)")
    if p.stat().st_size == 0:
        raise AudioFileError(f"{p}: file is empty (0 bytes)", hint="record or export the audio again")


def _check_truncated(p: Path, extra_info: str) -> None:
    # libsndfile silently reads what is there; a cut-off WAV would otherwise lose its end unnoticed.
    m = _SHORT_DATA.search(extra_info)
    if not m:
        return
    declared, present = int(m.group(1)), int(m.group(2))
    if declared > present and declared not in _STREAMING_SIZES:
        raise AudioFileError(
            f"{p}: file is truncated (header declares {declared} bytes of audio, only {present} present)",
            hint="the file was cut off while copying or recording; copy or export it again",
        )


def _libsndfile_reason(exc: sf.SoundFileError) -> str:
    text = str(exc)
    # "Error opening 'x.wav': Format not recognised." -> "format not recognised"
    text = text.split(": ", 1)[1] if text.startswith("Error opening") and ": " in text else text
    text = text.removeprefix("Error : ").strip().rstrip(".")
    return text[:1].lower() + text[1:] if text else "unknown error"
