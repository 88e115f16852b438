"""The OpenAI Realtime S2S client against the Realtime emulator over a real WebSocket on 127.0.0.1."""

from __future__ import annotations

import pytest

from voicerouter.config.schema import ProviderConfig
from voicerouter.errors import (
    AuthError,
    ConfigError,
    MissingSecretError,
    ProviderTimeout,
    RateLimitedError,
    RequestError,
    TransientProviderError,
)
from voicerouter.providers.base import BuildContext, Conversation, S2SEvent, SessionInfo
from voicerouter.providers.openai_realtime import create, error_from_event
from voicerouter.testing.server import Fault, emulate, tone

CANARY = "sk-canary-realtime-0123456789"
ENV = {"OPENAI_API_KEY": CANARY}


def make(url: str, **extra):
    cfg = ProviderConfig(type="openai-realtime", api_key="${OPENAI_API_KEY}", base_url=url + "/v1", **extra)
    return create("oai-rt", "s2s", cfg, BuildContext(env=ENV))


async def turn(session, seconds: float = 1.0) -> list[S2SEvent]:
    pcm = tone(seconds, 16000)
    for i in range(0, len(pcm), 640):  # 20 ms frames, like the pipeline
        await session.send_audio(pcm[i : i + 640], 16000)
    return [event async for event in session.respond()]


async def test_full_turn_with_history_and_instructions():
    history = Conversation()
    history.add("user", "hi there")
    history.add("assistant", "hello, how can I help?")
    async with emulate("openai-realtime", api_key=CANARY, transcript="what time is it") as emu:
        provider = make(emu.url, voice="cedar", model="gpt-realtime-mini")
        session = await provider.connect(instructions="Be brief.", history=history)
        try:
            events = await turn(session)
            second = await turn(session, 0.5)
        finally:
            await session.aclose()
    kinds = [e.type for e in events]
    assert kinds[-1] == "done" and kinds.count("done") == 1
    assert [e.text for e in events if e.type == "user_transcript"] == ["what time is it"]
    reply = "".join(e.text for e in events if e.type == "reply_text")
    assert reply == "You said: what time is it" == events[-1].text
    audio = [e.audio for e in events if e.type == "audio"]
    assert len(audio) > 1 and all(a.sample_rate == 24000 for a in audio)
    assert second[-1].type == "done" and any(e.type == "audio" for e in second)
    sent = [r.get("event") for r in emu.state.requests if "event" in r]
    assert sent[:3] == ["session.update", "conversation.item.create", "conversation.item.create"]
    assert sent.count("input_audio_buffer.commit") == 2 and sent.count("response.create") == 2
    assert emu.state.requests[0]["model"] == "gpt-realtime-mini"


async def test_audio_is_resampled_to_24k():
    async with emulate("openai-realtime", api_key=CANARY) as emu:
        session = await make(emu.url).connect(instructions=None, history=Conversation())
        try:
            events = await turn(session, 1.0)
        finally:
            await session.aclose()
    assert events[-1].type == "done"
    # 1 s sent at 16 kHz arrived as 1 s of 24 kHz audio (the emulator reads it as 24 kHz).
    commit = next(r for r in emu.state.requests if r.get("event") == "input_audio_buffer.commit")
    assert commit["audio_s"] == pytest.approx(1.0, abs=0.01)


async def test_beta_protocol_names_are_understood():
    async with emulate("openai-realtime", api_key=CANARY, transcript="beta words") as emu:
        session = await make(emu.url, options={"beta": True}).connect(instructions="x", history=Conversation())
        try:
            events = await turn(session)
        finally:
            await session.aclose()
    assert emu.state.requests[0]["beta"] is True
    assert "".join(e.text for e in events if e.type == "reply_text") == "You said: beta words"
    assert any(e.type == "audio" for e in events)


async def test_wrong_key_is_auth_error_at_handshake():
    async with emulate("openai-realtime", api_key="another-key") as emu:
        with pytest.raises(AuthError) as info:
            await make(emu.url).connect(instructions=None, history=Conversation())
    assert info.value.status == 401 and info.value.provider == "oai-rt"
    assert CANARY not in str(info.value) and "Incorrect API key provided: ***" in str(info.value)


