"""CPU instructions per request of a server, counted by valgrind (callgrind).

Wall-clock and CPU-time figures move with whatever else the machine runs; instruction
counts do not (the same code, inputs and environment give the same count). So this
phase counts what one callback costs each server: the server runs under
``valgrind --tool=callgrind``, takes ``small`` and then, in a second run, ``large``
signed callbacks one after another over one keep-alive connection, and the difference
of the two totals divided by ``large - small`` is the cost of one request, start-up and
shutdown cancelled out. Instructions are not time (a cache miss costs more than an
add), but a change that removes instructions removes work.

Needs valgrind (``apt-get install valgrind``); bench/run.py skips the phase without it.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

PATH = "/callbacks/voice"
# Hash randomisation changes dict layouts from run to run, and with them the count.
ENVIRONMENT = {"PYTHONHASHSEED": "0"}


def send(port: int, bodies: Path, count: int, timeout: float) -> None:
    """``count`` callbacks from ``bodies``, in order, each answered 200 before the next."""
    deadline = time.monotonic() + timeout
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        with bodies.open() as lines:
            for i, line in zip(range(count), lines, strict=False):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{count} requests took over {timeout} s")
                sig, body = line.rstrip("\n").split(" ", 1)
                conn.request("POST", PATH, body=body, headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    "X-SignalWire-Signature": sig})
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    raise RuntimeError(f"answer {response.status} to request {i}")
    finally:
        conn.close()


def total(argv: list[str], port: int, bodies: Path, count: int, workdir: Path,
          preexec: Callable[[], None] | None, cwd: Path, timeout: float) -> int:
    """Instructions of one whole run of the server (start, ``count`` requests, stop)."""
    log = workdir / f"callgrind-{port}-{count}.log"
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
         f"--log-file={log}", *argv],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd,
        env={**os.environ, **ENVIRONMENT}, preexec_fn=preexec)
    try:
        wait_ready(port, proc, timeout)
        send(port, bodies, count, timeout)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    found = re.search(r"Collected : (\d+)", log.read_text())
    if found is None:
        raise RuntimeError(f"no instruction count in {log}")
    return int(found[1])


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited under valgrind")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            conn.close()
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"server on port {port} not ready under valgrind")


def per_request(argv: list[str], port: int, bodies: Path, workdir: Path, *, small: int,
                large: int, preexec: Callable[[], None] | None = None, cwd: Path = Path("."),
                timeout: float = 600) -> float:
    """Instructions one callback costs the server: (total(large) - total(small)) / difference."""
    counts = [total(argv, port, bodies, n, workdir, preexec, cwd, timeout)
              for n in (small, large)]
    return (counts[1] - counts[0]) / (large - small)
