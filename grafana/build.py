"""Generate the bundled Grafana dashboard, so its JSON is reviewed as code and rebuilt the same way.

``python3 -m grafana.build`` rewrites ``grafana/dashboards/*.json``; ``--check`` only compares
and exits 1 when a committed file is stale (tests/test_grafana.py does the same in CI).

Query conventions, kept by the helpers below:
- every panel reads the ``$datasource`` variable, never a fixed datasource uid;
- raw exporter metrics are filtered by ``$job``, ``$instance`` and ``$direction`` and summed
  over replicas: the cluster-wide call, message and other ``signalwire_*`` series with each
  state group once (``total``: Redis replicas serving the same values count once, memory
  processes add up), the exporter's own ``signalwire_exporter_*`` series plainly
  (``per_replica``: each replica counts its own work); the call and message metrics that carry the
  ``app`` and ``line`` labels (config ``labels:``) are also filtered by ``$app`` and ``$line``,
  whose "All" is ``.*`` so series without those labels still match. Recording rules
  (``alerts/``) are already summed over instances, apps and lines per job, so the few panels
  on them take ``$job`` (and ``$direction``) only and say so;
- time series use ``$__rate_interval``; the top-row stats use 5-minute windows, like the
  recording rules and alerts, so the row reads as one consistent "now";
- no NaN: a quantile or ratio over a window without observations gives no value, as in the
  recording rules; counters that are routinely zero are drawn only where they are not.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.rules import once_per_group

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
# The metrics that carry `app` and `line` (config `labels:`): the calls' and the messages'.
SLICE = 'app=~"$app", line=~"$line"'
CALLS = f"{RAW}, {SLICE}"
MESSAGES = f"{TARGET}, {SLICE}"

ALL_INSTANCES = " Summed over all instances of the job (recording rule)."
UNSLICED = " Not split by app or line."
EXEMPLARS = (" Dots are exemplars: a recent call each; click one for its row in the exporter's "
             "failed-call report.")

# Colours of the final statuses and MOS tiers, shared by every panel that shows them.
STATUS_COLOURS = {"completed": "green", "busy": "orange", "no-answer": "yellow",
                  "failed": "red", "canceled": "purple", "unknown": "text"}
OUTCOME_COLOURS = {"accepted": "green", "duplicate": "blue", "invalid": "red",
                   "unauthorized": "dark-red", "too_large": "orange", "unsupported": "purple",
                   "timeout": "yellow", "method_not_allowed": "dark-purple",
                   "stopping": "light-orange", "unavailable": "dark-red"}

Step = tuple[float | None, str]


def above(bound: float) -> float:
    """The smallest number over ``bound``: a histogram bucket holds its upper bound (le),
    while a Grafana colour step starts at its value, so a step "over 4.2" starts here."""
    return math.nextafter(bound, math.inf)


# MOS tiers as the histogram counts them: each holds its upper bound (bucket le).
MOS_TIERS: list[tuple[str, str | None, str | None, str]] = [
    ("bad (3.1 or less)", None, "3.1", "red"),
    ("poor (over 3.1 to 3.5)", "3.1", "3.5", "dark-orange"),
    ("poor (over 3.5 to 3.7)", "3.5", "3.7", "orange"),
    ("fair (over 3.7 to 4.2)", "3.7", "4.2", "yellow"),
    ("good (over 4.2)", "4.2", None, "green"),
]
MOS_STEPS: list[Step] = [(None if low is None else above(float(low)), colour)
                         for _, low, _, colour in MOS_TIERS]
MOS_TIER_TEXT = "3.1 or less bad, over 3.1 to 3.7 poor, over 3.7 to 4.2 fair, over 4.2 good"
ASR_STEPS: list[Step] = [(None, "red"), (0.4, "yellow"), (0.6, "green")]
FAILURE_STEPS: list[Step] = [(None, "green"), (0.1, "yellow"), (0.2, "red")]
LOW_MOS_STEPS: list[Step] = [(None, "green"), (0.05, "yellow"), (0.1, "red")]
JITTER_STEPS: list[Step] = [(None, "green"), (0.005, "yellow"), (0.03, "red")]
LOSS_STEPS: list[Step] = [(None, "green"), (0.01, "yellow"), (0.05, "red")]
UP_STEPS: list[Step] = [(None, "red"), (1, "green")]
NEUTRAL: list[Step] = [(None, "blue")]
MESSAGE_FAILURE_STEPS: list[Step] = [(None, "green"), (0.05, "yellow"), (0.1, "red")]
MESSAGE_COLOURS = {"delivered": "green", "received": "blue", "read": "dark-green",
                   "undelivered": "orange", "failed": "red"}
ITEM_COLOURS = {"completed": "green", "in-progress": "blue", "absent": "yellow",
                "failed": "red", "unknown": "text"}

# Where the browser reaches the exporter: a dashboard variable the links build on.
EXPORTER_URL = "http://localhost:9880"  # deploy/compose.yaml publishes the exporter here


# --- PromQL helpers -----------------------------------------------------------------

def rate(metric: str, matchers: str = RAW, window: str = "$__rate_interval") -> str:
    return f"rate({metric}{{{matchers}}}[{window}])"


def increase(metric: str, matchers: str = RAW, window: str = "$__range") -> str:
    return f"increase({metric}{{{matchers}}}[{window}])"


def window(expr: str) -> str:
    """The range of ``expr``'s range vectors ("" for none: a gauge); one per expression."""
    ranges = set(re.findall(r"\[([^\]]+)\]", expr))
    if len(ranges) > 1:
        raise ValueError(f"more than one range in {expr!r}")
    return ranges.pop() if ranges else ""


