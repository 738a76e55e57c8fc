"""SignalWire's JSON calling.* events (SWML, RELAY, Calling API) through a real server.

Payloads follow the SWML ``connect`` reference and the RELAY call object (reference §6.1,
6.2): ``timestamp`` in seconds, ``start_time``/``answer_time``/``end_time`` in
milliseconds, ``device.params`` with phone numbers (personal data).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from exporter.payloads import CALLING_EVENT_STATES, DIRECTIONS, END_REASONS, FINAL_CALL_STATUSES

from .conftest import sample, scrape, series
from .test_app import new_sid

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z
CALLER, CALLEE = "+15551234567", "+18005559876"
PROJECT = "b6b5d0d3-0000-4000-8000-00000000aaaa"


def call_state(call_id: str, state: str, *, at: float, direction: str = "outbound",
               end_reason: str | None = None, **times: float) -> dict[str, Any]:
    """One ``calling.call.state`` event as SWML's call_state_url receives it."""
    params: dict[str, Any] = {
        "call_id": call_id, "node_id": "node-1", "segment_id": "seg-1", "tag": "t1",
        "call_state": state, "direction": direction, "created_by": "dial",
        "device": {"type": "phone", "params": {"from_number": CALLER, "to_number": CALLEE}},
        "end_reason": end_reason, "start_time": int(T0 * 1000),
        **{name: int(value * 1000) for name, value in times.items()},
    }
    return {"event_type": "calling.call.state", "event_channel": "swml:abc",
            "timestamp": at, "project_id": PROJECT, "space_id": "space-1", "params": params}


def answered_call(call_id: str, direction: str = "outbound") -> list[dict[str, Any]]:
    """Every state of an answered call that talked 65 s: ring 2 s, answer after 5 s more."""
    return [
        call_state(call_id, "created", at=T0, direction=direction),
        call_state(call_id, "ringing", at=T0 + 2, direction=direction),
        call_state(call_id, "answered", at=T0 + 7, direction=direction, answer_time=T0 + 7),
        call_state(call_id, "ending", at=T0 + 72, direction=direction, answer_time=T0 + 7),
        call_state(call_id, "ended", at=T0 + 72.4, direction=direction, end_reason="hangup",
                   answer_time=T0 + 7, end_time=T0 + 72.4),
    ]


async def send(client: TestClient, body: dict[str, Any], endpoint: str = "calling") -> int:
    response = await client.post(f"/callbacks/{endpoint}", json=body)
    assert response.status == 200, await response.text()
    return response.status


def calls(values: dict[Any, float], status: str, direction: str = "outbound") -> float:
    return values[series("signalwire_calls_total", status=status, direction=direction)]


async def test_answered_call_through_every_state(client: TestClient) -> None:
    for body in answered_call(new_sid()):
        await send(client, body)
    values = await scrape(client)
    assert calls(values, "completed") == 1
    for status in FINAL_CALL_STATUSES - {"completed"}:
        assert calls(values, status) == 0
    for status in ("initiated", "ringing", "in-progress", "completed"):
        assert values[series("signalwire_call_status_events_total", status=status,
                             direction="outbound")] == 1
    # "ending" is no call status: an event of its own only
    assert values[series("signalwire_call_status_events_total", status="unknown",
                         direction="outbound")] == 0
    for state in ("created", "ringing", "answered", "ending", "ended"):
        assert values[series("signalwire_calling_events_total",
                             event_type="calling.call.state", state=state)] == 1
    assert values[series("signalwire_call_end_reasons_total", reason="hangup",
                         direction="outbound")] == 1
    assert values[series("signalwire_call_duration_seconds_sum", direction="outbound")] == 65
    assert values[series("signalwire_call_post_dial_delay_seconds_sum",
                         direction="outbound")] == 2
    assert values[series("signalwire_call_time_to_answer_seconds_sum",
                         direction="outbound")] == 5
    assert values[series("signalwire_calls_in_progress", direction="outbound")] == 0
    assert values[series("signalwire_exporter_callbacks_total", endpoint="calling",
                         outcome="accepted")] == 5


