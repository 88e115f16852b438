"""The pytest plugin: the `emulator` and `replay` fixtures used as a project's tests would use them,
and the `slow_engines` marker and option in a separate pytest run."""

from __future__ import annotations

from pathlib import Path

import httpx

from voicerouter.session.events import EventType

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "hello.wav"

pytest_plugins = ["pytester"]


def table(dg_url: str, oai_url: str) -> str:
    return (
        "version: 1\n"
        "providers:\n"
        f"  dg: {{type: deepgram, kind: stt, api_key: '${{DG_KEY}}', base_url: '{dg_url}'}}\n"
        f"  oai-stt: {{type: openai, kind: stt, model: whisper-1, api_key: '${{DG_KEY}}', base_url: '{oai_url}/v1'}}\n"
        f"  oai-tts: {{type: openai, kind: tts, model: tts-1, voice: alloy, api_key: '${{DG_KEY}}', base_url: '{oai_url}/v1'}}\n"
        "defaults:\n"
        "  stt: [dg, oai-stt]\n"
        "  tts: [oai-tts]\n"
        "  resilience: {retries: 0}\n"
    )


def test_emulator_fixture_serves_the_vendor_protocol(emulator):
    dg = emulator("deepgram", transcript="good morning")
    assert dg.url.startswith("http://127.0.0.1:")
    denied = httpx.post(dg.url + "/v1/listen", content=b"", headers={"Authorization": "Token wrong"})
    assert denied.status_code == 401  # a real server on loopback, checking the key like the vendor


def test_replay_fixture_with_emulated_providers_and_a_fault(emulator, replay):
    dg = emulator("deepgram", faults="error:503", transcript="good morning")
    oai = emulator("openai", transcript="good morning from the fallback")
    (result,) = replay(SAMPLE, routes=table(dg.url, oai.url), env={"DG_KEY": "test-key"}, session_id="plugin")
    assert result.ok, result.to_dict()
    (turn,) = result.session.turns
    assert turn.transcript == "good morning from the fallback" and turn.providers == {"stt": "oai-stt", "tts": "oai-tts"}
    failovers = [e.data for e in result.session.events if e.type == EventType.FAILOVER]
    assert failovers and failovers[0]["from_provider"] == "dg"
    assert any(r["path"] == "/v1/audio/speech" for r in oai.state.requests)


def test_replay_fixture_takes_the_cli_fault_string(emulator, replay):
    dg = emulator("deepgram", transcript="good morning")
    oai = emulator("openai", transcript="the fallback")
    (result,) = replay(SAMPLE, routes=table(dg.url, oai.url), env={"DG_KEY": "test-key"}, faults="dg=error:503", seed=1)
    (turn,) = result.session.turns
    assert turn.providers["stt"] == "oai-stt"  # the injected fault on dg made the session fail over
    # Marked as injected, before the failover it caused, so nobody takes it for an outage.
    kinds = [e.type for e in result.session.events]
    injected = kinds.index(EventType.FAULT_INJECTED)
    assert injected < kinds.index(EventType.FAILOVER)
    assert result.session.events[injected].data["fault"] == "dg=error:503"
    from voicerouter.observe.logs import EventLog
    from voicerouter.observe.report import build_report
    from voicerouter.observe.timeline_text import incident_line

    report = build_report(EventLog(events=[e.to_dict() for e in result.session.events]))
    assert {p["provider"]: p["faults_injected"] for p in report["providers"]}["dg"] == 1
    assert incident_line(result.session.events[injected].to_dict()) == "⚡ injected fault stt dg=error:503"


def test_marker_and_option_in_a_fresh_run(pytester):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.slow_engines
        def test_engines():
            pass

        def test_emulator(emulator):
            assert emulator("openai").url.startswith("http://127.0.0.1:")
        """
    )
    plugin = ["-p", "voicerouter.testing.pytest_plugin"]
    pytester.runpytest_subprocess(*plugin).assert_outcomes(passed=2)
    pytester.runpytest_subprocess(*plugin, "--skip-slow-engines").assert_outcomes(passed=1, skipped=1)
    markers = pytester.runpytest_subprocess(*plugin, "--markers")
    assert "slow_engines" in markers.stdout.str()


def test_the_entry_point_is_declared():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["pytest11"] == {"voicerouter.testing.pytest_plugin": "voicerouter.testing.pytest_plugin"}
