"""Metric hygiene: a real scrape through real promtool, bounded labels, HELP everywhere."""

from __future__ import annotations

import subprocess
import urllib.request
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.parser import text_string_to_metric_families

from exporter.config import BucketsConfig
from exporter.metrics import (
    SIP_CODES,
    ExporterMetrics,
    PlainCounter,
    PlainHistogram,
    PlainSeries,
    StatusMetrics,
    sip_labels,
)
from exporter.payloads import message_error_label

from .conftest import require_tool


def send(url: str, body: bytes) -> int:
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status


def scraped_metrics(url: str) -> bytes:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        return bytes(response.read())


def check_with_promtool(promtool: str, scraped: bytes) -> None:
    """``promtool check metrics`` passes and prints nothing (no lint warnings either)."""
    result = subprocess.run([promtool, "check", "metrics"], input=scraped,
                            capture_output=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == b"" and result.stderr == b""


def test_promtool_check_metrics_on_a_real_scrape_prints_nothing(exporter_process: Any) -> None:
    promtool = require_tool("promtool")
    exporter = exporter_process()
    url = f"{exporter.url}/callbacks/voice"
    for seq, status in enumerate(("initiated", "ringing", "in-progress", "completed")):
        body = (f"CallSid=c1&CallStatus={status}&Direction=outbound-api&SequenceNumber={seq}"
                "&Timestamp=Thu%2C+09+Nov+2023+17%3A05%3A0" + str(seq) + "+%2B0000"
                "&CallDuration=61&AudioInMos=3.9&SipResultCode=200&AudioInJitterMaxVariance=4"
                "&AudioInMediaPacketCount=100&AudioInSkipPacketCount=1").encode()
        assert send(url, body) == 200
    check_with_promtool(promtool, scraped_metrics(exporter.url))
    assert exporter.stop() == 0


def test_every_family_has_help_and_counters_end_in_total() -> None:
    registry = CollectorRegistry()
    ExporterMetrics(registry, BucketsConfig(), lambda: 0)
    StatusMetrics(registry, BucketsConfig(), {"message": lambda: 0})
    from prometheus_client import generate_latest

    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        assert family.documentation, family.name
        assert family.name.startswith("signalwire_")
        if family.type == "counter":
            assert all(s.name.endswith("_total") for s in family.samples), family.name


def test_sip_labels_are_bounded() -> None:
    assert sip_labels(486) == ("486", "4xx")
    assert sip_labels(499) == ("other", "4xx")
    assert sip_labels(200) == ("200", "2xx")
    assert all(100 <= code <= 699 for code in SIP_CODES)


def test_promtool_accepts_messaging_recording_transcription_metrics(exporter_process: Any) -> None:
    promtool = require_tool("promtool")
    exporter = exporter_process()
    for endpoint, body in (
            ("messaging", "MessageSid=m1&MessageStatus=sent&NumSegments=1"),
            ("messaging", "MessageSid=m1&MessageStatus=delivered&NumSegments=1"),
            ("messaging", "MessageSid=m2&MessageStatus=failed&ErrorCode=30008"),
            ("recording", "RecordingSid=r1&RecordingStatus=completed&RecordingDuration=9"),
            ("transcription", "TranscriptionSid=t1&TranscriptionStatus=completed"
                              "&TranscriptionText=hello")):
        assert send(f"{exporter.url}/callbacks/{endpoint}", body.encode()) == 200
    scraped = scraped_metrics(exporter.url)
    assert b'signalwire_messages_total{status="delivered"} 1.0' in scraped
    check_with_promtool(promtool, scraped)
    assert exporter.stop() == 0


def test_message_error_labels_are_bounded() -> None:
    assert message_error_label("30003") == "30003"
    assert message_error_label(" 30007 ") == "30007"
    assert message_error_label("30099") == "other"
    assert message_error_label("+15551234567") == "other"


# --- plain series: the same exposition as prometheus-client's own types -------------------

@given(st.lists(st.floats(min_value=0, max_value=1e6), max_size=30),
       st.lists(st.floats(min_value=0, max_value=1e6), min_size=1, max_size=8, unique=True))
def test_plain_histogram_renders_what_a_prometheus_histogram_renders(
        values: list[float], bounds: list[float]) -> None:
    """Values on a bound count in that bound's bucket (``le``), larger ones in +Inf."""
    bounds = sorted(bounds)
    values += bounds  # every bound observed exactly once as well
    theirs = CollectorRegistry()
    reference = Histogram("h_seconds", "h.", ["direction"], buckets=bounds, registry=theirs)
    ours = CollectorRegistry()
    plain = PlainHistogram("h_seconds", "h.", ("direction",), bounds, [("inbound",)])
    ours.register(PlainSeries([plain]))
    for value in values:
        reference.labels("inbound").observe(value)
        plain.observe(("inbound",), value)
    assert exposition(ours) == exposition(theirs)


def test_plain_counter_renders_what_a_prometheus_counter_renders() -> None:
    theirs = CollectorRegistry()
    reference = Counter("c_total", "c.", ["status", "direction"], registry=theirs)
    ours = CollectorRegistry()
    plain = PlainCounter("c_total", "c.", ("status", "direction"), [("busy", "inbound")])
    ours.register(PlainSeries([plain]))
    reference.labels("busy", "inbound")  # pre-created, as the plain one is
    for labels, amount in ((("busy", "inbound"), 1.0), (("failed", "unknown"), 2.5),
                           (("busy", "inbound"), 3.0)):
        reference.labels(*labels).inc(amount)
        plain.inc(labels, amount)
    assert exposition(ours) == exposition(theirs)


def test_a_plain_series_name_cannot_be_registered_twice() -> None:
    registry = CollectorRegistry()
    registry.register(PlainSeries([PlainCounter("c_total", "c.", ())]))
    with pytest.raises(ValueError, match="Duplicated"):
        Counter("c_total", "c.", registry=registry)


def exposition(registry: CollectorRegistry) -> list[str]:
    """Sorted sample and metadata lines, created series left out (the exporter disables them)."""
    from prometheus_client import generate_latest

    return sorted(line for line in generate_latest(registry).decode().splitlines()
                  if "_created" not in line)
