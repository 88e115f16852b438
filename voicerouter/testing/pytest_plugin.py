"""pytest plugin: test your routing tables and providers with voicerouter's emulators and replay.

Installed with voicerouter (entry point `pytest11`), so the fixtures are there in any test:

    def test_failover(emulator, replay, tmp_path):
        dg = emulator("deepgram", faults="error:503*2")          # a running emulator; dg.url is its base URL
        results = replay(["call.wav"], routes=table_using(dg.url), tenant="acme")
        assert results[0].ok and results[0].session.turns[0].transcript

Fixtures work in plain and in async tests (emulators serve from their own thread). The marker
`slow_engines` tags tests that load the local speech engines; `--skip-slow-engines` skips them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from voicerouter.session.replay import ReplayResult
from voicerouter.testing.server import Emulator, Fault, emulate

ENGINES_MARK = "slow_engines"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("voicerouter").addoption(
        "--skip-slow-engines", action="store_true", help=f"skip tests marked {ENGINES_MARK} (local speech engines)"
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{ENGINES_MARK}: loads the local speech engines (Whisper, Moonshine, PocketSphinx, Piper, ...); "
        "slow on a small machine, skipped with --skip-slow-engines"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--skip-slow-engines", default=False):
        return
    skip = pytest.mark.skip(reason="--skip-slow-engines")
    for item in items:
        if item.get_closest_marker(ENGINES_MARK):
            item.add_marker(skip)


class _LoopThread:
    """An event loop in a daemon thread: emulators keep serving while the test's own code runs."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="voicerouter-emulators", daemon=True)
        self.thread.start()
        self.stack = AsyncExitStack()

    def run(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        try:
            self.run(self.stack.aclose())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()


class EmulatorFactory:
    """`emulator(provider_type, faults=..., transcript=..., tts_engine=..., api_key=...)` -> a running `Emulator`."""

    def __init__(self) -> None:
        self._loop: _LoopThread | None = None

    def __call__(
        self,
        provider_type: str,
        *,
        faults: str | Sequence[str] | Sequence[Fault] | None = None,
        transcript: str | None = "hello from the emulator",
        tts_engine: str = "tone",
        api_key: str = "test-key",
        seed: int = 0,
    ) -> Emulator:
        if self._loop is None:
            self._loop = _LoopThread()
        context = emulate(provider_type, faults=list(faults) if faults is not None and not isinstance(faults, str) else faults,
                          transcript=transcript, tts_engine=tts_engine, api_key=api_key, seed=seed)  # type: ignore[arg-type]
        return self._loop.run(self._loop.stack.enter_async_context(context))

    def close(self) -> None:
        if self._loop is not None:
            self._loop.close()
            self._loop = None


@pytest.fixture
def emulator() -> Iterator[EmulatorFactory]:
    """Start wire-compatible provider emulators on 127.0.0.1 for this test; `.url` is the base URL."""
    factory = EmulatorFactory()
    try:
        yield factory
    finally:
        factory.close()


class Replayer:
    """`replay(files, routes=..., tenant=..., region=..., flags=..., faults=..., seed=..., env=...)` -> results.

    `routes` is a path, YAML text or a `RoutingTable` (default: the built-in offline table); `faults`
    takes the CLI's `--inject` string. Returns `ReplayResult`s in the order of `files`: `.ok`,
    `.session.turns[i].transcript / .reply / .latency_ms / .providers`, `.session.events`.
    """

    def __call__(
        self,
        files: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
        *,
        routes: Any = None,
        tenant: str | None = None,
        region: str | None = None,
        flags: dict[str, bool] | None = None,
        session_id: str | None = None,
        faults: str | None = None,
        seed: int | None = None,
        env: dict[str, str] | None = None,
        out_dir: str | os.PathLike[str] | None = None,
        concurrency: int = 1,
    ) -> list[ReplayResult]:
        from voicerouter.routing.plan import RouteContext
        from voicerouter.session.replay import replay_files

        paths = [files] if isinstance(files, str | os.PathLike) else list(files)
        table = _table(routes)
        kwargs = {"session_id": session_id} if session_id else {}
        ctx = RouteContext(tenant=tenant, region=region, flags=flags or {}, **kwargs)
        coro = replay_files(paths, ctx, table, faults=faults, seed=seed, env=env, out_dir=out_dir, concurrency=concurrency)
        # Its own thread and loop: callable from plain tests and from inside a running event loop.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, coro).result()


def _table(routes: Any) -> Any:
    from voicerouter.config.loader import builtin_routes, load_routes, parse_routes

    if routes is None:
        return builtin_routes()
    if isinstance(routes, Path) or (isinstance(routes, str) and "\n" not in routes):
        return load_routes(routes)
    if isinstance(routes, str):
        return parse_routes(routes, name="<replay fixture>")
    return routes  # a RoutingTable


@pytest.fixture
def replay() -> Replayer:
    """Replay audio files through routed sessions and get typed results to assert on."""
    return Replayer()
