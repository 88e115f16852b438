"""`voicerouter providers`, `emulate` and `check`, run as real commands against real emulators."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from voicerouter.cli.app import app
from voicerouter.errors import EXIT_PROVIDER, EXIT_USAGE
from voicerouter.testing.server import emulate

CANARY = "sk-cli-canary-9876543210"


def test_providers_json_lists_types_and_key_state_without_values():
    runner = CliRunner()
    result = runner.invoke(app, ["providers", "--json"], env={"OPENAI_API_KEY": CANARY, "DEEPGRAM_API_KEY": ""})
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    rows = {row["type"]: row for row in data["providers"]}
    assert data["provider_count"] == len(rows) >= 10
    assert rows["openai"]["kinds"] == ["stt", "tts"] and rows["openai"]["env"] == {"OPENAI_API_KEY": True}
    assert rows["deepgram"]["env"] == {"DEEPGRAM_API_KEY": False}
    assert rows["piper"]["local"] is True and rows["openai"]["local"] is False
    assert rows["openai-compatible"]["required"] == ["base_url"]
    assert CANARY not in result.output


def test_providers_table():
    result = CliRunner().invoke(app, ["providers"], env={"OPENAI_API_KEY": CANARY, "COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "openai-realtime" in result.output and "offline" in result.output and "OPENAI_API_KEY" in result.output
    assert CANARY not in result.output


async def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, str, str]:
    """`python -m voicerouter ARGS` without blocking the loop that serves the emulators."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voicerouter", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "250", **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode(), err.decode()


def write_routes(path: Path, stt_url: str, rt_url: str) -> Path:
    path.write_text(textwrap.dedent(f"""\
        version: 1
        providers:
          oai-stt: {{type: openai, kind: stt, model: whisper-1, api_key: "${{OAI_KEY}}", base_url: "{stt_url}/v1"}}
          oai-tts: {{type: openai, kind: tts, model: tts-1, api_key: "${{OAI_KEY}}", base_url: "{stt_url}/v1"}}
          oai-rt: {{type: openai-realtime, api_key: "${{OAI_KEY}}", base_url: "{rt_url}/v1", timeout_ms: 3000}}
          unused: {{type: openai, kind: stt, api_key: "${{NOT_SET_ANYWHERE}}", base_url: "{stt_url}/v1"}}
        defaults:
          stt: [oai-stt]
          tts: [oai-tts]
        routes:
          - name: s2s
            match: {{flags: {{s2s: true}}}}
            s2s: [oai-rt]
        """))
    return path


async def test_check_probes_every_used_provider(tmp_path):
    async with emulate("openai", api_key=CANARY) as rest, emulate("openai-realtime", api_key=CANARY) as rt:
        routes = write_routes(tmp_path / "routes.yaml", rest.url, rt.url)
        code, out, err = await run_cli("check", "--routes", str(routes), "--json", env={"OAI_KEY": CANARY})
    assert code == 0, err
    report = json.loads(out)
    assert report["ok"] is True
    rows = {r["name"]: r for r in report["providers"]}
    assert set(rows) == {"oai-stt", "oai-tts", "oai-rt"}  # `unused` is not routed to
    assert all(r["status"] == "ok" and r["latency_ms"] is not None for r in rows.values())
    assert rows["oai-rt"]["kind"] == "s2s"
    paths = [r["path"] for r in rest.state.requests]
    assert sorted(paths) == ["/v1/audio/speech", "/v1/audio/transcriptions"]


