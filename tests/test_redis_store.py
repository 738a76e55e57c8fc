"""The Redis backend against the memory one: the same events give the same decisions and metrics.

Both stores get the same random streams of call and message/recording/transcription
events (duplicates, reordering, unknown directions, caps small enough to evict, TTL
sweeps), on a real ``redis-server``; every decision and every cluster-wide series must
come out identical (sums of floats to rounding). Then the parts of the app a group of
replicas shares, through real aiohttp servers on one Redis: the failed-call report, the
SMS relay's one SMS per notification, ``state_info`` and a scrape promtool accepts.
(Replicas as real processes, crashes and outages: ``test_replicas``.)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from exporter.callbacks import LIFECYCLES
from exporter.calls import Decision
from exporter.config import Config, parse_config
from exporter.metrics import ExporterMetrics, Plain, PlainHistogram, StatusMetrics, wants
from exporter.payloads import (
    CALL_STATUSES,
    DIRECTIONS,
    END_REASONS,
    FINAL_CALL_STATUSES,
    CallEvent,
    MessageEvent,
    RecordingEvent,
    TranscriptionEvent,
)
from exporter.redis_store import RedisStore
from exporter.reports import FailedCallReport
from exporter.store import MemoryStore

from .conftest import ClientFactory, require_tool, sample, scrape, series
from .fake_signalwire import FakeSignalWire, fake_api
from .test_metrics import check_with_promtool, exemplars_of
from .test_reports import post
from .test_sms import BEARER, TO, notification, relay_config

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["fake_api"]  # the fixture, imported so pytest finds it here

T0 = datetime(2024, 4, 4, 18, 32, 15, tzinfo=UTC)

call_events = st.builds(
    CallEvent,
    call_sid=st.sampled_from(["c1", "c2", "c3", "c4"]),
    status=st.sampled_from(CALL_STATUSES),
    direction=st.sampled_from(DIRECTIONS),
    endpoint=st.just("voice"),
    sequence_number=st.none() | st.integers(0, 6) | st.just(70),  # 70: past the bitmask
    call_duration=st.none() | st.integers(0, 4000),
    audio_in_mos=st.none() | st.sampled_from([0.0, 2.9, 3.1, 3.5, 4.2, 4.5]),
    audio_in_jitter_max_variance=st.none() | st.floats(0, 80),
    audio_in_jitter_min_variance=st.none() | st.floats(0, 5),
    audio_in_media_packet_count=st.none() | st.integers(0, 5000),
    audio_in_skip_packet_count=st.none() | st.integers(0, 50),
    audio_in_flush_packet_count=st.none() | st.integers(0, 50),
    sip_result_code=st.none() | st.sampled_from([200, 486, 487, 603, 699]),
    timestamp=st.none() | st.integers(0, 40).map(lambda s: T0 + timedelta(seconds=s)),
    unanswered_status=st.none() | st.just("canceled"),
    end_reason=st.none() | st.sampled_from(END_REASONS),
)

message_events = st.builds(
    MessageEvent, sid=st.sampled_from(["m1", "m2", "m3"]),
    status=st.sampled_from(LIFECYCLES["messaging"].statuses),
    error_code=st.none() | st.sampled_from(["30003", "30008", "12345"]),
    num_segments=st.none() | st.integers(0, 4))
recording_events = st.builds(
    RecordingEvent, sid=st.sampled_from(["r1", "r2"]),
    status=st.sampled_from(LIFECYCLES["recording"].statuses),
    duration=st.none() | st.integers(0, 600))
transcription_events = st.builds(
    TranscriptionEvent, sid=st.sampled_from(["t1", "t2"]),
    status=st.sampled_from(LIFECYCLES["transcription"].statuses),
    text_length=st.none() | st.integers(0, 900))
ENDPOINT_OF = {MessageEvent: "messaging", RecordingEvent: "recording",
               TranscriptionEvent: "transcription"}

# the REST API side (reconcile): a final status learned for a call, a round of lookups
settles = st.tuples(st.just("settle"), st.sampled_from(["c1", "c2", "c3", "c4"]),
                    st.sampled_from(sorted(FINAL_CALL_STATUSES)), st.sampled_from(DIRECTIONS),
                    st.none() | st.integers(0, 600))
lookups = st.tuples(st.just("stale"), st.sampled_from([0.0, 1.0, 30.0]), st.integers(0, 3))

# a step: an event, how far the clock moves before it, and whether a sweep runs first
steps = st.lists(st.tuples(
    call_events | message_events | recording_events | transcription_events | settles
    | lookups,
    st.sampled_from([0.0, 0.5, 3.0, 40.0]), st.booleans()), max_size=40)


SLICE_NAMES = ("app", "line")
SLICES = [("sales", "main"), ("other", ""), ("", "other"), ("support", "main")]


def small_config(redis_url: str, prefix: str, sliced: bool = False) -> Config:
    labels = {"app": {"query_parameter": "app", "values": ["sales", "support"]},
              "lines": {"+15551234567": "main"}} if sliced else {}
    return parse_config({
        "labels": labels,
        "tracking": {"max_calls": 3, "max_items": 2, "call_ttl_seconds": 100,
                     "item_ttl_seconds": 60},
        "state": {"backend": "redis", "redis_url": redis_url, "key_prefix": prefix},
        # lookups on, so the memory tracker keeps what stale_calls needs; nothing is called
        "reconcile": {"enabled": True, "after_seconds": 30},
        "signalwire_api": {"space_url": "example.signalwire.com", "project_id": "p",
                           "api_token": "t"},
    }, environ={})


def stores(config: Config) -> tuple[MemoryStore, RedisStore]:
    names = SLICE_NAMES if config.labels.lines else ()

    def metrics() -> tuple[CollectorRegistry, ExporterMetrics, StatusMetrics]:
        registry = CollectorRegistry()
        kinds = {lifecycle.kind: (lambda: 0) for lifecycle in LIFECYCLES.values()}
        return (registry, ExporterMetrics(registry, config.buckets, lambda: 0, names),
                StatusMetrics(registry, config.buckets, kinds, names))

    _, calls, items = metrics()
    memory = MemoryStore(config, LIFECYCLES, calls, items,
                         FailedCallReport(config.reports.failed_calls))
    registry, calls, items = metrics()
    return memory, RedisStore(config, LIFECYCLES, calls, items, registry)


def values(series: Plain) -> dict[Any, Any]:
    if isinstance(series, PlainHistogram):
        return {labels: counts for labels, counts in series.series.items() if any(counts)}
    return {labels: value for labels, value in series.values.items() if value}


def exemplars(series: Plain) -> dict[Any, tuple[str, float]]:
    """Each series' (or bucket's) exemplar: sid and value; the clocks of the stores differ."""
    return {key: (sid, value) for key, (sid, value, _) in series.exemplars.items()}


def assert_same(memory: Plain, redis: Plain) -> None:
    left, right = values(memory), values(redis)
    assert left.keys() == right.keys(), memory.name
    for labels, value in left.items():
        for a, b in zip(value if isinstance(value, list) else [value],
                        right[labels] if isinstance(value, list) else [right[labels]],
                        strict=True):
            assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9), (memory.name, labels)
    assert exemplars(memory) == exemplars(redis), memory.name


@contextlib.asynccontextmanager
async def both_stores(redis_url: str, sliced: bool = False
                      ) -> AsyncIterator[tuple[MemoryStore, RedisStore]]:
    """A memory store and a started Redis store under a prefix of their own; the Redis
    side's keys are gone after."""
    memory, redis = stores(small_config(redis_url, f"test-{uuid.uuid4().hex}:", sliced))
    await redis.start()
    try:
        yield memory, redis
    finally:
        await redis.redis.flushdb()
        await redis.close()


