"""The benchmark, in one command: ``python3 bench/run.py`` (``--smoke`` for a quick pass).

Phases (see bench/README.md for what each figure means and the latest results):
1. throughput: the exporter (signatures on), a bare aiohttp app (the ceiling) and the
   floor (bench/floor.py: decode, signature and one counter, the least a Python handler
   must do), each pinned to one core and loaded in turn by wrk on the other core,
   alternating; then the exporter at a fixed 2,000 requests/s from an open-loop client
   for its p99 latency; 1c. the instructions one request costs each of them (valgrind),
   which, unlike time, other processes on the machine do not move;
2. the seed example's way (Flask + pandas) after 10,000 calls, loaded the same way;
3. resident memory of the call tracker over one million calls, uncapped and at its cap;
4. time to render /metrics with every status x direction series and histogram populated;
5. the cost of each pure pipeline stage (bench/stages.py), steady on a busy machine;
6. the redis backend (state.backend: redis, a redis-server the bench starts) against the
   memory backend: exporter and Redis CPU per callback, requests/s, p99 at the fixed
   rate, Redis memory per tracked call, and two replicas on one Redis against one.
Figures are printed and written to bench/results/latest.json (or --out).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector  # noqa: E402
from prometheus_client.exposition import generate_latest  # noqa: E402
from prometheus_client.openmetrics.exposition import (  # noqa: E402
    generate_latest as generate_openmetrics,
)

from bench.workload import SIGNING_KEY, calls, write_bodies  # noqa: E402
from exporter.app import EXPORTER, create_app  # noqa: E402
from exporter.config import parse_config  # noqa: E402
from exporter.payloads import parse_call_event  # noqa: E402


@dataclass(frozen=True)
class Settings:
    seconds: float  # each wrk run
    connections: int
    rounds: int  # exporter/bare alternations
    bodies: int  # distinct signed callbacks per exporter round
    fixed_rate: float
    fixed_seconds: float
    seed_preload: int
    seed_seconds: float
    memory_calls: int
    memory_cap: int
    render_iterations: int
    instruction_requests: tuple[int, int]  # (small, large): bench/instructions.py
    instruction_servers: tuple[str, ...]
    redis_extras: bool  # phase 6: a warm-up, and the redis backend without hiredis too
    redis_bodies: int  # phase 6: distinct signed callbacks per server for all its runs


FULL = Settings(seconds=5, connections=32, rounds=2, bodies=40_000, fixed_rate=2000,
                fixed_seconds=5, seed_preload=10_000, seed_seconds=10, memory_calls=1_000_000,
                memory_cap=100_000, render_iterations=200,
                instruction_requests=(300, 1300), instruction_servers=("exporter", "floor", "bare"),
                redis_extras=True, redis_bodies=150_000)
SMOKE = Settings(seconds=1, connections=8, rounds=1, bodies=12_000, fixed_rate=500,
                 fixed_seconds=1, seed_preload=1_000, seed_seconds=1, memory_calls=20_000,
                 memory_cap=5_000, render_iterations=10,
                 instruction_requests=(5, 25), instruction_servers=("exporter",),
                 redis_extras=False, redis_bodies=3_000)


def cores() -> tuple[set[int] | None, set[int] | None]:
    """(server core, load-generator core), or no pinning on a one-core machine."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return None, None
    return {available[0]}, {available[1]}


SERVER_CORE, LOAD_CORE = cores()


