"""The device layer through real PortAudio on ALSA virtual devices (see tests/alsa/virtual_audio.py).

PortAudio reads its device list once, when sounddevice is imported, so every device test runs
its program in a subprocess whose HOME holds the `.asoundrc` with the virtual devices.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from voicerouter.audio.devices import DeviceInfo, find_device
from voicerouter.audio.io import read_audio
from voicerouter.errors import AudioError, UsageError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "alsa"))
from virtual_audio import MIC, SPEAKER, VirtualAudio, loud_segments, requires_alsa, sounding_s  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
NO_PORTAUDIO = ROOT / "tests" / "alsa" / "no_portaudio"
RATE = 16000
FRAME_MS = 30
BLOCK = RATE * FRAME_MS // 1000  # MicSource captures one frame per block at 16 kHz


def run_py(code: str, audio: VirtualAudio, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=audio.env(), capture_output=True, text=True, timeout=timeout
    )


# ---- device selection (no PortAudio needed) ------------------------------------------------


def _dev(index: int, name: str, ins: int = 2, outs: int = 2, **kw: bool) -> DeviceInfo:
    return DeviceInfo(index, name, "ALSA", ins, outs, 48000.0, **kw)


DEVICES = [
    _dev(0, "HDA Intel PCH: ALC257 Analog (hw:0,0)", default_input=True, default_output=True),
    _dev(1, "USB Headset: Audio (hw:1,0)"),
    _dev(2, "HDMI 0 (hw:0,3)", ins=0),
    _dev(3, "pulse"),
    _dev(4, "pulse monitor", outs=0),
]


def test_find_device_by_index_name_substring_or_default() -> None:
    assert find_device(None, "input", DEVICES).index == 0
    assert find_device("1", "input", DEVICES).index == 1
    assert find_device(1, "output", DEVICES).index == 1
    assert find_device("usb", "input", DEVICES).index == 1
    assert find_device("HDMI", "output", DEVICES).index == 2
    # An exact name wins over the longer names that contain it.
    assert find_device("PULSE", "input", DEVICES).index == 3


def test_find_device_errors_list_the_candidates() -> None:
    with pytest.raises(UsageError) as ambiguous:
        find_device("hw:", "input", DEVICES)
    assert "matches 2 devices" in str(ambiguous.value)
    assert "[0] HDA Intel" in str(ambiguous.value) and "[1] USB Headset" in str(ambiguous.value)

    with pytest.raises(UsageError) as none:
        find_device("bluetooth", "output", DEVICES)
    assert "no output device matches 'bluetooth'" in str(none.value)
    assert "[2] HDMI 0" in str(none.value) and "pulse monitor" not in str(none.value)

    with pytest.raises(UsageError, match="has no input channels"):
        find_device("2", "input", DEVICES)
    with pytest.raises(UsageError, match="no audio device with index 9"):
        find_device(9, "input", DEVICES)
    with pytest.raises(AudioError, match="no audio input device found"):
        find_device(None, "input", [_dev(0, "speaker only", ins=0)])


def test_missing_portaudio_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    env = VirtualAudio(tmp_path, b"").env()
    env["PYTHONPATH"] = str(NO_PORTAUDIO)
    proc = subprocess.run(
        [sys.executable, "-m", "voicerouter", "devices"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 4, proc.stderr
    assert "PortAudio is not installed: apt-get install libportaudio2" in proc.stderr
    assert "brew install portaudio" in proc.stderr
    assert "Traceback" not in proc.stderr


# ---- real PortAudio on virtual ALSA devices ------------------------------------------------


@pytest.mark.slow
@requires_alsa
def test_devices_command_lists_the_virtual_devices(tmp_path: Path) -> None:
    with VirtualAudio(tmp_path, b"") as audio:
        proc = subprocess.run(
            [sys.executable, "-m", "voicerouter", "devices", "--json"],
            env=audio.env(), capture_output=True, text=True, timeout=60,
        )
    assert proc.returncode == 0, proc.stderr
    devices = {d["name"]: d for d in json.loads(proc.stdout)}
    assert {MIC, SPEAKER} <= set(devices)
    mic = devices[MIC]
    assert mic["hostapi"] == "ALSA" and mic["max_input_channels"] > 0 and mic["default_samplerate"] > 0
    assert isinstance(mic["index"], int) and isinstance(mic["default_input"], bool)


@pytest.mark.slow
@requires_alsa
def test_devices_command_with_no_sound_card_says_so(tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / ".asoundrc").write_text("# no devices\n")
    env = VirtualAudio(tmp_path, b"").env()
    proc = subprocess.run(
        [sys.executable, "-m", "voicerouter", "devices", "--json"], env=env, capture_output=True, text=True, timeout=60
    )
    if json.loads(proc.stdout or "null"):
        pytest.skip("this machine has a real sound card")
    plain = subprocess.run(
        [sys.executable, "-m", "voicerouter", "devices"], env=env, capture_output=True, text=True, timeout=60
    )
    assert plain.returncode == 0 and "no audio devices found" in plain.stdout


MIC_SCRIPT = r"""
import asyncio, json, sys
from voicerouter.audio.devices import MicSource
from voicerouter.session.events import EventBus, EventType

