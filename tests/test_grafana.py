"""The bundled Grafana dashboard: generated from code, well-formed, and every query shows data.

The end-to-end test runs each panel query the way Grafana would send it (template variables
and interval macros substituted) against a real Prometheus that scrapes two real exporter
replicas and evaluates the bundled recording rules. The replay exercises every panel,
including those whose description says "Empty until ...", so none is exempt from having data.
"""

from __future__ import annotations

import copy
import http.server
import importlib.util
import json
import math
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter import __version__
from exporter.errors import OUTCOMES
from exporter.payloads import message_error_label
from exporter.rules import STATE_INFO
from grafana import build

from . import replay
from .conftest import ROOT, free_port, require_tool
from .fake_signalwire import FakeSignalWire, fake_api
from .servers import Prometheus, Service
from .test_rules import cluster_wide
from .test_sms import notification

__all__ = ["fake_api"]  # the fixture, imported so pytest finds it here

DASHBOARD = ROOT / "grafana" / "dashboards" / "signalwire-calls.json"
RULES = ROOT / "alerts" / "signalwire-exporter.rules.yml"
PROVISIONING = ROOT / "grafana" / "provisioning"
PANEL_TYPES = {"row", "stat", "timeseries", "heatmap", "bargauge"}
VARIABLES = ("datasource", "job", "instance", "direction", "app", "line", "exporter_url")
SMS_TO = "+15551234567"
JOIN = "* on (job, instance) group_left (group)"  # each state group once (exporter.rules)


def load() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def data_panels() -> list[dict[str, Any]]:
    return [panel for panel in load()["panels"] if panel["type"] != "row"]


def test_committed_dashboards_are_what_the_generator_writes() -> None:
    for name, dashboard in build.dashboards().items():
        path = ROOT / "grafana" / "dashboards" / name
        assert path.read_text() == build.render(dashboard), \
            f"{path} is stale: run python3 -m grafana.build"
    assert build.main(["--check"]) == 0


def test_dashboard_identity_and_variables() -> None:
    dashboard = load()
    assert dashboard["uid"] == "signalwire-calls"
    names = [variable["name"] for variable in dashboard["templating"]["list"]]
    assert names == list(VARIABLES)
    source = dashboard["templating"]["list"][0]
    assert (source["type"], source["query"]) == ("datasource", "prometheus")


def test_panel_ids_are_unique_and_grid_positions_do_not_overlap() -> None:
    panels = load()["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    taken: dict[tuple[int, int], str] = {}
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["h"] > 0 and pos["x"] + pos["w"] <= 24
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


def test_every_panel_is_current_titled_has_a_unit_and_uses_the_datasource_variable() -> None:
    variable = {"type": "prometheus", "uid": "${datasource}"}
    for panel in load()["panels"]:
        assert panel["type"] in PANEL_TYPES, f"{panel['title']}: {panel['type']}"
        assert panel["title"].strip()
        if panel["type"] == "row":
            continue
        assert panel["description"].strip(), panel["title"]
        assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]
        assert panel["datasource"] == variable, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == variable, panel["title"]


def test_range_vectors_use_grafana_intervals_except_the_five_minute_stats() -> None:
    for panel in data_panels():
        for target in panel["targets"]:
            for window in re.findall(r"\[([^\]]+)\]", target["expr"]):
                allowed = {"$__rate_interval", "$__interval", "$__range"}
                if panel["type"] == "stat":
                    allowed.add("5m")  # next to the 5-minute recording rules
                assert window in allowed, f"{panel['title']}: [{window}]"


def test_recording_rules_queried_exist_in_the_bundled_rule_file() -> None:
    recorded = {rule["record"] for group in yaml.safe_load(RULES.read_text())["groups"]
                for rule in group["rules"] if "record" in rule}
    used = {name for panel in data_panels() for target in panel["targets"]
            for name in re.findall(r"signalwire:[a-z0-9_:]+", target["expr"])}
    assert used, "the dashboard should use the recording rules"
    assert used <= recorded, f"not recorded: {sorted(used - recorded)}"


