"""The emulator harness: runs a vendor's wire-compatible emulator on 127.0.0.1 and tells it how to misbehave.

Each vendor module in this package exports `build_app(state) -> aiohttp.web.Application`; the
harness starts it on a free loopback port. `EmulatorState` carries the expected API key, the
queued faults, what to transcribe/synthesize, and a log of received requests for assertions.
"""

from __future__ import annotations

import asyncio
import importlib
import math
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from voicerouter.errors import UsageError

EMULATORS: dict[str, str] = {
    "openai": "voicerouter.testing.openai",
    "openai-compatible": "voicerouter.testing.openai",
    "openai-realtime": "voicerouter.testing.openai_realtime",
    "gemini-live": "voicerouter.testing.gemini_live",
    "deepgram": "voicerouter.testing.deepgram",
    "elevenlabs": "voicerouter.testing.elevenlabs",
    "assemblyai": "voicerouter.testing.assemblyai",
    "cartesia": "voicerouter.testing.cartesia",
    "azure": "voicerouter.testing.azure",
    "openai-chat": "voicerouter.testing.chat",  # the openai-chat agent's /chat/completions
    "webhook": "voicerouter.testing.chat",  # the webhook agent's endpoint
    "twilio": "voicerouter.testing.twilio",  # carrier: REST calls/messages, and the calls' media streams
    "telnyx": "voicerouter.testing.telnyx",
}

FaultKind = Literal["error", "slow", "hang", "stall", "drop", "malformed", "truncate"]


@dataclass
class Fault:
    """One server-side misbehaviour.

    Spec grammar (the one `replay --inject` uses, without the provider name): KIND[:ARG][*TIMES][@PROBABILITY]
    in any order of triggers, e.g. `error:503`, `error:429:2` (Retry-After 2 s),
    `slow:800ms` (delay the first byte), `hang` (accept, never answer), `stall:2s` (stop mid-stream),
    `drop:0.5s` (close the connection/WebSocket after that much streaming), `malformed`, `truncate`.
    `*3` applies to the next three requests only; `@0.3` to each request with that probability.
    """

    kind: FaultKind
    arg: str | None = None
    times: int | None = None
    probability: float | None = None

    @classmethod
    def parse(cls, spec: str) -> Fault:
        """The one fault grammar (`voicerouter.resilience.faults`), read for a server."""
        from voicerouter.resilience.faults import parse_spec

        try:
            parsed = parse_spec(spec)
        except UsageError as exc:
            raise UsageError(exc.message.replace("bad fault spec part", "bad emulator fault"), hint=exc.hint) from None
        if parsed.turn is not None:
            raise UsageError(f"bad emulator fault {spec!r}: an emulator does not know turns (@turnN)",
                             hint="inject per turn in the client: replay --inject NAME=KIND@turnN")
        if parsed.kind == "error":
            arg = parsed.arg  # as written: `error:429:1500ms` becomes OpenAI's retry-after-ms
        elif parsed.kind in ("slow", "stall"):
            arg = f"{parsed.delay_s:g}s" if parsed.delay_s is not None else None
        elif parsed.kind in ("drop", "drop_ws"):
            arg = f"{parsed.at_s:g}s" if parsed.at_s is not None else None
        else:
            arg = None
        kind = "drop" if parsed.kind == "drop_ws" else parsed.kind
        return cls(kind, arg, parsed.times, parsed.probability)  # type: ignore[arg-type]

    @property
    def status(self) -> int:
        return int((self.arg or "500").split(":")[0])

    @property
    def retry_after(self) -> str | None:
        parts = (self.arg or "").split(":")
        return parts[1] if len(parts) > 1 else None

    @property
    def seconds(self) -> float:
        """The fault's duration argument (`800ms`, `1.5s`, `2`); `hang` and bare `stall` mean forever."""
        if not self.arg:
            return math.inf if self.kind in ("hang", "stall") else 0.0
        text = self.arg.strip()
        if text.endswith("ms"):
            return float(text[:-2]) / 1000
        return float(text.rstrip("s"))


