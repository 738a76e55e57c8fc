"""Print the prometheus-operator PrometheusRule for the bundled alert rules.

    python3 tools/prometheusrule.py > deploy/kubernetes/prometheusrule.yaml
    python3 tools/prometheusrule.py my-rules.yml > my-prometheusrule.yaml
    signalwire-exporter rules --config FILE | python3 tools/prometheusrule.py - > my-rule.yaml

alerts/signalwire-exporter.rules.yml stays the one source of the rules (promtool tests it);
the Kubernetes manifest is derived from it so the two cannot drift apart
(tests/test_deploy.py compares the committed manifest with this script's output).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "alerts" / "signalwire-exporter.rules.yml"
HEADER = (
    "# Generated from alerts/signalwire-exporter.rules.yml by tools/prometheusrule.py;\n"
    "# do not edit: change the rule file and run\n"
    "#   python3 tools/prometheusrule.py > deploy/kubernetes/prometheusrule.yaml\n"
)


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (expressions, descriptions) as ``|`` blocks, as people write them."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str)


def prometheus_rule(rules: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "signalwire-exporter",
            "labels": {"app.kubernetes.io/name": "signalwire-exporter"},
        },
        "spec": {"groups": rules["groups"]},
    }


def render(rules_text: str) -> str:
    document = prometheus_rule(yaml.safe_load(rules_text))
    body = yaml.dump(document, Dumper=_BlockDumper, sort_keys=False, width=1000,
                     allow_unicode=True)
    return HEADER + body


def main(argv: list[str]) -> int:
    """Rules from the file named by the one argument ('-' = stdin), else the bundled file."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="tools/prometheusrule.py",
        description="Print the prometheus-operator PrometheusRule for a Prometheus rule file.")
    parser.add_argument("rules", nargs="?", default=str(RULES),
                        help="rule file to wrap, '-' for standard input "
                             "(default: alerts/signalwire-exporter.rules.yml)")
    source = parser.parse_args(argv).rules
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        print(f"error: {source}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    sys.stdout.write(render(text))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