async def main():
    bus = EventBus("test")
    mic = MicSource(sys.argv[1], frame_ms=int(sys.argv[2]), bus=bus)
    got = bytearray()
    async for frame in mic.frames():
        assert len(frame) == mic.frame_ms * 16 * 2
        got += frame
        if len(got) >= int(sys.argv[4]):
            break
    await mic.aclose()
    open(sys.argv[3], "wb").write(bytes(got))
    levels = [e.data["level_dbfs"] for e in bus.history if e.type == EventType.AUDIO_LEVEL]
    print(json.dumps({"device_rate": mic.device_rate, "channels": mic.channels,
                      "dropped": mic.blocks_dropped, "levels": levels}))

asyncio.run(main())
"""


@pytest.mark.slow
@requires_alsa
def test_mic_source_delivers_the_microphone_audio_unchanged(tmp_path: Path, repo_root: Path) -> None:
    speech = read_audio(repo_root / "samples" / "hello.wav").pcm
    out = tmp_path / "captured.raw"
    with VirtualAudio(tmp_path, speech, block_frames=BLOCK) as audio:
        proc = run_py(MIC_SCRIPT, audio, MIC, str(FRAME_MS), str(out), str(len(speech) + RATE))
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["device_rate"] == RATE and info["channels"] == 1
    assert info["dropped"] == 0
    captured = out.read_bytes()
    # Sample for sample what the microphone heard, then the silence after it.
    assert captured[: len(speech)] == speech
    assert not any(captured[len(speech) :])
    # The level meter saw the speech and the silence.
    assert max(info["levels"]) > -40 and min(info["levels"]) < -100


SLOW_CONSUMER_SCRIPT = r"""
import asyncio, json, sys
from voicerouter.audio.devices import MicSource
from voicerouter.session.events import EventBus, EventType

async def main():
    bus = EventBus("test")
    mic = MicSource(sys.argv[1], frame_ms=30, bus=bus, queue_blocks=4)
    n = 0
    async for frame in mic.frames():
        n += 1
        await asyncio.sleep(0.09)  # three frames' time per frame: the consumer falls behind
        if n == 20:
            break
    await mic.aclose()
    drops = [e.data for e in bus.history if e.type == EventType.FRAMES_DROPPED]
    print(json.dumps({"delivered": n, "dropped": mic.blocks_dropped, "events": drops}))

asyncio.run(main())
"""


@pytest.mark.slow
@requires_alsa
def test_a_consumer_that_falls_behind_loses_blocks_and_says_so(tmp_path: Path) -> None:
    with VirtualAudio(tmp_path, bytes(RATE * 2 * 5), block_frames=BLOCK) as audio:
        proc = run_py(SLOW_CONSUMER_SCRIPT, audio, MIC)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["delivered"] == 20
    # The device kept its pace (about three blocks per frame taken): the excess was dropped, not queued.
    assert info["dropped"] >= 20
    # Reported in batches (not one event per block), every drop counted once.
    events = info["events"]
    assert 1 <= len(events) < info["dropped"]
    assert sum(e["dropped"] for e in events) == events[-1]["total"] == info["dropped"]
    assert {e["reason"] for e in events} == {"consumer_behind"}


SPEAKER_SCRIPT = r"""
import asyncio, json, sys
import numpy as np
from voicerouter.audio.devices import SpeakerSink
from voicerouter.providers.base import AudioChunk

def tone(seconds, rate=22050):
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()

async def main():
    sink = SpeakerSink(sys.argv[1])
    whole = tone(1.5)
    for i in range(0, len(whole), 4410):  # TTS-like chunks at 22.05 kHz
        await sink.write(AudioChunk(whole[i:i + 4410], 22050))
    await sink.drain()
    await asyncio.sleep(1.0)
    await sink.write(AudioChunk(tone(4.0), 22050))
    await asyncio.sleep(0.8)
    sink.clear()  # barge-in
    await asyncio.sleep(1.0)
    await sink.aclose()
    print(json.dumps({"device_rate": sink.device_rate, "clears": sink.clears, "played_s": sink.seconds_played}))

