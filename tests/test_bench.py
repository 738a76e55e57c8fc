"""The benchmark cannot rot: its quick mode runs every phase and writes every figure.

Only that it runs is checked here; what the figures are is bench/README.md's business
(timings never go in a test assertion).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT, require_tool

FIGURES = {
    "throughput": ["exporter_rps", "bare_rps", "floor_rps", "ratio_exporter_bare",
                   "ratio_floor_bare", "ratio_exporter_floor",
                   "exporter_cpu_us_per_request", "bare_cpu_us_per_request",
                   "floor_cpu_us_per_request"],
    "seed_baseline": ["rps", "p50_ms", "p99_ms", "ratio_exporter_seed"],
    "render": ["series", "text_median_ms", "openmetrics_median_ms"],
    "stages": ["decode_form", "verify_signature", "parse_call_event", "track", "record_call",
               "total"],
}


def test_smoke_run_writes_every_figure(tmp_path: Path) -> None:
    require_tool("wrk")
    out = tmp_path / "latest.json"
    done = subprocess.run([sys.executable, "bench/run.py", "--smoke", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(out.read_text())
    for phase, names in FIGURES.items():
        for name in names:
            assert isinstance(results[phase][name], int | float), (phase, name)
    for round_ in results["throughput"]["rounds"]:
        assert round_["requests"] > 0 and round_["non_2xx"] == 0
    assert results["throughput"]["callback_outcomes"]["exporter"].get("accepted", 0) > 0
    fixed = results["throughput"]["fixed_rate"]
    assert fixed["completed"] > 0 and fixed["errors"] == 0
    for run in ("uncapped", "capped", "capped_mmap_threshold"):
        memory = results["memory"][run]
        assert memory["tracked"] == min(memory["calls"], memory["cap"])
        assert isinstance(memory["bytes_per_tracked_call"], float)
    for key in ("nproc", "cpu", "python"):
        assert results["machine"][key]
    # The instruction count needs valgrind: skipped without it, except in CI (.ci/run
    # installs it), where a missing valgrind fails here.
    if shutil.which("valgrind") or os.environ.get("SIGNALWIRE_EXPORTER_REQUIRE_TOOLS"):
        assert results["instructions"]["exporter_per_request"] > 0
    else:
        assert results["instructions"] is None
    # Phase 6 starts its own redis-server: the same rule.
    if shutil.which("redis-server") or os.environ.get("SIGNALWIRE_EXPORTER_REQUIRE_TOOLS"):
        redis = results["redis"]
        for backend in ("memory", "redis"):
            for name in ("rps", "exporter_cpu_us_per_request", "redis_cpu_us_per_request"):
                assert isinstance(redis["backends"][backend][name], float), (backend, name)
        assert redis["ratio_cpu_redis_memory"] > 0
        assert redis["ratio_cpu_with_redis_redis_memory"] > 0
        assert redis["fixed_rate"]["completed"] > 0 and redis["fixed_rate"]["errors"] == 0
        assert redis["redis_memory"]["tracked_calls"] > 0
        # the pair counted every call either replica accepted once, as both replicas read it
        for run, replicas in (("one_replica", 1), ("two_replicas", 2)):
            pair = redis[run]
            assert pair["accepted"] > 0
            assert pair["calls_counted_cluster_wide"] == [pair["accepted"]] * replicas
    else:
        assert results["redis"] is None


def test_compiled_floor_experiment_still_imports() -> None:
    """bench/compiled_floor.py (a one-off, minutes long) reuses run.py's pieces: keep them."""
    from bench import compiled_floor

    assert callable(compiled_floor.main) and callable(compiled_floor.serve)
