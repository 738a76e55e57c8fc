"""Track: per-item status state for messages, recordings and transcriptions.

These callbacks carry no SequenceNumber, so the rules are simpler than for calls
(``calls.py``), and one tracker serves all three kinds, each with its own
``Lifecycle`` (its status vocabulary):

- an (sid, status) seen before is a duplicate: nothing recorded;
- every other event counts once as a status event, late ones included;
- the first final status to arrive is the item's, counted once; a later final
  counts only as a status event; a non-final status arriving after the final is
  ``late`` (counted as an event, never changes the final);
- one-shot observations (an error code, a duration, a segment count) are granted
  at most once per item: the caller asks with bits, the tracker hands each out once;
- the time from the first ``start`` status to the ``end`` status (a message's
  queued/sent → delivered) is measured once, whichever order the two arrive in.

Memory is bounded like the call tracker's: at most ``max_items`` per tracker, each
kept ``ttl`` seconds after it was first seen, oldest dropped first. ``track`` and
``expire`` return why unfinished items left, so they can be counted.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """The statuses one kind of item goes through; ``statuses`` ends with ``unknown``."""

    kind: str
    statuses: tuple[str, ...]
    finals: frozenset[str]
    start: frozenset[str] = frozenset()
    end: str | None = None
    index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", {s: i for i, s in enumerate(self.statuses)})


class ItemState:
    """What we remember of one item: kept small, one is held per tracked sid."""

    __slots__ = ("created", "end", "final", "granted", "seen", "start", "timed")

    def __init__(self, created: float) -> None:
        self.created = created
        self.seen = 0
        self.granted = 0
        self.final: str | None = None
        self.start: float | None = None
        self.end: float | None = None
        self.timed = False


@dataclass(slots=True)
class StatusDecision:
    """What one event means for the metrics."""

    duplicate: bool = False
    late: bool = False
    final_status: str | None = None
    granted: int = 0
    elapsed: float | None = None


class StatusTracker:
    """Size-capped, time-limited store of ItemState, keyed by sid."""

    def __init__(self, lifecycle: Lifecycle, max_items: int, ttl: float) -> None:
        self.lifecycle = lifecycle
        self.max_items = max_items
        self.ttl = ttl
        self._items: dict[str, ItemState] = {}
        self._order: deque[str] = deque()  # sids, oldest first

    def __len__(self) -> int:
        return len(self._items)

    def track(self, sid: str, status: str, now: float,
              wants: int = 0) -> tuple[StatusDecision, list[str]]:
        """Apply one event; return its decision and the reasons unfinished items left.

        ``now`` is the receive time on a monotonic clock: it ages items out and times
        start → end (these callbacks carry no Timestamp). ``wants`` are the one-shot
        bits this event could use.
        """
        departed: list[str] = []
        state = self._items.get(sid)
        if state is None:
            while len(self._items) >= self.max_items:
                departed.extend(self._pop_oldest("capacity"))
            state = self._items[sid] = ItemState(now)
            self._order.append(sid)
        return self._apply(state, status, now, wants), departed

    def _apply(self, state: ItemState, status: str, now: float, wants: int) -> StatusDecision:
        bit = 1 << self.lifecycle.index[status]
        if state.seen & bit:
            return StatusDecision(duplicate=True)
        state.seen |= bit
        is_final = status in self.lifecycle.finals
        # late: a status that comes before a final one arrived after it (delivered →
        # read, or undelivered → failed, is a later status, not a late one)
        decision = StatusDecision(late=state.final is not None and not is_final)
        if is_final and state.final is None:
            state.final = decision.final_status = status
        decision.granted = wants & ~state.granted
        state.granted |= wants
        if self.lifecycle.end is not None:
            self._time(state, status, now, decision)
        return decision

    def _time(self, state: ItemState, status: str, now: float,
              decision: StatusDecision) -> None:
        """Start → end once per item, in either arrival order; the earliest start seen wins."""
        if state.timed:
            return
        if status in self.lifecycle.start:
            state.start = now if state.start is None else min(state.start, now)
        elif status == self.lifecycle.end:
            state.end = now
        else:
            return
        if state.start is not None and state.end is not None:
            state.timed = True
            if state.end >= state.start:
                decision.elapsed = state.end - state.start

    def expire(self, now: float) -> list[str]:
        """Drop items first seen more than ``ttl`` seconds before ``now``."""
        departed: list[str] = []
        deadline = now - self.ttl
        while self._order and self._items[self._order[0]].created <= deadline:
            departed.extend(self._pop_oldest("ttl"))
        return departed

    def _pop_oldest(self, reason: str) -> list[str]:
        state = self._items.pop(self._order.popleft())
        return [reason] if state.final is None else []
