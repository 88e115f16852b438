"""In-process fake providers for the resilience tests: scripted per call, and they record what they saw.

Audio carries words: each chunk sent to a fake STT is one word's UTF-8 bytes (padded to even
length), and the fake transcribes exactly the words it received, so a test can see lost words.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from voicerouter.config.schema import ProviderConfig
from voicerouter.errors import AuthError, RateLimitedError, TransientProviderError
from voicerouter.providers.base import AudioChunk, Conversation, S2SEvent, Transcript

RATE = 16000


def word_pcm(word: str) -> bytes:
    data = word.encode() + b" "
    return data + b" " * (len(data) % 2)


def words_of(pcm_chunks: list[bytes]) -> str:
    """The words in the audio, however it was cut into chunks (a replay sends it in large pieces)."""
    return " ".join(b"".join(pcm_chunks).decode().split())


def marker(name: str, n: int = 160) -> bytes:
    """A chunk of PCM that says which provider made it."""
    tag = name.encode()[:8].ljust(8, b".")
    return (tag * (2 * n // 8 + 1))[: 2 * n]


def provider_of(chunk: AudioChunk) -> str:
    return chunk.pcm[:8].decode().rstrip(".")


def providers_of(chunk: AudioChunk, n: int = 160) -> list[str]:
    """The maker of each `marker` piece in a chunk (a chain may merge or hold back pieces; empty: [])."""
    return [provider_of(AudioChunk(chunk.pcm[i:i + 2 * n], chunk.sample_rate)) for i in range(0, len(chunk.pcm), 2 * n)]


async def _act(step: str, provider: FakeBase) -> None:
    """Behaviour before the first result, from a script step."""
    kind, _, arg = step.partition(":")
    if kind == "hang":
        await provider.wait_forever()
    elif kind == "slow":
        await asyncio.sleep(float(arg))
    elif kind == "error":
        raise TransientProviderError(f"HTTP {arg or 503}", provider=provider.name, status=int(arg or 503))
    elif kind == "auth":
        raise AuthError("HTTP 401: bad key", provider=provider.name, status=401)
    elif kind == "ratelimit":
        raise RateLimitedError("HTTP 429", provider=provider.name, status=429, retry_after=float(arg))


@dataclass
class FakeBase:
    name: str
    script: list[str] = field(default_factory=list)  # one step per call; "ok" when it runs out
    calls: int = 0
    cancelled: int = 0
    closed: bool = False
    probe_ok: bool = True
    probes: int = 0

    def step(self) -> str:
        self.calls += 1
        return self.script.pop(0) if self.script else "ok"

    async def wait_forever(self) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    async def probe(self) -> None:
        self.probes += 1
        if not self.probe_ok:
            raise TransientProviderError("probe failed", provider=self.name)

    async def aclose(self) -> None:
        self.closed = True


SPEECH_SAMPLES_PER_CHAR = int(0.07 * RATE)  # speech=True: 70 ms of marker audio per letter, silence per space


def speech_pcm(name: str, text: str) -> bytes:
    return b"".join(bytes(2 * SPEECH_SAMPLES_PER_CHAR) if ch == " " else marker(name, SPEECH_SAMPLES_PER_CHAR)
                    for ch in text)


def voiced_chars(pcm: bytes) -> float:
    """How many letters of speech=True audio a stream holds (its non-silent samples, per letter)."""
    import array

    samples = array.array("h", pcm)
    return sum(1 for v in samples if v) / SPEECH_SAMPLES_PER_CHAR


@dataclass
class FakeTTS(FakeBase):
    kind: str = "tts"
    type: str = "fake"
    chunks: int = 3
    texts: list[str] = field(default_factory=list)
    closed_early: int = 0  # streams the caller stopped reading (barge-in)
    speech: bool = False  # audio that follows the text (speech_pcm) in 100 ms chunks, instead of `chunks` markers
    aligned: bool = False  # speech chunks carry vendor word alignment (AudioChunk.words)

    def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        return self._synthesize(text, self.step())

    def _words_ending_in(self, text: str, index: int, size: int) -> tuple[tuple[str, float, float], ...]:
        if not (self.speech and self.aligned):
            return ()
        per_char = SPEECH_SAMPLES_PER_CHAR / RATE
        lo, hi = index * (RATE // 5) / 2 / RATE, (index * (RATE // 5) + size) / 2 / RATE
        words, pos = [], 0
        for word in text.split(" "):
            start, end = pos * per_char, (pos + len(word)) * per_char
            pos += len(word) + 1
            if lo < end <= hi:
                words.append((word, start, end))
        return tuple(words)

    async def _synthesize(self, text: str, step: str) -> AsyncIterator[AudioChunk]:
        self.texts.append(text)
        try:
            await _act(step, self)
            if self.speech:
                pcm = speech_pcm(self.name, text)
                pieces = [pcm[i:i + RATE // 5] for i in range(0, len(pcm), RATE // 5)]
            else:
                pieces = [marker(self.name)] * self.chunks
            for i, piece in enumerate(pieces):
                if step.startswith("drop") and i == int(step.partition(":")[2] or 1):
                    raise TransientProviderError("connection dropped", provider=self.name)
                if step.startswith("stall") and i == 1:
                    await self.wait_forever()
                yield AudioChunk(piece, RATE, words=self._words_ending_in(text, i, len(piece)))
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            self.cancelled += 1 if step != "hang" else 0
            raise
        except GeneratorExit:
            self.closed_early += 1
            raise


class FakeSTTStream:
    def __init__(self, owner: FakeSTT, step: str, on_partial: Any) -> None:
        self.owner = owner
        self.step = step
        self.on_partial = on_partial
        self.received: list[bytes] = []
        self.closed = False

    async def send(self, pcm: bytes) -> None:
        if self.step.startswith("drop") and len(self.received) >= int(self.step.partition(":")[2] or 1):
            raise TransientProviderError("websocket closed (1011)", provider=self.owner.name)
        self.received.append(pcm)
        if self.on_partial is not None:
            self.on_partial(Transcript(words_of(self.received), is_final=False))

    async def finish(self) -> Transcript:
        if self.step == "hang_finish":
            await self.owner.wait_forever()
        if self.step.startswith("slow_finish:"):  # the final transcript takes this many seconds
            await asyncio.sleep(float(self.step.partition(":")[2]))
        self.owner.finals.append(words_of(self.received))
        return Transcript(words_of(self.received))

    async def aclose(self) -> None:
        self.closed = True


@dataclass
class FakeSTT(FakeBase):
    kind: str = "stt"
    type: str = "fake"
    supports_streaming: bool = True
    streams: list[FakeSTTStream] = field(default_factory=list)
    finals: list[str] = field(default_factory=list)
    batches: list[str] = field(default_factory=list)

    async def transcribe(self, audio: AudioChunk) -> Transcript:
        await _act(self.step(), self)
        text = audio.pcm.decode().split()
        self.batches.append(" ".join(text))
        return Transcript(" ".join(text))

    async def open_stream(self, sample_rate: int = RATE, on_partial: Any = None) -> FakeSTTStream:
        step = self.step()
        if step.split(":")[0] in ("error", "auth", "ratelimit"):
            await _act(step, self)
        elif step.startswith("open_"):  # open_hang, open_slow:S: the connect itself misbehaves
            await _act(step.removeprefix("open_"), self)
        stream = FakeSTTStream(self, step, on_partial)
        self.streams.append(stream)
        return stream


class FakeS2SSession:
    def __init__(self, owner: FakeS2S, history: Conversation) -> None:
        self.owner = owner
        self.history = history
        self.audio: list[bytes] = []
        self.closed = False

    async def send_audio(self, pcm: bytes, sample_rate: int = RATE) -> None:
        self.audio.append(pcm)

    def respond(self) -> AsyncIterator[S2SEvent]:
        return self._respond(self.owner.step())

    async def _respond(self, step: str) -> AsyncIterator[S2SEvent]:
        await _act(step, self.owner)
        heard = words_of(self.audio)
        self.audio = []
        self.owner.heard.append((heard, len(self.history.messages)))
        yield S2SEvent("user_transcript", text=heard)
        for i in range(3):
            if step == "drop" and i == 1:
                raise TransientProviderError("websocket closed", provider=self.owner.name)
            yield S2SEvent("audio", audio=AudioChunk(marker(self.owner.name), RATE))
        yield S2SEvent("reply_text", text=f"{self.owner.name} heard {heard}")
        yield S2SEvent("done")

    async def aclose(self) -> None:
        self.closed = True


@dataclass
class FakeS2S(FakeBase):
    kind: str = "s2s"
    type: str = "fake"
    sessions: list[FakeS2SSession] = field(default_factory=list)
    heard: list[tuple[str, int]] = field(default_factory=list)
    connect_script: list[str] = field(default_factory=list)

    async def connect(self, *, instructions: str | None, history: Conversation) -> FakeS2SSession:
        if self.connect_script:
            await _act(self.connect_script.pop(0), self)
        session = FakeS2SSession(self, history)
        self.sessions.append(session)
        return session


class FakePool:
    def __init__(self, *providers: FakeBase, limits: dict[str, int] | None = None) -> None:
        self.providers = {p.name: p for p in providers}
        self.limits = limits or {}

    def get(self, name: str) -> Any:
        return self.providers[name]

    def config(self, name: str) -> ProviderConfig:
        provider = self.providers[name]
        return ProviderConfig(type="fake", kind=provider.kind, model=f"test-{id(self)}",
                              max_concurrent_sessions=self.limits.get(name))


class FakeAgent:
    name = "fake-agent"

    def __init__(self, script: list[str] | None = None) -> None:
        self.script = script or []
        self.calls = 0

    async def reply(self, text: str, conversation: Conversation, session: Any) -> str:
        self.calls += 1
        step = self.script.pop(0) if self.script else "ok"
        await _act(step, FakeBase("fake-agent"))
        return f"you said {text}"

    async def aclose(self) -> None:
        return None
