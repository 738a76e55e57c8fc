"""10DLC status callbacks (POST /callbacks/10dlc) through a real server and a parsed scrape."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from exporter.payloads import TEN_DLC_CATEGORIES, TEN_DLC_EVENT_TYPES

from .conftest import sample, scrape, series
from .test_app import new_sid

PROJECT = "b6b5d0d3-0000-4000-8000-00000000aaaa"
BRAND, CAMPAIGN = "4f8c2a10-0000-4000-8000-0000000000b1", "0a1b2c3d-0000-4000-8000-0000000000c1"
SENDER = "+15551234567"


def ten_dlc(category: str, event_type: str, state: str, at: str = "2026-11-30T17:05:04Z",
            **ids: str) -> dict[str, Any]:
    """One 10DLC status callback with the fields of reference §6.4."""
    return {"project_id": PROJECT, "event_at": at, "event_category": category,
            "event_type": event_type, "state": state, "brand_id": BRAND, **ids}


def lifecycle() -> list[dict[str, Any]]:
    """A brand, its campaign, an order of two numbers: one joins, one fails; then deactivation."""
    order = new_sid()
    number = {"campaign_id": CAMPAIGN, "number_assignment_order_id": order}
    return [
        ten_dlc("brand", "brand_activated", "completed", "2026-11-30T10:00:00Z"),
        ten_dlc("campaign", "campaign_activated", "active", "2026-11-30T11:00:00Z",
                campaign_id=CAMPAIGN),
        ten_dlc("number_assignment_order", "number_assignment_order_processed", "processed",
                "2026-11-30T12:00:00Z", **number),
        ten_dlc("number_assignment", "number_assignment_pending", "pending",
                "2026-11-30T12:00:01Z", number_assignment_id=new_sid(),
                phone_number_id=new_sid(), phone_number=SENDER, **number),
        ten_dlc("number_assignment", "number_assignment_activated", "success",
                "2026-11-30T12:10:00Z", number_assignment_id=new_sid(),
                phone_number_id=new_sid(), phone_number=SENDER, **number),
        ten_dlc("number_assignment", "number_assignment_failed", "failed",
                "2026-11-30T12:10:00Z", number_assignment_id=new_sid(),
                phone_number_id=new_sid(), phone_number="+15557654321", **number),
        ten_dlc("campaign", "campaign_deactivated", "inactive", "2026-11-30T16:00:00Z",
                campaign_id=CAMPAIGN),
    ]


async def send(client: TestClient, body: dict[str, Any]) -> None:
    response = await client.post("/callbacks/10dlc", json=body)
    assert response.status == 200, await response.text()


def events(values: dict[Any, float], category: str, event_type: str) -> float:
    return values[series("signalwire_10dlc_events_total", category=category,
                         event_type=event_type)]


async def test_every_event_counted_once_by_category_and_type(client: TestClient) -> None:
    bodies = lifecycle()
    for body in bodies + bodies:  # every callback retried once
        await send(client, body)
    values = await scrape(client)
    for body in bodies:
        assert events(values, body["event_category"], body["event_type"]) == 1
    assert values[series("signalwire_exporter_callbacks_total", endpoint="10dlc",
                         outcome="accepted")] == len(bodies)
    assert values[series("signalwire_exporter_callbacks_total", endpoint="10dlc",
                         outcome="duplicate")] == len(bodies)


async def test_the_same_change_at_another_time_is_another_event(client: TestClient) -> None:
    await send(client, ten_dlc("campaign", "campaign_deactivated", "inactive",
                               "2026-11-30T16:00:00Z", campaign_id=CAMPAIGN))
    await send(client, ten_dlc("campaign", "campaign_deactivated", "inactive",
                               "2026-12-02T09:30:00Z", campaign_id=CAMPAIGN))
    await send(client, ten_dlc("campaign", "campaign_deactivated", "inactive",
                               "2026-11-30T16:00:00Z", campaign_id=new_sid()))
    assert sample(client, "signalwire_10dlc_events_total", category="campaign",
                  event_type="campaign_deactivated") == 3


async def test_new_categories_and_types_are_counted_as_unknown(client: TestClient) -> None:
    await send(client, ten_dlc("campaign", "campaign_suspended_by_tcr", "suspended"))
    await send(client, ten_dlc("sole_proprietor", "brand_activated", "completed"))
    await send(client, {"event_type": "brand_activated"})  # the rest missing: still counted
    values = await scrape(client)
    assert events(values, "campaign", "unknown") == 1
    assert events(values, "unknown", "brand_activated") == 2


@pytest.mark.parametrize("body", [
    {"project_id": PROJECT, "event_category": "campaign", "brand_id": BRAND},
    {"event_type": " ", "brand_id": BRAND},
    {"event_type": "brand_activated", "brand_id": "b" * 300},
])
async def test_useless_or_malformed_callbacks_are_refused(client: TestClient,
                                                          body: dict[str, Any]) -> None:
    response = await client.post("/callbacks/10dlc", json=body)
    assert response.status == 400
    assert "error" in await response.json()
    assert sample(client, "signalwire_exporter_callbacks_total", endpoint="10dlc",
                  outcome="invalid") == 1


async def test_series_exist_before_the_first_event(client: TestClient) -> None:
    values = await scrape(client)
    for category in TEN_DLC_CATEGORIES:
        for event_type in TEN_DLC_EVENT_TYPES:
            assert events(values, category, event_type) == 0


async def test_phone_numbers_never_in_logs_or_metrics(client: TestClient,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for body in lifecycle():
        await send(client, body)
    logged = " ".join(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in caplog.records)
    assert "10dlc event" in logged and CAMPAIGN in logged
    metrics = await (await client.get("/metrics")).text()
    for number in (SENDER, "+15557654321", "5551234567"):
        assert number not in logged
        assert number not in metrics
