"""`voicerouter check`: build every provider a routing table uses and probe each one, before real traffic.

Probes run concurrently with a deadline; a missing key, a bad URL, a refused key or a silent
endpoint each shows up as one row. Exit 3 when any provider fails.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from voicerouter.providers.pool import ProviderPool
    from voicerouter.routing.table import RoutingTable


@dataclass
class ProbeResult:
    name: str
    type: str
    kind: str | None
    ok: bool
    latency_ms: float | None = None
    error: str | None = None
    error_type: str | None = None

    @property
    def status(self) -> str:
        return "ok" if self.ok else (self.error_type or "error")


def error_type(exc: Exception) -> str:
    """Short status word: auth, rate_limited, timeout, transient, missing_secret, config, ..."""
    from voicerouter.errors import ProviderError

    reason = exc.reason if isinstance(exc, ProviderError) else type(exc).__name__.removesuffix("Error").lower()
    return reason.removesuffix("provider").removeprefix("provider") or "error"


async def probe_one(pool: ProviderPool, name: str, timeout_s: float) -> ProbeResult:
    import asyncio
    import time

    from voicerouter.config.secrets import redact
    from voicerouter.errors import ProviderError, ProviderTimeout, VoiceRouterError

    cfg = pool.configs[name]
    result = ProbeResult(name, cfg.type, cfg.kind, ok=False)
    try:
        result.kind = pool.kind(name)
        provider = pool.get(name)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout_s):
                await provider.probe()
        except TimeoutError:
            raise ProviderTimeout(f"no answer within {timeout_s * 1000:.0f} ms", provider=name) from None
        result.latency_ms = round((time.perf_counter() - started) * 1000, 1)
        result.ok = True
    except VoiceRouterError as exc:
        result.error_type = error_type(exc)
        result.error = redact(exc.message if isinstance(exc, ProviderError) else str(exc))
        if exc.hint:
            result.error += f" ({redact(exc.hint)})"
    except Exception as exc:  # a provider bug is still one failed row, not a crashed check
        result.error_type = "internal"
        result.error = redact(f"{type(exc).__name__}: {exc}")
    return result


async def run_checks(table: RoutingTable, names: list[str], *, env: dict[str, str],
                     timeout_s: float) -> list[ProbeResult]:
    import asyncio

    from voicerouter.providers.base import BuildContext
    from voicerouter.providers.pool import ProviderPool

    pool = ProviderPool(table.config.providers, BuildContext(env=env))
    try:
        return list(await asyncio.gather(*(probe_one(pool, n, timeout_s) for n in names)))
    finally:
        await pool.aclose()


def render(results: list[ProbeResult], file: str) -> None:
    from rich.table import Table

    from voicerouter.cli.common import stdout_console

    table = Table(title=f"provider check: {file}", title_justify="left")
    for column, justify in (("provider", "left"), ("type", "left"), ("kind", "left"), ("status", "left"),
                            ("latency ms", "right"), ("error", "left")):
        table.add_column(column, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for r in results:
        status = "[green]ok[/]" if r.ok else f"[red]{r.status}[/]"
        latency = f"{r.latency_ms:.0f}" if r.latency_ms is not None else "-"
        table.add_row(r.name, r.type, r.kind or "-", status, latency, r.error or "", )
    failed = sum(not r.ok for r in results)
    stdout_console().print(table)
    summary = f"{len(results) - failed} ok, {failed} failed" if results else "no providers to check"
    stdout_console().print(f"[red]{summary}[/]" if failed else summary)


def check(
    routes: Annotated[Path | None, typer.Option("--routes", help="Routing table (default: $VOICEROUTER_ROUTES, then ./routes.yaml).")] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", "-t", help="Check only the providers of the route this tenant resolves to.")] = None,
    region: Annotated[str | None, typer.Option("--region", "-r", help="Region for route resolution.")] = None,
    flag: Annotated[list[str] | None, typer.Option("--flag", help="Feature flag for route resolution: NAME or NAME=true|false.")] = None,
    all_providers: Annotated[bool, typer.Option("--all", help="Also check providers no route uses.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print results as JSON.")] = False,
    timeout_ms: Annotated[int, typer.Option("--timeout-ms", help="Deadline for each probe.", min=1)] = 10000,
) -> None:
    """Probe every provider the routing table uses (or one route's); exit 3 if any fails."""
    import asyncio
    import os

    from voicerouter.cli.common import find_routes, parse_flags, warn_unused_flags
    from voicerouter.config.loader import load_routes
    from voicerouter.errors import EXIT_PROVIDER
    from voicerouter.routing.checks import used_providers
    from voicerouter.routing.plan import RouteContext

    table = load_routes(find_routes(routes))
    if tenant is not None or region is not None or flag:
        plan = table.resolve(RouteContext(tenant=tenant, region=region, flags=parse_flags(flag)))
        warn_unused_flags(table.flag_names(), parse_flags(flag), table.file)
        names = list(plan.providers)
    elif all_providers:
        names = list(table.config.providers)
    else:
        names = used_providers(table)
    results = asyncio.run(run_checks(table, names, env=dict(os.environ), timeout_s=timeout_ms / 1000))
    if json_out:
        import json

        typer.echo(json.dumps({"file": table.file, "ok": all(r.ok for r in results),
                               "providers": [asdict(r) | {"status": r.status} for r in results]}, indent=2))
    else:
        render(results, table.file)
    if not all(r.ok for r in results):
        raise typer.Exit(EXIT_PROVIDER)


def register(app: typer.Typer) -> None:
    app.command("check")(check)