asyncio.run(main())
"""


@pytest.mark.slow
@requires_alsa
def test_speaker_sink_plays_replies_and_clear_cuts_them(tmp_path: Path) -> None:
    with VirtualAudio(tmp_path, b"", block_frames=BLOCK) as audio:
        proc = run_py(SPEAKER_SCRIPT, audio, SPEAKER)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    segments = loud_segments(audio.speaker_pcm, RATE, gap_s=0.6)
    assert len(segments) == 2, segments
    first, second = (sounding_s(audio.speaker_pcm, RATE, start, end) for start, end in segments)
    # The first reply is played whole (resampled 22.05 -> 16 kHz, nothing lost or added).
    assert first == pytest.approx(1.5, abs=0.05)
    # The second is cut by clear(): far less than its 4 s reached the speaker.
    assert 0.2 < second < 2.0
    assert info["clears"] == 1
    assert info["played_s"] == pytest.approx(1.5 + second, abs=0.3)


@pytest.mark.slow
@requires_alsa
def test_devices_with_one_fixed_rate_are_used_at_that_rate(tmp_path: Path, repo_root: Path) -> None:
    from voicerouter.audio.convert import resample

    # A telephone-band microphone and speaker that refuse every rate but 8 kHz.
    phone = read_audio(repo_root / "samples" / "two_turns_8k.wav", sample_rate=8000).pcm[: 8000 * 2 * 3]
    out = tmp_path / "captured.raw"
    with VirtualAudio(tmp_path, phone, rate=8000, block_frames=8000 * FRAME_MS // 1000, fixed_rate=True) as audio:
        mic = run_py(MIC_SCRIPT, audio, MIC, str(FRAME_MS), str(out), str(2 * RATE * 2))
        speaker = run_py(SPEAKER_SCRIPT, audio, SPEAKER)
    assert mic.returncode == 0, mic.stderr
    # Trying the refused rates made alsa-lib complain; that chatter is not shown to the user.
    assert "ALSA lib" not in mic.stderr
    info = json.loads(mic.stdout)
    assert info["device_rate"] == 8000 and info["dropped"] == 0
    # Delivered as 16 kHz frames: the same sound as resampling the whole recording at once.
    captured = np.frombuffer(out.read_bytes(), dtype="<i2").astype(np.float64)[: 2 * RATE]
    expected = np.frombuffer(resample(phone, 8000, RATE), dtype="<i2").astype(np.float64)[: 2 * RATE]
    assert captured.size == expected.size == 2 * RATE
    assert np.corrcoef(captured, expected)[0, 1] > 0.99

    assert speaker.returncode == 0, speaker.stderr
    assert json.loads(speaker.stdout)["device_rate"] == 8000
    segments = loud_segments(audio.speaker_pcm, 8000, gap_s=0.6)
    assert len(segments) == 2 and sounding_s(audio.speaker_pcm, 8000, *segments[0]) == pytest.approx(1.5, abs=0.05)


UNPLUG_SCRIPT = r"""
import asyncio, sys, time
from voicerouter.audio.devices import SpeakerSink
from voicerouter.errors import AudioError
from voicerouter.providers.base import AudioChunk

async def main():
    sink = SpeakerSink(sys.argv[1])
    await sink.write(AudioChunk(bytes(16000 * 2), 16000))
    await sink.drain()
    print("unplug", flush=True)
    sys.stdin.readline()  # the test has unplugged the speaker
    await sink.write(AudioChunk(b"\x10\x00" * 16000 * 5, 16000))
    try:
        await sink.drain()
    except AudioError as exc:
        print("error:", exc, flush=True)
    await sink.aclose()

asyncio.run(main())
"""


@pytest.mark.slow
@requires_alsa
def test_a_speaker_that_stops_taking_audio_is_an_audio_error(tmp_path: Path) -> None:
    with VirtualAudio(tmp_path, b"", block_frames=BLOCK) as audio:
        proc = subprocess.Popen(
            [sys.executable, "-c", UNPLUG_SCRIPT, SPEAKER], env=audio.env(), text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "unplug"
        audio.unplug_speaker()
        proc.stdin.write("\n")
        proc.stdin.flush()
        try:
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
    assert proc.returncode == 0, err
    assert "error: output device" in out and "stopped playing (was it disconnected?)" in out
