"""Replicas on one Redis act as one exporter: real processes, a crash and outages under load.

The exporter runs as users run it (``python -m exporter``, state.backend redis) beside a
real ``redis-server`` with persistence on. The expected value of every cluster-wide
series is counted here from the fields the test sent, never from the exporter's code.
Every wait is bounded; nothing asserts a timing.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp

from .conftest import ExporterProcess
from .replay import DIRECTIONS, FINALS, call
from .servers import RedisServer
from .test_cli import get
from .test_load import scrape, value

CALLS = 2000  # complete lifecycles, about 8,000 deliveries with the duplicates
WORKERS = 24  # concurrent senders
# (histogram, name of the field its value comes from); the count and sum of each is checked
HISTOGRAMS = ("signalwire_call_duration_seconds", "signalwire_call_mos",
              "signalwire_call_jitter_max_seconds", "signalwire_call_jitter_min_seconds",
              "signalwire_call_packet_loss_ratio", "signalwire_call_post_dial_delay_seconds",
              "signalwire_call_time_to_answer_seconds")
SPOOLED = "signalwire_exporter_store_spooled_callbacks"
STORE_UP = "signalwire_exporter_store_up"


def redis_config(url: str, prefix: str = "replicas:", **state: Any) -> str:
    return json.dumps({"state": {"backend": "redis", "redis_url": url, "key_prefix": prefix,
                                 **state}})  # JSON is YAML


@dataclass
class Truth:
    """The true totals of what was sent, each call counted once however often delivered."""

    calls: Counter[tuple[str, str]] = field(default_factory=Counter)  # (status, direction)
    status_events: Counter[tuple[str, str]] = field(default_factory=Counter)
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)  # (histogram, direction)
    sums: defaultdict[tuple[str, str], float] = field(
        default_factory=lambda: defaultdict(float))
    sip: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    packets: Counter[tuple[str, str]] = field(default_factory=Counter)

    def observe(self, histogram: str, direction: str, amount: float) -> None:
        self.counts[(histogram, direction)] += 1
        self.sums[(histogram, direction)] += amount

    def add(self, lifecycle: list[dict[str, str]]) -> None:
        """One call's events (each once, as sent by the provider)."""
        direction = lifecycle[0]["Direction"]
        stamps = {}
        for fields in lifecycle:
            status = fields["CallStatus"]
            self.status_events[(status, direction)] += 1
            stamps[status] = parsedate_to_datetime(fields["Timestamp"]).timestamp()
        final = lifecycle[-1]
        self.calls[(final["CallStatus"], direction)] += 1
        if "CallDuration" in final:
            self.observe(HISTOGRAMS[0], direction, float(final["CallDuration"]))
        if "AudioInMos" in final:
            self.observe(HISTOGRAMS[1], direction, float(final["AudioInMos"]))
            for histogram, name in ((HISTOGRAMS[2], "AudioInJitterMaxVariance"),
                                    (HISTOGRAMS[3], "AudioInJitterMinVariance")):
                self.observe(histogram, direction, float(final[name]) / 1000)  # ms → s
            media, skipped = (int(final["AudioInMediaPacketCount"]),
                              int(final["AudioInSkipPacketCount"]))
            self.observe(HISTOGRAMS[4], direction, skipped / (media + skipped))
            for result, name in (("received", "AudioInMediaPacketCount"),
                                 ("lost", "AudioInSkipPacketCount"),
                                 ("discarded", "AudioInFlushPacketCount")):
                self.packets[(direction, result)] += int(final[name])
        if "SipResultCode" in final:
            code = final["SipResultCode"]
            self.sip[(direction, code, f"{code[0]}xx")] += 1
        self.observe(HISTOGRAMS[5], direction, stamps["ringing"] - stamps["initiated"])
        if "in-progress" in stamps:
            self.observe(HISTOGRAMS[6], direction, stamps["in-progress"] - stamps["ringing"])


@dataclass
class Plan:
    deliveries: list[tuple[dict[str, str], int]]  # (voice callback fields, replica index)
    truth: Truth


