"""`voicerouter load`: act as the carrier against a `serve` deployment and report what callers got."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def load(
    url: Annotated[str, typer.Argument(help="The server, e.g. http://127.0.0.1:8080.")],
    fixtures: Annotated[list[Path], typer.Argument(help="What callers say: WAV/FLAC/OGG files, used in turn.")],
    carrier: Annotated[str, typer.Option("--carrier", help="twilio, telnyx or ws (the /v1/sessions protocol).")] = "twilio",
    calls: Annotated[int, typer.Option("--calls", "-n", help="Calls to place.")] = 1,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", help="Calls in progress at once.")] = 1,
    rate: Annotated[float | None, typer.Option("--rate", help="Start at most this many calls per second.")] = None,
    to: Annotated[str, typer.Option("--to", help="The called number (routing context via the table's numbers:).")] = "+15550100000",
    tenant: Annotated[str | None, typer.Option("--tenant", "-t", help="Tenant, as a query parameter of the webhook.")] = None,
    region: Annotated[str | None, typer.Option("--region", "-r", help="Region, as a query parameter of the webhook.")] = None,
    flag: Annotated[list[str] | None, typer.Option("--flag", help="Flag NAME or NAME=true|false (repeatable).")] = None,
    dtmf: Annotated[list[str] | None, typer.Option(
        "--dtmf", help="Keys each caller presses, KEYS[@SECONDS] (e.g. 1#@2.5: at 2.5 s into the call, "
        "0.25 s apart; without @, after the fixture's audio). Repeatable.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    transcribe: Annotated[bool, typer.Option("--transcribe/--no-transcribe", help="Transcribe what callers heard (PocketSphinx).")] = True,
) -> None:
    """Place calls like Twilio/Telnyx would (signed webhook, TwiML, real-time media) and report.

    Signs Twilio webhooks with $TWILIO_AUTH_TOKEN and Telnyx ones with $TELNYX_PRIVATE_KEY (base64 or
    PEM Ed25519) when set; --carrier ws sends $VOICEROUTER_AUTH_TOKEN as its bearer token. Exit codes: 0 no call failed (refusals are reported, not failures), 1 a
    call failed, 2 usage error.
    """
    import asyncio
    import json
    import os
    import sys

    from voicerouter.cli.common import parse_flags
    from voicerouter.errors import UsageError
    from voicerouter.load import Target, load_fixture, run_load, telnyx_private_key
    from voicerouter.session.keypad import parse_dtmf

    if carrier not in ("twilio", "telnyx", "ws"):
        raise UsageError(f"--carrier must be twilio, telnyx or ws, got {carrier!r}")
    if calls < 1 or concurrency < 1:
        raise UsageError("--calls and --concurrency must be at least 1")
    if rate is not None and rate <= 0:
        raise UsageError(f"--rate must be positive, got {rate:g}")
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"URL must be http(s)://host:port, got {url!r}")
    parse_flags(flag)  # the same checks as every --flag
    try:
        keypad = [parse_dtmf(spec) for spec in dtmf or []]
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    plans = [load_fixture(path) for path in fixtures]
    for plan in plans:
        plan.dtmf = list(keypad)
    key = os.environ.get("TELNYX_PRIVATE_KEY")
    target = Target(url, carrier=carrier, to=to, tenant=tenant, region=region, flags=list(flag or []),  # type: ignore[arg-type]
                    twilio_auth_token=os.environ.get("TWILIO_AUTH_TOKEN"),
                    telnyx_private_key=telnyx_private_key(key) if key else None,
                    session_token=os.environ.get("VOICEROUTER_AUTH_TOKEN") or None)

    def progress(result) -> None:  # noqa: ANN001
        if not json_out:
            detail = result.error or (f"heard {result.words!r}" if result.words else "")
            print(f"call {result.index + 1}: {result.outcome} {detail}".rstrip(), file=sys.stderr, flush=True)

    report = asyncio.run(run_load(target, plans, calls=calls, concurrency=concurrency, rate=rate,
                                  transcribe=transcribe, on_result=progress))
    data = report.to_dict()
    if json_out:
        typer.echo(json.dumps(data, indent=2))
    else:
        p = data["first_audio_s"]

        def ms(v: float | None) -> str:
            return "-" if v is None else f"{v * 1000:.0f} ms"

        typer.echo(f"calls {data['calls']}: answered {data['answered']}, refused {data['refused']}, failed {data['failed']}")
        typer.echo(f"speech end -> first reply audio: p50 {ms(p['p50'])}, p95 {ms(p['p95'])}, p99 {ms(p['p99'])}")
        failovers = "unknown" if data["failovers"] is None else f"{data['failovers']:g}"
        typer.echo(f"failovers (server /metrics): {failovers}; max send lag {data['max_send_lag_ms']} ms; wall {data['wall_s']} s")
    if report.count("failed"):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("load")(load)
