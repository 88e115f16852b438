"""Offline CMU PocketSphinx STT with the en-US model the package ships; nothing is downloaded.

A decoder holds the whole model (~90 MB, ~0.6 s to load) and is not thread-safe, so the process
keeps one shared pool of decoders, created lazily up to a small limit (default: one per core, at
most 2). A batch transcription borrows a decoder for the decode; a stream holds one for its utterance.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from typing import TYPE_CHECKING, Any

from voicerouter.errors import ConfigError, TransientProviderError
from voicerouter.providers.base import PIPELINE_RATE, AudioChunk, BuildContext, Kind, PartialCallback, Transcript
from voicerouter.providers.local import EngineMissingError, ModelPool, count_from_env, engine_error, resample_int16

if TYPE_CHECKING:
    from voicerouter.config.schema import ProviderConfig

TYPE = "pocketsphinx"
FAILED = "pocketsphinx decoding failed"  # how an engine call's unexpected error begins
PACKAGES = "pocketsphinx"
DECODER_RATE = 16000  # the bundled acoustic model is 16 kHz
POOL_ENV = "VOICEROUTER_POCKETSPHINX_DECODERS"
# A stream decodes its audio in pieces of this much input audio, and looks at the hypothesis after
# each piece: partials come at fixed points of the audio (every 100 ms), whatever the timing.
PARTIAL_EVERY_S = 0.1
EDGE_SILENCE = bytes(int(0.2 * DECODER_RATE) * 2)
# Options a routing table may set under `options:`.
OPTIONS = {
    "final_pass": "re-decode a streamed utterance as a whole for its final transcript (default true: "
    "far more accurate on the first words and on narrowband audio; false saves ~0.2-0.5 s per turn)",
}


class DecoderPool(ModelPool[Any]):
    """The process's PocketSphinx decoders: the first is made on first use, more only when all are busy."""

    def __init__(self, max_size: int) -> None:
        super().__init__(max_size)
        self._cmn0: str | None = None

    @property
    def initial_cmn(self) -> str | None:
        return self._cmn0

    def _load(self) -> Any:
        try:
            from pocketsphinx import Decoder
        except ImportError as exc:
            raise EngineMissingError("pocketsphinx", PACKAGES, cause=f"cannot import {exc.name}") from None
        started = time.perf_counter()
        # cmn="batch": a whole utterance (full_utt) is normalised by its own cepstral mean, which keeps
        # batch results independent of what the decoder heard before; streams still adapt live.
        # No built-in dither: it draws from a process-wide random state, so the same audio would
        # decode differently from call to call. `_Dither` adds the same noise deterministically.
        decoder = Decoder(samprate=DECODER_RATE, loglevel="FATAL", cmn="batch", dither=False)
        if self._cmn0 is None:
            self._cmn0 = decoder.get_cmn()  # the model's initial cepstral mean
        self.load_seconds.append(time.perf_counter() - started)
        return decoder

    def release(self, decoder: Any) -> None:
        # Feature extraction adapts to what a decoder hears (noise estimate, live cepstral mean);
        # reset it so a transcript never depends on which decoder (and which earlier audio) it got.
        decoder.reinit_feat()
        if self._cmn0 is not None:
            decoder.set_cmn(self._cmn0)
        super().release(decoder)


_pool: DecoderPool | None = None
_pool_lock = threading.Lock()


def pool() -> DecoderPool:
    """The process-wide decoder pool (created on first use, shared by every provider instance)."""
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = DecoderPool(count_from_env(POOL_ENV, "decoders"))
    return _pool


def preload() -> float:
    """Load the model now (the live `run` command does this before opening the microphone)."""
    return pool().preload()


class _Dither:
    """±1 LSB of seeded noise on exact-zero samples: digital silence otherwise decodes to a word ("dog").

    Real audio passes untouched, and the noise is seeded per utterance, so the same audio always
    gives the same transcript.
    """

    def __init__(self, seed: int = 0) -> None:
        import numpy as np

        self._np = np
        self._rng = np.random.default_rng(seed)

    def __call__(self, pcm: bytes) -> bytes:
        np = self._np
        samples = np.frombuffer(pcm, "<i2").copy()
        zeros = samples == 0
        noise = self._rng.choice(np.array([-1, 1], dtype=np.int16), size=samples.size)
        samples[zeros] = noise[zeros]
        return samples.tobytes()


def _decode(decoder: Any, pcm16k: bytes) -> str:
    # Feature extraction carries state over from earlier audio (noise estimate, cepstral mean):
    # reset it so the same utterance always gives the same transcript.
    decoder.reinit_feat()
    initial = pool().initial_cmn
    if initial is not None:
        decoder.set_cmn(initial)
    decoder.start_utt()
    # Speech that starts or stops at the very first/last sample (a bare TTS clip, a tight cut) loses
    # its edge words: the model wants silence around an utterance, so give it some.
    decoder.process_raw(_Dither()(EDGE_SILENCE + pcm16k + EDGE_SILENCE), full_utt=True)
    decoder.end_utt()
    hyp = decoder.hyp()
    return hyp.hypstr.strip() if hyp is not None else ""