def make_plan(calls: int, prefix: str, seed: int, replicas: int = 2) -> Plan:
    """Whole lifecycles, each event sent to a replica at random; a fifth of the events
    delivered again to the next replica, later; some calls' events swapped in pairs;
    calls interleaved, so a call's events also overtake each other among the senders."""
    rng = random.Random(seed)
    truth = Truth()
    keyed: list[tuple[float, dict[str, str], int]] = []
    for i in range(calls):
        final, sip = FINALS[i % len(FINALS)]
        lifecycle = [callback.fields for callback in call(i, final, sip, prefix)]
        truth.add(lifecycle)
        if rng.random() < 0.3:  # e.g. the final overtakes in-progress, ringing initiated
            at = rng.randrange(len(lifecycle) - 1)
            lifecycle[at], lifecycle[at + 1] = lifecycle[at + 1], lifecycle[at]
        for position, fields in enumerate(lifecycle):
            key = i + position * 4 + rng.uniform(0, 8)
            replica = rng.randrange(replicas)
            keyed.append((key, fields, replica))
            if rng.random() < 0.2:  # the provider's retry, which the balancer sends elsewhere
                keyed.append((key + rng.uniform(0, 40), fields, (replica + 1) % replicas))
    keyed.sort(key=lambda item: item[0])
    return Plan([(fields, replica) for _, fields, replica in keyed], truth)


class Sender:
    """Deliver the plan with ``WORKERS`` concurrent senders; as a load balancer, send a
    callback whose replica does not answer (down, or cut by a crash) to the next one."""

    def __init__(self, replicas: list[ExporterProcess], plan: Plan) -> None:
        self.replicas = replicas
        self.plan = plan
        self.done = 0  # deliveries answered 200
        self.answers: Counter[int] = Counter()  # every HTTP answer, retries included
        self.cut = 0  # requests without an answer (connection refused or dropped)
        self.started = 0
        self.allowed = len(plan.deliveries)  # senders wait before this many have started
        self._progress = asyncio.Condition()

    async def run(self) -> None:
        queue: asyncio.Queue[tuple[dict[str, str], int]] = asyncio.Queue()
        for item in self.plan.deliveries:
            queue.put_nowait(item)
        timeout = aiohttp.ClientTimeout(total=15)
        async with aiohttp.ClientSession(timeout=timeout) as session:

            async def worker() -> None:
                while not queue.empty():
                    async with self._progress:
                        await self._progress.wait_for(lambda: self.started < self.allowed)
                        self.started += 1
                    fields, replica = queue.get_nowait()
                    await self._deliver(session, urlencode(fields), replica)
                    async with self._progress:
                        self.done += 1
                        self._progress.notify_all()

            async with asyncio.timeout(240):
                await asyncio.gather(*(worker() for _ in range(WORKERS)))

    async def _deliver(self, session: aiohttp.ClientSession, body: str, replica: int) -> None:
        for attempt in range(200):  # bounded: both replicas down this long is a failure
            url = self.replicas[(replica + attempt) % len(self.replicas)].url
            try:
                async with session.post(
                        f"{url}/callbacks/voice", data=body,
                        headers={"Content-Type": "application/x-www-form-urlencoded"}) as r:
                    await r.read()
                    self.answers[r.status] += 1
                    if r.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                self.cut += 1
            if attempt % 2:
                await asyncio.sleep(0.05)
        raise AssertionError(f"no replica took {body}")

    def _count(self, share: float) -> int:
        return round(share * len(self.plan.deliveries))

    async def hold(self, share: float) -> None:
        """Let senders start deliveries up to ``share`` of the plan only (1: all)."""
        async with self._progress:
            self.allowed = self._count(share)
            self._progress.notify_all()

    async def reached(self, share: float) -> None:
        """Wait (bounded) until ``share`` of the deliveries are answered."""
        async with asyncio.timeout(120), self._progress:
            await self._progress.wait_for(lambda: self.done >= self._count(share))


async def until(check: Callable[[], Awaitable[bool]], what: str, seconds: float = 60.0) -> None:
    for _ in range(int(seconds / 0.1)):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what}: not reached in {seconds}s")


async def scraped(replica: ExporterProcess) -> dict[Any, float]:
    return await asyncio.to_thread(scrape, replica.url)


async def settled(replica: ExporterProcess) -> bool:
    """Store up and nothing spooled: every callback it accepted is in Redis."""
    values = await scraped(replica)
    return value(values, STORE_UP) == 1 and value(values, SPOOLED) == 0


