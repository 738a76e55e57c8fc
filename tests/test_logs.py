"""Log lines: the text format that operators read and grep."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from exporter.logs import TextFormatter


def record(created: float, **fields: object) -> logging.LogRecord:
    rec = logging.LogRecord("exporter.events", logging.INFO, __file__, 1, "call status", (),
                            None)
    rec.created, rec.msecs = created, int((created - int(created)) * 1000)
    rec.fields = fields
    return rec


def test_text_line_has_utc_millisecond_time_and_quoted_fields() -> None:
    created = datetime(2026, 1, 5, 9, 0, 40, 123456, tzinfo=UTC).timestamp()
    line = TextFormatter().format(record(created, call_sid="abc", phrase="Busy Here",
                                         eq="a=b", empty="", late=False))
    assert line == ('2026-01-05T09:00:40.123Z info exporter.events: call status '
                    'call_sid=abc phrase="Busy Here" eq="a=b" empty="" late=False')


def test_each_line_gets_its_own_second() -> None:
    formatter = TextFormatter()
    first = datetime(2026, 1, 5, 9, 0, 59, 999000, tzinfo=UTC).timestamp()
    lines = [formatter.format(record(t)) for t in (first, first + 0.002, first + 3600)]
    assert [line[:24] for line in lines] == [
        "2026-01-05T09:00:59.999Z", "2026-01-05T09:01:00.001Z", "2026-01-05T10:00:59.999Z"]