def transcribe_pcm(pcm: bytes, sample_rate: int) -> str:
    """Blocking: the text of one utterance of mono PCM16 (resampled to 16 kHz when needed)."""
    pcm16k = resample_int16(pcm[: len(pcm) // 2 * 2], sample_rate, DECODER_RATE)
    engine = pool()
    decoder = engine.acquire()
    try:
        return _decode(decoder, pcm16k)
    finally:
        engine.release(decoder)


_DONE = object()


class PocketSphinxStream:
    """One streamed utterance: a worker thread feeds a pooled decoder and reports partials as they change.

    The decoder gets the audio in fixed pieces of `PARTIAL_EVERY_S` of input and reports the
    hypothesis after each piece (when it changed), so partials depend on the audio only; `flush()`
    waits until the worker has decoded every whole piece sent so far and its partials have been
    delivered (the `STTStream.flush` contract). It returns at once when no piece is due.
    """

    def __init__(
        self, provider: str, sample_rate: int, on_partial: PartialCallback | None, *, final_pass: bool = False
    ) -> None:
        self._provider = provider
        self._final_pass = final_pass
        self._rate = sample_rate
        self._on_partial = on_partial
        self._loop = asyncio.get_running_loop()
        self._audio: queue.SimpleQueue[bytes | object] = queue.SimpleQueue()
        self._result: asyncio.Future[str] = self._loop.create_future()
        self._cancelled = threading.Event()
        self._finished = False
        self._block = max(1, int(sample_rate * PARTIAL_EVERY_S)) * 2  # input bytes per decoded piece
        self._sent = 0  # input bytes sent
        self._decoded = 0  # pieces the worker has decoded and reported (on the loop)
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._thread = threading.Thread(target=self._work, name=f"pocketsphinx-{provider}", daemon=True)
        self._thread.start()

    async def send(self, pcm: bytes) -> None:
        if self._finished:
            raise TransientProviderError("audio sent after the stream finished", provider=self._provider)
        if pcm:
            self._sent += len(pcm)
            self._audio.put(pcm)

    async def flush(self) -> None:
        """Wait until the partials of every whole piece of audio sent so far have been delivered."""
        due = self._sent // self._block
        if due <= self._decoded or self._result.done():
            return
        waiter = self._loop.create_future()
        self._waiters.append((due, waiter))
        await waiter

    def _reached(self, pieces: int) -> None:
        # Posted after the partials of those pieces, so they have been delivered by now.
        self._decoded = pieces
        self._release(lambda due: due <= pieces)

    def _release(self, ready: Any = lambda due: True) -> None:
        keep = []
        for due, waiter in self._waiters:
            if ready(due):
                if not waiter.done():
                    waiter.set_result(None)
            else:
                keep.append((due, waiter))
        self._waiters = keep

    async def finish(self) -> Transcript:
        if not self._finished:
            self._finished = True
            self._audio.put(_DONE)
        text = await asyncio.shield(self._result)
        return Transcript(text, is_final=True, provider=self._provider)

    async def aclose(self) -> None:
        """Abandon the utterance (if not finished) and give the decoder back."""
        if not self._finished:
            self._finished = True
            self._cancelled.set()
            self._audio.put(_DONE)
        if not self._result.done():
            self._result.cancel()
        self._release()

    def _post(self, callback: Any, *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop closed under us: nobody wants the result any more
            self._cancelled.set()

    def _partial(self, text: str) -> None:
        if self._on_partial is None or self._result.done():
            return
        try:
            self._on_partial(Transcript(text, is_final=False, provider=self._provider))
        except Exception as exc:  # the caller's bug: surface it from finish(), not as a loop log line
            self._cancelled.set()
            self._result.set_exception(exc)
            self._release()

    def _resolve(self, text: str | None, error: BaseException | None) -> None:
        self._release()  # nothing more will be decoded
        if self._result.done():
            return
        if error is not None:
            self._result.set_exception(error)
        else:
            self._result.set_result(text or "")

    def _work(self) -> None:
        engine = pool()
        try:
            decoder = engine.acquire()
        except BaseException as exc:
            self._post(self._resolve, None, engine_error(exc, self._provider, FAILED))
            return
        in_utterance = False
        try:
            resampler = None
            if self._rate != DECODER_RATE:
                import soxr

                # float32: soxr dithers int16 output at random, so the same audio would reach
                # the decoder (and its partials) differently from run to run.
                resampler = soxr.ResampleStream(self._rate, DECODER_RATE, 1, dtype="float32")
            decoder.start_utt()
            in_utterance = True
            dither = _Dither()
            last = ""
            pending = bytearray()  # input audio not decoded yet (less than a piece once decoded)
            utterance = bytearray()  # 16 kHz, kept only for the final pass
            pieces = 0
            done = False
            while not done:
                item = self._audio.get()
                # Take everything queued meanwhile, then decode it piece by piece.
                while True:
                    if item is _DONE:
                        done = True
                        break
                    pending += item  # type: ignore[operator]
                    try:
                        item = self._audio.get_nowait()
                    except queue.Empty:
                        break
                if self._cancelled.is_set():
                    return
                decoded = pieces
                while len(pending) >= self._block:
                    piece = self._to_16k(bytes(pending[: self._block]), resampler)
                    del pending[: self._block]
                    if self._final_pass:
                        utterance += piece
                    if piece:  # a resampler holds back its first few ms
                        decoder.process_raw(dither(piece), full_utt=False)
                    pieces += 1
                    hyp = decoder.hyp()
                    text = hyp.hypstr.strip() if hyp is not None else ""
                    if text and text != last:
                        last = text
                        self._post(self._partial, text)
                if pieces != decoded:
                    self._post(self._reached, pieces)
            tail = self._to_16k(bytes(pending[: len(pending) // 2 * 2]), resampler) if len(pending) >= 2 else b""
            if resampler is not None:
                tail += self._to_16k(b"", resampler, last=True)
            pending = bytearray(tail)
            if self._final_pass:
                utterance += tail
            if self._final_pass:
                # Partials came from the live decode; the final is a batch decode of the whole
                # utterance (its own cepstral mean), which hears narrowband and first turns better.
                decoder.end_utt()
                in_utterance = False
                text = _decode(decoder, bytes(utterance[: len(utterance) // 2 * 2]))
            else:
                if len(pending) >= 2:
                    decoder.process_raw(dither(bytes(pending[: len(pending) // 2 * 2])), full_utt=False)
                decoder.end_utt()
                in_utterance = False
                hyp = decoder.hyp()
                text = hyp.hypstr.strip() if hyp is not None else ""
            self._post(self._resolve, text, None)
        except BaseException as exc:  # handed to finish(), raised there typed
            self._post(self._resolve, None, engine_error(exc, self._provider, FAILED))
        finally:
            if in_utterance:
                try:  # leave the decoder ready for its next user
                    decoder.end_utt()
                except RuntimeError:
                    pass  # already out of the utterance: nothing to reset
            engine.release(decoder)

    @staticmethod
    def _to_16k(pcm: bytes, resampler: Any, *, last: bool = False) -> bytes:
        if resampler is None:
            return pcm
        import numpy as np

        samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float32) / 32768
        out = resampler.resample_chunk(samples, last=last)
        return np.clip(np.rint(out * 32768), -32768, 32767).astype("<i2").tobytes()


class PocketSphinxSTT:
    """The STTProvider over the shared decoder pool; holds no model of its own."""

    type = TYPE
    kind: Kind = "stt"
    supports_streaming = True

    def __init__(self, name: str, *, final_pass: bool = False) -> None:
        self.name = name
        self.pool = pool()
        self.final_pass = final_pass

    def preload(self) -> float:
        return self.pool.preload()

    async def transcribe(self, audio: AudioChunk) -> Transcript:
        try:
            text = await asyncio.to_thread(transcribe_pcm, audio.pcm, audio.sample_rate)
        except Exception as exc:
            raise engine_error(exc, self.name, FAILED) from None
        return Transcript(text, is_final=True, provider=self.name)

    async def open_stream(
        self, sample_rate: int = PIPELINE_RATE, on_partial: PartialCallback | None = None
    ) -> PocketSphinxStream:
        if sample_rate <= 0:
            raise ConfigError(f"provider {self.name}: sample rate must be positive, got {sample_rate}")
        return PocketSphinxStream(self.name, sample_rate, on_partial, final_pass=self.final_pass)

    async def probe(self) -> None:
        await self.transcribe(AudioChunk(bytes(int(0.3 * DECODER_RATE) * 2), DECODER_RATE))

    async def aclose(self) -> None:
        """Nothing per instance: the decoders stay loaded for the next session."""



def create(name: str, kind: Kind, config: ProviderConfig, ctx: BuildContext) -> PocketSphinxSTT:
    """Factory named in the provider registry (`pocketsphinx`)."""
    if kind != "stt":
        raise ConfigError(f"provider {name}: pocketsphinx only does stt, not {kind}")
    if config.language not in (None, "en", "en-US", "en-us"):
        raise ConfigError(
            f"provider {name}: pocketsphinx language {config.language!r} is not bundled",
            hint="only the en-US model ships with the package; omit `language` or set it to en-US",
        )
    unknown = set(config.options) - set(OPTIONS)
    if unknown:
        raise ConfigError(
            f"provider {name}: unknown pocketsphinx option(s) {', '.join(sorted(unknown))}",
            hint=f"known: {', '.join(OPTIONS)}; the decoder pool size is set process-wide with {POOL_ENV}",
        )
    # Live CMN starts every utterance from the model's prior and misses first words, 8 kHz most of
    # all; the whole-utterance pass fixes that for a few hundred ms, so it is on unless turned off.
    final_pass = config.options.get("final_pass", True)
    if not isinstance(final_pass, bool):
        raise ConfigError(f"provider {name}: pocketsphinx option final_pass must be true or false")
    try:
        import pocketsphinx  # noqa: F401  (fail at build time, not mid-session)
    except ImportError as exc:
        raise EngineMissingError("pocketsphinx", PACKAGES, provider=name, cause=f"cannot import {exc.name}") from None
    return PocketSphinxSTT(name, final_pass=final_pass)
