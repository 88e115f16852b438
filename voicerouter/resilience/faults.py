"""Seeded, reproducible fault injection: wrap named provider instances so they misbehave in-process.

Spec: comma-separated `NAME=KIND[:ARG][TRIGGER...]`, e.g.
`dg=error:503@0.3,eleven=hang@turn2,oai-rt=drop_ws@1.5s,local-tts=slow:300ms`.
Kinds: `error:STATUS[:RETRY_AFTER_S]` (the typed error that status maps to; a carrier error code such
as `error:21610` for `call`/`sms` providers), `hang` (accept, never
answer), `stall` (stop mid-stream), `drop`/`drop_ws` (fail mid-stream), `slow:DURATION` (delay the
first result). Triggers: `@P` probability per call (0..1), `@turnN` only on turn N, `@Ns`/`@Nms`
once N seconds of audio have streamed, `*N` only the first N calls. Draws come from one RNG seeded
by the table's `seed` (or `--seed`), so a run with the same seed injects the same faults.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from voicerouter.errors import TransientProviderError, UsageError
from voicerouter.providers.base import PIPELINE_RATE, AudioChunk, Transcript, respond_resuming, truncate_heard
from voicerouter.providers.http import error_for_status

KINDS = ("error", "hang", "stall", "drop", "drop_ws", "slow")
# Only a server can send a broken body: the emulators take these (`emulate --fault`), the in-process
# injection does not. The grammar is the same for both.
SERVER_KINDS = ("malformed", "truncate")
_ENTRY = re.compile(r"^(?P<name>[A-Za-z0-9][\w.\-]*)=(?P<kind>[a-z_]+)(?::(?P<arg>[^@*]+))?(?P<triggers>(?:[@*][^@*]+)*)$")
_TRIGGER = re.compile(r"([@*])([^@*]+)")
_DURATION = re.compile(r"^(?P<value>\d+(?:\.\d+)?)(?P<unit>ms|s)$")
HINT = (
    "use NAME=KIND[:ARG][@P|@turnN|@Ns|*N], comma-separated; kinds: error:STATUS[:RETRY_AFTER], hang, "
    "stall[:DURATION], drop[:AFTER], drop_ws, slow:DURATION, and for emulators malformed, truncate "
    "(e.g. dg=error:503@0.3,eleven=hang@turn2,local-tts=slow:300ms)"
)


def _duration(text: str, where: str) -> float:
    match = _DURATION.match(text.strip())
    if not match:
        raise UsageError(f"bad fault spec part {where!r}: {text!r} is not a duration like 300ms or 1.5s", hint=HINT)
    value = float(match["value"])
    return value / 1000 if match["unit"] == "ms" else value


@dataclass
class Fault:
    provider: str
    kind: str
    spec: str  # as written, for messages
    status: int | None = None
    retry_after_s: float | None = None
    delay_s: float | None = None  # slow:DURATION, or how long a stall lasts (None = forever)
    at_s: float | None = None  # audio position that triggers it
    probability: float | None = None
    turn: int | None = None
    times: int | None = None
    used: int = 0
    arg: str | None = None  # ARG as written (an emulator keeps `error:429:1500ms` as it is)

    @property
    def mid_stream(self) -> bool:
        return self.kind in ("stall", "drop", "drop_ws") or self.at_s is not None

    def error(self) -> Exception:
        if self.kind == "error":
            headers = {"retry-after": str(self.retry_after_s)} if self.retry_after_s is not None else {}
            return error_for_status(self.status or 500, f"injected fault {self.spec}", provider=self.provider,
                                    headers=headers)
        return TransientProviderError(f"connection dropped (injected fault {self.spec})", provider=self.provider)


def parse_spec(spec: str) -> Fault:
    """One fault without a provider name (`KIND[:ARG][TRIGGER...]`), server-side kinds allowed:
    the emulators' `--fault` and `faults=` read this, so both sides speak one grammar."""
    try:
        return parse_entry(f"{_ANY}={spec.strip()}", server=True)
    except UsageError as exc:
        raise UsageError(exc.message.replace(f"{_ANY}=", ""), hint=exc.hint) from None


_ANY = "any-provider"  # the name parse_spec gives a fault that names none


