"""A TTS chain that is itself a `TTSProvider`: one `synthesize()` per sentence, failover inside.

Restart rule (no lost words, no silent cuts): nothing is buffered. If a provider fails after it
has started yielding a sentence's audio, the next provider synthesizes the *whole sentence* again
and its audio follows; the `failover` event carries `restarted_sentence: true` so the consumer
(sink, report) knows the sentence was restarted. A sentence is never dropped or cut short.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from voicerouter.providers.base import AudioChunk
from voicerouter.resilience.chain import ChainProvider, Member, stream_of


class TTSChain(ChainProvider):
    kind = "tts"

    @property
    def sample_rate(self) -> int | None:
        return getattr(self.runner.members[0].provider, "sample_rate", None) if self.runner.members else None

    def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        async def op(member: Member, attempt: int) -> AsyncIterator[AudioChunk]:
            async with contextlib.aclosing(stream_of(member.provider.synthesize(text))) as chunks:
                async for chunk in chunks:
                    if chunk.pcm:  # an empty chunk is not a first audio byte
                        yield chunk

        return self.runner.run(op, restart_key="restarted_sentence")

    async def probe(self) -> None:
        async for _ in self.synthesize("ok"):
            break
