"""S2S chain: failover keeps the conversation and resends the user's turn audio."""

from __future__ import annotations

import pytest
from resilience_fakes import FakePool, FakeS2S, word_pcm

from voicerouter.config.schema import BackoffConfig, ResilienceConfig
from voicerouter.errors import AllProvidersFailed
from voicerouter.providers.base import Conversation, SessionInfo
from voicerouter.providers.closing import settle
from voicerouter.resilience import build_stage
from voicerouter.routing.plan import StagePlan
from voicerouter.session.events import EventBus, EventType

FAST = ResilienceConfig(retries=0, backoff=BackoffConfig(base_ms=5, max_ms=10), first_result_timeout_ms=100,
                        stall_timeout_ms=100, turn_deadline_ms=2000)


def chain(pool, names):
    bus = EventBus("s1", route="r1")
    return build_stage(StagePlan("s2s", tuple(names)), pool, FAST, bus, session=SessionInfo("s1", route="r1")), bus


def events(bus: EventBus, kind: EventType) -> list[dict]:
    return [e.to_dict() for e in bus.history if e.type == kind]


async def turn(session, words: str) -> list:
    for word in words.split():
        await session.send_audio(word_pcm(word), 16000)
    return [event async for event in session.respond()]


def reply_text(events_: list) -> str:
    return "".join(e.text for e in events_ if e.type == "reply_text")


async def test_reply_dropped_mid_stream_restarts_on_the_next_provider_with_history_and_audio():
    primary, backup = FakeS2S("oai-rt"), FakeS2S("backup")
    stage, bus = chain(FakePool(primary, backup), ["oai-rt", "backup"])
    history = Conversation()
    session = await stage.connect(instructions="be brief", history=history)
    first = await turn(session, "hello there")
    assert reply_text(first) == "oai-rt heard hello there"
    history.add("user", "hello there")
    history.add("assistant", reply_text(first))

    primary.script = ["drop"]
    second = await turn(session, "what time is it")
    assert reply_text(second) == "backup heard what time is it"  # the whole turn's audio was resent
    assert backup.heard == [("what time is it", 2)]  # the new connection got the conversation
    (failover,) = events(bus, EventType.FAILOVER)
    assert failover["from_provider"] == "oai-rt" and failover["restarted_reply"] is True

    third = await turn(session, "thanks")  # stays on the working connection
    assert reply_text(third) == "backup heard thanks" and len(backup.sessions) == 1
    await session.aclose()
    assert primary.sessions[0].closed and backup.sessions[0].closed


async def test_hung_reply_fails_over_before_any_event():
    primary, backup = FakeS2S("oai-rt", script=["hang"]), FakeS2S("backup")
    stage, bus = chain(FakePool(primary, backup), ["oai-rt", "backup"])
    session = await stage.connect(instructions=None, history=Conversation())
    events_ = await turn(session, "are you there")
    assert events_[0].text == "are you there" and primary.cancelled == 1
    assert events(bus, EventType.FAILOVER)[0]["reason"] == "timeout"


async def test_connect_fails_over_and_all_down_is_reported():
    primary, backup = FakeS2S("oai-rt", connect_script=["auth"]), FakeS2S("backup", connect_script=["error:503"])
    stage, bus = chain(FakePool(primary, backup), ["oai-rt", "backup"])
    with pytest.raises(AllProvidersFailed) as info:
        await stage.connect(instructions=None, history=Conversation())
    assert "oai-rt: HTTP 401" in str(info.value) and "backup: HTTP 503" in str(info.value)


async def test_connection_lost_while_the_user_speaks_is_replaced_and_the_turn_resent():
    from voicerouter.errors import TransientProviderError

    primary, backup = FakeS2S("oai-rt"), FakeS2S("backup")
    stage, bus = chain(FakePool(primary, backup), ["oai-rt", "backup"])
    session = await stage.connect(instructions=None, history=Conversation())

    async def broken_send(pcm, sample_rate=16000):
        raise TransientProviderError("websocket closed", provider="oai-rt")

    primary.sessions[0].send_audio = broken_send
    events_ = await turn(session, "book a table")
    assert events_[0].text == "book a table" and backup.heard == [("book a table", 0)]
    await settle()  # the broken connection is closed in the background, off the reply's path
    assert primary.sessions[0].closed
    (failover,) = events(bus, EventType.FAILOVER)
    assert failover["from_provider"] == "oai-rt" and failover["to_provider"] == "backup"


async def test_reply_abandoned_by_the_caller_keeps_the_connection_and_commits_the_next_turn_alone():
    primary = FakeS2S("oai-rt")
    stage, bus = chain(FakePool(primary), ["oai-rt"])
    session = await stage.connect(instructions=None, history=Conversation())
    await session.send_audio(word_pcm("first"), 16000)
    replies = session.respond()
    assert (await anext(replies)).text == "first"
    await session.send_audio(word_pcm("second"), 16000)  # the user barges in while the reply plays
    await replies.aclose()
    events_ = [event async for event in session.respond()]
    assert events_[0].text == "second"  # not "first second": the first turn was already committed
    assert len(primary.sessions) == 1 and not primary.sessions[0].closed
    assert not events(bus, EventType.FAILOVER)


async def test_a_voices_speaking_rate_learned_in_one_session_serves_the_next():
    from voicerouter.resilience.resume import DEFAULT_SECONDS_PER_CHAR

    primary = FakeS2S("oai-rt")
    pool = FakePool(primary)
    stage, _ = chain(pool, ["oai-rt"])
    first = await stage.connect(instructions=None, history=Conversation())
    assert first.rates.get("oai-rt") == DEFAULT_SECONDS_PER_CHAR
    said = await turn(first, "hello there")
    await first.aclose()
    learned = 3 * 160 / 16000 / len("oai-rt heard hello there")  # three 10 ms chunks for its reply
    assert reply_text(said) == "oai-rt heard hello there"
    later, _ = chain(pool, ["oai-rt"])  # another session of the same process
    second = await later.connect(instructions=None, history=Conversation())
    assert second.rates.get("oai-rt") == pytest.approx(learned)
    await second.aclose()