@dataclass
class EmulatorState:
    provider_type: str
    api_key: str = "test-key"
    faults: list[Fault] = field(default_factory=list)
    transcript: str | None = None  # fixed STT answer; None = run pocketsphinx on the audio
    tts_engine: Literal["tone", "words", "piper"] = "tone"
    seed: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    callee_wav: str | None = None  # carriers: what the callee says into a call's media stream

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def record(self, **info: Any) -> None:
        self.requests.append(info)

    def take_fault(self) -> Fault | None:
        """The fault that applies to the request now arriving (consumes counted faults)."""
        for fault in list(self.faults):
            if fault.probability is not None and self._rng.random() >= fault.probability:
                continue
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
            return fault
        return None

    async def transcribe(self, pcm: bytes, sample_rate: int) -> str:
        if self.transcript is not None:
            return self.transcript
        from voicerouter.providers.local.pocketsphinx import transcribe_pcm

        return await asyncio.to_thread(transcribe_pcm, pcm, sample_rate)

    async def synthesize(self, text: str, sample_rate: int) -> bytes:
        """PCM16 mono audio for `text`: piper speech, a tone whose length follows the text, or
        `word_tones` (one tone per word, silent gaps: what a test can read back word by word)."""
        if self.tts_engine == "piper":
            from voicerouter.providers.local.piper import synthesize_pcm

            return await asyncio.to_thread(synthesize_pcm, text, sample_rate)
        if self.tts_engine == "words":
            return word_tones(text, sample_rate)
        return tone(duration_s=min(10.0, 0.06 * max(1, len(text))), sample_rate=sample_rate)


