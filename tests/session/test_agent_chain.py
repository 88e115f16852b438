"""The agent as a stage: an ordered chain (openai-chat, webhook, echo) with deadlines, faults and a
reply streamed into TTS sentence by sentence, against the chat emulator on 127.0.0.1."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from session_fakes import FakePool, FakeSTT, FakeTTS, make_plan, two_turns

from voicerouter import resilience
from voicerouter.audio.sink import MemorySink
from voicerouter.audio.source import PcmSource
from voicerouter.config.schema import AgentConfig, ResilienceConfig, RouteSettings
from voicerouter.providers.base import BuildContext, Conversation, SessionInfo
from voicerouter.session.agents import build_agents
from voicerouter.session.events import EventType
from voicerouter.session.session import Session
from voicerouter.testing import emulate

ENV = {"OAI_KEY": "test-key"}


@pytest.fixture(autouse=True)
def _clean_state():
    resilience.reset()
    yield
    resilience.reset()


def test_agent_accepts_a_chain_and_keeps_the_single_forms():
    assert RouteSettings(agent="echo").agent.chain() == [AgentConfig(type="echo")]
    assert RouteSettings(agent={"type": "webhook", "url": "https://x"}).agent.type == "webhook"
    chain = RouteSettings(agent=[{"type": "openai-chat", "name": "llm", "base_url": "http://127.0.0.1:1/v1"},
                                 {"type": "webhook", "url": "https://hook"}, "echo"]).agent
    assert [(a.label, a.type) for a in chain.chain()] == [("llm", "openai-chat"), ("webhook", "webhook"),
                                                          ("echo", "echo")]
    with pytest.raises(ValueError, match="distinct `name`s"):
        RouteSettings(agent=["echo", "echo"])
    with pytest.raises(ValueError, match="at least one agent"):
        RouteSettings(agent=[])


async def test_openai_chat_streams_the_reply_piece_by_piece():
    async with emulate("openai-chat", api_key="test-key") as chat:
        chat.state.reply = "Sure. The table is booked for two at eight."
        (agent,) = build_agents(AgentConfig(type="openai-chat", base_url=chat.url + "/v1", api_key="${OAI_KEY}"),
                                BuildContext(env=ENV))
        try:
            pieces = [p async for p in agent.stream_reply("book a table", Conversation(), SessionInfo("s"))]
        finally:
            await agent.aclose()
    assert len(pieces) > 3 and "".join(pieces) == chat.state.reply
    assert chat.state.requests[-1]["body"]["stream"] is True


def plan_with(pool, agent: list, **policy):
    plan = make_plan(pool, resilience=ResilienceConfig(retries=0, **policy))
    return dataclasses.replace(plan, agent=RouteSettings(agent=agent).agent)


async def run_session(plan, pool, faults=None):
    session = Session(plan, pool, PcmSource(two_turns()), MemorySink(), env=ENV, faults=faults)
    return await asyncio.wait_for(session.run(), 60)


@pytest.mark.parametrize("fault", ["hang", "error:503", "error:429:5", "error:401", "malformed", "stall", "drop"])
async def test_a_failing_llm_fails_over_to_the_next_agent_on_every_turn(fault: str):
    pool = FakePool({"stt-a": FakeSTT("stt-a", ["book a table", "for two"]), "tts-a": FakeTTS("tts-a")})
    async with emulate("openai-chat", api_key="test-key", faults=fault) as chat:
        plan = plan_with(pool, [{"type": "openai-chat", "name": "llm", "base_url": chat.url + "/v1",
                                 "api_key": "${OAI_KEY}"}, "echo"])
        result = await run_session(plan, pool)
    assert result.exit_code == 0 and not result.errors
    replies = [t.reply for t in result.turns]
    assert all(replies) and len(replies) == 2  # every turn answered
    failovers = [e.data for e in result.events if e.type == EventType.FAILOVER and e.data.get("stage") == "agent"]
    assert failovers and all(f["from_provider"] == "llm" and f["to_provider"] == "echo" for f in failovers)
    if fault in ("error:429:5", "error:401"):  # Retry-After remembered / breaker open: turn 2 skips the llm
        assert len(failovers) == 1
    elif fault in ("hang", "error:503"):
        assert len(failovers) == 2
    if fault in ("stall", "drop", "malformed"):  # cut mid-reply: echo's reply replaces it, no sentence twice
        assert all(r.startswith("You said") for r in replies)


async def test_streamed_reply_is_spoken_sentence_by_sentence_before_the_agent_finishes():
    tts = FakeTTS("tts-a")
    pool = FakePool({"stt-a": FakeSTT("stt-a", ["book a table", "for two"]), "tts-a": tts})
    async with emulate("openai-chat", api_key="test-key") as chat:
        chat.state.reply = "Sure thing. I booked a table for two at eight tonight. Anything else?"
        plan = plan_with(pool, [{"type": "openai-chat", "base_url": chat.url + "/v1", "api_key": "${OAI_KEY}"}])
        result = await run_session(plan, pool)
    assert tts.texts[:3] == ["Sure thing.", "I booked a table for two at eight tonight.", "Anything else?"]
    first_turn = [e.type for e in result.events if e.turn == 1]
    # the first sentence is heard before the reply is complete
    assert first_turn.index(EventType.TTS_FIRST_AUDIO) < first_turn.index(EventType.AGENT_REPLY)
    assert result.turns[0].reply == chat.state.reply
    assert result.turns[0].wall_latency_ms["agent_first_token"] < result.turns[0].wall_latency_ms["agent"]


async def test_injected_agent_faults_drive_the_chain():
    from voicerouter.resilience.faults import parse_faults

    pool = FakePool({"stt-a": FakeSTT("stt-a", ["book a table", "for two"]), "tts-a": FakeTTS("tts-a")})
    plan = plan_with(pool, [{"type": "echo", "name": "primary"}, {"type": "echo", "name": "backup"}],
                     first_result_timeout_ms=200)
    result = await run_session(plan, pool, faults=parse_faults("primary=hang@turn2", 1))
    used = [e.data.get("provider") or e.provider for e in result.events
            if e.type == EventType.PROVIDER_USED and e.data.get("stage") == "agent"]
    assert used == ["primary", "backup"] and all(t.reply for t in result.turns)
    (failover,) = [e.data for e in result.events if e.type == EventType.FAILOVER]
    assert failover["reason"] == "timeout" and failover["to_provider"] == "backup"
