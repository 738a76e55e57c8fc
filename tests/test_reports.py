"""The failed-call report: window bounds, masking, and CSV/JSON through a real server."""

from __future__ import annotations

import csv
import io
import itertools
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlsplit

import pytest
import yaml
from aiohttp.test_utils import TestClient

from exporter import reports
from exporter.config import FailedCallsReportConfig
from exporter.errors import Rejected
from exporter.payloads import parse_call_event

from .conftest import ROOT, ClientFactory, sample
from .test_app import post as post_callback

_sids = itertools.count()
HEADER = ["Call SID", "Call Status", "Event Timestamp", "Call Direction", "To Number",
          "From Number", "Recording URL (if present)", "SIP Result Code",
          "SIP Invite Result Phrase", "Received At"]


def call(status: str, sid: str | None = None, **extra: str) -> dict[str, str]:
    return {"CallSid": sid or f"report-{next(_sids)}", "CallStatus": status,
            "Direction": "outbound-api", "From": "+15551234567", "To": "+15559876543",
            "SequenceNumber": "3", "Timestamp": "Thu, 09 Nov 2023 17:06:00 +0000",
            "SipResultCode": "404", "SipInviteResultPhrase": "Not Found", **extra}


async def post(client: TestClient, fields: dict[str, str], endpoint: str = "voice") -> None:
    status, _ = await post_callback(client, fields, endpoint)
    assert status == 200


async def get_csv(client: TestClient, query: str = "") -> list[list[str]]:
    response = await client.get(f"/reports/failed-calls{query}")
    assert response.status == 200
    assert response.content_type == "text/csv"
    return list(csv.reader(io.StringIO(await response.text())))


# --- pure parts ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("number", "masked"), [
    ("+15551234567", "+1555***4567"),
    ("+442071838750", "+4420***8750"),
    ("12345678", "***"),
    ("", ""),
])
def test_mask_number(number: str, masked: str) -> None:
    assert reports.mask_number(number) == masked


def event(status: str, sid: str = "sid") -> reports.CallEvent:
    return parse_call_event(call(status, sid), "voice")


def test_window_keeps_only_the_newest_entries() -> None:
    report = reports.FailedCallReport(FailedCallsReportConfig(max_entries=3))
    for i in range(5):
        report.add(event("failed", f"s{i}"), "failed", "inbound", now=float(i))
    assert [row["call_sid"] for row in report.rows(5.0, mask=False)] == ["s2", "s3", "s4"]


def test_window_drops_entries_older_than_max_age() -> None:
    report = reports.FailedCallReport(FailedCallsReportConfig(max_age_seconds=60))
    report.add(event("busy", "old"), "busy", "inbound", now=0.0)
    report.add(event("busy", "new"), "busy", "inbound", now=30.0)
    assert len(report.rows(60.0, mask=False)) == 2
    assert [row["call_sid"] for row in report.rows(61.0, mask=False)] == ["new"]
    assert report.rows(200.0, mask=False) == []


def test_only_unsuccessful_statuses_are_kept() -> None:
    report = reports.FailedCallReport(FailedCallsReportConfig())
    wall = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    for status in ("completed", "failed", "busy", "no-answer", "canceled"):
        report.add(event(status), status, "inbound", now=0.0, wall=wall)
    rows = report.rows(0.0, mask=False)
    assert [row["call_status"] for row in rows] == ["failed", "busy", "no-answer", "canceled"]
    assert rows[0] == {
        "call_sid": "sid", "call_status": "failed",
        "event_timestamp": "2023-11-09T17:06:00+00:00", "call_direction": "inbound",
        "to_number": "+15559876543", "from_number": "+15551234567", "recording_url": "",
        "sip_result_code": "404", "sip_invite_result_phrase": "Not Found",
        "received_at": "2026-01-02T03:04:05+00:00"}


def test_csv_cells_cannot_start_a_formula_but_numbers_stay() -> None:
    row = dict.fromkeys((key for key, _ in reports.COLUMNS), "")
    row.update(sip_invite_result_phrase="=HYPERLINK(\"http://x\")", to_number="+15551234567",
               from_number="-1+2")
    lines = list(csv.reader(io.StringIO(reports.to_csv([row]))))
    values = dict(zip(HEADER, lines[1], strict=True))
    assert values["SIP Invite Result Phrase"] == "'=HYPERLINK(\"http://x\")"
    assert values["To Number"] == "+15551234567"
    assert values["From Number"] == "'-1+2"


@pytest.mark.parametrize(("query", "status", "message"), [
    ({"format": "xml"}, 400, "format"),
    ({"mask": "maybe"}, 400, "mask"),
    ({"fromat": "json"}, 400, "fromat"),
])
def test_bad_queries_are_named(query: dict[str, str], status: int, message: str) -> None:
    with pytest.raises(Rejected) as info:
        reports.parse_query(query, FailedCallsReportConfig())
    assert info.value.status == status
    assert message in info.value.message


def test_configured_masking_cannot_be_turned_off_by_a_query() -> None:
    config = FailedCallsReportConfig(mask_numbers=True)
    assert reports.parse_query({}, config).mask
    with pytest.raises(Rejected) as info:
        reports.parse_query({"mask": "0"}, config)
    assert info.value.status == 403


# --- through a real exporter ------------------------------------------------------------------

