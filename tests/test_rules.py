"""The rule file: generated from config, checked and unit-tested by the real promtool."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from exporter.config import AlertsConfig, BucketsConfig, ConfigError, parse_config
from exporter.metrics import ExporterMetrics, StatusMetrics
from exporter.rules import ALERTS, STATE_INFO, render_rules

from .conftest import ROOT, require_tool

RULES = ROOT / "alerts" / "signalwire-exporter.rules.yml"
ALERT_NAMES = ("SignalWireCallFailuresHigh", "SignalWireCallFailureRatioHigh",
               "SignalWireCallQualityLow", "SignalWireCallbacksRejected",
               "SignalWireExporterDown", "SignalWireMessageDeliveryFailuresHigh",
               "SignalWireCallbacksMissing",
               "SignalWire10DLCCampaignDeactivated", "SignalWire10DLCNumberAssignmentFailed",
               "SignalWireStateStoreDown", "SignalWireCallbacksSpooled")
# Call alerts link the failed-call report and the dashboard.
LINKED = ALERT_NAMES[:3]
# Fixed names other parts (dashboards, reports) query, with the labels they keep.
RECORDS = {
    "signalwire:call_status_events:rate5m": None,
    "signalwire:calls:rate5m": None,
    "signalwire:call_attempts:rate5m": None,
    "signalwire:call_answer_seizure_ratio:5m": None,
    "signalwire:call_failure_ratio:5m": None,
    "signalwire:call_duration_seconds:avg5m": None,
    "signalwire:call_mos:quantile5m": {"0.1", "0.5", "0.9"},
    "signalwire:call_mos_below_3_5:ratio5m": None,
    "signalwire:call_post_dial_delay_seconds:quantile5m": {"0.5", "0.9", "0.99"},
    "signalwire:message_status_events:rate5m": None,
    "signalwire:messages:rate5m": None,
    "signalwire:message_delivery_failure_ratio:15m": None,
    "signalwire:recordings:rate5m": None,
    "signalwire:transcriptions:rate5m": None,
}


def rules_of(text: str) -> list[dict[str, object]]:
    return [rule for group in yaml.safe_load(text)["groups"] for rule in group["rules"]]


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_tool("promtool"), *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exporter", *args], capture_output=True,
                          text=True, timeout=30, cwd=ROOT)


def test_shipped_rule_file_is_the_generator_output_on_defaults() -> None:
    assert RULES.read_text() == render_rules(AlertsConfig())


def test_rules_subcommand_writes_the_shipped_file_from_the_example_config(
        tmp_path: Path) -> None:
    out = tmp_path / "rules.yml"
    result = cli("rules", "--config", "config.example.yaml", "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_text() == RULES.read_text()
    assert cli("rules").stdout == RULES.read_text()


def test_recording_rule_names_are_the_contract() -> None:
    records: dict[str, set[str]] = {}
    for rule in rules_of(RULES.read_text()):
        if "record" in rule:
            labels = rule.get("labels") or {}
            assert isinstance(labels, dict)
            records.setdefault(str(rule["record"]), set()).update(labels.values())
    assert set(records) == set(RECORDS)
    for name, quantiles in RECORDS.items():
        assert records[name] == (quantiles or set()), name


def test_every_alert_has_severity_annotations_and_a_runbook_section() -> None:
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    anchors = {heading.strip().lower()
               for heading in re.findall(r"^## (.+)$", runbook, flags=re.MULTILINE)}
    alerts = [rule for rule in rules_of(RULES.read_text()) if "alert" in rule]
    assert tuple(rule["alert"] for rule in alerts) == ALERT_NAMES
    for rule in alerts:
        labels, annotations = rule["labels"], rule["annotations"]
        assert isinstance(labels, dict) and isinstance(annotations, dict)
        assert labels["severity"] in ("critical", "warning", "info")
        assert {"summary", "description", "runbook_url"} <= set(annotations)
        assert "{{ $value" in annotations["description"], rule["alert"]
        base, _, anchor = annotations["runbook_url"].partition("#")
        assert base.endswith("/runbook") and anchor in anchors, rule["alert"]
        if rule["alert"] in LINKED:
            assert annotations["report_url"].endswith("/reports/failed-calls")
            assert "/d/signalwire-calls" in annotations["dashboard_url"]


def test_promtool_checks_the_shipped_rules() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(RECORDS) + 4 + len(ALERT_NAMES)} rules found" in result.stdout


TESTS = sorted((ROOT / "alerts" / "tests").glob("*.test.yml"))


def test_promtool_unit_tests_pass() -> None:
    tests = TESTS
    assert len(tests) >= 4
    result = promtool("test", "rules", *map(str, tests))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(tests)


DATA = ROOT / "tests" / "data"


def test_thresholds_from_config_change_when_alerts_fire(tmp_path: Path) -> None:
    """A generated file with other thresholds, job and URLs behaves as configured."""
    result = cli("rules", "--config", str(DATA / "custom-alerts.config.yaml"),
                 "--output", str(tmp_path / "rules.yml"))
    assert result.returncode == 0, result.stderr
    (tmp_path / "custom.test.yml").write_text((DATA / "custom-alerts.test.yml").read_text())
    check = promtool("check", "rules", "rules.yml", cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    test = promtool("test", "rules", "custom.test.yml", cwd=tmp_path)
    assert test.returncode == 0, test.stdout + test.stderr


def test_rules_subcommand_reports_bad_alert_config(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("alerts:\n  job: 'two words'\n  call_failure_ratio_high:\n"
                      "    max_ratio: 20\n    window: 15 minutes\n")
    out = tmp_path / "rules.yml"
    result = cli("rules", "--config", str(config), "--output", str(out))
    assert result.returncode == 1
    for key in ("alerts.job:", "alerts.call_failure_ratio_high.max_ratio:",
                "alerts.call_failure_ratio_high.window:"):
        assert key in result.stderr
    assert not out.exists()


@pytest.mark.parametrize(("section", "bad"), [
    ("call_quality_low", {"mos_below": 3.6}),
    ("callbacks_rejected", {"outcomes": ["rejected"]}),
    ("exporter_down", {"severity": "page"}),
    ("call_failures_high", {"threshold": -1}),
    ("ten_dlc_campaign_deactivated", {"window": "a day"}),
    ("state_store_down", {"pending_for": "soon"}),
    ("callbacks_spooled", {"severity": "urgent"}),
])
def test_alert_config_errors_name_their_key(section: str, bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"alerts": {section: bad}}, environ={})
    assert info.value.errors[0].startswith(f"alerts.{section}.{next(iter(bad))}:")


def test_mos_threshold_follows_the_exported_bucket_label() -> None:
    config = parse_config({"alerts": {"call_quality_low": {"mos_below": 4}}}, environ={})
    (quality,) = [build(config.alerts) for build in ALERTS
                  if build(config.alerts).name == "SignalWireCallQualityLow"]
    assert 'le="4.0"' in quality.expr


def test_link_urls_may_carry_a_query_but_not_a_fragment() -> None:
    dashboard = "https://grafana.example.com/d/signalwire-calls?orgId=1"
    config = parse_config({"alerts": {"dashboard_url": dashboard}}, environ={})
    assert f"dashboard_url: {dashboard}\n" in render_rules(config.alerts)
    with pytest.raises(ConfigError, match=r"alerts\.runbook_url:"):
        parse_config({"alerts": {"runbook_url": "https://wiki.example.com/a#b"}}, environ={})


def test_callbacks_missing_reads_its_share_window_and_minimum_from_the_config() -> None:
    config = parse_config({"alerts": {"callbacks_missing": {
        "window": "30m", "max_ratio": 0.2, "min_count": 50, "pending_for": "5m",
        "severity": "critical"}}}, environ={}).alerts
    rule = next(r for r in yaml.safe_load(render_rules(config))["groups"][1]["rules"]
                if r["alert"] == "SignalWireCallbacksMissing")
    assert "increase(signalwire_calls_reconciled_total{job=\"signalwire-exporter\"}[30m])" in (
        rule["expr"])
    assert ") > 0.2\nand\n" in rule["expr"] and rule["expr"].endswith(">= 50")
    assert rule["for"] == "5m" and rule["labels"] == {"severity": "critical"}


# --- the same traffic served by a group of Redis replicas ----------------------------------

def cluster_wide() -> set[str]:
    """The families a shared backend serves alike from every replica of a group."""
    registry = CollectorRegistry()
    shared = (*ExporterMetrics(registry, BucketsConfig(), lambda: 0).shared,
              *StatusMetrics(registry, BucketsConfig(), {"message": lambda: 0}).shared)
    return {series.name for series in shared}


def expand(values: str) -> list[float | None]:
    """promtool's expanding notation (a+bxn, axn, _, _xn, stale) as one value per step;
    None for a missing sample or a stale marker."""
    out: list[float | None] = []
    for item in values.split():
        if item in ("_", "stale"):
            out.append(None)
        elif match := re.fullmatch(r"_x(\d+)", item):
            out += [None] * int(match.group(1))
        elif match := re.fullmatch(r"(-?[\d.]+)(?:([+-])([\d.]+))?x(\d+)", item):
            start, step = float(match.group(1)), float(match.group(3) or 0)
            step = -step if match.group(2) == "-" else step
            out += [start + i * step for i in range(int(match.group(4)) + 1)]
        else:
            out.append(float(item))
    return out


@pytest.mark.parametrize("values, expected", [
    ("0+2x3 _x2 5", [0, 2, 4, 6, None, None, 5]), ("1x2 stale -1", [1, 1, 1, None, -1]),
    ("4-1x2 _", [4, 3, 2, None])])
def test_expand_reads_promtool_notation(values: str, expected: list[float | None]) -> None:
    assert expand(values) == expected


SERIES = re.compile(r"([a-zA-Z_:][\w:]*)\{(.*)\}")
REDIS = {"backend": "redis", "group": "redis:signalwire-exporter:"}


def parse(series: str) -> tuple[str, dict[str, str]]:
    match = SERIES.fullmatch(series)
    assert match, series
    return match.group(1), dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))


def selector(name: str, labels: dict[str, str]) -> str:
    return name + "{" + ",".join(f'{key}="{value}"' for key, value in labels.items()) + "}"


def values_text(values: list[float | None]) -> str:
    return " ".join("_" if value is None else f"{value:g}" for value in values)


def pad(values: list[float], length: int) -> list[float]:
    return values + [values[-1] if values else 0.0] * (length - len(values))


def redis_variant(case: dict[str, Any], replicas: int, one_down: bool,
                  shared: set[str]) -> dict[str, Any] | None:
    """``case`` with its traffic served by ``replicas`` Redis replicas of one group (plus,
    with ``one_down``, another one that stops halfway): each cluster-wide series, summed over
    the case's instances, is exported alike by every replica; the exporter's own per-replica
    series stay where they were. None when the case has nothing cluster-wide, shows a
    memory process restarting (gaps: no Redis equivalent) or is a Redis case already; the
    expectations must hold as they are."""
    summed: dict[tuple[str, tuple[tuple[str, str], ...]], list[float]] = {}
    kept, targets = [], {}
    for item in case["input_series"]:
        name, labels = parse(item["series"])
        if name == STATE_INFO:
            if labels["backend"] == "redis":
                return None  # already a Redis case (replicas.test.yml)
            continue
        targets.setdefault(labels["job"], {})[labels["instance"]] = None
        if re.sub(r"_(bucket|sum|count)$", "", name) not in shared:
            kept.append(item)
            continue
        expanded = expand(item["values"])
        if None in expanded:
            return None
        values = [value for value in expanded if value is not None]
        key = (name, tuple((k, v) for k, v in labels.items() if k != "instance"))
        # A series that ends early keeps its count: the shared store does.
        before = summed.get(key, [])
        width = max(len(before), len(values))
        summed[key] = [a + b for a, b in zip(pad(before, width), pad(values, width), strict=True)]
    if not summed:
        return None
    length = max(len(values) for values in summed.values())
    series = list(kept)
    for job, instances in targets.items():
        names = list(instances)
        names += [f"r{i}:9880" for i in range(len(names), max(replicas, len(names)))]
        groups = {name: [1.0] * length for name in names}
        if one_down:  # its scrapes fail halfway: a stale marker, then nothing
            groups["down:9880"] = [1.0] * (length // 2)
        for instance, alive in groups.items():
            suffix = " stale" if len(alive) < length else ""
            series.append({"series": selector(STATE_INFO, {
                "job": job, "instance": instance, **REDIS}), "values": values_text(
                alive) + suffix})
            for (name, labels), values in summed.items():
                if dict(labels)["job"] == job:
                    series.append({"series": selector(name, {**dict(labels),
                                                             "instance": instance}),
                                   "values": values_text(values[:len(alive)]) + suffix})
    return {**case, "input_series": series}


def rules_tested(cases: list[dict[str, Any]]) -> set[str]:
    names = {test["alertname"] for case in cases for test in case.get("alert_rule_test", [])}
    for case in cases:
        for test in case.get("promql_expr_test", []):
            names |= set(re.findall(r"signalwire:[a-z0-9_:]+", test["expr"]))
    return names


@pytest.mark.parametrize(("replicas", "one_down"), [(2, False), (3, False), (2, True)])
def test_every_rule_counts_a_redis_group_once(tmp_path: Path, replicas: int,
                                              one_down: bool) -> None:
    """Every promtool case with cluster-wide traffic, that traffic served alike by two or
    three Redis replicas (or two and a third that stops halfway), expects the same alerts
    and recorded values as with one process."""
    shared, covered = cluster_wide(), set()
    files = []
    for path in TESTS:
        document = yaml.safe_load(path.read_text())
        cases = [variant for case in document["tests"]
                 if (variant := redis_variant(case, replicas, one_down, shared))]
        if not cases:
            continue
        covered |= rules_tested(cases)
        out = tmp_path / path.name
        out.write_text(yaml.safe_dump({**document, "rule_files": [str(RULES)],
                                      "tests": cases}, sort_keys=False, width=1000))
        files.append(str(out))
    # Every recording rule, and every alert on cluster-wide series.
    per_replica = {"SignalWireCallbacksRejected", "SignalWireExporterDown",
                   "SignalWireStateStoreDown", "SignalWireCallbacksSpooled"}
    assert covered >= set(RECORDS) | set(ALERT_NAMES) - per_replica
    result = promtool("test", "rules", *files, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
