"""Audio files in and out: read anything libsndfile reads as 16 kHz mono int16, write PCM16 WAV.

Every failure becomes an `AudioFileError` naming the file, what is wrong and how to fix it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
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


# What a file may declare before we refuse it unread (a header can claim anything).
MAX_SECONDS = 12 * 3600
MAX_CHANNELS = 64
MIN_RATE, MAX_RATE = 1000, 768_000
BLOCK_SAMPLES = 1 << 18  # samples (all channels) per read: 1 MiB of float32, whatever the file's size


def open_audio(path: str | os.PathLike[str]) -> sf._SoundFileInfo:
    """Check a file without reading its audio: a regular readable file, a format libsndfile reads,
    not truncated, and plausible length, channels and rate. Float files are scanned (in blocks) for
    NaN or infinite samples. Returns libsndfile's info; every problem is an `AudioFileError`."""
    p = Path(path)
    _check_path(p)
    try:
        info = sf.info(str(p))
        _check_truncated(p, info.extra_info or "")
    except sf.SoundFileError as exc:
        raise AudioFileError(
            f"{p}: not a readable audio file ({_libsndfile_reason(exc)})", hint=_CONVERT_HINT
        ) from None
    except OSError as exc:
        raise AudioFileError(
            f"{p}: cannot be read ({exc.strerror or exc})", hint="check the file's permissions"
        ) from None
    if not MIN_RATE <= info.samplerate <= MAX_RATE:
        raise AudioFileError(
            f"{p}: declares a sample rate of {info.samplerate} Hz (accepted: {MIN_RATE}-{MAX_RATE} Hz)",
            hint=_CONVERT_HINT,
        )
    if not 1 <= info.channels <= MAX_CHANNELS:
        raise AudioFileError(f"{p}: declares {info.channels} channels (accepted: 1-{MAX_CHANNELS})", hint=_CONVERT_HINT)
    if info.frames <= 0:
        raise AudioFileError(f"{p}: contains no audio (0 frames)", hint="record or export the audio again")
    seconds = info.frames / info.samplerate
    if seconds > MAX_SECONDS:
        raise AudioFileError(
            f"{p}: declares {seconds / 3600:.1f} hours of audio (replays take at most {MAX_SECONDS // 3600} hours)",
            hint="cut the recording into shorter files",
        )
    if info.subtype in ("FLOAT", "DOUBLE"):
        for block, start in _blocks(p, info):
            bad = ~np.isfinite(block)
            if bad.any():
                at = (start + int(np.argmax(bad.any(axis=1)))) / info.samplerate
                raise AudioFileError(
                    f"{p}: contains NaN or infinite samples (the first at {at:.3f} s)",
                    hint="the recording is damaged; export it again",
                )
    return info


def read_blocks(path: str | os.PathLike[str], info: sf._SoundFileInfo) -> Iterator[np.ndarray]:
    """The file's audio as mono float32 blocks of bounded size, read from disk as they are needed."""
    for block, _ in _blocks(Path(path), info):
        yield block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]


def _blocks(p: Path, info: sf._SoundFileInfo) -> Iterator[tuple[np.ndarray, int]]:
    size = max(256, BLOCK_SAMPLES // info.channels)
    start = 0
    try:
        with sf.SoundFile(str(p)) as f:
            for block in f.blocks(blocksize=size, dtype="float32", always_2d=True):
                yield block, start
                start += block.shape[0]
    except sf.SoundFileError as exc:
        raise AudioFileError(f"{p}: not a readable audio file ({_libsndfile_reason(exc)})", hint=_CONVERT_HINT) from None
    except OSError as exc:
        raise AudioFileError(f"{p}: cannot be read ({exc.strerror or exc})", hint="check the file's permissions") from None


def read_audio(path: str | os.PathLike[str], sample_rate: int = PIPELINE_RATE) -> AudioChunk:
    """Read a whole audio file (any rate, bit depth, channel count) as mono int16 at `sample_rate`.

    For sessions use `FileSource`, which streams; this is for short clips (load tests, plots)."""
    p = Path(path)
    info = open_audio(p)
    mono = np.concatenate(list(read_blocks(p, info)))
    if info.samplerate != sample_rate:
        mono = soxr.resample(mono, info.samplerate, sample_rate, quality="HQ")
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
    if not p.is_file():  # opening a FIFO would wait for a writer; a device never ends
        raise AudioFileError(
            f"{p}: is not a regular file (a pipe, socket or device)", hint="save the audio to a file and pass that"
        )
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
