"""Messaging, recording and transcription callbacks through a real server and a parsed scrape."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp.test_utils import TestClient

from exporter.payloads import FINAL_MESSAGE_STATUSES, MESSAGE_ERROR_CODES

from .conftest import ClientFactory, sample, scrape, series
from .test_app import FORM_HEADERS, new_sid, post

SECRET_TEXTS = ("+15551234567", "+18005559876", "Your code is 123456",
                "Landline or unreachable carrier", "please call me back about the invoice")


def message(sid: str, status: str, **extra: str) -> dict[str, str]:
    return {"MessageSid": sid, "MessageStatus": status, "AccountSid": "acct",
            "From": "+15551234567", "To": "+18005559876", "Body": "Your code is 123456",
            "NumSegments": "2", "NumMedia": "0", **extra}


def outbound(sid: str, final: str = "delivered") -> list[dict[str, str]]:
    extra = {} if final == "delivered" else {"ErrorCode": "30003",
                                             "ErrorMessage": "Landline or unreachable carrier"}
    return [message(sid, "queued"), message(sid, "sending"), message(sid, "sent"),
            message(sid, final, **extra)]


def recording(sid: str, status: str, **extra: str) -> dict[str, str]:
    return {"RecordingSid": sid, "RecordingStatus": status, "CallSid": new_sid(),
            "AccountSid": "acct", "RecordingUrl": f"https://example.invalid/rec/{sid}",
            "RecordingSource": "RecordVerb", "RecordingChannels": "1", **extra}


def transcription(sid: str, status: str, text: str | None = None) -> dict[str, str]:
    fields = {"TranscriptionSid": sid, "TranscriptionStatus": status,
              "RecordingSid": new_sid(), "TranscriptionUrl": "https://example.invalid/t"}
    if text is not None:
        fields["TranscriptionText"] = text
    return fields


# --- messaging ------------------------------------------------------------------------------

async def test_outbound_message_lifecycle(client: TestClient) -> None:
    for fields in outbound(new_sid()):
        assert await post(client, fields, endpoint="messaging") == (200, "")
    values = await scrape(client)
    for status in ("queued", "sending", "sent", "delivered"):
        assert values[series("signalwire_message_status_events_total", status=status)] == 1
    assert values[series("signalwire_messages_total", status="delivered")] == 1
    for status in FINAL_MESSAGE_STATUSES - {"delivered"}:
        assert values[series("signalwire_messages_total", status=status)] == 0
    assert values[series("signalwire_message_segments_total")] == 2  # once, not per callback
    assert values[series("signalwire_message_delivery_seconds_count")] == 1
    assert values[series("signalwire_message_errors_total", code="other")] == 0
    assert values[series("signalwire_exporter_callbacks_total", endpoint="messaging",
                         outcome="accepted")] == 4
    assert values[series("signalwire_exporter_tracked_items", kind="message")] == 1


async def test_inbound_message_lifecycle(client: TestClient) -> None:
    sid = new_sid()
    for status in ("receiving", "received"):
        fields = message(sid, status, NumSegments="1", Direction="inbound")
        assert await post(client, fields, endpoint="messaging") == (200, "")
    values = await scrape(client)
    assert values[series("signalwire_messages_total", status="received")] == 1
    assert values[series("signalwire_message_status_events_total", status="receiving")] == 1
    assert values[series("signalwire_message_segments_total")] == 1
    assert values[series("signalwire_message_delivery_seconds_count")] == 0


@pytest.mark.parametrize(("code", "label"), [("30003", "30003"), ("30007", "30007"),
                                             ("99999", "other"), ("Robert'); DROP", "other")])
async def test_failed_message_counts_its_error_code_once(client: TestClient, code: str,
                                                         label: str) -> None:
    sid = new_sid()
    await post(client, message(sid, "sent"), endpoint="messaging")
    await post(client, message(sid, "undelivered", ErrorCode=code), endpoint="messaging")
    await post(client, message(sid, "failed", ErrorCode=code), endpoint="messaging")
    values = await scrape(client)
    assert values[series("signalwire_message_errors_total", code=label)] == 1
    # the first final status is the message's; the later one only counts as an event
    assert values[series("signalwire_messages_total", status="undelivered")] == 1
    assert values[series("signalwire_messages_total", status="failed")] == 0
    assert values[series("signalwire_message_status_events_total", status="failed")] == 1
    assert values[series("signalwire_exporter_late_events_total", endpoint="messaging")] == 0
    assert values[series("signalwire_message_delivery_seconds_count")] == 0
    assert "DROP" not in await (await client.get("/metrics")).text()


async def test_message_duplicates_count_once(client: TestClient) -> None:
    events = outbound(new_sid(), final="failed")
    for fields in events + events:
        assert await post(client, fields, endpoint="messaging") == (200, "")
    values = await scrape(client)
    assert values[series("signalwire_messages_total", status="failed")] == 1
    assert values[series("signalwire_message_status_events_total", status="sent")] == 1
    assert values[series("signalwire_message_errors_total", code="30003")] == 1
    assert values[series("signalwire_message_segments_total")] == 2
    assert values[series("signalwire_exporter_callbacks_total", endpoint="messaging",
                         outcome="duplicate")] == len(events)


async def test_message_out_of_order(client: TestClient) -> None:
    for fields in reversed(outbound(new_sid())):
        assert (await post(client, fields, endpoint="messaging"))[0] == 200
    values = await scrape(client)
    assert values[series("signalwire_messages_total", status="delivered")] == 1
    for status in ("queued", "sending", "sent", "delivered"):
        assert values[series("signalwire_message_status_events_total", status=status)] == 1
    assert values[series("signalwire_exporter_late_events_total", endpoint="messaging")] == 3
    # receive times cannot time a delivery that arrived before its start
    assert values[series("signalwire_message_delivery_seconds_count")] == 0


async def test_unknown_message_status_is_accepted_as_unknown(client: TestClient) -> None:
    status, _ = await post(client, message(new_sid(), "+15551234567"), endpoint="messaging")
    assert status == 200
    values = await scrape(client)
    assert values[series("signalwire_message_status_events_total", status="unknown")] == 1
    assert sum(values[series("signalwire_messages_total", status=s)]
               for s in FINAL_MESSAGE_STATUSES) == 0


async def test_error_code_label_set_is_closed(client: TestClient) -> None:
    values = await scrape(client)
    codes = {dict(labels)["code"] for name, labels in values
             if name == "signalwire_message_errors_total"}
    assert codes == {*MESSAGE_ERROR_CODES, "other"}


# --- the JSON message status callback (REST Messaging API, RELAY, SWML send_sms) -------------

PROJECT = "b6b5d0d3-0000-4000-8000-00000000aaaa"


def json_message(sid: str, status: str, **extra: Any) -> dict[str, Any]:
    """The JSON callback of reference §6.3: ISO timestamp, numbers, custom variables."""
    return {"id": sid, "project_id": PROJECT, "status": status, "to": "+18005559876",
            "from": "+15551234567", "body": "Your code is 123456", "number_of_segments": 2,
            "timestamp": "2026-11-30T17:05:04.120Z", "error_code": None, "error_message": None,
            "custom_variables": {"order": "please call me back about the invoice",
                                 "customer": {"phone": "+15551234567"}}, **extra}


async def test_json_message_callbacks_feed_the_same_metrics(client: TestClient) -> None:
    sid = new_sid()
    events = [json_message(sid, status) for status in ("queued", "sent", "delivered")]
    for body in events + events[::-1]:
        assert await post(client, body, endpoint="messaging", kind="json") == (200, "")
    await post(client, json_message(new_sid(), "undelivered", error_code=30003,
                                    error_message="Landline or unreachable carrier"),
               endpoint="messaging", kind="json")
    values = await scrape(client)
    for status in ("queued", "sent", "delivered", "undelivered"):
        assert values[series("signalwire_message_status_events_total", status=status)] == 1
    assert values[series("signalwire_messages_total", status="delivered")] == 1
    assert values[series("signalwire_messages_total", status="undelivered")] == 1
    assert values[series("signalwire_message_errors_total", code="30003")] == 1
    assert values[series("signalwire_message_segments_total")] == 4  # once per message
    assert values[series("signalwire_message_delivery_seconds_count")] == 1
    assert values[series("signalwire_exporter_callbacks_total", endpoint="messaging",
                         outcome="duplicate")] == 3


async def test_json_message_with_a_new_status_is_counted_as_unknown(client: TestClient) -> None:
    assert (await post(client, json_message(new_sid(), "teleported"), endpoint="messaging",
                       kind="json"))[0] == 200
    assert sample(client, "signalwire_message_status_events_total", status="unknown") == 1


@pytest.mark.parametrize(("body", "named"), [
    ({"id": "m1", "project_id": PROJECT, "body": "hi"}, "status"),
    ({"id": " ", "status": "sent"}, "id"),
])
async def test_json_message_without_id_or_status_is_refused(client: TestClient,
                                                            body: dict[str, Any],
                                                            named: str) -> None:
    response = await client.post("/callbacks/messaging", json=body)
    assert response.status == 400
    assert named in (await response.json())["error"]


async def test_json_message_with_a_bad_segment_count_is_counted_without_it(
        client: TestClient) -> None:
    response = await client.post("/callbacks/messaging", json={
        "id": "m1", "status": "delivered", "number_of_segments": "two"})
    assert response.status == 200
    assert sample(client, "signalwire_messages_total", status="delivered") == 1
    assert sample(client, "signalwire_exporter_invalid_fields_total", endpoint="messaging",
                  field="number_of_segments") == 1


async def test_json_message_content_never_in_logs_metrics_or_report(
        client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    sid = new_sid()
    for status in ("sent", "failed"):
        await post(client, json_message(sid, status, error_code="30007",
                                        error_message="Landline or unreachable carrier"),
                   endpoint="messaging", kind="json")
    await post(client, {"id": new_sid(), "body": "Your code is 123456"}, endpoint="messaging",
               kind="json")  # refused (no status): its body is not logged either
    logged = " ".join(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in caplog.records)
    assert sid in logged and "message status" in logged
    outputs = [logged, await (await client.get("/metrics")).text(),
               await (await client.get("/reports/failed-calls?format=json")).text()]
    for output in outputs:
        for text in SECRET_TEXTS:
            assert text not in output, text


# --- recordings and transcriptions ----------------------------------------------------------

async def test_recording_lifecycle_and_duration_once(client: TestClient) -> None:
    sid = new_sid()
    events = [recording(sid, "in-progress"),
              recording(sid, "completed", RecordingDuration="42", RecordingChannels="2")]
    for fields in events + events:
        assert (await post(client, fields, endpoint="recording"))[0] == 200
    await post(client, recording(new_sid(), "absent"), endpoint="recording")
    values = await scrape(client)
    assert values[series("signalwire_recordings_total", status="in-progress")] == 1
    assert values[series("signalwire_recordings_total", status="completed")] == 1
    assert values[series("signalwire_recordings_total", status="absent")] == 1
    assert values[series("signalwire_recordings_total", status="failed")] == 0
    assert values[series("signalwire_recording_duration_seconds_count")] == 1
    assert values[series("signalwire_recording_duration_seconds_sum")] == 42
    assert values[series("signalwire_recording_duration_seconds_bucket", le="60.0")] == 1
    assert values[series("signalwire_recording_duration_seconds_bucket", le="30.0")] == 0
    assert values[series("signalwire_exporter_callbacks_total", endpoint="recording",
                         outcome="duplicate")] == 2


async def test_recording_out_of_order(client: TestClient) -> None:
    sid = new_sid()
    await post(client, recording(sid, "completed", RecordingDuration="7"), endpoint="recording")
    await post(client, recording(sid, "in-progress"), endpoint="recording")
    values = await scrape(client)
    assert values[series("signalwire_recordings_total", status="in-progress")] == 1
    assert values[series("signalwire_recording_duration_seconds_sum")] == 7
    assert values[series("signalwire_exporter_late_events_total", endpoint="recording")] == 1


async def test_transcription_counts_and_text_length(client: TestClient) -> None:
    text = "please call me back about the invoice"
    sid = new_sid()
    for _ in range(2):
        assert await post(client, transcription(sid, "completed", text),
                          endpoint="transcription") == (200, "")
    await post(client, transcription(new_sid(), "completed", ""), endpoint="transcription")
    await post(client, transcription(new_sid(), "failed"), endpoint="transcription")
    values = await scrape(client)
    assert values[series("signalwire_transcriptions_total", status="completed")] == 2
    assert values[series("signalwire_transcriptions_total", status="failed")] == 1
    assert values[series("signalwire_transcription_text_characters_count")] == 2
    assert values[series("signalwire_transcription_text_characters_sum")] == len(text)
    assert values[series("signalwire_transcription_text_characters_bucket", le="0.0")] == 1
    assert "invoice" not in await (await client.get("/metrics")).text()


# --- the shared request path ----------------------------------------------------------------

@pytest.mark.parametrize(("endpoint", "fields", "named", "counted"), [
    ("messaging", {"MessageSid": "m", "MessageStatus": "delivered", "NumSegments": "two"},
     "NumSegments", ("signalwire_messages_total", {"status": "delivered"})),
    ("messaging", {"MessageSid": "m", "MessageStatus": "delivered", "NumMedia": "\u0661"},
     "NumMedia", ("signalwire_messages_total", {"status": "delivered"})),
    ("recording", {"RecordingSid": "r", "RecordingStatus": "completed",
                   "RecordingDuration": "-3"},
     "RecordingDuration", ("signalwire_recordings_total", {"status": "completed"})),
    ("recording", {"RecordingSid": "r", "RecordingStatus": "completed",
                   "RecordingDuration": "3", "RecordingChannels": "1_0"},
     "RecordingChannels", ("signalwire_recording_duration_seconds_count", {})),
])
@pytest.mark.parametrize("kind", ["form", "json", "get"])
async def test_a_bad_optional_field_is_skipped_and_counted(
        client: TestClient, endpoint: str, fields: dict[str, str], named: str,
        counted: tuple[str, dict[str, str]], kind: str) -> None:
    assert await post(client, fields, endpoint=endpoint, kind=kind) == (200, "")
    values = await scrape(client)
    assert values[series(counted[0], **counted[1])] == 1
    assert values[series("signalwire_exporter_invalid_fields_total", endpoint=endpoint,
                         field=named)] == 1
    assert values[series("signalwire_exporter_callbacks_total", endpoint=endpoint,
                         outcome="accepted")] == 1


@pytest.mark.parametrize(("endpoint", "fields", "named"), [
    ("messaging", {"MessageStatus": "sent"}, "MessageSid"),
    ("messaging", {"MessageSid": "m", "MessageStatus": " "}, "MessageStatus"),
    ("recording", {"RecordingStatus": "completed"}, "RecordingSid"),
    ("recording", {"RecordingSid": "r"}, "RecordingStatus"),
    ("transcription", {"TranscriptionStatus": "completed"}, "TranscriptionSid"),
    ("transcription", {"TranscriptionSid": "t"}, "TranscriptionStatus"),
])
@pytest.mark.parametrize("kind", ["form", "json", "get"])
async def test_bad_fields_get_400_naming_the_field(client: TestClient, endpoint: str,
                                                  fields: dict[str, str], named: str,
                                                  kind: str) -> None:
    status, body = await post(client, fields, endpoint=endpoint, kind=kind)
    assert status == 400
    assert named in json.loads(body)["error"]
    values = await scrape(client)
    assert values[series("signalwire_exporter_callbacks_total", endpoint=endpoint,
                         outcome="invalid")] == 1
    assert values[series("signalwire_exporter_callbacks_total", endpoint=endpoint,
                         outcome="accepted")] == 0


@pytest.mark.parametrize("kind", ["form", "json", "get"])
async def test_form_json_and_get_are_equivalent(client: TestClient, kind: str) -> None:
    assert await post(client, message(new_sid(), "delivered"), endpoint="messaging",
                      kind=kind) == (200, "")
    assert await post(client, recording(new_sid(), "completed", RecordingDuration="3"),
                      endpoint="recording", kind=kind) == (200, "")
    assert await post(client, transcription(new_sid(), "completed", "hi"),
                      endpoint="transcription", kind=kind) == (200, "")
    assert sample(client, "signalwire_messages_total", status="delivered") == 1
    assert sample(client, "signalwire_recording_duration_seconds_sum") == 3
    assert sample(client, "signalwire_transcription_text_characters_sum") == 2


async def test_multipart_body(client: TestClient) -> None:
    import aiohttp

    form = aiohttp.FormData()
    for name, value in message(new_sid(), "failed", ErrorCode="30005").items():
        form.add_field(name, value)
    response = await client.post("/callbacks/messaging", data=form())
    assert response.status == 200
    assert sample(client, "signalwire_message_errors_total", code="30005") == 1


def signed(key: str, url: str, fields: dict[str, str]) -> str:
    """Compatibility-scheme signature, computed here independently of exporter.signature."""
    payload = url + "".join(name + fields[name] for name in sorted(fields))
    digest = hmac.new(key.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


@pytest.mark.parametrize("endpoint", ["messaging", "recording", "transcription"])
async def test_signature_is_checked_on_every_new_endpoint(exporter_client: ClientFactory,
                                                          endpoint: str) -> None:
    key = "test-signing-key"
    client = await exporter_client({"signature": {
        "signing_keys": [key], "public_base_url": "https://metrics.example.com"}})
    fields = {"messaging": message(new_sid(), "delivered"),
              "recording": recording(new_sid(), "completed", RecordingDuration="5"),
              "transcription": transcription(new_sid(), "completed", "ok")}[endpoint]
    path = f"/callbacks/{endpoint}"
    good = signed(key, f"https://metrics.example.com{path}", fields)
    forged = signed("wrong-key", f"https://metrics.example.com{path}", fields)
    response = await client.post(path, data=urlencode(fields), headers={
        **FORM_HEADERS, "X-SignalWire-Signature": forged})
    assert response.status == 403
    assert key not in await response.text()
    response = await client.post(path, data=urlencode(fields), headers={
        **FORM_HEADERS, "X-SignalWire-Signature": good})
    assert response.status == 200
    assert sample(client, "signalwire_exporter_callbacks_total", endpoint=endpoint,
                  outcome="unauthorized") == 1
    assert sample(client, "signalwire_exporter_callbacks_total", endpoint=endpoint,
                  outcome="accepted") == 1


@pytest.mark.parametrize("endpoint", ["messaging", "recording", "transcription"])
async def test_limits_and_methods_apply(exporter_client: ClientFactory, endpoint: str) -> None:
    client = await exporter_client({"limits": {"max_body_bytes": 1024}})
    response = await client.post(f"/callbacks/{endpoint}", data=b"x=" + b"a" * 2000,
                                 headers=FORM_HEADERS)
    assert response.status == 413
    response = await client.post(f"/callbacks/{endpoint}", data=b"<xml/>",
                                 headers={"Content-Type": "text/xml"})
    assert response.status == 415
    response = await client.delete(f"/callbacks/{endpoint}")
    assert response.status == 405
    for outcome in ("too_large", "unsupported", "method_not_allowed"):
        assert sample(client, "signalwire_exporter_callbacks_total", endpoint=endpoint,
                      outcome=outcome) == 1


async def test_no_body_numbers_or_free_text_in_logs_or_metrics(
        client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    sid = new_sid()
    for fields in outbound(sid, final="undelivered"):
        await post(client, fields, endpoint="messaging")
    await post(client, transcription(new_sid(), "completed",
                                     "please call me back about the invoice"),
               endpoint="transcription")
    await post(client, {"MessageSid": sid}, endpoint="messaging")  # rejected: logged too
    logged = " ".join(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in caplog.records)
    assert sid in logged and "message status" in logged  # the event lines are there
    metrics = await (await client.get("/metrics")).text()
    for text in SECRET_TEXTS:
        assert text not in logged, text
        assert text not in metrics, text


async def test_unfinished_items_expire_and_are_counted(exporter_client: ClientFactory) -> None:
    client = await exporter_client({"tracking": {"item_ttl_seconds": 0.2,
                                                 "sweep_interval_seconds": 0.05}})
    await post(client, message(new_sid(), "sent", NumMedia="1"), endpoint="messaging")  # MMS
    await post(client, message(new_sid(), "delivered"), endpoint="messaging")
    await post(client, recording(new_sid(), "in-progress"), endpoint="recording")
    for _ in range(100):  # the sweeper runs every 0.05 s; bounded wait for it
        if sum(sample(client, "signalwire_exporter_tracked_items", kind=kind)
               for kind in ("message", "recording")) == 0:
            break
        await asyncio.sleep(0.05)
    values = await scrape(client)
    assert values[series("signalwire_exporter_items_expired_total", kind="message",
                         reason="ttl")] == 1
    assert values[series("signalwire_exporter_items_expired_total", kind="recording",
                         reason="ttl")] == 1
    assert values[series("signalwire_exporter_items_expired_total", kind="transcription",
                         reason="ttl")] == 0
    assert values[series("signalwire_exporter_tracked_items", kind="recording")] == 0
    assert values[series("signalwire_messages_total", status="delivered")] == 1


async def test_capacity_eviction_is_counted(exporter_client: ClientFactory) -> None:
    client = await exporter_client({"tracking": {"max_items": 2}})
    for _ in range(3):
        await post(client, transcription(new_sid(), "unknown-state"), endpoint="transcription")
    assert sample(client, "signalwire_exporter_tracked_items", kind="transcription") == 2
    assert sample(client, "signalwire_exporter_items_expired_total", kind="transcription",
                  reason="capacity") == 1
    assert sample(client, "signalwire_transcriptions_total", status="unknown") == 3
