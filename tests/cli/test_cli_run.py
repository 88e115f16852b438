"""`voicerouter run` end to end: real PortAudio on paced ALSA virtual devices (tests/alsa), the
built-in offline route (whisper + moonshine -> echo agent -> piper), replies checked on the speaker."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from rich.console import Console

from voicerouter.audio.io import read_audio
from voicerouter.cli.live_view import LiveView, level_meter, render_summary
from voicerouter.config.loader import builtin_routes
from voicerouter.routing.plan import RouteContext
from voicerouter.session.events import EventBus, EventType
from voicerouter.session.results import SessionError, SessionResult, TurnResult

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "alsa"))
from virtual_audio import VirtualAudio, loud_segments, requires_alsa  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RATE = 16000
BLOCK = 480  # the default route's VAD frame (30 ms) at 16 kHz: MicSource's capture blocksize
FIRST_LINE_TIMEOUT_S = 90


def silence(seconds: float) -> bytes:
    return bytes(int(RATE * seconds) * 2)


def sample(name: str) -> bytes:
    return read_audio(ROOT / "samples" / name).pcm


def live_env(audio: VirtualAudio) -> dict[str, str]:
    env = audio.env()
    env.pop("VOICEROUTER_ROUTES", None)  # the built-in offline table
    env.pop("VOICEROUTER_DEBUG", None)
    return env


def run_live(tmp_path: Path, mic_pcm: bytes, *args: str, duration: float) -> tuple[Any, list[dict], bytes]:
    """Run `voicerouter run --json` against a virtual mic playing `mic_pcm`; returns the process,
    the events it printed and what the virtual speaker played (16 kHz mono int16)."""
    with VirtualAudio(tmp_path, mic_pcm, block_frames=BLOCK) as audio:
        proc = subprocess.run(
            [sys.executable, "-m", "voicerouter", "run", "--tenant", "acme", "--json",
             "--duration", str(duration), *args],
            env=live_env(audio), cwd=tmp_path, capture_output=True, text=True, timeout=duration + 120,
        )
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    return proc, events, audio.speaker_pcm


def stuck(proc: subprocess.Popen, lines: list[str], what: str) -> str:
    """What a live session that never got somewhere was doing: the events it printed, and every
    thread's stack (faulthandler, on SIGABRT) with the rest of its stderr."""
    proc.send_signal(signal.SIGABRT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    stderr = proc.stderr.read() if proc.stderr else ""  # stdout is the watcher thread's
    return f"{what}; events so far:\n{''.join(lines[-40:])}\nstderr and stacks:\n{stderr[-20000:]}"


def of_type(events: list[dict], kind: str) -> list[dict]:
    return [e for e in events if e["type"] == kind]


def transcribe(pcm: bytes, start_s: float, end_s: float) -> str:
    from voicerouter.providers.local.pocketsphinx import transcribe_pcm

    a, b = int(max(0.0, start_s - 0.2) * RATE) * 2, int((end_s + 0.2) * RATE) * 2
    return transcribe_pcm(pcm[a:b], RATE)


@pytest.mark.slow
@requires_alsa
def test_live_session_answers_each_turn_on_the_speaker(tmp_path: Path) -> None:
    # Two turns with room for each reply to play out before the next one.
    mic = sample("weather_44k_stereo.wav") + silence(7.0) + sample("hello.wav") + silence(5.0)
    out = tmp_path / "out"
    proc, events, speaker = run_live(tmp_path, mic, "--out", str(out), duration=17)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "built-in offline table" in proc.stderr
    assert "2 turn(s)" in proc.stderr  # the summary

    start = of_type(events, "session_start")[0]
    assert start["route"] == "offline" and start["tenant"] == "acme" and start["source"].startswith("mic:")
    finals = {e["turn"]: e["text"] for e in of_type(events, "final_transcript")}
    assert "weather" in finals[1]
    assert "status" in finals[2] and "order" in finals[2]
    done = {e["turn"]: e for e in of_type(events, "tts_done")}
    assert set(done) == {1, 2} and not any(e["interrupted"] for e in done.values())
    assert not of_type(events, "frames_dropped")
    assert of_type(events, "audio_level")
    assert of_type(events, "session_end")[0]["reason"] == "stopped"

    # Both replies reached the speaker whole, one after the other, and say what was heard.
    segments = loud_segments(speaker, RATE, gap_s=0.6)
    assert len(segments) == 2, segments
    for (seg_start, seg_end), turn in zip(segments, (1, 2), strict=True):
        assert seg_end - seg_start == pytest.approx(done[turn]["audio_s_out"], abs=0.4)
    assert "weather" in transcribe(speaker, *segments[0])
    heard = transcribe(speaker, *segments[1])
    assert "status" in heard and "order" in heard

    # --out: the microphone, the replies as played, the event log and the result.
    mic_wav, mic_rate = sf.read(out / "mic.wav", dtype="int16")
    assert mic_rate == RATE and len(mic_wav) / RATE > 10 and np.abs(mic_wav).max() > 5000
    # replies.wav is the speaker's own timeline: what reached the virtual speaker, silence included.
    replies, replies_rate = sf.read(out / "replies.wav", dtype="int16")
    assert replies_rate == RATE
    # Same timeline as the microphone; the last reply may finish playing after the microphone stops.
    assert len(mic_wav) / RATE - 1.0 <= len(replies) / RATE <= len(mic_wav) / RATE + done[2]["audio_s_out"]
    recorded = loud_segments(replies.tobytes(), RATE, gap_s=0.6)
    assert len(recorded) == 2
    for (rec_start, rec_end), (start, end) in zip(recorded, segments, strict=True):
        assert rec_end - rec_start == pytest.approx(end - start, abs=0.05)
    conversation, conversation_rate = sf.read(out / "conversation.wav", dtype="int16")
    assert conversation_rate == RATE and conversation.shape[1] == 2
    assert np.array_equal(conversation[: len(mic_wav), 0], mic_wav)
    assert len(loud_segments(np.ascontiguousarray(conversation[:, 1]).tobytes(), RATE, gap_s=0.6)) == 2
    logged = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert [e["type"] for e in logged] == [e["type"] for e in events]
    result = json.loads((out / "session.json").read_text())
    assert [t["transcript"] for t in result["turns"]] == [finals[1], finals[2]]


@pytest.mark.slow
@requires_alsa
def test_speaking_during_a_reply_cuts_it_short(tmp_path: Path) -> None:
    from voicerouter.providers.local.piper import synthesize_pcm

    # The user speaks again ~2.5 s after the first turn's speech ends, while its reply plays.
    mic = sample("hello.wav") + silence(1.5) + sample("weather_44k_stereo.wav") + silence(6.0)
    proc, events, speaker = run_live(
        tmp_path, mic, "--input-device", "vr_mic", "--output-device", "vr_sp", duration=14
    )
    assert proc.returncode == 0, proc.stderr
    barge = of_type(events, "barge_in")
    assert [e["turn"] for e in barge] == [1]
    done = {e["turn"]: e for e in of_type(events, "tts_done")}
    assert done[1]["interrupted"] is True and done[2]["interrupted"] is False
    replies = {e["turn"]: e["text"] for e in of_type(events, "agent_reply")}
    assert "weather" in replies[2]

    full_s = len(synthesize_pcm(replies[1], RATE)) / 2 / RATE
    segments = loud_segments(speaker, RATE, gap_s=0.6)
    assert segments, "nothing was played"
    *cut, last = segments
    played_first = sum(end - begin for begin, end in cut)
    # The first reply stopped early; the reply to the interruption played to its end.
    assert played_first < full_s - 0.5
    assert last[1] - last[0] == pytest.approx(done[2]["audio_s_out"], abs=0.4)
    assert "weather" in transcribe(speaker, *last)


@pytest.mark.slow
@requires_alsa
def test_a_microphone_that_stops_mid_session_is_an_audio_error(tmp_path: Path) -> None:
    with VirtualAudio(tmp_path, sample("hello.wav"), block_frames=BLOCK) as audio:
        proc = subprocess.Popen(
            [sys.executable, "-m", "voicerouter", "run", "--json", "--duration", "60"],
            env=live_env(audio), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        assert proc.stdout is not None
        started = threading.Event()

        def watch() -> None:
            for line in proc.stdout:  # type: ignore[union-attr]
                if '"session_start"' in line:
                    started.set()

        threading.Thread(target=watch, daemon=True).start()
        assert started.wait(FIRST_LINE_TIMEOUT_S), "the session never started"
        audio.unplug_mic()
        try:
            code = proc.wait(timeout=60)
        finally:
            proc.kill()
        stderr = proc.stderr.read() if proc.stderr else ""
    assert code == 4, stderr
    assert "input device" in stderr and "delivered no audio" in stderr
    assert "Traceback" not in stderr


FAILOVER_ROUTES = """
version: 1
providers:
  local-stt: {type: pocketsphinx}
  tts-a: {type: piper}
  tts-b: {type: piper}
defaults:
  stt: [local-stt]
  tts: [tts-a, tts-b]
  agent: echo
  # As in the built-in table: on a busy machine the local engines are slow, not down. With the
  # 700 ms default both piper voices could miss their first-audio deadline: no reply, no tts_done.
  resilience: {first_result_timeout_ms: 15000, stall_timeout_ms: 10000, turn_deadline_ms: 60000}
routes:
  - name: acme-live
    match: {tenant: acme}
"""


@pytest.mark.slow
@requires_alsa
def test_ctrl_c_ends_the_session_cleanly_with_a_summary(tmp_path: Path) -> None:
    # Also: a routes file and an injected fault; the failover shows up live and the reply still plays.
    routes = tmp_path / "live-routes.yaml"
    routes.write_text(FAILOVER_ROUTES)
    mic = sample("weather_44k_stereo.wav") + silence(30.0)
    with VirtualAudio(tmp_path, mic, block_frames=BLOCK) as audio:
        proc = subprocess.Popen(
            [sys.executable, "-m", "voicerouter", "run", "--tenant", "acme", "--json", "--routes", str(routes),
             "--inject", "tts-a=error:503", "--seed", "7"],
            # faulthandler: SIGABRT on a timeout prints every thread's stack (see `stuck`)
            env=live_env(audio) | {"PYTHONFAULTHANDLER": "1"}, cwd=tmp_path,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        replied = threading.Event()
        lines: list[str] = []

        def watch() -> None:
            for line in proc.stdout:  # type: ignore[union-attr]
                lines.append(line)
                if '"tts_done"' in line:
                    replied.set()

        reader = threading.Thread(target=watch, daemon=True)
        reader.start()
        try:
            if not replied.wait(FIRST_LINE_TIMEOUT_S):
                pytest.fail(stuck(proc, lines, "no reply was spoken"))
            proc.send_signal(signal.SIGINT)
            code = proc.wait(timeout=30)
        finally:
            proc.kill()
        reader.join(timeout=5)
        stderr = proc.stderr.read() if proc.stderr else ""
    assert code == 0, stderr
    assert "ended (stopped)" in stderr and "1 turn(s)" in stderr and "median" in stderr
    assert "Traceback" not in stderr
    assert "built-in" not in stderr  # the routes file was used
    events = [json.loads(line) for line in lines]
    assert events[-1]["type"] == "session_end" and events[-1]["reason"] == "stopped"
    assert {e["route"] for e in events} == {"acme-live"}
    failovers = of_type(events, "failover")
    assert failovers and failovers[0]["stage"] == "tts"
    assert failovers[0]["from_provider"] == "tts-a" and failovers[0]["to_provider"] == "tts-b"
    assert "weather" in transcribe(audio.speaker_pcm, *loud_segments(audio.speaker_pcm, RATE, gap_s=0.6)[0])


CLOUD_ROUTES = """
version: 1
providers:
  oai-stt: {type: openai, kind: stt, model: gpt-4o-transcribe, api_key: "${VR_TEST_UNSET_KEY}"}
  local-tts: {type: piper}
defaults:
  stt: [oai-stt]
  tts: [local-tts]
"""


@pytest.mark.slow
@requires_alsa
def test_bad_device_names_and_missing_keys_fail_before_the_session(tmp_path: Path) -> None:
    with VirtualAudio(tmp_path, b"", block_frames=BLOCK) as audio:
        proc = subprocess.run(
            [sys.executable, "-m", "voicerouter", "run", "--input-device", "no-such-mic", "--duration", "1"],
            env=live_env(audio), cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )
        ambiguous = subprocess.run(
            [sys.executable, "-m", "voicerouter", "run", "--output-device", "vr_", "--duration", "1"],
            env=live_env(audio), cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )
        routes = tmp_path / "cloud.yaml"
        routes.write_text(CLOUD_ROUTES)
        env = live_env(audio)
        env.pop("VR_TEST_UNSET_KEY", None)
        no_key = subprocess.run(
            [sys.executable, "-m", "voicerouter", "run", "--routes", str(routes), "--duration", "1"],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )
    assert proc.returncode == 2, proc.stderr
    assert "no input device matches 'no-such-mic'" in proc.stderr and "vr_mic" in proc.stderr
    assert ambiguous.returncode == 2, ambiguous.stderr
    assert "matches" in ambiguous.stderr and "vr_mic" in ambiguous.stderr and "vr_spk" in ambiguous.stderr
    # A missing key stops the session before the microphone opens.
    assert no_key.returncode == 3, no_key.stderr
    assert "VR_TEST_UNSET_KEY" in no_key.stderr and "Traceback" not in no_key.stderr


@pytest.mark.slow
@requires_alsa
def test_no_microphone_is_an_audio_error(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / ".asoundrc").write_text("# no devices\n")
    env = VirtualAudio(tmp_path, b"").env()
    env.pop("VOICEROUTER_ROUTES", None)
    listed = subprocess.run(
        [sys.executable, "-m", "voicerouter", "devices", "--json"], env=env, capture_output=True, text=True, timeout=60
    )
    if any(d["max_input_channels"] for d in json.loads(listed.stdout or "[]")):
        pytest.skip("this machine has a real microphone")
    proc = subprocess.run(
        [sys.executable, "-m", "voicerouter", "run", "--duration", "1"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 4, proc.stderr
    assert "no audio input device found" in proc.stderr and "Traceback" not in proc.stderr


def test_run_without_portaudio_says_how_to_install_it(tmp_path: Path) -> None:
    env = VirtualAudio(tmp_path, b"").env()
    env["PYTHONPATH"] = str(ROOT / "tests" / "alsa" / "no_portaudio")
    env.pop("VOICEROUTER_ROUTES", None)
    proc = subprocess.run(
        [sys.executable, "-m", "voicerouter", "run", "--duration", "1"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 4, proc.stderr
    assert "PortAudio is not installed: apt-get install libportaudio2" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_duration_is_a_usage_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "voicerouter", "run", "--duration", "0"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2 and "--duration must be positive" in proc.stderr


# ---- the live view, fed by a bus -----------------------------------------------------------


def _render(view: LiveView) -> str:
    console = Console(record=True, width=140, force_terminal=False)
    console.print(view)
    return console.export_text()


def test_live_view_follows_the_session_through_a_turn() -> None:
    plan = builtin_routes().resolve(RouteContext(tenant="acme", region="eu-west-1", session_id="s1"))
    bus = EventBus("s1", tenant="acme", region="eu-west-1", route=plan.route)
    view = LiveView(plan, mic="[3] USB mic (ALSA)", speaker="[0] speakers (ALSA)", duration_s=30)
    bus.subscribe(view)

    bus.emit(EventType.SESSION_START, pipeline="stt_tts", stt=["local-stt"], tts=["local-tts"])
    assert view.state == "listening"
    bus.emit(EventType.AUDIO_LEVEL, level_dbfs=-20.0)
    bus.emit(EventType.SPEECH_START, audio_s=0.4)
    bus.emit(EventType.PARTIAL_TRANSCRIPT, turn=1, text="what is the")
    text = _render(view)
    assert "user speaking" in text and "what is the" in text and "-20 dBFS" in text
    assert "route offline (stt_tts)" in text and "tenant acme" in text and "USB mic" in text

    bus.emit(EventType.TURN_END, turn=1, reason="silence", delay_ms=600.0)
    assert view.state == "thinking"
    bus.emit(EventType.FAILOVER, stage="stt", from_provider="dg", to_provider="local-stt", reason="timeout")
    bus.emit(EventType.FINAL_TRANSCRIPT, turn=1, text="what is the weather today", latency_ms=120.0)
    bus.emit(EventType.AGENT_REPLY, turn=1, text="You said: what is the weather today.", latency_ms=1.0)
    bus.emit(EventType.TTS_FIRST_AUDIO, turn=1, latency_ms=480.0)
    assert view.state == "speaking"
    bus.emit(EventType.BARGE_IN, turn=1, audio_s=3.0, speech_ms=240)
    bus.emit(EventType.FRAMES_DROPPED, dropped=2, total=2)
    text = _render(view)
    assert "what is the weather today" in text and "You said: what is the weather today. [cut]" in text
    assert "600 ms" in text and "120 ms" in text and "480 ms" in text and "1080 ms" in text  # voice to voice
    assert "failover stt: dg → local-stt (timeout)" in text
    assert "barge-in" in text and "dropped 2 blocks" in text
    bus.emit(EventType.SESSION_END, turns=1, reason="stopped")
    assert view.state == "ended"


def test_level_meter_spans_silence_to_full_scale() -> None:
    assert level_meter(-120.0).plain.startswith("·" * 24)
    assert level_meter(0.0).plain.startswith("█" * 24)
    half = level_meter(-30.0).plain
    assert half.count("█") == 12 and "-30 dBFS" in half
    assert "--" in level_meter(None).plain


def test_summary_lists_turns_latencies_and_medians_as_plain_text() -> None:
    turns = [
        TurnResult(1, 0.4, 2.0, transcript="what is [the] weather", reply="You said: what is [the] weather.",
                   wall_latency_ms={"turn_end_delay": 600, "stt_final": 100, "tts_first_audio": 500}, interrupted=True),
        TurnResult(2, 5.0, 6.0, transcript="thanks", reply="You said: thanks.",
                   wall_latency_ms={"turn_end_delay": 400, "stt_final": 300, "tts_first_audio": 700}),
    ]
    result = SessionResult("s1", "offline", "stt_tts", turns=turns, reason="stopped",
                           errors=[SessionError("every tts provider failed", stage="tts", turn=3)])
    console = Console(record=True, width=160, force_terminal=False)
    render_summary(result, console, dropped=3, out_files=["out/mic.wav"])
    text = console.export_text()
    assert "session s1 ended (stopped) · route offline · 2 turn(s) · 3 audio blocks dropped" in text
    # Brackets in what was said are shown as said, not taken for markup.
    assert "what is [the] weather" in text and "You said: what is [the] weather. [cut]" in text
    median = next(line for line in text.splitlines() if "median" in line)
    assert "500 ms" in median and "200 ms" in median and "600 ms" in median
    assert "error turn 3: every tts provider failed" in text and "wrote out/mic.wav" in text
