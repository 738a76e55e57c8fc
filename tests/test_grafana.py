"""The bundled Grafana dashboard: generated from code, well-formed, and every query shows data.

The end-to-end test runs each panel query the way Grafana would send it (template variables
and interval macros substituted) against a real Prometheus that scrapes two real exporter
replicas and evaluates the bundled recording rules. The replay exercises every panel,
including those whose description says "Empty until ...", so none is exempt from having data.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from grafana import build

from . import replay
from .conftest import ROOT, require_tool
from .servers import Prometheus, Service

DASHBOARD = ROOT / "grafana" / "dashboards" / "signalwire-calls.json"
RULES = ROOT / "alerts" / "signalwire-exporter.rules.yml"
PROVISIONING = ROOT / "grafana" / "provisioning"
PANEL_TYPES = {"row", "stat", "timeseries", "heatmap", "bargauge"}
VARIABLES = ("datasource", "job", "instance", "direction")


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


def test_every_panel_query_returns_data_from_a_real_prometheus(
        tmp_path: Path, exporter_process: Any, services: list[Service]) -> None:
    first = exporter_process()
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
    send(replay.replay("call") + replay.abandoned(20) + replay.answered(4))

    dashboard = load()
    variables = {"job": "signalwire-exporter", "instance": ".*", "direction": ".*"}
    queries = {var["name"]: var["query"] for var in dashboard["templating"]["list"][1:]}
    assert label_values(prometheus, queries["job"], variables) == ["signalwire-exporter"]
    instances = label_values(prometheus, queries["instance"], variables)
    assert sorted(instances) == sorted(url.removeprefix("http://") for url in urls)
    assert {"inbound", "outbound-api", "outbound-dial"} <= set(
        label_values(prometheus, queries["direction"], variables))

    pending = {(panel["title"], target["refId"]): (panel, substitute(target["expr"], panel,
                                                                     variables))
               for panel in data_panels() for target in panel["targets"]}
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
            for series in results[(panel["title"], target["refId"])]:
                labels = set(series["metric"])
                # Replicas are summed: a line per instance only where the legend names it.
                assert "instance" not in labels - legend, f"{panel['title']}: {labels}"
                assert legend <= labels, f"{panel['title']}: legend {legend}, labels {labels}"
    assert len(results[("Tracked calls", "A")]) == 2  # one line per replica

    # One replica and one direction picked: every query still parses and runs.
    picked = {**variables, "instance": regex_value(instances[:1]),
              "direction": regex_value(["outbound-api"])}
    for panel in data_panels():
        for target in panel["targets"]:
            prometheus.query(substitute(target["expr"], panel, picked))


@pytest.mark.parametrize("values, expected", [
    (["127.0.0.1:9880"], r"(127\\.0\\.0\\.1:9880)"), (["a", "b"], "(a|b)")])
def test_regex_value_escapes_like_grafana(values: list[str], expected: str) -> None:
    assert regex_value(values) == expected
