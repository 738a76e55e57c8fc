"""The command line, run as users run it: in a subprocess."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from exporter import __version__

from .conftest import in_flight

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


# --- graceful stop -----------------------------------------------------------------------

def call_body(sid: str) -> bytes:
    return f"CallSid={sid}&CallStatus=completed&Direction=inbound&SequenceNumber=1".encode()


def post_head(path: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()


def answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP response from ``sock``: status, headers (lowercase names), body."""
    response = http.client.HTTPResponse(sock)
    response.begin()
    body = response.read()
    headers = {name.lower(): value for name, value in response.getheaders()}
    response.close()  # closes its reader, not the socket
    return response.status, headers, body


def exchange(sock: socket.socket, request: bytes) -> tuple[int, dict[str, str], bytes]:
    sock.sendall(request)
    return answer(sock)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scraped_value(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[1])
    raise AssertionError(f"{series} not in the scrape")


COMPLETED = 'signalwire_calls_total{direction="inbound",status="completed"}'
STOPPING = 'signalwire_exporter_callbacks_total{endpoint="voice",outcome="stopping"}'


def test_sigterm_answers_every_request_received_and_waits_for_the_final_scrape(
        exporter_process: Any) -> None:
    # The bound is far above anything this test waits, so the exit can only come from
    # the scrape.
    exporter = exporter_process("shutdown:\n  final_scrape_timeout_seconds: 600\n")
    path = "/callbacks/voice"
    sockets = [socket.create_connection(("127.0.0.1", exporter.port), timeout=15)
               for _ in range(12)]
    try:
        # Keep-alive connections that have already carried a callback each.
        for n, sock in enumerate(sockets):
            body = call_body(f"before-{n}")
            status, headers, _ = exchange(sock, post_head(path, body) + body)
            assert status == 200 and headers.get("connection") != "close"
        idle = sockets[:6]
        # On the other half a second callback is in flight: headers and part of the body.
        busy = [(sock, call_body(f"in-flight-{n}")) for n, sock in enumerate(sockets[6:])]
        for sock, body in busy:
            sock.sendall(post_head(path, body) + body[:10])
        for _ in range(200):  # until every handler waits for the rest of its body
            if in_flight(exporter.url) == len(busy) + 1:  # and this scrape
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the callbacks never got in flight")
        exporter.proc.send_signal(signal.SIGTERM)
        for _ in range(200):  # until the replica leaves the load balancer's rotation
            if get(f"{exporter.url}/healthz") == (503, "stopping"):
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"/healthz never said stopping\n{exporter.log()}")

        # Every request already received gets its answer: the callbacks in flight count...
        for sock, body in busy:
            sock.sendall(body[10:])
            status, headers, _ = answer(sock)
            assert status == 200
            assert headers["connection"] == "close"  # come back on a new connection
        # ...new callbacks, on the open keep-alive connections or new ones, are refused.
        for sock in idle:
            body = call_body("after")
            status, headers, text = exchange(sock, post_head(path, body) + body)
            assert status == 503 and headers["connection"] == "close"
            assert "stopping" in json.loads(text)["error"]
        refused = urllib.request.Request(f"{exporter.url}{path}", data=call_body("after"),
                                         method="POST")
        assert get_status(refused) == 503
        assert exporter.proc.poll() is None, "exited before the last counts were scraped"

        status, text = get(f"{exporter.url}/metrics")
        assert status == 200
        assert scraped_value(text, COMPLETED) == 18  # 12 before SIGTERM, 6 in flight
        assert scraped_value(text, STOPPING) == len(idle) + 1
        assert exporter.proc.wait(60) == 0
    finally:
        for sock in sockets:
            sock.close()
    log = exporter.log()
    assert "serving /metrics until the last counts are scraped" in log
    assert "Traceback" not in log


def get_status(request: urllib.request.Request) -> int:
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_sigterm_gives_up_waiting_for_a_scrape_after_the_timeout(exporter_process: Any) -> None:
    exporter = exporter_process("shutdown:\n  final_scrape_timeout_seconds: 0.5\n")
    request = urllib.request.Request(f"{exporter.url}/callbacks/voice",
                                     data=call_body("unscraped"), method="POST")
    assert get_status(request) == 200
    assert exporter.stop() == 0
    assert "no scrape within" in exporter.log()


