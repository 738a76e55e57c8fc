"""Generate the bundled Grafana dashboard, so its JSON is reviewed as code and rebuilt the same way.

``python3 -m grafana.build`` rewrites ``grafana/dashboards/*.json``; ``--check`` only compares
and exits 1 when a committed file is stale (tests/test_grafana.py does the same in CI).

Query conventions, kept by the helpers below:
- every panel reads the ``$datasource`` variable, never a fixed datasource uid;
- raw exporter metrics are filtered by ``$job``, ``$instance`` and ``$direction`` and summed,
  so several replicas behind one job add up; recording rules (``alerts/``) are already summed
  over instances per job, so they take ``$job`` and ``$direction`` only;
- time series use ``$__rate_interval``; the top-row stats use 5-minute windows, like the
  recording rules and alerts they sit next to, so the row reads as one consistent "now".
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Json = dict[str, Any]

HERE = Path(__file__).resolve().parent
DASHBOARDS = HERE / "dashboards"
DATASOURCE: Json = {"type": "prometheus", "uid": "${datasource}"}
SCHEMA_VERSION = 39  # Grafana 10.4 / 11; newer Grafana migrates it on load

# Label matchers: raw metrics, recording rules (no instance label), per-target metrics.
RAW = 'job=~"$job", instance=~"$instance", direction=~"$direction"'
RULE = 'job=~"$job", direction=~"$direction"'
TARGET = 'job=~"$job", instance=~"$instance"'
JOB = 'job=~"$job"'  # recording rules of metrics without a direction (messages and the like)

ALL_INSTANCES = " Summed over all instances of the job (recording rule)."

# Colours of the final statuses and MOS tiers, shared by every panel that shows them.
STATUS_COLOURS = {"completed": "green", "busy": "orange", "no-answer": "yellow",
                  "failed": "red", "canceled": "purple", "unknown": "text"}

Step = tuple[float | None, str]
MOS_STEPS: list[Step] = [(None, "red"), (3.1, "dark-orange"), (3.5, "orange"),
                         (3.7, "yellow"), (4.2, "green")]
ASR_STEPS: list[Step] = [(None, "red"), (0.4, "yellow"), (0.6, "green")]
FAILURE_STEPS: list[Step] = [(None, "green"), (0.1, "yellow"), (0.2, "red")]
LOW_MOS_STEPS: list[Step] = [(None, "green"), (0.05, "yellow"), (0.1, "red")]
JITTER_STEPS: list[Step] = [(None, "green"), (0.005, "yellow"), (0.03, "red")]
LOSS_STEPS: list[Step] = [(None, "green"), (0.01, "yellow"), (0.05, "red")]
NEUTRAL: list[Step] = [(None, "blue")]
MESSAGE_FAILURE_STEPS: list[Step] = [(None, "green"), (0.05, "yellow"), (0.1, "red")]
MESSAGE_COLOURS = {"delivered": "green", "received": "blue", "read": "dark-green",
                   "undelivered": "orange", "failed": "red"}
ITEM_COLOURS = {"completed": "green", "in-progress": "blue", "absent": "yellow",
                "failed": "red", "unknown": "text"}


# --- PromQL helpers -----------------------------------------------------------------

def rate(metric: str, matchers: str = RAW, window: str = "$__rate_interval") -> str:
    return f"rate({metric}{{{matchers}}}[{window}])"


def increase(metric: str, matchers: str = RAW, window: str = "$__range") -> str:
    return f"increase({metric}{{{matchers}}}[{window}])"


def quantile(q: float, histogram: str, matchers: str = RAW) -> str:
    """Quantile over all selected instances and directions: sum the buckets first."""
    return f"histogram_quantile({q}, sum by (le) ({rate(histogram + '_bucket', matchers)}))"


def ratio(numerator: str, denominator: str) -> str:
    """No traffic gives no value ("No data"), not NaN, as in the recording rules."""
    return f"sum({numerator})\n/\n(sum({denominator}) > 0)"


def average(histogram: str, window: str = "$__rate_interval") -> str:
    """Mean of a histogram's observations: sum of rates of _sum over sum of rates of _count."""
    return ratio(rate(histogram + "_sum", RAW, window), rate(histogram + "_count", RAW, window))


# --- panel helpers ------------------------------------------------------------------

