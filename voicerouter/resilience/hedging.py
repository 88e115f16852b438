"""Hedged requests: when the first provider is slow to answer, ask the next one too and keep the faster.

The loser is cancelled (its stream closed), so a slow provider does not keep a connection open or
bill for audio nobody plays. One `hedge` event per race names both and the winner (None if both failed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from voicerouter.session.events import EventType

if TYPE_CHECKING:
    from voicerouter.resilience.chain import StageRunner


async def race(
    primary: asyncio.Task[Any],
    start_secondary: Callable[[], Coroutine[Any, Any, Any]],
    *,
    primary_name: str,
    secondary_name: str,
    runner: StageRunner,
    close: Callable[[Any], Awaitable[None]],
    hedge_after_s: float = 0.0,
) -> Any:
    """Run the secondary alongside the already-running primary; return the first success.

    If both fail, re-raises the secondary's failure (the primary's is already recorded by the runner).
    """
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    secondary = asyncio.create_task(start_secondary())
    names = {primary: primary_name, secondary: secondary_name}
    pending: set[asyncio.Task[Any]] = {primary, secondary}
    failure: BaseException | None = None
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            winners = [t for t in (primary, secondary) if t in done and not t.cancelled() and t.exception() is None]
            for task in done:
                if task.cancelled():
                    continue
                if task.exception() is not None:
                    failure = task.exception()
            if winners:
                winner = winners[0]
                for extra in winners[1:]:
                    await close(extra.result())
                await _cancel(pending)
                runner.bus.emit(
                    EventType.HEDGE, provider=names[winner], turn=runner.turn(), stage=runner.stage,
                    primary=primary_name, secondary=secondary_name, winner=names[winner],
                    reason="slow_first_result", hedge_after_ms=round(hedge_after_s * 1000, 1),
                    elapsed_ms=round((loop.time() - t0) * 1000, 1),
                )
                return winner.result()
    finally:
        await _cancel(pending)
    runner.bus.emit(
        EventType.HEDGE, provider=primary_name, turn=runner.turn(), stage=runner.stage, primary=primary_name,
        secondary=secondary_name, winner=None, reason="both_failed", elapsed_ms=round((loop.time() - t0) * 1000, 1),
    )
    assert failure is not None
    raise failure


async def _cancel(tasks: set[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    if tasks:  # a cancelled loser's outcome no longer matters
        await asyncio.gather(*tasks, return_exceptions=True)
