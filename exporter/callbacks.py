"""One processor per kind of callback: verified fields → typed event → tracker → metrics.

parse (``payloads``) → track (``calls``, ``statuses``) → record (``metrics``), and the
event log line. A processor returns the outcome the request is counted under; a
``Rejected`` it raises (a missing or bad id or status) becomes the request's 4xx in
``app``; a bad optional field is only counted and logged. Calls have
their own tracker (they carry a SequenceNumber); messages, recordings and
transcriptions share one path, each kind with its own ``Lifecycle``. SignalWire's JSON
``calling.*`` events are mapped onto those same trackers.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from .errors import Outcome
from .logs import EVENT_LOGGER
from .metrics import CALLING_EVENTS, TEN_DLC_EVENTS, ItemEvent, wants
from .payloads import (
    FINAL_MESSAGE_STATUSES,
    FINAL_RECORDING_STATUSES,
    FINAL_TRANSCRIPTION_STATUSES,
    MESSAGE_SENDING_STATUSES,
    MESSAGE_STATUSES,
    RECORDING_STATUSES,
    TRANSCRIPTION_STATUSES,
    MessageEvent,
    RecordingEvent,
    parse_call_event,
    parse_calling_event,
    parse_message_event,
    parse_recording_event,
    parse_ten_dlc_event,
    parse_transcription_event,
)
from .statuses import Lifecycle

if TYPE_CHECKING:  # app imports this module to route to the processors
    from .app import Exporter

event_log = logging.getLogger(EVENT_LOGGER)
log = logging.getLogger(__name__)

# (exporter, fields, endpoint, app): ``app`` is the callback URL's app label (``slices``)
Processor = Callable[["Exporter", dict[str, str], str, str], Awaitable[Outcome]]


def skipped_fields(exporter: Exporter, endpoint: str, names: tuple[str, ...]) -> None:
    """Count and log optional fields skipped as invalid: names only, never the values
    (a value may be personal data)."""
    exporter.metrics.invalid(endpoint, names)
    log.warning("invalid optional field skipped, callback accepted",
                extra={"fields": {"endpoint": endpoint, "field": ",".join(names)}})


async def process_call(exporter: Exporter, fields: dict[str, str], endpoint: str,
                       app: str) -> Outcome:
    event = parse_call_event(fields, endpoint)
    if exporter.slices:
        event.slice = exporter.slices.values(app, event.direction, event.to, event.from_)
    if event.invalid_fields:
        skipped_fields(exporter, endpoint, event.invalid_fields)
    store = exporter.store
    now = store.clock()
    decision = await store.call(event, now)
    outcome: Outcome = "duplicate" if decision.duplicate else "accepted"
    if not decision.duplicate:
        exporter.metrics.record_call_event(event, decision)
        if decision.final_status is not None and exporter.prices is not None:
            exporter.prices.add(event.call_sid, decision.direction, now)
    if event_log.isEnabledFor(exporter.event_level):
        event_log.log(exporter.event_level, "call status", extra={"fields": {
            "endpoint": endpoint, "outcome": outcome, "call_sid": event.call_sid,
            "status": event.status, "direction": decision.direction,
            "sequence": event.sequence_number, "late": decision.late,
            "final": decision.final_status,
            "timestamp": event.timestamp.isoformat() if event.timestamp else None}})
    return outcome


# Endpoint → its item kind's lifecycle and parser (the kind is also a label value).
LIFECYCLES: dict[str, Lifecycle] = {
    "messaging": Lifecycle("message", MESSAGE_STATUSES, FINAL_MESSAGE_STATUSES,
                           start=MESSAGE_SENDING_STATUSES, end="delivered"),
    "recording": Lifecycle("recording", RECORDING_STATUSES, FINAL_RECORDING_STATUSES),
    "transcription": Lifecycle("transcription", TRANSCRIPTION_STATUSES,
                               FINAL_TRANSCRIPTION_STATUSES),
}
ITEM_PARSERS: dict[str, Callable[[dict[str, str]], ItemEvent]] = {
    "messaging": parse_message_event,
    "recording": parse_recording_event,
    "transcription": parse_transcription_event,
}


async def process_item(exporter: Exporter, fields: dict[str, str], endpoint: str,
                       app: str) -> Outcome:
    """Messages, recordings and transcriptions: one path, one tracker per kind."""
    event = ITEM_PARSERS[endpoint](fields)
    if exporter.slices and isinstance(event, MessageEvent):
        event.slice = exporter.slices.values(app, event.direction, event.to, event.from_)
    if event.invalid_fields:
        skipped_fields(exporter, endpoint, event.invalid_fields)
    kind = LIFECYCLES[endpoint].kind
    store = exporter.store
    decision = await store.item(endpoint, event, store.clock(), wants(event))
    outcome: Outcome = "duplicate" if decision.duplicate else "accepted"
    if not decision.duplicate and decision.late:
        exporter.metrics.late_events.labels(endpoint).inc()
    if event_log.isEnabledFor(exporter.event_level):
        event_log.log(exporter.event_level, f"{kind} status", extra={"fields": {
            "endpoint": endpoint, "outcome": outcome, f"{kind}_sid": event.sid,
            "status": event.status, "late": decision.late, "final": decision.final_status,
            **event.log_fields()}})
    return outcome


async def process_calling(exporter: Exporter, fields: dict[str, str], endpoint: str,
                          app: str) -> Outcome:
    """SignalWire's JSON ``calling.*`` events (SWML, RELAY, the Calling API).

    Each event is counted once by type and state (``Store.count_once``, keyed on what a
    retry shares with it); only its first delivery goes on: a call-state event to the
    call tracker as the CallEvent it maps to (``payloads._CALL_STATES``), a record or
    transcript event to the recording or transcription tracker.
    """
    event = parse_calling_event(fields)
    if exporter.slices and event.call is not None:
        call = event.call
        call.slice = exporter.slices.values(app, call.direction, call.to, call.from_)
    if event.invalid_fields:
        skipped_fields(exporter, endpoint, event.invalid_fields)
    store = exporter.store
    first = await store.count_once(event.key, exporter.config.tracking.call_ttl_seconds,
                                   CALLING_EVENTS, (event.event_type, event.state))
    late = False
    final: str | None = None
    if first and event.call is not None:
        decision = await store.call(event.call, store.clock())
        if not decision.duplicate:
            exporter.metrics.record_call_event(event.call, decision)
        late, final = decision.late, decision.final_status
    elif first and event.item is not None:
        kind = "recording" if isinstance(event.item, RecordingEvent) else "transcription"
        item = await store.item(kind, event.item, store.clock(), wants(event.item))
        if not item.duplicate and item.late:
            exporter.metrics.late_events.labels(endpoint).inc()
        late, final = item.late, item.final_status
    outcome: Outcome = "accepted" if first else "duplicate"
    if event_log.isEnabledFor(exporter.event_level):
        event_log.log(exporter.event_level, "calling event", extra={"fields": {
            "endpoint": endpoint, "outcome": outcome, "late": late, "final": final,
            **event.log_fields()}})
    return outcome


async def process_ten_dlc(exporter: Exporter, fields: dict[str, str], endpoint: str,
                          app: str) -> Outcome:
    """10DLC status callbacks: no state to track, each event counted once by its key."""
    event = parse_ten_dlc_event(fields)
    first = await exporter.store.count_once(
        event.key, exporter.config.tracking.item_ttl_seconds, TEN_DLC_EVENTS,
        (event.category, event.event_type))
    outcome: Outcome = "accepted" if first else "duplicate"
    if event_log.isEnabledFor(exporter.event_level):
        event_log.log(exporter.event_level, "10dlc event", extra={"fields": {
            "endpoint": endpoint, "outcome": outcome, **event.log_fields()}})
    return outcome


# Endpoint (/callbacks/<endpoint>, also the endpoint label value) → its processor.
PROCESSORS: dict[str, Processor] = {
    "voice": process_call,
    "inbound": process_call,
    **dict.fromkeys(LIFECYCLES, process_item),
    "calling": process_calling,
    "10dlc": process_ten_dlc,
}

