"""The SignalWire REST API (Compatibility API) client: one call, or the paged list of calls.

Used only in the background (``reconcile``), never on the callback path. Every request,
retries and list pages included, first takes a token from one bucket refilled at
``reconcile.max_requests_per_second``; each attempt times out after
``signalwire_api.timeout_seconds`` and is retried with doubling waits on 5xx, 429 (after
its Retry-After, when given), timeouts and connection errors, up to
``signalwire_api.max_attempts``. Each attempt is counted in
``signalwire_exporter_api_requests_total{outcome}``.

The API token travels only in the Authorization header: it is never in a URL, a log line,
a metric or an exception, and a ``next_page_uri`` is followed only on the Space it came
from, so the header can never be sent elsewhere.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from .config import SignalWireApiConfig
from .metrics import ApiMetrics
from .payloads import normalize_direction, normalize_status, parse_timestamp

log = logging.getLogger(__name__)

API_ROOT = "/api/laml/2010-04-01/Accounts/{project_id}"
MAX_PAGE_SIZE = 1000  # the largest PageSize the list takes
MAX_RETRY_AFTER_SECONDS = 60.0  # a longer Retry-After is capped: the next round asks again


class TokenBucket:
    """``rate`` tokens a second, at most ``max(1, rate)`` saved up: requests never exceed the
    rate over any second, and a quiet spell does not buy a burst larger than one second's."""

    def __init__(self, rate: float, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.clock = clock
        self.tokens = self.capacity
        self.stamp = clock()
        self._lock = asyncio.Lock()

    async def take(self) -> None:
        """Wait for a token and spend it; callers queue in order."""
        async with self._lock:
            while True:
                now = self.clock()
                self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                await asyncio.sleep((1 - self.tokens) / self.rate)


@dataclass(frozen=True, slots=True)
class ApiCall:
    """One call as the API reports it; ``status`` and ``direction`` already label-safe."""

    sid: str
    status: str
    direction: str
    duration: int | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    answered_by: str | None = None
    price: float | None = None  # negative = charged; None until the provider fills it in
    price_unit: str | None = None


def _number(value: Any) -> float | None:
    """A JSON number or numeric string (the API sends both), finite, else None."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _date(value: Any) -> datetime | None:
    """The API's RFC 2822 dates, with the provider's quirks (``Sept``, ``-0000``, ...)."""
    return parse_timestamp(value) if isinstance(value, str) and value.strip() else None


def parse_call(document: Any) -> ApiCall:
    """A call resource (``Calls/{sid}.json``, or one entry of ``Calls.json``) → ApiCall.

    Raises ValueError when it has no sid or status: then it says nothing usable.
    """
    if not isinstance(document, dict):
        raise ValueError("a call must be a JSON object")
    sid, status = document.get("sid"), document.get("status")
    if not isinstance(sid, str) or not sid or not isinstance(status, str) or not status:
        raise ValueError("a call needs sid and status")
    duration = _number(document.get("duration"))
    answered_by, unit = document.get("answered_by"), document.get("price_unit")
    return ApiCall(
        sid=sid, status=normalize_status(status),
        direction=normalize_direction(document.get("direction")
                                      if isinstance(document.get("direction"), str) else None),
        duration=int(duration) if duration is not None and duration >= 0 else None,
        start_time=_date(document.get("start_time")), end_time=_date(document.get("end_time")),
        answered_by=answered_by if isinstance(answered_by, str) and answered_by else None,
        price=_number(document.get("price")),
        price_unit=unit if isinstance(unit, str) and unit else None)


class ApiUnavailable(Exception):
    """The API gave no usable answer, after retries where they may help."""

    def __init__(self, outcome: str) -> None:
        super().__init__(f"SignalWire API request failed: {outcome}")
        self.outcome = outcome


@dataclass(frozen=True, slots=True)
class _Attempt:
    outcome: str
    retry: bool
    document: Any = None
    retry_after: float | None = None


def _retry_after(value: str | None) -> float | None:
    seconds = _number(value)
    return None if seconds is None or seconds < 0 else min(seconds, MAX_RETRY_AFTER_SECONDS)



def api_session(project_id: str, api_token: str, timeout_seconds: float) -> aiohttp.ClientSession:
    """A client session for the SignalWire REST API: basic auth with the project's token,
    JSON answers, every request bounded in time. The SMS relay uses it too."""
    credentials = f"{project_id}:{api_token}".encode()
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=timeout_seconds),
        headers={"Accept": "application/json",
                 "Authorization": f"Basic {base64.b64encode(credentials).decode()}"})

class SignalWireApi:
    """One ClientSession and one rate limit for all of an application's API requests."""

    def __init__(self, config: SignalWireApiConfig, max_requests_per_second: float,
                 metrics: ApiMetrics) -> None:
        if config.space_url is None:  # pragma: no cover - the config check comes first
            raise ValueError("signalwire_api.space_url is not set")
        self.config = config
        self.metrics = metrics
        self.rate = max_requests_per_second
        self.origin = config.space_url
        self.root = API_ROOT.format(project_id=quote(config.project_id, safe=""))
        self.session: aiohttp.ClientSession | None = None
        self.bucket: TokenBucket | None = None

    async def open(self) -> None:
        self.session = api_session(self.config.project_id, self.config.api_token,
                                   self.config.timeout_seconds)
        self.bucket = TokenBucket(self.rate, asyncio.get_running_loop().time)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def call(self, call_sid: str) -> ApiCall | None:
        """``GET Calls/{sid}.json``; None when the API does not know the call (404)."""
        document = await self.get(f"{self.root}/Calls/{quote(call_sid, safe='')}.json")
        if document is None:
            return None
        try:
            return parse_call(document)
        except ValueError:
            raise ApiUnavailable("invalid") from None

    async def calls(self, filters: Mapping[str, str], page_size: int = 50,
                    max_pages: int = 1) -> AsyncIterator[list[ApiCall]]:
        """Pages of ``GET Calls.json?<filters>``, newest calls first, following
        ``next_page_uri`` for at most ``max_pages`` pages. Entries without a sid or status
        are skipped."""
        path: str | None = f"{self.root}/Calls.json"
        params: Mapping[str, str] | None = {
            **filters, "PageSize": str(min(max(page_size, 1), MAX_PAGE_SIZE))}
        for _ in range(max_pages):
            if path is None:
                return
            document = await self.get(path, params)
            if not isinstance(document, dict) or not isinstance(document.get("calls"), list):
                raise ApiUnavailable("invalid")
            page: list[ApiCall] = []
            for entry in document["calls"]:
                try:
                    page.append(parse_call(entry))
                except ValueError:
                    continue
            yield page
            path, params = self._next_page(document.get("next_page_uri")), None

    def _next_page(self, uri: Any) -> str | None:
        """The next page's path and query, only on this Space and under this project."""
        if not isinstance(uri, str) or not uri:
            return None
        parts = urlsplit(uri)
        if (parts.scheme or parts.netloc) and f"{parts.scheme}://{parts.netloc}" != self.origin:
            return None
        if not parts.path.startswith(f"{self.root}/Calls"):
            return None
        return f"{parts.path}?{parts.query}" if parts.query else parts.path

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """The JSON document at ``path`` (on the Space), None for a 404; retried while a
        retry may help, else ApiUnavailable."""
        delay = 1.0 / self.rate
        attempt = _Attempt("connection_error", retry=True)
        for number in range(1, self.config.max_attempts + 1):
            attempt = await self._attempt(path, params)
            self.metrics.request(attempt.outcome)
            if attempt.outcome == "ok":
                return attempt.document
            if attempt.outcome == "not_found":
                return None
            if not attempt.retry:
                break
            log.warning("SignalWire API request failed", extra={"fields": {
                "attempt": number, "outcome": attempt.outcome}})
            if number < self.config.max_attempts:
                await asyncio.sleep(max(delay, attempt.retry_after or 0.0))
                delay *= 2
        raise ApiUnavailable(attempt.outcome)

    async def _attempt(self, path: str, params: Mapping[str, str] | None) -> _Attempt:
        if self.session is None or self.bucket is None:  # pragma: no cover - opened first
            raise RuntimeError("SignalWireApi.open() was not called")
        await self.bucket.take()
        try:
            # No redirects: the API has none, and following one could carry the token away.
            async with self.session.get(f"{self.origin}{path}", params=params,
                                        allow_redirects=False) as response:
                body = await response.read()
                status = response.status
                retry_after = _retry_after(response.headers.get("Retry-After"))
        except TimeoutError:
            return _Attempt("timeout", retry=True)
        except aiohttp.ClientError:
            return _Attempt("connection_error", retry=True)
        if status == 404:
            return _Attempt("not_found", retry=False)
        if status == 429:
            return _Attempt("rate_limited", retry=True, retry_after=retry_after)
        if status >= 500:
            return _Attempt("server_error", retry=True, retry_after=retry_after)
        if not 200 <= status < 300:
            return _Attempt("client_error", retry=False)
        try:
            return _Attempt("ok", retry=False, document=json.loads(body))
        except ValueError:
            return _Attempt("invalid", retry=False)