def parse_entry(entry: str, *, server: bool = False) -> Fault:
    text = entry.strip()
    match = _ENTRY.match(text)
    if not match:
        raise UsageError(f"bad fault spec part {text!r}", hint=HINT)
    kind, arg, name = match["kind"], match["arg"], match["name"]
    if kind in SERVER_KINDS and not server:
        raise UsageError(f"bad fault spec part {text!r}: {kind} is a broken response body, which only a server "
                         "sends", hint="use it on an emulator: voicerouter emulate --fault, or emulate(..., faults=)")
    if kind not in KINDS + SERVER_KINDS:
        raise UsageError(f"bad fault spec part {text!r}: unknown kind {kind!r}", hint=HINT)
    fault = Fault(name, kind, text, arg=arg)
    if kind == "error":
        parts = (arg or "").split(":")
        code = int(parts[0]) if parts[0].isdigit() else 0
        # An emulator can also close a WebSocket with a close code (error:1011).
        if not (100 <= code <= 599 or 10000 <= code <= 99999 or (server and 1000 <= code <= 4999)):
            raise UsageError(f"bad fault spec part {text!r}: error needs an HTTP status, e.g. error:503, "
                             "or a carrier error code, e.g. error:21610", hint=HINT)
        fault.status = int(parts[0])
        if len(parts) > 2:
            raise UsageError(f"bad fault spec part {text!r}: use error:STATUS[:RETRY_AFTER_S]", hint=HINT)
        if len(parts) == 2:
            try:
                after = parts[1].strip()
                fault.retry_after_s = float(after[:-2]) / 1000 if after.endswith("ms") else float(after.rstrip("s"))
            except ValueError:
                raise UsageError(f"bad fault spec part {text!r}: retry-after {parts[1]!r} is not seconds",
                                 hint=HINT) from None
    elif kind == "slow":
        if not arg:
            raise UsageError(f"bad fault spec part {text!r}: slow needs a delay, e.g. slow:300ms", hint=HINT)
        fault.delay_s = _duration(arg, text)
    elif kind == "stall" and arg:
        fault.delay_s = _duration(arg, text)
    elif kind in ("drop", "drop_ws") and arg:
        fault.at_s = _duration(arg, text)  # drop:0.5s is drop@0.5s: after that much streamed audio
    elif arg:
        raise UsageError(f"bad fault spec part {text!r}: {kind} takes no argument", hint=HINT)
    for sign, value in _TRIGGER.findall(match["triggers"] or ""):
        if sign == "*":
            if not value.isdigit() or int(value) < 1:
                raise UsageError(f"bad fault spec part {text!r}: *{value} must be a count >= 1", hint=HINT)
            fault.times = int(value)
        elif value.startswith("turn"):
            if not value[4:].isdigit():
                raise UsageError(f"bad fault spec part {text!r}: @{value} must be @turnN", hint=HINT)
            fault.turn = int(value[4:])
        elif value.endswith("s"):
            fault.at_s = _duration(value, text)
        else:
            try:
                probability = float(value)
            except ValueError:
                raise UsageError(f"bad fault spec part {text!r}: @{value} is not a probability, turn or time",
                                 hint=HINT) from None
            if not 0 <= probability <= 1:
                raise UsageError(f"bad fault spec part {text!r}: probability {value} is outside 0..1", hint=HINT)
            fault.probability = probability
    return fault


@dataclass
class FaultPlan:
    faults: list[Fault] = field(default_factory=list)
    seed: int | None = None

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.injected: list[tuple[str, str, int | None]] = []  # (provider, spec, turn) of every fault applied

    def __bool__(self) -> bool:
        return bool(self.faults)

    def providers(self) -> set[str]:
        return {f.provider for f in self.faults}

    def check(self, known: Iterable[str]) -> None:
        """UsageError when a fault names a provider instance the table does not define."""
        known = set(known)
        for fault in self.faults:
            if fault.provider not in known:
                raise UsageError(
                    f"fault {fault.spec!r} names unknown provider {fault.provider!r}",
                    hint=f"providers in the table: {', '.join(sorted(known)) or 'none'}",
                )

    def pick(self, provider: str, turn: int | None) -> Fault | None:
        """The fault that applies to this call of `provider`, if any (consumes counted faults)."""
        for fault in self.faults:
            if fault.provider != provider:
                continue
            if fault.turn is not None and fault.turn != turn:
                continue
            if fault.times is not None and fault.used >= fault.times:
                continue
            if fault.probability is not None and self.rng.random() >= fault.probability:
                continue
            fault.used += 1
            self.injected.append((provider, fault.spec, turn))
            return fault
        return None

    def wrap(self, name: str, provider: Any, turn: Callable[[], int | None] | None = None,
             on_inject: Callable[[Fault, int | None], None] | None = None, *, kind: str | None = None) -> Any:
        """`provider` itself if no fault names it, else an in-process wrapper of the same kind."""
        if name not in self.providers():
            return provider
        kind = kind or getattr(provider, "kind", None)
        wrapper = {"stt": FaultySTT, "tts": FaultyTTS, "s2s": FaultyS2S, "call": FaultyCarrier,
                   "sms": FaultyCarrier, "agent": FaultyAgent}.get(kind or "")
        if wrapper is None:
            return provider
        faulty = wrapper(name, provider, self, turn or (lambda: None))
        faulty.on_inject = on_inject  # tells the session (an event) so a fault is never taken for a real one
        return faulty