async def test_rate_limited_handshake():
    async with emulate("openai-realtime", api_key=CANARY, faults=["error:429:3"]) as emu:
        with pytest.raises(RateLimitedError) as info:
            await make(emu.url).connect(instructions=None, history=Conversation())
    assert info.value.retry_after == 3.0


async def test_error_event_becomes_request_error():
    async with emulate("openai-realtime", api_key=CANARY) as emu:
        session = await make(emu.url).connect(instructions=None, history=Conversation())
        try:
            # 20 ms is under the 100 ms minimum the server accepts for a commit.
            await session.send_audio(tone(0.02, 16000), 16000)
            with pytest.raises(RequestError) as info:
                [e async for e in session.respond()]
        finally:
            await session.aclose()
    assert "input_audio_buffer_commit_empty" in str(info.value) and info.value.provider == "oai-rt"


async def test_failed_response_is_typed():
    async with emulate("openai-realtime", api_key=CANARY) as emu:
        session = await make(emu.url).connect(instructions=None, history=Conversation())
        emu.state.faults.append(Fault.parse("error:503"))  # after the handshake: hits the response
        try:
            with pytest.raises(TransientProviderError) as info:
                await turn(session)
        finally:
            await session.aclose()
    assert "server_error" in str(info.value)


async def test_drop_mid_response_is_transient():
    async with emulate("openai-realtime", api_key=CANARY, faults=["drop"]) as emu:
        session = await make(emu.url).connect(instructions=None, history=Conversation())
        got: list[S2SEvent] = []
        try:
            await session.send_audio(tone(1.0, 16000), 16000)
            with pytest.raises(TransientProviderError) as info:
                async for event in session.respond():
                    got.append(event)
        finally:
            await session.aclose()
    assert any(e.type == "audio" for e in got)  # it broke mid-response, not before
    assert "dropped" in str(info.value) or "closed" in str(info.value)
    assert not isinstance(info.value, ProviderTimeout)


async def test_hang_times_out():
    async with emulate("openai-realtime", api_key=CANARY, faults=["hang"]) as emu:
        session = await make(emu.url, timeout_ms=300).connect(instructions=None, history=Conversation())
        try:
            with pytest.raises(ProviderTimeout):
                await turn(session)
        finally:
            await session.aclose()


async def test_malformed_frame_is_transient():
    async with emulate("openai-realtime", api_key=CANARY, faults=["malformed"]) as emu:
        session = await make(emu.url).connect(instructions=None, history=Conversation())
        try:
            with pytest.raises(TransientProviderError) as info:
                await turn(session)
        finally:
            await session.aclose()
    assert "malformed" in str(info.value) and "502 Bad Gateway" in str(info.value)


async def test_session_recovers_after_a_malformed_frame():
    async with emulate("openai-realtime", api_key=CANARY, faults=["malformed*1"], transcript="again") as emu:
        session = await make(emu.url).connect(instructions=None, history=Conversation())
        try:
            with pytest.raises(TransientProviderError):
                await turn(session)
            events = await turn(session)
        finally:
            await session.aclose()
    assert events[-1].type == "done" and events[-1].text == "You said: again"


async def test_probe_ok_and_bad():
    async with emulate("openai-realtime", api_key=CANARY) as emu:
        await make(emu.url).probe()
        with pytest.raises(AuthError):
            cfg = ProviderConfig(type="openai-realtime", api_key="${K}", base_url=emu.url + "/v1")
            await create("oai-rt", "s2s", cfg, BuildContext(env={"K": "nope-nope"})).probe()


def test_missing_key_and_bad_url():
    with pytest.raises(MissingSecretError) as info:
        create("oai-rt", "s2s", ProviderConfig(type="openai-realtime", api_key="${RT_KEY}"), BuildContext(env={}))
    assert "RT_KEY" in str(info.value)
    with pytest.raises(ConfigError):
        cfg = ProviderConfig(type="openai-realtime", api_key="${OPENAI_API_KEY}", base_url="http://example.com/v1")
        create("oai-rt", "s2s", cfg, BuildContext(env=ENV))