async def test_csv_lists_unsuccessful_calls_once(client: TestClient) -> None:
    for status in ("failed", "busy", "no-answer", "canceled", "completed"):
        await post(client, call(status, f"csv-{status}"))
    await post(client, call("failed", "csv-failed"))  # a duplicate delivery
    await post(client, call("busy", "csv-failed", SequenceNumber="4"))  # a later final status
    rows = await get_csv(client)
    assert rows[0] == HEADER
    assert [(r[0], r[1]) for r in rows[1:]] == [
        ("csv-failed", "failed"), ("csv-busy", "busy"), ("csv-no-answer", "no-answer"),
        ("csv-canceled", "canceled")]
    first = dict(zip(HEADER, rows[1], strict=True))
    assert first["To Number"] == "+15559876543"
    assert first["SIP Result Code"] == "404"
    assert first["SIP Invite Result Phrase"] == "Not Found"
    assert first["Call Direction"] == "outbound-api"
    assert sample(client, "signalwire_exporter_report_failed_calls") == 4


async def test_inbound_endpoint_calls_are_reported_as_inbound(client: TestClient) -> None:
    fields = call("failed", "inbound-1")
    del fields["Direction"]
    await post(client, fields, "inbound")
    rows = await get_csv(client)
    assert rows[1][3] == "inbound"


async def test_json_report(client: TestClient) -> None:
    await post(client, call("failed", "json-1", SipResultCode="", SipInviteResultPhrase=""))
    response = await client.get("/reports/failed-calls?format=json")
    assert response.status == 200
    document = await response.json()
    assert document["count"] == 1
    assert document["masked"] is False
    assert document["max_entries"] == 1000
    (row,) = document["calls"]
    assert row["call_sid"] == "json-1"
    assert row["from_number"] == "+15551234567"
    assert row["sip_result_code"] is None
    assert row["recording_url"] is None


async def test_sip_code_is_a_number_in_json(client: TestClient) -> None:
    await post(client, call("busy", SipResultCode="486", SipInviteResultPhrase="Busy Here"))
    row = (await (await client.get("/reports/failed-calls?format=JSON")).json())["calls"][0]
    assert (row["sip_result_code"], row["sip_invite_result_phrase"]) == (486, "Busy Here")


async def test_mask_query_masks_numbers(client: TestClient) -> None:
    await post(client, call("failed"))
    rows = await get_csv(client, "?mask=1")
    assert (rows[1][4], rows[1][5]) == ("+1555***6543", "+1555***4567")
    document = await (await client.get("/reports/failed-calls?format=json&mask=true")).json()
    assert document["masked"] is True
    assert document["calls"][0]["to_number"] == "+1555***6543"


async def test_configured_masking(exporter_client: ClientFactory) -> None:
    client = await exporter_client({"reports": {"failed_calls": {"mask_numbers": True}}})
    await post(client, call("failed"))
    text = await (await client.get("/reports/failed-calls")).text()
    assert "+15551234567" not in text
    assert "+1555***4567" in text
    response = await client.get("/reports/failed-calls?mask=0")
    assert response.status == 403
    assert "mask_numbers" in (await response.json())["error"]
    assert sample(client, "signalwire_exporter_report_requests_total",
                  outcome="unauthorized") == 1


async def test_report_is_bounded_by_max_entries(exporter_client: ClientFactory) -> None:
    client = await exporter_client({"reports": {"failed_calls": {"max_entries": 2}}})
    for i in range(5):
        await post(client, call("failed", f"bound-{i}"))
    rows = await get_csv(client)
    assert [r[0] for r in rows[1:]] == ["bound-3", "bound-4"]
    assert sample(client, "signalwire_exporter_report_failed_calls") == 2


@pytest.mark.parametrize("query", ["?format=xml", "?mask=2", "?limit=5"])
async def test_bad_query_values_get_400_json(client: TestClient, query: str) -> None:
    response = await client.get(f"/reports/failed-calls{query}")
    assert response.status == 400
    assert "error" in await response.json()
    assert sample(client, "signalwire_exporter_report_requests_total", outcome="invalid") == 1


# --- ?call_sid=: one call's row (where the dashboard's exemplar links lead) -------------------

async def test_call_sid_filter_returns_that_calls_row_only(client: TestClient) -> None:
    for sid in ("pick-1", "pick-2", "pick-3"):
        await post(client, call("failed", sid))
    document = await (await client.get(
        "/reports/failed-calls?format=json&call_sid=pick-2")).json()
    assert [row["call_sid"] for row in document["calls"]] == ["pick-2"]
    assert document["count"] == 1
    rows = await get_csv(client, "?call_sid=pick-3&mask=1")
    assert [(r[0], r[4]) for r in rows[1:]] == [("pick-3", "+1555***6543")]
    # a call the report does not hold (completed, aged out, never seen): no rows, not an error
    assert (await get_csv(client, "?call_sid=unknown"))[1:] == []
    assert sample(client, "signalwire_exporter_report_requests_total", outcome="ok") == 3


@pytest.mark.parametrize("query", ["?call_sid=", f"?call_sid={'x' * 257}"])
async def test_bad_call_sid_gets_400_json(client: TestClient, query: str) -> None:
    response = await client.get(f"/reports/failed-calls{query}")
    assert response.status == 400
    assert "call_sid" in (await response.json())["error"]
    assert sample(client, "signalwire_exporter_report_requests_total", outcome="invalid") == 1


def test_the_dashboards_exemplar_link_is_a_query_the_report_accepts() -> None:
    """Grafana's exemplar link (data source provisioning) leads to that call's row."""
    provisioning = ROOT / "grafana" / "provisioning" / "datasources"
    source = yaml.safe_load((provisioning / "prometheus.yaml").read_text())["datasources"][0]
    (link,) = source["jsonData"]["exemplarTraceIdDestinations"]
    url = urlsplit(link["url"].replace("$${__value.raw}", "CA-exemplar"))
    assert url.path == "/reports/failed-calls"
    query = reports.parse_query(dict(parse_qsl(url.query)), FailedCallsReportConfig())
    assert (query.call_sid, query.format) == ("CA-exemplar", "json")
