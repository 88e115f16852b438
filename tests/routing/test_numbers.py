"""`numbers:`: a called number gives the call's tenant, region and flags; the call's own values win."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from voicerouter.config.loader import load_routes
from voicerouter.routing.numbers import call_context, normalize, parse_flag_params
from voicerouter.routing.validate import validate_file

TABLE = """\
version: 1
providers:
  local-stt: {type: pocketsphinx}
  local-tts: {type: piper}
defaults:
  stt: [local-stt]
  tts: [local-tts]
routes:
  - name: acme-eu
    match: {tenant: acme, region: "eu-*"}
  - name: beta
    match: {flags: {beta: true}}
numbers:
  "+442071230000": {tenant: acme, region: eu-west-2}
  "+1555*": {tenant: globex, flags: {beta: true}}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "routes.yaml"
    path.write_text(text)
    return path


def test_number_maps_to_context_and_route(tmp_path):
    table = load_routes(write(tmp_path, TABLE))
    call = call_context(table.config.numbers, "+44 20 7123 0000")
    assert (call.tenant, call.region, call.pattern) == ("acme", "eu-west-2", "+442071230000")
    assert table.resolve(call.route_context("CA1")).route == "acme-eu"
    glob = call_context(table.config.numbers, "+15550001111")
    assert glob.tenant == "globex" and glob.flags == {"beta": True}
    assert table.resolve(glob.route_context()).route == "beta"


def test_call_parameters_override_the_number(tmp_path):
    table = load_routes(write(tmp_path, TABLE))
    call = call_context(table.config.numbers, "+15550001111", tenant="acme", region="eu-west-1", flags={"beta": False})
    assert (call.tenant, call.region, call.flags) == ("acme", "eu-west-1", {"beta": False})
    assert set(call.overridden) == {"tenant", "region", "flag beta"}
    assert table.resolve(call.route_context()).route == "acme-eu"


def test_unknown_number_gets_defaults_with_warning(tmp_path):
    table = load_routes(write(tmp_path, TABLE))
    call = call_context(table.config.numbers, "+33100000000")
    assert call.pattern is None and call.tenant is None
    plan = table.resolve(call.route_context())
    assert plan.route == "defaults" and plan.warnings


def test_helpers():
    assert normalize("+1 (555) 123-0000") == "+15551230000"
    assert parse_flag_params(["beta", "s2s=false,x=1"]) == {"beta": True, "s2s": False, "x": True}


def test_validate_reports_bad_and_shadowed_numbers(tmp_path):
    text = TABLE + '  "+15551230000": {tenant: x}\n  "0800-FLOWERS": {tenant: y}\n'
    findings = validate_file(write(tmp_path, text), env={})
    codes = {(f.code, f.location.line) for f in findings}
    assert ("shadowed-number", 16) in codes
    assert ("bad-number", 17) in codes


def test_resolve_to_explains_the_call(tmp_path):
    path = write(tmp_path, TABLE)
    proc = subprocess.run([sys.executable, "-m", "voicerouter", "resolve", "--routes", str(path), "--to", "+442071230000", "--json"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["route"] == "acme-eu" and data["call"]["number_match"] == "+442071230000"
    proc = subprocess.run([sys.executable, "-m", "voicerouter", "resolve", "--routes", str(path), "--to", "+33100000000"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "is not in numbers:" in proc.stdout and "defaults apply" in proc.stderr