def target(expr: str, legend: str = "", *, instant: bool = False, heatmap: bool = False) -> Json:
    out: Json = {"datasource": DATASOURCE, "editorMode": "code", "expr": expr,
                 "instant": instant, "legendFormat": legend or "__auto", "range": not instant}
    if heatmap:
        out["format"] = "heatmap"
    return out


def thresholds(steps: Sequence[Step]) -> Json:
    return {"mode": "absolute",
            "steps": [{"color": colour, "value": value} for value, colour in steps]}


def colour_overrides(colours: dict[str, str]) -> list[Json]:
    return [{"matcher": {"id": "byName", "options": name},
             "properties": [{"id": "color", "value": {"fixedColor": colour, "mode": "fixed"}}]}
            for name, colour in colours.items()]


def _panel(kind: str, title: str, description: str, unit: str, targets: Sequence[Json],
           steps: Sequence[Step], options: Json, defaults: Json | None = None,
           overrides: Sequence[Json] = ()) -> Json:
    for ref, item in zip("ABCDEFGHIJ", targets, strict=False):
        item["refId"] = ref
    return {
        "type": kind, "title": title, "description": description, "datasource": DATASOURCE,
        "targets": list(targets),
        "fieldConfig": {"defaults": {"unit": unit, "thresholds": thresholds(steps),
                                     **(defaults or {})},
                        "overrides": list(overrides)},
        "options": options,
    }


def stat(title: str, description: str, unit: str, expr: str, steps: Sequence[Step],
         decimals: int = 2) -> Json:
    return _panel("stat", title, description, unit, [target(expr, title)], steps, {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "value", "graphMode": "area", "justifyMode": "auto",
        "orientation": "auto", "textMode": "value", "wideLayout": True,
        "showPercentChange": False,
    }, {"color": {"mode": "thresholds"}, "decimals": decimals})