def total(expr: str, by: str = "") -> str:
    """Sum of a cluster-wide series over instances (and directions, unless ``by`` keeps them),
    each state group once: Redis replicas serving the same values count once, memory-backend
    processes add up (``exporter.rules.once_per_group``, as in the recording rules)."""
    return once_per_group(expr, by, window(expr))


def per_replica(expr: str, by: str = "") -> str:
    """Sum over instances of the exporter's own series (``signalwire_exporter_*``: each
    replica counts its own work), directions too unless ``by`` keeps them."""
    return f"sum by ({by}) ({expr})" if by else f"sum({expr})"


def nonzero(expr: str) -> str:
    """Only the series that are not 0: pre-created zero series draw nothing."""
    return f"{expr} > 0"


def percentile(q: float) -> str:
    """0.1 → p10, 0.99 → p99: what a legend should say."""
    return f"p{q * 100:g}"


def quantile(q: float, histogram: str, matchers: str = RAW, by: str = "") -> str:
    """Quantile over the selected instances (and directions unless ``by``): buckets summed
    first. No observations in the window gives no value, not NaN (as in the recording rules)."""
    buckets = total(rate(histogram + "_bucket", matchers), f"{by}, le" if by else "le")
    seen = total(rate(histogram + "_count", matchers), by)
    return f"histogram_quantile({q}, {buckets})\nand on ({by})\n({seen} > 0)"


def ratio(numerator: str, denominator: str, by: str = "") -> str:
    """No traffic gives no value ("No data"), not NaN, as in the recording rules."""
    return f"{total(numerator, by)}\n/\n({total(denominator, by)} > 0)"


def average(histogram: str, matchers: str = RAW, window: str = "$__rate_interval",
            by: str = "") -> str:
    """Mean of a histogram's observations: sum of rates of _sum over sum of rates of _count."""
    return ratio(rate(histogram + "_sum", matchers, window),
                 rate(histogram + "_count", matchers, window), by)


# --- panel helpers ------------------------------------------------------------------

def target(expr: str, legend: str = "", *, instant: bool = False, heatmap: bool = False,
           exemplar: bool = False) -> Json:
    """A Prometheus query; ``exemplar`` also fetches the exemplars (CallSids) of its series,
    which the data source links to the failed-call report (grafana/provisioning)."""
    out: Json = {"datasource": DATASOURCE, "editorMode": "code", "expr": expr,
                 "instant": instant, "legendFormat": legend or "__auto", "range": not instant}
    if heatmap:
        out["format"] = "heatmap"
    if exemplar:
        out["exemplar"] = True
    return out


def thresholds(steps: Sequence[Step]) -> Json:
    return {"mode": "absolute",
            "steps": [{"color": colour, "value": value} for value, colour in steps]}


