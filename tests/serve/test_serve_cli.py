"""`serve` and `load` command lines: usage errors and a taken port are one line and exit 2."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from serve_helpers import KEY, SAMPLES, cloud_table


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DG_KEY": KEY, "CA_KEY": KEY}
    return subprocess.run([sys.executable, "-m", "voicerouter", *args], capture_output=True, text=True, timeout=120,
                          env=env)


def test_taken_port_is_a_usage_error(tmp_path):
    routes = tmp_path / "routes.yaml"
    routes.write_text(cloud_table("http://127.0.0.1:9", "http://127.0.0.1:9"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc = run("serve", "--routes", str(routes), "--port", str(taken.getsockname()[1]))
    assert proc.returncode == 2 and "cannot listen on 127.0.0.1" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_flags():
    assert run("serve", "--max-sessions", "0").returncode == 2
    proc = run("load", "ftp://example.com", str(SAMPLES / "hello.wav"))
    assert proc.returncode == 2 and "http(s)://" in proc.stderr
    proc = run("load", "http://127.0.0.1:9", str(SAMPLES / "hello.wav"), "--carrier", "sip")
    assert proc.returncode == 2 and "--carrier" in proc.stderr
