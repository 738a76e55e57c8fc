"""The shipped rules and Alertmanager example, run by the real Prometheus and Alertmanager."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import ROOT, require_tool
from .servers import Alertmanager, Prometheus, Service
from .test_prometheus import post_form

RULES = ROOT / "alerts" / "signalwire-exporter.rules.yml"
AM_EXAMPLE = ROOT / "alerts" / "alertmanager.example.yml"


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_tool("amtool"), *args], capture_output=True, text=True,
                          timeout=30)


def test_alertmanager_example_passes_amtool() -> None:
    result = amtool("check-config", str(AM_EXAMPLE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(("severity", "receiver"), [
    ("critical", "sms"), ("warning", "sms"), ("info", "none")])
def test_alertmanager_example_routes_by_severity(severity: str, receiver: str) -> None:
    result = amtool("config", "routes", "test", f"--config.file={AM_EXAMPLE}",
                    "alertname=SignalWireCallFailuresHigh", f"severity={severity}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == receiver


def test_alertmanager_example_groups_by_alert_name_and_sends_to_the_relay() -> None:
    config = yaml.safe_load(AM_EXAMPLE.read_text())
    assert config["route"]["group_by"] == ["alertname"]
    (sms,) = [r for r in config["receivers"] if r["name"] == "sms"]
    (webhook,) = sms["webhook_configs"]
    assert webhook["url"].endswith(":9880/alerts/sms")
    assert webhook["http_config"]["authorization"]["type"] == "Bearer"
    assert "sms.webhook_token" in AM_EXAMPLE.read_text()


class Receiver:
    """A webhook receiver on 127.0.0.1 that records each POST's headers and JSON body."""

    def __init__(self) -> None:
        received: list[tuple[dict[str, str], Any]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received.append((dict(self.headers.items()), json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.received = received
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts/sms"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


def test_alertmanager_sends_critical_alerts_with_the_bearer_token(
        tmp_path: Path, receiver: Receiver, services: list[Service]) -> None:
    """The example config, with only the relay address and token file swapped for local ones."""
    token = tmp_path / "sms-webhook-token"
    token.write_text("s3cret-relay-token\n")
    config = yaml.safe_load(AM_EXAMPLE.read_text())
    (sms,) = [r for r in config["receivers"] if r["name"] == "sms"]
    sms["webhook_configs"][0]["url"] = receiver.url
    sms["webhook_configs"][0]["http_config"]["authorization"]["credentials_file"] = str(token)
    alertmanager = Alertmanager(tmp_path, config)
    services.append(alertmanager)
    alert = [{"labels": {"alertname": "SignalWireCallFailuresHigh", "severity": "critical",
                         "job": "signalwire-exporter"},
              "annotations": {"summary": "Many SignalWire calls failed"}}]
    request = urllib.request.Request(
        f"{alertmanager.url}/api/v2/alerts", data=json.dumps(alert).encode(), method="POST",
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
    deadline = time.monotonic() + 40  # the critical route's group_wait is 10s
    while not receiver.received and time.monotonic() < deadline:
        time.sleep(0.2)
    assert receiver.received, alertmanager.log()
    headers, body = receiver.received[0]
    assert headers["Authorization"] == "Bearer s3cret-relay-token"
    assert body["groupLabels"] == {"alertname": "SignalWireCallFailuresHigh"}
    assert body["alerts"][0]["labels"]["severity"] == "critical"


def firing(prometheus: Prometheus, alertname: str) -> list[dict[str, Any]]:
    return prometheus.wait_for(
        f'ALERTS{{alertname="{alertname}", alertstate="firing"}}', bool, timeout=40)


def test_prometheus_runs_the_rules_on_the_real_exporter(
        tmp_path: Path, exporter_process: Any, services: list[Service]) -> None:
    """Metric names, labels and `le` values in the rules match what the exporter serves."""
    exporter = exporter_process()
    prometheus = Prometheus(tmp_path, [exporter.url.removeprefix("http://")], [RULES])
    services.append(prometheus)
    prometheus.wait_scraped()
    # Two samples of the zero-valued series before the first event, so rate() sees it.
    prometheus.wait_for('count_over_time(signalwire_calls_total{status="failed",'
                        'direction="outbound-api"}[1m]) >= 2', bool)
    voice = f"{exporter.url}/callbacks/voice"
    for i, (status, mos) in enumerate((("completed", "3.0"), ("completed", "4.3"),
                                       ("failed", ""), ("busy", ""))):
        assert post_form(voice, f"CallSid=c{i}&CallStatus={status}&Direction=outbound-api"
                                f"&SequenceNumber=1&CallDuration=30&AudioInMos={mos}") == 200
    request = urllib.request.Request(voice, data=b"CallStatus=completed", method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    with pytest.raises(urllib.error.HTTPError) as rejected:
        urllib.request.urlopen(request, timeout=5)
    assert rejected.value.code == 400

    (alert,) = firing(prometheus, "SignalWireCallbacksRejected")
    assert {k: alert["metric"][k] for k in ("job", "endpoint", "outcome", "severity")} == {
        "job": "signalwire-exporter", "endpoint": "voice", "outcome": "invalid",
        "severity": "warning"}
    for record, expected in (("signalwire:call_failure_ratio:5m", 0.5),
                             ("signalwire:call_answer_seizure_ratio:5m", 0.5),
                             ("signalwire:call_mos_below_3_5:ratio5m", 0.5)):
        (sample,) = prometheus.wait_for(
            f'{record}{{job="signalwire-exporter", direction="outbound-api"}}', bool)
        assert float(sample["value"][1]) == pytest.approx(expected), record
    # Directions without traffic have no ratio sample at all (not NaN).
    assert prometheus.query('signalwire:call_failure_ratio:5m{direction="inbound"}') == []