async def replay(redis_url: str, events: list[tuple[Any, float, bool]],
                 sliced: bool = False, together: bool = False) -> set[str]:
    """Apply ``events`` to both stores and compare; the families that got exemplars.

    ``together``: the Redis store gets each run of callbacks between two sweeps, settles
    or lookups at once, as concurrent requests would (they share round trips), and must
    still decide each as the memory store did one by one.
    """
    pending: list[tuple[Any, Any, asyncio.Task[Any]]] = []

    async def settle_pending() -> None:
        for event, expected, task in pending:
            assert await task == expected, event
        pending.clear()

    async with both_stores(redis_url, sliced) as (memory, redis):
        now = 1_000.0
        for event, step, sweep in events:
            now += step
            callback = isinstance(event, CallEvent | MessageEvent | RecordingEvent
                                  | TranscriptionEvent)
            if sweep or not callback:  # a sweep, settle or lookup comes after every callback
                await settle_pending()
            if sweep:
                await memory.expire(now)
                await redis.expire(now)
            if not callback:
                if event[0] == "settle":
                    got = [await store.settle(*event[1:], now) for store in (memory, redis)]
                else:
                    got = [await store.stale_calls(now, *event[1:])
                           for store in (memory, redis)]
                assert got[0] == got[1], event
                continue
            if isinstance(event, CallEvent):
                from_memory, from_redis = (store.call(event, now) for store in (memory, redis))
            else:
                endpoint = ENDPOINT_OF[type(event)]
                from_memory, from_redis = (store.item(endpoint, event, now, wants(event))
                                           for store in (memory, redis))
            if together:
                pending.append((event, await from_memory, asyncio.create_task(from_redis)))
            else:
                assert await from_redis == await from_memory, event
        await settle_pending()
        await redis.before_scrape()
        assert redis.up._value.get() == 1  # nothing was spooled: the comparison is real
        pairs = zip((*memory.metrics.shared, *memory.item_metrics.shared),
                    redis.shared, strict=True)
        exemplified = set()
        for left, right in pairs:
            assert_same(left, right)
            if left.exemplars:
                exemplified.add(left.name)
        assert redis.tracked_calls() == memory.tracked_calls()
        for endpoint in LIFECYCLES:
            assert redis.tracked_items(endpoint) == memory.tracked_items(endpoint)
        rows = await redis.failed_call_rows(now)
        expected = await memory.failed_call_rows(now)
        assert [(r["call_sid"], r["call_status"], r["call_direction"]) for r in rows] == [
            (r["call_sid"], r["call_status"], r["call_direction"]) for r in expected]
        return exemplified


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(events=steps, data=st.data())
def test_redis_and_memory_backends_count_the_same(redis_url: str, events: list[Any],
                                                  data: st.DataObject) -> None:
    # deliver some events again, later: the provider's retries
    again = data.draw(st.lists(st.sampled_from(events), max_size=8) if events else st.just([]))
    sliced = data.draw(st.booleans())  # with app/line labels configured, or without
    if sliced:
        for event, _, _ in events:
            if isinstance(event, CallEvent | MessageEvent):
                event.slice = data.draw(st.sampled_from(SLICES))
    together = data.draw(st.booleans())  # concurrent, sharing round trips, or one by one
    asyncio.run(replay(redis_url, events + again, sliced, together))