def test_alert_dashboard_links_land_on_the_dashboard() -> None:
    links = [rule["annotations"]["dashboard_url"]
             for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
             if "dashboard_url" in rule.get("annotations", {})]
    assert links, "the alerts should link to the dashboard"
    for link in links:
        assert f"/d/{load()['uid']}" in link, link


def test_provisioning_points_grafana_at_prometheus_and_the_dashboards() -> None:
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yaml").read_text())
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"] is True
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "signalwire.yaml").read_text())
    (provider,) = providers["providers"]
    dashboards_path = provider["options"]["path"]
    docs = (ROOT / "docs" / "grafana.md").read_text()
    for mount in ("grafana/provisioning:/etc/grafana/provisioning",
                  f"grafana/dashboards:{dashboards_path}"):
        assert mount in docs, mount


# --- what the panels say, and how they are wired ----------------------------------------

def targets() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(panel, target) for panel in data_panels() for target in panel["targets"]]


def panel_titled(title: str) -> dict[str, Any]:
    (found,) = [panel for panel in data_panels() if panel["title"] == title]
    return found


# The metrics that carry `app` and `line` (issue 16; config `labels:`).
SLICED = {"signalwire_calls_total", "signalwire_call_status_events_total",
          "signalwire_call_duration_seconds", "signalwire_call_mos",
          "signalwire_calls_in_progress", "signalwire_messages_total"}


def test_app_and_line_variables_match_series_without_those_labels() -> None:
    variables = {variable["name"]: variable for variable in load()["templating"]["list"]}
    for name in ("app", "line"):
        variable = variables[name]
        assert variable["query"] == f'label_values(signalwire_calls_total{{job=~"$job"}}, {name})'
        # "All" is .*, which an absent (empty) label matches, unlike Grafana's default alternation.
        assert (variable["includeAll"], variable["allValue"]) == (True, ".*")
    # Only the metrics that will carry the labels are filtered by them, and they all are.
    for panel, target in targets():
        for metric, matchers in re.findall(r"([a-z_:][a-z0-9_:]*)\{([^}]*)\}", target["expr"]):
            base = re.sub(r"_(bucket|sum|count)$", "", metric)
            sliced = 'app=~"$app", line=~"$line"' in matchers
            assert sliced == (base in SLICED and "job" in matchers and ":" not in metric), \
                f"{panel['title']}: {metric}{{{matchers}}}"


def test_the_top_row_follows_every_variable() -> None:
    top = [panel for panel in data_panels() if panel["gridPos"]["y"] == 0]
    assert len(top) == 6
    for stat in top:
        for target in stat["targets"]:
            for name in ("job", "instance", "direction", "app", "line"):
                assert f'{name}=~"${name}"' in target["expr"], f"{stat['title']}: no ${name}"


def test_legends_name_percentiles_as_people_do() -> None:
    for panel, target in targets():
        legend = target["legendFormat"]
        assert not re.search(r"p\{\{quantile\}\}|p0\.", legend), f"{panel['title']}: {legend}"
        found = re.findall(r'histogram_quantile\(([\d.]+)|quantile="([\d.]+)"', target["expr"])
        for q in {a or b for a, b in found}:
            assert legend.endswith(f"p{float(q) * 100:g}"), f"{panel['title']}: {legend}"


PER_SECOND = {"cps", "reqps", "ops", "pps", "wps", "rps"}


def test_cluster_wide_series_count_each_state_group_once() -> None:
    """Every query on a cluster-wide family counts each state group once; the exporter's own
    series (each replica's work) are plain sums."""
    shared = cluster_wide()
    for panel, target in targets():
        names = {re.sub(r"_(bucket|sum|count)$", "", name)
                 for name in re.findall(r"\bsignalwire_[a-z0-9_]+", target["expr"])}
        names.discard(STATE_INFO)
        grouped = (target["expr"].count(JOIN)
                   == len(re.findall(r"\bsignalwire_[a-z0-9_]+\{", target["expr"])))
        if names & shared:
            assert names <= shared and grouped, f"{panel['title']}: {target['expr']}"
        else:
            assert STATE_INFO not in target["expr"], panel["title"]