def timeseries(title: str, description: str, unit: str, targets: Sequence[Json], *,
               steps: Sequence[Step] = NEUTRAL, stacked: bool = False,
               show_thresholds: bool = False, colours: dict[str, str] | None = None,
               bounds: tuple[float, float] | None = None) -> Json:
    custom: Json = {
        "drawStyle": "line", "lineInterpolation": "linear", "lineWidth": 1,
        "fillOpacity": 20 if stacked else 0, "showPoints": "never", "spanNulls": False,
        "stacking": {"group": "A", "mode": "normal" if stacked else "none"},
        "thresholdsStyle": {"mode": "dashed" if show_thresholds else "off"},
    }
    defaults: Json = {"color": {"mode": "palette-classic"}, "custom": custom}
    if bounds is not None:
        defaults["min"], defaults["max"] = bounds
    return _panel("timeseries", title, description, unit, targets, steps, {
        "legend": {"calcs": [], "displayMode": "list", "placement": "bottom",
                   "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }, defaults, colour_overrides(colours or {}))


def heatmap(title: str, description: str, histogram: str, unit: str) -> Json:
    """Bucket counts per time slot; the panel's 1m minimum interval keeps slots apart."""
    expr = f"sum by (le) ({increase(histogram + '_bucket', RAW, '$__interval')})"
    panel = _panel("heatmap", title, description, unit,
                   [target(expr, "{{le}}", heatmap=True)], NEUTRAL, {
                       "calculate": False, "cellGap": 1,
                       "cellValues": {"unit": "short"},
                       "color": {"exponent": 0.5, "fill": "dark-orange", "mode": "scheme",
                                 "reverse": False, "scale": "exponential",
                                 "scheme": "Oranges", "steps": 64},
                       "exemplars": {"color": "rgba(255,0,255,0.7)"},
                       "filterValues": {"le": 1e-9},
                       "legend": {"show": True},
                       "rowsFrame": {"layout": "auto"},
                       "tooltip": {"mode": "single", "showColorScale": False,
                                   "yHistogram": True},
                       "yAxis": {"axisPlacement": "left", "reverse": False, "unit": unit},
                   })
    panel["interval"] = "1m"
    return panel


def bargauge(title: str, description: str, unit: str, targets: Sequence[Json],
             steps: Sequence[Step] = NEUTRAL, colours: dict[str, str] | None = None) -> Json:
    return _panel("bargauge", title, description, unit, targets, steps, {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "displayMode": "gradient", "orientation": "horizontal", "showUnfilled": True,
        "valueMode": "color", "namePlacement": "auto", "sizing": "auto",
        "minVizHeight": 16, "minVizWidth": 8, "maxVizHeight": 300,
    }, {"color": {"mode": "thresholds"}, "decimals": 0, "min": 0},
        colour_overrides(colours or {}))


# --- layout -------------------------------------------------------------------------

@dataclass
class Section:
    """A dashboard row: a title (None = no row header) and lines of (width, panel)."""

    title: str | None
    lines: list[tuple[int, list[tuple[int, Json]]]] = field(default_factory=list)

    def line(self, height: int, *panels: tuple[int, Json]) -> Section:
        if sum(width for width, _ in panels) > 24:
            raise ValueError(f"line wider than 24 in section {self.title!r}")
        self.lines.append((height, list(panels)))
        return self


def layout(sections: Sequence[Section]) -> list[Json]:
    """Place panels left to right, top to bottom, and number them in that order."""
    panels: list[Json] = []
    y = 0

    def add(panel: Json, x: int, width: int, height: int) -> None:
        panel["id"] = len(panels) + 1
        panel["gridPos"] = {"h": height, "w": width, "x": x, "y": y}
        panels.append(panel)

    for section in sections:
        if section.title is not None:
            add({"type": "row", "title": section.title, "collapsed": False, "panels": []},
                0, 24, 1)
            y += 1
        for height, line in section.lines:
            x = 0
            for width, panel in line:
                add(panel, x, width, height)
                x += width
            y += height
    return panels


# --- the calls dashboard ------------------------------------------------------------

def _completed() -> str:
    return f'signalwire:calls:rate5m{{{RULE}, status="completed"}}'


def _attempts() -> str:
    return f"signalwire:call_attempts:rate5m{{{RULE}}}"


def overview() -> Section:
    return Section(None).line(
        4,
        (4, stat("Calls per second",
                 "Calls that reached a final status, per second, over the last 5 minutes."
                 + ALL_INSTANCES, "cps", f"sum({_attempts()})", NEUTRAL, 3)),
        (4, stat("Answer-seizure ratio",
                 "Completed calls / all final calls over the last 5 minutes. 60-70% is "
                 "often called very good, but it depends on the traffic mix." + ALL_INSTANCES,
                 "percentunit", ratio(_completed(), _attempts()), ASR_STEPS, 1)),
        (4, stat("Failure ratio",
                 "Calls that ended failed, busy or no-answer / all final calls over the "
                 "last 5 minutes. SignalWireCallFailureRatioHigh fires above 20% over 15 "
                 "minutes." + ALL_INSTANCES, "percentunit",
                 ratio(f'signalwire:calls:rate5m{{{RULE}, status=~"failed|busy|no-answer"}}',
                       _attempts()), FAILURE_STEPS, 1)),
        (4, stat("Calls in progress",
                 "Answered calls not yet final, summed over the selected instances. Stays 0 "
                 "unless the 'answered' status callback event is subscribed.", "short",
                 f"sum(signalwire_calls_in_progress{{{RAW}}})", NEUTRAL, 0)),
        (4, stat("Average call duration",
                 "Mean CallDuration of completed calls that ended in the last 5 minutes.",
                 "s", average("signalwire_call_duration_seconds", "5m"), NEUTRAL, 0)),
        (4, stat("Low-MOS calls",
                 "Share of calls with MOS below 3.5 among calls that reported MOS in the last "
                 "5 minutes. SignalWireCallQualityLow fires above 10% over 15 minutes.",
                 "percentunit",
                 ratio(rate("signalwire_call_mos_bucket", RAW + ', le="3.5"', "5m"),
                       rate("signalwire_call_mos_count", RAW, "5m")), LOW_MOS_STEPS, 1)),
    )


def calls() -> Section:
    return Section("Calls").line(
        8,
        (12, timeseries("Final calls by status",
                        "Calls per second by the final status they reached." + ALL_INSTANCES,
                        "cps",
                        [target(f"sum by (status) (signalwire:calls:rate5m{{{RULE}}})",
                                "{{status}}")],
                        stacked=True, colours=STATUS_COLOURS)),
        (12, timeseries("Final calls by direction",
                        "Calls per second that reached a final status, by direction."
                        + ALL_INSTANCES, "cps",
                        [target(f"sum by (direction) (signalwire:calls:rate5m{{{RULE}}})",
                                "{{direction}}")], stacked=True)),
    ).line(
        8,
        (8, timeseries("Answer-seizure ratio by direction",
                       "Completed / all final calls, 5-minute windows." + ALL_INSTANCES,
                       "percentunit",
                       [target(f"signalwire:call_answer_seizure_ratio:5m{{{RULE}}}",
                               "{{direction}}")],
                       steps=ASR_STEPS, show_thresholds=True, bounds=(0, 1))),
        (8, timeseries("Failure ratio by direction",
                       "(failed + busy + no-answer) / all final calls, 5-minute windows."
                       + ALL_INSTANCES, "percentunit",
                       [target(f"signalwire:call_failure_ratio:5m{{{RULE}}}",
                               "{{direction}}")],
                       steps=FAILURE_STEPS, show_thresholds=True, bounds=(0, 1))),
        (8, timeseries("Status changes received",
                       "Every call status change (initiated, ringing, in-progress, finals), "
                       "each delivery counted once. Only the events subscribed with "
                       "StatusCallbackEvent arrive." + ALL_INSTANCES, "cps",
                       [target(f"sum by (status) (signalwire:call_status_events:rate5m{{{RULE}}})",
                               "{{status}}")], colours=STATUS_COLOURS)),
    )


def failures() -> Section:
    sip = "signalwire_call_sip_responses_total"
    sip_note = " Empty until a callback carries SipResultCode."
    failed_sip = increase(sip, RAW + ', class!~"1xx|2xx"')
    return Section("Failures").line(
        8,
        (8, timeseries("Unsuccessful calls by status",
                       "Calls per second that ended busy, no-answer, failed or canceled."
                       + ALL_INSTANCES, "cps",
                       [target(f'sum by (status) (signalwire:calls:rate5m{{{RULE}, '
                               f'status!="completed"}})', "{{status}}")],
                       stacked=True, colours=STATUS_COLOURS)),
        (8, timeseries("SIP final responses by class",
                       "SIP final response to the INVITE, once per call, by class." + sip_note,
                       "cps", [target(f"sum by (class) ({rate(sip)})", "{{class}}")],
                       stacked=True, colours={"2xx": "green", "3xx": "blue", "4xx": "orange",
                                              "5xx": "red", "6xx": "purple"})),
        (8, bargauge("Top SIP failure codes",
                     "Most frequent non-2xx SIP final responses in the selected time range; "
                     'uncommon codes are grouped as "other".' + sip_note, "short",
                     [target(f"topk(10, sum by (code) ({failed_sip}))",
                             "{{code}}", instant=True)], [(None, "orange")])),
    )


def duration() -> Section:
    hist = "signalwire_call_duration_seconds"
    return Section("Call duration").line(
        8,
        (8, timeseries("Call duration percentiles",
                       "CallDuration of completed calls: percentiles from the histogram "
                       "(estimates within a bucket) and the exact mean.", "s",
                       [target(quantile(0.5, hist), "p50"), target(quantile(0.9, hist), "p90"),
                        target(quantile(0.99, hist), "p99"), target(average(hist), "mean")])),
        (8, heatmap("Call duration heatmap",
                    "Completed calls per duration bucket and time slot.", hist, "s")),
        (8, timeseries("Average call duration by direction",
                       "Mean CallDuration of completed calls, 5-minute windows."
                       + ALL_INSTANCES, "s",
                       [target(f"signalwire:call_duration_seconds:avg5m{{{RULE}}}",
                               "{{direction}}")])),
    )


def _mos_below(bound: str) -> str:
    return f"sum({increase('signalwire_call_mos_bucket', RAW + f', le={json.dumps(bound)}')})"


def _mos_tier(low: str | None, high: str | None) -> str:
    upper = (f"sum({increase('signalwire_call_mos_count')})" if high is None
             else _mos_below(high))
    return upper if low is None else f"{upper}\n-\n{_mos_below(low)}"


def quality() -> Section:
    tiers = [("bad (< 3.1)", None, "3.1", "red"), ("poor (3.1-3.5)", "3.1", "3.5", "dark-orange"),
             ("poor (3.5-3.7)", "3.5", "3.7", "orange"), ("fair (3.7-4.2)", "3.7", "4.2", "yellow"),
             ("good (>= 4.2)", "4.2", None, "green")]
    return Section("Call quality (MOS)").line(
        8,
        (8, bargauge("Calls by MOS tier",
                     "Calls that reported MOS in the selected time range, by E-model tier: "
                     "< 3.1 bad, 3.1-3.7 poor (3.5 is the low-MOS alert line), 3.7-4.2 fair, "
                     ">= 4.2 good. Empty until a final callback carries AudioInMos.", "short",
                     [target(_mos_tier(low, high), name, instant=True)
                      for name, low, high, _ in tiers],
                     colours={name: colour for name, _, _, colour in tiers})),
        (8, timeseries("MOS quantiles by direction",
                       "10th, 50th and 90th percentile MOS over 5-minute windows; dashed lines "
                       "at the tiers 3.1, 3.5, 3.7 and 4.2." + ALL_INSTANCES, "none",
                       [target(f"signalwire:call_mos:quantile5m{{{RULE}}}",
                               "{{direction}} p{{quantile}}")],
                       steps=MOS_STEPS, show_thresholds=True, bounds=(1, 5))),
        (8, heatmap("MOS heatmap", "Calls per MOS bucket and time slot.",
                    "signalwire_call_mos", "none")),
    ).line(
        8,
        (8, timeseries("Low-MOS share by direction",
                       "Share of calls with MOS below 3.5, 5-minute windows." + ALL_INSTANCES,
                       "percentunit",
                       [target(f"signalwire:call_mos_below_3_5:ratio5m{{{RULE}}}",
                               "{{direction}}")],
                       steps=LOW_MOS_STEPS, show_thresholds=True, bounds=(0, 1))),
        (8, timeseries("MOS mean",
                       "Mean MOS of calls that reported it.", "none",
                       [target(average("signalwire_call_mos"), "mean")],
                       steps=MOS_STEPS, show_thresholds=True, bounds=(1, 5))),
        (8, timeseries("Calls reporting MOS",
                       "Calls per second whose final callback carried AudioInMos: the sample "
                       "size behind the quality panels.", "cps",
                       [target(f"sum by (direction) ({rate('signalwire_call_mos_count')})",
                               "{{direction}}")])),
    )


def jitter_and_loss() -> Section:
    packets = "signalwire_call_audio_in_packets_total"
    note = " Empty until a final callback carries audio quality fields."
    not_received = rate(packets, RAW + ', result!="received"')
    return Section("Jitter and packet loss").line(
        8,
        (8, timeseries("Jitter variance",
                       "AudioInJitterMaxVariance (p50, p90) and AudioInJitterMinVariance "
                       "(p50) per call. Over 30 ms max is commonly called high." + note, "s",
                       [target(quantile(0.5, "signalwire_call_jitter_max_seconds"), "max p50"),
                        target(quantile(0.9, "signalwire_call_jitter_max_seconds"), "max p90"),
                        target(quantile(0.5, "signalwire_call_jitter_min_seconds"), "min p50")],
                       steps=JITTER_STEPS, show_thresholds=True)),
        (8, timeseries("Packet loss",
                       "Inbound audio packet loss: over all packets (lost / (received + lost)), "
                       "and the 90th percentile per call. Over 1% is noticeable, over 5% bad."
                       + note, "percentunit",
                       [target(ratio(rate(packets, RAW + ', result="lost"'),
                                     rate(packets, RAW + ', result=~"received|lost"')),
                               "all packets"),
                        target(quantile(0.9, "signalwire_call_packet_loss_ratio"),
                               "per call p90")],
                       steps=LOSS_STEPS, show_thresholds=True)),
        (8, timeseries("Audio packets lost and discarded",
                       "Inbound audio packets per second lost (skipped) or discarded from the "
                       "jitter buffer (flushed)." + note, "cps",
                       [target(f"sum by (result) ({not_received})",
                               "{{result}}")])),
    )


def call_setup() -> Section:
    return Section("Call setup").line(
        8,
        (8, timeseries("Post-dial delay by direction",
                       "initiated to ringing (1 s resolution), 5-minute windows. Empty until "
                       "both the initiated and ringing events are subscribed." + ALL_INSTANCES,
                       "s", [target(f"signalwire:call_post_dial_delay_seconds:quantile5m{{{RULE}}}",
                                    "{{direction}} p{{quantile}}")])),
        (8, heatmap("Post-dial delay heatmap",
                    "Calls per post-dial delay bucket and time slot. Empty until both the "
                    "initiated and ringing events are subscribed.",
                    "signalwire_call_post_dial_delay_seconds", "s")),
        (8, timeseries("Time to answer",
                       "ringing to answered (1 s resolution), percentiles. Empty until both the "
                       "ringing and answered events are subscribed.", "s",
                       [target(quantile(0.5, "signalwire_call_time_to_answer_seconds"), "p50"),
                        target(quantile(0.9, "signalwire_call_time_to_answer_seconds"), "p90")])),
    )


def _by_status(record: str) -> Json:
    return target(f"sum by (status) ({record}{{{JOB}}})", "{{status}}")


def messaging() -> Section:
    """SMS/MMS, recordings and transcriptions: the non-call callbacks (no direction label)."""
    delivery = "signalwire_message_delivery_seconds"
    note = " Empty until message status callbacks arrive at /callbacks/messaging."
    errors = increase("signalwire_message_errors_total", TARGET)
    return Section("Messaging, recordings and transcriptions").line(
        8,
        (6, timeseries("Messages by final status",
                       "Messages per second by the final status they reached (delivered, "
                       "undelivered, failed, received, read). MMS stops at sent and is not "
                       "here." + note + ALL_INSTANCES, "cps",
                       [_by_status("signalwire:messages:rate5m")],
                       stacked=True, colours=MESSAGE_COLOURS)),
        (6, timeseries("Message delivery failure ratio",
                       "(failed + undelivered) / outbound messages that reached a final "
                       "status, 15-minute windows. SignalWireMessageDeliveryFailuresHigh fires "
                       "above 10% with at least 20 messages." + ALL_INSTANCES, "percentunit",
                       [target(f"max(signalwire:message_delivery_failure_ratio:15m{{{JOB}}})",
                               "failed or undelivered")],
                       steps=MESSAGE_FAILURE_STEPS, show_thresholds=True, bounds=(0, 1))),
        (6, bargauge("Top message error codes",
                     "Messages per ErrorCode in the selected time range, once per message; "
                     'codes outside the exporter\'s list are grouped as "other".' + note,
                     "short", [target(f"topk(10, sum by (code) ({errors}))", "{{code}}",
                                      instant=True)], [(None, "orange")])),
        (6, timeseries("Message delivery time",
                       "queued/sent to delivered, from the exporter's receive times of the two "
                       "callbacks (messages carry no Timestamp; see docs/callbacks.md).", "s",
                       [target(quantile(0.5, delivery, TARGET), "p50"),
                        target(quantile(0.9, delivery, TARGET), "p90")])),
    ).line(
        8,
        (6, timeseries("Message status changes",
                       "Every message status change (queued, sending, sent, finals), each "
                       "delivery counted once." + ALL_INSTANCES, "cps",
                       [_by_status("signalwire:message_status_events:rate5m")],
                       colours=MESSAGE_COLOURS)),
        (6, timeseries("Message segments",
                       "SMS segments per second (NumSegments, once per message): what the "
                       "messages are billed by.", "short",
                       [target(f"sum({rate('signalwire_message_segments_total', TARGET)})",
                               "segments")])),
        (6, timeseries("Recordings by status",
                       "Recording status changes per second (in-progress, completed, absent "
                       "= too short or silent, failed)." + ALL_INSTANCES, "cps",
                       [_by_status("signalwire:recordings:rate5m")], colours=ITEM_COLOURS)),
        (6, timeseries("Transcriptions by status",
                       "Transcriptions per second by status (completed, failed)."
                       + ALL_INSTANCES, "cps",
                       [_by_status("signalwire:transcriptions:rate5m")],
                       colours=ITEM_COLOURS)),
    )


def exporter_health() -> Section:
    callbacks = "signalwire_exporter_callbacks_total"
    not_accepted = rate(callbacks, TARGET + ', outcome!="accepted"')
    return Section("Exporter health").line(
        8,
        (8, timeseries("Callbacks by outcome",
                       "Requests to the callback endpoints per second, by outcome.", "reqps",
                       [target(f"sum by (outcome) ({rate(callbacks, TARGET)})", "{{outcome}}")],
                       colours={"accepted": "green", "duplicate": "blue", "invalid": "red",
                                "unauthorized": "dark-red", "too_large": "orange",
                                "unsupported": "purple"})),
        (8, timeseries("Rejected and duplicate callbacks",
                       "Callbacks not accepted, by endpoint and outcome. Duplicates are normal "
                       "(at-least-once delivery); unauthorized or invalid ones usually mean a "
                       "wrong signing key or URL (SignalWireCallbacksRejected).", "reqps",
                       [target(f"sum by (endpoint, outcome) ({not_accepted})",
                               "{{endpoint}} {{outcome}}")])),
        (8, timeseries("Late events and timestamp errors",
                       "Events that arrived after a newer one of the same call (counted, not "
                       "applied), and callbacks whose Timestamp could not be parsed.", "reqps",
                       [target(f"sum by (endpoint) "
                               f"({rate('signalwire_exporter_late_events_total', TARGET)})",
                               "late {{endpoint}}"),
                        target(f"sum by (endpoint) "
                               f"({rate('signalwire_exporter_timestamp_errors_total', TARGET)})",
                               "bad timestamp {{endpoint}}")])),
    ).line(
        8,
        (6, timeseries("Tracked calls",
                       "Calls each instance holds for de-duplication (bounded by "
                       "tracking.max_calls).", "short",
                       [target(f"sum by (instance) (signalwire_exporter_tracked_calls{{{TARGET}}})",
                               "{{instance}}")])),
        (6, timeseries("Expired calls",
                       "Calls dropped from tracking without a final status, by reason (ttl: "
                       "older than tracking.call_ttl_seconds; capacity: store full).", "cps",
                       [target(f"sum by (reason) ({rate('signalwire_calls_expired_total')})",
                               "{{reason}}")])),
        (6, timeseries("Scrape duration",
                       "How long Prometheus takes to scrape each instance.", "s",
                       [target(f"max by (instance) (scrape_duration_seconds{{{TARGET}}})",
                               "{{instance}}")])),
        (6, stat("Instances up", "Selected exporter instances Prometheus scrapes successfully.",
                 "short", f"sum(up{{{TARGET}}})", [(None, "red"), (1, "green")], 0)),
    )


def _query_variable(name: str, label: str, query: str) -> Json:
    """A multi-select variable over a label's values; "All" becomes the regex ``.*``."""
    return {"name": name, "label": label, "type": "query", "datasource": DATASOURCE,
            "query": query, "refresh": 2, "sort": 1, "regex": "",
            "multi": True, "includeAll": True, "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "options": [], "hide": 0}


def templating() -> list[Json]:
    job = 'label_values(signalwire_exporter_build_info, job)'
    return [
        {"name": "datasource", "label": "Data source", "type": "datasource",
         "query": "prometheus", "regex": "", "options": [], "hide": 0,
         "refresh": 1, "multi": False, "includeAll": False},
        {"name": "job", "label": "Job", "type": "query", "datasource": DATASOURCE,
         "query": job, "refresh": 2, "sort": 1, "regex": "",
         "multi": False, "includeAll": False, "options": [], "hide": 0,
         "current": {"selected": True, "text": "signalwire-exporter",
                     "value": "signalwire-exporter"}},
        _query_variable("instance", "Instance",
                        'label_values(signalwire_exporter_build_info{job=~"$job"}, instance)'),
        _query_variable("direction", "Direction",
                        'label_values(signalwire_calls_total{job=~"$job"}, direction)'),
    ]


def calls_dashboard() -> Json:
    return {
        "uid": "signalwire-calls",
        "title": "SignalWire calls",
        "description": "Calls, quality, messaging and exporter health from signalwire-exporter.",
        "tags": ["signalwire", "signalwire-exporter"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "1m",
        "schemaVersion": SCHEMA_VERSION,
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "links": [],
        "version": 1,
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts", "type": "dashboard"}]},
        "templating": {"list": templating()},
        "panels": layout([overview(), calls(), failures(), duration(), quality(),
                          jitter_and_loss(), call_setup(), messaging(), exporter_health()]),
    }


def dashboards() -> dict[str, Json]:
    """File name → dashboard; a new dashboard is one more entry here."""
    return {"signalwire-calls.json": calls_dashboard()}


def render(dashboard: Json) -> str:
    return json.dumps(dashboard, indent=2, sort_keys=True) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m grafana.build", description=__doc__)
    parser.add_argument("--check", action="store_true",
                        help="only compare; exit 1 if a committed dashboard is out of date")
    args = parser.parse_args(argv)
    stale = []
    for name, dashboard in dashboards().items():
        path = DASHBOARDS / name
        text = render(dashboard)
        if path.exists() and path.read_text() == text:
            continue
        if args.check:
            stale.append(name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(HERE.parent)}")
    if stale:
        print(f"out of date: {', '.join(stale)}; run python3 -m grafana.build", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
