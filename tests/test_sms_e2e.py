"""End to end: failed calls → Prometheus rule → Alertmanager → exporter relay → SMS API.

Every part is the real one (exporter process, Prometheus, Alertmanager, the rule file
from ``python -m exporter rules``) except the SignalWire API, which is the local
stand-in of tests/fake_signalwire.py checking path, basic auth and form fields.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import ROOT
from .fake_signalwire import FROM, FakeSignalWire, fake_api
from .servers import Alertmanager, Prometheus, Service
from .test_prometheus import post_form

__all__ = ["fake_api"]

TO = ["+15551234567", "+15559876543"]
FAILED_CALLS = 4


def wait_for_messages(api: FakeSignalWire, count: int, timeout: float, why: str) -> None:
    deadline = time.monotonic() + timeout
    while len(api.messages) < count and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(api.messages) >= count, f"no SMS reached the API: {why()}"


def wait_for_metric(url: str, line: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
            if line in response.read().decode().splitlines():
                return
        time.sleep(0.2)
    raise AssertionError(f"never scraped: {line}")


@pytest.mark.parametrize("pair", [False, True], ids=["one-alertmanager", "ha-pair"])
def test_failed_calls_page_by_sms(tmp_path: Path, exporter_process: Any,
                                  services: list[Service], fake_api: FakeSignalWire,
                                  pair: bool) -> None:
    # With `pair`, two Alertmanagers both get the alert and both notify (clustering off:
    # what an HA pair does when its gossip fails); each recipient still gets one SMS.
    config = {
        "sms": fake_api.sms_config(TO, retry_initial_delay_seconds=0.1),
        # The old threshold with a short window, so the test runs in seconds.
        "alerts": {"call_failures_high": {"window": "1m", "threshold": FAILED_CALLS - 1,
                                          "pending_for": "0s"}},
    }
    config_path = tmp_path / "e2e.yaml"
    config_path.write_text(yaml.safe_dump(config))
    rules = tmp_path / "rules.yml"
    subprocess.run([sys.executable, "-m", "exporter", "rules", "--config", str(config_path),
                    "--output", str(rules)], cwd=ROOT, check=True, timeout=30)

    exporter = exporter_process(config_path.read_text())
    token = tmp_path / "sms-webhook-token"
    token.write_text("hook-secret\n")
    # The shape of alerts/alertmanager.example.yml, with short waits.
    alertmanagers = []
    for n in range(2 if pair else 1):
        (tmp_path / f"am{n}").mkdir()
        alertmanager = Alertmanager(tmp_path / f"am{n}", {
            "route": {"receiver": "sms", "group_by": ["alertname"], "group_wait": "1s",
                      "group_interval": "1s", "repeat_interval": "1h"},
            "receivers": [{"name": "sms", "webhook_configs": [{
                "url": f"{exporter.url}/alerts/sms", "send_resolved": False,
                "http_config": {"authorization": {"type": "Bearer",
                                                  "credentials_file": str(token)}}}]}],
        })
        services.append(alertmanager)
        alertmanagers.append(alertmanager)
    prometheus = Prometheus(tmp_path, [exporter.url.removeprefix("http://")], [rules],
                            alertmanager=[am.url for am in alertmanagers])
    services.append(prometheus)
    prometheus.wait_scraped()
    # Two samples of the zero-valued series before the first event, so increase() sees it.
    prometheus.wait_for('count_over_time(signalwire_calls_total{status="failed",'
                        'direction="outbound-api"}[1m]) >= 2', bool)

    for i in range(FAILED_CALLS):
        for seq, status in enumerate(("ringing", "failed")):
            assert post_form(f"{exporter.url}/callbacks/voice",
                             f"CallSid=e2e-{i}&CallStatus={status}&Direction=outbound-api"
                             f"&From=%2B15550002222&To=%2B15550003333"
                             f"&SequenceNumber={seq}") == 200

    wait_for_messages(fake_api, len(TO), 45, lambda: (
        f"refused={fake_api.refused}\nexporter:\n{exporter.log()[-3000:]}\n"
        f"alertmanager:\n{alertmanagers[0].log()}"))
    if pair:  # until the second Alertmanager's notification has come too
        wait_for_metric(exporter.url, 'signalwire_exporter_alert_notifications_total'
                        '{outcome="duplicate"} 1.0', 45)
        assert len(fake_api.messages) == len(TO)
    (alert,) = [a for a in alertmanagers[0].get_json("/api/v2/alerts")
                if a["labels"]["alertname"] == "SignalWireCallFailuresHigh"]
    messages = sorted(fake_api.messages, key=lambda m: m["To"])
    assert [(m["From"], m["To"]) for m in messages] == [(FROM, to) for to in TO]
    body = messages[0]["Body"]
    assert messages[1]["Body"] == body
    # Summary first, then as much of the description (it has the count) as fits.
    head = f"[FIRING:1] SignalWireCallFailuresHigh: {alert['annotations']['summary']}. "
    assert body.startswith(head)
    assert len(body) <= 160
    assert alert["annotations"]["description"].startswith(body[len(head):].removesuffix("..."))
    assert " calls ended failed" in body
    assert fake_api.refused == []

    metrics = urllib.request.urlopen(f"{exporter.url}/metrics", timeout=5).read().decode()
    assert 'signalwire_exporter_sms_total{result="sent"}' in metrics
    report = urllib.request.urlopen(f"{exporter.url}/reports/failed-calls?mask=1",
                                    timeout=5).read().decode().splitlines()
    assert [line.split(",")[0] for line in report[1:]] == [
        f"e2e-{i}" for i in range(FAILED_CALLS)]
    log = exporter.log()
    for secret in (fake_api.api_token, "hook-secret", *TO):
        assert secret not in log