def test_a_long_lifecycle_stream_matches_too(redis_url: str) -> None:
    """Whole calls in order and shuffled, beyond what the random test reaches."""
    events: list[tuple[Any, float, bool]] = []
    for n, direction in zip(range(12), itertools.cycle(DIRECTIONS), strict=False):
        sid = f"call-{n}"
        for seq, status in enumerate(("initiated", "ringing", "in-progress", "completed")):
            events.append((CallEvent(call_sid=sid, status=status, direction=direction,
                                     endpoint="voice", sequence_number=seq,
                                     timestamp=T0 + timedelta(seconds=seq * 3 + n),
                                     call_duration=60 + n, audio_in_mos=4.0), 1.0, n == 6))
    events[5], events[9] = events[9], events[5]
    events.append((MessageEvent(sid="m-1", status="delivered", raw_status="delivered"), 1.0, False))
    assert asyncio.run(replay(redis_url, events + events[:7])) == {
        "signalwire_calls_total", "signalwire_call_duration_seconds", "signalwire_call_mos",
        "signalwire_messages_total"}



def test_a_final_callback_after_a_settle_is_a_duplicate_in_both(redis_url: str) -> None:
    def call(status: str, seq: int | None) -> CallEvent:
        return CallEvent(call_sid="c1", status=status, direction="inbound", endpoint="voice",
                         sequence_number=seq)

    asyncio.run(replay(redis_url, [
        (call("in-progress", 2), 1.0, False), (("stale", 1.0, 2), 5.0, False),
        (("settle", "c1", "completed", "inbound", 42), 1.0, False),
        (call("failed", 3), 1.0, False), (call("completed", 3), 1.0, False),
        (("settle", "c1", "busy", "inbound", None), 1.0, False),
        (("settle", "c9", "busy", "inbound", None), 1.0, False)]))