def pinned(core: set[int] | None) -> Callable[[], None] | None:
    """A preexec_fn that pins the child (and the threads it will start) to ``core``."""
    if core is None:
        return None
    return lambda: os.sched_setaffinity(0, core)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A server process pinned to the server core, ready once /healthz answers."""

    def __init__(self, name: str, argv: list[str], port: int, workdir: Path,
                 cwd: Path = ROOT, core: set[int] | None = SERVER_CORE,
                 env: dict[str, str] | None = None) -> None:
        self.name, self.port = name, port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = workdir / f"{name}.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                         preexec_fn=pinned(core),
                                         env={**os.environ, **env} if env else None)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{name} not ready:\n{self.log_path.read_text()[-3000:]}")

    def get(self, path: str) -> str:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return str(response.read().decode())

    def cpu_seconds(self) -> float:
        """User + system CPU time the server has used: unlike wall time, not inflated
        when other processes share its core."""
        with open(f"/proc/{self.proc.pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def server_argv(name: str, port: int, workdir: Path,
                state: dict[str, Any] | None = None) -> list[str]:
    """How to start ``name`` (exporter, before, floor or bare) on ``port``.

    The exporter runs with signatures on and events not logged; ``state`` is its
    ``state`` section (the memory backend without it).
    """
    if name in ("floor", "bare"):
        return [sys.executable, str(BENCH / f"{name}.py"), str(port)]
    config = workdir / f"{name}-{port}.yaml"
    config.write_text(json.dumps({
        "listen": f"127.0.0.1:{port}",
        "signature": {"signing_keys": [SIGNING_KEY],
                      "public_base_url": f"http://127.0.0.1:{port}"},
        "logging": {"level": "warning"},
        **({"state": state} if state else {}),
    }))
    return [sys.executable, "-m", "exporter", "--config", str(config)]


def start_server(workdir: Path, name: str, checkout: Path = ROOT,
                 state: dict[str, Any] | None = None, core: set[int] | None = SERVER_CORE,
                 env: dict[str, str] | None = None) -> Server:
    port = free_port()
    return Server(name, server_argv(name, port, workdir, state), port, workdir, cwd=checkout,
                  core=core, env=env)


def wrk(server: Server, bodies: Path, seconds: float, connections: int,
        core: set[int] | None = LOAD_CORE, first: int = 0) -> dict[str, Any]:
    """Saturating load from wrk on the load core; requests/s and latency percentiles.

    The bodies are sent from line ``first`` on (0-based).
    """
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "60s",
            "-s", str(BENCH / "load.lua"), server.url + "/callbacks/voice", "--", str(bodies),
            str(first)]
    cpu_before = server.cpu_seconds()
    out = subprocess.run(argv, capture_output=True, text=True, check=True,
                         preexec_fn=pinned(core), timeout=seconds + 90).stdout
    cpu = server.cpu_seconds() - cpu_before
    raw = json.loads(out.strip().splitlines()[-1])
    seconds_run = raw["duration_us"] / 1e6
    return {"server": server.name, "requests": raw["requests"],
            "rps": raw["requests"] / seconds_run,
            "cpu_us_per_request": cpu / raw["requests"] * 1e6 if raw["requests"] else None,
            "p50_ms": raw["p50_us"] / 1000,
            "p99_ms": raw["p99_us"] / 1000, "non_2xx": raw["non_2xx"],
            "socket_errors": raw["socket_errors"]}


def callback_outcomes(server: Server) -> dict[str, float]:
    """signalwire_exporter_callbacks_total by outcome, from the exporter's own /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(server.get("/metrics")):
        for s in family.samples:
            if s.name == "signalwire_exporter_callbacks_total" and s.value:
                totals[s.labels["outcome"]] = totals.get(s.labels["outcome"], 0) + s.value
    return totals


def fixed_rate(server: Server, bodies: Path, rate: float, seconds: float) -> dict[str, Any]:
    argv = [sys.executable, str(BENCH / "fixed_rate.py"), "127.0.0.1", str(server.port),
            str(bodies), str(rate), str(seconds)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True,
                         preexec_fn=pinned(LOAD_CORE), timeout=seconds + 60).stdout
    result: dict[str, Any] = json.loads(out)
    return result


