"""The failed-call report: what the old ``failedCallReport.csv`` held, kept in a bounded window.

The seed example wrote every failed call to a CSV once 100 had piled up. Here the
alerting moved to Prometheus, and this module keeps only the recent unsuccessful
calls (a fixed number, a fixed age) so someone paged by the alert can see which
calls failed, to whom, and with which SIP answer. It is the one place that holds
phone numbers after a request ends; they never leave it except through the report,
masked when asked.
"""

from __future__ import annotations

import csv
import io
import re
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .config import FailedCallsReportConfig
from .errors import Rejected, invalid
from .payloads import MAX_SID_LENGTH, CallEvent

# Final statuses that mean the call did not happen as intended (the seed kept only
# "failed"; busy, no-answer and canceled are the other unsuccessful ends).
REPORTED_STATUSES = frozenset(("failed", "busy", "no-answer", "canceled"))
FORMATS = ("csv", "json")

# (JSON key, CSV header): the old file's columns first, in its order, then SIP info.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("call_sid", "Call SID"),
    ("call_status", "Call Status"),
    ("event_timestamp", "Event Timestamp"),
    ("call_direction", "Call Direction"),
    ("to_number", "To Number"),
    ("from_number", "From Number"),
    ("recording_url", "Recording URL (if present)"),
    ("sip_result_code", "SIP Result Code"),
    ("sip_invite_result_phrase", "SIP Invite Result Phrase"),
    ("received_at", "Received At"),
)
NUMBER_FIELDS = ("to_number", "from_number")

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_PLAIN_NUMBER = re.compile(r"^[+-]?[0-9][0-9.*]*$")  # numbers, masked ones too


def mask_number(number: str) -> str:
    """``+15551234567`` → ``+1555***4567``: enough to recognise a number, not to dial it."""
    if len(number) <= 8:
        return "***" if number else ""
    return f"{number[:5]}***{number[-4:]}"


def masked(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """The rows with their phone numbers masked, in place."""
    for row in rows:
        for key in NUMBER_FIELDS:
            row[key] = mask_number(row[key])
    return rows


@dataclass(frozen=True, slots=True)
class FailedCall:
    """One row of the report; ``received`` (monotonic) decides when it ages out."""

    received: float
    row: Mapping[str, str]


def failed_call_row(event: CallEvent, status: str, direction: str,
                    received_at: datetime) -> dict[str, str]:
    """The report row of a call that ended ``status``; absent fields are empty strings."""
    return {
        "call_sid": event.call_sid,
        "call_status": status,
        "event_timestamp": event.timestamp.isoformat() if event.timestamp else "",
        "call_direction": direction,
        "to_number": event.to or "",
        "from_number": event.from_ or "",
        "recording_url": event.recording_url or "",
        "sip_result_code": "" if event.sip_result_code is None else str(event.sip_result_code),
        "sip_invite_result_phrase": event.sip_invite_result_phrase or "",
        "received_at": received_at.isoformat(timespec="seconds"),
    }


class FailedCallReport:
    """The last ``max_entries`` unsuccessful calls no older than ``max_age_seconds``."""

    def __init__(self, config: FailedCallsReportConfig) -> None:
        self.config = config
        self._calls: deque[FailedCall] = deque(maxlen=config.max_entries)

    def __len__(self) -> int:
        return len(self._calls)

    def add(self, event: CallEvent, status: str, direction: str, now: float,
            wall: datetime | None = None) -> None:
        """Record a call whose final status is ``status``; others are ignored."""
        if status not in REPORTED_STATUSES:
            return
        self._expire(now)
        row = failed_call_row(event, status, direction, wall or datetime.now(UTC))
        self._calls.append(FailedCall(now, row))

    def rows(self, now: float, *, mask: bool) -> list[dict[str, str]]:
        """Current rows, oldest first, with numbers masked when ``mask``."""
        self._expire(now)
        rows = [dict(call.row) for call in self._calls]
        return masked(rows) if mask else rows

    def _expire(self, now: float) -> None:
        deadline = now - self.config.max_age_seconds
        while self._calls and self._calls[0].received < deadline:
            self._calls.popleft()


# --- query → options ---------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ReportQuery:
    format: str
    mask: bool
    call_sid: str | None = None  # only this call's row (the dashboard's exemplar links)

    def select(self, rows: list[dict[str, str]]) -> list[dict[str, str]]:
        """The rows this query asks for."""
        if self.call_sid is None:
            return rows
        return [row for row in rows if row["call_sid"] == self.call_sid]


def parse_query(query: Mapping[str, str], config: FailedCallsReportConfig) -> ReportQuery:
    """Check ``?format=``, ``?mask=`` and ``?call_sid=``; anything else is refused so typos
    do not pass."""
    unknown = sorted(set(query) - {"format", "mask", "call_sid"})
    if unknown:
        raise invalid(f"unknown query parameter {unknown[0][:40]!r}; "
                      "use format, mask and call_sid")
    call_sid = query.get("call_sid")
    if call_sid is not None and not 0 < len(call_sid) <= MAX_SID_LENGTH:
        raise invalid(f"call_sid must be 1 to {MAX_SID_LENGTH} characters")
    fmt = query.get("format", "csv").lower()
    if fmt not in FORMATS:
        raise invalid("format must be csv or json")
    mask = config.mask_numbers
    if "mask" in query:
        value = query["mask"].lower()
        if value in _TRUE:
            mask = True
        elif value not in _FALSE:
            raise invalid("mask must be 1 or 0 (true or false)")
        elif config.mask_numbers:
            raise Rejected(403, "unauthorized", "phone numbers are masked by configuration "
                                                "(reports.failed_calls.mask_numbers)")
    return ReportQuery(fmt, mask, call_sid)


# --- rows → documents ----------------------------------------------------------------------

def _csv_safe(value: str) -> str:
    """Keep a spreadsheet from running a cell as a formula (CSV injection).

    Numbers such as ``+15551234567`` stay as they are; other text starting with a
    formula character gets a leading apostrophe.
    """
    if value and value[0] in "=+-@\t\r" and not _PLAIN_NUMBER.match(value):
        return f"'{value}"
    return value


def to_csv(rows: Iterable[Mapping[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([header for _, header in COLUMNS])
    for row in rows:
        writer.writerow([_csv_safe(row[key]) for key, _ in COLUMNS])
    return out.getvalue()


def to_json(rows: list[dict[str, str]], config: FailedCallsReportConfig,
            masked: bool) -> dict[str, Any]:
    """The JSON report: absent fields as null, the SIP code as a number."""
    calls = [{key: (int(value) if key == "sip_result_code" else value) if value else None
              for key, value in row.items()} for row in rows]
    return {
        "calls": calls,
        "count": len(rows),
        "masked": masked,
        "max_entries": config.max_entries,
        "max_age_seconds": config.max_age_seconds,
    }
