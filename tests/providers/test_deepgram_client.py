"""The Deepgram client against the Deepgram emulator over real HTTP and WebSocket on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from contextlib import aclosing
from pathlib import Path

import pytest
from provider_helpers import build, probe_each, synthesize_into

from voicerouter.config.schema import ProviderConfig
from voicerouter.errors import (
    AuthError,
    ConfigError,
    MissingSecretError,
    ProviderError,
    ProviderTimeout,
    RateLimitedError,
    RequestError,
    TransientProviderError,
)
from voicerouter.providers.base import AudioChunk, BuildContext, STTStream, Transcript
from voicerouter.providers.deepgram import DeepgramSTT, DeepgramTTS, create
from voicerouter.testing import emulate, tone

CANARY = "dg-canary-7c1e5a90b2"  # must never appear in an error message
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
REFERENCE_WORDS = set("and so my fellow americans ask not what your country can do for you".split())


def make(url: str, kind: str = "stt", key: str = CANARY, **fields) -> DeepgramSTT | DeepgramTTS:
    return build(create, "deepgram", "dg", url, kind, key=key, env_var="DG_TEST_KEY", **fields)


def speech_like(seconds: float = 1.2) -> bytes:
    return tone(seconds, 16000, freq=180.0)


async def stream_all(stt: DeepgramSTT, pcm: bytes, partials: list[Transcript] | None = None) -> Transcript:
    stream = await stt.open_stream(16000, on_partial=partials.append if partials is not None else None)
    assert isinstance(stream, STTStream)
    try:
        for i in range(0, len(pcm), 640):  # 20 ms frames, as the pipeline sends them
            await stream.send(pcm[i : i + 640])
        return await stream.finish()
    finally:
        await stream.aclose()


def assert_clean(err: BaseException) -> None:
    assert CANARY not in str(err)
    assert CANARY not in repr(err.args)


async def test_live_stream_returns_final_and_partials() -> None:
    async with emulate("deepgram", api_key=CANARY, transcript="book a table for two") as emu:
        partials: list[Transcript] = []
        async with aclosing(make(emu.url, model="nova-3", language="en-US", options={"endpointing": 300})) as stt:
            result = await stream_all(stt, speech_like(1.5), partials)
    assert result.text == "book a table for two"
    assert result.is_final and result.provider == "dg"
    assert partials and not partials[0].is_final
    assert all(p.provider == "dg" for p in partials)
    assert partials[-1].text == "book a table for two"
    upgrade = next(r for r in emu.state.requests if r.get("method") == "GET")
    assert upgrade["headers"]["Authorization"] == f"Token {CANARY}"
    query = upgrade["query"]
    assert query["model"] == "nova-3" and query["encoding"] == "linear16" and query["sample_rate"] == "16000"
    assert query["channels"] == "1" and query["interim_results"] == "true" and query["punctuate"] == "true"
    assert query["endpointing"] == "300" and query["language"] == "en-US"
    controls = [r["control"] for r in emu.state.requests if "control" in r]
    assert controls[-2:] == ["Finalize", "CloseStream"]


async def test_empty_frames_are_never_sent() -> None:
    async with emulate("deepgram", api_key=CANARY, transcript="ok") as emu:
        async with aclosing(make(emu.url)) as stt:
            stream = await stt.open_stream(16000)
            await stream.send(b"")  # the emulator closes 1008 on an empty frame, like Deepgram
            await stream.send(speech_like(0.3))
            await stream.send(b"")
            result = await stream.finish()
    assert result.text == "ok"


async def test_stream_without_audio_is_empty() -> None:
    async with emulate("deepgram", api_key=CANARY, transcript="never said") as emu:
        async with aclosing(make(emu.url)) as stt:
            stream = await stt.open_stream(16000)
            result = await stream.finish()
    assert result.text == "" and result.is_final


async def test_keepalive_sent_while_idle() -> None:
    async with emulate("deepgram", api_key=CANARY, transcript="still here") as emu:
        async with aclosing(make(emu.url, options={"keepalive_s": 0.05})) as stt:
            stream = await stt.open_stream(16000)
            await stream.send(speech_like(0.2))
            await asyncio.sleep(0.3)
            result = await stream.finish()
    assert result.text == "still here"
    assert "KeepAlive" in [r.get("control") for r in emu.state.requests]


async def test_batch_transcribe_posts_wav() -> None:
    async with emulate("deepgram", api_key=CANARY, transcript="hello there") as emu:
        async with aclosing(make(emu.url)) as stt:
            result = await stt.transcribe(AudioChunk(speech_like(), 16000))
    assert result.text == "hello there" and result.confidence is not None
    request = emu.state.requests[-1]
    assert request["method"] == "POST" and request["headers"]["Content-Type"] == "audio/wav"
    assert request["query"]["model"] == "nova-3"


async def test_live_handshake_401_is_auth_error_without_key() -> None:
    async with emulate("deepgram", api_key="the-right-key") as emu:
        async with aclosing(make(emu.url)) as stt:
            with pytest.raises(AuthError) as info:
                await stt.open_stream(16000)
    assert info.value.status == 401 and info.value.provider == "dg"
    assert "Invalid credentials" in str(info.value)
    assert_clean(info.value)


async def test_live_handshake_429_is_rate_limited_with_retry_after() -> None:
    async with emulate("deepgram", api_key=CANARY, faults="error:429:3") as emu:
        async with aclosing(make(emu.url)) as stt:
            with pytest.raises(RateLimitedError) as info:
                await stt.open_stream(16000)
    assert info.value.retry_after == 3.0 and info.value.provider == "dg"


@pytest.mark.parametrize("spec, error", [("error:1011", TransientProviderError), ("error:1008", TransientProviderError),
                                         ("drop:0.3s", TransientProviderError), ("truncate", TransientProviderError),
                                         ("drop", TransientProviderError), ("malformed", TransientProviderError)])
async def test_live_failures_mid_stream_are_transient(spec: str, error: type[ProviderError]) -> None:
    async with emulate("deepgram", api_key=CANARY, faults=spec) as emu:
        async with aclosing(make(emu.url)) as stt:
            with pytest.raises(error) as info:
                await stream_all(stt, speech_like(1.0))
    assert info.value.retryable and info.value.provider == "dg"
    assert not isinstance(info.value, ProviderTimeout)  # noticed at once, not by waiting
    assert_clean(info.value)
    if spec == "malformed":
        assert "upstream error" in str(info.value)


async def test_live_stall_is_timeout() -> None:
    async with emulate("deepgram", api_key=CANARY, faults="stall:1s") as emu:
        async with aclosing(make(emu.url, timeout_ms=300)) as stt:
            with pytest.raises(ProviderTimeout) as info:
                await stream_all(stt, speech_like(0.6))
    assert "CloseStream" in str(info.value)


async def test_partial_callback_failure_is_not_disguised() -> None:
    def broken(_: Transcript) -> None:
        raise ZeroDivisionError("caller bug")

    async with emulate("deepgram", api_key=CANARY, transcript="anything") as emu:
        async with aclosing(make(emu.url)) as stt:
            stream = await stt.open_stream(16000, on_partial=broken)
            with pytest.raises(ZeroDivisionError):
                for _ in range(100):
                    await stream.send(speech_like(0.1))
                    await asyncio.sleep(0.01)
                await stream.finish()
            await stream.aclose()


async def test_live_hang_at_upgrade_is_timeout() -> None:
    async with emulate("deepgram", api_key=CANARY, faults="hang") as emu:
        async with aclosing(make(emu.url, timeout_ms=300)) as stt:
            with pytest.raises(ProviderTimeout):
                await stt.open_stream(16000)


async def test_batch_errors_map_to_types() -> None:
    async with emulate("deepgram", api_key=CANARY, faults="error:400*1,error:503*1,malformed*1") as emu:
        audio = AudioChunk(speech_like(0.5), 16000)
        async with aclosing(make(emu.url)) as stt:
            with pytest.raises(RequestError) as bad:
                await stt.transcribe(audio)
            with pytest.raises(TransientProviderError) as down:
                await stt.transcribe(audio)
            with pytest.raises(TransientProviderError) as garbage:
                await stt.transcribe(audio)
    assert bad.value.status == 400 and down.value.status == 503
    assert "malformed" in str(garbage.value) and "502 upstream glitch" in str(garbage.value)
    for info in (bad, down, garbage):
        assert_clean(info.value)


async def test_batch_hang_is_timeout() -> None:
    async with emulate("deepgram", api_key=CANARY, faults="hang") as emu:
        async with aclosing(make(emu.url, timeout_ms=300)) as stt:
            with pytest.raises(ProviderTimeout) as info:
                await stt.transcribe(AudioChunk(speech_like(0.3), 16000))
    assert info.value.provider == "dg"


async def test_tts_streams_pcm_in_chunks() -> None:
    async with emulate("deepgram", api_key=CANARY) as emu:
        async with aclosing(make(emu.url, kind="tts", sample_rate=16000)) as tts:
            chunks = [c async for c in tts.synthesize("Your table is booked for seven tonight.")]
    assert len(chunks) > 3
    assert all(c.sample_rate == 16000 and len(c.pcm) % 2 == 0 for c in chunks)
    total = sum(c.duration_s for c in chunks)
    assert total == pytest.approx(0.06 * len("Your table is booked for seven tonight."), rel=0.01)
    request = emu.state.requests[-1]
    assert request["query"] == {"model": "aura-2-thalia-en", "encoding": "linear16", "container": "none",
                                "sample_rate": "16000"}
    assert json.loads(request["body"]) == {"text": "Your table is booked for seven tonight."}


@pytest.mark.parametrize("spec, error, status", [
    ("error:401", AuthError, 401), ("error:403", AuthError, 403), ("error:402", RequestError, 402),
    ("error:429:1", RateLimitedError, 429), ("error:503", TransientProviderError, 503),
    ("malformed", TransientProviderError, None), ("drop", TransientProviderError, None),
    ("truncate", TransientProviderError, None),
])
async def test_tts_errors(spec: str, error: type[ProviderError], status: int | None) -> None:
    async with emulate("deepgram", api_key=CANARY, faults=spec) as emu:
        async with aclosing(make(emu.url, kind="tts")) as tts:
            with pytest.raises(error) as info:
                async for _ in tts.synthesize("Hello there, how are you today?"):
                    pass
    assert info.value.status == status and info.value.provider == "dg"
    assert_clean(info.value)


async def test_tts_stall_beyond_timeout_is_timeout() -> None:
    async with emulate("deepgram", api_key=CANARY, faults="stall:2s") as emu:
        got: list[AudioChunk] = []
        async with aclosing(make(emu.url, kind="tts", timeout_ms=300)) as tts:
            with pytest.raises(ProviderTimeout):
                await synthesize_into(tts, "A sentence long enough to stall in the middle.", got)
    assert got  # audio before the stall still arrived


async def test_tts_rejected_request_is_request_error() -> None:
    async with emulate("deepgram", api_key=CANARY) as emu:
        async with aclosing(make(emu.url, kind="tts", voice="not-a-model")) as tts:
            with pytest.raises(RequestError) as info:
                async for _ in tts.synthesize("Hi"):
                    pass
    assert "No such model" in str(info.value)


async def test_emulator_closes_1008_on_empty_frame_and_bad_json() -> None:
    """The emulator behaves like Deepgram, so the client tests above can fail."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    async with emulate("deepgram", api_key=CANARY) as emu:
        url = emu.ws_url + "/v1/listen?model=nova-3&encoding=linear16&sample_rate=16000&channels=1"
        for bad in (b"", "not json"):
            async with connect(url, additional_headers={"Authorization": f"Token {CANARY}"}) as ws:
                await ws.send(bad)
                with pytest.raises(ConnectionClosed) as info:
                    await ws.recv()
            assert info.value.rcvd.code == 1008 and info.value.rcvd.reason == "DATA-0000"


