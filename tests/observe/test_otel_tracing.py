"""OpenTelemetry spans from session events (in-memory exporter), and the no-op when tracing is off."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from voicerouter.observe import otel
from voicerouter.observe.logs import read_events
from voicerouter.session.events import EventBus, EventType

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def memory():
    pytest.importorskip("opentelemetry.sdk.trace")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def run_session(bus: EventBus, clock: list[float]) -> None:
    """One two-turn session; turn 1 fails over from dg to oai-stt and retries TTS."""

    def at(t: float, kind: EventType, **data) -> None:
        clock[0] = t
        bus.emit(kind, **data)

    at(0.0, EventType.SESSION_START, pipeline="stt_tts", stt=["dg", "oai-stt"], tts=["eleven"], source="in.wav")
    at(0.5, EventType.SPEECH_START, audio_s=0.5)
    at(2.0, EventType.SPEECH_END, audio_s=2.0)
    at(2.6, EventType.TURN_END, turn=1, reason="silence", start_s=0.5, end_s=2.0, delay_ms=600)
    at(4.1, EventType.FAILOVER, turn=1, stage="stt", from_provider="dg", to_provider="oai-stt", reason="timeout")
    at(4.3, EventType.FINAL_TRANSCRIPT, provider="oai-stt", turn=1, text="hello", latency_ms=1700)
    at(4.31, EventType.AGENT_REPLY, turn=1, text="hi", latency_ms=10)
    at(4.32, EventType.TTS_START, provider="eleven", turn=1, text="hi")
    at(4.4, EventType.RETRY, provider="eleven", turn=1, stage="tts", attempt=1, delay_ms=100, reason="rate_limited")
    at(4.8, EventType.TTS_FIRST_AUDIO, provider="eleven", turn=1, latency_ms=2200)
    at(5.5, EventType.TTS_DONE, provider="eleven", turn=1, audio_s_out=0.7, start_audio_s=4.8)
    at(7.0, EventType.TURN_END, turn=2, reason="complete", start_s=6.0, end_s=6.8, delay_ms=200)
    at(
        7.2,
        EventType.ERROR,
        turn=2,
        stage="stt",
        provider="oai-stt",
        error_type="AuthError",
        message="401 from oai-stt",
    )


def test_spans_carry_route_context_and_nest(memory):
    provider, exporter = memory
    clock = [0.0]
    bus = EventBus("sess-1", tenant="acme", region="eu-west", route="acme-eu", clock=lambda: clock[0])
    detach = otel.attach_tracing(bus, provider)
    run_session(bus, clock)
    names = [s.name for s in exporter.get_finished_spans()]
    assert names == ["stt", "agent", "tts", "voice.turn"]  # turn 1 is complete once turn 2 ends
    detach()  # ends turn 2 and the session, which never sent session_end
    clock[0] = 9.0
    bus.emit(EventType.TURN_END, turn=3, reason="silence", start_s=8, end_s=8.5, delay_ms=100)  # ignored now
    assert len(bus._subscribers) == 0  # detach unsubscribed the exporter
    spans = {(s.name, s.attributes.get("voicerouter.turn")): s for s in exporter.get_finished_spans()}
    assert set(spans) == {
        ("stt", 1),
        ("agent", 1),
        ("tts", 1),
        ("voice.turn", 1),
        ("voice.turn", 2),
        ("voice.session", None),
    }

    for span in spans.values():
        attrs = span.attributes
        assert (attrs["voicerouter.route"], attrs["voicerouter.tenant"], attrs["voicerouter.region"]) == (
            "acme-eu", "acme", "eu-west",
        )  # fmt: skip
        assert attrs["voicerouter.session_id"] == "sess-1"

    session = spans[("voice.session", None)]
    turn1, stt, tts = spans[("voice.turn", 1)], spans[("stt", 1)], spans[("tts", 1)]
    assert session.parent is None and turn1.parent.span_id == session.context.span_id
    assert stt.parent.span_id == turn1.context.span_id and tts.parent.span_id == turn1.context.span_id
    assert stt.attributes["voicerouter.provider"] == "oai-stt" and stt.attributes["voicerouter.stage"] == "stt"
    assert stt.attributes["voicerouter.latency_ms"] == 1700
    assert tts.attributes["voicerouter.provider"] == "eleven" and tts.attributes["voicerouter.latency_ms"] == 2200
    assert turn1.attributes["voicerouter.voice_to_voice_ms"] == 2800  # 600 ms turn-end delay + 2200 ms

    # span times come from the events: the turn starts when speech ended, STT spans its latency
    assert (stt.end_time - stt.start_time) / 1e6 == pytest.approx(1700, abs=1)
    assert (tts.start_time - turn1.start_time) / 1e9 == pytest.approx(4.32 - 2.0, abs=1e-3)

    (failover,) = stt.events
    assert failover.name == "failover" and failover.attributes["voicerouter.from_provider"] == "dg"
    assert [e.name for e in tts.events] == ["retry", "first_audio"]
    (exception,) = spans[("voice.turn", 2)].events  # turn 2's STT never answered: the error sits on the turn
    assert exception.name == "exception" and exception.attributes["exception.type"] == "AuthError"
    assert exception.attributes["exception.message"] == "401 from oai-stt"


def test_spans_from_a_recorded_log(memory):
    provider, exporter = memory
    log = read_events([FIXTURES])
    assert otel.export_events(log.events, provider) == len(log.events)
    spans = exporter.get_finished_spans()
    by_name: dict[str, int] = {}
    for span in spans:
        by_name[span.name] = by_name.get(span.name, 0) + 1
    assert by_name == {"voice.session": 3, "voice.turn": 8, "stt": 8, "agent": 8, "tts": 8}
    routes = {s.attributes["voicerouter.session_id"]: s.attributes["voicerouter.route"] for s in spans}
    assert routes == {"s-acme-1": "acme-eu", "s-acme-2": "acme-eu", "s-globex-1": "globex-ab"}
    globex_tts = next(
        s for s in spans if s.name == "tts" and s.attributes["voicerouter.session_id"] == "s-globex-1"
        and s.attributes["voicerouter.turn"] == 3
    )  # fmt: skip
    assert [e.name for e in globex_tts.events] == ["exception", "failover", "first_audio"]
    assert globex_tts.attributes["voicerouter.provider"] == "eleven"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"}, False),
        ({"OTEL_SERVICE_NAME": "bot"}, False),
    ],
)
def test_tracing_configured(env, expected):
    assert otel.tracing_configured(env) is expected


SCRIPT = """
import sys
from voicerouter.observe.otel import attach_tracing
from voicerouter.session.events import EventBus, EventType
bus = EventBus("sess-env", tenant="acme", region="eu-west", route="acme-eu")
detach = attach_tracing(bus)
bus.emit(EventType.SESSION_START, pipeline="stt_tts")
bus.emit(EventType.SESSION_END, turns=0, reason="eof")
detach()
print("LOADED" if "opentelemetry" in sys.modules else "NOT-LOADED", file=sys.stderr)
"""


def run_script(env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.run([sys.executable, "-c", SCRIPT], env=clean | env, capture_output=True, text=True, timeout=60)


def test_off_by_default_and_imports_nothing():
    proc = run_script({})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "NOT-LOADED" and proc.stdout == ""


def test_standard_env_vars_turn_it_on():
    pytest.importorskip("opentelemetry.sdk.trace")
    proc = run_script({"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "voice-test"})
    assert proc.returncode == 0, proc.stderr
    assert "LOADED" in proc.stderr and proc.stdout == ""  # stdout belongs to the command
    span = json.loads(proc.stderr.split("LOADED", 1)[1])  # the console exporter prints each span at exit, on stderr
    assert span["name"] == "voice.session"
    assert span["attributes"]["voicerouter.route"] == "acme-eu"
    assert span["resource"]["attributes"]["service.name"] == "voice-test"


def test_configured_but_not_installed_is_a_noop_with_a_warning(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    monkeypatch.setattr(otel, "_warned_missing", False)
    bus = EventBus("sess-2")
    with caplog.at_level(logging.WARNING, logger="voicerouter.otel"):
        detach = otel.attach_tracing(bus, env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert detach is otel._noop
    bus.emit(EventType.SESSION_START)  # still fine
    assert "pip install 'voicerouter[otel]'" in caplog.text


def test_unknown_exporter_is_a_usage_error():
    pytest.importorskip("opentelemetry.sdk.trace")
    from voicerouter.errors import UsageError

    with pytest.raises(UsageError, match="unknown exporter 'zipkinn'"):
        otel._exporters({"OTEL_TRACES_EXPORTER": "zipkinn"})


def test_a_turn_still_answering_when_the_next_one_ends_keeps_its_spans(memory):
    provider, exporter = memory
    clock = [0.0]
    bus = EventBus("sess-3", route="r", clock=lambda: clock[0])
    detach = otel.attach_tracing(bus, provider)
    for t, kind, data in [
        (0.0, EventType.SESSION_START, {}),
        (1.0, EventType.TURN_END, {"turn": 1, "reason": "silence", "start_s": 0.2, "end_s": 0.8, "delay_ms": 200}),
        (1.5, EventType.FINAL_TRANSCRIPT, {"turn": 1, "provider": "a", "text": "one", "latency_ms": 500}),
        (2.0, EventType.TURN_END, {"turn": 2, "reason": "silence", "start_s": 1.2, "end_s": 1.8, "delay_ms": 200}),
        (2.4, EventType.TTS_START, {"turn": 1, "provider": "b", "text": "x"}),
        (2.6, EventType.TTS_FIRST_AUDIO, {"turn": 1, "provider": "b", "latency_ms": 1600}),
        (3.0, EventType.TTS_DONE, {"turn": 1, "provider": "b", "audio_s_out": 0.4}),
    ]:
        clock[0] = t
        bus.emit(kind, **data)
    assert [s.name for s in exporter.get_finished_spans()] == ["stt", "tts", "voice.turn"]
    tts = exporter.get_finished_spans()[1]
    assert tts.attributes["voicerouter.turn"] == 1 and tts.attributes["voicerouter.provider"] == "b"
    detach()
    assert [s.name for s in exporter.get_finished_spans()][3:] == ["voice.turn", "voice.session"]
