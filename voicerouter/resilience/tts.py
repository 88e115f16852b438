"""A TTS chain that is itself a `TTSProvider`: one `synthesize()` per sentence, failover inside.

Resume rule (no lost words, nothing heard twice, no word cut in half): a sentence's audio is passed
on only up to the end of the last complete word (`resume.SentenceProgress`). If a provider fails
after it has started a sentence, the next provider (or the same one, on a retry) speaks only the
rest of the sentence, from the first word the listener has not heard; the `failover` (or `retry`)
event carries `restarted_sentence: true`, `resumed_at_word` and `words_heard`. A sentence is never
dropped or cut short.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from voicerouter.providers.base import AudioChunk
from voicerouter.resilience.chain import ChainProvider, Member, StageRunner, stream_of
from voicerouter.resilience.resume import SentenceProgress, SpeakingRate


class TTSChain(ChainProvider):
    kind = "tts"

    def __init__(self, runner: StageRunner) -> None:
        super().__init__(runner)
        self.rates = SpeakingRate()  # per provider: where word ends fall when the vendor gives no alignment

    @property
    def sample_rate(self) -> int | None:
        return getattr(self.runner.members[0].provider, "sample_rate", None) if self.runner.members else None

    def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        progress = SentenceProgress(text)

        async def op(member: Member, attempt: int) -> AsyncIterator[AudioChunk]:
            if progress.spans and not progress.remaining():
                return  # every word was heard before the stream broke: nothing left to say
            part = progress.begin(member.name, self.rates.get(member.name))
            completed = False
            try:
                async with contextlib.aclosing(stream_of(member.provider.synthesize(part.part))) as chunks:
                    async for chunk in chunks:
                        if not chunk.pcm:
                            continue  # an empty chunk is not a first audio byte
                        passed = part.feed(chunk)
                        # an empty chunk tells the runner audio is flowing while a word is held back
                        for out in passed or [AudioChunk(b"", chunk.sample_rate)]:
                            yield out
                for out in part.flush():
                    yield out
                completed = True
                self.rates.observe(member.name, part.part, part.received_s)
            finally:
                if not completed:
                    progress.broke()

        def resumed() -> dict[str, Any]:
            return {"resumed_at_word": progress.first_unheard, "words_heard": progress.first_unheard,
                    "heard_s": round(progress.heard_s, 3)}

        return self.runner.run(op, restart_key="restarted_sentence", restart_detail=resumed)

    async def probe(self) -> None:
        async for chunk in self.synthesize("ok"):
            if chunk.pcm:
                break
