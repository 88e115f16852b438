"""Offline Moonshine STT (tiny-en, ONNX) with the model the `moonshine-voice` 0.1.0 wheel ships.

Moonshine streams: while the user speaks it gives partial transcripts, at points fixed by the
audio (every `partial_every_ms` of audio sent, and where a pause begins), never by the wall clock,
so a replay sees the same partials however busy the machine is; `flush()` waits for every partial
due so far. A partial transcribes the last `partial_window_s` of the utterance (the end of what was
said is what turn detection reads), which bounds its cost however long the turn. Moonshine ends
every transcription with ". ? !", a cut-off one too ("I would like to check." before "the status"), so a
partial's final terminal mark is dropped: turn detection must not read a finished sentence into
audio that stops mid-sentence (it then goes by the words). The final transcript is Moonshine's
batch transcription of the whole utterance, punctuation kept.

Moonshine's own voice activity detection carries state from one call to the next (the same audio
then gives other words on a used transcriber, e.g. a phantom "You" line). voicerouter has already
cut the utterance with its own VAD, so Moonshine's is switched off (`vad_threshold=0`): the whole
audio is one line, and the same audio gives the same text on any transcriber, whatever it heard
before. Only the batch call is used; transcribers are pooled per process and each call runs in
the engine's thread pool, off the event loop.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voicerouter.errors import ConfigError, TransientProviderError
from voicerouter.providers._common import check_options
from voicerouter.providers.base import PIPELINE_RATE, AudioChunk, BuildContext, Kind, PartialCallback, Transcript
from voicerouter.providers.local import (
    EngineMissingError,
    LoadedModels,
    ModelPool,
    engine_error,
    offline_hub,
    resample_int16,
)

if TYPE_CHECKING:
    from voicerouter.config.schema import ProviderConfig

# A partial's closing ". ? !" (not an ellipsis: that says the speaker trailed off).
_TERMINAL_MARK = re.compile(r"(?<![.?!…])[.?!]$")

TYPE = "moonshine"
FAILED = "moonshine decoding failed"  # how an engine call's unexpected error begins
PACKAGES = "moonshine-voice==0.1.0"  # later 0.1.x wheels ship no weights and download them
MODEL_RATE = 16000
MODEL_FILES = ("encoder_model.ort", "decoder_model_merged.ort", "tokenizer.bin")
# No Moonshine-side VAD: it keeps state between calls (history-dependent output) and re-cuts an
# utterance voicerouter's VAD has already cut.
TRANSCRIBER_OPTIONS = {"vad_threshold": "0"}
POOL_SIZE = 2  # transcribers (one per concurrent call), loaded lazily, ~1 s and ~100 MB each
BLOCK_S = 0.1  # pause detection looks at the audio in blocks of this length
QUIET_DB_BELOW_PEAK = 25.0  # a block this far below the loudest block so far is a pause
QUIET_FLOOR_DBFS = -50.0  # and any block below this level is
# Options a routing table may set under `options:`.
OPTIONS = {
    "model_path": "a Moonshine tiny model directory (default: the bundled tiny-en)",
    "partial_every_ms": "audio between two partial transcripts (default 500)",
    "partial_window_s": "seconds of the utterance's end a partial transcribes (default 3)",
}


def default_model_path() -> Path:
    try:
        import moonshine_voice
    except ImportError as exc:
        raise EngineMissingError("moonshine", PACKAGES, cause=f"cannot import {exc.name}") from None
    return Path(moonshine_voice.__file__).parent / "assets" / "tiny-en"


@dataclass(frozen=True)
class Settings:
    model_path: str
    partial_every_ms: int = 500
    partial_window_s: float = 3.0


class MoonshineEngine(ModelPool[Any]):
    """The process's transcribers for one model: a call borrows one, more are made while all are busy."""

    def __init__(self, model_path: str, max_size: int = POOL_SIZE) -> None:
        directory = Path(model_path)
        missing = [name for name in MODEL_FILES if not (directory / name).is_file()]
        if missing:
            raise ConfigError(
                f"moonshine model {directory} lacks {', '.join(missing)}",
                hint=f"model_path must hold {', '.join(MODEL_FILES)}; the weights ship only in {PACKAGES}",
            )
        super().__init__(max_size)
        self.model_path = str(directory)
        self.executor = ThreadPoolExecutor(max_size, thread_name_prefix="moonshine")

    def _load(self) -> Any:
        try:
            with offline_hub():
                from moonshine_voice import ModelArch, Transcriber
        except ImportError as exc:
            raise EngineMissingError("moonshine", PACKAGES, cause=f"cannot import {exc.name}") from None
        started = time.perf_counter()
        transcriber = Transcriber(self.model_path, ModelArch.TINY, options=TRANSCRIBER_OPTIONS)
        self.load_seconds.append(time.perf_counter() - started)
        return transcriber

    def transcribe(self, pcm16k: bytes) -> str:
        """Blocking: the text of 16 kHz mono PCM16 (the same audio always gives the same text)."""
        import numpy as np

        audio = np.frombuffer(pcm16k[: len(pcm16k) // 2 * 2], "<i2").astype(np.float32) / 32768.0
        if audio.size < MODEL_RATE // 10 or loudest_block_dbfs(audio) < QUIET_FLOOR_DBFS:
            return ""  # without its own VAD, Moonshine hears "You" in silence
        transcriber = self.acquire()
        try:
            result = transcriber.transcribe_without_streaming(audio.tolist(), MODEL_RATE)
        finally:
            self.release(transcriber)
        text = " ".join(line.text.strip() for line in result.lines if line.text.strip())
        return text if any(c.isalnum() for c in text) else ""  # silence can come back as a lone "."


def loudest_block_dbfs(audio: Any) -> float:
    """The level of the loudest 100 ms of float audio, in dBFS."""
    import numpy as np

    size = int(BLOCK_S * MODEL_RATE)
    usable = audio[: audio.size // size * size].reshape(-1, size) if audio.size >= size else audio[None, :]
    loudest = float(np.sqrt(np.mean(usable.astype(np.float64) ** 2, axis=1)).max())
    return 20 * math.log10(loudest) if loudest > 0 else -120.0


_engines: LoadedModels[str, MoonshineEngine] = LoadedModels()


def engine(settings: Settings) -> MoonshineEngine:
    """The process-wide engine for this model (transcribers load on first use)."""
    return _engines.get(settings.model_path, lambda: MoonshineEngine(settings.model_path))


def default_settings() -> Settings:
    return Settings(str(default_model_path()))


def preload(settings: Settings | None = None) -> float:
    return engine(settings or default_settings()).preload()


def transcribe_pcm(pcm: bytes, sample_rate: int, settings: Settings | None = None) -> str:
    """Blocking: the text of one utterance of mono PCM16 (resampled to 16 kHz when needed)."""
    pcm16k = resample_int16(pcm[: len(pcm) // 2 * 2], sample_rate, MODEL_RATE)
    return engine(settings or default_settings()).transcribe(pcm16k)


class MoonshineStream:
    """One streamed utterance: partials at audio-determined points, the whole utterance at the end."""

    def __init__(
        self, provider: str, settings: Settings, sample_rate: int, on_partial: PartialCallback | None
    ) -> None:
        import numpy as np

        self._np = np
        self._provider = provider
        self._settings = settings
        self._engine = engine(settings)
        self._rate = sample_rate
        self._on_partial = on_partial
        self._loop = asyncio.get_running_loop()
        self._resampler: Any = None
        if sample_rate != MODEL_RATE:
            import soxr

            self._resampler = soxr.ResampleStream(sample_rate, MODEL_RATE, 1, dtype="int16")
        self._audio = bytearray()  # the utterance so far at 16 kHz
        self._every = max(1, int(settings.partial_every_ms * MODEL_RATE / 1000)) * 2  # bytes
        self._window = int(settings.partial_window_s * MODEL_RATE) * 2
        self._block = int(BLOCK_S * MODEL_RATE) * 2
        self._scanned = 0  # bytes of audio looked at for pauses
        self._last_point = 0  # end of the audio the last partial covered
        self._peak_db = -math.inf
        self._was_loud = False
        self._loud_since_point = False
        self._due: deque[int] = deque()  # audio ends (bytes) whose partial is still to compute
        self._runner: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self._last_text = ""
        self._closed = False

    async def send(self, pcm: bytes) -> None:
        if self._closed:
            raise TransientProviderError("audio sent after the stream finished", provider=self._provider)
        self._raise_error()
        if not pcm:
            return
        self._audio += self._to_16k(pcm)
        self._find_points()
        if self._due and self._on_partial is not None and (self._runner is None or self._runner.done()):
            self._runner = asyncio.create_task(self._run())

    async def flush(self) -> None:
        """Returns once every partial due for the audio sent so far has been delivered through on_partial."""
        while self._runner is not None and not self._runner.done():
            await asyncio.wait([self._runner])
        self._raise_error()

    async def finish(self) -> Transcript:
        """The whole utterance, transcribed in one batch (pending partials are dropped)."""
        self._closed = True
        self._due.clear()
        if self._resampler is not None:
            self._audio += self._to_16k(b"", last=True)
        if self._runner is not None:
            await asyncio.wait([self._runner])
        try:
            text = await self._loop.run_in_executor(self._engine.executor, self._engine.transcribe, bytes(self._audio))
        except Exception as exc:
            raise engine_error(exc, self._provider, FAILED) from None
        return Transcript(text, is_final=True, provider=self._provider)

    async def aclose(self) -> None:
        """Abandon the utterance: no more partials (a partial being computed finishes unseen)."""
        self._closed = True
        self._due.clear()
        if self._runner is not None and not self._runner.done():
            self._runner.cancel()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _to_16k(self, pcm: bytes, *, last: bool = False) -> bytes:
        if self._resampler is None:
            return pcm
        samples = self._np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2")
        return self._resampler.resample_chunk(samples, last=last).astype("<i2").tobytes()

    def _find_points(self) -> None:
        """Mark partials due: every `partial_every_ms` of audio with speech in it, and where a pause begins."""
        np = self._np
        while self._scanned + self._block <= len(self._audio):
            end = self._scanned + self._block
            block = np.frombuffer(self._audio, "<i2", count=self._block // 2, offset=self._scanned)
            rms = float(np.sqrt(np.mean(block.astype(np.float64) ** 2)))
            level = 20 * math.log10(rms / 32768) if rms > 0 else -120.0
            self._peak_db = max(self._peak_db, level)
            quiet = level < QUIET_FLOOR_DBFS or level < self._peak_db - QUIET_DB_BELOW_PEAK
            if not quiet:
                self._loud_since_point = True
            pause_begins = quiet and self._was_loud
            self._was_loud = not quiet
            self._scanned = end
            if pause_begins or (end - self._last_point >= self._every and self._loud_since_point):
                if self._on_partial is not None:
                    self._due.append(end)
                self._last_point = end
                self._loud_since_point = False

    async def _run(self) -> None:
        while self._due and not self._closed:
            end = self._due.popleft()
            audio = bytes(self._audio[max(0, end - self._window) : end])
            try:
                text = await self._loop.run_in_executor(self._engine.executor, self._engine.transcribe, audio)
            except Exception as exc:
                self._error = engine_error(exc, self._provider, FAILED)
                return
            text = _TERMINAL_MARK.sub("", text)
            if self._closed or not text or text == self._last_text or self._on_partial is None:
                continue
            self._last_text = text
            try:
                self._on_partial(Transcript(text, is_final=False, provider=self._provider))
            except Exception as exc:  # the caller's bug: surface it from flush/finish, not as a loop log line
                self._error = exc
                return


class MoonshineSTT:
    """The STTProvider over the shared engine; holds no model of its own."""

    type = TYPE
    kind: Kind = "stt"
    supports_streaming = True

    def __init__(self, name: str, settings: Settings) -> None:
        self.name = name
        self.settings = settings

    def preload(self) -> float:
        return preload(self.settings)

    async def transcribe(self, audio: AudioChunk) -> Transcript:
        try:
            loaded = await asyncio.to_thread(engine, self.settings)
            pcm16k = resample_int16(audio.pcm[: len(audio.pcm) // 2 * 2], audio.sample_rate, MODEL_RATE)
            text = await asyncio.get_running_loop().run_in_executor(loaded.executor, loaded.transcribe, pcm16k)
        except Exception as exc:
            raise engine_error(exc, self.name, FAILED) from None
        return Transcript(text, is_final=True, provider=self.name)

    async def open_stream(
        self, sample_rate: int = PIPELINE_RATE, on_partial: PartialCallback | None = None
    ) -> MoonshineStream:
        if sample_rate <= 0:
            raise ConfigError(f"provider {self.name}: sample rate must be positive, got {sample_rate}")
        try:
            return MoonshineStream(self.name, self.settings, sample_rate, on_partial)
        except Exception as exc:
            raise engine_error(exc, self.name, FAILED) from None

    async def probe(self) -> None:
        await self.transcribe(AudioChunk(bytes(int(0.3 * MODEL_RATE) * 2), MODEL_RATE))

    async def aclose(self) -> None:
        """Nothing per instance: the transcribers stay loaded for the next session."""



def settings_from(name: str, config: ProviderConfig) -> Settings:
    check_options(name, "moonshine", config, OPTIONS)
    options = config.options
    override = options.get("model_path")
    if override is not None and not isinstance(override, str):
        raise ConfigError(f"provider {name}: moonshine option model_path must be a directory path")
    every = options.get("partial_every_ms", 500)
    if isinstance(every, bool) or not isinstance(every, int) or not 100 <= every <= 10000:
        raise ConfigError(f"provider {name}: moonshine option partial_every_ms must be a whole number from 100 to 10000")
    window = options.get("partial_window_s", 3.0)
    if isinstance(window, bool) or not isinstance(window, (int, float)) or not 0.5 <= window <= 30:
        raise ConfigError(f"provider {name}: moonshine option partial_window_s must be a number from 0.5 to 30")
    path = str(Path(override).expanduser()) if override else str(default_model_path())
    return Settings(path, every, float(window))


def create(name: str, kind: Kind, config: ProviderConfig, ctx: BuildContext) -> MoonshineSTT:
    """Factory named in the provider registry (`moonshine`)."""
    if kind != "stt":
        raise ConfigError(f"provider {name}: moonshine only does stt, not {kind}")
    if config.language not in (None, "en", "en-US", "en-us"):
        raise ConfigError(
            f"provider {name}: moonshine language {config.language!r} is not bundled",
            hint="only the English tiny-en model ships with the package; omit `language` or set it to en",
        )
    return MoonshineSTT(name, settings_from(name, config))
