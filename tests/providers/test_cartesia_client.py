"""The Cartesia client against the Cartesia emulator over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json

import provider_helpers
import pytest
from provider_helpers import build, probe_each, synthesize_into, words_in_common

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
from voicerouter.providers.base import AudioChunk, BuildContext
from voicerouter.providers.cartesia import CartesiaTTS, create
from voicerouter.testing import emulate

CANARY = "sk_car_canary_3e8f21aa90"  # must never appear in an error message
TEXT = "Thanks for calling, how can I help?"


def make(url: str, key: str = CANARY, kind: str = "tts", **fields) -> CartesiaTTS:
    return build(create, "cartesia", "sonic", url, kind, key=key, env_var="CARTESIA_TEST_KEY", **fields)


async def collect(tts: CartesiaTTS, text: str = TEXT) -> list[AudioChunk]:
    return await provider_helpers.collect(tts, text)


async def test_streams_raw_pcm_with_versioned_request() -> None:
    async with emulate("cartesia", api_key=CANARY) as emu:
        chunks = await collect(make(emu.url, language="en-US", voice="a0e99841-438c-4a64-b679-ae501e7d6091"))
        await collect(make(emu.url))
    assert len(chunks) > 3
    assert all(c.sample_rate == 24000 and len(c.pcm) % 2 == 0 for c in chunks)
    assert sum(c.duration_s for c in chunks) == pytest.approx(0.06 * len(TEXT), rel=0.01)
    request, bare = emu.state.requests[-2:]
    assert request["headers"]["Cartesia-Version"] == "2026-08-14"
    assert request["headers"]["Authorization"] == f"Bearer {CANARY}" and "X-API-Key" not in request["headers"]
    assert json.loads(request["body"]) == {
        "model_id": "sonic-3", "transcript": TEXT,
        "voice": "a0e99841-438c-4a64-b679-ae501e7d6091",
        "output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 24000},
        "language": "en",
    }
    assert "language" not in json.loads(bare["body"])  # the language goes only when the table sets it


async def test_older_version_sends_voice_mode_and_x_api_key_on_request() -> None:
    async with emulate("cartesia", api_key=CANARY, faults="error:429:4*1") as emu:
        tts = make(emu.url, sample_rate=16000, options={"auth": "x-api-key", "version": "2026-03-01"})
        with pytest.raises(RateLimitedError) as info:
            await collect(tts)
        ok = await collect(make(emu.url, sample_rate=16000, options={"version": "2025-11-04"}))
    assert info.value.retry_after == 4.0
    assert "concurrency_limited Too many concurrent requests: You have exceeded" in str(info.value)
    assert emu.state.requests[0]["headers"]["X-API-Key"] == CANARY
    assert {c.sample_rate for c in ok} == {16000}
    last = emu.state.requests[-1]
    assert last["headers"]["Authorization"] == f"Bearer {CANARY}"
    assert json.loads(last["body"])["voice"] == {"mode": "id", "id": "694f9389-aac1-45b6-b726-9d9369183238"}


async def test_wrong_key_is_auth_error_without_key() -> None:
    async with emulate("cartesia", api_key="the-right-key") as emu:
        with pytest.raises(AuthError) as info:
            await collect(make(emu.url))
    assert info.value.status == 401 and "Unauthorized: Invalid API key" in str(info.value)
    assert CANARY not in str(info.value)


async def test_rejected_request_is_request_error() -> None:
    async with emulate("cartesia", api_key=CANARY) as emu:
        with pytest.raises(RequestError) as empty:
            await collect(make(emu.url), text="  ")
    assert empty.value.status == 400 and "transcript is required" in str(empty.value)


@pytest.mark.parametrize("spec, error, status", [
    ("error:403", AuthError, 403), ("error:500", TransientProviderError, 500), ("error:503", TransientProviderError, 503),
    ("malformed", TransientProviderError, None), ("drop", TransientProviderError, None),
    ("truncate", TransientProviderError, None),
])
async def test_failures(spec: str, error: type[ProviderError], status: int | None) -> None:
    async with emulate("cartesia", api_key=CANARY, faults=spec) as emu:
        with pytest.raises(error) as info:
            await collect(make(emu.url))
    assert info.value.status == status and info.value.provider == "sonic"
    assert CANARY not in str(info.value)
    if spec == "malformed":
        assert "malformed" in str(info.value) and "unexpected" in str(info.value)


async def test_hang_and_stall_are_timeouts() -> None:
    async with emulate("cartesia", api_key=CANARY, faults="hang*1,stall:3s*1") as emu:
        with pytest.raises(ProviderTimeout):
            await collect(make(emu.url, timeout_ms=300))
        got: list[AudioChunk] = []
        tts = make(emu.url, timeout_ms=300)
        with pytest.raises(ProviderTimeout):
            await synthesize_into(tts, TEXT, got)
        await tts.aclose()
    assert got


async def test_slow_first_byte_within_timeout_succeeds() -> None:
    async with emulate("cartesia", api_key=CANARY, faults="slow:100ms") as emu:
        chunks = await collect(make(emu.url, timeout_ms=5000))
    assert chunks


def test_config_errors() -> None:
    with pytest.raises(MissingSecretError) as info:
        create("sonic", "tts", ProviderConfig(type="cartesia", api_key="${CARTESIA_MISSING}"), BuildContext(env={}))
    assert "CARTESIA_MISSING" in str(info.value)
    with pytest.raises(ConfigError):
        make("http://127.0.0.1:9", sample_rate=12000)
    with pytest.raises(ConfigError):
        make("http://127.0.0.1:9", options={"version": "latest"})
    with pytest.raises(ConfigError):
        make("http://127.0.0.1:9", kind="stt")
    with pytest.raises(ConfigError):
        make("http://api.cartesia.ai")


async def test_probe() -> None:
    async with emulate("cartesia", api_key=CANARY) as emu:
        await probe_each(lambda kind: make(emu.url, kind=kind), ("tts",))


@pytest.mark.slow
async def test_real_speech_is_recognizable() -> None:
    """Piper speech streamed through the wire, then recognized by PocketSphinx."""
    pocketsphinx = pytest.importorskip("voicerouter.providers.local.pocketsphinx")
    phrase = "ask not what your country can do for you"
    async with emulate("cartesia", api_key=CANARY, tts_engine="piper") as emu:
        chunks = await collect(make(emu.url, sample_rate=16000), text=phrase)
    text = pocketsphinx.transcribe_pcm(b"".join(c.pcm for c in chunks), 16000)
    assert len(chunks) > 3
    assert words_in_common(text, phrase) >= 3, text


@pytest.mark.parametrize("patch, headers, status", [
    ({"transcript": ""}, {}, 400),
    ({"output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 11025}}, {}, 400),
    ({"output_format": {"container": "ogg", "encoding": "pcm_s16le", "sample_rate": 16000}}, {}, 400),
    ({"output_format": {"container": "mp3", "sample_rate": 16000}}, {}, 400),
    ({"voice": "694f9389-aac1-45b6-b726-9d9369183238"}, {}, 400),  # a bare id needs 2026-08-14
    ({}, {"Cartesia-Version": ""}, 400),
    ({}, {"Content-Type": "text/plain"}, 415),
    ({}, {"X-API-Key": "wrong"}, 401),
])
async def test_emulator_validates_like_cartesia(patch: dict, headers: dict, status: int) -> None:
    import httpx

    body = {"model_id": "sonic-2", "transcript": "hi", "voice": {"mode": "id", "id": "v"},
            "output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 16000}, **patch}
    base = {"X-API-Key": CANARY, "Cartesia-Version": "2025-11-04", "Content-Type": "application/json"}
    async with emulate("cartesia", api_key=CANARY) as emu, httpx.AsyncClient() as client:
        response = await client.post(emu.url + "/tts/bytes", content=json.dumps(body), headers={**base, **headers})
        modern = await client.post(emu.url + "/tts/bytes", content=json.dumps(body),
                                   headers={**base, "Cartesia-Version": "2026-08-14", **headers})
    assert response.status_code == status
    assert ": " in response.text and not response.text.startswith("{")  # "Title: Message" before 2026-03-01
    if "voice" not in patch and "Cartesia-Version" not in headers:  # the same mistake, newer error format
        assert modern.status_code == status and set(modern.json()) >= {"error_code", "title", "message"}


def test_unknown_option_is_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        make("http://127.0.0.1:9", options={"cartesia_version": "2025-11-04"})
    assert "cartesia_version" in str(info.value) and "version" in str(info.value)
