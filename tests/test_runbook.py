"""GET /runbook: the runbook every alert links to, served by the exporter itself."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
import yaml

from exporter.config import parse_config
from exporter.rules import render_rules
from exporter.runbook import render, slug

from .conftest import ROOT, ClientFactory

RULES = ROOT / "alerts" / "signalwire-exporter.rules.yml"


class Ids(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.ids.update(value for name, value in attrs if name == "id" and value)


def alert_links(rules_text: str) -> dict[str, str]:
    return {rule["alert"]: rule["annotations"]["runbook_url"]
            for group in yaml.safe_load(rules_text)["groups"] for rule in group["rules"]
            if "alert" in rule}


def test_the_packaged_runbook_is_the_docs_one() -> None:
    assert (ROOT / "exporter" / "runbook.md").read_text() == \
        (ROOT / "docs" / "runbook.md").read_text(), "run: cp docs/runbook.md exporter/runbook.md"


async def test_every_alert_link_resolves_on_the_served_runbook(
        exporter_client: ClientFactory) -> None:
    client = await exporter_client()
    response = await client.get("/runbook")
    assert response.status == 200
    assert response.content_type == "text/html"
    page = await response.text()
    ids = Ids()
    ids.feed(page)
    links = alert_links(RULES.read_text())
    assert len(links) >= 9
    for alert, url in links.items():
        base, _, anchor = url.partition("#")
        assert base == "http://localhost:9880/runbook", alert
        assert anchor == alert.lower() and anchor in ids.ids, alert
    assert "<script" not in page


def test_external_url_moves_the_links_unless_they_are_given() -> None:
    config = parse_config({"web": {"external_url": "https://exp.example.com/sw/"}}, environ={})
    links = alert_links(render_rules(config.alerts))
    assert links["SignalWireCallFailuresHigh"] == (
        "https://exp.example.com/sw/runbook#signalwirecallfailureshigh")
    assert config.alerts.report_url == "https://exp.example.com/sw/reports/failed-calls"
    own = parse_config({"web": {"external_url": "https://exp.example.com"},
                        "alerts": {"runbook_url": "https://wiki.example.com/runbook"}},
                       environ={})
    assert own.alerts.runbook_url == "https://wiki.example.com/runbook"
    assert own.alerts.report_url == "https://exp.example.com/reports/failed-calls"


@pytest.mark.parametrize(("heading", "anchor"), [
    ("SignalWireCallFailuresHigh", "signalwirecallfailureshigh"),
    ("SignalWire10DLCCampaignDeactivated", "signalwire10dlccampaigndeactivated"),
    ("Runbook: signalwire-exporter alerts", "runbook-signalwire-exporter-alerts"),
])
def test_anchors_are_githubs(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor


def test_the_markdown_subset_renders_and_escapes() -> None:
    page = render("# T\n\n**Means.** a <b> & `x<y` [here](#a), [doc](alerting.md),\n"
                  "[site](https://status.example.com).\n\n- one\n  more\n- two\n\n"
                  "```\nq{a=\"1\"}\n```\n")
    assert "<strong>Means.</strong> a &lt;b&gt; &amp; <code>x&lt;y</code>" in page
    assert '<a href="#a">here</a>' in page and "doc (docs/alerting.md)" in page
    assert '<a href="https://status.example.com">site</a>' in page
    assert "<ul><li>one more</li><li>two</li></ul>" in page
    assert "<pre><code>q{a=&quot;1&quot;}</code></pre>" in page
    assert re.search(r"<title>T</title>", page)
