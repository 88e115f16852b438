"""The terminal timeline: bars on the input-audio axis and one labelled line per turn or incident."""

from __future__ import annotations

from pathlib import Path

from voicerouter.observe.logs import read_events
from voicerouter.observe.stats import by_session
from voicerouter.observe.timeline_text import QUIET, REPLY, SPEECH, render_session, render_timeline_text

FIXTURES = Path(__file__).parent / "fixtures"


def sessions():
    return by_session(read_events([FIXTURES]).events)


def test_one_block_per_session():
    text = render_timeline_text(read_events([FIXTURES]).events)
    blocks = text.split("\n\n")
    assert [b.splitlines()[0].split()[1] for b in blocks] == ["s-acme-1", "s-acme-2", "s-globex-1"]
    assert render_timeline_text([]) == "(no events)"


def test_header_turn_lines_and_incidents():
    text = render_session(sessions()["s-acme-1"])
    lines = text.splitlines()
    assert lines[0] == "session s-acme-1  tenant=acme region=eu-west route=acme-eu  stt=dg,oai-stt tts=eleven"
    assert lines[1].lstrip().startswith("|0s")
    turn2 = next(line for line in lines if "turn 2 " in line)
    assert turn2.startswith("   7.60s turn 2  5.00–7.20 s  end complete +400 ms")
    assert "stt oai-stt 1720 ms" in turn2 and "tts eleven 1800 ms" in turn2 and "v→v 2200 ms" in turn2
    assert '"what\'s the weather in paris"' in turn2
    failover = next(line for line in lines if "failover" in line)
    assert failover == "   9.10s ⚠ failover stt dg → oai-stt (timeout, 1500 ms)"
    # rows are in audio order: turn 1, turn 2, the failover during turn 2's STT, turn 3
    order = [line.split()[1] for line in lines if line.strip()[:1].isdigit()]
    assert order == ["turn", "turn", "⚠", "turn"]
    assert lines[-1] == "source: hello.wav"


def test_bars_follow_speech_and_replies():
    lines = render_session(sessions()["s-acme-1"], width=80).splitlines()
    you = lines[2][8:]
    reply = lines[3][8:]
    assert len(you) == len(reply) == 80
    duration = 16.0  # the session ends at t=16 s (audio and session clock agree in a live run)
    col = lambda seconds: int(seconds / duration * 80)  # noqa: E731
    assert you[col(1.0)] == SPEECH and you[col(3.5)] == QUIET and you[col(6.0)] == SPEECH
    assert reply[col(3.5)] == REPLY and reply[col(1.0)] == QUIET  # first reply: 2.95 .. 4.35 s
    assert reply[col(10.0)] == REPLY  # second reply: 9.4 .. 11.4 s


def test_replayed_session_is_drawn_on_the_audio_axis():
    text = render_session(sessions()["s-globex-1"])
    # globex ran at twice real time; incidents still land at their audio position (turn 3 ended at 9.10 s)
    assert "   9.10s turn 3  7.00–8.50 s" in text
    error = next(line for line in text.splitlines() if "✗ error" in line)
    assert error.startswith("   9.45s ✗ error tts local-tts: piper synthesis failed")


def test_retry_and_hedge_lines():
    text = render_session(sessions()["s-acme-2"])
    assert "↻ retry tts eleven #1 (rate_limited, wait 200 ms)" in text
    assert "⇉ hedge stt dg vs oai-stt, won by dg" in text


def test_live_events_from_a_bus_history():
    from voicerouter.session.events import EventBus, EventType

    clock = [0.0]
    bus = EventBus("live-1", route="r", clock=lambda: clock[0])
    for t, kind, data in [
        (0.0, EventType.SESSION_START, {"stt": ["a"], "tts": ["b"]}),
        (1.0, EventType.SPEECH_START, {"audio_s": 1.0}),
        (2.0, EventType.SPEECH_END, {"audio_s": 2.0}),
        (2.5, EventType.TURN_END, {"turn": 1, "reason": "silence", "start_s": 1.0, "end_s": 2.0, "delay_ms": 500}),
        (2.8, EventType.TTS_FIRST_AUDIO, {"turn": 1, "provider": "b", "latency_ms": 300}),
        (3.8, EventType.TTS_DONE, {"turn": 1, "audio_s_out": 1.0, "start_audio_s": 2.8}),
    ]:
        clock[0] = t
        bus.emit(kind, **data)
    text = render_timeline_text(bus.history)
    assert text.splitlines()[0] == "session live-1  route=r  stt=a tts=b"
    assert "   2.50s turn 1  1.00–2.00 s  end silence +500 ms  tts b 300 ms  v→v 800 ms" in text


def test_package_exports_load_lazily():
    import subprocess
    import sys

    code = (
        "import sys, voicerouter.observe as o; assert callable(o.render_timeline_text); "
        "print(sorted(m for m in ('matplotlib', 'rich', 'opentelemetry') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_warning_barge_in_and_dropped_audio_lines():
    from voicerouter.observe.timeline_text import incident_line

    base = {"session_id": "s", "t": 1.0}
    assert incident_line(base | {"type": "warning", "stage": "stt", "message": "no words recognised"}) == (
        "! warning stt: no words recognised"
    )
    assert incident_line(base | {"type": "barge_in", "turn": 2}) == "✋ barge-in"
    assert incident_line(base | {"type": "frames_dropped", "dropped": 3, "reason": "overflow"}) == (
        "! 3 audio block(s) dropped (overflow)"
    )
    assert incident_line(base | {"type": "audio_level", "level_dbfs": -30}) is None