def parse_faults(spec: str | list[Any] | None, seed: int | None = None) -> FaultPlan:
    """Parse `--inject` text or the table's `faults:` list (FaultConfig or "name=fault" strings)."""
    faults: list[Fault] = []
    if isinstance(spec, str):
        faults = [parse_entry(part) for part in spec.split(",") if part.strip()]
    elif spec:
        for item in spec:
            if isinstance(item, str):
                faults.append(parse_entry(item))
            else:
                faults.append(parse_entry(f"{item.provider}={item.fault}"))
    return FaultPlan(faults, seed)


async def _forever() -> None:
    await asyncio.Event().wait()


class _Faulty:
    def __init__(self, name: str, inner: Any, plan: FaultPlan, turn: Callable[[], int | None]) -> None:
        self.name = name
        self.inner = inner
        self.plan = plan
        self.turn = turn
        self.type = getattr(inner, "type", "?")
        self.kind = getattr(inner, "kind", None)

    def __getattr__(self, item: str) -> Any:  # sample_rate, model, ... of the wrapped provider
        return getattr(self.inner, item)

    on_inject: Callable[[Fault, int | None], None] | None = None

    def _pick(self) -> Fault | None:
        turn = self.turn()
        fault = self.plan.pick(self.name, turn)
        if fault is not None and self.on_inject is not None:
            self.on_inject(fault, turn)
        return fault

    async def before_first(self, fault: Fault | None) -> None:
        """Apply the part of a fault that happens before any result."""
        if fault is None or fault.mid_stream:
            return
        if fault.kind == "error":
            raise fault.error()
        if fault.kind == "hang":
            await _forever()
        if fault.kind == "slow":
            await asyncio.sleep(fault.delay_s or 0)

    async def probe(self) -> None:
        await self.inner.probe()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def _mid_stream(fault: Fault) -> None:
    """A mid-stream fault has triggered: stall (maybe for a while) or fail."""
    if fault.kind == "stall":
        if fault.delay_s is None:
            await _forever()
        await asyncio.sleep(fault.delay_s)
        return
    raise fault.error()


def _reached(fault: Fault, position_s: float, chunks: int) -> bool:
    """Has the stream got far enough for a mid-stream fault? Without @Ns: after the first chunk."""
    return position_s >= fault.at_s if fault.at_s is not None else chunks >= 1


class FaultyTTS(_Faulty):
    def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        return self._synthesize(text)

    async def _synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        fault = self._pick()
        await self.before_first(fault)
        position, chunks, fired = 0.0, 0, False
        async with _aclosing(self.inner.synthesize(text)) as audio:
            async for chunk in audio:
                if fault is not None and fault.mid_stream and not fired and _reached(fault, position, chunks):
                    fired = True
                    await _mid_stream(fault)
                yield chunk
                position += chunk.duration_s
                chunks += 1


class FaultyAgent(_Faulty):
    """error/hang/slow before the reply; stall/drop after its first piece (a streamed reply) or, for an
    agent that only answers whole, instead of the answer."""

    def __init__(self, name: str, inner: Any, plan: FaultPlan, turn: Callable[[], int | None]) -> None:
        super().__init__(name, inner, plan, turn)
        self.kind = "agent"
        if callable(getattr(inner, "stream_reply", None)):
            self.stream_reply = self._stream_reply

    async def reply(self, text: str, conversation: Any, session: Any, **kwargs: Any) -> str:
        fault = self._pick()
        await self.before_first(fault)
        if fault is not None and fault.mid_stream:
            await _mid_stream(fault)
        return await self.inner.reply(text, conversation, session, **kwargs)  # e.g. said= (a continuation)

    async def _stream_reply(self, text: str, conversation: Any, session: Any, **kwargs: Any) -> AsyncIterator[str]:
        fault = self._pick()
        await self.before_first(fault)
        pieces = 0
        async with _aclosing(self.inner.stream_reply(text, conversation, session, **kwargs)) as parts:
            async for part in parts:
                if fault is not None and fault.mid_stream and pieces == 1:
                    await _mid_stream(fault)
                yield part
                pieces += 1