def phase_throughput(s: Settings, workdir: Path, before: Path | None,
                     log: Callable[[str], None]) -> dict[str, Any]:
    exporter = start_server(workdir, "exporter")
    servers = [exporter]
    if before is not None:
        servers.append(start_server(workdir, "before", before))
    # the floor and the ceiling: not exporters, no /metrics to read
    reference = {name: start_server(workdir, name) for name in ("floor", "bare")}
    servers.extend(reference.values())
    bare = reference["bare"]
    try:
        rounds: list[dict[str, Any]] = []
        # Warm-up (not reported): first requests pay for imports and caches. Every
        # server's bodies are signed for its own URL.
        warm_outcomes = {}
        for server in servers:
            wrk(server, write_bodies(workdir / "warm.txt", server.url, 2000, seed=1000), 1,
                s.connections)
            if server.name not in reference:
                warm_outcomes[server.name] = callback_outcomes(server)
        for r in range(s.rounds):
            for server in servers:
                bodies = write_bodies(workdir / f"round{r}.txt", server.url, s.bodies, seed=r)
                result = wrk(server, bodies, s.seconds, s.connections)
                result["round"] = r
                rounds.append(result)
                log(f"  round {r} {server.name:8s} {result['rps']:9.0f} req/s  "
                    f"{result['cpu_us_per_request']:6.0f} us CPU/req  "
                    f"p50 {result['p50_ms']:.2f} ms  p99 {result['p99_ms']:.2f} ms")
        outcomes = {server.name: {k: v - warm_outcomes[server.name].get(k, 0)
                                  for k, v in callback_outcomes(server).items()
                                  if v - warm_outcomes[server.name].get(k, 0)}
                    for server in servers if server.name not in reference}
        fixed_bodies = write_bodies(workdir / "fixed.txt", exporter.url,
                                    int(s.fixed_rate * s.fixed_seconds), seed=500)
        # The bare app at the same rate: latency the machine itself adds (scheduling,
        # other processes on the core, the client), which no exporter change removes.
        fixed = fixed_rate(exporter, fixed_bodies, s.fixed_rate, s.fixed_seconds)
        fixed_bare = fixed_rate(bare, fixed_bodies, s.fixed_rate, s.fixed_seconds)
        for name, f in (("exporter", fixed), ("bare", fixed_bare)):
            log(f"  {name:8s} at a fixed {f['target_rps']:.0f} req/s: achieved "
                f"{f['achieved_rps']:.0f}, p50 {f['p50_ms']:.2f} ms  p99 {f['p99_ms']:.2f} ms  "
                f"errors {f['errors']}")
    finally:
        for server in servers:
            server.stop()
    rps = {server.name: statistics.mean(r["rps"] for r in rounds if r["server"] == server.name)
           for server in servers}
    cpu = {server.name: statistics.mean(r["cpu_us_per_request"] for r in rounds
                                        if r["server"] == server.name) for server in servers}
    result = {"rounds": rounds, "exporter_rps": rps["exporter"], "bare_rps": rps["bare"],
              "floor_rps": rps["floor"],
              "ratio_exporter_bare": rps["exporter"] / rps["bare"],
              "ratio_floor_bare": rps["floor"] / rps["bare"],
              "ratio_exporter_floor": rps["exporter"] / rps["floor"],
              "exporter_cpu_us_per_request": cpu["exporter"],
              "bare_cpu_us_per_request": cpu["bare"],
              "floor_cpu_us_per_request": cpu["floor"],
              "ratio_cpu_bare_exporter": cpu["bare"] / cpu["exporter"],
              "callback_outcomes": outcomes, "fixed_rate": fixed,
              "fixed_rate_bare": fixed_bare}
    if before is not None:
        result.update(before_rps=rps["before"], before_cpu_us_per_request=cpu["before"],
                      ratio_exporter_before=rps["exporter"] / rps["before"],
                      ratio_cpu_before_exporter=cpu["before"] / cpu["exporter"])
    return result


class RedisServer:
    """A throw-away redis-server on a free loopback port: no persistence, no other client."""

    def __init__(self, workdir: Path, core: set[int] | None) -> None:
        import redis

        self.port = free_port()
        self.log_path = workdir / "redis.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port),
                 "--save", "", "--appendonly", "no", "--dir", str(workdir)],
                stdout=log, stderr=subprocess.STDOUT, preexec_fn=pinned(core))
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=10)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                return
            except redis.RedisError as error:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"redis-server not ready:\n{self.log_path.read_text()}") from error
                time.sleep(0.05)

    def cpu_seconds(self) -> float:
        """Redis's own user + system CPU time, as it reports it (``INFO cpu``)."""
        info = self.client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def used_memory(self) -> int:
        return int(self.client.info("memory")["used_memory"])

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)


def unpin(pid: int) -> None:
    """Let every thread of ``pid`` run on any core (undoes ``pinned``)."""
    every = os.sched_getaffinity(0)
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(tid), every)


