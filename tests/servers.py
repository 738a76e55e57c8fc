"""Real Prometheus and Alertmanager processes for end-to-end tests, on loopback only.

Each runs from the Debian packages (``prometheus``, ``prometheus-alertmanager``) with
fresh storage in a temp dir and a free 127.0.0.1 port, and is killed when the test ends.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from .conftest import free_port, require_tool, wait_until_ready


def terminate(proc: subprocess.Popen[bytes]) -> None:
    """Stop a server process: SIGTERM, 10 s to finish, then SIGKILL."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Service:
    """A server process that logs to a file and answers a readiness URL."""

    def __init__(self, name: str, argv: list[str], url: str, ready_path: str,
                 workdir: Path) -> None:
        self.name = name
        self.url = url
        self.log_path = workdir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT,
                                     cwd=workdir)
        wait_until_ready(self.proc, url + ready_path, self.log, 30.0, name=name)

    def get_json(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as response:
            return json.load(response)

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        terminate(self.proc)
        self._log.close()


class _PrometheusProject(Service):
    """A Prometheus-project server: its YAML config and storage in ``workdir``, a loopback port."""

    def __init__(self, name: str, binary: str, config: dict[str, Any], storage_flag: str,
                 workdir: Path, *extra_args: str) -> None:
        port = free_port()
        config_path = workdir / f"{name}.yml"
        config_path.write_text(yaml.safe_dump(config))
        super().__init__(name, [
            binary, f"--config.file={config_path}",
            f"{storage_flag}={workdir / f'{name}-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            *extra_args,
        ], f"http://127.0.0.1:{port}", "/-/ready", workdir)


class Prometheus(_PrometheusProject):
    """Prometheus scraping ``targets`` every second and evaluating ``rule_files`` every second,
    keeping exemplars (as deploy/compose.yaml's does)."""

    def __init__(self, workdir: Path, targets: Sequence[str], rule_files: Sequence[Path] = (),
                 alertmanager: str | Sequence[str] | None = None,
                 job: str = "signalwire-exporter") -> None:
        require_tool("promtool")
        binary = require_tool("prometheus")
        config: dict[str, Any] = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": list(targets)}]}],
        }
        if alertmanager:  # one URL, or several (an HA pair: each gets every alert)
            urls = [alertmanager] if isinstance(alertmanager, str) else list(alertmanager)
            config["alerting"] = {"alertmanagers": [{"static_configs": [
                {"targets": [url.removeprefix("http://") for url in urls]}]}]}
        super().__init__("prometheus", binary, config, "--storage.tsdb.path", workdir,
                         "--enable-feature=exemplar-storage")

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": expr}
        if at is not None:
            params["time"] = str(at)
        answer = self.get_json("/api/v1/query", **params)
        if answer.get("status") != "success":
            raise AssertionError(f"query failed: {expr}: {answer}")
        return list(answer["data"]["result"])

    def exemplars(self, expr: str) -> list[dict[str, Any]]:
        """The exemplar query API over the last hour: one entry per series, with its
        ``seriesLabels`` and ``exemplars`` (``labels``, ``value``, ``timestamp``)."""
        now = time.time()
        answer = self.get_json("/api/v1/query_exemplars", query=expr, start=str(now - 3600),
                               end=str(now + 60))
        if answer.get("status") != "success":
            raise AssertionError(f"exemplar query failed: {expr}: {answer}")
        return list(answer["data"] or [])

    def wait_for(self, expr: str, predicate: Callable[[list[dict[str, Any]]], bool],
                 timeout: float = 60.0, *, exemplars: bool = False) -> list[dict[str, Any]]:
        """Poll ``expr`` (its exemplars if ``exemplars``) until ``predicate(result)`` holds;
        bounded by ``timeout``."""
        fetch = self.exemplars if exemplars else self.query
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            result = fetch(expr)
            if predicate(result):
                return result
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting on {expr}; last result {result}\n{self.log()}")

    def wait_scraped(self, job: str = "signalwire-exporter", timeout: float = 30.0) -> None:
        self.wait_for(f'up{{job="{job}"}} == 1', bool, timeout)


class Alertmanager(_PrometheusProject):
    """Alertmanager with ``config`` (a dict), clustering off, on a loopback port."""

    def __init__(self, workdir: Path, config: dict[str, Any]) -> None:
        super().__init__("alertmanager", require_tool("prometheus-alertmanager"), config,
                         "--storage.path", workdir, "--cluster.listen-address=")


class RedisServer:
    """A real ``redis-server`` on a free loopback port, its files in ``workdir``.

    Without ``persistent`` it keeps nothing on disk (``--save '' --appendonly no``); with
    it, every write goes to an append-only file, so ``restart()`` (same port, same
    directory) comes back with the data, as a Redis with persistence does after a crash.
    """

    def __init__(self, workdir: Path, *, persistent: bool = False) -> None:
        self.binary = require_tool("redis-server")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = workdir
        self.persistent = persistent
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"redis-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        """Start (or start again, after ``stop``/``kill``) on the same port and directory."""
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--dir", str(self.workdir),
                "--appendonly", "yes" if self.persistent else "no",
                "--appendfsync", "always", "--logfile", str(self.log_path)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                     cwd=self.workdir)
        self._wait_ready(30.0)

    def _wait_ready(self, timeout: float) -> None:
        """PING until PONG (a Redis loading its append-only file answers LOADING)."""
        import redis

        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited:\n{self.log()}")
            try:
                with redis.Redis(port=self.port, socket_timeout=1) as client:
                    if client.ping():
                        return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server not ready after {timeout}s:\n{self.log()}")

    def client(self, db: int = 0) -> Any:
        """A synchronous client (redis-py) for the test's own checks."""
        import redis

        return redis.Redis(port=self.port, db=db, socket_timeout=5)

    def flush(self) -> None:
        with self.client() as client:
            client.flushall()

    def log(self) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-4000:]

    def kill(self) -> None:
        """SIGKILL: what a crash does (with ``persistent`` the written data survives)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        """SIGTERM (Redis finishes its writes), bounded, then SIGKILL."""
        if self.proc is not None:
            terminate(self.proc)

    def restart(self) -> None:
        self.stop()
        self.start()
