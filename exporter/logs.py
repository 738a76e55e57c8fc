"""Logging set-up: one line per event, as text or JSON, never a secret.

Call sites pass structured fields through ``extra={"fields": {...}}``; the
formatters render them as ``key=value`` pairs or JSON keys. Only values chosen
by the call site are logged, so request bodies and headers never reach a log.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any

EVENT_LOGGER = "exporter.events"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, dict) else {}


class TextFormatter(logging.Formatter):
    # One line per accepted callback at the default event level: the date part is
    # formatted once per second, not once per line.
    _second = -1
    _date = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._date = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        extra = " ".join(f"{k}={_quote(v)}" for k, v in _fields(record).items())
        line = (f"{self._date}.{int(record.msecs):03d}Z {record.levelname.lower()} "
                f"{record.name}: {record.getMessage()}")
        if extra:
            line = f"{line} {extra}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        document.update(_fields(record))
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str, ensure_ascii=False)


_NEEDS_QUOTES = re.compile(r'[\s"=]')


def _quote(value: Any) -> str:
    text = str(value)
    if not text or _NEEDS_QUOTES.search(text):
        return json.dumps(text, ensure_ascii=False)
    return text


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def level_number(name: str) -> int:
    return logging.getLevelNamesMapping()[name.upper()]
