"""Property-based: any WAV header (plausible or hostile) gives frames or a named AudioFileError,
never another exception or a hang; through the CLI, bad files never lose a good file's result."""

from __future__ import annotations

import asyncio
import json
import random
import struct
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voicerouter.audio.source import FileSource
from voicerouter.errors import AudioFileError

u16 = st.one_of(st.sampled_from([0, 1, 2, 3, 6, 7, 8, 16, 24, 32, 64, 255, 0xFFFE, 0xFFFF]), st.integers(0, 0xFFFF))
u32 = st.one_of(st.sampled_from([0, 1, 8000, 16000, 44100, 48000, 0x7FFFFFFF, 0xFFFFFFFF]), st.integers(0, 0xFFFFFFFF))

header = st.fixed_dictionaries({
    "format": st.sampled_from([1, 3, 6, 7, 0xFFFE, 0, 2, 85]),
    "channels": u16,
    "rate": u32,
    "byte_rate": u32,
    "align": u16,
    "bits": u16,
    "data_size": u32,
    "fmt_size": st.sampled_from([16, 18, 40, 0, 2, 1000]),
    "payload": st.binary(max_size=4000),
    "riff_size": st.one_of(st.none(), u32),
})


def wav_bytes(h: dict) -> bytes:
    fmt = struct.pack("<HHIIHH", h["format"], h["channels"], h["rate"], h["byte_rate"], h["align"], h["bits"])
    fmt = fmt + bytes(max(0, h["fmt_size"] - len(fmt)))
    body = b"WAVE" + b"fmt " + struct.pack("<I", h["fmt_size"]) + fmt[: h["fmt_size"]]
    body += b"data" + struct.pack("<I", h["data_size"]) + h["payload"]
    riff = h["riff_size"] if h["riff_size"] is not None else len(body)
    return b"RIFF" + struct.pack("<I", riff) + body


def first_frames(path: Path, limit: int = 400) -> int:
    async def read() -> int:
        n = 0
        async for frame in FileSource(path, frame_ms=30, tail_silence_ms=0).frames():
            assert len(frame) == 960
            n += 1
            if n == limit:
                break
        return n

    return asyncio.run(read())


@settings(max_examples=1500, deadline=timedelta(seconds=10), suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header)
def test_any_wav_header_gives_frames_or_a_named_error(tmp_path, h):
    path = tmp_path / "h.wav"
    path.write_bytes(wav_bytes(h))
    try:
        first_frames(path)
    except AudioFileError as exc:
        assert str(path) in str(exc) and "\n" not in exc.message


def hostile_files(directory: Path, n: int) -> list[Path]:
    rng = random.Random(7)
    paths = []
    for i in range(n):
        h = {
            "format": rng.choice([1, 3, 0xFFFE, 0, 85]), "channels": rng.choice([0, 1, 2, 300, 0xFFFF]),
            "rate": rng.choice([0, 1, 16000, 44100, 0xFFFFFFFF]), "byte_rate": rng.randrange(1 << 32),
            "align": rng.choice([0, 2, 4, 0xFFFF]), "bits": rng.choice([0, 8, 16, 24, 32, 64, 7]),
            "data_size": rng.choice([0, 100, 2_000_000_000, 0xFFFFFFFF]), "fmt_size": rng.choice([16, 18, 2]),
            "payload": rng.randbytes(rng.randrange(0, 3000)), "riff_size": rng.choice([None, 0, 0xFFFFFFFF]),
        }
        path = directory / f"hostile-{i:02d}.wav"
        path.write_bytes(wav_bytes(h))
        paths.append(path)
    return paths


@pytest.mark.slow
def test_replay_of_hostile_files_keeps_the_good_ones(tmp_path):
    good = tmp_path / "good.wav"
    sf.write(good, np.zeros(4800, dtype=np.int16), 16000, subtype="PCM_16")
    files = [*hostile_files(tmp_path, 24), good]
    proc = subprocess.run(
        [sys.executable, "-m", "voicerouter", "replay", "--json", *map(str, files)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode in (0, 1), proc.stderr
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr
    sessions = {Path(s["file"]).name: s for s in json.loads(proc.stdout)["sessions"]}
    assert len(sessions) == len(files) and sessions["good.wav"]["ok"] is True
