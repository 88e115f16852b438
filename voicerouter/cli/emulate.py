"""`voicerouter emulate TYPE...`: run wire-compatible provider emulators on loopback for offline testing.

Prints each emulator's URL and a routing-table snippet that points at it, then serves until Ctrl-C.
Faults (`--fault error:503@0.3`, `--fault deepgram=drop:1s`) make them misbehave like the real thing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

KEY_VAR = "VOICEROUTER_EMULATOR_KEY"


def split_faults(specs: list[str], types: list[str]) -> dict[str, list[str]]:
    """`SPEC` applies to every emulator, `TYPE=SPEC` to one."""
    from voicerouter.errors import UsageError
    from voicerouter.testing.server import Fault

    out: dict[str, list[str]] = {t: [] for t in types}
    for spec in specs:
        target, sep, rest = spec.partition("=")
        if sep and not target.startswith(("error", "slow", "hang", "stall", "drop", "malformed", "truncate")):
            if target not in out:
                raise UsageError(f"--fault {spec!r} targets {target!r}, which is not being emulated",
                                 hint=f"emulating: {', '.join(types)}")
            Fault.parse(rest)
            out[target].append(rest)
        else:
            Fault.parse(spec)
            for faults in out.values():
                faults.append(spec)
    return out


def snippet(urls: dict[str, str]) -> str:
    """A `providers:` block with one entry per emulated type and kind."""
    import importlib

    from voicerouter.providers.registry import get_type
    from voicerouter.testing.server import EMULATORS

    lines = ["providers:"]
    agents: list[str] = []
    for type_name, url in urls.items():
        ptype = get_type(type_name)
        if ptype is None:  # an agent's endpoint, not a provider
            if type_name == "webhook":
                agents.append(f"#   agent: {{type: webhook, url: {url}/reply}}")
            else:
                agents.append(f"#   agent: {{type: {type_name}, base_url: {url}/v1, api_key: \"${{{KEY_VAR}}}\"}}")
            continue
        base_path = getattr(importlib.import_module(EMULATORS[type_name]), "BASE_PATH", "")
        kinds = ptype.kinds if ptype else ("stt",)
        for kind in kinds:
            name = f"{type_name}-emu" if len(kinds) == 1 else f"{type_name}-emu-{kind}"
            fields = [f"type: {type_name}", f"kind: {kind}", f"base_url: {url}{base_path}",
                      'api_key: "${' + KEY_VAR + '}"']
            if type_name == "twilio":  # a carrier: account, token and caller id instead of an api key
                fields[3:] = ["account_sid: AC00000000000000000000000000000000",
                              'auth_token: "${' + KEY_VAR + '}"', 'from: "+15550100"']
            elif type_name == "telnyx":
                fields += ["connection_id: emulated-connection", 'from: "+15550100"']
            if ptype and "region" in ptype.required:
                fields.append("region: local")
            lines.append(f"  {name}:")
            lines.extend(f"    {field}" for field in fields)
    if len(lines) == 1:
        lines = []
    if agents:
        lines += ["# under defaults: or a route:", *agents]
    return "\n".join(lines)


async def serve(types: list[str], *, host: str, port: int, faults: dict[str, list[str]], api_key: str,
                transcript: str | None, tts: str, ready=None, callee: str | None = None) -> None:
    import asyncio
    from contextlib import AsyncExitStack

    from voicerouter.testing.server import emulate

    async with AsyncExitStack() as stack:
        urls: dict[str, str] = {}
        for index, type_name in enumerate(types):
            emu = await stack.enter_async_context(emulate(
                type_name, faults=faults[type_name], api_key=api_key, transcript=transcript,
                tts_engine=tts,  # type: ignore[arg-type]
                callee_wav=callee,
                host=host, port=port + index if port else 0,
            ))
            urls[type_name] = emu.url
            if type_name == "telnyx":  # what a `serve` verifies this emulator's signed webhooks with
                from voicerouter.testing.telnyx import public_key

                print(f"# export TELNYX_PUBLIC_KEY={public_key(emu.app)}", flush=True)
        if ready is not None:
            ready(urls)
        await asyncio.Event().wait()


def emulate(
    types: Annotated[list[str], typer.Argument(help="Provider types to emulate, e.g. openai deepgram.", show_default=False)],
    host: Annotated[str, typer.Option("--host", help="Loopback address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="First port (one per emulator, consecutive); 0 picks free ports.", min=0, max=65535)] = 0,
    fault: Annotated[list[str] | None, typer.Option("--fault", help="KIND[:ARG][*TIMES][@PROB] for all, or TYPE=SPEC for one (repeatable).")] = None,
    api_key: Annotated[str, typer.Option("--api-key", help="The key the emulators accept.")] = "test-key",
    transcript: Annotated[str | None, typer.Option("--transcript", help="Fixed STT answer (default: transcribe with pocketsphinx).")] = None,
    tts: Annotated[str, typer.Option("--tts", help="Synthesized audio: tone (fast), words (a tone per word) or piper (speech).")] = "tone",
    callee: Annotated[Path | None, typer.Option("--callee", help="twilio/telnyx: the WAV the callee speaks into a call's media stream (default: the --transcript text, spoken).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON line when ready: each emulator's url, client base_url and faults, and the test key.")] = False,
) -> None:
    """Serve provider emulators on loopback until Ctrl-C, with optional faults."""
    import asyncio
    import importlib
    import importlib.util

    from voicerouter.cli.common import stderr_console, stdout_console
    from voicerouter.errors import UsageError
    from voicerouter.netaddr import is_loopback
    from voicerouter.testing.server import EMULATORS

    if not is_loopback(host):
        raise UsageError(f"--host {host} is not a loopback address",
                         hint="emulators accept any request with the test key; serve them on 127.0.0.1 only")
    unknown = [t for t in types if t not in EMULATORS or importlib.util.find_spec(EMULATORS[t]) is None]
    if unknown:
        known = [t for t in EMULATORS if importlib.util.find_spec(EMULATORS[t]) is not None]
        raise UsageError(f"no emulator for {', '.join(unknown)}", hint=f"available: {', '.join(known)}")
    if tts not in ("tone", "words", "piper"):
        raise UsageError(f"--tts {tts!r}: use tone, words or piper")
    types = list(dict.fromkeys(types))
    faults = split_faults(fault or [], types)
    out = stdout_console()

    def ready(urls: dict[str, str]) -> None:
        if json_out:  # one line, for scripts that start emulators and read where they are
            import json

            base = {t: url + getattr(importlib.import_module(EMULATORS[t]), "BASE_PATH", "") for t, url in urls.items()}
            print(json.dumps({"ok": True, "emulators": {t: {"url": url, "base_url": base[t], "faults": faults[t]}
                                                        for t, url in urls.items()},
                              "api_key_env": KEY_VAR, "api_key": api_key}), flush=True)
            return
        for type_name, url in urls.items():
            extra = f"  faults: {', '.join(faults[type_name])}" if faults[type_name] else ""
            out.print(f"{type_name:<18} {url}{extra}")
        # Plain print: a console would wrap long lines and break the YAML.
        print(f"\n# export {KEY_VAR}={api_key}\n{snippet(urls)}", flush=True)
        stderr_console().print("\nserving; press Ctrl-C to stop")

    try:
        if callee is not None and not callee.is_file():
            raise UsageError(f"--callee {callee}: no such file")
        asyncio.run(serve(types, host=host, port=port, faults=faults, api_key=api_key, transcript=transcript,
                          callee=None if callee is None else str(callee),
                          tts=tts, ready=ready))
    except KeyboardInterrupt:
        stderr_console().print("stopped")
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port or 'a free port'}: {exc.strerror or exc}",
                         hint="pick another --port, or 0 for free ports") from None


def register(app: typer.Typer) -> None:
    app.command("emulate")(emulate)
