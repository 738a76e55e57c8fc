"""A real Prometheus scrapes a real exporter process and sees the callbacks."""

from __future__ import annotations

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