@pytest.mark.parametrize(
    ("error", "cls"),
    [
        ({"type": "invalid_request_error", "code": "invalid_api_key", "message": "bad key"}, AuthError),
        ({"type": "requests", "code": "rate_limit_exceeded", "message": "slow down"}, RateLimitedError),
        ({"type": "invalid_request_error", "code": "invalid_value", "message": "nope"}, RequestError),
        ({"type": "server_error", "code": None, "message": "oops"}, TransientProviderError),
    ],
)
def test_error_event_mapping(error, cls):
    err = error_from_event(error, provider="p")
    assert type(err) is cls and err.provider == "p"


async def test_abandoned_response_is_cancelled_and_next_turn_is_clean():
    async with emulate("openai-realtime", api_key=CANARY, transcript="first words") as emu:
        session = await make(emu.url).connect(instructions=None, history=Conversation())
        try:
            await session.send_audio(tone(1.0, 16000), 16000)
            events = session.respond()
            async for event in events:
                if event.type == "audio":
                    break  # barge-in: the caller stops listening
            await events.aclose()
            emu.state.transcript = "second words"
            second = await turn(session)
        finally:
            await session.aclose()
    assert "response.cancel" in [r.get("event") for r in emu.state.requests]
    reply = "".join(e.text for e in second if e.type == "reply_text")
    assert reply == "You said: second words" == second[-1].text
    assert [e.text for e in second if e.type == "user_transcript"] == ["second words"]


async def test_session_survives_an_error_event():
    async with emulate("openai-realtime", api_key=CANARY, transcript="after the error") as emu:
        session = await make(emu.url).connect(instructions=None, history=Conversation())
        try:
            await session.send_audio(tone(0.02, 16000), 16000)
            with pytest.raises(RequestError):
                [e async for e in session.respond()]
            events = await turn(session)
        finally:
            await session.aclose()
    assert "".join(e.text for e in events if e.type == "reply_text") == "You said: after the error"


@pytest.mark.slow
async def test_real_speech_turn():
    """jfk.flac streamed in 20 ms frames; the emulator hears it at 24 kHz (pocketsphinx) and answers."""
    from pathlib import Path

    from voicerouter.audio.io import read_audio

    speech = read_audio(Path(__file__).parents[1] / "fixtures" / "jfk.flac")
    async with emulate("openai-realtime", api_key=CANARY, transcript=None) as emu:
        # The emulator runs PocketSphinx over the whole 11 s clip before it answers: CPU-bound, so on a
        # loaded machine the server can be silent for longer than the client's default 30 s.
        session = await make(emu.url, timeout_ms=180_000).connect(instructions=None, history=Conversation())
        try:
            for i in range(0, len(speech.pcm), 640):
                await session.send_audio(speech.pcm[i : i + 640], speech.sample_rate)
            events = [e async for e in session.respond()]
        finally:
            await session.aclose()
    heard = " ".join(e.text for e in events if e.type == "user_transcript").lower()
    assert "fellow america" in heard and "can do for your" in heard
    assert events[-1].text.lower().startswith("you said:") and "fellow america" in events[-1].text.lower()


@pytest.mark.parametrize("delay_s", [1.0, None])
async def test_reply_is_complete_at_response_done_when_the_transcript_is_late_or_missing(monkeypatch, delay_s):
    """The input transcription is asynchronous: a turn whose reply arrived never fails waiting for it, and a
    transcript landing after response.done is not taken for the next turn's."""
    from voicerouter.config.schema import ResilienceConfig
    from voicerouter.providers.pool import ProviderPool
    from voicerouter.resilience import build_stage
    from voicerouter.routing.plan import StagePlan
    from voicerouter.session.events import EventBus, EventType
    from voicerouter.testing import openai_realtime as emulator

    monkeypatch.setattr(emulator, "TRANSCRIPTION_DELAY_S", delay_s)
    async with emulate("openai-realtime", api_key=CANARY, transcript="what time is it") as emu:
        pool = ProviderPool({"rt": ProviderConfig(type="openai-realtime", api_key="${OPENAI_API_KEY}",
                                                  base_url=emu.url + "/v1")}, BuildContext(env=ENV))
        bus = EventBus("s1", route="r1")
        policy = ResilienceConfig(retries=0, stall_timeout_ms=600, first_result_timeout_ms=3000)
        s2s = build_stage(StagePlan("s2s", ("rt",)), pool, policy, bus, session=SessionInfo("s1", route="r1"))
        session = await s2s.connect(instructions=None, history=Conversation())
        try:
            first = await turn(session)
            second = await turn(session, 0.5)
        finally:
            await session.aclose()
            await pool.aclose()
    for events in (first, second):
        assert events[-1].type == "done" and events[-1].text == "You said: what time is it"
        assert sum(1 for e in events if e.type == "audio") > 1
    # The first turn's transcript lands while the second reply streams (or never): neither turn claims it.
    assert not [e for e in first + second if e.type == "user_transcript"]
    assert not [e for e in bus.history if e.type in (EventType.ERROR, EventType.FAILOVER)]