def sample_total(server: Server, name: str) -> float:
    """The sum of every sample called ``name`` in the server's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(sample.value for family in text_string_to_metric_families(server.get("/metrics"))
               for sample in family.samples if sample.name == name)


def hiredis_available() -> bool:
    import redis.utils

    return bool(redis.utils.HIREDIS_AVAILABLE)


def without_hiredis(workdir: Path) -> dict[str, str]:
    """An environment in which ``import hiredis`` fails, so redis-py parses in Python:
    the same as ``pip uninstall hiredis``, without touching the installed packages."""
    shadow = workdir / "no-hiredis"
    shadow.mkdir(exist_ok=True)
    (shadow / "hiredis.py").write_text("raise ImportError('hidden by bench/run.py')\n")
    path = os.pathsep.join(p for p in (str(shadow), os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": path}


def phase_redis(s: Settings, workdir: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """The redis backend beside the memory backend, loaded the same way in the same run.

    The exporters take the server core in turn, as in phase 1; Redis runs on the load
    core beside wrk, so that its CPU does not count as the exporter's (each process's CPU
    time is read apart: the exporter's from /proc, Redis's from ``INFO cpu``). Then the
    redis-backed exporter at the fixed rate, Redis's memory per tracked call, and two
    replicas on the same Redis against one, with nothing pinned.
    """
    from concurrent.futures import ThreadPoolExecutor

    redis_server = RedisServer(workdir, LOAD_CORE)
    baseline_memory = redis_server.used_memory()
    version = str(redis_server.client.info("server")["redis_version"])

    def state(prefix: str) -> dict[str, Any]:
        return {"backend": "redis", "redis_url": redis_server.url, "key_prefix": prefix}

    # name -> (state section, environment); without hiredis only in the full run
    variants: dict[str, tuple[dict[str, Any] | None, dict[str, str] | None]] = {
        "memory": (None, None), "redis": (state("bench-redis:"), None)}
    hiredis = hiredis_available()
    if hiredis and s.redis_extras:
        variants["redis-no-hiredis"] = (state("bench-no-hiredis:"), without_hiredis(workdir))
    starts = {name: (state_, env) for name, (state_, env) in variants.items()}
    starts["replica-b"] = (state("bench-redis:"), None)  # the pair: joins "redis" later
    servers: dict[str, Server] = {}
    try:
        with ThreadPoolExecutor(max_workers=len(starts)) as pool:
            futures = {name: pool.submit(start_server, workdir, name, state=state_, env=env,
                                         core=None if name == "replica-b" else SERVER_CORE)
                       for name, (state_, env) in starts.items()}
            for name, future in futures.items():
                servers[name] = future.result()
        names = list(variants)
        # One file of calls per server, each run going on where the last stopped: new
        # calls every run (the redis variants share what they tracked), and one signing
        # pass per server (signing is most of the smoke run's time otherwise).
        bodies = {name: write_bodies(workdir / f"redis-{name}.txt", server.url,
                                     s.redis_bodies, seed=2000 + i)
                  for i, (name, server) in enumerate(servers.items())}
        sent = dict.fromkeys(servers, 0)

        def load(server: Server, seconds: float, connections: int,
                 core: set[int] | None = LOAD_CORE) -> dict[str, Any]:
            result = wrk(server, bodies[server.name], seconds, connections, core,
                         first=sent[server.name] % s.redis_bodies)
            # wrk stops with up to one request per connection sent but not answered
            sent[server.name] += result["requests"] + connections
            return result

        if s.redis_extras:
            for name in names:
                load(servers[name], 1, s.connections)
        outcomes_before = {name: callback_outcomes(servers[name]) for name in names}
        rounds: list[dict[str, Any]] = []
        for r in range(s.rounds):
            for name in names:
                redis_before = redis_server.cpu_seconds()
                result = load(servers[name], s.seconds, s.connections)
                redis_cpu = redis_server.cpu_seconds() - redis_before
                result.update(round=r, redis_cpu_us_per_request=redis_cpu / result["requests"]
                              * 1e6 if result["requests"] else None)
                rounds.append(result)
                log(f"  round {r} {name:16s} {result['rps']:7.0f} req/s  exporter "
                    f"{result['cpu_us_per_request']:5.0f} us CPU/req, Redis "
                    f"{result['redis_cpu_us_per_request']:4.0f} us CPU/req  "
                    f"p99 {result['p99_ms']:.2f} ms")
        outcomes = {name: {k: v - outcomes_before[name].get(k, 0)
                           for k, v in callback_outcomes(servers[name]).items()
                           if v - outcomes_before[name].get(k, 0)} for name in names}

        def mean(name: str, key: str) -> float:
            return statistics.mean(r[key] for r in rounds if r["server"] == name)

        figures: dict[str, Any] = {}
        for name in names:
            figures[name] = {"rps": mean(name, "rps"),
                             "exporter_cpu_us_per_request": mean(name, "cpu_us_per_request"),
                             "redis_cpu_us_per_request": mean(name, "redis_cpu_us_per_request")}
        memory, redis_ = figures["memory"], figures["redis"]
        # requests per CPU-second, redis/memory: the exporter's CPU alone, and with
        # Redis's own CPU added (what the callbacks cost the machine in all)
        ratio_exporter = (memory["exporter_cpu_us_per_request"]
                          / redis_["exporter_cpu_us_per_request"])
        ratio_total = memory["exporter_cpu_us_per_request"] / (
            redis_["exporter_cpu_us_per_request"] + redis_["redis_cpu_us_per_request"])
        log(f"  requests per CPU-second, redis/memory: {ratio_exporter:.2f} (exporter CPU "
            f"only), {ratio_total:.2f} (exporter + Redis CPU); requests/s "
            f"{redis_['rps'] / memory['rps']:.2f}")
        result: dict[str, Any] = {
            "rounds": rounds, "callback_outcomes": outcomes, "backends": figures,
            "ratio_cpu_redis_memory": ratio_exporter,
            "ratio_cpu_with_redis_redis_memory": ratio_total,
            "ratio_rps_redis_memory": redis_["rps"] / memory["rps"],
            "hiredis_installed": hiredis, "redis_version": version}
        if "redis-no-hiredis" in figures:
            result["ratio_cpu_hiredis_without"] = (
                figures["redis-no-hiredis"]["exporter_cpu_us_per_request"]
                / redis_["exporter_cpu_us_per_request"])
            log(f"  CPU per request without hiredis / with: "
                f"{result['ratio_cpu_hiredis_without']:.2f}")

        # the fixed rate, the memory backend first as this run's baseline: on a machine
        # where it misses the p99 target too, the target measures the machine
        for name, key in (("memory", "fixed_rate_memory"), ("redis", "fixed_rate")):
            fixed_bodies = write_bodies(workdir / f"{name}-fixed.txt", servers[name].url,
                                        int(s.fixed_rate * s.fixed_seconds), seed=2500)
            fixed = fixed_rate(servers[name], fixed_bodies, s.fixed_rate, s.fixed_seconds)
            result[key] = fixed
            log(f"  {name} backend at a fixed {fixed['target_rps']:.0f} req/s: achieved "
                f"{fixed['achieved_rps']:.0f}, p50 {fixed['p50_ms']:.2f} ms  "
                f"p99 {fixed['p99_ms']:.2f} ms  errors {fixed['errors']}")

        # Redis's memory per tracked call: everything the runs left, over the calls kept
        tracked = sum(int(redis_server.client.zcard(f"{state_['key_prefix']}calls"))
                      for state_, _ in variants.values() if state_)
        used = redis_server.used_memory() - baseline_memory
        sample = list(redis_server.client.scan_iter("bench-redis:c:*", count=1000))[:200]
        per_key = (statistics.mean(int(redis_server.client.memory_usage(key, samples=0) or 0)
                                   for key in sample) if sample else None)
        result["redis_memory"] = {"tracked_calls": tracked, "used_memory_bytes": used,
                                  "bytes_per_tracked_call": used / tracked if tracked else None,
                                  "call_hash_bytes": per_key}
        log(f"  Redis memory: {tracked} tracked calls, {used / 2**20:.1f} MiB over the empty "
            f"server: {used / max(tracked, 1):.0f} B per tracked call (the call's hash alone: "
            f"{per_key or 0:.0f} B, MEMORY USAGE)")

        # One replica, then two on the same Redis, each loaded by its own wrk; nothing
        # pinned: on two cores this shows what a second process adds on this machine, and
        # that the pair counts every call once, not how replicas scale on more cores.
        pair = [servers["redis"], servers["replica-b"]]
        unpin(pair[0].proc.pid)
        unpin(redis_server.proc.pid)

        def cluster_run(members: list[Server]) -> dict[str, Any]:
            calls_before = sample_total(members[0], "signalwire_calls_total")
            accepted_before = sum(callback_outcomes(m).get("accepted", 0) for m in members)
            cpu_before = [m.cpu_seconds() for m in members]
            redis_before = redis_server.cpu_seconds()
            with ThreadPoolExecutor(max_workers=len(members)) as pool:
                runs = list(pool.map(lambda m: load(m, s.seconds, s.connections, None),
                                     members))
            exporter_cpu = sum(m.cpu_seconds() - c for m, c in zip(members, cpu_before,
                                                                   strict=True))
            redis_cpu = redis_server.cpu_seconds() - redis_before
            requests = sum(r["requests"] for r in runs)
            # wrk stops with requests in flight: wait until the replicas have answered
            # them (two equal readings in a row; bounded) before comparing the counts
            accepted = -1.0
            for _ in range(50):
                now_accepted = sum(callback_outcomes(m).get("accepted", 0)
                                   for m in members) - accepted_before
                if now_accepted == accepted:
                    break
                accepted = now_accepted
                time.sleep(0.1)
            # the cluster-wide count, read from each member: all must agree
            counted = [sample_total(m, "signalwire_calls_total") - calls_before
                       for m in members]
            return {"replicas": len(members), "requests": requests, "accepted": accepted,
                    "rps": sum(r["rps"] for r in runs),
                    "exporter_cpu_us_per_request": exporter_cpu / requests * 1e6,
                    "redis_cpu_us_per_request": redis_cpu / requests * 1e6,
                    "non_2xx": sum(r["non_2xx"] for r in runs),
                    "socket_errors": sum(r["socket_errors"] for r in runs),
                    "calls_counted_cluster_wide": counted,
                    "p99_ms": max(r["p99_ms"] for r in runs)}

        one = cluster_run(pair[:1])
        two = cluster_run(pair)
        for run in (one, two):
            log(f"  {run['replicas']} replica(s): {run['rps']:7.0f} req/s  exporter "
                f"{run['exporter_cpu_us_per_request']:4.0f} + Redis "
                f"{run['redis_cpu_us_per_request']:3.0f} us CPU/req; "
                f"{run['accepted']} accepted, counted cluster-wide "
                f"{', '.join(f'{c:.0f}' for c in run['calls_counted_cluster_wide'])}")
        result.update(one_replica=one, two_replicas=two,
                      ratio_rps_two_one=two["rps"] / one["rps"])
        log(f"  two replicas / one: {result['ratio_rps_two_one']:.2f} in requests/s "
            f"({os.cpu_count()} cores for both replicas, Redis and the two wrk)")
    finally:
        for server in servers.values():
            server.stop()
        redis_server.stop()
    return result


def phase_seed(s: Settings, workdir: Path, exporter_rps: float,
               log: Callable[[str], None]) -> dict[str, Any]:
    port = free_port()
    seed_dir = workdir / "seed"
    seed_dir.mkdir()
    server = Server("seed-baseline", [sys.executable, str(BENCH / "seed_baseline.py"), str(port),
                                      "--preload", str(s.seed_preload), "--workdir",
                                      str(seed_dir)], port, workdir)
    try:
        bodies = write_bodies(workdir / "seed.txt", server.url, 2000, seed=700)
        result = wrk(server, bodies, s.seed_seconds, 1)
    finally:
        server.stop()
    log(f"  seed-style baseline after {s.seed_preload} calls: {result['rps']:.1f} req/s  "
        f"p50 {result['p50_ms']:.1f} ms  p99 {result['p99_ms']:.1f} ms")
    return {**result, "calls_before": s.seed_preload,
            "ratio_exporter_seed": exporter_rps / result["rps"] if result["rps"] else None}


def phase_instructions(s: Settings, workdir: Path, before: Path | None,
                       log: Callable[[str], None]) -> dict[str, Any] | None:
    """Instructions per request of each server under callgrind: load-independent."""
    from concurrent.futures import ThreadPoolExecutor

    from bench.instructions import per_request

    if shutil.which("valgrind") is None:
        log("  skipped: valgrind is not installed (apt-get install valgrind)")
        return None
    small, large = s.instruction_requests
    names = list(s.instruction_servers) + (["before"] if before is not None else [])

    def count(name: str) -> float:
        port = free_port()
        bodies = write_bodies(workdir / f"instructions-{name}.txt", f"http://127.0.0.1:{port}",
                              large, seed=800)
        return per_request(server_argv(name, port, workdir), port, bodies, workdir,
                           small=small, large=large,
                           cwd=before if name == "before" and before else ROOT)

    # One server per core at a time: counts do not depend on what runs beside them.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        counts = dict(zip(names, pool.map(count, names), strict=True))
    result: dict[str, Any] = {f"{name}_per_request": n for name, n in counts.items()}
    for name in names:
        log(f"  {name:8s} {counts[name]:10,.0f} instructions per request")
    if "bare" in counts and "floor" in counts:
        result.update(ratio_bare_exporter=counts["bare"] / counts["exporter"],
                      ratio_floor_exporter=counts["floor"] / counts["exporter"],
                      ratio_bare_floor=counts["bare"] / counts["floor"])
        log(f"  bare/exporter = {result['ratio_bare_exporter']:.2f}, "
            f"floor/exporter = {result['ratio_floor_exporter']:.2f}, "
            f"bare/floor = {result['ratio_bare_floor']:.2f} (in instructions)")
    if "before" in counts:
        result["ratio_before_exporter"] = counts["before"] / counts["exporter"]
        log(f"  before/exporter = {result['ratio_before_exporter']:.2f} (in instructions)")
    return result


# glibc's default lets freed large blocks (old dict tables) stay in the heap; with a
# fixed mmap threshold they go back to the OS. Measured both ways: see bench/README.
MMAP_THRESHOLD = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def phase_memory(s: Settings, before: Path | None,
                 log: Callable[[str], None]) -> dict[str, Any]:
    def run(calls: int, cap: int, env: dict[str, str] | None = None) -> dict[str, Any]:
        out = subprocess.run([sys.executable, str(BENCH / "memory.py"), str(calls), str(cap)],
                             capture_output=True, text=True, check=True, timeout=900,
                             env={**os.environ, **(env or {})}).stdout
        result: dict[str, Any] = json.loads(out)
        return result

    results = {"uncapped": run(s.memory_calls, s.memory_calls),
               "capped": run(s.memory_calls, s.memory_cap),
               "capped_mmap_threshold": run(s.memory_calls, s.memory_cap, MMAP_THRESHOLD)}
    if before is not None:
        results["before_uncapped"] = run(s.memory_calls, s.memory_calls,
                                         {"BENCH_EXPORTER_ROOT": str(before)})
    mib = 1024 * 1024
    for name, m in results.items():
        log(f"  {name:22s}: {m['calls']} calls, {m['tracked']} tracked: RSS "
            f"{m['rss_before_bytes'] / mib:.1f} -> {m['rss_after_bytes'] / mib:.1f} MiB, "
            f"{m['bytes_per_tracked_call']:.0f} B per tracked call")
    return results


def phase_render(s: Settings, log: Callable[[str], None]) -> dict[str, Any]:
    """Render a registry like the one ``signalwire-exporter`` serves, fully populated."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    app = create_app(parse_config({}, environ={}), registry)
    exporter = app[EXPORTER]
    stream = calls(seed=900)
    for i in range(20_000):
        event = parse_call_event(dict(next(stream)), "voice" if i % 4 else "inbound")
        decision, _ = exporter.store.calls.track(event, float(i))
        exporter.metrics.record_call(event, decision)
    text = generate_latest(registry)
    series = sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))

    def timed(render: Callable[[CollectorRegistry], bytes]) -> list[float]:
        times = []
        for _ in range(s.render_iterations):
            start = time.perf_counter()
            render(registry)
            times.append((time.perf_counter() - start) * 1000)
        return sorted(times)

    text_ms, om_ms = timed(generate_latest), timed(generate_openmetrics)
    result = {"series": series, "bytes": len(text),
              "text_median_ms": statistics.median(text_ms), "text_max_ms": text_ms[-1],
              "openmetrics_median_ms": statistics.median(om_ms), "openmetrics_max_ms": om_ms[-1]}
    log(f"  {series} series, {len(text)} bytes: text {result['text_median_ms']:.2f} ms "
        f"(max {result['text_max_ms']:.2f}), OpenMetrics {result['openmetrics_median_ms']:.2f} "
        f"ms (max {result['openmetrics_max_ms']:.2f})")
    return result


