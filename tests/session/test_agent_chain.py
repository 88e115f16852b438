"""The agent as a stage: an ordered chain (openai-chat, webhook, echo) with deadlines, faults and a
reply streamed into TTS sentence by sentence, against the chat emulator on 127.0.0.1."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from session_fakes import FakePool, FakeSTT, FakeTTS, make_plan, two_turns

from voicerouter.audio.sink import MemorySink
from voicerouter.audio.source import PcmSource
from voicerouter.config.schema import AgentConfig, ResilienceConfig, RouteSettings
from voicerouter.providers.base import BuildContext, Conversation, SessionInfo
from voicerouter.session.agents import build_agents
from voicerouter.session.events import EventType
from voicerouter.session.session import Session
from voicerouter.testing import emulate

ENV = {"OAI_KEY": "test-key"}



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


REPLY = "Sure thing. I booked a table for two at eight tonight. Anything else?"
SENTENCES = ["Sure thing.", "I booked a table for two at eight tonight.", "Anything else?"]


@pytest.mark.parametrize("cut", ["stall", "drop"])
@pytest.mark.parametrize("backup", ["openai-chat", "openai-chat-prefix", "vllm", "webhook", "echo"])
async def test_a_reply_cut_mid_stream_goes_on_from_what_the_caller_heard(cut: str, backup: str):
    """The primary LLM dies after 'Sure thing. I booked a table for'; 'Sure thing.' was spoken. The
    next agent is asked to continue after it: nothing is spoken twice, nothing is lost."""
    tts = FakeTTS("tts-a")
    pool = FakePool({"stt-a": FakeSTT("stt-a", ["book a table"]), "tts-a": tts})
    kind = "webhook" if backup == "webhook" else "openai-chat"
    async with emulate("openai-chat", api_key="test-key", faults=cut) as primary, \
            emulate(kind, api_key="test-key") as other:
        primary.state.reply = other.state.reply = REPLY
        llm = {"type": "openai-chat", "name": "llm", "base_url": primary.url + "/v1", "api_key": "${OAI_KEY}"}
        second = {
            "openai-chat": {"type": "openai-chat", "name": "llm-b", "base_url": other.url + "/v1",
                            "api_key": "${OAI_KEY}"},
            "webhook": {"type": "webhook", "url": other.url + "/reply"},
            "echo": "echo",
        }[kind if backup != "echo" else "echo"]
        if backup in ("openai-chat-prefix", "vllm"):
            second["continuation"] = "prefix" if backup == "openai-chat-prefix" else "continue_final_message"
        plan = plan_with(pool, [llm, second])
        plan = dataclasses.replace(plan, stt=dataclasses.replace(plan.stt, providers=("stt-a",)))
        session = Session(plan, pool, PcmSource(two_turns()[: 16000 * 2 * 4]), MemorySink(), env=ENV)
        result = await asyncio.wait_for(session.run(), 60)

    (turn,) = result.turns
    if backup == "echo":  # echo cannot continue an LLM's reply: it adds its own after the heard part
        assert tts.texts == ["Sure thing.", "You said: book a table."]
        assert turn.reply == "Sure thing. You said: book a table."
    else:
        assert tts.texts == SENTENCES  # each sentence once, none missing
        assert turn.reply == REPLY
        request = other.state.requests[-1]["body"]
        if backup == "webhook":
            assert request["partial_reply"] == "Sure thing."
        else:
            assert request["messages"][-1]["role"] == "assistant"
            assert request["messages"][-1]["content"] == "Sure thing."
            assert request["messages"][-1].get("prefix") is (True if backup == "openai-chat-prefix" else None)
            assert request.get("continue_final_message") is (True if backup == "vllm" else None)
    assert session.conversation.messages[-1].text == turn.reply
    (failover,) = [e.data for e in result.events if e.type == EventType.FAILOVER]
    assert failover["restarted_reply"] is True and failover["continued_after_words"] == 2
    repeated = [e.data for e in result.events if e.data.get("reason") == "repeated_reply"]
    # only OpenAI's plain mode starts over (the emulator's model does); the repeat is dropped
    assert [r["dropped_words"] for r in repeated] == ([2] if backup == "openai-chat" else [])


async def test_a_retry_on_the_same_llm_continues_the_reply_too():
    tts = FakeTTS("tts-a")
    pool = FakePool({"stt-a": FakeSTT("stt-a", ["book a table"]), "tts-a": tts})
    async with emulate("openai-chat", api_key="test-key", faults="drop*1") as chat:  # the first stream only
        chat.state.reply = REPLY
        plan = plan_with(pool, [{"type": "openai-chat", "name": "llm", "base_url": chat.url + "/v1",
                                 "api_key": "${OAI_KEY}", "continuation": "prefix"}])
        plan = dataclasses.replace(plan, resilience=ResilienceConfig(retries=1))
        session = Session(plan, pool, PcmSource(two_turns()[: 16000 * 2 * 4]), MemorySink(), env=ENV)
        result = await asyncio.wait_for(session.run(), 60)
    (turn,) = result.turns
    assert tts.texts == SENTENCES and turn.reply == REPLY
    assert chat.state.requests[-1]["body"]["messages"][-1] == {"role": "assistant", "content": "Sure thing.",
                                                               "prefix": True}
    (retry,) = [e.data for e in result.events if e.type == EventType.RETRY]
    assert retry["restarted_reply"] is True and retry["continued_after_words"] == 2