class FaultySTT(_Faulty):
    @property
    def supports_streaming(self) -> bool:
        return getattr(self.inner, "supports_streaming", False)

    async def transcribe(self, audio: AudioChunk) -> Transcript:
        fault = self._pick()
        await self.before_first(fault)
        if fault is not None and fault.mid_stream:
            if fault.at_s is None or audio.duration_s >= fault.at_s:
                await _mid_stream(fault)
        return await self.inner.transcribe(audio)

    async def open_stream(self, sample_rate: int = PIPELINE_RATE, on_partial: Any = None) -> FaultyStream:
        fault = self._pick()
        if fault is not None and fault.kind == "error" and not fault.mid_stream:
            raise fault.error()
        inner = await self.inner.open_stream(sample_rate, on_partial=on_partial)
        return FaultyStream(inner, fault, sample_rate, self)


class FaultyStream:
    """hang/slow act at finish() (the connection was accepted); stall/drop once enough audio was sent."""

    def __init__(self, inner: Any, fault: Fault | None, sample_rate: int, owner: _Faulty) -> None:
        self.inner = inner
        self.fault = fault
        self.sample_rate = sample_rate
        self.owner = owner
        self.position = 0.0
        self.chunks = 0
        self.fired = False

    async def send(self, pcm: bytes) -> None:
        fault = self.fault
        if fault is not None and fault.mid_stream and (self.fired or _reached(fault, self.position, self.chunks)):
            self.fired = True
            if fault.kind == "stall":
                return  # the provider silently stops listening; finish() will hang
            raise fault.error()
        await self.inner.send(pcm)
        self.position += len(pcm) / 2 / self.sample_rate
        self.chunks += 1

    async def finish(self) -> Transcript:
        fault = self.fault
        if fault is not None:
            if self.fired and fault.kind == "stall":
                await _mid_stream(fault)
            elif self.fired:
                raise fault.error()
            else:
                await self.owner.before_first(fault)
        return await self.inner.finish()

    @property
    def flush(self) -> Callable[[], Any] | None:
        """The wrapped stream's `flush` (None when it has none): faults act on sent audio only."""
        return getattr(self.inner, "flush", None)

    async def aclose(self) -> None:
        await self.inner.aclose()


class FaultyS2S(_Faulty):
    async def connect(self, *, instructions: str | None, history: Any) -> FaultyS2SSession:
        inner = await self.inner.connect(instructions=instructions, history=history)
        return FaultyS2SSession(inner, self)


class FaultyS2SSession:
    """Faults are drawn per response (one per user turn); positions count reply audio."""

    def __init__(self, inner: Any, owner: _Faulty) -> None:
        self.inner = inner
        self.owner = owner

    async def send_audio(self, pcm: bytes, sample_rate: int = PIPELINE_RATE) -> None:
        await self.inner.send_audio(pcm, sample_rate)

    def respond(self, *, resume_after: str = "") -> AsyncIterator[Any]:
        return self._respond(resume_after)

    async def truncate(self, heard_s: float) -> None:
        await truncate_heard(self.inner, heard_s)

    async def _respond(self, resume_after: str) -> AsyncIterator[Any]:
        fault = self.owner._pick()
        await self.owner.before_first(fault)
        position, chunks, fired = 0.0, 0, False
        async with _aclosing(respond_resuming(self.inner, resume_after)) as events:
            async for event in events:
                if fault is not None and fault.mid_stream and not fired and _reached(fault, position, chunks):
                    fired = True
                    await _mid_stream(fault)
                yield event
                if event.audio is not None:
                    position += event.audio.duration_s
                    chunks += 1

    async def aclose(self) -> None:
        await self.inner.aclose()


class FaultyCarrier(_Faulty):
    """Faults act before the request reaches the carrier; `error:CODE` with a carrier error code
    (e.g. error:21610) raises what that carrier's client raises for the code."""

    async def _before(self) -> None:
        fault = self._pick()
        if fault is not None and fault.kind == "error" and (fault.status or 0) >= 10000:
            raise self.inner.error_for_code(fault.status, f"injected fault {fault.spec}")
        if fault is not None and fault.mid_stream:
            raise fault.error()  # nothing streams: drop/stall fail the request
        await self.before_first(fault)

    async def place_call(self, request: Any) -> Any:
        await self._before()
        return await self.inner.place_call(request)

    async def send_sms(self, request: Any) -> Any:
        await self._before()
        return await self.inner.send_sms(request)


class _aclosing:
    """contextlib.aclosing that tolerates iterators without aclose()."""

    def __init__(self, iterator: Any) -> None:
        self.iterator = iterator

    async def __aenter__(self) -> Any:
        return self.iterator

    async def __aexit__(self, *exc: object) -> None:
        close = getattr(self.iterator, "aclose", None)
        if close is not None:
            await close()
