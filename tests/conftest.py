"""Shared fixtures: a real exporter app on a loopback port, and helpers to read it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from exporter.app import EXPORTER, create_app
from exporter.config import Config, parse_config

ClientFactory = Callable[..., Awaitable[TestClient]]
ROOT = Path(__file__).resolve().parent.parent


# The Debian package that brings each tool the tests run, for the skip message.
APT_PACKAGES = {"promtool": "prometheus", "prometheus": "prometheus",
                "amtool": "prometheus-alertmanager",
                "prometheus-alertmanager": "prometheus-alertmanager",
                "redis-server": "redis-server", "wrk": "wrk", "docker-compose": "docker-compose",
                "curl": "curl", "node": "nodejs", "valgrind": "valgrind"}


def require_tool(name: str) -> str:
    """Path of an external tool; skip if absent, but fail in CI (it must be installed)."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("SIGNALWIRE_EXPORTER_REQUIRE_TOOLS"):
            pytest.fail(f"{name} is required here but not installed")
        package = APT_PACKAGES.get(name)
        pytest.skip(f"{name} not installed" + (f" (apt-get install {package})" if package else ""))
    return path


def make_config(overrides: Mapping[str, Any] | None = None) -> Config:
    return parse_config(dict(overrides or {}), environ={})


@pytest.fixture
async def exporter_client(aiohttp_client: Any) -> ClientFactory:
    """Start a real exporter app on 127.0.0.1 with config built from ``overrides``."""

    async def start(overrides: Mapping[str, Any] | None = None) -> TestClient:
        return await aiohttp_client(create_app(make_config(overrides)))

    return start


@pytest.fixture
async def client(exporter_client: ClientFactory) -> TestClient:
    return await exporter_client()


def sample(client: TestClient, name: str, **labels: str) -> float:
    """Value of one series in the app's own registry (0 when it does not exist)."""
    value = client.app[EXPORTER].registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics and parse it back with prometheus_client's own parser."""
    response = await client.get("/metrics")
    assert response.status == 200
    text = await response.text()
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            values[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return values


def series(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_ready(proc: Any, url: str, log: Callable[[], str], timeout: float, *,
                     name: str, context: Any = None) -> None:
    """Poll ``url`` until it answers 200; fail early, with the log, if ``proc`` exits."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited:\n{log()}")
        try:
            with urllib.request.urlopen(url, timeout=1, context=context) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{name} not ready after {timeout}s:\n{log()}")


def in_flight(url: str) -> float:
    """The exporter's in-flight gauge, this scrape included."""
    import urllib.request

    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("signalwire_exporter_http_requests_in_flight "):
                return float(line.split()[1])
    raise AssertionError("no in-flight gauge")


class ExporterProcess:
    """The exporter as users run it: ``python -m exporter`` in its own process."""

    def __init__(self, tmp_path: Any, config_text: str = "", *args: str,
                 scheme: str = "http") -> None:
        import ssl
        import sys

        self.port = free_port()
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        # https in tests means a self-signed certificate: trust it without checks
        self.ssl_context = ssl._create_unverified_context() if scheme == "https" else None
        config = tmp_path / f"exporter-{self.port}.yaml"
        config.write_text(config_text)
        self.log_path = tmp_path / f"exporter-{self.port}.log"
        self.argv = [sys.executable, "-m", "exporter", "--config", str(config),
                     "--listen-address", f"127.0.0.1:{self.port}", *args]
        self.launch()

    def launch(self) -> None:
        """Start the process: first, or again after ``kill`` (same port, config and log)."""
        import subprocess

        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT,
                                     cwd=ROOT)
        self.wait_ready()

    def kill(self) -> None:
        """SIGKILL: a crash (nothing flushed, no answer to requests in flight)."""
        self.proc.kill()
        self.proc.wait()
        self._log.close()

    def wait_ready(self, timeout: float = 15.0) -> None:
        wait_until_ready(self.proc, f"{self.url}/healthz", self.log, timeout,
                         name="exporter", context=self.ssl_context)

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 15.0) -> int:
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self._log.close()
        return code


@pytest.fixture
def exporter_process(tmp_path: Any) -> Any:
    started: list[ExporterProcess] = []

    def start(config_text: str = "", *args: str, scheme: str = "http") -> ExporterProcess:
        process = ExporterProcess(tmp_path, config_text, *args, scheme=scheme)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One real redis-server (tests/servers.py) for the whole session, on a loopback port."""
    from .servers import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: Any) -> str:
    """URL of the session's Redis, emptied for this test: ``redis://127.0.0.1:N/0``."""
    redis_server.flush()
    return str(redis_server.url)


@pytest.fixture
def services() -> Any:
    """Server processes (tests/servers.py) a test starts; all stopped at its end."""
    started: list[Any] = []
    yield started
    for service in reversed(started):
        service.stop()
