"""voicerouter's clients send what the official SDKs send: method, path, auth header and scheme, body kind,
required fields and query parameters, first WebSocket message, pinned version headers.

The references in wire/references.json were recorded from the SDKs against a local capture server
(`python tests/providers/wire/record.py`); re-recording with the installed SDK must reproduce them.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import pytest
from wire.client_calls import CLIENT_CALLS, PLACEHOLDERS, run_against_capture
from wire.reference import load, mismatches, summarize
from wire.sdk_calls import SDK_CALLS

KEY = "sk-wire-fidelity-4242"
REFERENCES = load()


@pytest.mark.parametrize("op", sorted(CLIENT_CALLS))
async def test_client_request_matches_the_sdk_reference(op: str) -> None:
    client = summarize(await run_against_capture(CLIENT_CALLS[op], KEY), KEY, PLACEHOLDERS)
    assert mismatches(client, REFERENCES[op]) == []


@pytest.mark.parametrize("op", sorted(SDK_CALLS))
async def test_installed_sdk_still_sends_the_reference(op: str) -> None:
    vendor = op.split(".")[0]
    dist, recorded = REFERENCES["_sdks"][vendor].split(" ")
    try:
        installed = version(dist)
    except PackageNotFoundError:
        pytest.skip(f"{dist} is not installed")
    if installed != recorded:
        pytest.skip(f"{dist} {installed} installed, reference recorded with {recorded}: re-record")
    reference = dict(REFERENCES[op])
    skipped = reference.pop("not_required", {})
    summary = summarize(await run_against_capture(SDK_CALLS[op], KEY), KEY, PLACEHOLDERS)
    summary["fields"] = [f for f in summary["fields"] if f not in skipped]
    assert summary == reference


def test_a_mismatch_is_reported() -> None:
    reference = REFERENCES["cartesia.tts"]
    wrong = {**reference, "auth": {"header": "x-api-key", "scheme": ""}, "fields": ["transcript"],
             "pinned": {"cartesia-version": "2025-11-04"}}
    problems = mismatches(wrong, reference)
    assert len(problems) == 3 and "x-api-key" in problems[0] and "model_id" in " ".join(problems)
