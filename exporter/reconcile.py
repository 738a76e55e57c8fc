"""Reconcile: ask the REST API how calls ended whose final callback never came, and what
calls cost.

Runs beside the app (started by ``create_app`` only when ``reconcile.enabled``), never on
the callback path: callbacks only hand the final calls to ``Prices.add`` (a heap push), and
every API request waits in ``signalwire_api``'s token bucket.

Lookups: every ``tick`` the store hands out the calls due for one (``Store.stale_calls``:
silent for ``after_seconds`` without a final status, again after a doubled silence while
the API says they are still active, and once more just before tracking drops them). Each
lookup is claimed (``reconcile:<CallSid>``) so that replicas sharing a store ask once. A
final status from the API is recorded as the final callback would have been
(``Store.settle``); a call the API does not know is left to expire as before.

Prices (``reconcile.fetch_price``): each call that reached a final status is priced once,
``price_delay`` after it ended, again with doubling waits while the API has no price yet,
at most ``PRICE_ATTEMPTS`` times. When several are due together, one page of the call list
prices them all; the rest are asked one by one. ``price:<CallSid>`` is claimed before a
price is added, so it is added once across replicas.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import re
import time
from datetime import UTC, datetime, timedelta

from .config import Config
from .payloads import FINAL_CALL_STATUSES
from .signalwire_api import MAX_PAGE_SIZE, ApiCall, ApiUnavailable, SignalWireApi
from .store import Store

log = logging.getLogger(__name__)

PRICE_ATTEMPTS = 6  # asks for a price not filled in yet: about 63 price_delays in all
LIST_MIN = 3  # calls due for a price together, from which one list page is tried first
CONCURRENT_LOOKUPS = 4  # requests waiting for the bucket at once, per replica
_CURRENCY = re.compile(r"[A-Z]{3}")


def currency_label(unit: str | None) -> str:
    """An ISO 4217 code as the ``currency`` label; anything else is ``unknown``."""
    code = (unit or "").strip().upper()
    return code if _CURRENCY.fullmatch(code) else "unknown"


class Prices:
    """Final calls waiting for their price, due times in a heap; this replica's own.

    Held in memory: a restart loses the calls still waiting (their prices are not summed).
    Bounded by ``limit``: beyond it a call is not priced (logged).
    """

    def __init__(self, store: Store, api: SignalWireApi, delay: float, limit: int,
                 claim_ttl: float) -> None:
        self.store = store
        self.api = api
        self.delay = delay
        self.limit = limit
        self.claim_ttl = claim_ttl
        # (due, order, CallSid, direction, attempt, wall-clock end)
        self._due: list[tuple[float, int, str, str, int, float]] = []
        self._order = itertools.count()
        self._full_logged = False

    def __len__(self) -> int:
        return len(self._due)

    def add(self, call_sid: str, direction: str, now: float, attempt: int = 0,
            ended: float | None = None) -> None:
        """Price this final call later (the callback path calls this: keep it cheap)."""
        if len(self._due) >= self.limit:
            if not self._full_logged:
                log.warning("call price queue full: prices of further calls are not summed",
                            extra={"fields": {"limit": self.limit}})
                self._full_logged = True
            return
        heapq.heappush(self._due, (now + self.delay * (1 << attempt), next(self._order),
                                   call_sid, direction, attempt,
                                   time.time() if ended is None else ended))

    async def record(self, call_sid: str, direction: str, call: ApiCall) -> bool:
        """Add the call's price once; False while the API has no final price yet."""
        if call.status not in FINAL_CALL_STATUSES or call.price is None:
            return False
        key = f"price:{call_sid}"
        if await self.store.claim(key, self.claim_ttl):
            amount = -call.price  # the API's price is negative when charged
            if amount > 0 and not await self.store.add_price(
                    direction, currency_label(call.price_unit), amount):
                await self.store.release(key)  # the store is away: again next round
                return False
        return True

    async def round(self, now: float) -> None:
        """Ask for the prices now due: one list page for many, else one by one."""
        due: list[tuple[float, int, str, str, int, float]] = []
        while self._due and self._due[0][0] <= now and len(due) < MAX_PAGE_SIZE:
            due.append(heapq.heappop(self._due))
        if not due:
            return
        listed = await self._listed(due) if len(due) >= LIST_MIN else {}
        for _, _, sid, direction, attempt, ended in due:
            call = listed.get(sid)
            if call is None:
                try:
                    call = await self.api.call(sid)
                except ApiUnavailable:
                    call = None
            if call is not None and await self.record(sid, direction, call):
                continue
            if attempt + 1 < PRICE_ATTEMPTS:
                self.add(sid, direction, self.store.clock(), attempt + 1, ended)
            else:
                log.info("no call price after retries", extra={"fields": {
                    "call_sid": sid, "attempts": PRICE_ATTEMPTS}})

    async def _listed(self, due: list[tuple[float, int, str, str, int, float]],
                      ) -> dict[str, ApiCall]:
        """The due calls found in the list of calls ended since the earliest of them."""
        wanted = {entry[2] for entry in due}
        since = datetime.fromtimestamp(min(entry[5] for entry in due), UTC) - timedelta(
            minutes=5)  # clocks differ
        found: dict[str, ApiCall] = {}
        pages = math.ceil(len(due) / MAX_PAGE_SIZE) + 1
        try:
            async for page in self.api.calls({"EndTime>": since.date().isoformat()},
                                             page_size=MAX_PAGE_SIZE, max_pages=pages):
                found.update((call.sid, call) for call in page if call.sid in wanted)
                if len(found) == len(wanted):
                    break
        except ApiUnavailable:
            pass  # asked one by one instead
        return found


