"""Track: per-call state that makes counting exact under at-least-once delivery.

The provider may deliver a callback twice and out of order. ``CallTracker.track``
looks at one event against what it already knows of the call and returns a
``Decision``: what, if anything, the metrics should record. It has no I/O and
takes the clock as an argument, so every rule here is testable on its own.

Rules (see the interface contract):
- a (CallSid, SequenceNumber, status) seen before is a duplicate: nothing recorded; so is
  a final status seen before without a SequenceNumber, or arriving without one after it
  was seen with one (the same call reported by both the number-level callback, which
  carries none, and a ``<Dial>`` or API callback);
- every other event counts once as a status event, late ones included;
- the first final status to arrive is the call's final status, counted once;
- a late event (sequence not newer than the last applied, or the call already
  final) never moves the in-progress gauge;
- quality, duration, SIP code and delays are observed at most once per call;
- a call first seen without a Direction takes the first known one that arrives, for
  every metric not yet recorded (an in-progress call moves its gauge along);
- an event may name the final status to record instead if the call was never answered
  (``CallEvent.unanswered_status``: a hangup before the answer is a cancel);
- a final status learned from the REST API (``settle``) is recorded as its final callback
  would have been, and every final callback after it is a duplicate.

For the REST API lookups (``reconcile``) each call also keeps the time of its last event
and how often it was handed out for a lookup: ``stale`` hands out calls silent too long
without a final status, with doubling patience, and once more before they are dropped.

Memory is bounded: calls live at most ``ttl`` seconds after they are first seen and
at most ``max_calls`` are kept; the oldest go first. A call that leaves without a
final status is reported so it can be counted as expired.
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections import deque
from dataclasses import dataclass

from .payloads import CALL_STATUSES, DIRECTIONS, FINAL_CALL_STATUSES, CallEvent

_STATUS_INDEX = {status: index for index, status in enumerate(CALL_STATUSES)}
_WIDTH = len(CALL_STATUSES)
_BITMASK_SEQUENCES = 63  # sequence numbers -1..61 live in one int; others in a set

# per status, its bit in every sequence slot of CallState.seen
_ANY_SLOT = [sum(1 << (slot * _WIDTH + index) for slot in range(_BITMASK_SEQUENCES))
             for index in range(_WIDTH)]

_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def call_sid(key: int | str) -> str:
    """The CallSid of a tracker key (``call_key`` undone)."""
    return str(uuid.UUID(int=key)) if isinstance(key, int) else key


def call_key(call_sid: str) -> int | str:
    """The tracker's key for a CallSid: a UUID as its 128-bit int, anything else as is.

    Provider CallSids are lower-case UUIDs; as an int the key takes 48 bytes instead
    of 88 (a third of what a tracked call costs). Only the canonical lower-case form
    is converted, so two different CallSids never share a key.
    """
    if len(call_sid) == 36 and _CANONICAL_UUID.fullmatch(call_sid):
        return int(call_sid.replace("-", ""), 16)
    return call_sid


# flag bits of CallState.flags
_IN_PROGRESS = 1
_QUALITY_DONE = 2
_PDD_DONE = 4
_ANSWER_DONE = 8
_SIP_DONE = 16
_ANSWERED = 32  # an in-progress event was seen, late or not

# bits of CallState.lookup (REST API lookups)
_LAST_CHANCE = 1  # handed out once more because tracking is about to drop it
_SETTLED = 2  # final status from the REST API: later final callbacks are duplicates
_OFFERS_MAX = 7  # CallState.offers saturates here
_TICK = 0.1  # CallState.last_event in tenths of a second after ``created``


class CallState:
    """What we remember of one call: kept small, one is held per tracked call."""

    __slots__ = (
        "created",
        "direction",
        "extra",
        "final",
        "flags",
        "last_event",
        "last_seq",
        "lookup",
        "offers",
        "seen",
        "t_answered",
        "t_initiated",
        "t_ringing",
    )

    def __init__(self, direction: str, created: float) -> None:
        self.direction = direction
        self.created = created
        self.last_seq = -1
        self.final: str | None = None
        self.flags = 0
        self.seen = 0
        self.extra: set[tuple[int | None, int]] | None = None
        self.t_initiated: int | None = None
        self.t_ringing: int | None = None
        self.t_answered: int | None = None
        self.last_event = 0  # tenths of a second after created
        self.offers = 0  # times handed out for a lookup (stale), up to _OFFERS_MAX
        self.lookup = 0  # _LAST_CHANCE | _SETTLED

    @property
    def in_progress(self) -> bool:
        return bool(self.flags & _IN_PROGRESS)

    def seen_unsequenced(self, sequence: int | None, status: str) -> bool:
        """Whether ``status`` was seen without a sequence number, or (when ``sequence``
        is None) with any: one final status reported once per endpoint."""
        index = _STATUS_INDEX[status]
        if sequence is not None:
            return bool(self.seen >> index & 1)
        return bool(self.seen & _ANY_SLOT[index]) or (
            self.extra is not None and any(i == index for _, i in self.extra))

    def mark_seen(self, sequence: int | None, status: str) -> bool:
        """Remember (sequence, status); return False if it was already seen."""
        index = _STATUS_INDEX[status]
        slot = 0 if sequence is None else sequence + 1
        if slot < _BITMASK_SEQUENCES:
            bit = 1 << (slot * _WIDTH + index)
            if self.seen & bit:
                return False
            self.seen |= bit
            return True
        if self.extra is None:
            self.extra = set()
        key = (sequence, index)
        if key in self.extra:
            return False
        self.extra.add(key)
        return True


@dataclass(slots=True)
class Decision:
    """What one event means for the metrics.

    ``direction`` is the call's label and ``status`` the event's status as recorded
    (``unanswered_status`` applied). ``moved_from``: the direction an in-progress call
    was counted under until this event gave it a known one.
    """

    direction: str
    status: str = "unknown"
    moved_from: str | None = None
    slice: tuple[str, ...] = ()  # the call's app/line label values (``slices``)
    duplicate: bool = False
    late: bool = False
    final_status: str | None = None
    in_progress_delta: int = 0
    observe_quality: bool = False
    observe_sip: bool = False
    observe_duration: bool = False
    post_dial_delay: float | None = None
    time_to_answer: float | None = None


@dataclass(slots=True, frozen=True)
class Departed:
    """A call that left the store; ``reason`` is ``ttl`` or ``capacity``."""

    direction: str
    reason: str
    was_in_progress: bool
    unfinished: bool
    slice: tuple[str, ...] = ()


# A tracked call is stored as one int (about 64 bytes) instead of a CallState object
# (112 bytes, plus a float and up to four ints of its own): fixed-width fields at the
# bottom, the open-ended ``seen`` bitmask on top. CallState is the working form
# while one event is applied. Out-of-range values (sequence numbers past 2**32 - 2,
# timestamps outside 1970-2514) are clamped or ignored rather than widening every call.
_DIRECTION_INDEX = {direction: index for index, direction in enumerate(DIRECTIONS)}
assert len(DIRECTIONS) <= 8, "widen _DIRECTION_BITS"
_SEQ_MAX = (1 << 32) - 1  # stored as last_seq + 1
_MS_MASK = (1 << 44) - 1  # created, in milliseconds of the tracker's clock
_STAMP_BITS = 34
_STAMP_MASK = (1 << _STAMP_BITS) - 1  # a Timestamp in epoch seconds, stored + 1
_DIRECTION_BITS = 3  # five directions
_DIRECTION_MASK = (1 << _DIRECTION_BITS) - 1
_SHIFT_FINAL = _DIRECTION_BITS  # 4 bits: 0 or a CALL_STATUSES index + 1
_SHIFT_FLAGS = _SHIFT_FINAL + 4  # 6 bits
_SHIFT_SEQ = _SHIFT_FLAGS + 6  # 32 bits
_SHIFT_CREATED = _SHIFT_SEQ + 32  # 44 bits
_SHIFT_STAMPS = _SHIFT_CREATED + 44  # 3 x _STAMP_BITS
_SHIFT_LOOKUP = _SHIFT_STAMPS + 3 * _STAMP_BITS
_TICK_BITS = 24  # last_event: 19 days in tenths of a second; later ones are clamped
_TICK_MAX = (1 << _TICK_BITS) - 1
_SHIFT_OFFERS = _SHIFT_LOOKUP + _TICK_BITS  # 3 bits
_SHIFT_LOOKUP_FLAGS = _SHIFT_OFFERS + 3  # 2 bits
_SHIFT_SEEN = _SHIFT_LOOKUP_FLAGS + 2


def _stamp_bits(stamp: int | None) -> int:
    return 0 if stamp is None else stamp + 1


def _stamp(bits: int) -> int | None:
    bits &= _STAMP_MASK
    return bits - 1 if bits else None


def pack(state: CallState) -> int:
    """The stored form of a call's state (see unpack)."""
    final = 0 if state.final is None else _STATUS_INDEX[state.final] + 1
    stamps = (_stamp_bits(state.t_initiated) | _stamp_bits(state.t_ringing) << _STAMP_BITS
              | _stamp_bits(state.t_answered) << 2 * _STAMP_BITS)
    return (_DIRECTION_INDEX[state.direction] | final << _SHIFT_FINAL
            | state.flags << _SHIFT_FLAGS
            | min(state.last_seq + 1, _SEQ_MAX) << _SHIFT_SEQ
            | (round(state.created * 1000) & _MS_MASK) << _SHIFT_CREATED
            | stamps << _SHIFT_STAMPS | min(state.last_event, _TICK_MAX) << _SHIFT_LOOKUP
            | state.offers << _SHIFT_OFFERS | state.lookup << _SHIFT_LOOKUP_FLAGS
            | state.seen << _SHIFT_SEEN)