async def test_in_progress_while_answered(client: TestClient) -> None:
    call_id = new_sid()
    for body in answered_call(call_id, direction="inbound")[:3]:
        await send(client, body)
    assert sample(client, "signalwire_calls_in_progress", direction="inbound") == 1
    await send(client, answered_call(call_id, direction="inbound")[4])
    assert sample(client, "signalwire_calls_in_progress", direction="inbound") == 0
    assert sample(client, "signalwire_calls_total", status="completed", direction="inbound") == 1


async def test_busy_call(client: TestClient) -> None:
    call_id = new_sid()
    await send(client, call_state(call_id, "created", at=T0))
    await send(client, call_state(call_id, "ringing", at=T0 + 1))
    await send(client, call_state(call_id, "ended", at=T0 + 3, end_reason="busy",
                                  end_time=T0 + 3))
    values = await scrape(client)
    assert calls(values, "busy") == 1
    assert calls(values, "completed") == 0
    assert values[series("signalwire_call_end_reasons_total", reason="busy",
                         direction="outbound")] == 1
    assert values[series("signalwire_call_duration_seconds_count", direction="outbound")] == 0
    assert values[series("signalwire_call_time_to_answer_seconds_count",
                         direction="outbound")] == 0


@pytest.mark.parametrize("reason", ["cancel", "hangup"])
async def test_canceled_call(client: TestClient, reason: str) -> None:
    """Hung up before anyone answered: canceled, whichever end_reason says so."""
    call_id = new_sid()
    await send(client, call_state(call_id, "created", at=T0))
    await send(client, call_state(call_id, "ringing", at=T0 + 1))
    await send(client, call_state(call_id, "ending", at=T0 + 9))
    await send(client, call_state(call_id, "ended", at=T0 + 9, end_reason=reason,
                                  end_time=T0 + 9))
    values = await scrape(client)
    assert calls(values, "canceled") == 1
    assert calls(values, "completed") == 0
    assert values[series("signalwire_call_end_reasons_total", reason=reason,
                         direction="outbound")] == 1
    assert values[series("signalwire_calls_in_progress", direction="outbound")] == 0
    rows = await (await client.get("/reports/failed-calls?format=json")).json()
    assert [(row["call_sid"], row["call_status"]) for row in rows["calls"]] \
        == [(call_id, "canceled")]


@pytest.mark.parametrize(("reason", "status"), [
    ("busy", "busy"), ("no_answer", "no-answer"), ("noAnswer", "no-answer"),
    ("cancel", "canceled"), ("decline", "busy"), ("declined", "busy"),
    ("error", "failed"), ("not_found", "failed"), ("notFound", "failed"),
    ("abandoned", "canceled"), ("max_duration", "canceled"), ("hangup", "canceled"),
    ("a_reason_from_2027", "failed"), (None, "failed"),
])
async def test_end_reason_of_an_unanswered_call(client: TestClient, reason: str | None,
                                                status: str) -> None:
    await send(client, call_state(new_sid(), "ended", at=T0, end_reason=reason,
                                  end_time=T0))
    values = await scrape(client)
    assert calls(values, status) == 1
    assert sum(calls(values, s) for s in FINAL_CALL_STATUSES) == 1
    label = {"noAnswer": "no_answer", "decline": "declined", "notFound": "not_found",
             "a_reason_from_2027": "unknown", None: "unknown"}.get(reason, reason)
    assert values[series("signalwire_call_end_reasons_total", reason=str(label),
                         direction="outbound")] == 1


@pytest.mark.parametrize("reason", ["hangup", "abandoned", "max_duration", "whatever_new"])
async def test_answer_time_on_the_ended_event_means_answered(client: TestClient,
                                                             reason: str) -> None:
    """Events arrive out of order: the ended event's own answer_time says it was answered."""
    await send(client, call_state(new_sid(), "ended", at=T0 + 30, end_reason=reason,
                                  answer_time=T0 + 5, end_time=T0 + 30))
    values = await scrape(client)
    assert calls(values, "completed") == 1
    assert values[series("signalwire_call_duration_seconds_sum", direction="outbound")] == 25


