"""Track and record: where per-call state is decided and where the cluster-wide metrics live.

The contract every state backend keeps (``Store``):

- ``call`` / ``item`` apply one parsed event to the state of its call (message,
  recording, transcription) and, in the same step, record what it means in the
  cluster-wide ``signalwire_*`` metrics. The returned decision is for the caller's
  own, per-replica bookkeeping only (outcome, late events, the log line): it never
  records a cluster-wide metric again.
- ``expire`` ages out calls and items past their TTL, counting the unfinished ones.
- ``claim`` says yes once per key across everything that shares the state (one
  SMS per alert notification, one lookup per call).
- ``count_once`` is ``claim`` plus one increment of a cluster-wide counter, in one
  step: the events no tracker decides (every JSON ``calling.*`` event, 10DLC events).
- ``release`` gives a claim back (an SMS that could not be sent, so that a retry of the
  notification may send it).
- ``stale_calls``, ``settle`` and ``add_price`` serve the REST API lookups
  (``reconcile``): which calls to look up, recording a final status learned there, and
  summing call prices.
- ``before_scrape`` brings the metric values up to date for ``/metrics``.

``MemoryStore`` keeps both in this process: the trackers of ``calls`` and
``statuses``, and the metrics in the exporter's own registry. ``RedisStore``
(``redis_store``) keeps both in Redis, decided by Lua scripts that follow the same
rules, so that any number of replicas act as one exporter. The rules themselves are
described in ``calls`` and ``statuses``; one test holds both backends to the same
results.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING, Protocol

from .calls import CallTracker, Decision
from .payloads import CallEvent
from .statuses import Lifecycle, StatusDecision, StatusTracker

if TYPE_CHECKING:
    from .config import Config
    from .metrics import ExporterMetrics, ItemEvent, StatusMetrics
    from .reports import FailedCallReport


class Store(Protocol):
    """What a state backend does; see the module docstring for the contract."""

    backend: str

    def clock(self) -> float:
        """Seconds on the clock the backend ages state by (shared by all its users)."""

    async def call(self, event: CallEvent, now: float) -> Decision: ...

    async def item(self, endpoint: str, event: ItemEvent, now: float,
                   wants: int) -> StatusDecision: ...

    async def expire(self, now: float) -> None: ...

    async def claim(self, key: str, ttl: float) -> bool: ...

    async def count_once(self, key: str, ttl: float, family: str,
                         labels: tuple[str, ...]) -> bool:
        """Count one event in a cluster-wide counter, once per ``key`` within ``ttl``.

        If ``key`` is not claimed (as ``claim`` does, sharing its key space: callers
        prefix their keys), claim it for ``ttl`` seconds and add 1 to the series
        ``labels`` (values in the family's label order) of the counter named ``family``,
        one of ``ExporterMetrics.once_counters``; return True. Otherwise change nothing
        and return False (a retry of an event already counted). Claiming and counting
        are one step: two replicas given the same key count it once between them. The
        caller keeps ``labels`` bounded; the backend stores whatever series it is given.
        """

    async def release(self, key: str) -> None:
        """Give ``key``'s claim back at once (an SMS that failed: a retry may send it)."""

    async def stale_calls(self, now: float, silent_for: float, limit: int) -> list[str]:
        """Hand out up to ``limit`` CallSids of calls due for a REST API lookup.

        Due: tracked, no final status, and either silent (no event applied) for at least
        ``silent_for * 2**offers`` seconds, ``offers`` being how often the call was handed
        out before (saturating at 7), or about to be dropped and not yet handed out for
        that: first seen at least ``ttl - silent_for`` seconds ago, or among the ``limit``
        oldest calls while ``max_calls - limit`` or more are tracked. Handing a call out
        counts one offer (or uses its one last chance), atomically with choosing it, so
        replicas sharing the state never get the same call for the same step. Oldest calls
        first. The last-event time has 0.1 s resolution.
        """

    async def settle(self, call_sid: str, status: str, direction: str,
                     duration: int | None, now: float) -> Decision | None:
        """Record final ``status`` (one of FINAL_CALL_STATUSES) learned from the REST API,
        exactly as a final callback without SequenceNumber carrying ``status``,
        ``direction`` and CallDuration ``duration`` would be recorded
        (``ExporterMetrics.record_call``, the failed-call report), and count it in
        ``signalwire_calls_reconciled_total{status}``. From then on every final callback
        of the call is a duplicate. None, recording nothing, when the call is not tracked;
        a duplicate Decision, recording nothing, when it already has a final status.
        """

    async def add_price(self, direction: str, currency: str, amount: float) -> bool:
        """Add ``amount`` (> 0) to ``signalwire_call_price_total{direction, currency}``;
        callers claim ``price:<CallSid>`` first, so each call is added once. False when
        it could not be added now (a shared backend is away): the caller releases its
        claim and tries again later."""

    async def before_scrape(self) -> None: ...

    async def failed_call_rows(self, now: float) -> list[dict[str, str]]:
        """The failed-call report's rows (unmasked), oldest first; ``Rejected`` (503,
        ``unavailable``) when a shared backend cannot be read."""

    def failed_calls_held(self) -> int: ...

    def tracked_calls(self) -> int: ...

    def tracked_items(self, endpoint: str) -> int: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


def state_group(backend: str, key_prefix: str) -> str:
    """The ``group`` label of ``signalwire_exporter_state_info``: one value per shared state.

    Replicas on one Redis and prefix serve the same cluster-wide series, so queries keep
    one per group (``max by (group)``) and add the groups up; a memory-backend process is
    a group of its own, so N of them add up as before.
    """
    if backend == "redis":
        return f"redis:{key_prefix}"
    return f"memory:{uuid.uuid4().hex[:12]}"


class MemoryStore:
    """The embedded default: state and metrics of one process."""

    backend = "memory"

    def __init__(self, config: Config, lifecycles: dict[str, Lifecycle],
                 metrics: ExporterMetrics, item_metrics: StatusMetrics,
                 failed_calls: FailedCallReport) -> None:
        tracking = config.tracking
        self.calls = CallTracker(tracking.max_calls, tracking.call_ttl_seconds,
                                 lookups=config.reconcile.enabled)
        self.items = {endpoint: StatusTracker(lifecycle, tracking.max_items,
                                              tracking.item_ttl_seconds)
                      for endpoint, lifecycle in lifecycles.items()}
        self.metrics = metrics
        self.item_metrics = item_metrics
        self.failed_calls = failed_calls
        self._claims: dict[str, float] = {}  # key → when the claim lapses
        # claims per event (count_once) can be many: at most this many, the oldest go first
        self._max_claims = tracking.max_calls + tracking.max_items

    def clock(self) -> float:
        # The loop's monotonic clock: the process is the only user of this state.
        return asyncio.get_running_loop().time()

    async def call(self, event: CallEvent, now: float) -> Decision:
        decision, departed = self.calls.track(event, now)
        if departed:
            self.metrics.record_departed(departed)
        if not decision.duplicate:
            self.metrics.record_call(event, decision)
            if decision.final_status is not None:
                self.failed_calls.add(event, decision.final_status, decision.direction, now)
        return decision

    async def item(self, endpoint: str, event: ItemEvent, now: float,
                   wants: int) -> StatusDecision:
        tracker = self.items[endpoint]
        decision, departed = tracker.track(event.sid, event.status, now, wants)
        if departed:
            self.item_metrics.record_departed(tracker.lifecycle.kind, departed)
        if not decision.duplicate:
            self.item_metrics.record(event, decision)
        return decision

    async def expire(self, now: float) -> None:
        self.metrics.record_departed(self.calls.expire(now))
        for items in self.items.values():
            self.item_metrics.record_departed(items.lifecycle.kind, items.expire(now))
        self._claims = {key: until for key, until in self._claims.items() if until > now}

    async def stale_calls(self, now: float, silent_for: float, limit: int) -> list[str]:
        return self.calls.stale(now, silent_for, limit)

    async def settle(self, call_sid: str, status: str, direction: str,
                     duration: int | None, now: float) -> Decision | None:
        decision = self.calls.settle(call_sid, status, direction, duration, now)
        if decision is None or decision.duplicate:
            return decision
        event = CallEvent(call_sid=call_sid, status=status, direction=decision.direction,
                          endpoint="voice", call_duration=duration)
        self.metrics.record_call(event, decision)
        self.metrics.reconciled.inc((status,))
        self.failed_calls.add(event, status, decision.direction, now)
        return decision

    async def add_price(self, direction: str, currency: str, amount: float) -> bool:
        self.metrics.price.inc((direction, currency), amount)
        return True

    async def claim(self, key: str, ttl: float) -> bool:
        now = time.monotonic()
        until = self._claims.get(key)
        if until is not None and until > now:
            return False
        if until is None and len(self._claims) >= self._max_claims:
            del self._claims[next(iter(self._claims))]
        self._claims[key] = now + ttl
        return True

    async def count_once(self, key: str, ttl: float, family: str,
                         labels: tuple[str, ...]) -> bool:
        if not await self.claim(key, ttl):
            return False
        self.metrics.once_counters[family].inc(labels)
        return True

    async def release(self, key: str) -> None:
        self._claims.pop(key, None)

    async def before_scrape(self) -> None:
        """Nothing to fetch: the metrics are updated as events are applied."""

    async def start(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Nothing to release."""

    async def failed_call_rows(self, now: float) -> list[dict[str, str]]:
        return self.failed_calls.rows(now, mask=False)

    def failed_calls_held(self) -> int:
        return len(self.failed_calls)

    def tracked_calls(self) -> int:
        return len(self.calls)

    def tracked_items(self, endpoint: str) -> int:
        return len(self.items[endpoint])
