"""Every README snippet that can run offline runs as written (python and bash blocks), and
`dir(voicerouter)` lists the public API the README names.

Left out, each for a stated reason: lines that need an audio device (`voicerouter run`,
`voicerouter devices`), `source .venv/bin/activate` (the test already runs with this Python's
`bin/` first on PATH), the set-up scripts (`scripts/*.sh` build a virtual environment), servers
that run until Ctrl-C (`voicerouter emulate`), and a block right after
`<!-- readme-test: skip ... -->` (the comment says why).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCK = re.compile(r"(?P<before>[^\n]*)\n```(?P<lang>python|bash)\n(?P<body>.*?)\n```", re.S)
SKIP_LINES = ("voicerouter run", "voicerouter devices", "voicerouter emulate", "source .venv/bin/activate",
              "bash scripts/")


def blocks() -> list:
    text = README.read_text()
    out = []
    for match in BLOCK.finditer(text):
        line = text[: match.start("body")].count("\n") + 1
        skip = "readme-test: skip" in match["before"]
        out.append(pytest.param(match["lang"], match["body"], id=f"README.md:{line}",
                                marks=[pytest.mark.skip(reason=match["before"].strip())] if skip else []))
    return out


def env() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    keep = {k: v for k, v in os.environ.items() if k != "VOICEROUTER_ROUTES"}
    return keep | {"PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "COLUMNS": "120"}


@pytest.mark.parametrize("lang, body", blocks())
def test_readme_snippet_runs_as_written(lang, body, tmp_path):
    if lang == "python" and re.search(r"^def test_", body, re.M):
        # A pytest example: run it with pytest, as a reader would, in the repository.
        test_file = tmp_path / "test_readme_example.py"
        test_file.write_text(body + "\n")
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "voicerouter.testing.pytest_plugin",
                               "-p", "no:cacheprovider", str(test_file), "--rootdir", str(tmp_path)],
                              capture_output=True, text=True, cwd=ROOT, env=env(), timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return
    if lang == "python":
        if "MicSource" in body or "SpeakerSink" in body:
            pytest.skip("needs a microphone and a speaker")
        proc = subprocess.run([sys.executable, "-c", body], capture_output=True, text=True, cwd=ROOT, env=env(),
                              timeout=300)
        assert proc.returncode == 0, proc.stderr
        return
    lines = [line for line in body.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    runnable = [line for line in lines if not any(s in line for s in SKIP_LINES)]
    joined = "\n".join(runnable).replace("\\\n", " ")
    if not joined.strip() or "my-routes.yaml" in joined:
        pytest.skip("nothing here runs offline as written")
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", joined], capture_output=True, text=True, cwd=ROOT,
                          env=env(), timeout=300)
    assert proc.returncode == 0, f"{joined}\n{proc.stdout}\n{proc.stderr}"


def test_dir_lists_the_public_api():
    import voicerouter

    names = set(dir(voicerouter))
    assert {"load_routes", "RouteContext", "replay_files", "builtin_routes", "RoutingTable"} <= names
    assert all(hasattr(voicerouter, n) for n in voicerouter.__all__)
    readme = README.read_text()
    assert all(f"`{n}`" in readme for n in voicerouter.__all__)
    with pytest.raises(AttributeError):
        voicerouter.nothing_here  # noqa: B018
