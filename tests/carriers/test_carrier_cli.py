"""`voicerouter call` / `sms`: which carrier took it, attempts, failovers, exit codes; validate and providers."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest
from carrier_helpers import ENV, table_text

from voicerouter.testing.server import emulate, parse_faults


async def voicerouter(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voicerouter", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **ENV, **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


def validate_outbound(doc: object, command: str) -> None:
    """`call --json` / `sms --json` against the shipped schema."""
    import jsonschema

    schema = json.loads((Path(__file__).resolve().parents[2] / "schemas" / f"{command}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(doc, schema)


@pytest.fixture
async def routes(tmp_path):
    async with emulate("twilio") as twilio, emulate("telnyx") as telnyx:
        path = tmp_path / "routes.yaml"
        path.write_text(table_text(twilio.url, telnyx.url))
        yield path, twilio, telnyx


async def test_sms_fails_over_and_says_which_carrier_took_it(routes):
    path, twilio, telnyx = routes
    twilio.state.faults = parse_faults("error:503")
    code, out, err = await voicerouter("sms", "+15550111", "Your code is 1234", "--routes", str(path))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("sms sent via tx-sms (telnyx): id=")
    assert "3 attempts, 1 failover" in lines[1]
    assert "1. tw-sms attempt 1: failed (transient) twilio error 20503" in lines[2]
    assert lines[4].strip() == "3. tx-sms attempt 1: ok"


async def test_call_json_and_opt_out_exit_code(routes):
    path, twilio, telnyx = routes
    code, out, err = await voicerouter("call", "+15550111", "--twiml", "<Response><Say>Hi</Say></Response>",
                                       "--routes", str(path), "--tenant", "acme", "--json")
    assert code == 0, err
    data = json.loads(out)
    validate_outbound(data, "call")
    assert data["ok"] and data["carrier"] == "tw-call" and data["result"]["carrier_type"] == "twilio"
    assert data["result"]["from"] == "+15550100" and data["attempts"] == [
        {"carrier": "tw-call", "attempt": 1, "ok": True, "reason": None, "error": None, "code": None}]
    code, out, err = await voicerouter("sms", "+15550111", "hi", "--routes", str(path),
                                       "--inject", "tw-sms=error:21610", "--json")
    assert code == 5
    validate_outbound(json.loads(out), "sms")
    assert json.loads(out)["error"] == {"reason": "opted_out", "code": 21610, "provider": "tw-sms",
                                        "message": "twilio error 21610: injected fault tw-sms=error:21610"}
    code, out, err = await voicerouter("sms", "+15550111", "hi", "--routes", str(path),
                                       "--inject", "tw-sms=error:21610")
    assert code == 5
    assert err.startswith("error: twilio error 21610: injected fault tw-sms=error:21610 [provider=tw-sms")
    assert "1 attempt, 0 failovers" in out and "tx-sms" not in out
    assert not telnyx.state.requests


async def test_call_usage_errors(routes):
    path, _, _ = routes
    code, _, err = await voicerouter("call", "+15550111", "--routes", str(path))
    assert code == 2 and "exactly one of --url, --serve or --twiml" in err
    code, _, err = await voicerouter("call", "5550111", "--url", "https://example.com/t", "--routes", str(path))
    assert code == 2 and "not in E.164 form" in err


async def test_every_carrier_down_exits_3_and_a_lost_answer_exits_6(routes):
    path, twilio, telnyx = routes
    code, _, err = await voicerouter("sms", "+15550111", "hi", "--routes", str(path),
                                     "--inject", "tw-sms=error:503,tx-sms=error:503")
    assert code == 3 and "every sms provider failed" in err
    twilio.state.faults = parse_faults("hang")
    short = path.read_text().replace("timeout_ms: 1000", "timeout_ms: 200")
    path.write_text(short)
    code, out, err = await voicerouter("call", "+15550111", "--url", "https://example.com/t", "--routes", str(path))
    assert code == 6 and "may have gone out" in err and not telnyx.state.requests


def test_validate_and_providers_know_the_carriers(tmp_path):
    import subprocess

    path = tmp_path / "routes.yaml"
    path.write_text(table_text("https://api.twilio.com", "https://api.telnyx.com").replace(
        "    connection_id: \"1494404757140276705\"\n", "", 1))
    run = subprocess.run([sys.executable, "-m", "voicerouter", "validate", str(path)], capture_output=True, text=True,
                         env={**os.environ, **ENV})
    assert run.returncode == 1 and "tx-call': telnyx calls need connection_id" not in run.stdout + run.stderr
    assert "type telnyx needs connection_id" in run.stdout + run.stderr
    run = subprocess.run([sys.executable, "-m", "voicerouter", "providers"], capture_output=True, text=True)
    assert "twilio" in run.stdout and "telnyx" in run.stdout and "call" in run.stdout


async def test_check_probes_the_carriers_and_resolve_shows_their_stages(routes):
    path, twilio, telnyx = routes
    code, out, err = await voicerouter("check", "--routes", str(path), "--json")
    assert code == 0, out + err
    rows = json.loads(out)["providers"]
    assert {r["name"] for r in rows} == {"tw-call", "tx-call", "tw-sms", "tx-sms"} and all(r["ok"] for r in rows)
    assert any(r["path"].endswith("Accounts/AC0123456789abcdef0123456789abcdef.json") for r in twilio.state.requests)
    assert any(r["path"] == "/v2/balance" for r in telnyx.state.requests)
    assert not [r for r in twilio.state.requests + telnyx.state.requests if r.get("event")]  # nothing placed
    code, out, err = await voicerouter("check", "--routes", str(path), "--json", env={"TWILIO_TOKEN": "wrong"})
    assert code == 3
    failed = {r["name"]: r for r in json.loads(out)["providers"] if not r["ok"]}
    assert set(failed) == {"tw-call", "tw-sms"} and "20003" in failed["tw-call"]["error"]
    code, out, err = await voicerouter("resolve", "--routes", str(path), "--tenant", "acme", "--json")
    stages = json.loads(out)["stages"]
    assert stages["call"]["providers"] == ["tw-call", "tx-call"] and stages["sms"]["providers"] == ["tw-sms", "tx-sms"]
