"""The command line, run as users run it: in a subprocess."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from exporter import __version__

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exporter", *args], capture_output=True,
                          text=True, timeout=30, cwd=ROOT, env=env)


def test_version() -> None:
    result = cli("--version")
    assert result.returncode == 0
    assert __version__ in result.stdout


def test_check_config_accepts_the_example() -> None:
    result = cli("check-config", "--config", "config.example.yaml")
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def test_check_config_prints_each_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("listen: nowhere\nlimits:\n  max_body_bytes: 0\nsignature:\n"
                   "  signing_keys: ['${SECRET_THAT_IS_NOT_SET}']\n")
    result = cli("check-config", "--config", str(bad))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3
    assert any("listen:" in line for line in lines)
    assert any("limits.max_body_bytes:" in line for line in lines)


def test_check_config_names_the_file_from_the_environment(tmp_path: Path) -> None:
    # `docker run IMAGE check-config` finds the mounted file through the env var only.
    import os

    bad = tmp_path / "bad.yaml"
    bad.write_text("listen: nowhere\n")
    result = cli("check-config", env={**os.environ, "SIGNALWIRE_EXPORTER_CONFIG": str(bad)})
    assert result.returncode == 1
    assert "listen:" in result.stderr
    example = str(ROOT / "config.example.yaml")
    result = cli("check-config", env={**os.environ, "SIGNALWIRE_EXPORTER_CONFIG": example})
    assert result.returncode == 0
    assert result.stdout.startswith(f"{ROOT / 'config.example.yaml'}: OK")


def test_bad_flag_value_is_a_usage_error() -> None:
    result = cli("--listen-address", "not-an-address")
    assert result.returncode == 2
    assert "HOST:PORT" in result.stderr


def test_runs_serves_and_stops_cleanly_on_sigterm(exporter_process: Any) -> None:
    exporter = exporter_process("logging:\n  format: json\n", "--log-level", "info")
    request = urllib.request.Request(
        f"{exporter.url}/callbacks/voice", method="POST",
        data=b"CallSid=c1&CallStatus=completed&Direction=inbound&SequenceNumber=1",
        headers={"Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
    with urllib.request.urlopen(f"{exporter.url}/metrics", timeout=5) as response:
        text = response.read().decode()
    assert 'signalwire_calls_total{direction="inbound",status="completed"} 1.0' in text
    assert "process_resident_memory_bytes" in text
    assert exporter.stop() == 0
    log = exporter.log()
    assert '"message": "call status"' in log and '"call_sid": "c1"' in log
    assert "signature checking is OFF" in log


def test_signing_keys_never_logged(exporter_process: Any) -> None:
    exporter = exporter_process("signature:\n  signing_keys: ['PSK_TopSecret123']\n",
                                "--log-level", "debug")
    request = urllib.request.Request(
        f"{exporter.url}/callbacks/voice", method="POST",
        data=b"CallSid=c1&CallStatus=completed",
        headers={"Content-Type": "application/x-www-form-urlencoded",
                 "X-SignalWire-Signature": "forged"})
    try:
        urllib.request.urlopen(request, timeout=5)
    except urllib.error.HTTPError as exc:
        assert exc.code == 403
        assert b"PSK_TopSecret123" not in exc.read()
    with urllib.request.urlopen(f"{exporter.url}/metrics", timeout=5) as response:
        assert b"PSK_TopSecret123" not in response.read()
    assert exporter.stop() == 0
    assert "PSK_TopSecret123" not in exporter.log()
    assert "unauthorized" in exporter.log()
