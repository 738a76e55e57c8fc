"""Metric hygiene: a real scrape through real promtool, bounded labels, HELP everywhere."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Exemplar

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

from .conftest import require_tool, scrape, series
from .test_reports import post


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


# --- exemplars: the CallSid / MessageSid of a recent event, in OpenMetrics only --------------

OPENMETRICS = {"Accept": "application/openmetrics-text; version=1.0.0; charset=utf-8"}


async def exemplars_of(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]],
                                                   Exemplar]:
    """GET /metrics as OpenMetrics, parsed by prometheus_client's OpenMetrics parser."""
    response = await client.get("/metrics", headers=OPENMETRICS)
    assert response.status == 200
    assert response.content_type == "application/openmetrics-text"
    found = {}
    for family in openmetrics_families(await response.text()):
        for s in family.samples:
            if s.exemplar is not None:
                found[(s.name, tuple(sorted(s.labels.items())))] = s.exemplar
    return found


async def test_openmetrics_scrape_carries_call_and_message_sids_as_exemplars(
        client: TestClient) -> None:
    before = time.time()
    await post(client, {"CallSid": "ex-failed-1", "CallStatus": "failed",
                        "Direction": "outbound-api"})
    await post(client, {"CallSid": "ex-done-1", "CallStatus": "completed",
                        "Direction": "inbound", "CallDuration": "42", "AudioInMos": "3.3"})
    await post(client, {"MessageSid": "ex-msg-1", "MessageStatus": "undelivered"},
               "messaging")
    found = await exemplars_of(client)

    failed = found[series("signalwire_calls_total", status="failed", direction="outbound-api")]
    assert failed.labels == {"call_sid": "ex-failed-1"}
    assert failed.value == 1
    assert failed.timestamp is not None and float(failed.timestamp) >= before - 1
    done = found[series("signalwire_calls_total", status="completed", direction="inbound")]
    assert done.labels == {"call_sid": "ex-done-1"}
    # a histogram's exemplar sits on the bucket its value was counted in (le: first bound >= it)
    duration = found[series("signalwire_call_duration_seconds_bucket", direction="inbound",
                            le="60.0")]
    assert (duration.labels, duration.value) == ({"call_sid": "ex-done-1"}, 42)
    mos = found[series("signalwire_call_mos_bucket", direction="inbound", le="3.5")]
    assert (mos.labels, mos.value) == ({"call_sid": "ex-done-1"}, 3.3)
    message = found[series("signalwire_messages_total", status="undelivered")]
    assert message.labels == {"message_sid": "ex-msg-1"}
    # only the named families, and only the series an event reached
    assert {name for name, _ in found} == {
        "signalwire_calls_total", "signalwire_call_duration_seconds_bucket",
        "signalwire_call_mos_bucket", "signalwire_messages_total"}
    assert len(found) == 5

    # the latest call of a series replaces its exemplar
    await post(client, {"CallSid": "ex-failed-2", "CallStatus": "failed",
                        "Direction": "outbound-api"})
    found = await exemplars_of(client)
    assert found[series("signalwire_calls_total", status="failed",
                        direction="outbound-api")].labels == {"call_sid": "ex-failed-2"}


async def test_text_scrape_has_no_exemplars_and_no_sid(client: TestClient) -> None:
    await post(client, {"CallSid": "ex-text-1", "CallStatus": "failed",
                        "Direction": "outbound-api", "CallDuration": "0"})
    await post(client, {"MessageSid": "ex-text-m1", "MessageStatus": "failed"}, "messaging")
    response = await client.get("/metrics")
    text = await response.text()
    assert response.content_type == "text/plain"
    assert "ex-text" not in text
    assert " # {" not in text
    assert all(s.exemplar is None for family in text_string_to_metric_families(text)
               for s in family.samples)
    # the values are there all the same
    assert (await scrape(client))[series("signalwire_calls_total", status="failed",
                                         direction="outbound-api")] == 1


async def test_a_sid_too_long_for_an_exemplar_is_left_out(client: TestClient) -> None:
    """OpenMetrics allows 128 characters of exemplar labels; the parsers accept 256-long sids."""
    long_sid = "x" * 200
    await post(client, {"CallSid": long_sid, "CallStatus": "busy", "Direction": "inbound"})
    found = await exemplars_of(client)  # the parser refuses an over-long exemplar
    assert series("signalwire_calls_total", status="busy", direction="inbound") not in found
    fitting = "y" * (128 - len("call_sid"))
    await post(client, {"CallSid": fitting, "CallStatus": "busy", "Direction": "inbound"})
    found = await exemplars_of(client)
    assert found[series("signalwire_calls_total", status="busy",
                        direction="inbound")].labels == {"call_sid": fitting}
