"""Reading event logs back: bad lines skipped with their file:line, or an error in strict mode; route logger."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from voicerouter.config.secrets import expand
from voicerouter.errors import VoiceRouterError
from voicerouter.observe.logs import EventLogError, read_events, route_logger
from voicerouter.routing.plan import RouteContext
from voicerouter.session.events import EventBus, EventType, JsonlWriter

FIXTURES = Path(__file__).parent / "fixtures"


def test_fixtures_read_with_the_corrupt_line_skipped():
    log = read_events([FIXTURES / "acme.jsonl", FIXTURES / "globex.jsonl"])
    assert log.sessions() == ["s-acme-1", "s-acme-2", "s-globex-1"]
    assert len(log.events) == 83
    assert len(log.skipped) == 1
    skipped = log.skipped[0]
    assert skipped.location.file.endswith("globex.jsonl") and skipped.location.line == 13
    assert "not valid JSON" in skipped.reason
    assert log.session_files["s-globex-1"].name == "globex.jsonl"


def test_strict_names_file_and_line():
    with pytest.raises(EventLogError) as info:
        read_events([FIXTURES / "globex.jsonl"], strict=True)
    message = str(info.value)
    assert "globex.jsonl:13:" in message and "bad event line" in message
    assert isinstance(info.value, VoiceRouterError)


def test_directory_means_every_jsonl_below_it(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "events.jsonl").write_text((FIXTURES / "acme.jsonl").read_text())
    (tmp_path / "b.jsonl").write_text((FIXTURES / "globex.jsonl").read_text())
    (tmp_path / "notes.txt").write_text("not a log")
    log = read_events([tmp_path])
    assert sorted(p.name for p in log.files) == ["b.jsonl", "events.jsonl"]
    assert set(log.sessions()) == {"s-acme-1", "s-acme-2", "s-globex-1"}


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("[1, 2]", "expected a JSON object"),
        ('{"t": 1.0, "session_id": "s"}', "'type'"),
        ('{"type": "turn_end", "t": 1.0}', "'session_id'"),
        ('{"type": "turn_end", "session_id": "s", "t": "soon"}', "'t'"),
        ('{"type": "turn_end", "session_id": "s"', "not valid JSON"),
    ],
)
def test_each_kind_of_bad_line_is_reported(tmp_path, line, reason):
    path = tmp_path / "events.jsonl"
    path.write_text('{"type": "session_start", "t": 0, "session_id": "s"}\n\n' + line + "\n")
    log = read_events([path])
    assert len(log.events) == 1
    assert [s.location.line for s in log.skipped] == [3]
    assert reason in log.skipped[0].reason


def test_missing_log_and_empty_directory(tmp_path):
    with pytest.raises(EventLogError, match="no such event log"):
        read_events([tmp_path / "nope.jsonl"])
    with pytest.raises(EventLogError, match="no .jsonl event logs"):
        read_events([tmp_path])


def test_log_written_by_the_bus_reads_back(tmp_path):
    path = tmp_path / "events.jsonl"
    ticks = iter([0.0, 0.0, 1.25, 2.5])
    bus = EventBus("sess-9", tenant="acme", region="eu-west", route="acme-eu", clock=lambda: next(ticks))
    with path.open("w") as stream:
        bus.subscribe(JsonlWriter(stream))
        bus.emit(EventType.SESSION_START, pipeline="stt_tts", stt=["dg"], tts=["eleven"], source="in.wav")
        bus.emit(EventType.TURN_END, turn=1, reason="silence", start_s=0.2, end_s=1.0, delay_ms=250)
        bus.emit(EventType.SESSION_END, turns=1, reason="eof")
    log = read_events([path], strict=True)
    assert [e["type"] for e in log.events] == ["session_start", "turn_end", "session_end"]
    assert log.events[1]["turn"] == 1 and log.events[1]["t"] == 1.25 and log.events[1]["route"] == "acme-eu"


def test_route_logger_prefixes_context_and_redacts(caplog):
    secret = "sk-observe-canary-1234"
    assert expand("${OBSERVE_TEST_KEY}", {"OBSERVE_TEST_KEY": secret}, secret=True) == secret
    bus = EventBus("sess-1", tenant="acme", region="eu-west", route="acme-eu")
    log = route_logger(bus, "voicerouter.test")
    with caplog.at_level(logging.INFO, logger="voicerouter.test"):
        log.info("provider %s failed with key %s", "dg", secret)
    record = caplog.records[-1]
    assert (
        record.getMessage()
        == "[session=sess-1 tenant=acme region=eu-west route=acme-eu] provider dg failed with key ***"
    )
    assert record.route == "acme-eu" and record.tenant == "acme"


def test_route_logger_from_route_context_and_dict(caplog):
    ctx = RouteContext(tenant="globex", region=None, session_id="s-7")
    with caplog.at_level(logging.WARNING, logger="voicerouter.test2"):
        route_logger(ctx, "voicerouter.test2").warning("slow")
        route_logger({"route": "r1"}, "voicerouter.test2").warning("x")
    assert caplog.records[0].getMessage() == "[session=s-7 tenant=globex] slow"
    assert caplog.records[1].getMessage() == "[route=r1] x"