def whole_calls(count: int, prefix: str = "b") -> list[tuple[Any, float, bool]]:
    """``count`` calls, each ringing then completed, interleaved: the events of a busy
    moment, for the round-trip tests."""
    return [(CallEvent(call_sid=f"{prefix}{n}", status=status, direction="inbound",
                       endpoint="voice", sequence_number=seq, call_duration=30 + n), 0.0,
             False)
            for seq, status in enumerate(("ringing", "completed")) for n in range(count)]


def test_callbacks_handled_together_share_round_trips_and_decide_as_one_by_one(
        redis_url: str) -> None:
    events = whole_calls(64)

    async def scenario() -> None:
        async with both_stores(redis_url) as (memory, redis):
            expected = [await memory.call(event, 1_000.0) for event, _, _ in events]
            got = await asyncio.gather(*(redis.call(event, 1_000.0) for event, _, _ in events))
            assert list(got) == expected
            family = "signalwire_exporter_store_pipeline_commands"
            samples = {s.name: s.value for s in redis._batch.sizes.collect()[0].samples}
            sent, trips = samples[f"{family}_sum"], samples[f"{family}_count"]
            assert sent == len(events)  # every script call went, once
            assert trips < len(events) / 8  # and most of them together

    asyncio.run(scenario())


def test_callers_that_give_up_while_waiting_do_not_stall_the_others(redis_url: str) -> None:
    """A waiting caller cancelled (even one just told to send the next round trip) must
    not leave the others waiting: each round ends, and the batcher is idle after."""
    async def scenario() -> None:
        rng = random.Random(7)
        async with both_stores(redis_url) as (_, redis):
            for round_ in range(40):
                events = whole_calls(12, f"g{round_}-")
                tasks = [asyncio.create_task(redis.call(e, 1_000.0)) for e, _, _ in events]
                for _ in range(rng.randint(0, 8)):  # at some point of the first round trip
                    await asyncio.sleep(0)
                await asyncio.sleep(rng.choice([0, 0, 1e-4, 3e-4]))  # or a later one
                for task in rng.sample(tasks, 5):
                    task.cancel()
                answers = await asyncio.wait_for(
                    asyncio.gather(*tasks, return_exceptions=True), 10)
                for task, answer in zip(tasks, answers, strict=True):
                    assert task.cancelled() or isinstance(answer, Decision), answer
            for _ in range(100):  # a leader that gave up spooled its batch: applied soon
                if not redis._spool and not redis._batch._busy:
                    break
                await asyncio.sleep(0.05)
            assert not redis._spool and not redis._batch._busy and not redis._batch._waiting
            last = CallEvent(call_sid="last", status="completed", direction="inbound",
                             endpoint="voice")
            assert isinstance(await asyncio.wait_for(redis.call(last, 1_000.0), 5), Decision)

    asyncio.run(scenario())


def test_a_redis_that_forgot_its_scripts_still_decides_every_callback(redis_url: str) -> None:
    """A restarted Redis has no scripts loaded: the batch loads them and goes on, nothing
    spooled (the chaos test restarts a real one; this flushes the script cache)."""
    async def scenario() -> None:
        async with both_stores(redis_url) as (_, redis):
            events = whole_calls(10, "f")
            await asyncio.gather(*(redis.call(e, 1_000.0) for e, _, _ in events[:10]))
            await redis.redis.script_flush()
            got = await asyncio.gather(*(redis.call(e, 1_000.0) for e, _, _ in events[10:]))
            assert [d.final_status for d in got] == ["completed"] * 10
            assert redis.up._value.get() == 1 and redis.errors._value.get() == 0

    asyncio.run(scenario())