def colour_overrides(colours: dict[str, str]) -> list[Json]:
    """A fixed colour per series name; a name starting with ``~`` is a regex instead."""
    return [{"matcher": {"id": "byRegexp", "options": name[1:]} if name.startswith("~")
             else {"id": "byName", "options": name},
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
         decimals: int = 2, legend: str = "") -> Json:
    """One number; with ``legend``, each value is shown with its name (e.g. a version)."""
    return _panel("stat", title, description, unit, [target(expr, legend or title)], steps, {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "value", "graphMode": "area" if not legend else "none",
        "justifyMode": "auto", "orientation": "auto",
        "textMode": "value_and_name" if legend else "value", "wideLayout": True,
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


def heatmap(title: str, description: str, histogram: str, unit: str, matchers: str = RAW,
            exemplar: bool = False) -> Json:
    """Bucket counts per time slot; the panel's 1m minimum interval keeps slots apart."""
    expr = total(increase(histogram + "_bucket", matchers, "$__interval"), "le")
    panel = _panel("heatmap", title, description, unit,
                   [target(expr, "{{le}}", heatmap=True, exemplar=exemplar)], NEUTRAL, {
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

FINAL = "signalwire_calls_total"
NOT_ANSWERED = 'status=~"failed|busy|no-answer"'


def _calls(selector: str = "", window: str = "$__rate_interval") -> str:
    """Final calls per second over the selection (every variable), optionally narrowed."""
    return rate(FINAL, f"{CALLS}, {selector}" if selector else CALLS, window)


def overview() -> Section:
    """The top row: 5-minute stats that all follow every variable (job, instance, direction,
    app, line), so the row is one consistent "now" for the selection."""
    follows = " Follows every variable."
    return Section(None).line(
        4,
        (4, stat("Calls per second",
                 "Calls that reached a final status, per second, over the last 5 minutes."
                 + follows, "cps", total(_calls(window="5m")), NEUTRAL, 3)),
        (4, stat("Answer-seizure ratio",
                 "Completed calls / all final calls over the last 5 minutes. 60-70% is "
                 "often called very good, but it depends on the traffic mix." + follows,
                 "percentunit", ratio(_calls('status="completed"', "5m"), _calls(window="5m")),
                 ASR_STEPS, 1)),
        (4, stat("Failure ratio",
                 "Calls that ended failed, busy or no-answer / all final calls over the "
                 "last 5 minutes. SignalWireCallFailureRatioHigh fires above 20% over 15 "
                 "minutes." + follows, "percentunit",
                 ratio(_calls(NOT_ANSWERED, "5m"), _calls(window="5m")), FAILURE_STEPS, 1)),
        (4, stat("Calls in progress",
                 "Answered calls not yet final. Stays 0 unless the 'answered' status callback "
                 "event is subscribed." + follows, "short",
                 total(f"signalwire_calls_in_progress{{{CALLS}}}"), NEUTRAL, 0)),
        (4, stat("Average call duration",
                 "Mean CallDuration of completed calls that ended in the last 5 minutes."
                 + follows, "s", average("signalwire_call_duration_seconds", CALLS, "5m"),
                 NEUTRAL, 0)),
        (4, stat("Low-MOS calls",
                 "Share of calls with MOS at or below 3.5 (the histogram's le=\"3.5\" bucket, "
                 "3.5 itself included) among calls that reported MOS in the last 5 minutes. "
                 "SignalWireCallQualityLow fires above 10% over 15 minutes." + follows,
                 "percentunit",
                 ratio(rate("signalwire_call_mos_bucket", CALLS + ', le="3.5"', "5m"),
                       rate("signalwire_call_mos_count", CALLS, "5m")), LOW_MOS_STEPS, 1)),
    )


def calls() -> Section:
    return Section("Calls").line(
        8,
        (12, timeseries("Final calls by status",
                        "Calls per second by the final status they reached.", "cps",
                        [target(total(_calls(), "status"), "{{status}}")],
                        stacked=True, colours=STATUS_COLOURS)),
        (12, timeseries("Final calls by direction",
                        "Calls per second that reached a final status, by direction (every "
                        "direction the exporter reports, e.g. outbound from the Calling API).",
                        "cps", [target(total(_calls(), "direction"), "{{direction}}")],
                        stacked=True)),
    ).line(
        8,
        (8, timeseries("Answer-seizure ratio by direction",
                       "Completed / all final calls.", "percentunit",
                       [target(ratio(_calls('status="completed"'), _calls(), "direction"),
                               "{{direction}}")],
                       steps=ASR_STEPS, show_thresholds=True, bounds=(0, 1))),
        (8, timeseries("Failure ratio by direction",
                       "(failed + busy + no-answer) / all final calls.", "percentunit",
                       [target(ratio(_calls(NOT_ANSWERED), _calls(), "direction"),
                               "{{direction}}")],
                       steps=FAILURE_STEPS, show_thresholds=True, bounds=(0, 1))),
        (8, timeseries("Status changes received",
                       "Every call status change (initiated, ringing, in-progress, finals), "
                       "each delivery counted once. Only the events subscribed with "
                       "StatusCallbackEvent arrive.", "cps",
                       [target(total(rate("signalwire_call_status_events_total", CALLS),
                                     "status"), "{{status}}")], colours=STATUS_COLOURS)),
    )


def failures() -> Section:
    sip = "signalwire_call_sip_responses_total"
    sip_note = " Empty until a callback carries SipResultCode." + UNSLICED
    failed_sip = increase(sip, RAW + ', class!~"1xx|2xx"')
    reasons = "signalwire_call_end_reasons_total"
    reason_note = (" From the Calling API's call state events (calling.call.state "
                   "end_reason); empty until /callbacks/calling receives them." + UNSLICED)
    return Section("Failures").line(
        8,
        (8, timeseries("Unsuccessful calls by status",
                       "Calls per second that ended busy, no-answer, failed or canceled."
                       + EXEMPLARS, "cps",
                       [target(total(_calls('status!="completed"'), "status"), "{{status}}",
                               exemplar=True)],
                       stacked=True, colours=STATUS_COLOURS)),
        (8, timeseries("SIP final responses by class",
                       "SIP final response to the INVITE, once per call, by class." + sip_note,
                       "cps", [target(total(rate(sip), "class"), "{{class}}")],
                       stacked=True, colours={"2xx": "green", "3xx": "blue", "4xx": "orange",
                                              "5xx": "red", "6xx": "purple"})),
        (8, bargauge("Top SIP failure codes",
                     "Most frequent non-2xx SIP final responses in the selected time range "
                     '(codes that occurred); uncommon codes are grouped as "other".' + sip_note,
                     "short",
                     [target(f"topk(10, {nonzero(total(failed_sip, 'code'))})", "{{code}}",
                             instant=True)], [(None, "orange")])),
    ).line(
        8,
        (12, timeseries("Call end reasons", "Calls per second by end reason." + reason_note,
                        "cps", [target(total(rate(reasons), "reason"), "{{reason}}")],
                        stacked=True)),
        (12, bargauge("Top call end reasons",
                      "Calls per end reason in the selected time range (reasons that occurred)."
                      + reason_note, "short",
                      [target(f"topk(10, {nonzero(total(increase(reasons), 'reason'))})",
                              "{{reason}}", instant=True)])),
    )


def duration() -> Section:
    hist = "signalwire_call_duration_seconds"
    return Section("Call duration").line(
        8,
        (8, timeseries("Call duration percentiles",
                       "CallDuration of completed calls: percentiles from the histogram "
                       "(estimates within a bucket) and the exact mean.", "s",
                       [*(target(quantile(q, hist, CALLS), percentile(q))
                          for q in (0.5, 0.9, 0.99)),
                        target(average(hist, CALLS), "mean")])),
        (8, heatmap("Call duration heatmap",
                    "Completed calls per duration bucket and time slot.", hist, "s", CALLS)),
        (8, timeseries("Average call duration by direction",
                       "Mean CallDuration of completed calls.", "s",
                       [target(average(hist, CALLS, by="direction"), "{{direction}}")])),
    )


def _mos_at_or_below(bound: str) -> str:
    """Calls with MOS at or below ``bound``: the le bucket holds its upper bound."""
    return total(increase("signalwire_call_mos_bucket", f"{CALLS}, le={json.dumps(bound)}"))


def _mos_tier(low: str | None, high: str | None) -> str:
    """Calls with low < MOS <= high (no low: from the bottom; no high: to the top)."""
    upper = (total(increase("signalwire_call_mos_count", CALLS)) if high is None
             else _mos_at_or_below(high))
    return upper if low is None else f"{upper}\n-\n{_mos_at_or_below(low)}"


def quality() -> Section:
    note = " Empty until a final callback carries AudioInMos."
    mos = "signalwire_call_mos"
    return Section("Call quality (MOS)").line(
        8,
        (8, bargauge("Calls by MOS tier",
                     "Calls that reported MOS in the selected time range, by tier as the "
                     f"histogram buckets count them (each tier includes its upper bound): "
                     f"{MOS_TIER_TEXT}; the low-MOS alert counts MOS 3.5 or less." + note,
                     "short",
                     [target(_mos_tier(low, high), name, instant=True)
                      for name, low, high, _ in MOS_TIERS],
                     colours={name: colour for name, _, _, colour in MOS_TIERS})),
        (8, timeseries("MOS percentiles by direction",
                       "10th, 50th and 90th percentile MOS (estimates within a bucket); "
                       f"colours and dashed lines at the tiers: {MOS_TIER_TEXT}."
                       + EXEMPLARS, "none",
                       [target(quantile(q, mos, CALLS, "direction"),
                               f"{{{{direction}}}} {percentile(q)}", exemplar=q == 0.1)
                        for q in (0.1, 0.5, 0.9)],
                       steps=MOS_STEPS, show_thresholds=True, bounds=(1, 5))),
        (8, heatmap("MOS heatmap", "Calls per MOS bucket and time slot." + EXEMPLARS,
                    mos, "none", CALLS, exemplar=True)),
    ).line(
        8,
        (8, timeseries("Low-MOS share by direction",
                       "Share of calls with MOS at or below 3.5 (3.5 included) among calls "
                       "that reported MOS.", "percentunit",
                       [target(ratio(rate(mos + "_bucket", CALLS + ', le="3.5"'),
                                     rate(mos + "_count", CALLS), "direction"),
                               "{{direction}}")],
                       steps=LOW_MOS_STEPS, show_thresholds=True, bounds=(0, 1))),
        (8, timeseries("MOS mean",
                       f"Mean MOS of calls that reported it; colours at the tiers: "
                       f"{MOS_TIER_TEXT}.", "none",
                       [target(average(mos, CALLS), "mean")],
                       steps=MOS_STEPS, show_thresholds=True, bounds=(1, 5))),
        (8, timeseries("Calls reporting MOS",
                       "Calls per second whose final callback carried AudioInMos: the sample "
                       "size behind the quality panels.", "cps",
                       [target(total(rate(mos + "_count", CALLS), "direction"),
                               "{{direction}}")])),
    )


def jitter_and_loss() -> Section:
    packets = "signalwire_call_audio_in_packets_total"
    note = " Empty until a final callback carries audio quality fields." + UNSLICED
    not_received = rate(packets, RAW + ', result!="received"')
    jitter_max, jitter_min = ("signalwire_call_jitter_max_seconds",
                              "signalwire_call_jitter_min_seconds")
    return Section("Jitter and packet loss").line(
        8,
        (8, timeseries("Jitter variance",
                       "AudioInJitterMaxVariance (p50, p90) and AudioInJitterMinVariance "
                       "(p50) per call. Over 30 ms max is commonly called high." + note, "s",
                       [target(quantile(0.5, jitter_max), "max p50"),
                        target(quantile(0.9, jitter_max), "max p90"),
                        target(quantile(0.5, jitter_min), "min p50")],
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
                       [target(total(not_received, "result"), "{{result}}")])),
    )


def call_setup() -> Section:
    pdd = "signalwire:call_post_dial_delay_seconds:quantile5m"
    answer = "signalwire_call_time_to_answer_seconds"
    return Section("Call setup").line(
        8,
        (8, timeseries("Post-dial delay by direction",
                       "initiated to ringing (1 s resolution), 5-minute windows. Empty until "
                       "both the initiated and ringing events are subscribed." + ALL_INSTANCES
                       + UNSLICED, "s",
                       [target(f'{pdd}{{{RULE}, quantile="{q}"}}',
                               f"{{{{direction}}}} {percentile(q)}")
                        for q in (0.5, 0.9, 0.99)])),
        (8, heatmap("Post-dial delay heatmap",
                    "Calls per post-dial delay bucket and time slot. Empty until both the "
                    "initiated and ringing events are subscribed." + UNSLICED,
                    "signalwire_call_post_dial_delay_seconds", "s")),
        (8, timeseries("Time to answer",
                       "ringing to answered (1 s resolution), percentiles. Empty until both the "
                       "ringing and answered events are subscribed." + UNSLICED, "s",
                       [target(quantile(q, answer), percentile(q)) for q in (0.5, 0.9)])),
    )


def reconciliation() -> Section:
    note = (" Empty unless reconcile.enabled is on (needs signalwire_api credentials; see "
            "docs/configuration.md).")
    return Section("Reconciliation and cost (SignalWire REST API)").line(
        8,
        (8, timeseries("Final calls and reconciled calls",
                       "All final calls (signalwire_calls_total), beside those among them whose "
                       "final callback never came and whose status the exporter fetched from "
                       "the REST API instead, by that status. A growing reconciled share means "
                       "callbacks are being lost (SignalWireCallbacksMissing)." + note, "cps",
                       [target(total(_calls()), "all final calls"),
                        target(total(rate("signalwire_calls_reconciled_total", TARGET),
                                     "status"), "reconciled {{status}}")])),
        (8, timeseries("Call cost per hour by direction",
                       "What the calls that ended cost, per hour, in each currency: the "
                       "price the REST API reports per call, summed. Needs "
                       "reconcile.fetch_price." + note + UNSLICED, "short",
                       [target(total(rate("signalwire_call_price_total"), "direction, currency")
                               + " * 3600", "{{direction}} ({{currency}}/h)")], stacked=True)),
        (8, timeseries("REST API requests by outcome",
                       "Requests the exporter made to the SignalWire REST API, per second, by "
                       "outcome." + note, "reqps",
                       [target(per_replica(rate("signalwire_exporter_api_requests_total", TARGET),
                                     "outcome"), "{{outcome}}")])),
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
                       "here." + note, "cps",
                       [target(total(rate("signalwire_messages_total", MESSAGES), "status"),
                               "{{status}}")],
                       stacked=True, colours=MESSAGE_COLOURS)),
        (6, timeseries("Message delivery failure ratio",
                       "(failed + undelivered) / outbound messages that reached a final "
                       "status, 15-minute windows. SignalWireMessageDeliveryFailuresHigh fires "
                       "above 10% with at least 20 messages." + ALL_INSTANCES + UNSLICED,
                       "percentunit",
                       [target(f"max(signalwire:message_delivery_failure_ratio:15m{{{JOB}}})",
                               "failed or undelivered")],
                       steps=MESSAGE_FAILURE_STEPS, show_thresholds=True, bounds=(0, 1))),
        (6, bargauge("Top message error codes",
                     "Messages per ErrorCode in the selected time range, once per message, "
                     'codes that occurred only; codes outside the exporter\'s list are grouped '
                     'as "other".' + note + UNSLICED, "short",
                     [target(f"topk(10, {nonzero(total(errors, 'code'))})", "{{code}}",
                             instant=True)], [(None, "orange")])),
        (6, timeseries("Message delivery time",
                       "queued/sent to delivered, from the exporter's receive times of the two "
                       "callbacks (messages carry no Timestamp; see docs/callbacks.md)."
                       + UNSLICED, "s",
                       [target(quantile(q, delivery, TARGET), percentile(q))
                        for q in (0.5, 0.9)])),
    ).line(
        8,
        (6, timeseries("Message status changes",
                       "Every message status change (queued, sending, sent, finals), each "
                       "delivery counted once." + ALL_INSTANCES + UNSLICED, "cps",
                       [_by_status("signalwire:message_status_events:rate5m")],
                       colours=MESSAGE_COLOURS)),
        (6, timeseries("Message segments",
                       "SMS segments per second (NumSegments, once per message): what the "
                       "messages are billed by." + UNSLICED, "cps",
                       [target(total(rate("signalwire_message_segments_total", TARGET)),
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


def ten_dlc() -> Section:
    events = "signalwire_10dlc_events_total"
    note = (" From 10DLC status callbacks at /callbacks/10dlc (brand, campaign and number "
            "assignment changes).")
    return Section("10DLC").line(
        8,
        (12, timeseries("10DLC events",
                        "10DLC status events per second by category and event type." + note,
                        "cps", [target(total(rate(events, TARGET), "category, event_type"),
                                       "{{category}} {{event_type}}")])),
        (12, bargauge("10DLC events in range",
                      "10DLC status events in the selected time range by category and event "
                      "type (those that occurred). A deactivated campaign or a failed number "
                      "assignment also fires an alert." + note, "short",
                      [target(nonzero(total(increase(events, TARGET), "category, event_type")),
                              "{{category}} {{event_type}}", instant=True)])),
    )


def exporter_health() -> Section:
    callbacks = "signalwire_exporter_callbacks_total"
    store = " Empty with the memory state backend (state.backend: redis only)."
    relay = " Empty while the SMS relay is off (sms section of the config)."
    return Section("Exporter health").line(
        8,
        (8, timeseries("Callbacks by outcome",
                       "Requests to the callback endpoints per second, by outcome.", "reqps",
                       [target(per_replica(rate(callbacks, TARGET), "outcome"), "{{outcome}}")],
                       colours=OUTCOME_COLOURS)),
        (8, timeseries("Refused callbacks",
                       "Callbacks refused and so not counted, by endpoint and outcome (only "
                       "those that occurred). unauthorized or invalid usually mean a wrong "
                       "signing key or URL and fire SignalWireCallbacksRejected.", "reqps",
                       [target(nonzero(per_replica(rate(
                           callbacks, TARGET + ', outcome!~"accepted|duplicate"'),
                           "endpoint, outcome")), "{{endpoint}} {{outcome}}")],
                       colours={f"~.* {outcome}": colour
                                for outcome, colour in OUTCOME_COLOURS.items()})),
        (8, timeseries("Duplicate deliveries",
                       "Callbacks delivered again and counted once, by endpoint (only those "
                       "that occurred): routine, since the provider delivers at least once.",
                       "reqps",
                       [target(nonzero(per_replica(
                           rate(callbacks, TARGET + ', outcome="duplicate"'), "endpoint")),
                           "{{endpoint}}")])),
    ).line(
        8,
        (6, timeseries("Late events and timestamp errors",
                       "Events that arrived after a newer one of the same call (counted, not "
                       "applied), and callbacks whose Timestamp could not be parsed (only "
                       "those that occurred).", "reqps",
                       [target(nonzero(per_replica(rate("signalwire_exporter_late_events_total",
                                                  TARGET), "endpoint")), "late {{endpoint}}"),
                        target(nonzero(per_replica(rate("signalwire_exporter_timestamp_errors_total",
                                                  TARGET), "endpoint")),
                               "bad timestamp {{endpoint}}")])),
        (6, timeseries("Tracked calls",
                       "Calls each instance holds for de-duplication (bounded by "
                       "tracking.max_calls).", "short",
                       [target(per_replica(f"signalwire_exporter_tracked_calls{{{TARGET}}}",
                                     "instance"), "{{instance}}")])),
        (6, timeseries("Expired calls",
                       "Calls dropped from tracking without a final status, by reason (ttl: "
                       "older than tracking.call_ttl_seconds; capacity: store full; only "
                       "those that occurred).", "cps",
                       [target(nonzero(total(rate("signalwire_calls_expired_total"), "reason")),
                               "{{reason}}")])),
        (6, timeseries("Scrape duration",
                       "How long Prometheus takes to scrape each instance.", "s",
                       [target(f"max by (instance) (scrape_duration_seconds{{{TARGET}}})",
                               "{{instance}}")])),
    ).line(
        8,
        (4, stat("Instances up",
                 "Selected exporter instances Prometheus scrapes successfully / all it is "
                 "meant to scrape: 100% green, red when any is down (SignalWireExporterDown "
                 "fires after 5 minutes).", "percentunit",
                 f"sum(up{{{TARGET}}})\n/\ncount(up{{{TARGET}}})", UP_STEPS, 0)),
        (4, stat("Exporter version",
                 "Versions the selected instances run, each with how many instances run it.",
                 "short", f"count by (version) (signalwire_exporter_build_info{{{TARGET}}})",
                 NEUTRAL, 0, legend="{{version}}")),
        (8, timeseries("Store up",
                       "1 while the instance reaches its shared state store (Redis), 0 while "
                       "it does not: callbacks are then spooled, not lost "
                       "(SignalWireStateStoreDown fires after 5 minutes)." + store, "short",
                       [target(f"max by (instance) (signalwire_exporter_store_up{{{TARGET}}})",
                               "{{instance}}")], steps=UP_STEPS, bounds=(0, 1))),
        (8, timeseries("Spooled callbacks and store errors",
                       "Callbacks each instance holds while the store is unreachable, waiting "
                       "to be written (SignalWireCallbacksSpooled fires when they wait 15 "
                       "minutes or a full spool refuses callbacks); and failed store "
                       "operations per second (only those that occurred)." + store, "short",
                       [target(per_replica(f"signalwire_exporter_store_spooled_callbacks{{{TARGET}}}",
                                     "instance"), "spooled {{instance}}"),
                        target(nonzero(per_replica(rate("signalwire_exporter_store_errors_total",
                                                  TARGET), "instance")),
                               "errors/s {{instance}}")])),
    ).line(
        8,
        (8, timeseries("Alert notifications relayed",
                       "Alertmanager notifications to /alerts/sms per second, by outcome (only "
                       "those that occurred). Anything but sent or duplicate (another delivery "
                       "of the same notification already texted) means an alert may not have "
                       "reached a phone." + relay, "reqps",
                       [target(nonzero(per_replica(rate("signalwire_exporter_alert_notifications_total",
                                                  TARGET), "outcome")), "{{outcome}}")],
                       colours={"sent": "green", "partial": "orange", "failed": "red",
                                "refused": "dark-red", "unauthorized": "purple",
                                "invalid": "yellow", "duplicate": "blue"})),
        (8, timeseries("Alert SMS by result",
                       "Text messages per recipient per second, after retries (only those "
                       "that occurred)." + relay, "cps",
                       [target(nonzero(per_replica(rate("signalwire_exporter_sms_total", TARGET),
                                             "result")), "{{result}}")],
                       colours={"sent": "green", "failed": "red", "duplicate": "blue"})),
        (8, timeseries("SMS API requests by outcome",
                       "Requests the SMS relay made to the SignalWire Messages API, retries "
                       "included (only those that occurred)." + relay, "reqps",
                       [target(nonzero(per_replica(rate("signalwire_exporter_sms_api_requests_total",
                                                  TARGET), "outcome")), "{{outcome}}")],
                       colours={"sent": "green", "client_error": "orange",
                                "server_error": "red", "rate_limited": "yellow",
                                "timeout": "purple", "connection_error": "dark-red"})),
    )


def _query_variable(name: str, label: str, query: str) -> Json:
    """A multi-select variable over a label's values; "All" becomes the regex ``.*``, which
    also matches series without the label (so app and line work before they are set up)."""
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
        _query_variable("app", "App",
                        'label_values(signalwire_calls_total{job=~"$job"}, app)'),
        _query_variable("line", "Line",
                        'label_values(signalwire_calls_total{job=~"$job"}, line)'),
        {"name": "exporter_url", "label": "Exporter URL", "type": "textbox",
         "query": EXPORTER_URL, "hide": 0, "options": [],
         "current": {"selected": False, "text": EXPORTER_URL, "value": EXPORTER_URL}},
    ]


def links() -> list[Json]:
    """The exporter's own pages, through the Exporter URL variable."""
    def link(title: str, path: str, tooltip: str, icon: str) -> Json:
        return {"title": title, "type": "link", "url": "${exporter_url}" + path,
                "tooltip": tooltip, "icon": icon, "targetBlank": True, "asDropdown": False,
                "includeVars": False, "keepTime": False, "tags": []}
    return [
        link("Runbook", "/runbook", "What each alert means and what to do (GET /runbook)",
             "doc"),
        link("Failed-call report", "/reports/failed-calls?format=json",
             "Recent failed calls, one row each (GET /reports/failed-calls)", "external link"),
    ]


def annotation_queries() -> list[Json]:
    """Grafana's own annotations, and the firing SignalWire alerts of the selected job."""
    firing = target('ALERTS{alertstate="firing", alertname=~"SignalWire.*", job=~"$job"}')
    firing.update(refId="Anno", interval="60s")
    return [
        {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
         "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
         "name": "Annotations & Alerts", "type": "dashboard"},
        {"datasource": DATASOURCE, "enable": True, "hide": False, "iconColor": "red",
         "name": "Alerts firing", "target": firing, "titleFormat": "{{alertname}}",
         "textFormat": "{{severity}}: {{alertname}}", "tagKeys": "severity",
         "useValueForTime": False},
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
        "links": links(),
        "version": 1,
        "annotations": {"list": annotation_queries()},
        "templating": {"list": templating()},
        "panels": layout([overview(), calls(), failures(), duration(), quality(),
                          jitter_and_loss(), call_setup(), reconciliation(), messaging(),
                          ten_dlc(), exporter_health()]),
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
