"""Log lines: the text format that operators read and grep."""

from __future__ import annotations

import io
import logging
import re
import socket
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from exporter.logs import BatchingHandler, TextFormatter


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


@pytest.mark.parametrize("value", ["a\x1b[31mred", "a\x9b31mred", "a\x00b", "a\x7fb"])
def test_control_characters_from_a_request_never_reach_the_line_raw(value: str) -> None:
    # A CallSid is whatever the caller sent: raw terminal escapes in it would repaint
    # an operator's terminal or hide the line.
    line = TextFormatter().format(record(0.0, call_sid=value))
    assert not re.search(r"[\x00-\x1f\x7f-\x9f]", line)
    assert "call_sid=" in line


def test_malformed_http_requests_leave_no_traceback_in_the_log(exporter_process: Any) -> None:
    exporter = exporter_process()
    for raw in (b"POST /callbacks/voice HTTP/1.1\r\nContent-Length: 0\r\n\r\n",  # no Host
                b"GET /callbacks/voice?a=\xff HTTP/1.1\r\nHost: x\r\n\r\n",
                b"POST /callbacks/voice HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                b"Content-Length: 1\r\n\r\nx"):
        with socket.create_connection(("127.0.0.1", exporter.port), timeout=5) as sock:
            sock.sendall(raw)
            assert sock.recv(64).split(b" ")[1] == b"400"
    assert exporter.stop() == 0
    assert "Traceback" not in exporter.log()


def batching(interval: float = 3600.0, capacity: int = 3) -> tuple[BatchingHandler, io.StringIO]:
    stream = io.StringIO()
    handler = BatchingHandler(stream, interval=interval, capacity=capacity)
    handler.setFormatter(TextFormatter())
    return handler, stream


def test_batched_lines_are_held_until_the_batch_fills_then_written_in_order() -> None:
    handler, stream = batching()
    for sid in ("a", "b"):
        handler.handle(record(0.0, call_sid=sid))
    assert stream.getvalue() == ""
    handler.handle(record(0.0, call_sid="c"))
    lines = stream.getvalue().splitlines()
    assert [line.rsplit("=", 1)[1] for line in lines] == ["a", "b", "c"]
    handler.close()


def test_a_warning_is_written_at_once_with_the_lines_before_it() -> None:
    handler, stream = batching()
    handler.handle(record(0.0, call_sid="a"))
    warning = record(0.0, call_sid="w")
    warning.levelno, warning.levelname = logging.WARNING, "WARNING"
    handler.handle(warning)
    assert stream.getvalue().splitlines()[1].startswith("1970-01-01T00:00:00.000Z warning")
    assert len(stream.getvalue().splitlines()) == 2
    handler.close()


def test_close_writes_what_is_held_and_stops_the_flusher() -> None:
    handler, stream = batching()
    handler.handle(record(0.0, call_sid="a"))
    handler.close()
    assert stream.getvalue().endswith("call_sid=a\n")
    handler._flusher.join(timeout=5)
    assert not handler._flusher.is_alive()


def test_a_held_line_is_written_by_the_timer_without_more_traffic() -> None:
    handler, stream = batching(interval=0.05, capacity=1000)
    handler.handle(record(0.0, call_sid="a"))
    deadline = time.monotonic() + 10
    while not stream.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stream.getvalue().endswith("call_sid=a\n")
    handler.close()
