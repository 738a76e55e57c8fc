"""Record: Decisions → prometheus-client metrics.

Every label value used here comes from a fixed set (statuses, directions,
endpoints, outcomes, a list of SIP codes), so the number of series is bounded
whatever the provider or an attacker sends. The status/direction series are
created up front: a series that exists at 0 before its first event lets ``rate()``
and ``increase()`` see that first event. The series a call event updates are plain
numbers (``PlainCounter``, ``PlainHistogram``) behind one collector; the rarer ones
are prometheus-client metrics with their children cached.
"""

from __future__ import annotations

import itertools
import math
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar, cast

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar
from prometheus_client.utils import floatToGoString

from . import __version__
from .calls import Decision, Departed
from .config import BucketsConfig
from .errors import OUTCOMES
from .payloads import (
    CALL_NUMBER_FIELDS,
    CALL_STATUSES,
    CALLING_EVENT_STATES,
    CALLING_NUMBER_FIELDS,
    DIRECTIONS,
    END_REASONS,
    FINAL_CALL_STATUSES,
    FINAL_MESSAGE_STATUSES,
    MESSAGE_ERROR_CODES,
    MESSAGE_NUMBER_FIELDS,
    MESSAGE_STATUSES,
    RECORDING_NUMBER_FIELDS,
    RECORDING_STATUSES,
    TEN_DLC_CATEGORIES,
    TEN_DLC_EVENT_TYPES,
    TRANSCRIPTION_STATUSES,
    CallEvent,
    MessageEvent,
    RecordingEvent,
    TranscriptionEvent,
    message_error_label,
)
from .statuses import StatusDecision

CALL_ENDPOINTS: tuple[str, ...] = ("voice", "inbound", "calling")
ENDPOINTS: tuple[str, ...] = ("voice", "inbound", "messaging", "recording", "transcription",
                              "calling", "10dlc")
# Statuses of aiohttp's own refusals, the label values of http_errors_total (else "other").
HTTP_ERROR_STATUSES: tuple[str, ...] = (
    "400", "404", "405", "413", "415", "417", "431", "500", "504")
# Endpoint → the optional fields its parser can skip as invalid (the `field` label values).
INVALID_FIELDS: dict[str, tuple[str, ...]] = {
    "voice": CALL_NUMBER_FIELDS, "inbound": CALL_NUMBER_FIELDS,
    "messaging": MESSAGE_NUMBER_FIELDS, "recording": RECORDING_NUMBER_FIELDS,
    "transcription": (), "calling": CALLING_NUMBER_FIELDS, "10dlc": (),
}

# Final SIP responses worth telling apart; anything else is "other" (label stays bounded).
SIP_CODES: frozenset[int] = frozenset((
    200, 300, 301, 302, 380,
    400, 401, 402, 403, 404, 405, 406, 407, 408, 410, 413, 414, 415, 416, 420, 421,
    423, 433, 480, 481, 482, 483, 484, 485, 486, 487, 488, 489, 491, 493, 494,
    500, 501, 502, 503, 504, 505, 513, 580,
    600, 603, 604, 606, 607, 608,
))

# Counter families Store.count_once adds to (ExporterMetrics.once_counters)
CALLING_EVENTS = "signalwire_calling_events_total"
TEN_DLC_EVENTS = "signalwire_10dlc_events_total"

_JITTER_UNIT = 0.001  # AudioInJitter*Variance arrive in milliseconds (reference §2)


_Metric = TypeVar("_Metric", bound=MetricWrapperBase)


# --- per-event series as plain numbers ------------------------------------------------------
# prometheus-client locks and walks the buckets in Python on every update: about 1 us per
# observation, and a completed call makes a dozen. The per-event call series are plain
# floats instead, read by one collector at scrape time. No lock is needed: only the event
# loop's thread updates them, and a scrape renders them in that same thread.

Labels = tuple[str, ...]

# An exemplar as recorded: (sid, value, unix time). The one place a CallSid or MessageSid
# appears in the exposition: an exemplar is not a label and makes no series, and only
# OpenMetrics carries it (the plain text format drops it). A tuple, not an Exemplar, so
# that recording one on the hot path is one tuple and one dict store.
ExemplarOf = tuple[str, float, float]
# OpenMetrics allows 128 characters of exemplar label names and values; a longer sid (the
# parsers accept up to 256) is left out rather than break the scrape.
EXEMPLAR_MAX_CHARS = 128