class Reconciler:
    """The background lookups of one application."""

    def __init__(self, config: Config, store: Store, api: SignalWireApi) -> None:
        settings = config.reconcile
        self.store = store
        self.api = api
        self.after = settings.after_seconds
        self.tick = min(self.after / 4, 30.0)
        # calls asked for per tick: what the rate allows, and at least one
        self.batch = max(1, math.ceil(settings.max_requests_per_second * self.tick))
        self.claim_ttl = self.after / 2  # outlives a lookup, lapses before the next offer
        delay = min(self.after, 60.0)
        self.prices = (Prices(store, api, delay=delay, limit=config.tracking.max_calls,
                              # as long as a call may be asked for its price
                              claim_ttl=delay * (1 << PRICE_ATTEMPTS))
                       if settings.fetch_price else None)
        self._slots = asyncio.Semaphore(CONCURRENT_LOOKUPS)

    async def run(self) -> None:
        """Look up stale calls every tick, until cancelled; a failed round is logged."""
        while True:
            await asyncio.sleep(self.tick)
            try:
                await self.round()
            except Exception:  # one failed round must not end the task
                log.exception("reconcile round failed")

    async def run_prices(self) -> None:
        if self.prices is None:
            return
        while True:
            await asyncio.sleep(self.prices.delay / 2)
            try:
                await self.prices.round(self.store.clock())
            except Exception:
                log.exception("price round failed")

    async def round(self) -> None:
        sids = await self.store.stale_calls(self.store.clock(), self.after, self.batch)
        await asyncio.gather(*(self.lookup(sid) for sid in sids))

    async def lookup(self, call_sid: str) -> None:
        """Ask the API about one call; settle it if the API knows its final status."""
        if not await self.store.claim(f"reconcile:{call_sid}", self.claim_ttl):
            return  # another replica asks
        async with self._slots:
            try:
                call = await self.api.call(call_sid)
            except ApiUnavailable as exc:
                log.warning("call lookup failed", extra={"fields": {
                    "call_sid": call_sid, "outcome": exc.outcome}})
                return
        if call is None:
            log.info("call unknown to the API", extra={"fields": {"call_sid": call_sid}})
            return
        if call.status not in FINAL_CALL_STATUSES:
            log.debug("call still active", extra={"fields": {
                "call_sid": call_sid, "status": call.status}})
            return
        now = self.store.clock()
        decision = await self.store.settle(call_sid, call.status, call.direction,
                                           call.duration, now)
        if decision is None or decision.duplicate:
            return  # forgotten meanwhile, or its final callback came first
        log.info("call reconciled", extra={"fields": {
            "call_sid": call_sid, "status": call.status, "direction": decision.direction,
            "duration": call.duration,
            "end_time": call.end_time.isoformat() if call.end_time else None}})
        if self.prices is not None and not await self.prices.record(
                call_sid, decision.direction, call):
            self.prices.add(call_sid, decision.direction, now,
                            ended=call.end_time.timestamp() if call.end_time else None)

