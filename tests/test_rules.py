"""The rule file: generated from config, checked and unit-tested by the real promtool."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from exporter.config import AlertsConfig, ConfigError, parse_config
from exporter.rules import ALERTS, render_rules

from .conftest import ROOT, require_tool

RULES = ROOT / "alerts" / "signalwire-exporter.rules.yml"
ALERT_NAMES = ("SignalWireCallFailuresHigh", "SignalWireCallFailureRatioHigh",
               "SignalWireCallQualityLow", "SignalWireCallbacksRejected",
               "SignalWireExporterDown", "SignalWireMessageDeliveryFailuresHigh",
               "SignalWireCallbacksMissing",
               "SignalWire10DLCCampaignDeactivated", "SignalWire10DLCNumberAssignmentFailed")
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


def test_promtool_unit_tests_pass() -> None:
    tests = sorted((ROOT / "alerts" / "tests").glob("*.test.yml"))
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