def unpack(packed: int) -> CallState:
    state = CallState.__new__(CallState)
    state.direction = DIRECTIONS[packed & _DIRECTION_MASK]
    state.created = _created(packed)
    state.extra = None
    final = packed >> _SHIFT_FINAL & 15
    state.final = CALL_STATUSES[final - 1] if final else None
    state.flags = packed >> _SHIFT_FLAGS & 63
    state.last_seq = (packed >> _SHIFT_SEQ & _SEQ_MAX) - 1
    state.t_initiated = _stamp(packed >> _SHIFT_STAMPS)
    state.t_ringing = _stamp(packed >> (_SHIFT_STAMPS + _STAMP_BITS))
    state.t_answered = _stamp(packed >> (_SHIFT_STAMPS + 2 * _STAMP_BITS))
    state.last_event = packed >> _SHIFT_LOOKUP & _TICK_MAX
    state.offers = packed >> _SHIFT_OFFERS & 7
    state.lookup = packed >> _SHIFT_LOOKUP_FLAGS & 3
    state.seen = packed >> _SHIFT_SEEN
    return state


def _created(packed: int) -> float:
    return (packed >> _SHIFT_CREATED & _MS_MASK) / 1000


class CallTracker:
    """Size-capped, time-limited store of calls' packed state, keyed by CallSid."""

    def __init__(self, max_calls: int, ttl: float, *, lookups: bool = False) -> None:
        """``lookups``: keep what ``stale`` needs (each call's last-event time, the calls
        without a final status); off, tracking does no work for it."""
        self.max_calls = max_calls
        self.ttl = ttl
        self.lookups = lookups
        self._calls: dict[int | str, int] = {}  # call key -> pack(CallState)
        self._order: deque[int | str] = deque()  # call keys, oldest first
        # CallState.extra of the rare call with sequence numbers past the bitmask
        self._extra: dict[int | str, set[tuple[int | None, int]]] = {}
        self._removed = 0  # calls removed since self._calls was last rebuilt
        self._open: dict[int | str, None] = {}  # keys of calls without a final status
        # app/line label values of calls that have them (only with ``labels:`` configured),
        # fixed by the call's first event
        self._slices: dict[int | str, tuple[str, ...]] = {}
        self.in_progress = 0

    def __len__(self) -> int:
        return len(self._calls)

    def track(self, event: CallEvent, now: float) -> tuple[Decision, list[Departed]]:
        """Apply one event; return its Decision and any calls evicted to make room."""
        departed: list[Departed] = []
        key = call_key(event.call_sid)
        packed = self._calls.get(key)
        if packed is None:
            while len(self._calls) >= self.max_calls:
                departed.append(self._pop_oldest("capacity"))
            state = CallState(event.direction, now)
            self._order.append(key)
            if event.slice:
                self._slices[key] = event.slice
        else:
            state = unpack(packed)
            if self._extra:
                state.extra = self._extra.get(key)
        decision = self._apply(state, event)
        if self._slices:
            decision.slice = self._slices.get(key, ())
        if not decision.duplicate:
            if self.lookups:
                state.last_event = max(0, round((now - state.created) / _TICK))
                if packed is None:
                    if state.final is None:
                        self._open[key] = None
                elif decision.final_status is not None:
                    self._open.pop(key, None)
            self._calls[key] = pack(state)
            if state.extra is not None:
                self._extra[key] = state.extra
        return decision, departed

    def _apply(self, state: CallState, event: CallEvent) -> Decision:
        status, sequence = event.status, event.sequence_number
        if (event.unanswered_status is not None and status in FINAL_CALL_STATUSES
                and not state.flags & _ANSWERED):
            status = event.unanswered_status
        decision = Decision(direction=state.direction, status=status)
        if (status in FINAL_CALL_STATUSES and (state.lookup & _SETTLED
                                               or state.seen_unsequenced(sequence, status))) \
                or not state.mark_seen(sequence, status):
            decision.duplicate = True
            return decision
        if state.direction == "unknown" and event.direction != "unknown":
            state.direction = decision.direction = event.direction
            if state.flags & _IN_PROGRESS:
                decision.moved_from = "unknown"

        decision.late = state.final is not None or (
            sequence is not None and sequence <= state.last_seq
        )
        if not decision.late and sequence is not None:
            state.last_seq = sequence

        if status in FINAL_CALL_STATUSES:
            if state.final is None:
                state.final = status
                decision.final_status = status
                decision.observe_duration = (
                    status == "completed" and event.call_duration is not None
                )
                if state.flags & _IN_PROGRESS:
                    state.flags &= ~_IN_PROGRESS
                    decision.in_progress_delta = -1
                    self.in_progress -= 1
            if not state.flags & _QUALITY_DONE and event.audio_in_mos:
                state.flags |= _QUALITY_DONE
                decision.observe_quality = True
        elif status == "in-progress":
            state.flags |= _ANSWERED
            if not decision.late and not state.flags & _IN_PROGRESS:
                state.flags |= _IN_PROGRESS
                decision.in_progress_delta = 1
                self.in_progress += 1

        if event.sip_result_code is not None and not state.flags & _SIP_DONE:
            state.flags |= _SIP_DONE
            decision.observe_sip = True

        self._observe_delays(state, event, decision)
        return decision

    def _observe_delays(self, state: CallState, event: CallEvent, decision: Decision) -> None:
        """Post-dial delay (initiated → ringing) and time to answer (ringing → answer).

        Keyed on the events' own Timestamps, so arrival order does not matter.
        """
        if event.timestamp is None:
            return
        stamp = int(event.timestamp.timestamp())
        if not 0 <= stamp < _STAMP_MASK:
            return  # before 1970 or after 2514: not a real event time
        if decision.status == "initiated" and state.t_initiated is None:
            state.t_initiated = stamp
        elif decision.status == "ringing" and state.t_ringing is None:
            state.t_ringing = stamp
        elif decision.status == "in-progress" and state.t_answered is None:
            state.t_answered = stamp
        else:
            return
        if (not state.flags & _PDD_DONE and state.t_initiated is not None
                and state.t_ringing is not None and state.t_ringing >= state.t_initiated):
            state.flags |= _PDD_DONE
            decision.post_dial_delay = float(state.t_ringing - state.t_initiated)
        if (not state.flags & _ANSWER_DONE and state.t_ringing is not None
                and state.t_answered is not None and state.t_answered >= state.t_ringing):
            state.flags |= _ANSWER_DONE
            decision.time_to_answer = float(state.t_answered - state.t_ringing)

    def settle(self, call_sid: str, status: str, direction: str, duration: int | None,
               now: float) -> Decision | None:
        """Apply a final status learned from the REST API as its final callback would be.

        None when the call is not tracked (nothing recorded); a duplicate Decision when it
        already has a final status. Otherwise the call is final, and every final callback
        that comes later is a duplicate. ``direction`` counts only as a later event's would
        (for a call tracked as ``unknown``); ``status`` must be a final one.
        """
        if status not in FINAL_CALL_STATUSES:
            raise ValueError(f"not a final call status: {status}")
        key = call_key(call_sid)
        packed = self._calls.get(key)
        if packed is None:
            return None
        state = unpack(packed)
        if state.final is not None:
            return Decision(direction=state.direction, status=status, duplicate=True,
                            slice=self._slices.get(key, ()) if self._slices else ())
        if self._extra:
            state.extra = self._extra.get(key)
        decision = self._apply(state, CallEvent(call_sid=call_sid, status=status,
                                                direction=direction, endpoint="voice",
                                                call_duration=duration))
        if self._slices:
            decision.slice = self._slices.get(key, ())
        state.lookup |= _SETTLED
        self._calls[key] = pack(state)
        if state.extra is not None:
            self._extra[key] = state.extra
        self._open.pop(key, None)
        return decision

    def stale(self, now: float, silent_for: float, limit: int) -> list[str]:
        """Hand out up to ``limit`` calls due for a REST API lookup, oldest first (only
        with ``lookups`` on).

        Due: no final status, and either silent (no event applied) for at least
        ``silent_for * 2**offers`` seconds (``offers``: how often the call was handed out
        before, at most 7), or about to be dropped and not handed out for that yet: first
        seen at least ``ttl - silent_for`` ago, or among the ``limit`` oldest calls while
        the tracker holds ``max_calls - limit`` or more. Each call handed out counts an
        offer (or its last chance), so it is not due again until its next step.
        """
        due: dict[int | str, bool] = {}  # key → last chance
        if limit <= 0:
            return []
        if len(self._calls) + limit >= self.max_calls:
            for key in itertools.islice(self._order, limit):
                if key in self._open and not (
                        self._calls[key] >> _SHIFT_LOOKUP_FLAGS & _LAST_CHANCE):
                    due[key] = True
        last_chance_from = now - self.ttl + silent_for
        for key in self._open:
            if len(due) >= limit:
                break
            packed = self._calls[key]
            created = _created(packed)
            if created <= last_chance_from:
                if not packed >> _SHIFT_LOOKUP_FLAGS & _LAST_CHANCE:
                    due[key] = True
                continue
            last = created + (packed >> _SHIFT_LOOKUP & _TICK_MAX) * _TICK
            if now - last >= silent_for * (1 << (packed >> _SHIFT_OFFERS & 7)):
                due.setdefault(key, False)
        for key, last_chance in due.items():
            packed = self._calls[key]
            if last_chance:
                packed |= _LAST_CHANCE << _SHIFT_LOOKUP_FLAGS
            elif packed >> _SHIFT_OFFERS & 7 < _OFFERS_MAX:
                packed += 1 << _SHIFT_OFFERS
            self._calls[key] = packed
        return [call_sid(key) for key in due]

    def expire(self, now: float) -> list[Departed]:
        """Drop calls first seen more than ``ttl`` seconds before ``now``."""
        departed: list[Departed] = []
        deadline = now - self.ttl
        while self._order:
            if _created(self._calls[self._order[0]]) > deadline:
                break
            departed.append(self._pop_oldest("ttl"))
        return departed

    def _pop_oldest(self, reason: str) -> Departed:
        key = self._order.popleft()
        state = unpack(self._calls.pop(key))
        if self._extra:
            self._extra.pop(key, None)
        if state.final is None:
            self._open.pop(key, None)
        slice_ = self._slices.pop(key, ()) if self._slices else ()
        self._removed += 1
        if self._removed >= self.max_calls:
            # A dict never shrinks as keys leave, and a full one that keeps
            # churning regrows to 3x its size: rebuilt, it takes about half.
            self._calls = dict(self._calls)
            self._removed = 0
        was_in_progress = bool(state.flags & _IN_PROGRESS)
        if was_in_progress:
            self.in_progress -= 1
        return Departed(state.direction, reason, was_in_progress, state.final is None, slice_)