def assert_true_totals(values: dict[Any, float], truth: Truth, name: str) -> None:
    """Every cluster-wide call series in one scrape equals what was sent."""
    for direction in DIRECTIONS:
        for status in ("initiated", "ringing", "in-progress", "completed", "busy", "failed",
                       "no-answer", "canceled"):
            assert value(values, "signalwire_call_status_events_total", status=status,
                         direction=direction) == truth.status_events[(status, direction)], \
                (name, status, direction)
            if status not in ("initiated", "ringing", "in-progress"):
                assert value(values, "signalwire_calls_total", status=status,
                             direction=direction) == truth.calls[(status, direction)], \
                    (name, status, direction)
        assert value(values, "signalwire_calls_in_progress", direction=direction) == 0, name
        for reason in ("ttl", "capacity"):
            assert value(values, "signalwire_calls_expired_total", direction=direction,
                         reason=reason) == 0, name
        for histogram in HISTOGRAMS:
            key = (histogram, direction)
            assert value(values, f"{histogram}_count", direction=direction) \
                == truth.counts[key], (name, key)
            assert abs(value(values, f"{histogram}_sum", direction=direction)
                       - truth.sums[key]) < 1e-6 * max(1.0, truth.sums[key]), (name, key)
            assert value(values, f"{histogram}_bucket", direction=direction, le="+Inf") \
                == truth.counts[key], (name, key)
        for result in ("received", "lost", "discarded"):
            assert value(values, "signalwire_call_audio_in_packets_total", direction=direction,
                         result=result) == truth.packets[(direction, result)], (name, result)
    sip = {(labels["direction"], labels["code"], labels["class"]): got
           for (series, pairs), got in values.items()
           if series == "signalwire_call_sip_responses_total" and got
           for labels in [dict(pairs)]}
    assert sip == dict(truth.sip), name


async def test_two_replicas_survive_a_crash_and_a_redis_restart_with_exact_totals(
        tmp_path: Path, exporter_process: Any) -> None:
    """Two replicas, one persistent Redis, a few thousand calls spread at random with
    duplicates to the other replica and reordering; one replica is killed with SIGKILL and
    started again, Redis is stopped and started again, all while callbacks flow; then
    each replica's scrape shows exactly the true totals.

    The limit this test respects rather than tests: a replica killed while Redis is
    down loses what it had spooled (answered 200, held only in its memory). So the kill
    comes while Redis is up and the replica's spool is empty, as in the issue's scenario.
    """
    redis = RedisServer(tmp_path / "redis", persistent=True)
    try:
        config = redis_config(redis.url)
        replicas = [exporter_process(config), exporter_process(config)]
        plan = make_plan(CALLS, "chaos", seed=13)
        sender = Sender(replicas, plan)
        await sender.hold(0.55)  # the rest after the crash, while Redis is down
        sending = asyncio.create_task(sender.run())

        # a crash in the middle: callbacks cut or meant for it go to the other replica
        await sender.reached(0.2)
        victim = replicas[0]
        await until(lambda: settled(victim), "spool empty before the kill")
        victim.kill()
        await sender.reached(0.35)
        await asyncio.to_thread(victim.launch)

        # Redis goes away and comes back with its data: the replicas spool meanwhile
        await sender.reached(0.55)
        await asyncio.to_thread(redis.stop)
        await sender.hold(1)
        await sender.reached(0.75)
        assert not any([await settled(replica) for replica in replicas])  # spooling
        await asyncio.to_thread(redis.start)
        await sending

        assert sender.done == len(plan.deliveries)
        assert sender.cut > 0  # the crash met traffic
        assert set(sender.answers) == {200}  # no 5xx, even with Redis down
        for replica in replicas:
            await until(lambda r=replica: settled(r), "spool drained")
        for n, replica in enumerate(replicas):
            assert_true_totals(await scraped(replica), plan.truth, f"replica {n}")
        assert "Traceback" not in replicas[1].log()
    finally:
        redis.stop()