@pytest.mark.parametrize("query, body, content_type, status", [
    ("model=aura-2-thalia-en&encoding=linear16&container=none&sample_rate=24000", b'{"text": ""}',
     "application/json", 400),
    ("model=aura-2-thalia-en&encoding=linear16&container=none&sample_rate=22050", b'{"text": "hi"}',
     "application/json", 400),
    ("model=aura-2-thalia-en&encoding=mp3&container=none&sample_rate=24000", b'{"text": "hi"}',
     "application/json", 400),
    ("model=aura-2-thalia-en", b"<text>hi</text>", "application/xml", 415),
])
async def test_emulator_speak_validates_like_deepgram(query: str, body: bytes, content_type: str, status: int) -> None:
    import httpx

    async with emulate("deepgram", api_key=CANARY) as emu, httpx.AsyncClient() as client:
        response = await client.post(f"{emu.url}/v1/speak?{query}", content=body,
                                     headers={"Authorization": f"Token {CANARY}", "Content-Type": content_type})
    assert response.status_code == status
    assert set(response.json()) == {"err_code", "err_msg", "request_id"}


async def test_emulator_listen_refuses_wrong_content_type() -> None:
    import httpx

    async with emulate("deepgram", api_key=CANARY) as emu, httpx.AsyncClient() as client:
        response = await client.post(f"{emu.url}/v1/listen", content=b"RIFF",
                                     headers={"Authorization": f"Token {CANARY}", "Content-Type": "text/plain"})
        upgrade = await client.get(f"{emu.url}/v1/listen", headers={"Authorization": "Token nope"})
    assert response.status_code == 415
    assert upgrade.status_code == 401 and upgrade.headers["dg-error"] == "Invalid credentials."


