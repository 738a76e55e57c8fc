"""Reconciliation and prices: a real exporter, a real local stand-in of the Calls API.

Timings are short (after_seconds a fraction of a second, a high request rate) so each test
takes a second or two; every wait is bounded and no test asserts a timing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from .conftest import ClientFactory, require_tool, sample, scrape, series
from .fake_signalwire import HANG, PROJECT, TOKEN, FakeSignalWire, fake_api
from .test_metrics import check_with_promtool

__all__ = ["fake_api"]

AFTER = 0.3  # reconcile.after_seconds
A = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
B = "1b2c3d4e-5f6a-4b7c-8d9e-0f1a2b3c4d5e"
C = "2c3d4e5f-6a7b-4c8d-9e0f-1a2b3c4d5e6f"


def settings(api: FakeSignalWire, *, fetch_price: bool = True, after: float = AFTER,
             **tracking: Any) -> dict[str, Any]:
    return {"signalwire_api": api.api_config(timeout_seconds=0.3, max_attempts=4),
            "reconcile": {"enabled": True, "after_seconds": after,
                          "max_requests_per_second": 100, "fetch_price": fetch_price},
            "tracking": {"sweep_interval_seconds": 0.1, **tracking}}


async def until(check: Callable[[], Awaitable[bool] | bool], seconds: float = 20.0) -> None:
    """Wait, bounded, until ``check`` holds (the background task works on its own clock)."""
    for _ in range(int(seconds / 0.05)):
        result = check()
        if await result if isinstance(result, Awaitable) else result:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")


async def callback(client: TestClient, sid: str, status: str, seq: int,
                   **fields: str) -> str:
    response = await client.post("/callbacks/voice", data={
        "CallSid": sid, "CallStatus": status, "SequenceNumber": str(seq),
        "Direction": "outbound-api", **fields})
    assert response.status == 200
    return status


def reconciled(client: TestClient, status: str = "completed") -> float:
    return sample(client, "signalwire_calls_reconciled_total", status=status)


def calls(client: TestClient, status: str = "completed") -> float:
    return sample(client, "signalwire_calls_total", status=status, direction="outbound-api")


def price(client: TestClient, direction: str = "outbound-api", currency: str = "USD") -> float:
    return sample(client, "signalwire_call_price_total", direction=direction,
                  currency=currency)


def api_requests(client: TestClient, outcome: str) -> float:
    return sample(client, "signalwire_exporter_api_requests_total", outcome=outcome)


async def test_a_lost_final_gets_status_duration_and_price_and_a_late_one_counts_nothing(
        exporter_client: ClientFactory, fake_api: FakeSignalWire) -> None:
    client = await exporter_client(settings(fake_api))
    await callback(client, A, "ringing", 0)
    await callback(client, A, "in-progress", 1)
    assert sample(client, "signalwire_calls_in_progress", direction="outbound-api") == 1
    fake_api.set_call(A, "completed", duration=42, price=-0.0125)

    await until(lambda: reconciled(client) == 1)
    assert calls(client) == 1
    assert sample(client, "signalwire_calls_in_progress", direction="outbound-api") == 0
    assert sample(client, "signalwire_call_duration_seconds_count",
                  direction="outbound-api") == 1
    assert sample(client, "signalwire_call_duration_seconds_sum",
                  direction="outbound-api") == 42
    await until(lambda: price(client) > 0)
    assert price(client) == pytest.approx(0.0125)
    check_with_promtool(require_tool("promtool"), await (await client.get("/metrics")).read())

    before = await scrape(client)
    response = await client.post("/callbacks/voice", data={
        "CallSid": A, "CallStatus": "completed", "SequenceNumber": "2",
        "Direction": "outbound-api", "CallDuration": "42"})
    assert response.status == 200
    after = await scrape(client)
    assert after[series("signalwire_exporter_callbacks_total", endpoint="voice",
                        outcome="duplicate")] == 1
    changed = {key for key in after if after[key] != before.get(key)
               and key[0] != "signalwire_exporter_callbacks_total"
               and not key[0].startswith(("signalwire_exporter_http", "process_", "python_"))}
    assert changed == set()  # nothing counted twice
    assert fake_api.call_lookups == [A]  # asked once


async def test_a_call_still_in_progress_is_asked_again_and_settled_later(
        exporter_client: ClientFactory, fake_api: FakeSignalWire) -> None:
    client = await exporter_client(settings(fake_api, fetch_price=False))
    await callback(client, B, "in-progress", 1)
    fake_api.set_call(B, "in-progress")
    await until(lambda: fake_api.call_lookups.count(B) >= 2)  # the backoff asks again
    assert reconciled(client) == 0 and calls(client) == 0
    assert sample(client, "signalwire_calls_in_progress", direction="outbound-api") == 1
    fake_api.set_call(B, "no-answer")
    await until(lambda: reconciled(client, "no-answer") == 1)
    assert calls(client, "no-answer") == 1
    assert sample(client, "signalwire_calls_in_progress", direction="outbound-api") == 0


async def test_a_call_the_api_does_not_know_expires_as_before(
        exporter_client: ClientFactory, fake_api: FakeSignalWire) -> None:
    client = await exporter_client(settings(fake_api, fetch_price=False,
                                            call_ttl_seconds=1.5))
    await callback(client, C, "ringing", 0)
    await until(lambda: api_requests(client, "not_found") >= 1)
    await until(lambda: sample(client, "signalwire_calls_expired_total",
                               direction="outbound-api", reason="ttl") == 1)
    assert reconciled(client, "completed") == 0 and calls(client) == 0


async def test_429_5xx_and_a_hanging_api_are_retried_and_callbacks_go_on(
        exporter_client: ClientFactory, fake_api: FakeSignalWire) -> None:
    fake_api.calls_script[:] = [HANG, 429, 500, HANG, 503, 429]
    client = await exporter_client(settings(fake_api, fetch_price=False))
    await callback(client, A, "in-progress", 1)
    fake_api.set_call(A, "failed")
    for i in range(20):  # callbacks keep being answered and counted while the API stalls
        sid = f"busy-{i}"
        await callback(client, sid, "busy", 0)
        await asyncio.sleep(0.02)
    assert calls(client, "busy") == 20
    await until(lambda: reconciled(client, "failed") == 1)
    assert calls(client, "failed") == 1
    for outcome in ("timeout", "rate_limited", "server_error", "ok"):
        assert api_requests(client, outcome) >= 1, outcome
    assert sample(client, "signalwire_exporter_callbacks_total", endpoint="voice",
                  outcome="accepted") == 21


async def test_prices_of_calls_ending_together_come_from_one_list_page(
        exporter_client: ClientFactory, fake_api: FakeSignalWire) -> None:
    client = await exporter_client(settings(fake_api, after=1.0))  # a price round each 0.5 s
    sids = [f"3d4e5f6a-7b8c-4d9e-8f0a-1b2c3d4e5f{i:02d}" for i in range(6)]
    for sid in sids:
        fake_api.set_call(sid, "completed", duration=10, price=-0.01)
    fake_api.set_call("not-ours", "completed", price=-5.0)  # listed, never tracked: not summed
    # final callbacks (nothing to reconcile), together, so that they are priced together
    await asyncio.gather(*(callback(client, sid, "completed", 0, CallDuration="10")
                           for sid in sids))
    await until(lambda: price(client) >= 0.06 - 1e-9)
    assert price(client) == pytest.approx(0.06)
    assert fake_api.list_requests  # one page priced several calls ...
    assert len(fake_api.call_lookups) < len(sids)  # ... instead of one request each
    assert reconciled(client) == 0


async def test_a_price_the_provider_fills_in_late_is_asked_for_again(
        exporter_client: ClientFactory, fake_api: FakeSignalWire) -> None:
    client = await exporter_client(settings(fake_api))
    fake_api.set_call(B, "completed", duration=10, direction="inbound", price=None,
                      price_unit="EUR")
    response = await client.post("/callbacks/inbound", data={
        "CallSid": B, "CallStatus": "completed", "CallDuration": "10"})
    assert response.status == 200
    await until(lambda: len(fake_api.call_lookups) >= 1)
    assert price(client, "inbound", "EUR") == 0
    fake_api.set_call(B, "completed", duration=10, direction="inbound", price=-0.02,
                      price_unit="EUR")
    await until(lambda: price(client, "inbound", "EUR") > 0)
    assert price(client, "inbound", "EUR") == pytest.approx(0.02)
    await asyncio.sleep(AFTER * 2)
    assert price(client, "inbound", "EUR") == pytest.approx(0.02)  # once


async def test_no_credential_in_logs_or_metrics(
        exporter_client: ClientFactory, fake_api: FakeSignalWire,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fake_api.calls_script[:] = [500, 429, HANG]
    client = await exporter_client(settings(fake_api))
    await callback(client, A, "in-progress", 1)
    await until(lambda: fake_api.calls_script == [] and api_requests(client, "not_found") >= 1)
    text = await (await client.get("/metrics")).text()
    assert any(r.name.startswith("exporter.") for r in caplog.records)
    for secret in (TOKEN,):
        assert secret not in caplog.text and secret not in text
    assert PROJECT not in text


async def test_off_by_default_nothing_calls_the_api(
        exporter_client: ClientFactory, fake_api: FakeSignalWire) -> None:
    client = await exporter_client({"signalwire_api": fake_api.api_config()})
    await callback(client, A, "in-progress", 1)
    await asyncio.sleep(0.5)
    assert fake_api.requests == 0


async def test_two_replicas_on_one_redis_look_each_call_up_once(
        exporter_client: ClientFactory, fake_api: FakeSignalWire, redis_url: str) -> None:
    shared = {"state": {"backend": "redis", "redis_url": redis_url}}
    one = await exporter_client({**settings(fake_api), **shared})
    two = await exporter_client({**settings(fake_api), **shared})
    sids = [A, B, C]
    for i, sid in enumerate(sids):
        fake_api.set_call(sid, "completed", duration=7, price=-0.01)
        await callback(one if i % 2 else two, sid, "in-progress", 1)

    async def value(client: TestClient, name: str, **labels: str) -> float:
        return (await scrape(client)).get(series(name, **labels), 0.0)

    for client in (one, two):  # cluster-wide: both replicas serve the group's numbers
        await until(lambda c=client: _equals(value(c, "signalwire_calls_reconciled_total",
                                                   status="completed"), 3))
        await until(lambda c=client: _equals(value(c, "signalwire_call_price_total",
                                                   direction="outbound-api",
                                                   currency="USD"), 0.03))
    assert sorted(fake_api.call_lookups) == sorted(sids)  # each call asked once


async def _equals(value: Awaitable[float], expected: float) -> bool:
    return abs(await value - expected) < 1e-9
