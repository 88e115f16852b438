"""The agent with the same deadline, retry and breaker rules as a provider, and a spoken fallback.

When the agent fails for good (or its breaker is open) and the route has `agent.fallback_reply`,
that text is the reply and a `failover` event says so (`to_provider: fallback_reply`); without
one, `AllProvidersFailed` reaches the session like any stage failure.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from voicerouter.errors import AllProvidersFailed
from voicerouter.providers.base import Conversation, SessionInfo
from voicerouter.resilience.chain import Member, StageRunner, last_item
from voicerouter.session.events import EventType


class ResilientAgent:
    def __init__(self, agent: Any, runner: StageRunner, fallback_reply: str | None) -> None:
        self.agent = agent
        self.runner = runner
        self.name = getattr(agent, "name", type(agent).__name__)
        self.fallback_reply = fallback_reply

    async def reply(self, text: str, conversation: Conversation, session: SessionInfo) -> str:
        async def op(member: Member, attempt: int) -> AsyncIterator[str]:
            yield await member.provider.reply(text, conversation, session)

        loop_start = self.runner.bus.now()
        try:
            result = await last_item(self.runner.run(op))
        except AllProvidersFailed as exc:
            if self.fallback_reply is None:
                raise
            last = exc.errors[-1] if exc.errors else exc
            self.runner.bus.emit(
                EventType.FAILOVER, provider=self.name, turn=self.runner.turn(), stage="agent",
                from_provider=self.name, to_provider="fallback_reply", reason=getattr(last, "reason", "error"),
                error=getattr(last, "message", str(last)),
                elapsed_ms=round((self.runner.bus.now() - loop_start) * 1000, 1),
            )
            return self.fallback_reply
        return result or ""

    async def aclose(self) -> None:
        await self.runner.aclose()
        close = getattr(self.agent, "aclose", None)
        if close is not None:
            await close()
