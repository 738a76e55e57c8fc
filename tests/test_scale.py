"""Several exporter processes, one Prometheus: `sum by` gives the exact total.

What bench/README.md says about running replicas, shown with real processes: calls
spread over two exporters add up exactly once Prometheus sums over instances, and
a retried delivery is deduplicated only when it reaches the replica that saw it
first (so routing must be sticky by CallSid).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .servers import Prometheus, Service
from .test_prometheus import post_form


def final_callback(url: str, sid: str, status: str) -> int:
    return post_form(f"{url}/callbacks/voice",
                     f"CallSid={sid}&CallStatus={status}&Direction=inbound&SequenceNumber=3")


def test_two_replicas_sum_to_the_exact_total(tmp_path: Path, exporter_process: Any,
                                             services: list[Service]) -> None:
    replicas = [exporter_process(), exporter_process()]
    prometheus = Prometheus(tmp_path, [r.url.removeprefix("http://") for r in replicas])
    services.append(prometheus)
    statuses = ("completed", "failed", "busy")
    for i in range(30):  # spread as a round-robin load balancer would
        assert final_callback(replicas[i % 2].url, f"call-{i}", statuses[i % 3]) == 200
    # a retry that reaches the same replica again is counted once ...
    assert final_callback(replicas[0].url, "call-0", "completed") == 200
    result = prometheus.wait_for(
        'sum by (status) (signalwire_calls_total{job="signalwire-exporter"})',
        lambda r: sum(float(s["value"][1]) for s in r) == 30)
    assert {s["metric"]["status"]: float(s["value"][1]) for s in result} == {
        "completed": 10, "failed": 10, "busy": 10, "canceled": 0, "no-answer": 0}
    per_instance = prometheus.query(
        'sum by (instance) (signalwire_calls_total{job="signalwire-exporter"})')
    assert sorted(float(s["value"][1]) for s in per_instance) == [15, 15]

    # ... but a retry that reaches the other replica is counted again: it has never
    # seen that CallSid. This is why replicas need routing sticky by CallSid.
    assert final_callback(replicas[1].url, "call-0", "completed") == 200
    prometheus.wait_for(
        'sum(signalwire_calls_total{job="signalwire-exporter"})',
        lambda r: bool(r) and float(r[0]["value"][1]) == 31)