def test_a_stopping_replica_hands_its_spool_to_redis_once_it_is_back(tmp_path) -> None:
    """Callbacks spooled while Redis was away are applied at stop, if Redis returns in time."""
    from .servers import RedisServer

    server = RedisServer(tmp_path)  # started

    async def scenario() -> None:
        config = parse_config({
            "state": {"backend": "redis", "redis_url": server.url, "timeout_seconds": 0.5},
            "shutdown": {"final_scrape_timeout_seconds": 20}}, environ={})
        _, redis = stores(config)
        await redis.start()
        server.kill()
        event = CallEvent(call_sid="s1", status="completed", direction="inbound",
                          endpoint="voice", call_duration=12)
        decision = await redis.call(event, 1_000.0)
        assert not decision.duplicate and redis.up._value.get() == 0
        closing = asyncio.create_task(redis.close())
        await asyncio.sleep(1.0)
        assert not closing.done()  # still trying
        server.start()
        await asyncio.wait_for(closing, 30)
        _, check = stores(config)  # another replica's view of the group
        await check.before_scrape()
        assert check.metrics.calls.values[("completed", "inbound")] == 1
        assert check.metrics.duration.series[("inbound",)][-1] == 12
        await check.redis.aclose()

    try:
        asyncio.run(scenario())
    finally:
        server.stop()


# --- through real apps sharing one Redis -----------------------------------------------------

def shared_state(redis_url: str, **sections: Any) -> dict[str, Any]:
    """Config of a replica of the group on ``redis_url`` under the prefix ``group:``."""
    return {"state": {"backend": "redis", "redis_url": redis_url, "key_prefix": "group:"},
            **sections}


async def post_call(client: TestClient, sid: str, status: str, **fields: str) -> None:
    response = await client.post("/callbacks/voice", data={
        "CallSid": sid, "CallStatus": status, "Direction": "outbound-api",
        "SequenceNumber": "3", "From": "+15550001111", "To": "+15559876543", **fields})
    assert response.status == 200


async def report(client: TestClient) -> dict[str, Any]:
    response = await client.get("/reports/failed-calls?format=json")
    assert response.status == 200
    document: dict[str, Any] = await response.json()
    return document


async def test_any_replica_reports_the_groups_failed_calls_bounded(
        exporter_client: ClientFactory, redis_url: str) -> None:
    config = shared_state(redis_url, reports={"failed_calls": {"max_entries": 3}})
    one, two = await exporter_client(config), await exporter_client(config)
    await post_call(one, "failed-on-one", "failed", SipResultCode="404")
    await post_call(one, "completed-on-one", "completed", CallDuration="30")
    await post_call(two, "failed-on-one", "failed", SipResultCode="404")  # a retry elsewhere
    document = await report(two)
    assert [(c["call_sid"], c["call_status"], c["sip_result_code"])
            for c in document["calls"]] == [("failed-on-one", "failed", 404)]
    assert document["calls"][0]["to_number"] == "+15559876543"

    for n, client in enumerate((two, one, two, one)):
        await post_call(client, f"busy-{n}", "busy")
    newest = [f"busy-{n}" for n in (1, 2, 3)]
    for client in (one, two):
        document = await report(client)
        assert [c["call_sid"] for c in document["calls"]] == newest
        assert (document["count"], document["max_entries"]) == (3, 3)
        assert sample(client, "signalwire_exporter_report_failed_calls") == 3