def _exemplar(label: str, recorded: ExemplarOf | None) -> Exemplar | None:
    if recorded is None or len(label) + len(recorded[0]) > EXEMPLAR_MAX_CHARS:
        return None
    sid, value, at = recorded
    return Exemplar({label: sid}, value, at)


class PlainCounter:
    """A labelled counter: one float per label set.

    With an ``exemplar_label`` (``call_sid``, ``message_sid``), ``exemplars`` holds the
    latest exemplar of each label set, which the recorder stores there.
    """

    __slots__ = ("documentation", "exemplar_label", "exemplars", "labelnames", "name",
                 "values")

    def __init__(self, name: str, documentation: str, labelnames: Labels,
                 series: Iterable[Labels] = (), exemplar_label: str = "") -> None:
        self.name, self.documentation, self.labelnames = name, documentation, labelnames
        self.values: dict[Labels, float] = dict.fromkeys(series, 0.0)
        self.exemplar_label = exemplar_label
        self.exemplars: dict[Labels, ExemplarOf] = {}

    def inc(self, labels: Labels, amount: float = 1.0) -> None:
        values = self.values
        values[labels] = values.get(labels, 0.0) + amount

    def family(self) -> Metric:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        exemplars, label = self.exemplars, self.exemplar_label
        for labels, value in self.values.items():
            family.add_metric(labels, value,
                              exemplar=_exemplar(label, exemplars.get(labels)) if exemplars
                              else None)
        return family


class PlainGauge(PlainCounter):
    """A labelled gauge: a PlainCounter whose values may go down, rendered as a gauge."""

    __slots__ = ()

    def family(self) -> Metric:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, value in self.values.items():
            family.add_metric(labels, value)
        return family