async def test_check_reports_failures_and_exits_3(tmp_path):
    async with emulate("openai", api_key=CANARY, faults=["error:503*1"]) as rest, \
            emulate("openai-realtime", api_key="a-different-key") as rt:
        routes = write_routes(tmp_path / "routes.yaml", rest.url, rt.url)
        code, out, err = await run_cli("check", "--routes", str(routes), "--all", "--json", env={"OAI_KEY": CANARY})
        table_code, table_out, _ = await run_cli("check", "--routes", str(routes), "--flag", "s2s",
                                                 env={"OAI_KEY": CANARY})
    assert code == EXIT_PROVIDER, err
    rows = {r["name"]: r for r in json.loads(out)["providers"]}
    assert rows["oai-rt"]["status"] == "auth" and "401" in rows["oai-rt"]["error"]
    assert rows["unused"]["status"] == "missing_secret" and "NOT_SET_ANYWHERE" in rows["unused"]["error"]
    assert [rows[n]["status"] for n in ("oai-stt", "oai-tts")].count("transient") == 1  # one 503, one ok
    assert CANARY not in out and CANARY not in err
    assert table_code == EXIT_PROVIDER
    assert "oai-rt" in table_out and "auth" in table_out and "oai-stt" not in table_out  # only the s2s route


async def test_check_times_out_a_hanging_provider(tmp_path):
    async with emulate("openai", api_key=CANARY, faults=["hang"]) as rest, \
            emulate("openai-realtime", api_key=CANARY) as rt:
        routes = write_routes(tmp_path / "routes.yaml", rest.url, rt.url)
        code, out, _ = await run_cli("check", "--routes", str(routes), "--json", "--timeout-ms", "400",
                                     env={"OAI_KEY": CANARY})
    assert code == EXIT_PROVIDER
    rows = {r["name"]: r for r in json.loads(out)["providers"]}
    assert rows["oai-stt"]["status"] == "timeout" and rows["oai-rt"]["status"] == "ok"


@pytest.mark.slow
async def test_check_probes_local_engines():
    # A local engine's first probe loads its model (Whisper, Moonshine, Piper): give a busy machine time.
    code, out, err = await run_cli("check", "--routes", str(Path(__file__).parents[2] / "voicerouter/config/builtin.yaml"),
                                   "--json", "--timeout-ms", "60000", timeout=120)
    assert code == 0, out + err
    rows = {r["name"]: r for r in json.loads(out)["providers"]}
    assert rows["local-stt"]["status"] == "ok" and rows["local-tts"]["status"] == "ok"


async def test_emulate_serves_until_interrupted():
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voicerouter", "emulate", "openai", "openai-realtime", "--transcript", "hi there",
        "--fault", "openai-realtime=slow:10ms", "--api-key", "emu-key",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        lines: list[str] = []
        while sum(line.startswith("    api_key") for line in lines) < 3:  # three entries printed
            line = await asyncio.wait_for(proc.stdout.readline(), 30)  # type: ignore[union-attr]
            assert line, "emulate exited early"
            lines.append(line.decode().rstrip("\n"))
        text = "\n".join(lines)
        assert "export VOICEROUTER_EMULATOR_KEY=emu-key" in text and "slow:10ms" in text
        snippet = yaml.safe_load(text[text.index("providers:"):])["providers"]
        assert set(snippet) == {"openai-emu-stt", "openai-emu-tts", "openai-realtime-emu"}
        # The printed snippet works as-is against the running emulator.
        from voicerouter.config.schema import ProviderConfig
        from voicerouter.providers.base import AudioChunk, BuildContext
        from voicerouter.providers.pool import ProviderPool

        pool = ProviderPool({k: ProviderConfig(**v) for k, v in snippet.items()},
                            BuildContext(env={"VOICEROUTER_EMULATOR_KEY": "emu-key"}))
        try:
            result = await pool.get("openai-emu-stt").transcribe(AudioChunk(b"\0\0" * 8000, 16000))
            await pool.get("openai-realtime-emu").probe()
        finally:
            await pool.aclose()
        assert result.text == "hi there"
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    assert "stopped" in err.decode()


async def test_emulate_refuses_non_loopback_and_unknown():
    code, _, err = await run_cli("emulate", "openai", "--host", "0.0.0.0")
    assert code == EXIT_USAGE and "not a loopback" in err
    code, _, err = await run_cli("emulate", "nosuch")
    assert code == EXIT_USAGE and "no emulator for nosuch" in err
    code, _, err = await run_cli("emulate", "openai", "--fault", "deepgram=error:500")
    assert code == EXIT_USAGE and "not being emulated" in err