def test_missing_key_names_variable() -> None:
    config = ProviderConfig(type="deepgram", kind="stt", api_key="${DG_MISSING_KEY}")
    with pytest.raises(MissingSecretError) as info:
        create("dg", "stt", config, BuildContext(env={}))
    assert "DG_MISSING_KEY" in str(info.value)


def test_plain_http_to_remote_host_refused() -> None:
    with pytest.raises(ConfigError):
        make("http://api.example.com", kind="stt")


def test_unsupported_tts_rate_refused() -> None:
    with pytest.raises(ConfigError):
        make("http://127.0.0.1:9", kind="tts", sample_rate=22050)


async def test_probe() -> None:
    async with emulate("deepgram", api_key=CANARY, transcript="") as emu:
        await probe_each(lambda kind: make(emu.url, kind=kind), ("stt", "tts"))


@pytest.mark.slow
async def test_real_speech_through_live_socket() -> None:
    """jfk.flac streamed to the emulator running PocketSphinx (transcript=None)."""
    sf = pytest.importorskip("soundfile")
    soxr = pytest.importorskip("soxr")
    path = FIXTURES / "jfk.flac"
    if not path.exists():
        pytest.skip("tests/fixtures/jfk.flac is missing")
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    mono = soxr.resample(data.mean(axis=1), rate, 16000)
    pcm = (mono[: 16000 * 7].clip(-1, 1) * 32767).astype("<i2").tobytes()  # "...what your country can do for you"
    async with emulate("deepgram", api_key=CANARY, transcript=None) as emu:
        partials: list[Transcript] = []
        async with aclosing(make(emu.url, timeout_ms=60000)) as stt:
            result = await stream_all(stt, pcm, partials)
    # PocketSphinx is a weak recognizer; the point is real words through the real wire, not its accuracy.
    heard = set(result.text.lower().split())
    assert len(heard & REFERENCE_WORDS) >= 3, result.text
    assert partials


