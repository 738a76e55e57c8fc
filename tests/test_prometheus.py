"""A real Prometheus scrapes a real exporter process and sees the callbacks."""

from __future__ import annotations

import signal
import urllib.request
from pathlib import Path
from typing import Any

from .servers import Prometheus, Service


def post_form(url: str, body: str) -> int:
    request = urllib.request.Request(url, data=body.encode(), method="POST", headers={
        "Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status


def test_prometheus_scrapes_call_counts(tmp_path: Path, exporter_process: Any,
                                        services: list[Service]) -> None:
    exporter = exporter_process()
    prometheus = Prometheus(tmp_path, [exporter.url.removeprefix("http://")])
    services.append(prometheus)
    prometheus.wait_scraped()
    for i in range(3):
        for seq, status in enumerate(("ringing", "failed")):
            assert post_form(f"{exporter.url}/callbacks/voice",
                             f"CallSid=c{i}&CallStatus={status}&Direction=outbound-api"
                             f"&SequenceNumber={seq}") == 200
    result = prometheus.wait_for(
        'sum by (status) (signalwire_calls_total{job="signalwire-exporter"}) > 0',
        lambda r: bool(r) and r[0]["value"][1] == "3")
    assert result[0]["metric"] == {"status": "failed"}


def test_the_last_callbacks_before_sigterm_reach_prometheus(
        tmp_path: Path, exporter_process: Any, services: list[Service]) -> None:
    # Memory backend: the counts exist only in the process, so after SIGTERM it serves
    # /metrics until Prometheus has scraped them, then exits 0 (bound far above this test).
    exporter = exporter_process("shutdown:\n  final_scrape_timeout_seconds: 600\n")
    prometheus = Prometheus(tmp_path, [exporter.url.removeprefix("http://")])
    services.append(prometheus)
    prometheus.wait_scraped()
    for i in range(20):
        assert post_form(f"{exporter.url}/callbacks/voice",
                         f"CallSid=last-{i}&CallStatus=completed&Direction=inbound"
                         "&SequenceNumber=1") == 200
    exporter.proc.send_signal(signal.SIGTERM)
    assert exporter.proc.wait(120) == 0
    assert "no scrape came" not in exporter.log()
    prometheus.wait_for(
        'max_over_time(signalwire_calls_total{job="signalwire-exporter",'
        'status="completed",direction="inbound"}[10m])',
        lambda r: bool(r) and r[0]["value"][1] == "20")


def test_prometheus_stores_the_callsid_of_a_failed_call_as_an_exemplar(
        tmp_path: Path, exporter_process: Any, services: list[Service]) -> None:
    exporter = exporter_process()
    prometheus = Prometheus(tmp_path, [exporter.url.removeprefix("http://")])
    services.append(prometheus)
    prometheus.wait_scraped()
    assert post_form(f"{exporter.url}/callbacks/voice",
                     "CallSid=prom-ex-1&CallStatus=failed&Direction=outbound-api") == 200
    found = prometheus.wait_for(
        'signalwire_calls_total{job="signalwire-exporter",status="failed"}',
        lambda r: any(e["labels"] == {"call_sid": "prom-ex-1"} for s in r
                      for e in s["exemplars"]), exemplars=True)
    (entry,) = found
    assert entry["seriesLabels"]["direction"] == "outbound-api"
    assert {e["value"] for e in entry["exemplars"]} == {"1"}
    # an exemplar is no label: no series carries the CallSid
    assert not prometheus.query('{job="signalwire-exporter", call_sid!=""}')