async def test_redis_stopped_under_load_loses_and_doubles_nothing(
        tmp_path: Path, exporter_process: Any) -> None:
    """One replica keeps answering 200 while Redis is away (spooling, store_up 0,
    /healthz 200); once Redis is back the spool is applied and the totals are exact."""
    redis = RedisServer(tmp_path / "redis", persistent=True)
    try:
        replica = exporter_process(redis_config(redis.url))
        plan = make_plan(CALLS // 4, "outage", seed=14, replicas=1)
        sender = Sender([replica], plan)
        await sender.hold(0.6)
        sending = asyncio.create_task(sender.run())
        await sender.reached(0.3)
        await asyncio.to_thread(redis.stop)
        await sender.reached(0.6)  # held here: every callback since the stop is answered
        values = await scraped(replica)
        assert value(values, STORE_UP) == 0
        assert value(values, SPOOLED) > 0
        assert value(values, "signalwire_exporter_store_errors_total") > 0
        assert await asyncio.to_thread(get, f"{replica.url}/healthz") == (200, "ok")
        await sender.hold(1)
        await sender.reached(0.8)
        await asyncio.to_thread(redis.start)
        await sending

        assert set(sender.answers) == {200} and sender.cut == 0
        await until(lambda: settled(replica), "spool drained")
        values = await scraped(replica)
        assert_true_totals(values, plan.truth, "replica")
        assert value(values, STORE_UP) == 1
        assert "Traceback" not in replica.log()
    finally:
        redis.stop()


def post_final(replica: ExporterProcess, sid: str) -> tuple[int, dict[str, Any]]:
    """One final callback: its status, and the JSON body of a refusal."""
    import urllib.error
    import urllib.request

    body = urlencode({"CallSid": sid, "CallStatus": "completed", "Direction": "inbound",
                      "SequenceNumber": "3"}).encode()
    request = urllib.request.Request(f"{replica.url}/callbacks/voice", data=body,
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, {}
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def test_a_full_spool_answers_503_and_counts_nothing_it_refused(
        tmp_path: Path, exporter_process: Any) -> None:
    redis = RedisServer(tmp_path / "redis", persistent=True)
    try:
        replica = exporter_process(redis_config(redis.url, spool_max_callbacks=5))
        redis.stop()
        answers = [post_final(replica, f"spooled-{n}") for n in range(8)]
        assert [status for status, _ in answers] == [200] * 5 + [503] * 3
        for _, document in answers[5:]:
            assert "retry later" in document["error"]
        values = scrape(replica.url)
        assert value(values, SPOOLED) == 5
        assert value(values, "signalwire_exporter_store_spool_rejected_total") == 3
        assert value(values, "signalwire_exporter_callbacks_total", endpoint="voice",
                     outcome="unavailable") == 3
        assert value(values, "signalwire_exporter_callbacks_total", endpoint="voice",
                     outcome="accepted") == 5

        await asyncio.to_thread(redis.start)
        await until(lambda: settled(replica), "spool drained")
        completed = ("signalwire_calls_total", {"status": "completed", "direction": "inbound"})
        assert value(scrape(replica.url), completed[0], **completed[1]) == 5
        # the provider retries what was refused: now it counts, once
        assert [post_final(replica, f"spooled-{n}")[0] for n in range(3, 8)] == [200] * 5
        assert value(scrape(replica.url), completed[0], **completed[1]) == 8
    finally:
        redis.stop()


async def test_store_up_and_the_report_follow_redis_without_any_callback(
        tmp_path: Path, exporter_process: Any) -> None:
    """A quiet replica: scrapes and report requests alone see Redis go and come back."""
    redis = RedisServer(tmp_path / "redis", persistent=True)
    try:
        replica = exporter_process(redis_config(redis.url))
        assert value(scrape(replica.url), STORE_UP) == 1
        redis.stop()
        assert value(scrape(replica.url), STORE_UP) == 0
        status, text = get(f"{replica.url}/reports/failed-calls?format=json")
        assert status == 503 and "unreachable" in json.loads(text)["error"]
        assert get(f"{replica.url}/healthz") == (200, "ok")

        await asyncio.to_thread(redis.start)
        await until(lambda: settled(replica), "store up after a scrape")
        status, text = get(f"{replica.url}/reports/failed-calls?format=json")
        assert status == 200 and json.loads(text)["count"] == 0
        values = scrape(replica.url)
        for outcome, count in (("unavailable", 1), ("ok", 1)):
            assert value(values, "signalwire_exporter_report_requests_total",
                         outcome=outcome) == count
        assert "Traceback" not in replica.log()
    finally:
        redis.stop()
