"""Every validation finding, with its location, and hostile input that must not crash."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from voicerouter import load_routes
from voicerouter.errors import ConfigError
from voicerouter.routing.validate import render_github, render_json, render_text, validate_file, validate_files

BASE_PROVIDERS = """\
version: 1
providers:
  local-stt: {type: pocketsphinx}
  local-tts: {type: piper}
"""


def write(tmp_path: Path, text: str, name: str = "routes.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def codes(findings) -> list[str]:
    return [f.code for f in findings]


def one(findings, code):
    found = [f for f in findings if f.code == code]
    assert found, f"no {code} in {[str(f) for f in findings]}"
    return found[0]


def test_valid_table_has_no_findings(tmp_path):
    path = write(tmp_path, BASE_PROVIDERS + "defaults: {stt: [local-stt], tts: [local-tts]}\n")
    assert validate_file(path, env={}) == []


def test_unknown_key_with_line_and_column(tmp_path):
    path = write(tmp_path, BASE_PROVIDERS + "defaults:\n  stt: [local-stt]\n  tts: [local-tts]\n  vad: {agressiveness: 3}\n")
    finding = one(validate_file(path, env={}), "unknown-key")
    assert finding.severity == "error"
    assert "defaults.vad.agressiveness" in finding.message
    assert (finding.location.line, finding.location.column) == (8, 9)


def test_wrong_type_is_located(tmp_path):
    path = write(tmp_path, BASE_PROVIDERS + "defaults:\n  stt: [local-stt]\n  tts: [local-tts]\n  turn: {silence_ms: soon}\n")
    finding = one(validate_file(path, env={}), "schema")
    assert "defaults.turn.silence_ms" in finding.message and finding.location.line == 8


def test_bad_stage_shape(tmp_path):
    path = write(tmp_path, BASE_PROVIDERS + "defaults:\n  stt: {local-stt: 1}\n  tts: [local-tts]\n")
    finding = one(validate_file(path, env={}), "bad-stage")
    assert finding.location.line == 6


def test_unknown_provider_reference_and_wrong_kind(tmp_path):
    path = write(
        tmp_path,
        BASE_PROVIDERS
        + "defaults: {stt: [local-stt], tts: [local-tts]}\n"
        + "routes:\n  - name: r\n    match: {tenant: a}\n    stt: [local-tts, ghost]\n",
    )
    findings = validate_file(path, env={})
    assert "uses 'ghost', which is not defined" in one(findings, "unknown-provider").message
    wrong = one(findings, "wrong-kind")
    assert "'local-tts', which is a tts provider" in wrong.message and wrong.location.line == 9


def test_empty_chain_and_bad_weights(tmp_path):
    path = write(
        tmp_path,
        BASE_PROVIDERS
        + "  piper2: {type: piper}\n"
        + "defaults: {stt: [], tts: {split: {local-tts: 0, piper2: -1}}}\n",
    )
    findings = validate_file(path, env={})
    assert one(findings, "empty-chain").severity == "error"
    weights = [f for f in findings if f.code == "bad-weight"]
    assert len(weights) == 2


def test_duplicate_route_names_and_duplicate_keys(tmp_path):
    path = write(
        tmp_path,
        BASE_PROVIDERS
        + "defaults: {stt: [local-stt], tts: [local-tts]}\n"
        + "routes:\n  - {name: a, match: {tenant: x}}\n  - {name: a, match: {tenant: y}}\n",
    )
    assert one(validate_file(path, env={}), "duplicate-route").location.line == 8
    dup = write(tmp_path, BASE_PROVIDERS + "  local-stt: {type: piper}\n", "dup.yaml")
    finding = one(validate_file(dup, env={}), "unreadable")
    assert "duplicate key 'local-stt'" in finding.message and finding.location.line == 5


def test_shadowed_routes(tmp_path):
    path = write(
        tmp_path,
        BASE_PROVIDERS
        + "defaults: {stt: [local-stt], tts: [local-tts]}\n"
        + "routes:\n"
        + "  - {name: eu, match: {region: 'eu-*'}}\n"
        + "  - {name: eu-west, match: {tenant: acme, region: 'eu-west-*'}}\n"
        + "  - {name: us, match: {region: [us-east-1, us-west-2]}}\n"
        + "  - {name: us-east, match: {region: us-east-1, flags: {beta: true}}}\n"
        + "  - {name: not-shadowed, match: {tenant: acme}}\n"
        + "  - {name: all}\n"
        + "  - {name: after-all, match: {tenant: z}}\n",
    )
    shadowed = [f for f in validate_file(path, env={}) if f.code == "shadowed-route"]
    names = [f.message.split("'")[1] for f in shadowed]
    assert names == ["eu-west", "us-east", "after-all"]


def test_unknown_type_missing_kind_missing_option(tmp_path):
    path = write(
        tmp_path,
        "providers:\n"
        "  a: {type: whisperx}\n"
        "  b: {type: deepgram, api_key: '${K}'}\n"
        "  c: {type: elevenlabs, kind: tts}\n"
        "  d: {type: cartesia, kind: stt, api_key: '${K}'}\n"
        "defaults: {stt: [a], tts: [c]}\n",
    )
    findings = validate_file(path, env={"K": "x"})
    assert "unknown type 'whisperx'" in one(findings, "unknown-type").message
    assert one(findings, "missing-kind").location.line == 3
    assert "needs api_key (e.g. ${ELEVENLABS_API_KEY})" in one(findings, "missing-option").message
    assert any(f.code == "wrong-kind" and "has no stt" in f.message for f in findings)


def test_missing_stage_for_pipeline(tmp_path):
    path = write(tmp_path, BASE_PROVIDERS + "defaults: {stt: [local-stt]}\n")
    assert "needs tts providers" in one(validate_file(path, env={}), "missing-stage").message


def test_env_and_literal_secrets_are_warnings_or_strict_errors(tmp_path):
    path = write(
        tmp_path,
        "providers:\n"
        "  dg: {type: deepgram, kind: stt, api_key: '${DG_TEST_KEY}'}\n"
        "  el: {type: elevenlabs, kind: tts, api_key: sk-literal-1234}\n"
        "defaults: {stt: [dg], tts: [el]}\n",
    )
    findings = validate_file(path, env={})
    assert {f.code: f.severity for f in findings} == {"unset-env": "info", "literal-secret": "warning"}
    assert all("sk-literal-1234" not in str(f) for f in findings)
    strict = validate_file(path, env={}, strict=True)
    assert {f.code: f.severity for f in strict} == {"unset-env": "info", "literal-secret": "error"}
    assert [f.code for f in validate_file(path, env={"DG_TEST_KEY": "abc"})] == ["literal-secret"]


def test_insecure_base_url_and_unused_provider(tmp_path):
    path = write(
        tmp_path,
        BASE_PROVIDERS
        + "  remote: {type: openai-compatible, kind: stt, base_url: 'http://stt.example.com/v1'}\n"
        + "  loop: {type: openai-compatible, kind: stt, base_url: 'http://127.0.0.1:9000/v1'}\n"
        + "defaults: {stt: [local-stt, remote, loop], tts: [local-tts]}\n"
        + "  \n",
    )
    findings = validate_file(path, env={})
    assert [f.code for f in findings if f.severity == "error"] == ["insecure-url"]
    unused = write(tmp_path, BASE_PROVIDERS + "  spare: {type: piper}\ndefaults: {stt: [local-stt], tts: [local-tts]}\n", "u.yaml")
    assert one(validate_file(unused, env={}), "unused-provider").severity == "warning"


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"providers: [a, b\n", "invalid YAML"),
        (b"- just\n- a list\n", "must be a mapping"),
        (b"", "the file is empty"),
        (b"providers:\n  a: {type: \xff\xfe}\n", "not UTF-8"),
        (b"a: &a [*a, *a]\n", "nesting deeper"),
        (b"defaults:\n  <<: {x: 1}\n", "merge keys"),
    ],
)
def test_hostile_input_gives_one_located_error(tmp_path, content, expected):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    findings = validate_file(path, env={})
    assert len(findings) == 1 and findings[0].severity == "error"
    assert expected in findings[0].message
    assert findings[0].location.file == str(path)
    with pytest.raises(ConfigError):
        load_routes(path)


def test_alias_bomb_is_refused(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    findings = validate_file(path, env={})
    assert "alias bomb" in findings[0].message


def test_huge_and_missing_files(tmp_path):
    huge = tmp_path / "huge.yaml"
    huge.write_bytes(b"#" * (6 * 1024 * 1024))
    assert "limited to" in validate_file(huge, env={})[0].message
    assert validate_file(tmp_path / "nope.yaml", env={})[0].message == "file not found"
    assert "directory" in validate_file(tmp_path, env={})[0].message


def test_renderings(tmp_path):
    good = write(tmp_path, BASE_PROVIDERS + "defaults: {stt: [local-stt], tts: [local-tts]}\n", "good.yaml")
    bad = write(tmp_path, BASE_PROVIDERS + "defaults: {stt: [ghost], tts: [local-tts]}\n", "bad, odd.yaml")
    report = validate_files([good, bad], env={})
    assert not report.valid and len(report.errors) == 1
    text = render_text(report)
    assert f"{bad}:5:" in text and "2 file(s) invalid: 1 error(s), 1 warning(s)" in text
    data = json.loads(render_json(report))
    assert data["valid"] is False and data["errors"] == 1
    error = next(f for f in data["findings"] if f["severity"] == "error")
    assert error | {"message": None} == {
        "file": str(bad), "line": 5, "column": 17, "severity": "error", "id": "VR205", "code": "unknown-provider",
        "message": None,
    }
    github = render_github(report)
    assert "::error file=" in github and "::warning file=" in github and "bad%2C odd.yaml" in github and ",line=5,col=17," in github


@pytest.mark.parametrize(
    "url, code",
    [
        ("https://[::1", "bad-url"),
        ("http://[::1]evil.example/v1", "bad-url"),
        ("https://api.example:99999/v1", "bad-url"),
        ("ftp://api.example/v1", "bad-url"),
        ("http://user:cnry-PASS-1@api.example/v1", "credentials-in-url"),
        ("https://cnry-TOKEN-1@api.example/v1", "credentials-in-url"),
        ("http://llm.example/${TOKEN}/v1", "insecure-url"),
    ],
)
def test_urls_are_checked_by_the_clients_parser(tmp_path, url, code):
    path = write(
        tmp_path,
        BASE_PROVIDERS + f"  remote: {{type: openai-compatible, kind: stt, base_url: '{url}'}}\n"
        "defaults: {stt: [remote], tts: [local-tts]}\n",
    )
    findings = [f for f in validate_file(path, env={"TOKEN": "t"}) if f.severity == "error"]
    assert code in codes(findings)
    assert all("cnry-" not in str(f) for f in findings)
    assert findings[0].location.line == 5


@pytest.mark.parametrize(
    "url", ["https://user:${PASS}@api.example/v1", "https://${TOKEN}@api.example/v1", "https://${HOST}/v1", "http://${HOST}/v1"]
)
def test_urls_with_references_pass(tmp_path, url):
    path = write(
        tmp_path,
        BASE_PROVIDERS + f"  remote: {{type: openai-compatible, kind: stt, base_url: '{url}'}}\n"
        "defaults: {stt: [remote], tts: [local-tts]}\n",
    )
    assert [f for f in validate_file(path, env={"PASS": "p", "TOKEN": "t", "HOST": "h"}) if f.severity == "error"] == []


def test_scalars_are_read_as_the_schema_types_them(tmp_path):
    path = write(
        tmp_path,
        BASE_PROVIDERS + "defaults: {stt: [local-stt], tts: [local-tts]}\nroutes:\n"
        "  - {name: r-no, match: {tenant: no}}\n"
        "  - {name: r-date, match: {tenant: 2024-02-30}}\n"
        "  - {name: 1234, match: {tenant: [yes, 12], flags: {on: true}}}\n",
    )
    table = load_routes(path)
    from voicerouter import RouteContext

    assert table.resolve(RouteContext(tenant="no")).route == "r-no"
    assert table.resolve(RouteContext(tenant="2024-02-30")).route == "r-date"
    assert table.resolve(RouteContext(tenant="12", flags={"on": True})).route == "1234"


@pytest.mark.parametrize(
    "value, expected",
    [
        ("!!int abc", "'abc' is not a valid !!int"),
        ("!!float abc", "'abc' is not a valid !!float"),
        ("!!bool maybe", "'maybe' is not a valid !!bool"),
        ("!!timestamp x", "'x' is not a valid !!timestamp"),
        ("!!python/object:os.system x", "unsupported YAML tag"),
        ("!!set {a, b}", "unsupported YAML tag"),
        ("!!binary aGVsbG8=", "unsupported YAML tag"),
    ],
)
def test_bad_tagged_values_are_located(tmp_path, value, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(f"providers: {{}}\nversion: {value}\n")
    [finding] = validate_file(path, env={})
    assert expected in finding.message and (finding.location.line, finding.location.column) == (2, 10)


def test_deep_nesting_nul_bytes_and_second_documents_are_located(tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text("version: 1\nproviders: " + "[" * 500 + "]" * 500 + "\n")
    [finding] = validate_file(deep, env={})
    assert "nesting deeper" in finding.message and finding.location.line == 2
    nul = tmp_path / "nul.yaml"
    nul.write_bytes(b"version: 1\nproviders:\n  a\x00: {}\n")
    [finding] = validate_file(nul, env={})
    assert "U+0000" in finding.message and (finding.location.line, finding.location.column) == (3, 4)
    two = tmp_path / "two.yaml"
    two.write_text("version: 1\n---\nversion: 1\n")
    [finding] = validate_file(two, env={})
    assert "another" in finding.message and finding.location.line == 2


def test_a_key_holding_a_newline_cannot_forge_a_line(tmp_path):
    path = tmp_path / "forge.yaml"
    path.write_text('version: 1\nproviders:\n  "a\\nforge.yaml:1:1: error: forged": {type: piper, "x\\ny": 1}\n')
    text = render_text(validate_files([path], env={}))
    lines = text.strip().splitlines()
    assert all(line.startswith(str(path)) for line in lines[:-1]) and "forged" in text


def test_non_finite_numbers_are_refused_and_json_stays_json(tmp_path):
    path = write(
        tmp_path,
        BASE_PROVIDERS + "  odd: {type: piper, options: {x: .nan}}\n"
        "defaults: {stt: [local-stt], tts: {split: {local-tts: .nan, odd: .inf}}}\n",
    )
    findings = validate_file(path, env={})
    assert [(f.code, f.location.line) for f in findings] == [("schema", 6), ("schema", 6)]
    assert all("finite" in f.message for f in findings)
    fine = write(tmp_path, BASE_PROVIDERS + "  odd: {type: piper, options: {x: .nan}}\ndefaults: {stt: [local-stt], tts: [odd]}\n", "f.yaml")
    from voicerouter import RouteContext

    data = json.loads(json.dumps(load_routes(fine).resolve(RouteContext()).to_dict(), allow_nan=False))
    assert data["provider_configs"]["odd"]["options"] == {"x": "nan"}
