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
import re
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Literal

from voicerouter.errors import UsageError

EMULATORS: dict[str, str] = {
    "openai": "voicerouter.testing.openai",
    "openai-compatible": "voicerouter.testing.openai",
    "openai-realtime": "voicerouter.testing.openai_realtime",
    "deepgram": "voicerouter.testing.deepgram",
    "elevenlabs": "voicerouter.testing.elevenlabs",
    "cartesia": "voicerouter.testing.cartesia",
    "azure": "voicerouter.testing.azure",
}

FaultKind = Literal["error", "slow", "hang", "stall", "drop", "malformed", "truncate"]
_FAULT = re.compile(
    r"^(?P<kind>error|slow|hang|stall|drop|malformed|truncate)"
    r"(?::(?P<arg>[^@*]+))?"
    r"(?:\*(?P<times>\d+))?"
    r"(?:@(?P<prob>[0-9.]+))?$"
)


@dataclass
class Fault:
    """One server-side misbehaviour.

    Spec grammar: KIND[:ARG][*TIMES][@PROBABILITY], e.g. `error:503`, `error:429:2` (Retry-After 2 s),
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
        match = _FAULT.match(spec.strip())
        if not match:
            raise UsageError(
                f"bad emulator fault {spec!r}",
                hint="use KIND[:ARG][*TIMES][@PROB]; kinds: error, slow, hang, stall, drop, malformed, truncate",
            )
        prob = match["prob"]
        return cls(
            match["kind"],  # type: ignore[arg-type]
            match["arg"],
            int(match["times"]) if match["times"] else None,
            float(prob) if prob else None,
        )

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
    tts_engine: Literal["tone", "piper"] = "tone"
    seed: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)

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
        """PCM16 mono audio for `text`: piper speech, or a tone whose length follows the text."""
        if self.tts_engine == "piper":
            from voicerouter.providers.local.piper import synthesize_pcm

            return await asyncio.to_thread(synthesize_pcm, text, sample_rate)
        return tone(duration_s=min(10.0, 0.06 * max(1, len(text))), sample_rate=sample_rate)


def tone(duration_s: float, sample_rate: int, freq: float = 220.0) -> bytes:
    import numpy as np

    t = np.arange(int(duration_s * sample_rate)) / sample_rate
    return (0.3 * 32767 * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


@dataclass
class Emulator:
    url: str  # http://127.0.0.1:PORT
    state: EmulatorState

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
    tts_engine: Literal["tone", "piper"] = "tone",
    host: str = "127.0.0.1",
    port: int = 0,
    seed: int = 0,
) -> AsyncIterator[Emulator]:
    """Run one emulator for the duration of the block: `async with emulate("deepgram") as emu: emu.url`."""
    from aiohttp import web

    module_name = EMULATORS.get(provider_type)
    if module_name is None:
        raise UsageError(f"no emulator for provider type {provider_type!r}", hint=f"known: {', '.join(EMULATORS)}")
    state = EmulatorState(
        provider_type, api_key=api_key, faults=parse_faults(faults), transcript=transcript,
        tts_engine=tts_engine, seed=seed,
    )
    app = importlib.import_module(module_name).build_app(state)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield Emulator(f"http://{host}:{bound}", state)
    finally:
        await runner.cleanup()
