"""The agent stage: an ordered chain of agents behind one agent, with a spoken last resort.

Each agent of the chain (`agent: [openai-chat, webhook, echo]`) is a member of a `StageRunner`,
so it gets the same first-result deadline (the first token, for an agent that streams), stall
watchdog, retries, breaker, hedging and fault injection as any provider. `stream()` yields the
reply as it is written (`ReplyDelta`s), so the session speaks the first sentence while the rest is
still being written.

A reply cut mid-stream continues from where the caller stopped hearing it: `stream(heard=...)`
asks the session, at the moment of the restart, for the reply's text that has been (or is being)
spoken; the next agent (or the same one, on a retry) is given it as `said` and asked to continue
after it (an agent that cannot continue is asked again from the start), and whatever the
replacement repeats of it is dropped at a word boundary (`continuation.Continuation`). The first
delta after a restart says so (`restart=True`, with the text `kept`): the unspoken tail of the cut
reply is gone, the reply is `kept` + what follows. When every agent fails and the route has
`agent.fallback_reply`, that text is the reply and a `failover` event says so (`to_provider:
fallback_reply`); without one, `AllProvidersFailed` reaches the session.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from voicerouter.errors import AllProvidersFailed
from voicerouter.providers.base import Conversation, SessionInfo
from voicerouter.resilience.chain import Member, StageRunner, last_item, stream_of
from voicerouter.resilience.continuation import Continuation
from voicerouter.session.events import EventType


@dataclass(frozen=True)
class ReplyDelta:
    """A piece of the reply text; `restart` marks the first piece after a cut: the reply so far is
    then `kept` (what the caller heard of the cut reply) and this piece goes on from there."""

    text: str
    restart: bool = False
    kept: str = ""


def continues(agent: Any) -> bool:
    """Does this agent take `said=` (the start of the reply the caller heard) and continue after it?"""
    return bool(getattr(agent, "continues_replies", False))


class ResilientAgent:
    def __init__(self, runner: StageRunner, fallback_reply: str | None) -> None:
        self.runner = runner
        self.agents = [m.provider for m in runner.members]
        self.name = runner.members[0].name if len(runner.members) == 1 else "agent:" + ",".join(
            m.name for m in runner.members)
        self.fallback_reply = fallback_reply
        # streaming pays off only when some agent of the chain writes its reply token by token
        self.streams = any(callable(getattr(a, "stream_reply", None)) for a in self.agents)

    @property
    def last_used(self) -> str | None:
        return self.runner.last_used.name if self.runner.last_used is not None else None

    async def reply(self, text: str, conversation: Conversation, session: SessionInfo) -> str:
        """The whole reply (an agent that streams is read to its end inside its own attempt)."""

        async def op(member: Member, attempt: int) -> AsyncIterator[str]:
            provider = member.provider
            if callable(getattr(provider, "stream_reply", None)):
                async with contextlib.aclosing(stream_of(provider.stream_reply(text, conversation, session))) as parts:
                    yield "".join([part async for part in parts])
            else:
                yield await provider.reply(text, conversation, session)

        loop_start = self.runner.bus.now()
        try:
            result = await last_item(self.runner.run(op))
        except AllProvidersFailed as exc:
            return self._last_resort(exc, loop_start)
        return result or ""

    async def stream(
        self, text: str, conversation: Conversation, session: SessionInfo, *, heard: Callable[[], str] | None = None
    ) -> AsyncIterator[ReplyDelta]:
        """The reply as it is written. After a mid-reply failure, `heard()` (the reply's text the
        caller has heard or is hearing) is what the replacement continues after; its first delta
        carries restart=True and that text as `kept`."""
        said = [""]  # what the current attempt continues after
        restart: list[str | None] = [None]  # kept text of a restart not yet announced

        async def op(member: Member, attempt: int) -> AsyncIterator[str]:
            provider, before = member.provider, said[0]
            extra = {"said": before} if before and continues(provider) else {}
            follow = Continuation(before) if before else None
            if callable(getattr(provider, "stream_reply", None)):
                parts = stream_of(provider.stream_reply(text, conversation, session, **extra))
            else:
                parts = _whole(provider.reply(text, conversation, session, **extra))
            async with contextlib.aclosing(parts) as pieces:
                async for part in pieces:
                    if part:
                        # while a possible repeat is held back, "" tells the runner tokens are flowing
                        yield follow.feed(part) if follow is not None else part
            if follow is not None:
                rest = follow.finish()
                if rest:
                    yield rest
                if follow.dropped_words:
                    self.runner.bus.emit(
                        EventType.WARNING, provider=member.name, turn=self.runner.turn(), stage="agent",
                        reason="repeated_reply", dropped_words=follow.dropped_words,
                        message=f"{member.name} repeated {follow.dropped_words} word(s) the caller had heard; "
                        "dropped",
                    )

        def on_restart() -> dict[str, Any]:
            said[0] = heard().strip() if heard is not None else ""
            restart[0] = said[0]
            return {"continued_after_words": len(said[0].split())}

        loop_start = self.runner.bus.now()
        spoke = False
        try:
            async for part in self.runner.run(op, restart_key="restarted_reply", restart_detail=on_restart):
                if restart[0] is not None:
                    yield ReplyDelta(part, restart=True, kept=restart[0])
                    restart[0], spoke = None, spoke or bool(part)
                elif part:
                    yield ReplyDelta(part)
                    spoke = True
            if restart[0] is not None:  # the replacement had nothing to add to what was heard
                yield ReplyDelta("", restart=True, kept=restart[0])
        except AllProvidersFailed as exc:
            if spoke or said[0]:
                raise  # part of a reply was already spoken: a canned reply after it would make no sense
            yield ReplyDelta(self._last_resort(exc, loop_start))

    def _last_resort(self, exc: AllProvidersFailed, loop_start: float) -> str:
        if self.fallback_reply is None:
            raise exc
        last = exc.errors[-1] if exc.errors else exc
        failed = getattr(last, "provider", None) or self.name
        self.runner.bus.emit(
            EventType.FAILOVER, provider=failed, turn=self.runner.turn(), stage="agent",
            from_provider=failed, to_provider="fallback_reply", reason=getattr(last, "reason", "error"),
            error=getattr(last, "message", str(last)),
            elapsed_ms=round((self.runner.bus.now() - loop_start) * 1000, 1),
        )
        return self.fallback_reply

    async def aclose(self) -> None:
        await self.runner.aclose()
        for agent in self.agents:
            close = getattr(agent, "aclose", None)
            if close is not None:
                await close()


async def _whole(reply: Awaitable[str]) -> AsyncIterator[str]:
    """An agent that answers whole, as a stream of one piece."""
    yield await reply