async def test_state_info_names_the_redis_group_and_promtool_accepts_the_scrape(
        exporter_client: ClientFactory, redis_url: str) -> None:
    promtool = require_tool("promtool")
    client = await exporter_client(shared_state(redis_url))
    for seq, status in enumerate(("initiated", "ringing", "in-progress", "completed")):
        await post_call(client, "c1", status, SequenceNumber=str(seq),
                        Timestamp=f"Thu, 09 Nov 2023 17:05:0{seq} +0000", CallDuration="61",
                        AudioInMos="3.9", SipResultCode="200", AudioInJitterMaxVariance="4",
                        AudioInMediaPacketCount="3000", AudioInSkipPacketCount="3")
    await post_call(client, "c2", "failed", SipResultCode="999")
    response = await client.get("/reports/failed-calls")
    assert response.status == 200
    response = await client.get("/metrics")
    assert response.status == 200
    body = await response.read()
    check_with_promtool(promtool, body)
    values = await scrape(client)
    assert values[series("signalwire_exporter_state_info", backend="redis",
                         group="redis:group:")] == 1
    assert values[series("signalwire_calls_total", status="completed",
                         direction="outbound-api")] == 1
    assert values[series("signalwire_exporter_store_up")] == 1


async def test_one_notification_delivered_to_two_replicas_texts_each_recipient_once(
        exporter_client: ClientFactory, fake_api: FakeSignalWire, redis_url: str) -> None:
    config = shared_state(redis_url, **relay_config(fake_api, TO))
    one, two = await exporter_client(config), await exporter_client(config)
    first, second = await asyncio.gather(*(
        client.post("/alerts/sms", json=notification(externalURL=url), headers=BEARER)
        for client, url in ((one, "http://alertmanager-0:9093"),
                            (two, "http://alertmanager-1:9093"))))
    assert (first.status, second.status) == (200, 200)
    answers = [await first.json(), await second.json()]
    # each recipient is claimed by one replica (which one may differ per recipient)
    assert sum(a["sent"] for a in answers) == 2
    assert sum(a.get("duplicate", 0) for a in answers) == 2
    assert sum(a["failed"] for a in answers) == 0
    assert sorted(m["To"] for m in fake_api.messages) == TO
    for client, other in ((one, two), (two, one)):  # the same notification, again
        response = await client.post("/alerts/sms", json=notification(), headers=BEARER)
        assert await response.json() == {"sent": 0, "failed": 0, "duplicate": 2}
        assert sample(client, "signalwire_exporter_sms_total", result="sent") \
            + sample(other, "signalwire_exporter_sms_total", result="sent") == 2
    assert len(fake_api.messages) == 2


async def test_a_replica_serves_the_exemplar_of_a_call_another_replica_took(
        exporter_client: ClientFactory, redis_url: str) -> None:
    """OpenMetrics exemplars and the report filter are the group's, like the counts."""
    one, two = (await exporter_client(shared_state(redis_url)),
                await exporter_client(shared_state(redis_url)))
    await post(one, {"CallSid": "redis-ex-1", "CallStatus": "failed", "Direction": "inbound",
                     "CallDuration": "0"})
    await post(one, {"MessageSid": "redis-ex-m1", "MessageStatus": "failed"}, "messaging")
    found = await exemplars_of(two)
    assert found[series("signalwire_calls_total", status="failed",
                        direction="inbound")].labels == {"call_sid": "redis-ex-1"}
    assert found[series("signalwire_messages_total",
                        status="failed")].labels == {"message_sid": "redis-ex-m1"}
    document = await (await two.get(
        "/reports/failed-calls?format=json&call_sid=redis-ex-1")).json()
    assert [row["call_sid"] for row in document["calls"]] == ["redis-ex-1"]
    assert "redis-ex" not in await (await two.get("/metrics")).text()  # text format: none


def test_a_price_that_cannot_be_added_is_reported_so_its_claim_is_given_back() -> None:
    from .conftest import free_port

    async def scenario() -> None:
        config = parse_config({"state": {
            "backend": "redis", "redis_url": f"redis://127.0.0.1:{free_port()}/0",
            "timeout_seconds": 0.2}}, environ={})
        _, redis = stores(config)  # nothing listens there: the store is away
        assert await redis.add_price("inbound", "USD", 0.5) is False
        assert redis.up._value.get() == 0
        await redis.redis.aclose()

    asyncio.run(scenario())
