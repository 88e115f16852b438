"""The chains over real provider clients and their wire emulators on 127.0.0.1."""

from __future__ import annotations

from voicerouter import resilience
from voicerouter.config.schema import BackoffConfig, BreakerConfig, ProviderConfig, ResilienceConfig
from voicerouter.providers.base import BuildContext, SessionInfo
from voicerouter.providers.pool import ProviderPool
from voicerouter.resilience import build_stage
from voicerouter.routing.plan import StagePlan
from voicerouter.session.events import EventBus, EventType
from voicerouter.testing import emulate, tone

ENV = {"DG_KEY": "test-key", "OAI_KEY": "test-key", "BAD_KEY": "wrong-key"}
POLICY = ResilienceConfig(retries=1, backoff=BackoffConfig(base_ms=5, max_ms=10), first_result_timeout_ms=400,
                          stall_timeout_ms=400, turn_deadline_ms=4000, breaker=BreakerConfig(failures=3))


def pool(dg_url: str, oai_url: str, kind: str, dg_key: str = "${DG_KEY}") -> ProviderPool:
    extra = {"model": "tts-1", "voice": "alloy"} if kind == "tts" else {"model": "whisper-1"}
    return ProviderPool({
        "dg": ProviderConfig(type="deepgram", kind=kind, api_key=dg_key, base_url=dg_url),
        "oai": ProviderConfig(type="openai", kind=kind, api_key="${OAI_KEY}", base_url=oai_url + "/v1", **extra),
    }, BuildContext(env=ENV))


def stage(pool_: ProviderPool, kind: str, session: str = "s1"):
    bus = EventBus(session, route="r1")
    return build_stage(StagePlan(kind, ("dg", "oai")), pool_, POLICY, bus, session=SessionInfo(session, route="r1")), bus


def kinds(bus: EventBus, kind: EventType) -> list[dict]:
    return [e.to_dict() for e in bus.history if e.type == kind]


async def test_tts_that_accepts_then_hangs_fails_over_within_the_first_result_deadline():
    async with emulate("deepgram", faults="hang") as dg, emulate("openai") as oai:
        providers = pool(dg.url, oai.url, "tts")
        tts, bus = stage(providers, "tts")
        try:
            audio = b"".join([chunk.pcm async for chunk in tts.synthesize("Ask not what your country can do.")])
        finally:
            await providers.aclose()
        assert len(audio) > 16000  # the whole sentence, from the fallback
        (failover,) = kinds(bus, EventType.FAILOVER)
        assert failover["from_provider"] == "dg" and failover["to_provider"] == "oai"
        assert failover["reason"] == "timeout"
        assert [r["path"] for r in oai.state.requests] == ["/v1/audio/speech"]


async def test_stt_stream_dropped_mid_utterance_fallback_gets_the_whole_buffer():
    speech = tone(1.5, 16000, freq=180.0)
    async with emulate("deepgram", faults="drop:0.5s") as dg, emulate("openai", transcript="ask not") as oai:
        providers = pool(dg.url, oai.url, "stt")
        stt, bus = stage(providers, "stt")
        try:
            stream = await stt.open_stream(16000)
            for i in range(0, len(speech), 640):
                await stream.send(speech[i : i + 640])
            final = await stream.finish()
            await stream.aclose()
        finally:
            await providers.aclose()
        assert final.text == "ask not" and final.provider == "oai"
        (request,) = [r for r in oai.state.requests if r["path"] == "/v1/audio/transcriptions"]
        assert abs(request["audio_s"] - 1.5) < 0.01  # every byte of the utterance reached the fallback
        (failover,) = kinds(bus, EventType.FAILOVER)
        assert failover["from_provider"] == "dg" and failover["to_provider"] == "oai"


async def test_rate_limit_retry_after_from_the_wire():
    async with emulate("openai", faults="error:429:5*1") as oai, emulate("openai") as other:
        providers = ProviderPool({
            "dg": ProviderConfig(type="openai", kind="tts", api_key="${OAI_KEY}", base_url=oai.url + "/v1"),
            "oai": ProviderConfig(type="openai", kind="tts", api_key="${OAI_KEY}", base_url=other.url + "/v1"),
        }, BuildContext(env=ENV))
        tts, bus = stage(providers, "tts")
        try:
            chunks = [c async for c in tts.synthesize("Hello.")]
        finally:
            await providers.aclose()
        # a healthy fallback answers at once; the limited provider is remembered, not waited for
        assert chunks and len(other.state.requests) == 1 and not kinds(bus, EventType.RETRY)
        (failover,) = kinds(bus, EventType.FAILOVER)
        assert failover["reason"] == "rate_limited" and failover["to_provider"] == "oai"
        assert resilience.snapshot()["dg"]["rate_limited_s"] > 0


async def test_auth_error_from_the_wire_opens_the_breaker_for_later_sessions():
    async with emulate("deepgram") as dg, emulate("openai") as oai:
        providers = pool(dg.url, oai.url, "tts", dg_key="${BAD_KEY}")
        try:
            tts, bus = stage(providers, "tts")
            assert [c async for c in tts.synthesize("Hello.")]
            assert len(dg.state.requests) == 1 and not kinds(bus, EventType.RETRY)
            assert kinds(bus, EventType.FAILOVER)[0]["reason"] == "auth"
            assert kinds(bus, EventType.BREAKER)[0]["state"] == "open"
            later, later_bus = stage(providers, "tts", session="s2")
            assert [c async for c in later.synthesize("Hello again.")]
            assert len(dg.state.requests) == 1  # skipped: no second request reached it
        finally:
            await providers.aclose()


async def test_realtime_connection_dropped_mid_reply_fails_over_with_history_and_the_turn_audio():
    from voicerouter.providers.base import Conversation

    async with emulate("openai-realtime", faults="drop") as rt, emulate("openai-realtime") as backup:
        providers = ProviderPool({
            "rt": ProviderConfig(type="openai-realtime", api_key="${OAI_KEY}", base_url=rt.url + "/v1"),
            "rt-backup": ProviderConfig(type="openai-realtime", api_key="${OAI_KEY}", base_url=backup.url + "/v1"),
        }, BuildContext(env=ENV))
        bus = EventBus("s1", route="r1")
        s2s = build_stage(StagePlan("s2s", ("rt", "rt-backup")), providers, POLICY, bus,
                          session=SessionInfo("s1", route="r1"))
        history = Conversation()
        history.add("user", "hi there")
        history.add("assistant", "hello, how can I help?")
        session = await s2s.connect(instructions="Be brief.", history=history)
        try:
            pcm = tone(1.0, 16000)
            for i in range(0, len(pcm), 640):
                await session.send_audio(pcm[i : i + 640], 16000)
            events = [event async for event in session.respond()]
        finally:
            await session.aclose()
            await providers.aclose()
        assert events[-1].type == "done"
        (failover,) = kinds(bus, EventType.FAILOVER)
        assert failover["from_provider"] == "rt" and failover["to_provider"] == "rt-backup"
        items = [r["item"] for r in backup.state.requests if r.get("event") == "conversation.item.create"]
        history_items = [i for i in items if i.get("status") != "incomplete"]
        assert len(history_items) == 2  # the conversation so far (then, maybe, the words of the reply heard)
        assert len(items) - len(history_items) == (1 if failover["words_heard"] else 0)
        commit = next(r for r in backup.state.requests if r.get("event") == "input_audio_buffer.commit")
        assert abs(commit["audio_s"] - 1.0) < 0.01  # the user's whole turn, resent
