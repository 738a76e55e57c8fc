"""A realistic replay of SignalWire callbacks, for end-to-end tests.

Covers every final status and direction, the three call endpoints (Calling API JSON events
with their end reasons too), MOS in every quality tier and on the tier bounds,
jitter and packet counts, SIP codes of every class, initiated/ringing/answered Timestamps
(post-dial delay, time to answer), calls left in progress, duplicates, a late event, an
unparseable Timestamp, an unknown status and a few requests that are rejected; and messages
(delivered, undelivered and failed with error codes, received, MMS stuck at sent),
recordings and transcriptions.
"""

from __future__ import annotations

import itertools
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

DIRECTIONS = ("outbound-api", "outbound-dial", "inbound")
# Tier bounds (4.2, 3.5) among them, where calls are frequent: a bucket holds its upper bound.
MOS = ("4.4", "4.3", "4.0", "4.2", "3.8", "3.5", "3.6", "3.4", "3.0", "2.4")
BASE = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Callback:
    """Form fields, or a JSON ``document`` (then ``fields`` only names the item, for spread)."""

    endpoint: str
    fields: dict[str, str]
    document: dict[str, Any] | None = None


def _quality(i: int) -> dict[str, str]:
    media = 3000 + 97 * i
    return {"AudioInMos": MOS[i % len(MOS)],
            "AudioInJitterMaxVariance": str((3, 12, 25, 45)[i % 4]),
            "AudioInJitterMinVariance": str((0.5, 1, 2)[i % 3]),
            "AudioInMediaPacketCount": str(media),
            "AudioInSkipPacketCount": str((0, 5, 40, 300)[i % 4]),
            "AudioInFlushPacketCount": str(i % 7)}


def call(i: int, final: str | None, sip: int | None, prefix: str = "call") -> list[Callback]:
    """One call through initiated → ringing → [answered] → final, seconds apart."""
    direction = DIRECTIONS[i % len(DIRECTIONS)]
    start = BASE + timedelta(minutes=i)
    pdd, answer, duration = 1 + i % 5, 2 + i % 11, 5 + 37 * i
    path = ["initiated", "ringing"]
    times = [start, start + timedelta(seconds=pdd)]
    if final in ("completed", None):
        path.append("in-progress")
        times.append(times[-1] + timedelta(seconds=answer))
    if final is not None:
        path.append(final)
        times.append(times[-1] + timedelta(seconds=duration if final == "completed" else 20))
    events = []
    for seq, (status, when) in enumerate(zip(path, times, strict=True)):
        fields = {"CallSid": f"{prefix}-{i}", "CallStatus": status, "Direction": direction,
                  "SequenceNumber": str(seq), "Timestamp": format_datetime(when),
                  "AccountSid": "project", "From": "+15550000000", "To": "+15551111111"}
        if status == final:
            if sip is not None:
                fields["SipResultCode"] = str(sip)
            if final == "completed":
                fields["CallDuration"] = str(duration)
                fields.update(_quality(i))
        events.append(Callback("voice", fields))
    return events


def inbound_endpoint_call(i: int, status: str, prefix: str) -> Callback:
    """The incoming-number callback: one final event, no Direction, no SequenceNumber."""
    fields = {"CallSid": f"{prefix}-number-{i}", "CallStatus": status,
              "Timestamp": format_datetime(BASE + timedelta(minutes=i))}
    if status == "completed":
        fields.update({"CallDuration": str(30 + i), "AudioInMos": MOS[(i + 3) % len(MOS)]})
    return Callback("inbound", fields)


FINALS: tuple[tuple[str | None, int | None], ...] = (
    ("completed", 200), ("completed", 200), ("busy", 486), ("completed", 200),
    ("no-answer", 480), ("failed", 503), ("canceled", 487), ("failed", 404),
    ("completed", None), ("completed", 200), ("failed", 603), ("completed", 200),
)


def replay(prefix: str, calls: int = 36) -> list[Callback]:
    """Finished calls. Send one replay before the one a test looks at: the first creates
    the series that exist only once seen (SIP codes, packet counts), since rate() cannot
    see the increase that creates a series."""
    events: list[Callback] = []
    for i in range(calls):
        final, sip = FINALS[i % len(FINALS)]
        one = call(i, final, sip, prefix)
        if i % 5 == 0:  # at-least-once delivery: the same event twice
            one.insert(1, one[0])
        if i % 6 == 1 and len(one) > 3:  # answered arrives after the final event
            one[-2], one[-1] = one[-1], one[-2]
        events += one
    events += [inbound_endpoint_call(i, ("completed", "completed", "failed")[i % 3], prefix)
               for i in range(9)]
    odd = call(1000, "completed", 200, prefix + "-odd")
    odd[0].fields["Timestamp"] = "Thur, 09 Sept 2023 17:05:04 +0000"  # tolerated
    odd[-1].fields["Timestamp"] = "the day after tomorrow"  # counted as a timestamp error
    odd[1].fields["CallStatus"] = "ringing-forwarded"
    return events + odd + calling(prefix) + messages(prefix) + recordings(prefix)


# Calling API calls: (end_reason as SignalWire spells it, answered?).
CALLING_ENDS: tuple[tuple[str, bool], ...] = (
    ("hangup", True), ("busy", False), ("noAnswer", False), ("hangup", True),
    ("decline", False), ("cancel", False),
)