async def test_duplicates_count_once(client: TestClient) -> None:
    events = answered_call(new_sid())
    for body in events + events + events[::-1]:
        await send(client, body)
    values = await scrape(client)
    assert calls(values, "completed") == 1
    assert values[series("signalwire_call_status_events_total", status="ringing",
                         direction="outbound")] == 1
    assert values[series("signalwire_calling_events_total", event_type="calling.call.state",
                         state="ended")] == 1
    assert values[series("signalwire_call_end_reasons_total", reason="hangup",
                         direction="outbound")] == 1
    assert values[series("signalwire_call_duration_seconds_count", direction="outbound")] == 1
    assert values[series("signalwire_exporter_callbacks_total", endpoint="calling",
                         outcome="duplicate")] == 2 * len(events)


async def test_out_of_order_delivery(client: TestClient) -> None:
    """ended first, then the rest: final once, the gauge never moves, delays still measured."""
    for body in reversed(answered_call(new_sid())):
        await send(client, body)
    values = await scrape(client)
    assert calls(values, "completed") == 1
    assert values[series("signalwire_calls_in_progress", direction="outbound")] == 0
    assert values[series("signalwire_exporter_late_events_total", endpoint="calling")] == 3
    assert values[series("signalwire_call_post_dial_delay_seconds_sum",
                         direction="outbound")] == 2
    assert values[series("signalwire_call_time_to_answer_seconds_sum",
                         direction="outbound")] == 5
    # a late answered never resurrects the call
    assert values[series("signalwire_call_status_events_total", status="in-progress",
                         direction="outbound")] == 1


async def test_a_late_hangup_after_answered(client: TestClient) -> None:
    """answered, then an ended without answer_time: still completed, the answer is known."""
    call_id = new_sid()
    await send(client, call_state(call_id, "answered", at=T0 + 3, answer_time=T0 + 3))
    await send(client, call_state(call_id, "ended", at=T0 + 9, end_reason="hangup"))
    assert sample(client, "signalwire_calls_total", status="completed",
                  direction="outbound") == 1


async def test_unknown_state_type_and_direction_are_accepted(client: TestClient) -> None:
    call_id = new_sid()
    await send(client, call_state(call_id, "teleporting", at=T0))
    await send(client, call_state(call_id, "answered", at=T0 + 1, direction="sideways"))
    await send(client, {"event_type": "calling.call.hologram", "timestamp": T0,
                        "params": {"call_id": call_id, "state": "shimmering"}})
    values = await scrape(client)
    assert values[series("signalwire_calling_events_total", event_type="calling.call.state",
                         state="unknown")] == 1
    assert values[series("signalwire_calling_events_total", event_type="unknown",
                         state="unknown")] == 1
    assert values[series("signalwire_calls_in_progress", direction="unknown")] == 1
    assert values[series("signalwire_exporter_callbacks_total", endpoint="calling",
                         outcome="accepted")] == 3


