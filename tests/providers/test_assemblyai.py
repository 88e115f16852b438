"""The AssemblyAI Universal Streaming (v3) client against its emulator over a real WebSocket on 127.0.0.1,
and a route failing over between two streaming STT vendors without dropping to batch."""

from __future__ import annotations

import asyncio
import importlib.util
from contextlib import aclosing

import pytest
from wire import sdk_calls

from voicerouter.config.schema import BackoffConfig, ProviderConfig, ResilienceConfig
from voicerouter.errors import AuthError, ConfigError, RateLimitedError, RequestError, TransientProviderError
from voicerouter.providers.assemblyai import close_error, create
from voicerouter.providers.base import AudioChunk, BuildContext, SessionInfo
from voicerouter.providers.pool import ProviderPool
from voicerouter.resilience import build_stage
from voicerouter.routing.plan import StagePlan
from voicerouter.session.events import EventBus, EventType
from voicerouter.testing import emulate, tone

CANARY = "aai-canary-key-0123456789"
SAID = "What is the weather today?"


def make(url: str, **fields):
    config = ProviderConfig(type="assemblyai", api_key="${AAI_KEY}", base_url=url, **fields)
    return create("aai", "stt", config, BuildContext(env={"AAI_KEY": CANARY}))


async def speak(stream, seconds: float, rate: int = 16000, realtime: bool = True) -> None:
    pcm = tone(seconds, rate)
    step = rate // 50 * 2  # 20 ms, as the pipeline sends
    for i in range(0, len(pcm), step):
        await stream.send(pcm[i : i + step])
        if realtime:
            await asyncio.sleep(0.02)


async def test_a_streamed_utterance_with_partials() -> None:
    partials: list[str] = []
    async with emulate("assemblyai", api_key=CANARY, transcript=SAID) as emu:
        stt = make(emu.url, options={"keyterms_prompt": ["weather"], "format_turns": True})
        async with aclosing(await stt.open_stream(16000, on_partial=lambda t: partials.append(t.text))) as stream:
            await speak(stream, 1.2)
            final = await stream.finish()
    assert final.text == SAID and final.is_final and final.provider == "aai"  # the formatted repeat wins
    assert partials and all(SAID.startswith(p) for p in partials)
    request = emu.state.requests[0]
    assert request["headers"]["Authorization"] == CANARY and request["headers"]["AssemblyAI-Version"] == "2025-05-12"
    assert request["query"] == {"sample_rate": "16000", "encoding": "pcm_s16le", "speech_model":
                                "universal-streaming-english", "format_turns": "true", "keyterms_prompt": '["weather"]'}
    frames = [m for m in request["messages"] if isinstance(m, int)]
    assert set(frames[:-1]) == {1600} and sum(frames) >= 1.2 * 32000  # 50 ms frames, the last one padded
    assert request["messages"][-2:] == [{"type": "ForceEndpoint"}, {"type": "Terminate"}]


async def test_a_backlog_is_paced_to_real_time_not_refused() -> None:
    """A buffered utterance (transcribe, or a failover replay) goes out no faster than the service takes."""
    async with emulate("assemblyai", api_key=CANARY, transcript=SAID) as emu:
        final = await make(emu.url).transcribe(AudioChunk(tone(2.0, 8000), 8000))
    assert final.text == "what is the weather today"  # the unformatted end-of-turn transcript
    assert emu.state.requests[0]["query"]["sample_rate"] == "8000"


async def test_wrong_key_is_an_auth_error_without_the_key() -> None:
    async with emulate("assemblyai", api_key="the-right-key") as emu:
        with pytest.raises(AuthError) as info:
            await make(emu.url).open_stream(16000)
    assert "1008" in str(info.value) and CANARY not in str(info.value)


async def test_a_dropped_stream_is_transient() -> None:
    async with emulate("assemblyai", api_key=CANARY, faults="drop:0.3s") as emu:
        stream = await make(emu.url).open_stream(16000)
        with pytest.raises(TransientProviderError):
            await speak(stream, 1.0)
            await stream.finish()
        await stream.aclose()


