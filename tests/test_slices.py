"""App and line labels: chosen by the config, bounded by it, never a phone number."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.config import ConfigError, config_warnings, parse_config
from exporter.slices import Slices

from .conftest import ClientFactory, sample

LABELS = {"app": {"query_parameter": "app", "values": ["sales", "support"]},
          "lines": {"+15551234567": "main", "+15557654321": "support-line"}}


def test_values_come_from_the_allow_lists_only() -> None:
    slices = Slices(parse_config({"labels": LABELS}, environ={}).labels)
    assert slices.names == ("app", "line")
    assert slices.app({"app": "sales"}) == "sales"
    assert slices.app({"app": "+15550000000"}) == "other"
    assert slices.app({}) == ""
    # inbound calls are named by the number called, the others by the caller
    assert slices.line("inbound", "+15551234567", "+15559999999") == "main"
    assert slices.line("outbound-api", "+15551234567", "+15557654321") == "support-line"
    assert slices.line("outbound-api", "+15551234567", "+15559999999") == "other"
    assert slices.line("inbound", None, "+15551234567") == ""


def test_nothing_configured_means_no_labels() -> None:
    slices = Slices(parse_config({}, environ={}).labels)
    assert not slices and slices.names == ()
    assert slices.values("sales", "inbound", "+1", "+2") == ()


def test_config_refuses_unsafe_values_and_warns_on_many_combinations() -> None:
    with pytest.raises(ConfigError, match=r"labels\.app\.values"):
        parse_config({"labels": {"app": {"query_parameter": "app",
                                         "values": ["a|b"]}}}, environ={})
    with pytest.raises(ConfigError, match=r"labels\.lines"):
        parse_config({"labels": {"lines": {"+1555": "other"}}}, environ={})
    many = parse_config({"labels": {
        "app": {"query_parameter": "app", "values": [f"a{i}" for i in range(20)]},
        "lines": {f"+1555000{i:04d}": f"l{i}" for i in range(10)}}}, environ={})
    assert any("combinations" in warning for warning in config_warnings(many))
    assert config_warnings(parse_config({"labels": LABELS}, environ={})) == []


async def test_calls_are_counted_by_app_and_line(exporter_client: ClientFactory) -> None:
    client = await exporter_client({"labels": LABELS})
    calls = [
        ("/callbacks/voice?app=sales", {"CallSid": "a", "CallStatus": "completed",
                                         "Direction": "inbound", "To": "+15551234567",
                                         "From": "+15550000001", "CallDuration": "30"}),
        ("/callbacks/voice?app=marketing", {"CallSid": "b", "CallStatus": "failed",
                                             "Direction": "outbound-api",
                                             "From": "+15550000002", "To": "+15551234567"}),
        ("/callbacks/voice", {"CallSid": "c", "CallStatus": "in-progress",
                              "Direction": "outbound-api", "From": "+15557654321"}),
    ]
    for path, data in calls:
        assert (await client.post(path, data=data)).status == 200
    assert sample(client, "signalwire_calls_total", status="completed", direction="inbound",
                  app="sales", line="main") == 1
    assert sample(client, "signalwire_calls_total", status="failed",
                  direction="outbound-api", app="other", line="other") == 1
    assert sample(client, "signalwire_calls_in_progress", direction="outbound-api", app="",
                  line="support-line") == 1
    assert sample(client, "signalwire_call_duration_seconds_count", direction="inbound",
                  app="sales", line="main") == 1
    # the call's labels are its first event's: its final event counts under them
    await client.post("/callbacks/voice?app=support", data={
        "CallSid": "c", "CallStatus": "completed", "Direction": "outbound-api"})
    assert sample(client, "signalwire_calls_in_progress", direction="outbound-api", app="",
                  line="support-line") == 0
    assert sample(client, "signalwire_calls_total", status="completed",
                  direction="outbound-api", app="", line="support-line") == 1
    text = await (await client.get("/metrics")).text()
    for number in ("+1555", "15551234567", "15550000001"):
        assert number not in text


async def test_messages_are_counted_by_app_and_line(exporter_client: ClientFactory) -> None:
    client = await exporter_client({"labels": LABELS})
    await client.post("/callbacks/messaging?app=support", data={
        "MessageSid": "m1", "MessageStatus": "delivered", "From": "+15551234567",
        "To": "+15550000009"})
    assert sample(client, "signalwire_messages_total", status="delivered", app="support",
                  line="main") == 1


async def test_without_labels_every_series_is_as_before(client) -> None:
    await client.post("/callbacks/voice?app=sales", data={
        "CallSid": "a", "CallStatus": "completed", "Direction": "inbound",
        "To": "+15551234567"})
    text = await (await client.get("/metrics")).text()
    labels = {name for family in text_string_to_metric_families(text)
              for s in family.samples for name in s.labels}
    assert "app" not in labels and "line" not in labels
    assert sample(client, "signalwire_calls_total", status="completed",
                  direction="inbound") == 1
