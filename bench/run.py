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
5. the cost of each pure pipeline stage (bench/stages.py), steady on a busy machine.
Figures are printed and written to bench/results/latest.json (or --out).
"""

from __future__ import annotations

import argparse
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


FULL = Settings(seconds=5, connections=32, rounds=2, bodies=40_000, fixed_rate=2000,
                fixed_seconds=5, seed_preload=10_000, seed_seconds=10, memory_calls=1_000_000,
                memory_cap=100_000, render_iterations=200,
                instruction_requests=(300, 1300), instruction_servers=("exporter", "floor", "bare"))
SMOKE = Settings(seconds=1, connections=8, rounds=1, bodies=12_000, fixed_rate=500,
                 fixed_seconds=1, seed_preload=1_000, seed_seconds=1, memory_calls=20_000,
                 memory_cap=5_000, render_iterations=10,
                 instruction_requests=(5, 25), instruction_servers=("exporter",))


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
                 cwd: Path = ROOT) -> None:
        self.name, self.port = name, port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = workdir / f"{name}.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                         preexec_fn=pinned(SERVER_CORE))
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


def server_argv(name: str, port: int, workdir: Path) -> list[str]:
    """How to start ``name`` (exporter, before, floor or bare) on ``port``.

    The exporter runs with signatures on and events not logged.
    """
    if name in ("floor", "bare"):
        return [sys.executable, str(BENCH / f"{name}.py"), str(port)]
    config = workdir / f"{name}-{port}.yaml"
    config.write_text(json.dumps({
        "listen": f"127.0.0.1:{port}",
        "signature": {"signing_keys": [SIGNING_KEY],
                      "public_base_url": f"http://127.0.0.1:{port}"},
        "logging": {"level": "warning"},
    }))
    return [sys.executable, "-m", "exporter", "--config", str(config)]


def start_server(workdir: Path, name: str, checkout: Path = ROOT) -> Server:
    port = free_port()
    return Server(name, server_argv(name, port, workdir), port, workdir, cwd=checkout)


def wrk(server: Server, bodies: Path, seconds: float, connections: int) -> dict[str, Any]:
    """Saturating load from wrk on the load core; requests/s and latency percentiles."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "60s",
            "-s", str(BENCH / "load.lua"), server.url + "/callbacks/voice", "--", str(bodies)]
    cpu_before = server.cpu_seconds()
    out = subprocess.run(argv, capture_output=True, text=True, check=True,
                         preexec_fn=pinned(LOAD_CORE), timeout=seconds + 90).stdout
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true",
                        help="a second or so per phase: checks the benchmark runs, not speed")
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "latest.json")
    parser.add_argument("--before", type=Path, metavar="CHECKOUT",
                        help="another checkout of the exporter to load alongside, for "
                             "before/after ratios (e.g. git archive main | tar -x -C DIR)")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    s = SMOKE if args.smoke else FULL

    def log(line: str) -> None:
        print(line, flush=True)

    results: dict[str, Any] = {"mode": "smoke" if args.smoke else "full",
                               "machine": machine(), "settings": asdict(s)}
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        workdir = Path(tmp)
        log("1. throughput (wrk, saturating) and latency at a fixed rate")
        results["throughput"] = phase_throughput(s, workdir, args.before, log)
        t = results["throughput"]
        log(f"  exporter/bare = {t['ratio_exporter_bare']:.2f} in requests/s, "
            f"{t['ratio_cpu_bare_exporter']:.2f} in CPU per request (bare/exporter); "
            f"floor/bare = {t['ratio_floor_bare']:.2f}, "
            f"exporter/floor = {t['ratio_exporter_floor']:.2f}")
        if args.before:
            log(f"  exporter/before = {t['ratio_exporter_before']:.2f} in requests/s, "
                f"{t['ratio_cpu_before_exporter']:.2f} in CPU per request (before/exporter)")
        log("1c. instructions per request (valgrind callgrind; independent of the machine's load)")
        results["instructions"] = phase_instructions(s, workdir, args.before, log)
        log("2. seed-style baseline (Flask + pandas)")
        results["seed_baseline"] = phase_seed(s, workdir, t["exporter_rps"], log)
        log(f"  exporter/seed-style = {results['seed_baseline']['ratio_exporter_seed']:.0f}")
    log("3. call tracker memory")
    results["memory"] = phase_memory(s, args.before, log)
    log("4. /metrics render time")
    results["render"] = phase_render(s, log)
    log("5. cost of each pipeline stage per callback (best of 5, no HTTP)")
    results["stages"] = phase_stages(log)
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
    t = results["throughput"]
    for r in t["rounds"]:
        if r["non_2xx"] or r["socket_errors"]:
            problems.append(f"{r['server']} round {r['round']}: {r['non_2xx']} non-2xx, "
                            f"{r['socket_errors']} socket errors")
    for name, outcomes in t["callback_outcomes"].items():
        bad = {k: v for k, v in outcomes.items() if k != "accepted"}
        if bad:  # a duplicate means Settings.bodies is too small for the rate; others, a bug
            problems.append(f"{name} answered other than 'accepted': {bad}")
    for name in ("fixed_rate", "fixed_rate_bare"):
        if t[name]["errors"]:
            problems.append(f"{name} run: {t[name]['errors']} errors")
    return problems


if __name__ == "__main__":
    sys.exit(main())