def test_unknown_option_is_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        make("http://127.0.0.1:9", options={"endpointng": 300})
    assert "endpointng" in str(info.value) and "endpointing" in str(info.value)


@pytest.mark.parametrize("value", ["4", 0, 30, True])
def test_bad_keepalive_is_config_error(value: object) -> None:
    with pytest.raises(ConfigError):
        make("http://127.0.0.1:9", options={"keepalive_s": value})


async def test_closing_a_stalled_live_socket_never_waits_for_its_close_handshake() -> None:
    """A dead server does not answer the close frame: the handshake runs in the background, so the
    caller (about to fail over) gets the timeout at once, not a close timeout later."""
    from voicerouter.providers import closing

    async with emulate("deepgram", api_key=CANARY, faults="stall:30s") as emu:
        async with aclosing(make(emu.url, timeout_ms=300)) as stt:
            with pytest.raises(ProviderTimeout):
                await stream_all(stt, speech_like(0.6))
            assert closing.pending() >= 1  # the close handshake is still waiting for the stalled server
        await closing.settle(0.1)


async def test_a_cancelled_send_is_never_swallowed() -> None:
    """A cancel that arrives as the socket takes the audio still cancels the sender (asyncio.wait_for
    on Python 3.11 returned normally instead, and a session waiting on that sender waited forever)."""
    async with emulate("deepgram", api_key=CANARY, transcript="hello there") as emu:
        async with aclosing(make(emu.url)) as stt:
            stream = await stt.open_stream(16000)
            loop = asyncio.get_running_loop()
            taken: list[asyncio.Future[None]] = []

            async def send(data: bytes) -> None:  # the socket's send, completing on our signal
                taken.append(loop.create_future())
                await taken[-1]

            stream._ws.send = send
            for _ in range(20):
                task = asyncio.create_task(stream.send(speech_like(0.02)))
                await asyncio.sleep(0)
                taken[-1].set_result(None)  # the send completes ...
                task.cancel()  # ... in the same loop iteration as the cancel
                with pytest.raises(asyncio.CancelledError):
                    await task
            del stream._ws.send
            await stream.aclose()
