"""The REST API client against a real local stand-in of the Calls API."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from exporter.config import parse_config
from exporter.metrics import ApiMetrics
from exporter.signalwire_api import (
    ApiUnavailable,
    SignalWireApi,
    TokenBucket,
    parse_call,
)

from .fake_signalwire import HANG, TOKEN, FakeSignalWire, fake_api

__all__ = ["fake_api"]

SID = "3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f"


def requests(registry: CollectorRegistry, outcome: str) -> float:
    value = registry.get_sample_value("signalwire_exporter_api_requests_total",
                                      {"outcome": outcome})
    return value or 0.0


@pytest.fixture
async def client(fake_api: FakeSignalWire) -> AsyncIterator[tuple[SignalWireApi,
                                                                  CollectorRegistry]]:
    section = fake_api.api_config(timeout_seconds=0.3, max_attempts=4)
    config = parse_config({"signalwire_api": section}, environ={})
    registry = CollectorRegistry()
    api = SignalWireApi(config.signalwire_api, 200.0, ApiMetrics(registry))
    await api.open()
    yield api, registry
    await api.close()


# --- parsing (pure) ------------------------------------------------------------------------------

def test_a_call_resource_is_parsed_with_the_providers_quirks() -> None:
    call = parse_call({
        "sid": SID, "status": "completed", "direction": "outbound-api", "duration": "35",
        "start_time": "Thur, 3 Sept 2026 17:05:04 -0000", "end_time": "Thu, 03 Sep 2026 "
        "17:05:39 +0000", "answered_by": "human", "price": "-0.00750", "price_unit": "USD"})
    assert call.status == "completed" and call.direction == "outbound-api"
    assert call.duration == 35 and call.price == -0.0075 and call.price_unit == "USD"
    assert call.start_time == datetime(2026, 9, 3, 17, 5, 4, tzinfo=UTC)
    assert call.end_time == datetime(2026, 9, 3, 17, 5, 39, tzinfo=UTC)
    assert call.answered_by == "human"


def test_unknown_values_are_label_safe_and_missing_ones_none() -> None:
    call = parse_call({"sid": SID, "status": "Exploded", "direction": "sideways",
                       "duration": None, "price": None, "end_time": "not a date"})
    assert (call.status, call.direction) == ("unknown", "unknown")
    assert call.duration is None and call.price is None and call.end_time is None


@pytest.mark.parametrize("document", [[], {"sid": SID}, {"status": "completed"},
                                      {"sid": "", "status": "completed"}])
def test_a_call_without_sid_or_status_is_refused(document: Any) -> None:
    with pytest.raises(ValueError):
        parse_call(document)


async def test_the_bucket_holds_one_seconds_worth_and_refills_at_the_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(4.0, lambda: now[0])
    for _ in range(4):
        await bucket.take()  # a second's worth, at once
    waiting = asyncio.create_task(bucket.take())
    await asyncio.sleep(0.01)
    assert not waiting.done()  # the fifth waits for the clock
    now[0] += 0.25  # one token's worth of time
    await asyncio.wait_for(waiting, 5)


# --- against the stand-in ------------------------------------------------------------------

async def test_one_call_is_fetched_with_basic_auth(
        fake_api: FakeSignalWire, client: tuple[SignalWireApi, CollectorRegistry]) -> None:
    api, registry = client
    fake_api.set_call(SID, "completed", duration=35, price=-0.0075)
    call = await api.call(SID)
    assert call is not None and call.sid == SID and call.status == "completed"
    assert call.duration == 35 and call.price == -0.0075
    assert fake_api.call_lookups == [SID] and not fake_api.refused
    assert requests(registry, "ok") == 1


async def test_an_unknown_call_is_none_and_counted_not_found(
        fake_api: FakeSignalWire, client: tuple[SignalWireApi, CollectorRegistry]) -> None:
    api, registry = client
    assert await api.call(SID) is None
    assert requests(registry, "not_found") == 1


async def test_a_sid_cannot_leave_the_calls_path(
        fake_api: FakeSignalWire, client: tuple[SignalWireApi, CollectorRegistry]) -> None:
    api, _ = client
    assert await api.call("../../Messages") is None
    assert fake_api.call_lookups == ["../../Messages"]  # asked of Calls/, percent-encoded


async def test_5xx_429_and_a_hanging_api_are_retried_until_an_answer(
        fake_api: FakeSignalWire, client: tuple[SignalWireApi, CollectorRegistry]) -> None:
    api, registry = client
    fake_api.set_call(SID, "busy")
    fake_api.calls_script[:] = [HANG, 503, 429]
    call = await api.call(SID)
    assert call is not None and call.status == "busy"
    assert [requests(registry, o) for o in ("timeout", "server_error", "rate_limited", "ok")
            ] == [1, 1, 1, 1]


async def test_retries_end_after_max_attempts_and_a_4xx_is_not_retried(
        fake_api: FakeSignalWire, client: tuple[SignalWireApi, CollectorRegistry]) -> None:
    api, registry = client
    fake_api.set_call(SID, "busy")
    fake_api.calls_script[:] = [500, 500, 500, 500]
    with pytest.raises(ApiUnavailable) as failed:
        await api.call(SID)
    assert failed.value.outcome == "server_error" and requests(registry, "server_error") == 4
    fake_api.calls_script[:] = [403]
    with pytest.raises(ApiUnavailable) as refused:
        await api.call(SID)
    assert refused.value.outcome == "client_error" and requests(registry, "client_error") == 1


async def test_the_list_is_paged_through_next_page_uri(
        fake_api: FakeSignalWire, client: tuple[SignalWireApi, CollectorRegistry]) -> None:
    api, registry = client
    for i in range(5):
        fake_api.set_call(f"call-{i}", "completed", price=-0.01)
    fake_api.set_call("call-live", "in-progress")
    pages = [[c.sid for c in page] async for page in api.calls(
        {"EndTime>": "2000-01-01"}, page_size=2, max_pages=10)]
    assert pages == [["call-4", "call-3"], ["call-2", "call-1"], ["call-0"]]
    assert all(q.get("EndTime>") == "2000-01-01" for q in fake_api.list_requests)
    assert requests(registry, "ok") == 3
    first = [[c.sid for c in page] async for page in api.calls({}, page_size=2, max_pages=1)]
    assert first == [["call-live", "call-4"]]


async def test_a_next_page_on_another_host_is_not_followed(
        fake_api: FakeSignalWire, client: tuple[SignalWireApi, CollectorRegistry]) -> None:
    api, _ = client
    assert api._next_page("https://evil.example.com" + fake_api.calls_path + ".json") is None
    assert api._next_page("/api/laml/2010-04-01/Accounts/other/Calls.json") is None
    assert api._next_page(f"{fake_api.url}{fake_api.calls_path}.json?Page=1") == (
        f"{fake_api.calls_path}.json?Page=1")


async def test_no_credential_in_logs_or_errors(
        fake_api: FakeSignalWire, client: tuple[SignalWireApi, CollectorRegistry],
        caplog: pytest.LogCaptureFixture) -> None:
    api, _ = client
    caplog.set_level(logging.DEBUG)
    fake_api.calls_script[:] = [500] * 4
    with pytest.raises(ApiUnavailable) as failed:
        await api.call(SID)
    assert caplog.records  # the retries were logged
    assert TOKEN not in caplog.text and TOKEN not in str(failed.value)
    assert TOKEN not in repr(api.config)