def tone(duration_s: float, sample_rate: int, freq: float = 220.0) -> bytes:
    import numpy as np

    t = np.arange(int(duration_s * sample_rate)) / sample_rate
    return (0.3 * 32767 * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


TONE_S_PER_CHAR = 0.06


def word_frequency(word: str) -> float:
    """The pitch `word_tones` gives a word (case and punctuation aside), 300-1495 Hz in 5 Hz steps."""
    import hashlib
    import re

    key = re.sub(r"[^\w']+", "", word.lower())
    return 300.0 + 5 * (int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") % 240)


def word_tones(text: str, sample_rate: int) -> bytes:
    """Speech-like test audio: each word a tone of its own pitch lasting 0.06 s per character, each
    followed by 0.06 s of silence (a space's worth), so what a listener heard can be read back word
    by word (`read_word_tones`), also across replies played back to back."""
    gap = bytes(int(TONE_S_PER_CHAR * sample_rate) * 2)
    parts: list[bytes] = []
    for word in text.split():
        parts += [tone(TONE_S_PER_CHAR * len(word), sample_rate, word_frequency(word)), gap]
    return b"".join(parts) or gap


def read_word_tones(pcm: bytes, sample_rate: int, vocabulary: list[str]) -> list[tuple[str, float]]:
    """What `word_tones` audio says: (word, seconds heard) for each tone, in order. A word whose
    tone is shorter than its full length was cut; a word twice in a row was heard twice."""
    import numpy as np

    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    window = max(1, sample_rate // 200)  # 5 ms
    frames = len(samples) // window
    loud = np.abs(samples[: frames * window]).reshape(frames, window).max(axis=1) > 1000
    by_pitch = {word_frequency(w): w.strip() for w in vocabulary}
    out: list[tuple[str, float]] = []
    index = 0
    while index < frames:
        if not loud[index]:
            index += 1
            continue
        end = index
        while end < frames and loud[end]:
            end += 1
        piece = samples[index * window : end * window]
        spectrum = np.abs(np.fft.rfft(piece * np.hanning(len(piece)), n=max(len(piece), sample_rate)))
        peak = float(np.argmax(spectrum)) * sample_rate / max(len(piece), sample_rate)
        pitch = min(by_pitch, key=lambda f: abs(f - peak))
        out.append((by_pitch[pitch] if abs(pitch - peak) < 2.5 else f"?{peak:.0f}Hz", len(piece) / sample_rate))
        index = end
    return out


@dataclass
class Emulator:
    url: str  # http://127.0.0.1:PORT
    state: EmulatorState
    app: Any = None  # the aiohttp application (vendor-specific state, e.g. a carrier's calls)

    @property
    def ws_url(self) -> str:
        return "ws://" + self.url.removeprefix("http://")


def parse_faults(faults: str | list[str] | list[Fault] | None) -> list[Fault]:
    if not faults:
        return []
    if isinstance(faults, str):
        faults = [f for f in faults.split(",") if f.strip()]
    return [f if isinstance(f, Fault) else Fault.parse(f) for f in faults]


@asynccontextmanager
async def emulate(
    provider_type: str,
    *,
    faults: str | list[str] | list[Fault] | None = None,
    api_key: str = "test-key",
    transcript: str | None = "hello from the emulator",
    tts_engine: Literal["tone", "words", "piper"] = "tone",
    host: str = "127.0.0.1",
    port: int = 0,
    seed: int = 0,
    callee_wav: str | None = None,
) -> AsyncIterator[Emulator]:
    """Run one emulator for the duration of the block: `async with emulate("deepgram") as emu: emu.url`."""
    from voicerouter.httpserver import start_server

    module_name = EMULATORS.get(provider_type)
    if module_name is None:
        raise UsageError(f"no emulator for provider type {provider_type!r}", hint=f"known: {', '.join(EMULATORS)}")
    state = EmulatorState(
        provider_type, api_key=api_key, faults=parse_faults(faults), transcript=transcript,
        tts_engine=tts_engine, seed=seed, callee_wav=callee_wav,
    )
    app = importlib.import_module(module_name).build_app(state)
    server = await start_server(app, host, port)
    try:
        yield Emulator(server.url, state, app)
    finally:
        await server.aclose()


# --- Helpers the vendor emulators share (added with the deepgram/elevenlabs/cartesia/azure emulators) ---

EMULATOR_CHUNK_MS = 20  # vendors stream audio in small pieces; so do the emulators
EMULATOR_PACE_S = 0.002  # a short pause between chunks so they reach the client as separate reads


async def hold_forever() -> None:
    """The `hang` fault: the connection is accepted and then nothing ever comes back."""
    await asyncio.Event().wait()


async def delay_first_byte(fault: Fault | None) -> None:
    """Apply the faults that act before the first byte: `slow` waits, `hang` never answers."""
    if fault is None:
        return
    if fault.kind == "slow":
        await asyncio.sleep(fault.seconds)
    elif fault.kind == "hang":
        await hold_forever()


def admit(
    state: EmulatorState, denied: Any | None, refuse: Callable[[Fault], Any | None]
) -> tuple[Fault | None, Any | None]:
    """Auth first (a refused request consumes no fault), then the request's fault.

    `denied` is the vendor's auth answer (None when the key is right); `refuse(fault)` is the vendor's
    answer to an `error` fault, or None. Returns (fault, answer to send now or None).
    """
    if denied is not None:
        return None, denied
    fault = state.take_fault()
    return fault, (refuse(fault) if fault is not None else None)


def drop_connection(request: Any) -> None:
    """Close the TCP connection under a request without an HTTP answer (the `drop` fault)."""
    transport = request.transport
    if transport is not None:
        transport.abort()


def read_wav(body: bytes) -> tuple[bytes, int, int, int]:
    """(pcm, sample_rate, channels, sample_width) of a WAV body; ValueError when it is not one."""
    import io
    import wave

    try:
        with wave.open(io.BytesIO(body), "rb") as wav:
            return wav.readframes(wav.getnframes()), wav.getframerate(), wav.getnchannels(), wav.getsampwidth()
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"not a WAV file: {exc}") from None


async def send_body(request: Any, body: bytes, content_type: str, fault: Fault | None, status: int = 200) -> Any:
    """A whole (JSON) answer, damaged the way `fault` says: stall, drop, malformed, truncate."""
    from aiohttp import web

    await delay_first_byte(fault)
    kind = fault.kind if fault else None
    if kind == "stall":
        await asyncio.sleep(fault.seconds)  # type: ignore[union-attr]
    if kind == "drop":
        drop_connection(request)
        await hold_forever()
    if kind == "malformed":
        body = b"<html><body>502 upstream glitch</body></html>"
    if kind == "truncate":
        body = body[: max(1, len(body) // 2)]
    return web.Response(body=body, status=status, content_type=content_type.split(";")[0].strip())


async def stream_pcm(
    request: Any,
    pcm: bytes,
    sample_rate: int,
    fault: Fault | None,
    *,
    content_type: str = "application/octet-stream",
    headers: dict[str, str] | None = None,
) -> Any:
    """Stream PCM16 audio in ~20 ms chunks, applying slow/hang/stall/drop/malformed/truncate."""
    from aiohttp import web

    await delay_first_byte(fault)
    kind = fault.kind if fault else None
    if kind == "malformed":  # a proxy's error page with a 200, not audio
        return web.Response(body=b'{"unexpected": tru', status=200, content_type="application/json")
    response = web.StreamResponse(status=200, headers={"Content-Type": content_type, **(headers or {})})
    if kind == "truncate":
        response.content_length = len(pcm)  # promise everything, send half
    await response.prepare(request)
    step = max(2, sample_rate * EMULATOR_CHUNK_MS // 1000 * 2)
    chunks = [pcm[i : i + step] for i in range(0, len(pcm), step)]
    cut = len(chunks) // 2
    if kind == "drop" and fault is not None and fault.seconds > 0:
        cut = min(len(chunks) - 1, int(fault.seconds * 1000 / EMULATOR_CHUNK_MS))
    try:
        for index, chunk in enumerate(chunks):
            if index == cut and kind in ("drop", "truncate"):
                drop_connection(request)
                return response
            if index == cut and kind == "stall":
                await asyncio.sleep(fault.seconds)  # type: ignore[union-attr]
            await response.write(chunk)
            await asyncio.sleep(EMULATOR_PACE_S)
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client gave up mid-stream (deadline, failover): normal here, not a server error
    return response


async def stream_ws_audio(
    pcm: bytes, sample_rate: int, send: Callable[[bytes], Any], fault: Fault | None, abort: Callable[[], None]
) -> bool:
    """One generation's audio over a WebSocket in ~20 ms pieces (`send` frames each one), damaged as
    `fault` says: `drop` aborts the connection halfway (False is returned), `stall` pauses there,
    `hang` never sends any. True when all of it went out."""
    kind = fault.kind if fault else None
    if kind == "hang":
        await hold_forever()
    step = max(2, sample_rate * EMULATOR_CHUNK_MS // 1000 * 2)
    chunks = [pcm[i : i + step] for i in range(0, len(pcm), step)]
    cut = len(chunks) // 2
    if kind == "drop" and fault is not None and fault.seconds > 0:
        cut = min(len(chunks) - 1, int(fault.seconds * 1000 / EMULATOR_CHUNK_MS))
    for index, chunk in enumerate(chunks):
        if index == cut and kind == "drop":
            abort()
            return False
        if index == cut and kind == "stall":
            await asyncio.sleep(fault.seconds)  # type: ignore[union-attr]
        await send(chunk)
        await asyncio.sleep(EMULATOR_PACE_S)
    return True


def abort_transport(request: Any) -> Callable[[], None]:
    """A callable that cuts the TCP connection under a WebSocket (what a crashed server looks like)."""
    def abort() -> None:
        transport = request.transport
        if transport is not None:
            transport.abort()
    return abort
