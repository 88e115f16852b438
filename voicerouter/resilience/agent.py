"""The agent stage: an ordered chain of agents behind one agent, with a spoken last resort.

Each agent of the chain (`agent: [openai-chat, webhook, echo]`) is a member of a `StageRunner`,
so it gets the same first-result deadline (the first token, for an agent that streams), stall
watchdog, retries, breaker, hedging and fault injection as any provider. `stream()` yields the
reply as it is written (`ReplyDelta`s), so the session speaks the first sentence while the rest is
still being generated; a reply cut mid-stream restarts on the next agent (or the same one, on a
retry) and the first delta of the new reply says so (`restart=True`). When every agent fails and
the route has `agent.fallback_reply`, that text is the reply and a `failover` event says so
(`to_provider: fallback_reply`); without one, `AllProvidersFailed` reaches the session.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from voicerouter.errors import AllProvidersFailed
from voicerouter.providers.base import Conversation, SessionInfo
from voicerouter.resilience.chain import Member, StageRunner, last_item, stream_of
from voicerouter.session.events import EventType


@dataclass(frozen=True)
class ReplyDelta:
    """A piece of the reply text; `restart` marks the first piece of a reply that replaces a cut one."""

    text: str
    restart: bool = False


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

    async def stream(self, text: str, conversation: Conversation, session: SessionInfo) -> AsyncIterator[ReplyDelta]:
        """The reply as it is written; after a mid-reply failure the replacement starts with restart=True."""
        restarted = [False]

        async def op(member: Member, attempt: int) -> AsyncIterator[str]:
            provider = member.provider
            if callable(getattr(provider, "stream_reply", None)):
                async with contextlib.aclosing(stream_of(provider.stream_reply(text, conversation, session))) as parts:
                    async for part in parts:
                        if part:
                            yield part
            else:
                yield await provider.reply(text, conversation, session)

        def on_restart() -> dict[str, Any]:
            restarted[0] = True
            return {}

        loop_start = self.runner.bus.now()
        said = False
        try:
            async for part in self.runner.run(op, restart_key="restarted_reply", restart_detail=on_restart):
                yield ReplyDelta(part, restart=restarted[0])
                restarted[0], said = False, True
        except AllProvidersFailed as exc:
            if said:
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