def phase_stages(log: Callable[[str], None]) -> dict[str, float]:
    from bench.stages import measure

    result = measure()
    log("  " + ", ".join(f"{name} {us:.1f}" for name, us in result.items()) + " (us)")
    return result


def machine() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "aiohttp": aiohttp.__version__,
            "prometheus_client": importlib.metadata.version("prometheus-client"),
            "server_core": sorted(SERVER_CORE) if SERVER_CORE else None,
            "load_core": sorted(LOAD_CORE) if LOAD_CORE else None}


def run_local_phases(s: Settings, before: Path | None, results: dict[str, Any],
                     log: Callable[[str], None]) -> None:
    """Phases 1 to 5: everything but the redis backend."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        workdir = Path(tmp)
        log("1. throughput (wrk, saturating) and latency at a fixed rate")
        results["throughput"] = phase_throughput(s, workdir, before, log)
        t = results["throughput"]
        log(f"  exporter/bare = {t['ratio_exporter_bare']:.2f} in requests/s, "
            f"{t['ratio_cpu_bare_exporter']:.2f} in CPU per request (bare/exporter); "
            f"floor/bare = {t['ratio_floor_bare']:.2f}, "
            f"exporter/floor = {t['ratio_exporter_floor']:.2f}")
        if before:
            log(f"  exporter/before = {t['ratio_exporter_before']:.2f} in requests/s, "
                f"{t['ratio_cpu_before_exporter']:.2f} in CPU per request (before/exporter)")
        log("1c. instructions per request (valgrind callgrind; independent of the machine's load)")
        results["instructions"] = phase_instructions(s, workdir, before, log)
        log("2. seed-style baseline (Flask + pandas)")
        results["seed_baseline"] = phase_seed(s, workdir, t["exporter_rps"], log)
        log(f"  exporter/seed-style = {results['seed_baseline']['ratio_exporter_seed']:.0f}")
    log("3. call tracker memory")
    results["memory"] = phase_memory(s, before, log)
    log("4. /metrics render time")
    results["render"] = phase_render(s, log)
    log("5. cost of each pipeline stage per callback (best of 5, no HTTP)")
    results["stages"] = phase_stages(log)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true",
                        help="a second or so per phase: checks the benchmark runs, not speed")
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "latest.json")
    parser.add_argument("--before", type=Path, metavar="CHECKOUT",
                        help="another checkout of the exporter to load alongside, for "
                             "before/after ratios (e.g. git archive main | tar -x -C DIR)")
    parser.add_argument("--only", choices=("redis",),
                        help="run one phase alone (redis: phase 6, its memory backend "
                             "beside it as always)")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    s = SMOKE if args.smoke else FULL

    def log(line: str) -> None:
        print(line, flush=True)

    results: dict[str, Any] = {"mode": "smoke" if args.smoke else "full",
                               "machine": machine(), "settings": asdict(s)}
    if args.only is None:
        run_local_phases(s, args.before, results, log)
    if shutil.which("redis-server") is None:
        log("6. skipped: redis-server is not installed (apt-get install redis-server)")
        results["redis"] = None
    else:
        with tempfile.TemporaryDirectory(prefix="bench-redis-") as tmp:
            log("6. the redis backend against the memory backend; two replicas on one Redis")
            started = time.monotonic()
            results["redis"] = phase_redis(s, Path(tmp), log)
            results["redis"]["seconds"] = time.monotonic() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    log(f"written to {args.out}")
    problems = check(results)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


def check(results: dict[str, Any]) -> list[str]:
    """Things that would make the figures meaningless (not targets: those are in README)."""
    problems = []
    t = results.get("throughput", {"rounds": [], "callback_outcomes": {}})
    for r in t["rounds"]:
        if r["non_2xx"] or r["socket_errors"]:
            problems.append(f"{r['server']} round {r['round']}: {r['non_2xx']} non-2xx, "
                            f"{r['socket_errors']} socket errors")
    for name, outcomes in t["callback_outcomes"].items():
        bad = {k: v for k, v in outcomes.items() if k != "accepted"}
        if bad:  # a duplicate means Settings.bodies is too small for the rate; others, a bug
            problems.append(f"{name} answered other than 'accepted': {bad}")
    for name in ("fixed_rate", "fixed_rate_bare"):
        if name in t and t[name]["errors"]:
            problems.append(f"{name} run: {t[name]['errors']} errors")
    r = results.get("redis")
    if r:
        runs = [*r["rounds"], r["one_replica"], r["two_replicas"]]
        for run in runs:
            if run["non_2xx"] or run["socket_errors"]:
                problems.append(f"redis phase: {run['non_2xx']} non-2xx, "
                                f"{run['socket_errors']} socket errors")
        for name, outcomes in r["callback_outcomes"].items():
            bad = {k: v for k, v in outcomes.items() if k != "accepted"}
            # in the smoke run the few bodies may wrap around: duplicates are expected
            if results["mode"] == "smoke":
                bad.pop("duplicate", None)
            if bad:
                problems.append(f"redis phase: {name} answered other than 'accepted': {bad}")
        for key in ("fixed_rate", "fixed_rate_memory"):
            if r[key]["errors"]:
                problems.append(f"redis phase, {key} run: {r[key]['errors']} errors")
        for run in (r["one_replica"], r["two_replicas"]):
            # every answered call counted once cluster-wide, the same on every replica
            # (wrk stops with requests in flight: those are counted but not answered)
            # every call a replica accepted counted once cluster-wide, as every replica
            # reads it
            counted = run["calls_counted_cluster_wide"]
            if set(counted) != {run["accepted"]}:
                problems.append(f"redis phase, {run['replicas']} replica(s): "
                                f"{run['accepted']} accepted, counted {counted}")
    return problems


if __name__ == "__main__":
    sys.exit(main())