def calling(prefix: str) -> list[Callback]:
    """calling.call.state events (SWML's call_state_url, direction outbound), created →
    ringing → [answered] → ended with an end reason, one duplicate."""
    events: list[Callback] = []
    for i, (reason, answered) in enumerate(CALLING_ENDS):
        call_id = f"{prefix}-calling-{i}"
        start = (BASE + timedelta(minutes=i)).timestamp()
        states = [("created", 0.0), ("ringing", 2.0)]
        states += [("answered", 7.0)] if answered else []
        states += [("ended", 60.0 if answered else 20.0)]
        for state, offset in states:
            params: dict[str, Any] = {
                "call_id": call_id, "node_id": "node-1", "call_state": state,
                "direction": "outbound", "start_time": int(start * 1000),
                "device": {"type": "phone", "params": {"from_number": "+15550000000",
                                                       "to_number": "+15551111111"}}}
            if answered and state != "created" and state != "ringing":
                params["answer_time"] = int((start + 7) * 1000)
            if state == "ended":
                params.update(end_reason=reason, end_time=int((start + offset) * 1000))
            events.append(Callback("calling", {"call_id": call_id}, {
                "event_type": "calling.call.state", "event_channel": "swml:replay",
                "timestamp": start + offset, "project_id": "project", "params": params}))
    return events + events[-1:]  # at-least-once delivery


MESSAGE_ENDS: tuple[tuple[str, str | None], ...] = (
    ("delivered", None), ("delivered", None), ("undelivered", "30003"), ("delivered", None),
    ("failed", "30007"), ("delivered", None), ("undelivered", "30005"), ("delivered", None),
    ("sent", None),  # MMS: no delivery receipt, never final
    ("failed", "39999"),  # a code outside the list: code="other"
)


def messages(prefix: str, count: int = 20) -> list[Callback]:
    """Outbound messages queued → sent → final (one duplicate each few), and inbound ones."""
    events: list[Callback] = []
    for i in range(count):
        end, code = MESSAGE_ENDS[i % len(MESSAGE_ENDS)]
        base = {"MessageSid": f"{prefix}-msg-{i}", "AccountSid": "project",
                "From": "+15550000000", "To": "+15551111111", "Body": "hello",
                "NumSegments": str(1 + i % 3), "NumMedia": "1" if end == "sent" else "0"}
        path = ["queued", "sent"] + ([] if end == "sent" else [end])
        for status in path:
            fields = {**base, "MessageStatus": status}
            if status == end and code is not None:
                fields.update(ErrorCode=code, ErrorMessage="carrier said no")
            events.append(Callback("messaging", fields))
        if i % 4 == 0:
            events.append(events[-1])  # at-least-once delivery
    for i in range(count // 4):
        base = {"MessageSid": f"{prefix}-in-{i}", "NumSegments": "1", "Direction": "inbound"}
        events += [Callback("messaging", {**base, "MessageStatus": status})
                   for status in ("receiving", "received")]
    return events


def recordings(prefix: str, count: int = 8) -> list[Callback]:
    """Recordings in-progress → completed (or absent), each completed one transcribed."""
    events: list[Callback] = []
    for i in range(count):
        sid = f"{prefix}-rec-{i}"
        end = "absent" if i % 4 == 3 else "completed"
        events.append(Callback("recording", {"RecordingSid": sid,
                                             "RecordingStatus": "in-progress"}))
        events.append(Callback("recording", {
            "RecordingSid": sid, "RecordingStatus": end, "RecordingChannels": "1",
            "RecordingDuration": str(4 + 23 * i) if end == "completed" else "0"}))
        if end == "completed":
            events.append(Callback("transcription", {
                "TranscriptionSid": f"{prefix}-tr-{i}", "RecordingSid": sid,
                "TranscriptionStatus": "failed" if i % 5 == 4 else "completed",
                "TranscriptionText": "words " * (3 + 7 * i)}))
    return events


def answered(count: int) -> list[Callback]:
    """Calls answered and still going: send them last, so no capacity eviction drops them."""
    return [event for i in range(count) for event in call(i, None, None, "answered")]


def abandoned(count: int) -> list[Callback]:
    """Calls that never reach a final status: they stay tracked until they expire."""
    return [Callback("voice", {"CallSid": f"abandoned-{i}", "CallStatus": "initiated",
                               "Direction": DIRECTIONS[i % 3], "SequenceNumber": "0"})
            for i in range(count)]


def post(base_url: str, callback: Callback) -> int:
    url = f"{base_url}/callbacks/{callback.endpoint}"
    if callback.document is not None:
        return _send(url, json.dumps(callback.document).encode(), "application/json")
    return _send(url, urllib.parse.urlencode(callback.fields).encode(),
                 "application/x-www-form-urlencoded")


def _send(url: str, body: bytes, content_type: str) -> int:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def send_rejected(base_url: str) -> list[int]:
    """Requests a misconfigured sender makes: a missing CallSid and a wrong content type."""
    return [_send(f"{base_url}/callbacks/voice", b"CallStatus=completed",
                  "application/x-www-form-urlencoded"),
            _send(f"{base_url}/callbacks/voice", json.dumps({"CallSid": "x"}).encode(),
                  "text/plain")]


# The field that names the item a callback is about, per endpoint: what affinity keys on.
SID_FIELDS = ("CallSid", "MessageSid", "RecordingSid", "TranscriptionSid", "call_id")


def spread(callbacks: list[Callback], base_urls: list[str]) -> Iterator[tuple[str, Callback]]:
    """Each call or message goes to one replica (by its sid), the way a load balancer
    with affinity would send it; different ones land on different replicas."""
    cycle = itertools.cycle(base_urls)
    owner: dict[str, str] = {}
    for callback in callbacks:
        sid = next((callback.fields[name] for name in SID_FIELDS if name in callback.fields), "")
        if sid not in owner:
            owner[sid] = next(cycle)
        yield owner[sid], callback
