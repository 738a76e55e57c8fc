"""The exporter through a real aiohttp server on loopback and its real registry."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp.test_utils import TestClient

from exporter.app import EXPORTER
from exporter.payloads import DIRECTIONS, FINAL_CALL_STATUSES

from .conftest import ClientFactory, sample, scrape, series

FORM_HEADERS = {"Content-Type": "application/x-www-form-urlencoded"}
_sids = itertools.count()


def new_sid() -> str:
    return f"00000000-0000-4000-8000-{next(_sids):012d}"


async def post(client: TestClient, fields: dict[str, Any], endpoint: str = "voice",
               kind: str = "form") -> tuple[int, str]:
    path = f"/callbacks/{endpoint}"
    if kind == "form":
        response = await client.post(path, data=urlencode(fields), headers=FORM_HEADERS)
    elif kind == "json":
        response = await client.post(path, json=fields)
    else:
        response = await client.get(path + "?" + urlencode(fields))
    return response.status, await response.text()


def lifecycle(sid: str, direction: str, final: str) -> list[dict[str, str]]:
    base = {"CallSid": sid, "Direction": direction, "AccountSid": "acct"}
    steps = [{"CallStatus": "initiated", "Timestamp": "Thu, 09 Nov 2023 17:05:00 +0000"},
             {"CallStatus": "ringing", "Timestamp": "Thu, 09 Nov 2023 17:05:02 +0000"}]
    if final == "completed":
        steps.append({"CallStatus": "answered", "Timestamp": "Thu, 09 Nov 2023 17:05:08 +0000"})
    end = {"CallStatus": final, "Timestamp": "Thu, 09 Nov 2023 17:06:00 +0000"}
    if final == "completed":
        end.update(CallDuration="52", AudioInMos="4.1", AudioInJitterMaxVariance="12",
                   AudioInJitterMinVariance="1", AudioInMediaPacketCount="2970",
                   AudioInSkipPacketCount="30", SipResultCode="200")
    else:
        end["SipResultCode"] = {"busy": "486", "failed": "404", "no-answer": "480",
                                "canceled": "487"}[final]
    steps.append(end)
    return [{**base, **step, "SequenceNumber": str(i)} for i, step in enumerate(steps)]


@pytest.mark.parametrize("direction", [d for d in DIRECTIONS if d != "unknown"])
@pytest.mark.parametrize("final", sorted(FINAL_CALL_STATUSES))
async def test_full_lifecycle_counts_once(client: TestClient, direction: str,
                                          final: str) -> None:
    events = lifecycle(new_sid(), direction, final)
    for fields in events:
        assert await post(client, fields) == (200, "")
    assert sample(client, "signalwire_calls_total", status=final, direction=direction) == 1
    assert sum(sample(client, "signalwire_calls_total", status=s, direction=direction)
               for s in FINAL_CALL_STATUSES) == 1
    for status in ("initiated", "ringing", final):
        assert sample(client, "signalwire_call_status_events_total",
                      status=status, direction=direction) == 1
    assert sample(client, "signalwire_calls_in_progress", direction=direction) == 0
    assert sample(client, "signalwire_call_post_dial_delay_seconds_sum",
                  direction=direction) == 2
    assert sample(client, "signalwire_exporter_callbacks_total",
                  endpoint="voice", outcome="accepted") == len(events)
    if final == "completed":
        assert sample(client, "signalwire_call_status_events_total",
                      status="in-progress", direction=direction) == 1
        assert sample(client, "signalwire_call_duration_seconds_sum", direction=direction) == 52
        assert sample(client, "signalwire_call_mos_count", direction=direction) == 1
        assert sample(client, "signalwire_call_mos_bucket", direction=direction, le="4.2") == 1
        assert sample(client, "signalwire_call_mos_bucket", direction=direction, le="3.7") == 0
        assert sample(client, "signalwire_call_jitter_max_seconds_sum",
                      direction=direction) == pytest.approx(0.012)
        assert sample(client, "signalwire_call_packet_loss_ratio_sum",
                      direction=direction) == pytest.approx(0.01)
        assert sample(client, "signalwire_call_time_to_answer_seconds_sum",
                      direction=direction) == 6
        assert sample(client, "signalwire_call_sip_responses_total", direction=direction,
                      code="200", **{"class": "2xx"}) == 1
    else:
        assert sample(client, "signalwire_call_duration_seconds_count", direction=direction) == 0
        assert sample(client, "signalwire_call_sip_responses_total", direction=direction,
                      code=events[-1]["SipResultCode"], **{"class": "4xx"}) == 1


async def test_duplicates_are_counted_once(client: TestClient) -> None:
    events = lifecycle(new_sid(), "outbound-api", "completed")
    for fields in events + events:
        assert (await post(client, fields))[0] == 200
    assert sample(client, "signalwire_calls_total", status="completed",
                  direction="outbound-api") == 1
    assert sample(client, "signalwire_call_status_events_total", status="ringing",
                  direction="outbound-api") == 1
    assert sample(client, "signalwire_call_mos_count", direction="outbound-api") == 1
    assert sample(client, "signalwire_exporter_callbacks_total", endpoint="voice",
                  outcome="duplicate") == len(events)


async def test_out_of_order_delivery(client: TestClient) -> None:
    events = lifecycle(new_sid(), "inbound", "completed")
    for fields in reversed(events):
        assert (await post(client, fields))[0] == 200
    assert sample(client, "signalwire_calls_total", status="completed", direction="inbound") == 1
    assert sample(client, "signalwire_call_status_events_total", status="in-progress",
                  direction="inbound") == 1
    assert sample(client, "signalwire_calls_in_progress", direction="inbound") == 0
    assert sample(client, "signalwire_exporter_late_events_total", endpoint="voice") == 3
    # delays come from Timestamps, so they survive the reversed order
    assert sample(client, "signalwire_call_post_dial_delay_seconds_sum", direction="inbound") == 2


async def test_in_progress_gauge_follows_calls(client: TestClient) -> None:
    sids = [new_sid() for _ in range(3)]
    for i, sid in enumerate(sids):
        await post(client, {"CallSid": sid, "CallStatus": "in-progress",
                            "Direction": "outbound-dial", "SequenceNumber": "2"})
        assert sample(client, "signalwire_calls_in_progress", direction="outbound-dial") == i + 1
    for sid in sids:
        await post(client, {"CallSid": sid, "CallStatus": "completed",
                            "Direction": "outbound-dial", "SequenceNumber": "3"})
    assert sample(client, "signalwire_calls_in_progress", direction="outbound-dial") == 0


@pytest.mark.parametrize("kind", ["form", "json", "get"])
async def test_json_form_and_get_are_equivalent(client: TestClient, kind: str) -> None:
    sid = new_sid()
    assert await post(client, {"CallSid": sid, "CallStatus": "busy", "Direction": "inbound",
                               "SequenceNumber": "1"}, kind=kind) == (200, "")
    assert sample(client, "signalwire_calls_total", status="busy", direction="inbound") == 1


async def test_inbound_endpoint_feeds_the_same_metrics(client: TestClient) -> None:
    payload = {"CallSid": new_sid(), "AccountSid": "a", "From": "+15551234567",
               "To": "+18005559876", "Timestamp": "Thu, 04 Apr 2024 18:32:15 +0000",
               "CallStatus": "completed", "CallDuration": "142", "AudioInMos": "4.5"}
    assert await post(client, payload, endpoint="inbound", kind="json") == (200, "")
    assert await post(client, payload, endpoint="inbound", kind="json") == (200, "")
    assert sample(client, "signalwire_calls_total", status="completed", direction="inbound") == 1
    assert sample(client, "signalwire_call_duration_seconds_sum", direction="inbound") == 142
    assert sample(client, "signalwire_call_mos_sum", direction="inbound") == 4.5
    assert sample(client, "signalwire_exporter_callbacks_total", endpoint="inbound",
                  outcome="duplicate") == 1


@pytest.mark.parametrize(("fields", "named"), [
    ({"CallStatus": "completed"}, "CallSid"),
    ({"CallSid": "x"}, "CallStatus"),
    ({"CallSid": " ", "CallStatus": "completed", "CallDuration": "12s"}, "CallSid"),
    ({"CallSid": "x" * 300, "CallStatus": "completed"}, "CallSid"),
])
@pytest.mark.parametrize("endpoint", ["voice", "inbound"])
async def test_bad_required_fields_get_400_naming_the_field(
        client: TestClient, fields: dict[str, str], named: str, endpoint: str) -> None:
    status, body = await post(client, fields, endpoint=endpoint)
    assert status == 400
    assert named in json.loads(body)["error"]
    assert sample(client, "signalwire_exporter_callbacks_total", endpoint=endpoint,
                  outcome="invalid") == 1
    assert sample(client, "signalwire_calls_total", status="completed", direction="inbound") == 0


# --- one bad optional field never loses the call (issue 14) ---------------------------------

@pytest.mark.parametrize(("field", "value"), [
    ("AudioInMos", "N/A"), ("AudioInMos", "NaN"), ("AudioInMos", "-1"), ("AudioInMos", "5.1"),
    ("CallDuration", "12.5"), ("AudioInJitterMaxVariance", "n/a"),
    ("AudioInSkipPacketCount", "-1"), ("SipResultCode", "0"), ("SequenceNumber", "N/A"),
    ("CallDuration", "1_000"), ("CallDuration", "\u0661\u0662\u0663"),
    ("AudioInMos", "\U0001d7d2"),
])
@pytest.mark.parametrize("kind", ["form", "json", "get"])
async def test_a_final_event_with_one_bad_field_still_ends_the_call(
        client: TestClient, caplog: pytest.LogCaptureFixture, field: str, value: str,
        kind: str) -> None:
    caplog.set_level(logging.INFO)
    events = lifecycle(new_sid(), "outbound-api", "completed")
    events[-1][field] = value
    for fields in events:
        assert await post(client, fields, kind=kind) == (200, "")
    values = await scrape(client)
    assert values[series("signalwire_calls_total", status="completed",
                         direction="outbound-api")] == 1
    assert values[series("signalwire_calls_in_progress", direction="outbound-api")] == 0
    assert values[series("signalwire_exporter_invalid_fields_total", endpoint="voice",
                         field=field)] == 1
    assert sum(v for (name, _), v in values.items()
               if name == "signalwire_exporter_invalid_fields_total") == 1
    assert values[series("signalwire_exporter_callbacks_total", endpoint="voice",
                         outcome="accepted")] == len(events)
    # every valid field of that event is still recorded
    if field != "AudioInMos":
        assert values[series("signalwire_call_mos_count", direction="outbound-api")] == 1
    if field != "CallDuration":
        assert values[series("signalwire_call_duration_seconds_sum",
                             direction="outbound-api")] == 52
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert getattr(warnings[0], "fields", {}) == {"endpoint": "voice", "field": field}
    assert value not in warnings[0].getMessage()


async def test_invalid_field_series_exist_before_the_first_and_stay_bounded(
        client: TestClient) -> None:
    before = [key for key in await scrape(client)
              if key[0] == "signalwire_exporter_invalid_fields_total"]
    assert series("signalwire_exporter_invalid_fields_total", endpoint="inbound",
                  field="AudioInMos") in before
    assert await post(client, {"CallSid": new_sid(), "CallStatus": "completed",
                               "Whatever": "x", "CallDuration": "soon"}) == (200, "")
    after = [key for key in await scrape(client)
             if key[0] == "signalwire_exporter_invalid_fields_total"]
    assert sorted(after) == sorted(before)


@pytest.mark.parametrize(("body", "content_type", "status", "outcome"), [
    (b"{broken", "application/json", 400, "invalid"),
    (b"[]", "application/json", 400, "invalid"),
    (b"CallSid=%ff&CallStatus=busy", "application/x-www-form-urlencoded", 400, "invalid"),
    (b"<xml/>", "text/xml", 415, "unsupported"),
    (b"x" * 70000, "application/x-www-form-urlencoded", 413, "too_large"),
])
async def test_malformed_bodies(client: TestClient, body: bytes, content_type: str,
                                status: int, outcome: str) -> None:
    response = await client.post("/callbacks/voice", data=body,
                                 headers={"Content-Type": content_type})
    assert response.status == status
    assert "error" in await response.json()
    assert sample(client, "signalwire_exporter_callbacks_total", endpoint="voice",
                  outcome=outcome) == 1


async def test_chunked_body_over_limit_is_413(exporter_client: ClientFactory) -> None:
    client = await exporter_client({"limits": {"max_body_bytes": 1024}})

    async def chunks() -> Any:
        for _ in range(10):
            yield b"CallSid=" + b"a" * 500

    response = await client.post("/callbacks/voice", data=chunks(), headers=FORM_HEADERS)
    assert response.status == 413
    assert sample(client, "signalwire_exporter_callbacks_total", endpoint="voice",
                  outcome="too_large") == 1


async def test_wrong_method_is_405(client: TestClient) -> None:
    response = await client.put("/callbacks/voice", data=b"")
    assert response.status == 405
    assert "error" in await response.json()
    assert sample(client, "signalwire_exporter_callbacks_total", endpoint="voice",
                  outcome="method_not_allowed") == 1


async def test_unknown_values_never_become_labels(client: TestClient) -> None:
    await post(client, {"CallSid": new_sid(), "CallStatus": "+15551234567",
                        "Direction": "Robert'); DROP TABLE", "SipResultCode": "499",
                        "SequenceNumber": "0"})
    assert sample(client, "signalwire_call_status_events_total", status="unknown",
                  direction="unknown") == 1
    assert sample(client, "signalwire_call_sip_responses_total", direction="unknown",
                  code="other", **{"class": "4xx"}) == 1
    text = await (await client.get("/metrics")).text()
    assert "5551234567" not in text and "DROP" not in text


async def test_unfinished_calls_expire_and_are_counted(exporter_client: ClientFactory) -> None:
    # TTL long enough that the posts and first checks finish before anything expires,
    # even on a loaded machine; the wait below is bounded.
    client = await exporter_client({"tracking": {"call_ttl_seconds": 2.0,
                                                 "sweep_interval_seconds": 0.05}})
    await post(client, {"CallSid": new_sid(), "CallStatus": "in-progress",
                        "Direction": "inbound", "SequenceNumber": "2"})
    await post(client, {"CallSid": new_sid(), "CallStatus": "completed",
                        "Direction": "inbound", "SequenceNumber": "3"})
    assert sample(client, "signalwire_calls_in_progress", direction="inbound") == 1
    assert sample(client, "signalwire_exporter_tracked_calls") == 2
    for _ in range(200):
        if sample(client, "signalwire_exporter_tracked_calls") == 0:
            break
        await asyncio.sleep(0.05)
    assert sample(client, "signalwire_calls_expired_total", direction="inbound",
                  reason="ttl") == 1
    assert sample(client, "signalwire_calls_in_progress", direction="inbound") == 0
    assert sample(client, "signalwire_calls_total", status="completed", direction="inbound") == 1


async def test_capacity_eviction_is_counted(exporter_client: ClientFactory) -> None:
    client = await exporter_client({"tracking": {"max_calls": 2}})
    for _ in range(3):
        await post(client, {"CallSid": new_sid(), "CallStatus": "ringing",
                            "Direction": "outbound-api", "SequenceNumber": "1"})
    assert sample(client, "signalwire_exporter_tracked_calls") == 2
    assert sample(client, "signalwire_calls_expired_total", direction="outbound-api",
                  reason="capacity") == 1


async def test_scrape_parses_back_value_by_value(client: TestClient) -> None:
    for fields in lifecycle(new_sid(), "outbound-api", "completed"):
        await post(client, fields)
    await post(client, {"CallStatus": "busy"})
    values = await scrape(client)
    expected = {
        series("signalwire_calls_total", status="completed", direction="outbound-api"): 1,
        series("signalwire_calls_total", status="failed", direction="inbound"): 0,
        series("signalwire_call_status_events_total", status="initiated",
               direction="outbound-api"): 1,
        series("signalwire_call_status_events_total", status="in-progress",
               direction="outbound-api"): 1,
        series("signalwire_calls_in_progress", direction="outbound-api"): 0,
        series("signalwire_call_duration_seconds_count", direction="outbound-api"): 1,
        series("signalwire_call_duration_seconds_sum", direction="outbound-api"): 52,
        series("signalwire_call_duration_seconds_bucket", direction="outbound-api",
               le="60.0"): 1,
        series("signalwire_call_duration_seconds_bucket", direction="outbound-api",
               le="30.0"): 0,
        series("signalwire_call_mos_bucket", direction="outbound-api", le="4.2"): 1,
        series("signalwire_exporter_callbacks_total", endpoint="voice", outcome="accepted"): 4,
        series("signalwire_exporter_callbacks_total", endpoint="voice", outcome="invalid"): 1,
        series("signalwire_exporter_tracked_calls"): 1,
        series("signalwire_exporter_build_info", version=__import__("exporter").__version__): 1,
    }
    for key, value in expected.items():
        assert values[key] == value, key


async def test_openmetrics_when_asked(client: TestClient) -> None:
    response = await client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert (await response.text()).rstrip().endswith("# EOF")


async def test_healthz(client: TestClient) -> None:
    response = await client.get("/healthz")
    assert (response.status, await response.text()) == (200, "ok")


async def test_stopping_refuses_callbacks_but_serves_metrics(client: TestClient) -> None:
    # What SIGTERM switches on (cli.run_server; tests/test_cli.py runs the real signal).
    assert (await post(client, {"CallSid": new_sid(), "CallStatus": "completed",
                                "Direction": "inbound"}))[0] == 200
    client.app[EXPORTER].stopping.active = True
    for endpoint in ("voice", "messaging"):
        response = await client.post(f"/callbacks/{endpoint}", headers=FORM_HEADERS,
                                     data="CallSid=c&CallStatus=completed")
        assert response.status == 503
        assert response.headers["Connection"] == "close"
        assert "stopping" in (await response.json())["error"]
        assert sample(client, "signalwire_exporter_callbacks_total", endpoint=endpoint,
                      outcome="stopping") == 1
    response = await client.get("/healthz")
    assert (response.status, await response.text()) == (503, "stopping")
    values = await scrape(client)
    assert values[series("signalwire_calls_total", status="completed",
                         direction="inbound")] == 1


async def test_final_scrape_waits_for_a_scrape_after_the_last_callback(
        client: TestClient) -> None:
    stopping = client.app[EXPORTER].stopping
    assert await stopping.final_scrape(0)  # nothing handled yet: nothing to wait for
    assert (await post(client, {"CallSid": new_sid(), "CallStatus": "completed"}))[0] == 200
    assert not await stopping.final_scrape(0)
    waiting = asyncio.create_task(stopping.final_scrape(60))
    await scrape(client)
    assert await waiting


# --- found by QA: hostile input that still reached a 5xx -----------------------------------

@pytest.mark.parametrize(("endpoint", "fields", "named", "counted"), [
    ("voice", {"CallSid": "c-huge", "CallStatus": "completed", "CallDuration": "9" * 400},
     "CallDuration", ("signalwire_calls_total", {"status": "completed",
                                                 "direction": "unknown"})),
    ("voice", {"CallSid": "c-huge", "CallStatus": "completed", "AudioInMos": "4",
               "AudioInMediaPacketCount": "9" * 400, "AudioInSkipPacketCount": "1"},
     "AudioInMediaPacketCount", ("signalwire_call_mos_count", {"direction": "unknown"})),
    ("recording", {"RecordingSid": "r-huge", "RecordingStatus": "completed",
                   "RecordingDuration": "9" * 400},
     "RecordingDuration", ("signalwire_recordings_total", {"status": "completed"})),
    ("messaging", {"MessageSid": "m-huge", "MessageStatus": "sent", "NumSegments": "9" * 400},
     "NumSegments", ("signalwire_message_status_events_total", {"status": "sent"})),
])
async def test_number_too_large_for_a_metric_is_skipped_and_the_rest_counted(
        client: TestClient, endpoint: str, fields: dict[str, str], named: str,
        counted: tuple[str, dict[str, str]]) -> None:
    status, body = await post(client, fields, endpoint)
    assert (status, body) == (200, "")
    values = await scrape(client)
    assert values[series("signalwire_exporter_callbacks_total", endpoint=endpoint,
                         outcome="accepted")] == 1
    assert values[series("signalwire_exporter_invalid_fields_total", endpoint=endpoint,
                         field=named)] == 1
    assert values[series(counted[0], **counted[1])] == 1


async def test_json_number_past_the_int_digit_limit_is_400(client: TestClient) -> None:
    body = b'{"CallSid": "c", "CallStatus": "completed", "SequenceNumber": ' + b"9" * 5000 + b"}"
    response = await client.post("/callbacks/voice", data=body,
                                 headers={"Content-Type": "application/json"})
    assert response.status == 400
    assert "error" in await response.json()
    assert sample(client, "signalwire_exporter_callbacks_total", endpoint="voice",
                  outcome="invalid") == 1


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_body_that_does_not_match_its_content_encoding_is_400(
        client: TestClient, encoding: str) -> None:
    response = await client.post("/callbacks/voice", data=b"CallSid=c&CallStatus=completed",
                                 headers={**FORM_HEADERS, "Content-Encoding": encoding})
    assert response.status == 400
    assert "error" in await response.json()
    assert sample(client, "signalwire_exporter_callbacks_total", endpoint="voice",
                  outcome="invalid") == 1


async def test_gzip_body_is_decoded_and_counted(client: TestClient) -> None:
    import gzip

    response = await client.post(
        "/callbacks/voice", data=gzip.compress(b"CallSid=gz&CallStatus=completed"),
        headers={**FORM_HEADERS, "Content-Encoding": "gzip"})
    assert response.status == 200
    assert sample(client, "signalwire_calls_total", status="completed",
                  direction="unknown") == 1


async def test_405_names_the_allowed_methods(client: TestClient) -> None:
    response = await client.request("OPTIONS", "/callbacks/voice")
    assert response.status == 405
    assert {m.strip() for m in response.headers.get("Allow", "").split(",")} == {"GET", "POST"}


async def test_a_call_on_voice_and_inbound_counts_once_and_takes_a_later_direction(client) -> None:
    await client.post("/callbacks/voice", data={
        "CallSid": "x-1", "CallStatus": "in-progress", "SequenceNumber": "2"})
    assert sample(client, "signalwire_calls_in_progress", direction="unknown") == 1
    await client.post("/callbacks/inbound", data={"CallSid": "x-1", "CallStatus": "completed"})
    response = await client.post("/callbacks/voice", data={
        "CallSid": "x-1", "CallStatus": "completed", "SequenceNumber": "3",
        "Direction": "inbound"})
    assert response.status == 200
    assert sample(client, "signalwire_calls_total", status="completed", direction="inbound") == 1
    assert sample(client, "signalwire_call_status_events_total",
                  status="completed", direction="inbound") == 1
    assert sample(client, "signalwire_calls_in_progress", direction="unknown") == 0
    assert sample(client, "signalwire_calls_in_progress", direction="inbound") == 0
    assert sample(client, "signalwire_exporter_callbacks_total",
                  endpoint="voice", outcome="duplicate") == 1


# --- aiohttp's own refusals, as JSON and counted (issue 14) ----------------------------------

@pytest.mark.parametrize(("method", "path", "status", "allow"), [
    ("GET", "/nope", 404, None),
    ("GET", "/metrics/", 404, None),  # a trailing slash
    ("POST", "/callbacks/voice/", 404, None),
    ("POST", "/metrics", 405, "GET, HEAD"),
    ("DELETE", "/healthz", 405, "GET, HEAD"),
    ("POST", "/reports/failed-calls", 405, "GET, HEAD"),
])
async def test_unknown_path_and_wrong_method_are_json_and_counted(
        client: TestClient, method: str, path: str, status: int, allow: str | None) -> None:
    response = await client.request(method, path)
    assert response.status == status
    assert response.headers.get("Allow") == allow
    assert "error" in await response.json()
    values = await scrape(client)
    assert values[series("signalwire_exporter_http_errors_total", status=str(status))] == 1
    assert sum(v for (name, _), v in values.items()
               if name == "signalwire_exporter_callbacks_total") == 0


async def test_the_routes_still_answer(client: TestClient) -> None:
    assert (await client.get("/healthz")).status == 200
    assert (await client.head("/metrics")).status == 200
    assert (await client.get("/")).status == 200
    values = await scrape(client)
    assert sum(v for (name, _), v in values.items()
               if name == "signalwire_exporter_http_errors_total") == 0


@pytest.mark.parametrize("expect", ["nonsense", "\u00e9"])
async def test_an_unsupported_expect_header_is_a_json_417(client: TestClient,
                                                          expect: str) -> None:
    response = await client.post("/callbacks/voice", data=b"CallSid=c&CallStatus=completed",
                                 headers={**FORM_HEADERS, "Expect": expect})
    assert response.status == 417
    assert "error" in await response.json()
    assert sample(client, "signalwire_exporter_http_errors_total", status="417") == 1


async def test_expect_100_continue_still_works(client: TestClient) -> None:
    response = await client.post("/callbacks/voice", data=b"CallSid=c&CallStatus=completed",
                                 headers={**FORM_HEADERS, "Expect": "100-continue"})
    assert response.status == 200