def test_a_second_signal_stops_the_wait_for_the_scrape(exporter_process: Any) -> None:
    # Ctrl-C twice at a terminal, with nothing scraping: no 30 s wait.
    exporter = exporter_process("shutdown:\n  final_scrape_timeout_seconds: 600\n")
    request = urllib.request.Request(f"{exporter.url}/callbacks/voice",
                                     data=call_body("unscraped"), method="POST")
    assert get_status(request) == 200
    exporter.proc.send_signal(signal.SIGINT)
    for _ in range(200):
        if "serving /metrics until" in exporter.log():
            break
        time.sleep(0.05)
    exporter.proc.send_signal(signal.SIGINT)
    assert exporter.proc.wait(60) == 0
    assert "a second signal; the counts since the last scrape are lost" in exporter.log()


def test_sigterm_exits_at_once_when_every_callback_was_scraped(exporter_process: Any) -> None:
    exporter = exporter_process("shutdown:\n  final_scrape_timeout_seconds: 600\n")
    request = urllib.request.Request(f"{exporter.url}/callbacks/voice",
                                     data=call_body("scraped"), method="POST")
    assert get_status(request) == 200
    assert scraped_value(get(f"{exporter.url}/metrics")[1], COMPLETED) == 1
    assert exporter.stop() == 0


def test_sigterm_with_the_redis_backend_needs_no_final_scrape(exporter_process: Any,
                                                              redis_url: str) -> None:
    # The counts are in Redis, not in the process: it stops at once, and a replica
    # started afterwards on the same Redis serves them.
    state = (f"state:\n  backend: redis\n  redis_url: '{redis_url}'\n"
             "shutdown:\n  final_scrape_timeout_seconds: 600\n")
    exporter = exporter_process(state)
    request = urllib.request.Request(f"{exporter.url}/callbacks/voice",
                                     data=call_body("in-redis"), method="POST")
    assert get_status(request) == 200
    exporter.proc.send_signal(signal.SIGTERM)
    assert exporter.proc.wait(60) == 0  # far below the 600 s a scrape wait would allow
    assert "serving /metrics until" not in exporter.log()
    successor = exporter_process(state)
    assert scraped_value(get(f"{successor.url}/metrics")[1], COMPLETED) == 1


# --- newcomer frictions (issue 14) ---------------------------------------------------------

def at_a_terminal(*args: str, keys: list[bytes]) -> tuple[int, str]:
    """Run the exporter on a pseudo-terminal (its controlling tty, as getpass wants),
    typing each of ``keys`` after the next prompt; (exit code, everything it printed)."""
    import os
    import pty
    import select
    import time

    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.chdir(ROOT)
        os.execv(sys.executable, [sys.executable, "-m", "exporter", *args])
    output = b""
    deadline = time.monotonic() + 30
    pending = list(keys)
    answered = 0  # output up to here has had its prompt answered
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the child is gone
                break
            if not chunk:
                break
            output += chunk
            if pending and output[answered:].rstrip().endswith(b":"):
                time.sleep(0.1)  # let getpass finish turning echo off (it flushes input)
                os.write(fd, pending.pop(0))
                answered = len(output)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace")


def test_hash_password_asks_twice_at_a_terminal() -> None:
    import bcrypt

    code, out = at_a_terminal("hash-password", keys=[b"s3cret pass\n", b"s3cret pass\n"])
    assert code == 0, out
    assert "Again" in out
    hashed = out.strip().splitlines()[-1].strip()
    assert bcrypt.checkpw(b"s3cret pass", hashed.encode())
    code, out = at_a_terminal("hash-password", keys=[b"one\n", b"two\n"])
    assert code == 1 and "differ" in out and "$2" not in out


def test_hash_password_ctrl_d_and_ctrl_c_end_without_a_traceback() -> None:
    for key in (b"\x04", b"\x03"):
        code, out = at_a_terminal("hash-password", keys=[key])
        assert code == 1, out
        assert "Traceback" not in out and "no password" in out


def test_an_address_in_use_is_one_line_and_exit_1(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("--listen-address", f"127.0.0.1:{port}")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [errors[0]] and f"127.0.0.1:{port}" in errors[0]
    assert "Traceback" not in result.stderr


def test_an_address_the_machine_lacks_is_one_line_and_exit_1() -> None:
    result = cli("--listen-address", "192.0.2.1:9880")  # TEST-NET-1: never this machine's
    assert result.returncode == 1
    assert "error: cannot listen on 192.0.2.1:9880" in result.stderr
    assert "Traceback" not in result.stderr