async def test_a_truncated_reply_leaves_the_model_only_the_words_heard():
    """`truncate(heard_s)` after a barge-in: conversation.item.truncate on the reply's item at the
    heard audio, answered before the next response, whose context holds the words heard only."""
    async with emulate("openai-realtime", api_key=CANARY, transcript="what is the weather today",
                       tts_engine="words") as emu:
        session = await make(emu.url).connect(instructions=None, history=Conversation())
        try:
            await session.send_audio(tone(1.0, 16000), 16000)
            events = session.respond()
            received = 0.0
            async for event in events:
                if event.type == "audio":
                    received += event.audio.duration_s
                if received >= 1.5:
                    break  # barge-in, with more audio received than played
            await events.aclose()
            await session.truncate(0.9)  # "You said: what" (0.84 s) was played, "is" was not
            await session.truncate(0.5)  # once per reply: a second call changes nothing
            second = await turn(session)
        finally:
            await session.aclose()
    requests = emu.state.requests
    (cut,) = [r for r in requests if r.get("event") == "conversation.item.truncate"]
    assert cut["content_index"] == 0 and cut["audio_end_ms"] == 900 and cut["item_id"].startswith("item_")
    context = [r["context"] for r in requests if r.get("event") == "response.create"][-1]
    assert context[-2:] == [("assistant", "You said: what"), ("user", "what is the weather today")]
    assert second[-1].type == "done" and second[-1].text == "You said: what is the weather today"


async def test_truncating_at_no_audio_deletes_the_reply_and_past_its_audio_is_an_error():
    import json

    import websockets

    async with emulate("openai-realtime", api_key=CANARY, transcript="hello") as emu:
        session = await make(emu.url).connect(instructions=None, history=Conversation())
        try:
            events = await turn(session)
            assert events[-1].text == "You said: hello"
            await session.truncate(1.0)  # heard whole: nothing to tell
            await turn(session)
            await session.truncate(0.0)  # none of the second reply was played: it leaves the conversation
            await turn(session)
        finally:
            await session.aclose()
        sent = [r.get("event") for r in emu.state.requests]
        assert "conversation.item.truncate" not in sent and sent.count("conversation.item.delete") == 1
        context = [r["context"] for r in emu.state.requests if r.get("event") == "response.create"][-1]
        assert [role for role, _ in context] == ["user", "assistant", "user", "user"]
        # the emulator answers truncates like the service: errors past the audio or on a user item
        url = emu.url.replace("http", "ws") + "/v1/realtime?model=gpt-realtime"
        async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {CANARY}"}) as ws:
            await ws.recv()  # session.created
            await ws.send(json.dumps({"type": "conversation.item.create", "item": {
                "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}}))
            item = json.loads(await ws.recv())["item"]["id"]
            await ws.recv()  # conversation.item.done
            await ws.send(json.dumps({"type": "conversation.item.truncate", "item_id": item, "content_index": 0,
                                      "audio_end_ms": 10}))
            error = json.loads(await ws.recv())["error"]
            assert error["code"] == "unsupported_content_type"
            await ws.send(json.dumps({"type": "response.create"}))
            reply = None
            while True:
                event = json.loads(await ws.recv())
                reply = reply or event.get("item_id")
                if event["type"] == "response.done":
                    break
            await ws.send(json.dumps({"type": "conversation.item.truncate", "item_id": reply, "content_index": 0,
                                      "audio_end_ms": 60_000}))
            error = json.loads(await ws.recv())["error"]
            assert "is already shorter than 60000ms" in error["message"] and error["param"] == "audio_end_ms"
            await ws.send(json.dumps({"type": "conversation.item.delete", "item_id": reply}))
            assert json.loads(await ws.recv()) | {"event_id": None} == {
                "type": "conversation.item.deleted", "item_id": reply, "event_id": None}
