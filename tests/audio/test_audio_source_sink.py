import asyncio
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voicerouter.audio.io import read_audio
from voicerouter.audio.sink import AudioSink, MemorySink, NullSink, WavSink
from voicerouter.audio.source import AudioSource, FileSource, PcmSource
from voicerouter.errors import AudioFileError
from voicerouter.providers.base import AudioChunk

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def tone_pcm(rate: int, seconds: float, freq: float = 440.0) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t) * 32767).astype("<i2").tobytes()


async def collect(source: AudioSource) -> list[bytes]:
    return [f async for f in source.frames()]


async def test_file_source_yields_exact_frames_with_tail_silence():
    src = FileSource(FIXTURES / "jfk.flac", frame_ms=20, tail_silence_ms=500)
    assert isinstance(src, AudioSource)
    assert (src.sample_rate, src.frame_ms) == (16000, 20)
    got = await collect(src)
    assert {len(f) for f in got} == {640}
    assert len(got) == (11.0 + 0.5) / 0.02
    joined = b"".join(got)
    assert joined[: len(src.pcm)] == src.pcm
    assert joined[len(src.pcm) :] == bytes(16000)


async def test_file_source_reports_bad_files_when_created(tmp_path):
    with pytest.raises(AudioFileError, match="nothing.wav"):
        FileSource(tmp_path / "nothing.wav")


async def test_pcm_source_resamples_and_pads():
    src = PcmSource(tone_pcm(8000, 0.1), sample_rate=8000, frame_ms=30, tail_silence_ms=0)
    got = await collect(src)
    assert src.duration_s == pytest.approx(0.1, abs=0.001)
    assert len(got) == 4 and all(len(f) == 960 for f in got)
    assert got[-1][-(960 - 1600 * 2 % 960) :] == bytes(960 - 1600 * 2 % 960)


async def test_realtime_source_is_paced_by_the_clock():
    src = PcmSource(bytes(16000 * 2 // 10), frame_ms=10, realtime=True, tail_silence_ms=0)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    got = await collect(src)
    # 10 frames of 10 ms cannot be delivered before 100 ms have passed (a lower bound only).
    assert len(got) == 10
    assert loop.time() - t0 >= 0.099


async def test_fast_source_lets_other_tasks_run():
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await collect(PcmSource(bytes(3200), frame_ms=10, tail_silence_ms=0))
    task.cancel()
    assert ticks >= 5


async def test_null_sink_counts():
    sink = NullSink()
    assert isinstance(sink, AudioSink)
    await sink.write(AudioChunk(bytes(44100), 22050))
    sink.clear()
    await sink.drain()
    await sink.aclose()
    assert sink.samples_written == 22050 and sink.seconds_written == pytest.approx(1.0)
    assert sink.clears == 1


async def test_memory_sink_resamples_chunks_of_any_rate_without_losing_audio():
    sink = MemorySink(sample_rate=16000)
    assert isinstance(sink, AudioSink)
    pcm = tone_pcm(22050, 1.0)
    for i in range(0, len(pcm), 1001 * 2):  # TTS-like chunks
        await sink.write(AudioChunk(pcm[i : i + 2002], 22050))
    await sink.write(AudioChunk(tone_pcm(16000, 0.5), 16000))
    await sink.write(AudioChunk(tone_pcm(48000, 0.25), 48000))
    await sink.drain()
    assert abs(len(sink.pcm) // 2 - 16000 * 1.75) <= 3
    assert sink.duration_s == pytest.approx(1.75, abs=0.001)
    sink.clear()
    assert sink.clears == 1 and sink.duration_s == pytest.approx(1.75, abs=0.001)
    await sink.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await sink.write(AudioChunk(bytes(2), 16000))


async def test_wav_sink_writes_file_at_its_rate_on_close(tmp_path):
    path = tmp_path / "out" / "reply.wav"
    sink = WavSink(path)
    await sink.write(AudioChunk(tone_pcm(16000, 0.5), 16000))
    await sink.write(AudioChunk(tone_pcm(22050, 0.5), 22050))
    assert not path.exists()
    await sink.aclose()
    await sink.aclose()  # idempotent
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.subtype) == (22050, 1, "PCM_16")
    assert abs(info.frames - 22050) <= 2
    assert read_audio(path).duration_s == pytest.approx(1.0, abs=0.001)


async def test_sinks_and_sources_meet_the_transport_protocols():
    for sink in (NullSink(), MemorySink()):
        assert isinstance(sink, AudioSink)
        await sink.write(AudioChunk(bytes(16000), 8000))  # 1 s
        assert sink.played_s == pytest.approx(1.0)  # stored audio counts as played
    assert isinstance(PcmSource(bytes(3200)), AudioSource)


async def test_paced_sink_counts_only_what_was_played_before_a_barge_in():
    from voicerouter.session.replay import PacedSink

    inner = MemorySink()
    sink = PacedSink(inner)
    assert isinstance(sink, AudioSink)
    await sink.write(AudioChunk(bytes(32000 * 2), 16000))  # 2 s, "playing" from now on
    sink.clear()  # barge-in at once: almost nothing was heard
    assert sink.played_s < 1.0
    assert inner.played_s == pytest.approx(2.0)  # the wrapped store still holds it all