async def test_a_refused_upgrade_is_typed() -> None:
    async with emulate("assemblyai", api_key=CANARY, faults="error:429") as emu:
        with pytest.raises(RateLimitedError):
            await make(emu.url).open_stream(16000)


async def test_the_emulator_refuses_frames_outside_50_to_1000_ms() -> None:
    import websockets

    async with emulate("assemblyai", api_key=CANARY) as emu:
        async with websockets.connect(emu.ws_url + "/v3/ws?sample_rate=16000",
                                      additional_headers={"Authorization": CANARY}) as ws:
            assert '"Begin"' in await ws.recv()
            await ws.send(b"\0\0" * 160)  # 10 ms
            with pytest.raises(websockets.ConnectionClosed) as info:
                await ws.recv()
    assert info.value.rcvd.code == 3007


def test_close_codes_and_config() -> None:
    assert isinstance(close_error(4001, "Not Authorized", provider="a"), AuthError)
    assert isinstance(close_error(3009, "too many sessions", provider="a"), RateLimitedError)
    assert isinstance(close_error(3007, "Input duration violation", provider="a"), RequestError)
    assert isinstance(close_error(3005, "server error", provider="a"), TransientProviderError)
    with pytest.raises(ConfigError):
        make("http://127.0.0.1:9", options={"word_boost": ["x"]})
    with pytest.raises(ConfigError):
        create("aai", "tts", ProviderConfig(type="assemblyai", api_key="k"), BuildContext(env={}))


async def test_a_route_fails_over_between_two_streaming_vendors() -> None:
    policy = ResilienceConfig(retries=0, backoff=BackoffConfig(base_ms=5, max_ms=10), first_result_timeout_ms=3000,
                              stall_timeout_ms=3000, turn_deadline_ms=15000)
    speech = tone(1.5, 16000, freq=180.0)
    async with emulate("deepgram", api_key=CANARY, faults="drop:0.5s") as dg, \
            emulate("assemblyai", api_key=CANARY, transcript=SAID) as aai:
        pool = ProviderPool({
            "dg": ProviderConfig(type="deepgram", kind="stt", api_key="${KEY}", base_url=dg.url),
            "aai": ProviderConfig(type="assemblyai", api_key="${KEY}", base_url=aai.url),
        }, BuildContext(env={"KEY": CANARY}))
        bus = EventBus("s1", route="r1")
        stt = build_stage(StagePlan("stt", ("dg", "aai")), pool, policy, bus, session=SessionInfo("s1", route="r1"))
        try:
            stream = await stt.open_stream(16000)
            for i in range(0, len(speech), 640):
                await stream.send(speech[i : i + 640])
                await asyncio.sleep(0.02)
            final = await stream.finish()
            await stream.aclose()
        finally:
            await pool.aclose()
    assert final.text == "what is the weather today" and final.provider == "aai"
    (failover,) = [e.to_dict() for e in bus.history if e.type == EventType.FAILOVER]
    assert failover["from_provider"] == "dg" and failover["to_provider"] == "aai"
    frames = [m for m in aai.state.requests[0]["messages"] if isinstance(m, int)]
    assert sum(frames) >= len(speech)  # the whole utterance reached the second streaming vendor
    assert not [r for r in aai.state.requests if not r.get("websocket")]  # no batch request


@pytest.mark.skipif(importlib.util.find_spec("assemblyai") is None, reason="assemblyai SDK not installed")
async def test_the_sdk_drives_the_emulator() -> None:
    async with emulate("assemblyai", api_key=CANARY, transcript=SAID) as emu:
        events = await sdk_calls.assemblyai_streaming(emu.url, CANARY)
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "BeginEvent" and kinds[-1] == "TerminationEvent"
    ended = [e for e in events if type(e).__name__ == "TurnEvent" and e.end_of_turn]
    assert [e.transcript for e in ended] == ["what is the weather today"]