def test_rates_are_drawn_in_per_second_units() -> None:
    for panel in data_panels():
        exprs = [target["expr"].replace(JOIN, "") for target in panel["targets"]]
        if all(e.startswith("sum") and "rate(" in e and "/" not in e and "*" not in e
               for e in exprs):
            assert panel["fieldConfig"]["defaults"]["unit"] in PER_SECOND, panel["title"]
    assert panel_titled("Message segments")["fieldConfig"]["defaults"]["unit"] in PER_SECOND


def colours(panel: dict[str, Any]) -> dict[str, str]:
    return {override["matcher"]["options"]: override["properties"][0]["value"]["fixedColor"]
            for override in panel["fieldConfig"]["overrides"]}


def test_every_callback_outcome_has_a_colour() -> None:
    assert set(OUTCOMES) <= set(colours(panel_titled("Callbacks by outcome")))


def step_colour(steps: list[dict[str, Any]], value: float) -> str:
    """The colour Grafana gives ``value``: the last step whose start is at or below it."""
    colour = steps[0]["color"]
    for step in steps[1:]:
        if value >= step["value"]:
            colour = step["color"]
    return str(colour)


def tier_bounds(name: str) -> tuple[float | None, float | None]:
    """(low, high] from a tier's label: "(3.1 or less)", "(over 3.5 to 3.7)", "(over 4.2)"."""
    if match := re.search(r"\((\d\.\d) or less\)", name):
        return None, float(match.group(1))
    if match := re.search(r"\(over (\d\.\d) to (\d\.\d)\)", name):
        return float(match.group(1)), float(match.group(2))
    match = re.search(r"\(over (\d\.\d)\)", name)
    assert match, name
    return float(match.group(1)), None


def in_tier(mos: float, bounds: tuple[float | None, float | None]) -> bool:
    low, high = bounds
    return (low is None or mos > low) and (high is None or mos <= high)


def test_mos_tiers_labels_and_colours_say_what_the_buckets_count() -> None:
    tiers = panel_titled("Calls by MOS tier")
    names = [target["legendFormat"] for target in tiers["targets"]]
    for target in tiers["targets"]:
        low, high = tier_bounds(target["legendFormat"])
        buckets = re.findall(r'le="([\d.]+)"', target["expr"])
        # A tier is a difference of le buckets: (low, high], as its label says.
        assert buckets == [str(b) for b in (high, low) if b is not None], target["expr"]
    # A MOS on a tier's upper bound (4.2: fair) takes that tier's colour on every MOS panel.
    tier_colour = colours(tiers)
    for title in ("MOS percentiles by direction", "MOS mean"):
        steps = panel_titled(title)["fieldConfig"]["defaults"]["thresholds"]["steps"]
        for mos in (1.0, 3.0, 3.1, 3.2, 3.5, 3.6, 3.7, 4.0, 4.2, 4.3, 5.0):
            (name,) = [name for name in names if in_tier(mos, tier_bounds(name))]
            assert step_colour(steps, mos) == tier_colour[name], f"{title}: MOS {mos}"
    # Texts say "at or below 3.5" (the le="3.5" bucket), never "below 3.5".
    for text in [panel["description"] for panel in data_panels()] + [
            (ROOT / "docs" / doc).read_text() for doc in ("grafana.md", "alerting.md",
                                                          "runbook.md")] + [RULES.read_text()]:
        assert not re.search(r"(?<!at or )below 3\.5", text.replace("below_3_5", "")), text[:80]


def test_links_lead_to_the_runbook_and_the_failed_call_report() -> None:
    dashboard = load()
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["exporter_url"]["type"] == "textbox"
    urls = {link["title"]: link["url"] for link in dashboard["links"]}
    assert urls == {"Runbook": "${exporter_url}/runbook",
                    "Failed-call report": "${exporter_url}/reports/failed-calls?format=json"}


