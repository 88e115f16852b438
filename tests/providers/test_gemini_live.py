"""The Gemini Live S2S client against the Live emulator over a real WebSocket on 127.0.0.1."""

from __future__ import annotations

import importlib.util

import pytest
from wire import sdk_calls

from voicerouter.config.schema import ProviderConfig
from voicerouter.errors import AuthError, ConfigError, RateLimitedError, RequestError, TransientProviderError
from voicerouter.providers.base import BuildContext, Conversation, S2SEvent
from voicerouter.providers.gemini_live import close_error, create
from voicerouter.testing import emulate, tone

CANARY = "AIza-canary-gemini-0123456789"
ENV = {"GEMINI_API_KEY": CANARY}


def make(url: str, **fields):
    config = ProviderConfig(type="gemini-live", api_key="${GEMINI_API_KEY}", base_url=url, **fields)
    return create("gem", "s2s", config, BuildContext(env=ENV))


async def turn(session, seconds: float = 1.0, rate: int = 16000) -> list[S2SEvent]:
    pcm = tone(seconds, rate)
    step = rate // 50 * 2
    for i in range(0, len(pcm), step):
        await session.send_audio(pcm[i : i + step], rate)
    return [event async for event in session.respond()]


async def test_turns_with_history_instructions_and_transcripts() -> None:
    history = Conversation()
    history.add("user", "hi there")
    history.add("assistant", "hello, how can I help?")
    async with emulate("gemini-live", api_key=CANARY, transcript="what time is it") as emu:
        session = await make(emu.url, voice="Kore", language="en-US").connect(instructions="Be brief.",
                                                                             history=history)
        try:
            first = await turn(session)
            second = await turn(session, 0.5, rate=8000)  # any input rate is resampled to 16 kHz
        finally:
            await session.aclose()
    for events in (first, second):
        assert events[-1].type == "done" and events[-1].text == "You said: what time is it"
        assert [e.text for e in events if e.type == "user_transcript"] == ["what time is it"]
        assert "".join(e.text for e in events if e.type == "reply_text") == "You said: what time is it"
        audio = [e.audio for e in events if e.type == "audio"]
        assert all(a.sample_rate == 24000 for a in audio)
        assert sum(a.duration_s for a in audio) == pytest.approx(0.06 * len("You said: what time is it"), abs=0.01)
    messages = emu.state.requests[0]["messages"]
    setup = messages[0]["setup"]
    assert setup["model"] == "models/gemini-live-2.5-flash-preview"
    assert setup["realtimeInputConfig"] == {"automaticActivityDetection": {"disabled": True}}
    assert setup["systemInstruction"]["parts"] == [{"text": "Be brief."}]
    assert setup["generationConfig"]["speechConfig"] == {"voiceConfig": {"prebuiltVoiceConfig": {"voiceName": "Kore"}},
                                                         "languageCode": "en-US"}
    assert messages[1] == {"clientContent": {"turns": [
        {"role": "user", "parts": [{"text": "hi there"}]},
        {"role": "model", "parts": [{"text": "hello, how can I help?"}]}], "turnComplete": False}}
    ends = [m for m in messages if "activityEnd" in m.get("realtimeInput", {})]
    assert [round(m["audio_s"], 2) for m in ends] == [1.0, 0.5]
    assert emu.state.requests[0]["headers"]["x-goog-api-key"] == CANARY
    assert emu.state.requests[0]["path"].endswith(".v1.GenerativeService.BidiGenerateContent")


async def test_wrong_key_is_an_auth_error_without_the_key() -> None:
    async with emulate("gemini-live", api_key="the-right-key") as emu:
        with pytest.raises(AuthError) as info:
            await make(emu.url).connect(instructions=None, history=Conversation())
    assert "1008" in str(info.value) and CANARY not in str(info.value)


@pytest.mark.parametrize("spec, error", [
    ("drop", TransientProviderError), ("error:429", RateLimitedError), ("error:500", TransientProviderError),
    ("malformed", TransientProviderError),
])
async def test_a_failed_reply_is_typed(spec: str, error: type) -> None:
    async with emulate("gemini-live", api_key=CANARY, faults=f"slow:1ms*1,{spec}") as emu:
        session = await make(emu.url).connect(instructions=None, history=Conversation())
        try:
            with pytest.raises(error) as info:
                await turn(session)
        finally:
            await session.aclose()
    assert info.value.provider == "gem" and CANARY not in str(info.value)


async def test_a_refused_upgrade_is_typed() -> None:
    async with emulate("gemini-live", api_key=CANARY, faults="error:503") as emu:
        with pytest.raises(TransientProviderError) as info:
            await make(emu.url).connect(instructions=None, history=Conversation())
    assert info.value.status == 503


async def test_barge_in_then_next_turn_is_clean() -> None:
    async with emulate("gemini-live", api_key=CANARY, transcript="tell me a long story") as emu:
        session = await make(emu.url).connect(instructions=None, history=Conversation())
        try:
            pcm = tone(1.0, 16000)
            for i in range(0, len(pcm), 640):
                await session.send_audio(pcm[i : i + 640], 16000)
            replies = session.respond()
            async for event in replies:
                if event.type == "audio":
                    break
            await replies.aclose()  # the user talks over the reply
            events = await turn(session)
        finally:
            await session.aclose()
    assert events[-1].type == "done" and events[-1].text == "You said: tell me a long story"


def test_close_codes_map_to_typed_errors() -> None:
    assert isinstance(close_error(1008, "API key not valid.", provider="g"), AuthError)
    assert isinstance(close_error(1007, "Invalid argument.", provider="g"), RequestError)
    assert isinstance(close_error(1011, "RESOURCE_EXHAUSTED: quota", provider="g"), RateLimitedError)
    assert isinstance(close_error(1011, "Internal error encountered.", provider="g"), TransientProviderError)


def test_config_errors() -> None:
    with pytest.raises(ConfigError):
        create("gem", "stt", ProviderConfig(type="gemini-live", api_key="x"), BuildContext(env={}))
    with pytest.raises(ConfigError):
        make("http://127.0.0.1:9", options={"api_version": "v2"})
    with pytest.raises(ConfigError):
        make("http://example.com")


@pytest.mark.skipif(importlib.util.find_spec("google.genai") is None, reason="google-genai SDK not installed")
async def test_the_sdk_drives_the_emulator() -> None:
    async with emulate("gemini-live", api_key=CANARY, transcript="what time is it") as emu:
        received = await sdk_calls.gemini_live(emu.url, CANARY)
    heard = [m.server_content.input_transcription.text for m in received
             if m.server_content and m.server_content.input_transcription]
    audio = b"".join(m.data or b"" for m in received)
    assert heard == ["what time is it"] and len(audio) == 2 * int(0.06 * len("You said: what time is it") * 24000)
    assert received[-1].server_content.turn_complete
