"""Closing abandoned connections off the caller's path, and stopping helper tasks without losing a cancel.

A connection given up on (a failed or stalled stream, a hedge's loser, a socket whose final result
already arrived) is closed by a background task: a close handshake with a dead server must never
add to the time a caller waits for the fallback's answer. `settle()` waits, bounded, for those
closes (at the end of a pool or session), so none is left pending when the loop ends.

`reap()` stops a helper task: it cancels it and waits for it to end, but a cancellation of the
caller itself still propagates (unlike `contextlib.suppress(CancelledError)` around the await,
or `asyncio.wait_for` on Python 3.11, which can both swallow it and leave a session waiting forever).
With `timeout_s` the wait is bounded and the tasks still running (they swallowed their
cancellation) are returned, for the owner to report and move on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Iterable
from typing import Any

# A close handshake that takes longer than this is given up on (the socket is dropped by its owner).
CLOSE_TIMEOUT_S = 5.0

_PENDING: set[asyncio.Task[None]] = set()


def close_later(closing: Awaitable[Any], *, timeout_s: float = CLOSE_TIMEOUT_S) -> asyncio.Task[None] | None:
    """Run `closing` (e.g. `ws.close()`) in the background, bounded by `timeout_s`, errors ignored."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # no loop (interpreter shutdown): nothing can run it
        if asyncio.iscoroutine(closing):
            closing.close()
        return None

    async def run() -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout_s):
                await closing

    task = loop.create_task(run(), name="close-abandoned-connection")
    _PENDING.add(task)
    task.add_done_callback(_PENDING.discard)
    return task


def pending() -> int:
    """Background closes not finished yet (on any loop)."""
    return sum(1 for task in _PENDING if not task.done())


async def settle(timeout_s: float = CLOSE_TIMEOUT_S) -> None:
    """Wait (at most `timeout_s`) for the background closes started on this loop."""
    loop = asyncio.get_running_loop()
    tasks = {task for task in _PENDING if task.get_loop() is loop and not task.done()}
    if tasks:
        await asyncio.wait(tasks, timeout=timeout_s)


async def reap(
    tasks: asyncio.Task[Any] | Iterable[asyncio.Task[Any] | None], *, timeout_s: float | None = None
) -> set[asyncio.Task[Any]]:
    """Cancel helper tasks and wait until they have ended (at most `timeout_s`, if given); the
    caller's own cancellation propagates. Returns the tasks that are still running."""
    group = [tasks] if isinstance(tasks, asyncio.Task) else [t for t in tasks if t is not None]
    for task in group:
        task.cancel()
    if not group:
        return set()
    _, running = await asyncio.wait(group, timeout=timeout_s)
    return running


def discard(resource: Any) -> asyncio.Task[None] | None:
    """Close an abandoned stream or session (anything with `aclose()`) in the background."""
    close = getattr(resource, "aclose", None)
    return close_later(close()) if close is not None else None


async def wait_closed(tasks: Iterable[asyncio.Task[None] | None], timeout_s: float = CLOSE_TIMEOUT_S) -> None:
    """Wait (bounded) for background closes an owner started, when the owner itself is closed."""
    group = {task for task in tasks if task is not None and not task.done()}
    if group:
        await asyncio.wait(group, timeout=timeout_s)
