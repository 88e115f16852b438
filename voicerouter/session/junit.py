"""JUnit XML for replay expectations, so CI systems show each file's checks as test cases."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

from voicerouter.config.secrets import redact
from voicerouter.errors import VoiceRouterError
from voicerouter.session.expectations import Check

SUITE = "voicerouter replay"


def junit_xml(checks: list[Check], *, suite: str = SUITE, time_s: float | None = None) -> str:
    """One <testcase> per check (classname = file, name = expectation), failures with messages."""
    failures = sum(1 for c in checks if not c.passed)
    root = ET.Element("testsuites", name=suite, tests=str(len(checks)), failures=str(failures), errors="0")
    attrs = {"name": suite, "tests": str(len(checks)), "failures": str(failures), "errors": "0", "skipped": "0"}
    if time_s is not None:
        attrs["time"] = f"{time_s:.3f}"
        root.set("time", attrs["time"])
    suite_el = ET.SubElement(root, "testsuite", attrs)
    for check in checks:
        case = ET.SubElement(suite_el, "testcase", classname=check.file, name=check.name)
        if not check.passed:
            message = redact(check.message) or "expectation not met"
            failure = ET.SubElement(case, "failure", message=message, type="ExpectationFailed")
            failure.text = message
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def write_junit(path: str | os.PathLike[str], checks: list[Check], *, time_s: float | None = None) -> Path:
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(junit_xml(checks, time_s=time_s), encoding="utf-8")
    except OSError as exc:
        raise VoiceRouterError(
            f"{p}: cannot write the JUnit report ({exc.strerror or exc})", hint="check that the directory is writable"
        ) from None
    return p
