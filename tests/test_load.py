"""Exactly-once under load: 200 concurrent clients, duplicates and out-of-order deliveries.

A real exporter process; the expected value of every counter is computed here from
the plan of calls, independently of the exporter's code.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

CLIENTS = 200
CALLS = 300
DIRECTIONS = ("inbound", "outbound-api", "outbound-dial")
FINALS = ("completed", "busy", "failed", "no-answer", "canceled")


@dataclass
class Plan:
    deliveries: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    status_events: Counter[tuple[str, str]] = field(default_factory=Counter)
    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    callbacks: Counter[tuple[str, str]] = field(default_factory=Counter)
    duration_sum: Counter[str] = field(default_factory=Counter)
    mos_count: Counter[str] = field(default_factory=Counter)


def make_plan(seed: int = 7) -> Plan:
    rng = random.Random(seed)
    plan = Plan()
    for n in range(CALLS):
        sid = f"load-{n:05d}"
        direction, final = DIRECTIONS[n % 3], FINALS[(n // 3) % 5]
        if n % 10 == 9:  # the incoming-number callback: one final event, no Direction
            endpoint, direction = "inbound", "inbound"
            final = "completed" if n % 20 == 9 else "failed"
            statuses = [final]
        else:
            endpoint = "voice"
            statuses = ["initiated", "ringing"]
            if final == "completed":
                statuses.append("answered" if n % 2 else "in-progress")
            statuses.append(final)
        for seq, status in enumerate(statuses):
            fields = {"CallSid": sid, "CallStatus": status, "SequenceNumber": str(seq),
                      "From": "+15551230000", "To": "+15557650000"}
            if endpoint == "voice":
                fields["Direction"] = direction
            if status == "completed":
                fields.update(CallDuration=str(10 + n % 50), AudioInMos="4.1")
            copies = 1 + (n % 4 == 0) + (n % 8 == 0)  # some events delivered 2 or 3 times
            plan.deliveries += [(endpoint, fields)] * copies
            label = "in-progress" if status == "answered" else status
            plan.status_events[(label, direction)] += 1
            plan.callbacks[(endpoint, "accepted")] += 1
            plan.callbacks[(endpoint, "duplicate")] += copies - 1
        plan.calls[(final, direction)] += 1
        if final == "completed":
            plan.duration_sum[direction] += 10 + n % 50
            plan.mos_count[direction] += 1
    rng.shuffle(plan.deliveries)  # out of order across and within calls
    return plan


async def deliver(url: str, plan: Plan) -> Counter[int]:
    queue: asyncio.Queue[tuple[str, dict[str, str]]] = asyncio.Queue()
    for item in plan.deliveries:
        queue.put_nowait(item)
    statuses: Counter[int] = Counter()
    connector = aiohttp.TCPConnector(limit=CLIENTS)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client() -> None:
            while not queue.empty():
                endpoint, fields = queue.get_nowait()
                async with session.post(
                        f"{url}/callbacks/{endpoint}", data=urlencode(fields),
                        headers={"Content-Type": "application/x-www-form-urlencoded"}) as r:
                    await r.read()
                    statuses[r.status] += 1

        async with asyncio.timeout(60):
            await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return statuses


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    import urllib.request

    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(values: dict[Any, float], name: str, **labels: str) -> float:
    return values.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_every_counter_exact_under_concurrent_load(exporter_process: Any) -> None:
    plan = make_plan()
    assert len(plan.deliveries) > 1000
    exporter = exporter_process("logging:\n  event_level: debug\n")
    statuses = await deliver(exporter.url, plan)
    assert statuses == Counter({200: len(plan.deliveries)})
    values = await asyncio.to_thread(scrape, exporter.url)
    for direction in DIRECTIONS:
        for status in ("initiated", "ringing", "in-progress", *FINALS):
            assert value(values, "signalwire_call_status_events_total", status=status,
                         direction=direction) == plan.status_events[(status, direction)], \
                (status, direction)
        for final in FINALS:
            assert value(values, "signalwire_calls_total", status=final,
                         direction=direction) == plan.calls[(final, direction)], (final, direction)
        assert value(values, "signalwire_calls_in_progress", direction=direction) == 0
        assert value(values, "signalwire_call_duration_seconds_sum",
                     direction=direction) == plan.duration_sum[direction]
        assert value(values, "signalwire_call_mos_count",
                     direction=direction) == plan.mos_count[direction]
    for (endpoint, outcome), expected in plan.callbacks.items():
        assert value(values, "signalwire_exporter_callbacks_total", endpoint=endpoint,
                     outcome=outcome) == expected, (endpoint, outcome)
    assert value(values, "signalwire_exporter_tracked_calls") == CALLS
    assert exporter.stop() == 0