async def test_other_calling_events(client: TestClient) -> None:
    call_id, control = new_sid(), new_sid()

    def event(kind: str, at: float, **params: Any) -> dict[str, Any]:
        return {"event_type": kind, "event_channel": "swml:abc", "timestamp": at,
                "project_id": PROJECT, "space_id": "space-1",
                "params": {"call_id": call_id, "node_id": "node-1", **params}}

    peer = {"call_id": new_sid(), "node_id": "node-2",
            "device": {"type": "phone", "params": {"to_number": CALLEE}}}
    record = {"url": "https://files.example.invalid/rec.mp3", "format": "mp3"}
    bodies = [
        event("calling.call.connect", T0, connect_state="connecting", peer=peer),
        event("calling.call.connect", T0 + 3, connect_state="connected", peer=peer),
        event("calling.call.record", T0 + 4, control_id=control, state="recording",
              record=record),
        event("calling.call.record", T0 + 8, control_id=control, state="paused", record=record),
        event("calling.call.record", T0 + 9, control_id=control, state="recording",
              record=record),
        event("calling.call.record", T0 + 40, control_id=control, state="finished",
              record={**record, "duration": 35.6, "size": 285_000}),
        event("calling.call.stream", T0 + 4, control_id=new_sid(), state="streaming"),
        event("calling.call.stream", T0 + 40, control_id=new_sid(), state="finished"),
        event("calling.transcript.completed", T0 + 45, control_id=new_sid(),
              text="please call me back about the invoice"),
        event("calling.transcript.failed", T0 + 45, control_id=new_sid()),
        event("calling.call.connect", T0 + 40, connect_state="disconnected", peer=peer),
    ]
    for body in bodies + bodies:
        await send(client, body)
    values = await scrape(client)

    def events(kind: str, state: str) -> float:
        return values[series("signalwire_calling_events_total", event_type=kind, state=state)]

    assert events("calling.call.connect", "connected") == 1
    assert events("calling.call.connect", "disconnected") == 1
    assert events("calling.call.record", "recording") == 2  # started, then resumed
    assert events("calling.call.record", "paused") == 1
    assert events("calling.call.stream", "finished") == 1
    assert events("calling.transcript.completed", "completed") == 1
    assert values[series("signalwire_recordings_total", status="in-progress")] == 1
    assert values[series("signalwire_recordings_total", status="completed")] == 1
    assert values[series("signalwire_recording_duration_seconds_sum")] == 36
    assert values[series("signalwire_transcriptions_total", status="completed")] == 1
    assert values[series("signalwire_transcriptions_total", status="failed")] == 1
    assert values[series("signalwire_transcription_text_characters_count")] == 1
    assert values[series("signalwire_exporter_callbacks_total", endpoint="calling",
                         outcome="duplicate")] == len(bodies)
    # none of these is a call status
    assert sum(v for (name, _), v in values.items()
               if name == "signalwire_call_status_events_total") == 0


@pytest.mark.parametrize(("body", "named"), [
    ({"timestamp": T0, "params": {"call_id": "c"}}, "event_type"),
    ({"event_type": "calling.call.state", "params": {"call_state": "ended"}}, "params.call_id"),
    ({"event_type": "calling.call.state", "params": {"call_id": "c"}}, "params.call_state"),
    ({"event_type": "calling.call.state",
      "params": {"call_id": "c", "call_state": "ended", "answer_time": "soon"}},
     "params.answer_time"),
    ({"event_type": "calling.call.state", "params": {"call_id": "c" * 300,
                                                      "call_state": "ended"}},
     "params.call_id"),
])
async def test_useless_or_malformed_events_are_refused(client: TestClient, body: Any,
                                                       named: str) -> None:
    response = await client.post("/callbacks/calling", json=body)
    assert response.status == 400
    assert named in (await response.json())["error"]
    assert sample(client, "signalwire_exporter_callbacks_total", endpoint="calling",
                  outcome="invalid") == 1


async def test_bad_event_timestamp_costs_only_the_delays(client: TestClient) -> None:
    body = call_state(new_sid(), "ended", at=T0, end_reason="busy")
    body["timestamp"] = "yesterday"
    await send(client, body)
    assert sample(client, "signalwire_calls_total", status="busy", direction="outbound") == 1
    assert sample(client, "signalwire_exporter_timestamp_errors_total", endpoint="calling") == 1


async def test_calling_series_exist_before_the_first_event(client: TestClient) -> None:
    values = await scrape(client)
    reasons = {dict(labels)["reason"] for name, labels in values
               if name == "signalwire_call_end_reasons_total"}
    assert reasons == set(END_REASONS)
    for direction in DIRECTIONS:
        assert values[series("signalwire_calls_total", status="completed",
                             direction=direction)] == 0
    for kind, states in CALLING_EVENT_STATES.items():
        for state in states:
            assert values[series("signalwire_calling_events_total", event_type=kind,
                                 state=state)] == 0
    assert values[series("signalwire_exporter_callbacks_total", endpoint="calling",
                         outcome="accepted")] == 0


async def test_no_numbers_in_logs_labels_or_metrics(client: TestClient,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for body in answered_call(new_sid()):
        body["params"]["device"]["params"]["from_number"] = CALLER
        await send(client, body)
    await send(client, {"event_type": "calling.transcript.completed", "timestamp": T0,
                        "params": {"call_id": new_sid(), "text": "my pin is 4321"}})
    text = await (await client.get("/metrics")).text()
    logged = " ".join(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in caplog.records)
    for secret in (CALLER, CALLEE, "4321", "5551234567"):
        assert secret not in text
        assert secret not in logged
