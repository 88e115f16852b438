"""`voicerouter init [DIR]`: scaffold a routing table (and its JSON Schema), a samples folder with
expectations, and a CI job.

Never overwrites: a file that exists is kept as it is and listed as kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ROUTES = """\
# yaml-language-server: $schema=./routes.schema.json
# Routing table written by `voicerouter init`. Check it:  voicerouter validate routes.yaml
# See a session's plan:  voicerouter resolve --tenant acme
version: 1
providers:
  local-stt: {type: whisper, options: {partials: moonshine}}  # offline, bundled models: no key, no network
  local-tts: {type: piper}            # offline, bundled voice
  # A cloud provider: set DEEPGRAM_API_KEY, then uncomment this and the acme route below.
  # dg: {type: deepgram, kind: stt, model: nova-3, api_key: "${DEEPGRAM_API_KEY}"}
defaults:
  stt: [local-stt]
  tts: [local-tts]
  agent: echo                         # or {type: webhook, url: ...} / {type: openai-chat, ...}
  turn: {silence_ms: 600}
  # Local engines run on this machine's CPU: generous deadlines, so a busy machine is slow, not down.
  resilience: {retries: 1, first_result_timeout_ms: 15000, stall_timeout_ms: 10000, turn_deadline_ms: 60000}
routes:                               # first match wins; no match: defaults (with a warning)
  # - name: acme-cloud
  #   match: {tenant: acme}
  #   stt: [dg, local-stt]            # ordered failover: the cloud first, offline if it fails
  - name: everyone
    description: every other session, on the local engines
"""

EXPECTATIONS = """\
# What replaying the samples must give. Run:
#   voicerouter replay samples/*.wav --routes routes.yaml --expect samples/expectations.yaml
# Keys are file names or globs; `words` must appear in the transcript (`number*` matches a prefix).
hello.wav:
  turns: 1
  words: [good morning]

# "*.wav":
#   max_latency_ms: {voice_to_voice: 3000}   # a latency budget (local engines on a busy CPU are slow)
"""

WORKFLOW = """\
# Checks the routing table and replays the samples on every push (offline: no keys needed).
name: voicerouter
on: [push, pull_request]
jobs:
  routes:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with: {python-version: "3.11"}
      - run: pip install voicerouter
      - run: voicerouter validate routes.yaml --format github --strict
      - run: voicerouter replay samples/*.wav --routes routes.yaml --expect samples/expectations.yaml --junit replay.xml
"""

SAMPLE_TEXT = "Good morning. I would like to check the status of my order."


def init(
    directory: Annotated[Path, typer.Argument(help="Where to create the files (created if missing).", metavar="DIR")] = Path("."),
    no_audio: Annotated[bool, typer.Option("--no-audio", help="Do not synthesize samples/hello.wav (Piper, a few seconds).")] = False,
) -> None:
    """Scaffold routes.yaml, samples/ with an expectations file, and a CI workflow; never overwrites."""
    from voicerouter.cli.common import stdout_console
    from voicerouter.errors import UsageError

    if directory.exists() and not directory.is_dir():
        raise UsageError(f"{directory} exists and is not a directory")
    files = {
        Path("routes.yaml"): ROUTES,
        Path("samples/expectations.yaml"): EXPECTATIONS,
        Path(".github/workflows/voicerouter.yml"): WORKFLOW,
    }
    import json

    from voicerouter.config.schema import json_schema

    files[Path("routes.schema.json")] = json.dumps(json_schema(), indent=2) + "\n"  # editors check routes.yaml
    console = stdout_console()
    created = 0
    for relative, text in files.items():
        created += _write(directory / relative, text, console)
    if not no_audio:
        created += _sample(directory / "samples" / "hello.wav", console)
    console.print(
        "next: voicerouter validate routes.yaml && "
        "voicerouter replay samples/*.wav --routes routes.yaml --expect samples/expectations.yaml"
        if created else "nothing to do: every file exists (kept as it is)",
        markup=False,
    )


def _write(path: Path, text: str, console) -> bool:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("x", encoding="utf-8") as out:  # "x": fails if it exists, so nothing is overwritten
            out.write(text)
    except FileExistsError:
        console.print(f"kept     {path} (exists)", markup=False)
        return False
    console.print(f"created  {path}", markup=False)
    return True


def _sample(path: Path, console) -> bool:
    if path.exists():
        console.print(f"kept     {path} (exists)", markup=False)
        return False
    try:
        from voicerouter.audio.io import write_wav
        from voicerouter.providers.local.piper import synthesize_pcm

        path.parent.mkdir(parents=True, exist_ok=True)
        pcm = b"\0\0" * 8000 + synthesize_pcm(SAMPLE_TEXT, 16000) + b"\0\0" * 16000  # 0.5 s before, 1 s after
        write_wav(path, pcm, 16000)
    except Exception as exc:  # the scaffold is still useful without the sample
        console.print(f"skipped  {path} (Piper could not synthesize it: {exc})", markup=False)
        return False
    console.print(f"created  {path} (Piper: {SAMPLE_TEXT!r})", markup=False)
    return True


def register(app: typer.Typer) -> None:
    app.command("init")(init)