def test_exemplars_on_the_failure_and_mos_panels_link_to_the_failed_call_report() -> None:
    with_exemplars = {panel["title"] for panel, target in targets() if target.get("exemplar")}
    assert with_exemplars == {"Unsuccessful calls by status", "MOS percentiles by direction",
                              "MOS heatmap"}
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yaml").read_text())
    (destination,) = datasources["datasources"][0]["jsonData"]["exemplarTraceIdDestinations"]
    assert destination["name"] == "call_sid"  # the exemplar's label (issue 16)
    # $$ keeps Grafana's provisioning from reading ${__value.raw} as an environment variable.
    assert destination["url"].endswith("/reports/failed-calls?format=json&call_sid=$${__value.raw}")


def test_firing_alerts_are_annotations() -> None:
    (firing,) = [item for item in load()["annotations"]["list"] if "target" in item]
    assert firing["enable"] is True
    assert 'alertstate="firing"' in firing["target"]["expr"]
    assert firing["titleFormat"] == "{{alertname}}"


# --- Grafana's own types: tools/grafana_schema.py -------------------------------------

def grafana_schema() -> Any:
    """tools/grafana_schema.py, with its npm packages installed (skipped here, failed in CI)."""
    require_tool("node")
    spec = importlib.util.spec_from_file_location(
        "grafana_schema", ROOT / "tools" / "grafana_schema.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not module.installed():
        message = "run: npm ci --prefix tools/grafana-schema"
        if os.environ.get("SIGNALWIRE_EXPORTER_REQUIRE_TOOLS"):
            pytest.fail(message)
        pytest.skip(message)
    return module


def test_dashboards_type_check_against_grafana_schema() -> None:
    assert grafana_schema().check(build.dashboards()) == []


def test_the_type_check_catches_unknown_keys_and_values_outside_an_enum() -> None:
    dashboard = copy.deepcopy(build.calls_dashboard())
    panel = next(panel for panel in dashboard["panels"] if panel["type"] == "timeseries")
    panel["options"]["legend"]["displayMode"] = "sideways"
    panel["targets"][0]["exemplars"] = True  # the key is "exemplar"
    errors = grafana_schema().check({"broken.json": dashboard})
    for version in ("v10.4", "v11.2", "v13.2"):
        mine = [error for error in errors if error.startswith(f"{version}/")]
        assert any('"sideways"' in error for error in mine), errors
        assert any("'\"exemplars\"' does not exist" in error for error in mine), errors


# --- end to end: every query against a real Prometheus ------------------------------

def seconds(duration: str) -> int:
    match = re.fullmatch(r"(\d+)([sm])", duration)
    assert match, duration
    return int(match.group(1)) * (60 if match.group(2) == "m" else 1)


def scrape_interval() -> int:
    """The provisioned data source's timeInterval: Grafana's idea of the scrape interval."""
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yaml").read_text())
    return seconds(datasources["datasources"][0]["jsonData"]["timeInterval"])


def substitute(expr: str, panel: dict[str, Any], variables: dict[str, str]) -> str:
    """The query Grafana sends for a "Last 5 minutes" view: $__interval is the scrape
    interval or the panel's minimum interval, whichever is larger (a 5-minute range has
    far fewer points than pixels), and $__rate_interval = max($__interval + scrape
    interval, 4 * scrape interval). These windows span the whole test, so every event
    of the replay is inside them."""
    scrape = scrape_interval()
    interval = max(scrape, seconds(panel.get("interval", "0s")))
    rate_interval = max(interval + scrape, 4 * scrape)
    values = {"__interval": f"{interval}s", "__rate_interval": f"{rate_interval}s",
              "__range": "5m", **variables}

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in values, f"unknown variable ${name} in {panel['title']}"
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", one, expr)


def regex_value(values: list[str]) -> str:
    """Grafana's Prometheus formatting of a multi-value variable: an escaped alternation."""
    return "(" + "|".join(re.escape(value).replace("\\", "\\\\") for value in values) + ")"


def shows_data(result: list[dict[str, Any]]) -> bool:
    """At least one series with a real, non-zero value: something to see, not a flat 0."""
    return any(math.isfinite(value := float(series["value"][1])) and value != 0
               for series in result)


def label_values(prometheus: Prometheus, query: str, variables: dict[str, str]) -> list[str]:
    """Run a variable's label_values(selector, label) the way Grafana's data source does."""
    match = re.fullmatch(r"label_values\((.+), (\w+)\)", query)
    assert match, query
    selector = substitute(match.group(1), {"title": "variables"}, variables)
    answer = prometheus.get_json(f"/api/v1/label/{match.group(2)}/values",
                                 **{"match[]": selector})
    return list(answer["data"])


# Metrics whose panels this replay does not feed: features it leaves off (reconciliation and
# prices need the REST API, the store needs Redis) or not built yet (interface.md: issues 13,
# 15, 17). Their queries must run; they need not show data.
NOT_FED = {
    "signalwire_10dlc_events_total", "signalwire_calls_reconciled_total",
    "signalwire_call_price_total", "signalwire_exporter_api_requests_total",
    "signalwire_exporter_store_up", "signalwire_exporter_store_spooled_callbacks",
    "signalwire_exporter_store_errors_total",
}


def mos_values(callbacks: list[replay.Callback]) -> list[float]:
    """The MOS each call of a replay reports: once per call, from its first final event."""
    seen: dict[str, float] = {}
    for callback in callbacks:
        if "AudioInMos" in callback.fields:
            seen.setdefault(callback.fields["CallSid"], float(callback.fields["AudioInMos"]))
    return list(seen.values())


def post_json(url: str, document: Any, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=json.dumps(document).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def value(result: list[dict[str, Any]]) -> float:
    (series,) = result
    return float(series["value"][1])


def by_label(result: list[dict[str, Any]], *labels: str) -> dict[tuple[str, ...], float]:
    return {tuple(series["metric"].get(label, "") for label in labels): float(series["value"][1])
            for series in result}


def test_every_panel_query_returns_data_from_a_real_prometheus(
        tmp_path: Path, exporter_process: Any, services: list[Service],
        fake_api: FakeSignalWire) -> None:
    relay = yaml.safe_dump({"sms": fake_api.sms_config([SMS_TO])})
    first = exporter_process(relay)  # relays alerts by SMS: the relay's panels
    second = exporter_process("tracking:\n  max_calls: 5\n")  # evicts: expired calls
    urls = [first.url, second.url]
    prometheus = Prometheus(tmp_path, [url.removeprefix("http://") for url in urls], [RULES])
    services.append(prometheus)
    prometheus.wait_for('count(up{job="signalwire-exporter"} == 1) == 2', bool, 30)

    sent = 0

    def send(callbacks: list[replay.Callback]) -> None:
        """Send, then wait until Prometheus has scraped all of it from both replicas."""
        nonlocal sent
        for url, callback in replay.spread(callbacks, urls):
            assert replay.post(url, callback) == 200
            sent += 1
        prometheus.wait_for(
            'sum(signalwire_exporter_callbacks_total{job="signalwire-exporter"})',
            lambda result: bool(result) and float(result[0]["value"][1]) == sent)

    send(replay.replay("warm-up"))
    for url in urls:
        assert replay.send_rejected(url) == [400, 415]
        sent += 2
    calls = replay.replay("call")
    send(calls + replay.abandoned(20) + replay.answered(4))
    # One alert relayed by SMS, and one webhook with a wrong token.
    for token, status in (("hook-secret", 200), ("wrong", 401)):
        assert post_json(f"{first.url}/alerts/sms", notification(count=1),
                         {"Authorization": f"Bearer {token}"}) == status

    dashboard = load()
    variables = {"job": "signalwire-exporter", "instance": ".*", "direction": ".*",
                 "app": ".*", "line": ".*"}
    queries = {var["name"]: var["query"] for var in dashboard["templating"]["list"]
               if var["type"] == "query"}
    assert label_values(prometheus, queries["job"], variables) == ["signalwire-exporter"]
    instances = label_values(prometheus, queries["instance"], variables)
    assert sorted(instances) == sorted(url.removeprefix("http://") for url in urls)
    assert {"inbound", "outbound-api", "outbound-dial"} <= set(
        label_values(prometheus, queries["direction"], variables))
    # Nothing configures labels: here, so no app or line yet; "All" (.*) still matches.
    assert label_values(prometheus, queries["app"], variables) == []
    assert label_values(prometheus, queries["line"], variables) == []

    emitted = set(prometheus.get_json("/api/v1/label/__name__/values",
                                      **{"match[]": '{job="signalwire-exporter"}'})["data"])
    pending: dict[tuple[str, str], tuple[dict[str, Any], str]] = {}
    for panel, target in targets():
        names = set(re.findall(r"\bsignalwire_[a-z0-9_]+", target["expr"]))
        # Every metric queried exists, or is one this replay leaves unfed: never a misspelt one.
        assert names <= emitted | NOT_FED, f"{panel['title']}: {names - emitted}"
        if not names & NOT_FED:
            pending[(panel["title"], target["refId"])] = (
                panel, substitute(target["expr"], panel, variables))
    deadline = time.monotonic() + 40
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    while pending and time.monotonic() < deadline:
        for key, (_, expr) in list(pending.items()):
            results[key] = prometheus.query(expr)  # raises unless the query parses and runs
            if shows_data(results[key]):
                del pending[key]
        time.sleep(0.5)
    assert not pending, "no data: " + "; ".join(
        f"{title}/{ref}: {expr} -> {results.get((title, ref))}"
        for (title, ref), (_, expr) in pending.items())

    for panel in data_panels():
        if panel["type"] == "stat":  # one number, however many replicas and directions
            (target,) = panel["targets"]
            assert len(results[(panel["title"], target["refId"])]) == 1, panel["title"]
        for target in panel["targets"]:
            legend = set(re.findall(r"\{\{(\w+)\}\}", target["legendFormat"]))
            for series in results.get((panel["title"], target["refId"]), []):
                labels = set(series["metric"])
                # Replicas are summed: a line per instance only where the legend names it.
                assert "instance" not in labels - legend, f"{panel['title']}: {labels}"
                assert legend <= labels, f"{panel['title']}: legend {legend}, labels {labels}"
    assert len(results[("Tracked calls", "A")]) == 2  # one line per replica

    def result(title: str, ref: str = "A") -> list[dict[str, Any]]:
        return results[(title, ref)]

    # What the fixed panels show, against what the replay sent.
    codes = {message_error_label(code) for _, code in replay.MESSAGE_ENDS if code}
    assert set(by_label(result("Top message error codes"), "code")) == {(c,) for c in codes}
    # ... though the exporter creates a zero series for every code it knows.
    assert value(prometheus.query(
        'count(signalwire_message_errors_total{job="signalwire-exporter"})')) > len(codes)
    assert set(by_label(result("Refused callbacks"), "endpoint", "outcome")) == {
        ("voice", "invalid"), ("voice", "unsupported")}
    assert set(by_label(result("Duplicate deliveries"), "endpoint")) == {
        ("voice",), ("messaging",), ("calling",)}
    assert set(by_label(result("Expired calls"), "reason")) == {("capacity",)}
    assert value(result("Instances up")) == 1
    assert by_label(result("Exporter version"), "version") == {(__version__,): 2}
    assert set(by_label(result("Alert notifications relayed"), "outcome")) == {
        ("sent",), ("unauthorized",)}
    assert set(by_label(result("Alert SMS by result"), "result")) == {("sent",)}
    # MOS tiers: the warm-up and the measured replay report the same MOS mix, so whatever
    # share of each the windows hold, each tier's share is the replay's (a few % of rate
    # extrapolation aside); a boundary value in the wrong tier would move it by 0.1 or more.
    mos = mos_values(calls)
    tier_panel = panel_titled("Calls by MOS tier")
    counts = {target["legendFormat"]: value(result("Calls by MOS tier", target["refId"]))
              for target in tier_panel["targets"]}
    for name, count in counts.items():
        expected = sum(in_tier(m, tier_bounds(name)) for m in mos) / len(mos)
        assert count / sum(counts.values()) == pytest.approx(expected, abs=0.05), name
    low = sum(m <= 3.5 for m in mos) / len(mos)
    assert value(result("Low-MOS calls")) == pytest.approx(low, abs=0.05)
    # The firing-alert annotation: an invalid callback fires SignalWireCallbacksRejected.
    (firing,) = [item["target"] for item in dashboard["annotations"]["list"] if "target" in item]
    alerts = prometheus.wait_for(substitute(firing["expr"], {"title": "annotation"}, variables),
                                 bool, 30)
    assert "SignalWireCallbacksRejected" in {series["metric"]["alertname"] for series in alerts}

    # A window without observations gives no value, never NaN (quantiles, ratios).
    prometheus.wait_for('sum(rate(signalwire_exporter_callbacks_total'
                        '{job="signalwire-exporter"}[3s])) == 0', bool, 30)
    idle = {**variables, "__rate_interval": "3s", "__interval": "3s"}
    for panel_, target in targets():
        for series in prometheus.query(substitute(target["expr"], panel_, idle)):
            assert not math.isnan(float(series["value"][1])), \
                f"{panel_['title']}/{target['refId']}: NaN"

    # One replica and one direction, app and line picked: every query still parses and runs.
    picked = {**variables, "instance": regex_value(instances[:1]),
              "direction": regex_value(["outbound-api"]), "app": regex_value(["sales"]),
              "line": regex_value(["main"])}
    for panel_, target in targets():
        prometheus.query(substitute(target["expr"], panel_, picked))

    # One of two replicas down: "Instances up" says 50%, and turns red.
    second.proc.terminate()
    second.proc.wait(10)
    instances_up = panel_titled("Instances up")
    up = substitute(instances_up["targets"][0]["expr"], instances_up, variables)
    assert value(prometheus.wait_for(up, lambda r: bool(r) and value(r) == 0.5, 30)) == 0.5
    steps = instances_up["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert (step_colour(steps, 0.5), step_colour(steps, 1)) == ("red", "green")


@pytest.mark.parametrize("values, expected", [
    (["127.0.0.1:9880"], r"(127\\.0\\.0\\.1:9880)"), (["a", "b"], "(a|b)")])
def test_regex_value_escapes_like_grafana(values: list[str], expected: str) -> None:
    assert regex_value(values) == expected


# --- panels of metrics the replay does not feed, and the app/line slices ----------------------

class StaticTarget:
    """A scrape target serving exposition text whose counters grow at fixed rates: the series
    the exporter does not emit here (other features, labels not configured), with values
    known in advance."""

    def __init__(self, text: Callable[[], str]) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = text().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def exposition(n: float, backend: str, group: str) -> str:
    """After n seconds: calls with and without app/line (2 + 1 + 1 a second), and one a
    second of each metric whose panel the replay cannot feed; served from state ``group``."""
    def counter(name: str, *samples: tuple[str, float]) -> str:
        lines = [f"# HELP {name} test series", f"# TYPE {name} counter"]
        return "\n".join(lines + [f"{name}{{{labels}}} {value}" for labels, value in samples])

    def gauge(name: str, value: float, labels: str = "") -> str:
        return f"# HELP {name} test series\n# TYPE {name} gauge\n{name}{{{labels}}} {value}"

    completed = 'direction="inbound",status="completed"'
    return "\n".join([
        counter("signalwire_calls_total", (f'{completed},app="sales",line="main"', 2 * n),
                (f'{completed},app="support",line="other"', n), (completed, n)),
        counter("signalwire_10dlc_events_total",
                ('category="campaign",event_type="campaign_deactivated"', n)),
        counter("signalwire_calls_reconciled_total", ('status="completed"', n)),
        counter("signalwire_call_price_total", ('direction="outbound",currency="USD"', n / 100)),
        counter("signalwire_exporter_api_requests_total", ('outcome="ok"', n)),
        counter("signalwire_exporter_store_errors_total", ('operation="write"', n)),
        gauge("signalwire_exporter_store_up", 1),
        gauge("signalwire_exporter_store_spooled_callbacks", 3),
        gauge("signalwire_exporter_state_info", 1, f'backend="{backend}",group="{group}"'),
    ]) + "\n"


@pytest.mark.parametrize(("backend", "replicas"), [("memory", 1), ("redis", 2), ("memory", 2)])
def test_unfed_panels_and_app_line_slices_show_known_values(
        tmp_path: Path, services: list[Service], backend: str, replicas: int) -> None:
    """One memory process; two Redis replicas serving the same cluster-wide series (the same
    values, each scraped at its own moments), which every panel counts once; and two memory
    processes with those values each, which add up. The exporter's own series (REST API
    requests, store) are each replica's and add up in every case."""
    start = time.monotonic()
    groups = ["redis:signalwire-exporter:" if backend == "redis" else f"memory:{i}"
              for i in range(replicas)]
    targets = [StaticTarget(lambda group=group: exposition(time.monotonic() - start, backend,
                                                           group))
               for group in groups]
    try:
        prometheus = Prometheus(tmp_path, [target.address for target in targets])
        services.append(prometheus)
        # Enough scrapes (1 s apart) of every target that a 5 s window is full of them.
        prometheus.wait_for(f'count(count_over_time(signalwire_exporter_store_up[1m]) >= 8) '
                            f'== {replicas}', bool, 30)
        every = {"job": "signalwire-exporter", "instance": ".*", "direction": ".*", "app": ".*",
                 "line": ".*", "__rate_interval": "5s"}

        def query(title: str, ref: str = "A", **picked: str) -> dict[tuple[str, ...], float]:
            panel = panel_titled(title)
            (target,) = [target for target in panel["targets"] if target["refId"] == ref]
            legend = re.findall(r"\{\{(\w+)\}\}", target["legendFormat"])
            variables = {**every, **{name: regex_value([v]) for name, v in picked.items()}}
            return by_label(prometheus.query(substitute(target["expr"], panel, variables)),
                            *legend)

        # Per second; the cluster-wide values once per state group.
        counted = len(set(groups))

        def per_second(rate: float, copies: int = counted) -> Any:
            return pytest.approx(rate * copies, rel=0.1)

        one = per_second(1)
        assert query("10DLC events") == {("campaign", "campaign_deactivated"): one}
        assert set(query("10DLC events in range")) == {("campaign", "campaign_deactivated")}
        assert query("Final calls and reconciled calls", "B") == {("completed",): one}
        assert query("Call cost per hour by direction") == {
            ("outbound", "USD"): per_second(36.0)}  # 0.01 a second
        # The exporter's own: each replica's requests, whatever the backend.
        assert query("REST API requests by outcome") == {("ok",): per_second(1, replicas)}
        addresses = [target.address for target in targets]
        assert query("Store up") == {(address,): 1.0 for address in addresses}
        assert query("Spooled callbacks and store errors", "A") == {
            (address,): 3.0 for address in addresses}
        assert query("Spooled callbacks and store errors", "B") == {
            (address,): per_second(1, 1) for address in addresses}

        # App and Line: "All" counts the series without the labels too; a pick narrows.
        status = "Final calls by status"
        assert query(status) == {("completed",): per_second(4)}
        assert query(status, app="sales") == {("completed",): per_second(2)}
        assert query(status, line="other") == {("completed",): one}
        assert query(status, app="support", line="main") == {}
        # The top row's 5-minute stats hold the series' whole short life: compare shares.
        calls = {picked: value(prometheus.query(substitute(
            panel_titled("Calls per second")["targets"][0]["expr"],
            panel_titled("Calls per second"),
            {**every, **{name: regex_value([v]) for name, v in picked}})))
            for picked in ((), (("app", "sales"),), (("line", "other"),))}
        assert calls[(("app", "sales"),)] / calls[()] == pytest.approx(0.5, rel=0.05)
        assert calls[(("line", "other"),)] / calls[()] == pytest.approx(0.25, rel=0.05)
    finally:
        for target in targets:
            target.stop()