class PlainHistogram:
    """A histogram per label set: one count per bucket, then the sum, in one list.

    With an ``exemplar_label``, ``exemplars`` holds the latest exemplar of each bucket
    (key: label set, then bucket index), stored by ``observe_exemplar``.
    """

    __slots__ = ("_le", "bounds", "documentation", "exemplar_label", "exemplars",
                 "labelnames", "name", "series")

    def __init__(self, name: str, documentation: str, labelnames: Labels,
                 bounds: Iterable[float], series: Iterable[Labels],
                 exemplar_label: str = "") -> None:
        self.name, self.documentation, self.labelnames = name, documentation, labelnames
        bounds = tuple(float(b) for b in bounds)
        self.bounds = bounds if bounds and bounds[-1] == math.inf else (*bounds, math.inf)
        self._le = [floatToGoString(b) for b in self.bounds]  # type: ignore[no-untyped-call]
        self.series: dict[Labels, list[float]] = {
            labels: [0.0] * (len(self.bounds) + 1) for labels in series}
        self.exemplar_label = exemplar_label
        self.exemplars: dict[tuple[Labels, int], ExemplarOf] = {}

    def observe(self, labels: Labels, value: float) -> int:
        """Count ``value`` in the first bucket whose bound is >= it (Prometheus' ``le``);
        return that bucket's index."""
        counts = self.series.get(labels)
        if counts is None:  # a label set not made up front: an app or line slice
            counts = self.series[labels] = [0.0] * (len(self.bounds) + 1)
        index = bisect_left(self.bounds, value)
        counts[index] += 1
        counts[-1] += value
        return index

    def observe_exemplar(self, labels: Labels, value: float, sid: str, at: float) -> None:
        """``observe``, and make ``sid`` (at unix time ``at``) its bucket's exemplar."""
        self.exemplars[labels, self.observe(labels, value)] = (sid, value, at)

    def family(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        exemplars, label = self.exemplars, self.exemplar_label
        for labels, counts in self.series.items():
            cumulative = zip(self._le, itertools.accumulate(counts[:-1]), strict=True)
            if exemplars:
                family.add_metric(labels, [
                    (le, count) if (ex := _exemplar(label, exemplars.get((labels, i)))) is None
                    else (le, count, ex) for i, (le, count) in enumerate(cumulative)],
                    counts[-1])
            else:
                family.add_metric(labels, list(cumulative), counts[-1])
        return family


Plain = PlainCounter | PlainHistogram


class PlainSeries(Collector):
    """The collector that renders plain series; register it once they all exist."""

    def __init__(self, series: Iterable[Plain]) -> None:
        self.series = tuple(series)

    def collect(self) -> Iterator[Metric]:
        for series in self.series:
            yield series.family()

    def describe(self) -> Iterator[Metric]:
        """The names, so that the registry refuses another metric of the same name."""
        return self.collect()


def sip_labels(code: int) -> tuple[str, str]:
    """(code, class) label values for a SIP response code, both from a fixed set."""
    return (str(code) if code in SIP_CODES else "other"), f"{code // 100}xx"


class ExporterMetrics:
    """All metrics of one exporter instance, on one registry."""

    def __init__(self, registry: CollectorRegistry, buckets: BucketsConfig,
                 tracked_calls: Callable[[], int], slice_names: Labels = ()) -> None:
        """``slice_names``: the user's ``app``/``line`` labels (``slices``), which follow
        ``direction`` wherever it is a label; the series made up front have them empty."""
        def counter(name: str, doc: str, labels: Iterable[str]) -> Counter:
            return Counter(name, doc, list(labels), registry=registry)

        empty = ("",) * len(slice_names)
        dl = ("direction", *slice_names)  # the labels of a call: direction, then its slice
        by_direction = [(d, *empty) for d in DIRECTIONS]

        def histogram(name: str, doc: str, bounds: tuple[float, ...],
                      exemplar_label: str = "") -> PlainHistogram:
            return PlainHistogram(name, doc, dl, bounds, by_direction, exemplar_label)

        self.status_events = PlainCounter(
            "signalwire_call_status_events_total",
            "Call status changes received; each (CallSid, SequenceNumber, status) once.",
            ("status", *dl), [(s, *d) for s, d in itertools.product(CALL_STATUSES,
                                                                   by_direction)])
        self.calls = PlainCounter(
            "signalwire_calls_total",
            "Calls that reached a final status, counted once per call.",
            ("status", *dl), [(s, *d) for s, d in itertools.product(
                sorted(FINAL_CALL_STATUSES), by_direction)], exemplar_label="call_sid")
        self.in_progress = PlainGauge(
            "signalwire_calls_in_progress", "Calls answered and not yet final.",
            dl, by_direction)
        self.duration = histogram(
            "signalwire_call_duration_seconds", "CallDuration of completed calls.",
            buckets.call_duration_seconds, "call_sid")
        self.mos = histogram(
            "signalwire_call_mos",
            "AudioInMos (mean opinion score, 1-5) of calls that report it, once per call.",
            buckets.mos, "call_sid")
        self.jitter_max = histogram(
            "signalwire_call_jitter_max_seconds",
            "AudioInJitterMaxVariance of calls that report quality, in seconds.",
            buckets.jitter_seconds)
        self.jitter_min = histogram(
            "signalwire_call_jitter_min_seconds",
            "AudioInJitterMinVariance of calls that report quality, in seconds.",
            buckets.jitter_seconds)
        self.packet_loss = histogram(
            "signalwire_call_packet_loss_ratio",
            "Inbound audio packet loss per call: skipped / (received + skipped).",
            buckets.packet_loss_ratio)
        self.audio_packets = PlainCounter(
            "signalwire_call_audio_in_packets_total",
            "Inbound audio packets of calls that report quality, by result "
            "(received, lost = skipped, discarded = flushed from the jitter buffer).",
            (*dl, "result"))
        self.post_dial_delay = histogram(
            "signalwire_call_post_dial_delay_seconds",
            "Post-dial delay: initiated to ringing, from the events' Timestamps (1 s resolution).",
            buckets.post_dial_delay_seconds)
        self.time_to_answer = histogram(
            "signalwire_call_time_to_answer_seconds",
            "Ringing to answered (in-progress), from the events' Timestamps (1 s resolution).",
            buckets.time_to_answer_seconds)
        self.sip_responses = PlainCounter(
            "signalwire_call_sip_responses_total",
            "SIP final response to the INVITE, once per call; uncommon codes as code=\"other\".",
            (*dl, "code", "class"))
        self.expired = PlainCounter(
            "signalwire_calls_expired_total",
            "Calls dropped from tracking without a final status "
            "(reason: ttl = too old, capacity = store full).",
            (*dl, "reason"), [(*d, r) for d, r in itertools.product(by_direction,
                                                                  ("ttl", "capacity"))])
        self.end_reasons = PlainCounter(
            "signalwire_call_end_reasons_total",
            "Why calls of SignalWire's JSON call-state events ended (end_reason, "
            "normalised; unknown for new values), once per call with its final status.",
            ("reason", *dl), [(r, *d) for r, d in itertools.product(END_REASONS,
                                                                  by_direction)])
        self.calling_events = PlainCounter(
            CALLING_EVENTS,
            "JSON calling.* events received (SWML, RELAY, Calling API) by event type and "
            "state, each event once; unknown for new values.",
            ("event_type", "state"),
            [(kind, state) for kind, states in CALLING_EVENT_STATES.items() for state in states])
        self.ten_dlc_events = PlainCounter(
            TEN_DLC_EVENTS,
            "10DLC status callbacks (brand, campaign, number assignment) by category and "
            "event type, each event once; unknown for new values.",
            ("category", "event_type"),
            itertools.product(TEN_DLC_CATEGORIES, TEN_DLC_EVENT_TYPES))
        self.callbacks = PlainCounter(
            "signalwire_exporter_callbacks_total",
            "Requests to callback endpoints by outcome.", ("endpoint", "outcome"),
            itertools.product(ENDPOINTS, OUTCOMES))
        self.reconciled = PlainCounter(
            "signalwire_calls_reconciled_total",
            "Calls whose final status came from the REST API because no final callback "
            "arrived (also counted in signalwire_calls_total), once per call.", ("status",),
            [(status,) for status in sorted(FINAL_CALL_STATUSES)])
        self.price = PlainCounter(
            "signalwire_call_price_total",
            "What calls that reached a final status cost, as the REST API reports it, in "
            "units of the currency (positive = charged), once per call.",
            ("direction", "currency"))
        # The cluster-wide call series: what a shared state backend keeps for the group.
        self.shared: tuple[Plain, ...] = (
            self.status_events, self.calls, self.in_progress, self.duration, self.mos,
            self.jitter_max, self.jitter_min, self.packet_loss, self.audio_packets,
            self.post_dial_delay, self.time_to_answer, self.sip_responses, self.expired,
            self.end_reasons, self.calling_events, self.ten_dlc_events, self.reconciled,
            self.price)
        registry.register(PlainSeries((*self.shared, self.callbacks)))
        # The cluster-wide counters that no tracker decides: Store.count_once adds to them
        # by family name.
        self.once_counters: dict[str, PlainCounter] = {
            counter.name: counter for counter in (self.calling_events, self.ten_dlc_events)}
        self.late_events = counter(
            "signalwire_exporter_late_events_total",
            "Events that arrived after a newer event of the same call, or non-final statuses "
            "after the final one of a message, recording or transcription (counted, not "
            "applied).",
            ("endpoint",))
        self.invalid_fields = counter(
            "signalwire_exporter_invalid_fields_total",
            "Optional callback fields skipped because their value was not valid for them "
            "(the callback itself accepted), by endpoint and field name.",
            ("endpoint", "field"))
        self.http_errors = counter(
            "signalwire_exporter_http_errors_total",
            "Requests refused before reaching an endpoint's handler, by status: 404 unknown "
            "path, 405 wrong method, 400/431 malformed HTTP, 415 unsupported "
            "Content-Encoding, 417 unsupported Expect (others as status=\"other\").",
            ("status",))
        self.timestamp_errors = counter(
            "signalwire_exporter_timestamp_errors_total",
            "Callbacks whose Timestamp could not be parsed (receive time not used for delays).",
            ("endpoint",))
        tracked = Gauge("signalwire_exporter_tracked_calls",
                        "Calls currently held in the per-call tracking store.",
                        registry=registry)
        tracked.set_function(lambda: float(tracked_calls()))
        info = Gauge("signalwire_exporter_build_info",
                     "Always 1; the exporter version as a label.", ["version"],
                     registry=registry)
        info.labels(__version__).set(1)

        self._children: dict[tuple[MetricWrapperBase, tuple[str, ...]], MetricWrapperBase] = {}
        for endpoint in ENDPOINTS:
            self.late_events.labels(endpoint)
        for endpoint in CALL_ENDPOINTS:
            self.timestamp_errors.labels(endpoint)
        for status in HTTP_ERROR_STATUSES:
            self._child(self.http_errors, status)
        for endpoint, names in INVALID_FIELDS.items():
            for name in names:
                self._child(self.invalid_fields, endpoint, name)

    def _child(self, metric: _Metric, *values: str) -> _Metric:
        """``metric.labels(*values)``, cached: labels() validates and locks on every call."""
        key = (metric, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return cast(_Metric, child)

    def callback(self, endpoint: str, outcome: str) -> None:
        self.callbacks.inc((endpoint, outcome))

    def http_error(self, status: int) -> None:
        label = str(status)
        self._child(self.http_errors, label if label in HTTP_ERROR_STATUSES else "other").inc()

    def invalid(self, endpoint: str, names: Iterable[str]) -> None:
        """Count skipped fields; ``names`` come from INVALID_FIELDS[endpoint] (bounded)."""
        for name in names:
            self._child(self.invalid_fields, endpoint, name).inc()

    def record_call_event(self, event: CallEvent, decision: Decision) -> None:
        """This replica's own count of a non-duplicate call event: late, bad Timestamp."""
        if event.timestamp_invalid:
            self._child(self.timestamp_errors, event.endpoint).inc()
        if decision.late:
            self._child(self.late_events, event.endpoint).inc()

    def record_call(self, event: CallEvent, decision: Decision) -> None:
        """Record one non-duplicate call event in the cluster-wide call metrics."""
        slice_ = decision.slice
        labels = (decision.direction, *slice_) if slice_ else (decision.direction,)
        self.status_events.inc((decision.status, *labels))
        if decision.final_status is not None:
            final = (decision.final_status, *labels)
            self.calls.inc(final)
            self.calls.exemplars[final] = (event.call_sid, 1.0, time.time())
            if event.end_reason is not None:
                self.end_reasons.inc((event.end_reason, *labels))
        if decision.in_progress_delta:
            self.in_progress.inc(labels, decision.in_progress_delta)
        if decision.moved_from is not None:
            self.in_progress.inc((decision.moved_from, *slice_), -1)
            self.in_progress.inc(labels)
        if decision.observe_duration and event.call_duration is not None:
            self.duration.observe_exemplar(labels, event.call_duration, event.call_sid,
                                           time.time())
        if decision.observe_quality:
            self._record_quality(event, labels)
        if decision.observe_sip and event.sip_result_code is not None:
            self.sip_responses.inc((*labels, *sip_labels(event.sip_result_code)))
        if decision.post_dial_delay is not None:
            self.post_dial_delay.observe(labels, decision.post_dial_delay)
        if decision.time_to_answer is not None:
            self.time_to_answer.observe(labels, decision.time_to_answer)

    def _record_quality(self, event: CallEvent, by_direction: Labels) -> None:
        if event.audio_in_mos:
            self.mos.observe_exemplar(by_direction, event.audio_in_mos, event.call_sid,
                                      time.time())
        if event.audio_in_jitter_max_variance is not None:
            self.jitter_max.observe(by_direction,
                                    event.audio_in_jitter_max_variance * _JITTER_UNIT)
        if event.audio_in_jitter_min_variance is not None:
            self.jitter_min.observe(by_direction,
                                    event.audio_in_jitter_min_variance * _JITTER_UNIT)
        loss = event.packet_loss_ratio
        if loss is not None:
            self.packet_loss.observe(by_direction, loss)
        for result, count in (("received", event.audio_in_media_packet_count),
                              ("lost", event.audio_in_skip_packet_count),
                              ("discarded", event.audio_in_flush_packet_count)):
            if count:
                self.audio_packets.inc((*by_direction, result), count)

    def record_departed(self, departed: Iterable[Departed]) -> None:
        for call in departed:
            labels = (call.direction, *call.slice)
            if call.was_in_progress:
                self.in_progress.inc(labels, -1)
            if call.unfinished:
                self.expired.inc((*labels, call.reason))


# --- the same records as operations, for a store that applies them elsewhere -----------------
# A shared store (redis_store) decides an event where the state lives and applies there
# the increments the decision grants. These list every increment an event could make,
# each behind the condition the store evaluates: e = not a duplicate, f = the final
# status was decided, d/q/s = duration/quality/SIP observed, g<bit> = a one-shot grant.
# In a field, @D stands for the call's direction, @S for the status recorded and @F for
# the final status, which only the store knows. An operation on a family named
# ``<name>:ex`` sets that series' exemplar to its value, ``<sid>|<value>|<unix time>``,
# instead of adding. What record_call and StatusMetrics.record do in this process, these
# must do there: tests/test_redis_store.py holds them equal.

Ops = list[str | float]
EXEMPLARS = ":ex"  # the suffix of an exemplar operation's family


def _exemplar_op(ops: Ops, cond: str, series: Plain, field: str, value: float,
                 at: float) -> None:
    # @I: the event's sid, which the store fills in (so no operation carries what the
    # provider sent: the operations travel as one tab-separated string)
    ops += (cond, series.name + EXEMPLARS, field, f"@I|{value!r}|{at!r}")


def _observe_ops(ops: Ops, cond: str, histogram: PlainHistogram, prefix: str,
                 value: float, exemplar_at: float | None = None) -> None:
    """Observe ``value``; with ``exemplar_at`` (unix time) also make the event the bucket's
    exemplar."""
    bucket = f"{prefix}{bisect_left(histogram.bounds, value)}"
    ops += (cond, histogram.name, bucket, 1, cond, histogram.name, f"{prefix}s", value)
    if exemplar_at is not None:
        _exemplar_op(ops, cond, histogram, bucket, value, exemplar_at)


def call_ops(metrics: ExporterMetrics, event: CallEvent, at: float) -> Ops:
    """The operations ``record_call`` would perform for ``event``, whatever the decision;
    ``at``: the unix time of its exemplars."""
    ops: Ops = ["e", metrics.status_events.name, "@S|@D", 1,
                "f", metrics.calls.name, "@F|@D", 1]
    _exemplar_op(ops, "f", metrics.calls, "@F|@D", 1.0, at)
    if event.end_reason is not None:
        ops += ("f", metrics.end_reasons.name, f"{event.end_reason}|@D", 1)
    if event.call_duration is not None:
        _observe_ops(ops, "d", metrics.duration, "@D|", event.call_duration, at)
    if event.audio_in_mos:
        _observe_ops(ops, "q", metrics.mos, "@D|", event.audio_in_mos, at)
        if event.audio_in_jitter_max_variance is not None:
            _observe_ops(ops, "q", metrics.jitter_max, "@D|",
                         event.audio_in_jitter_max_variance * _JITTER_UNIT)
        if event.audio_in_jitter_min_variance is not None:
            _observe_ops(ops, "q", metrics.jitter_min, "@D|",
                         event.audio_in_jitter_min_variance * _JITTER_UNIT)
        loss = event.packet_loss_ratio
        if loss is not None:
            _observe_ops(ops, "q", metrics.packet_loss, "@D|", loss)
        for result, count in (("received", event.audio_in_media_packet_count),
                              ("lost", event.audio_in_skip_packet_count),
                              ("discarded", event.audio_in_flush_packet_count)):
            if count:
                ops += ("q", metrics.audio_packets.name, f"@D|{result}", count)
    if event.sip_result_code is not None:
        code, klass = sip_labels(event.sip_result_code)
        ops += ("s", metrics.sip_responses.name, f"@D|{code}|{klass}", 1)
    return ops


ItemEvent = MessageEvent | RecordingEvent | TranscriptionEvent

# One-shot observations a StatusTracker grants once per item (StatusDecision.granted).
ONCE_ERROR_CODE = 1
ONCE_SEGMENTS = 2
ONCE_DURATION = 4
ONCE_TEXT = 8


def _as_float(size: Callable[[], int]) -> Callable[[], float]:
    return lambda: float(size())


def wants(event: ItemEvent) -> int:
    """The one-shot observations this event could make, for StatusTracker.track."""
    if isinstance(event, MessageEvent):
        return ((ONCE_ERROR_CODE if event.error_code else 0)
                | (ONCE_SEGMENTS if event.num_segments is not None else 0))
    if isinstance(event, RecordingEvent):
        return ONCE_DURATION if event.status == "completed" and event.duration is not None else 0
    return ONCE_TEXT if event.status == "completed" and event.text_length is not None else 0


class StatusMetrics:
    """Metrics of messages, recordings and transcriptions, on the exporter's registry.

    ``tracked`` maps each kind (message, recording, transcription) to its tracker's size.
    Plain series like the call ones: a shared state backend keeps them for the group.
    """

    def __init__(self, registry: CollectorRegistry, buckets: BucketsConfig,
                 tracked: dict[str, Callable[[], int]], slice_names: Labels = ()) -> None:
        def counter(name: str, doc: str, labels: Labels = (),
                    values: Iterable[str] | None = None) -> PlainCounter:
            series: Iterable[Labels] = [()] if values is None else [(v,) for v in values]
            return PlainCounter(name, doc, labels, series)

        def histogram(name: str, doc: str, bounds: tuple[float, ...]) -> PlainHistogram:
            return PlainHistogram(name, doc, (), bounds, [()])

        self.message_events = counter(
            "signalwire_message_status_events_total",
            "SMS/MMS status changes received; each (MessageSid, status) once.", ("status",),
            MESSAGE_STATUSES)
        self.messages = PlainCounter(
            "signalwire_messages_total",
            "Messages that reached a final status, counted once per message.",
            ("status", *slice_names),
            [(status, *("",) * len(slice_names)) for status in sorted(FINAL_MESSAGE_STATUSES)],
            exemplar_label="message_sid")
        self.message_errors = counter(
            "signalwire_message_errors_total",
            "Messages that reported an ErrorCode, once per message; uncommon codes as "
            "code=\"other\".", ("code",), (*sorted(MESSAGE_ERROR_CODES), "other"))
        self.message_segments = counter(
            "signalwire_message_segments_total",
            "Segments (NumSegments) of messages, counted once per message.")
        self.message_delivery = histogram(
            "signalwire_message_delivery_seconds",
            "Time from queued/sending/sent to delivered, once per message, between the "
            "exporter's receive times of the two callbacks.",
            buckets.message_delivery_seconds)
        self.recordings = counter(
            "signalwire_recordings_total",
            "Recording status changes; each (RecordingSid, status) once.", ("status",),
            RECORDING_STATUSES)
        self.recording_duration = histogram(
            "signalwire_recording_duration_seconds",
            "RecordingDuration of completed recordings, once per recording.",
            buckets.recording_duration_seconds)
        self.transcriptions = counter(
            "signalwire_transcriptions_total",
            "Transcription status changes; each (TranscriptionSid, status) once.", ("status",),
            TRANSCRIPTION_STATUSES)
        self.transcription_text = histogram(
            "signalwire_transcription_text_characters",
            "Length of the text of completed transcriptions, in characters.",
            buckets.transcription_text_characters)
        self.expired = PlainCounter(
            "signalwire_exporter_items_expired_total",
            "Messages, recordings and transcriptions dropped from tracking without a final "
            "status (reason: ttl = too old, capacity = store full).", ("kind", "reason"),
            itertools.product(tracked, ("ttl", "capacity")))
        self.shared: tuple[Plain, ...] = (
            self.message_events, self.messages, self.message_errors, self.message_segments,
            self.message_delivery, self.recordings, self.recording_duration,
            self.transcriptions, self.transcription_text, self.expired)
        registry.register(PlainSeries(self.shared))
        tracked_items = Gauge(
            "signalwire_exporter_tracked_items",
            "Messages, recordings and transcriptions held for de-duplication, by kind.",
            ["kind"], registry=registry)
        for kind, size in tracked.items():
            tracked_items.labels(kind).set_function(_as_float(size))

    def record(self, event: ItemEvent, decision: StatusDecision) -> None:
        """Record one non-duplicate event."""
        once = decision.granted
        if isinstance(event, MessageEvent):
            self.message_events.inc((event.status,))
            if decision.final_status is not None:
                final = (decision.final_status, *event.slice)
                self.messages.inc(final)
                self.messages.exemplars[final] = (event.sid, 1.0, time.time())
            if once & ONCE_ERROR_CODE and event.error_code:
                self.message_errors.inc((message_error_label(event.error_code),))
            if once & ONCE_SEGMENTS and event.num_segments:
                self.message_segments.inc((), event.num_segments)
            if decision.elapsed is not None:
                self.message_delivery.observe((), decision.elapsed)
        elif isinstance(event, RecordingEvent):
            self.recordings.inc((event.status,))
            if once & ONCE_DURATION and event.duration is not None:
                self.recording_duration.observe((), event.duration)
        else:
            self.transcriptions.inc((event.status,))
            if once & ONCE_TEXT and event.text_length is not None:
                self.transcription_text.observe((), event.text_length)

    def record_departed(self, kind: str, reasons: Iterable[str]) -> None:
        for reason in reasons:
            self.expired.inc((kind, reason))


def item_ops(metrics: StatusMetrics, event: ItemEvent, at: float) -> Ops:
    """The operations ``StatusMetrics.record`` would perform for ``event`` (see call_ops);
    the delivery time is observed by the store itself, which alone knows it."""
    if isinstance(event, MessageEvent):
        final = "|".join(("@F", *event.slice))
        ops: Ops = ["e", metrics.message_events.name, event.status, 1,
                    "f", metrics.messages.name, final, 1]
        _exemplar_op(ops, "f", metrics.messages, final, 1.0, at)
        if event.error_code:
            ops += ("g1", metrics.message_errors.name, message_error_label(event.error_code), 1)
        if event.num_segments:
            ops += ("g2", metrics.message_segments.name, "", event.num_segments)
    elif isinstance(event, RecordingEvent):
        ops = ["e", metrics.recordings.name, event.status, 1]
        if event.duration is not None:
            _observe_ops(ops, f"g{ONCE_DURATION}", metrics.recording_duration, "",
                         event.duration)
    else:
        ops = ["e", metrics.transcriptions.name, event.status, 1]
        if event.text_length is not None:
            _observe_ops(ops, f"g{ONCE_TEXT}", metrics.transcription_text, "",
                         event.text_length)
    return ops


# --- SMS relay and failed-call report ------------------------------------------------------

API_OUTCOMES: tuple[str, ...] = (
    "sent", "client_error", "server_error", "rate_limited", "timeout", "connection_error")


class RelayMetrics:
    """The SMS relay's counters; a separate family from callbacks so the
    SignalWireCallbacksRejected alert never fires on a misdirected Alertmanager."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.notifications = Counter(
            "signalwire_exporter_alert_notifications_total",
            "Alertmanager notifications to /alerts/sms by outcome (sent, partial = some "
            "recipients texted, failed = none and may be retried, refused = API said no, "
            "duplicate = already relayed, or why the request was rejected).", ["outcome"],
            registry=registry)
        self.messages = Counter(
            "signalwire_exporter_sms_total",
            "SMS per recipient, after retries: sent, failed, or duplicate (not sent again: "
            "another delivery of the same notification did).", ["result"], registry=registry)
        self.api_requests = Counter(
            "signalwire_exporter_sms_api_requests_total",
            "Requests to the SignalWire Messages API, retries included, by outcome.",
            ["outcome"], registry=registry)
        for outcome in ("sent", "partial", "failed", "refused", "duplicate", "unauthorized",
                        "invalid"):
            self.notifications.labels(outcome)
        for result in ("sent", "failed", "duplicate"):
            self.messages.labels(result)
        for outcome in API_OUTCOMES:
            self.api_requests.labels(outcome)

    def notification(self, outcome: str) -> None:
        self.notifications.labels(outcome).inc()

    def sms(self, sent: bool) -> None:
        self.messages.labels("sent" if sent else "failed").inc()

    def sms_duplicate(self) -> None:
        self.messages.labels("duplicate").inc()

    def api_request(self, outcome: str) -> None:
        self.api_requests.labels(outcome).inc()


class ReportMetrics:
    def __init__(self, registry: CollectorRegistry, held: Callable[[], int]) -> None:
        self.requests = Counter(
            "signalwire_exporter_report_requests_total",
            "Requests to /reports/failed-calls by outcome (ok, invalid, unauthorized, "
            "unavailable: the shared state store is unreachable).",
            ["outcome"], registry=registry)
        self.entries = Gauge(
            "signalwire_exporter_report_failed_calls",
            "Unsuccessful calls held for /reports/failed-calls (bounded by config).",
            registry=registry)
        self.entries.set_function(lambda: float(held()))
        for outcome in ("ok", "invalid", "unauthorized", "unavailable"):
            self.requests.labels(outcome)

    def request(self, outcome: str) -> None:
        self.requests.labels(outcome).inc()


# --- REST API client ---------------------------------------------------------------------------

# One per attempt: ok, not_found (404: the API does not know the call), client_error (other
# 4xx, not retried), invalid (2xx whose body is not what the API documents), and the
# retried ones.
CALLS_API_OUTCOMES: tuple[str, ...] = (
    "ok", "not_found", "client_error", "invalid", "server_error", "rate_limited", "timeout",
    "connection_error")


class ApiMetrics:
    """Requests of the REST API client (signalwire_api.py): this replica's own."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "signalwire_exporter_api_requests_total",
            "Requests to the SignalWire REST API for reconciliation and prices, retries "
            "and list pages included, by outcome.", ["outcome"], registry=registry)
        self._requests = {outcome: self.requests.labels(outcome)
                          for outcome in CALLS_API_OUTCOMES}

    def request(self, outcome: str) -> None:
        self._requests[outcome].inc()
