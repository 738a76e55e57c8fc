"""Per-call tracking: dedupe, ordering, in-progress, expiry. Pure, with a fake clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.calls import CallState, CallTracker, Decision, pack, unpack
from exporter.payloads import DIRECTIONS, FINAL_CALL_STATUSES, CallEvent

T0 = datetime(2024, 4, 4, 18, 32, 15, tzinfo=UTC)


def ev(status: str, seq: int | None, sid: str = "c1", direction: str = "outbound-api",
       at: float | None = None, **extra: object) -> CallEvent:
    event = CallEvent(call_sid=sid, status=status, direction=direction, endpoint="voice",
                      sequence_number=seq)
    if at is not None:
        event.timestamp = T0 + timedelta(seconds=at)
    for key, value in extra.items():
        setattr(event, key, value)
    return event


def run(tracker: CallTracker, *events: CallEvent, now: float = 0.0) -> list[Decision]:
    return [tracker.track(event, now)[0] for event in events]


def test_lifecycle_in_order() -> None:
    tracker = CallTracker(100, 3600)
    d = run(tracker, ev("initiated", 0), ev("ringing", 1), ev("in-progress", 2),
            ev("completed", 3, call_duration=30))
    assert [x.duplicate for x in d] == [False] * 4
    assert [x.in_progress_delta for x in d] == [0, 0, 1, -1]
    assert [x.final_status for x in d] == [None, None, None, "completed"]
    assert d[3].observe_duration
    assert tracker.in_progress == 0


def test_duplicate_delivery_is_flagged_and_changes_nothing() -> None:
    tracker = CallTracker(100, 3600)
    first, again = run(tracker, ev("in-progress", 2), ev("in-progress", 2))
    assert not first.duplicate and again.duplicate
    assert again.in_progress_delta == 0 and tracker.in_progress == 1
    final, final_again = run(tracker, ev("completed", 3), ev("completed", 3))
    assert final.final_status == "completed" and final_again.duplicate
    assert final_again.final_status is None


def test_same_sequence_different_status_is_not_a_duplicate() -> None:
    tracker = CallTracker(100, 3600)
    a, b = run(tracker, ev("ringing", 1), ev("in-progress", 1))
    assert not a.duplicate and not b.duplicate and b.late


def test_late_events_are_counted_but_never_undo_the_final_status() -> None:
    tracker = CallTracker(100, 3600)
    final, ringing, answered = run(tracker, ev("completed", 3), ev("ringing", 1),
                                   ev("in-progress", 2))
    assert final.final_status == "completed"
    assert ringing.late and answered.late
    assert answered.in_progress_delta == 0 and answered.final_status is None
    assert tracker.in_progress == 0


def test_first_final_status_wins() -> None:
    tracker = CallTracker(100, 3600)
    busy, completed = run(tracker, ev("busy", 2), ev("completed", 3))
    assert busy.final_status == "busy"
    assert completed.final_status is None and not completed.duplicate


def test_final_arriving_with_older_sequence_still_ends_the_call() -> None:
    tracker = CallTracker(100, 3600)
    answered, final = run(tracker, ev("in-progress", 5), ev("completed", 4))
    assert answered.in_progress_delta == 1
    assert final.final_status == "completed" and final.in_progress_delta == -1
    assert tracker.in_progress == 0


def test_in_progress_never_negative_and_counted_once_per_call() -> None:
    tracker = CallTracker(100, 3600)
    run(tracker, ev("in-progress", 2), ev("in-progress", 3))  # a re-sent answer, new seq
    assert tracker.in_progress == 1
    run(tracker, ev("completed", 4), ev("failed", 5))
    assert tracker.in_progress == 0


def test_events_without_sequence_number_dedupe_on_status() -> None:
    tracker = CallTracker(100, 3600)
    a, b = run(tracker, ev("completed", None, direction="inbound"),
               ev("completed", None, direction="inbound"))
    assert a.final_status == "completed" and b.duplicate


def test_huge_sequence_numbers_still_dedupe() -> None:
    tracker = CallTracker(100, 3600)
    a, b, c = run(tracker, ev("ringing", 10_000), ev("ringing", 10_000), ev("ringing", 70))
    assert not a.duplicate and b.duplicate and not c.duplicate


def test_quality_observed_once_from_first_final_event_with_mos() -> None:
    tracker = CallTracker(100, 3600)
    d = run(tracker, ev("in-progress", 1, audio_in_mos=4.0),
            ev("completed", 2, audio_in_mos=0.0), ev("completed", 3, audio_in_mos=3.9),
            ev("failed", 4, audio_in_mos=2.0))
    assert [x.observe_quality for x in d] == [False, False, True, False]


def test_sip_code_observed_once_per_call() -> None:
    tracker = CallTracker(100, 3600)
    d = run(tracker, ev("ringing", 1, sip_result_code=180), ev("busy", 2, sip_result_code=486))
    assert [x.observe_sip for x in d] == [True, False]


def test_post_dial_delay_and_time_to_answer_from_timestamps_any_order() -> None:
    tracker = CallTracker(100, 3600)
    d = run(tracker, ev("ringing", 1, at=3), ev("in-progress", 2, at=10),
            ev("initiated", 0, at=1))
    assert d[0].post_dial_delay is None
    assert d[1].time_to_answer == 7.0
    assert d[2].post_dial_delay == 2.0


def test_expiry_reports_unfinished_calls_and_releases_the_gauge() -> None:
    tracker = CallTracker(100, ttl=60)
    run(tracker, ev("in-progress", 1, sid="open"), now=0)
    run(tracker, ev("completed", 1, sid="done"), now=10)
    run(tracker, ev("ringing", 1, sid="young"), now=100)
    gone = tracker.expire(now=75)
    assert [(g.reason, g.unfinished, g.was_in_progress) for g in gone] == [
        ("ttl", True, True), ("ttl", False, False)]
    assert tracker.in_progress == 0 and len(tracker) == 1


def test_capacity_evicts_oldest_first() -> None:
    tracker = CallTracker(max_calls=2, ttl=3600)
    run(tracker, ev("in-progress", 1, sid="a"), ev("ringing", 1, sid="b"))
    _, departed = tracker.track(ev("ringing", 1, sid="c"), 0)
    assert [(d.reason, d.was_in_progress) for d in departed] == [("capacity", True)]
    assert len(tracker) == 2 and tracker.in_progress == 0


def test_direction_is_the_calls_first_one() -> None:
    tracker = CallTracker(100, 3600)
    a, b = run(tracker, ev("in-progress", 1, direction="inbound"),
               ev("completed", 2, direction="unknown"))
    assert a.direction == b.direction == "inbound"


def test_uuid_call_sids_differing_only_in_case_are_different_calls() -> None:
    tracker = CallTracker(100, 3600)
    sid = "0f8f6f3e-2d4c-4b7a-9c1e-5a6b7c8d9e0f"
    first, upper, again = run(tracker, ev("ringing", 1, sid=sid), ev("ringing", 1, sid=sid.upper()),
                              ev("ringing", 1, sid=sid))
    assert not first.duplicate and not upper.duplicate and again.duplicate
    assert len(tracker) == 2


@given(direction=st.sampled_from(DIRECTIONS),
       final=st.none() | st.sampled_from(sorted(FINAL_CALL_STATUSES)),
       flags=st.integers(0, 31), last_seq=st.integers(-1, 2**32 - 2),
       created=st.integers(0, 2**40).map(lambda ms: ms / 1000),
       stamps=st.lists(st.none() | st.integers(0, 2**34 - 2), min_size=3, max_size=3),
       seen=st.integers(0, 2**630 - 1),
       lookup=st.tuples(st.integers(0, 2**24 - 1), st.integers(0, 7), st.integers(0, 3)))
def test_packed_state_round_trips(direction: str, final: str | None, flags: int,
                                  last_seq: int, created: float, stamps: list[int | None],
                                  seen: int, lookup: tuple[int, int, int]) -> None:
    state = CallState(direction, created)
    state.final, state.flags, state.last_seq, state.seen = final, flags, last_seq, seen
    state.last_event, state.offers, state.lookup = lookup
    state.t_initiated, state.t_ringing, state.t_answered = stamps
    back = unpack(pack(state))
    assert [getattr(back, name) for name in CallState.__slots__ if name != "extra"] == [
        getattr(state, name) for name in CallState.__slots__ if name != "extra"]


def test_sequence_numbers_past_the_bitmask_are_still_deduplicated() -> None:
    tracker = CallTracker(100, 3600)
    first, other, again = run(tracker, ev("ringing", 500), ev("ringing", 70, sid="c2"),
                              ev("ringing", 500))
    assert not first.duplicate and not other.duplicate and again.duplicate
    late = run(tracker, ev("ringing", 400))[0]
    assert late.late and not late.duplicate


def test_one_call_on_voice_and_inbound_endpoints_is_counted_once() -> None:
    # the number-level callback carries no SequenceNumber, the <Dial> one does
    for first, second in ((ev("completed", None), ev("completed", 4)),
                          (ev("completed", 4), ev("completed", None))):
        tracker = CallTracker(100, 3600)
        a, b = run(tracker, first, second)
        assert a.final_status == "completed" and not a.duplicate
        assert b.duplicate and b.final_status is None
    # a second final event with its own SequenceNumber is still a status event
    tracker = CallTracker(100, 3600)
    _, again = run(tracker, ev("completed", 3), ev("completed", 4))
    assert not again.duplicate and again.final_status is None


def test_direction_comes_from_the_first_event_that_has_one() -> None:
    tracker = CallTracker(100, 3600)
    ringing, answered, done = run(
        tracker, ev("ringing", 1, direction="unknown"), ev("in-progress", 2, direction="unknown"),
        ev("completed", 3, direction="inbound"))
    assert ringing.direction == answered.direction == "unknown"
    assert answered.in_progress_delta == 1
    # the gauge moves from unknown to inbound, then the final takes it off inbound
    assert done.direction == "inbound" and done.moved_from == "unknown"
    assert done.in_progress_delta == -1 and done.final_status == "completed"
    later = run(tracker, ev("ringing", 0, direction="outbound-api"))[0]
    assert later.direction == "inbound"  # once known, it stays


def test_unanswered_status_applies_only_to_calls_never_answered() -> None:
    tracker = CallTracker(100, 3600)
    hangup = ev("completed", 4, sid="a", unanswered_status="canceled")
    assert run(tracker, ev("ringing", 1, sid="a"), hangup)[1].final_status == "canceled"
    answered = run(tracker, ev("in-progress", 2, sid="b"),
                   ev("completed", 4, sid="b", unanswered_status="canceled"))[1]
    assert answered.final_status == "completed" and answered.status == "completed"


# --- REST API lookups: settle and stale -------------------------------------------------------

def test_settle_records_the_final_as_its_callback_would_and_later_finals_are_duplicates(
        ) -> None:
    tracker = CallTracker(100, 3600, lookups=True)
    run(tracker, ev("ringing", 0), ev("in-progress", 1))
    decision = tracker.settle("c1", "completed", "outbound-api", 42, now=5.0)
    assert decision is not None and not decision.duplicate
    assert decision.final_status == "completed" and decision.observe_duration
    assert decision.in_progress_delta == -1 and tracker.in_progress == 0
    late = run(tracker, ev("completed", 2, call_duration=42), ev("failed", None),
               ev("busy", 7), ev("ringing", 0, sid="c1"))
    assert [d.duplicate for d in late] == [True, True, True, True]
    late_ringing = run(tracker, ev("initiated", 0))[0]
    assert not late_ringing.duplicate and late_ringing.late
    assert late_ringing.final_status is None


def test_settle_of_a_forgotten_or_finished_call_records_nothing() -> None:
    tracker = CallTracker(100, 3600, lookups=True)
    assert tracker.settle("nobody", "completed", "inbound", None, now=1.0) is None
    run(tracker, ev("busy", 3))
    again = tracker.settle("c1", "completed", "outbound-api", 9, now=1.0)
    assert again is not None and again.duplicate and again.final_status is None
    with pytest.raises(ValueError):
        tracker.settle("c1", "ringing", "outbound-api", None, now=1.0)


def test_settle_gives_an_unknown_direction_the_apis() -> None:
    tracker = CallTracker(100, 3600, lookups=True)
    run(tracker, ev("ringing", 0, direction="unknown"))
    decision = tracker.settle("c1", "no-answer", "inbound", None, now=1.0)
    assert decision is not None and decision.direction == "inbound"


def test_a_silent_call_is_handed_out_with_doubling_patience() -> None:
    tracker = CallTracker(100, 3600, lookups=True)
    run(tracker, ev("in-progress", 1), now=0.0)
    run(tracker, ev("ringing", 0, sid="done"), ev("completed", 1, sid="done"), now=0.0)
    assert tracker.stale(9.9, 10, 5) == []
    assert tracker.stale(10.0, 10, 5) == ["c1"]  # the finished call never
    assert tracker.stale(19.9, 10, 5) == []  # not again until silent twice as long
    assert tracker.stale(20.0, 10, 5) == ["c1"]
    assert tracker.stale(39.9, 10, 5) == []
    assert tracker.stale(40.0, 10, 5) == ["c1"]
    run(tracker, ev("in-progress", 1, sid="c1", audio_in_mos=None), now=45.0)  # duplicate
    assert tracker.stale(80.0, 10, 5) == ["c1"]
    tracker.settle("c1", "completed", "outbound-api", 80, now=81.0)
    assert tracker.stale(1000.0, 10, 5) == []


def test_an_event_restarts_the_silence() -> None:
    tracker = CallTracker(100, 3600, lookups=True)
    run(tracker, ev("ringing", 0), now=0.0)
    run(tracker, ev("in-progress", 1), now=8.0)
    assert tracker.stale(10.0, 10, 5) == []
    assert tracker.stale(18.0, 10, 5) == ["c1"]


def test_calls_about_to_age_out_get_one_last_chance() -> None:
    tracker = CallTracker(100, 100, lookups=True)
    run(tracker, ev("ringing", 0), now=0.0)
    run(tracker, ev("ringing", 1), now=85.0)  # not silent: only its age makes it due
    assert tracker.stale(89.9, 10, 5) == []
    assert tracker.stale(90.0, 10, 5) == ["c1"]
    assert tracker.stale(95.0, 10, 5) == []  # once


def test_the_oldest_calls_of_a_full_tracker_get_one_last_chance() -> None:
    tracker = CallTracker(4, 3600, lookups=True)
    for i in range(2):
        run(tracker, ev("ringing", 0, sid=f"c{i}"), now=float(i))
    assert tracker.stale(3.0, 10, 1) == []  # 2 + 1 < 4: room left
    run(tracker, ev("ringing", 0, sid="c2"), ev("ringing", 0, sid="c3"), now=3.0)
    assert tracker.stale(3.0, 10, 2) == ["c0", "c1"]  # next to be pushed out
    assert tracker.stale(3.0, 10, 2) == []


def test_limit_bounds_what_is_handed_out_and_sids_come_back_as_given() -> None:
    tracker = CallTracker(100, 3600, lookups=True)
    sids = ["0f8f6f3e-2d4c-4b7a-9c1e-5a6b7c8d9e0f", "ABC-upper", "plain"]
    for sid in sids:
        run(tracker, ev("ringing", 0, sid=sid), now=0.0)
    assert tracker.stale(10.0, 10, 2) == sids[:2]
    assert tracker.stale(10.0, 10, 2) == sids[2:]


def test_without_lookups_tracking_keeps_nothing_for_them() -> None:
    tracker = CallTracker(100, 3600)
    run(tracker, ev("ringing", 0), now=5.0)
    run(tracker, ev("in-progress", 1), now=9.0)
    assert tracker.stale(1000.0, 10, 5) == []
    assert unpack(tracker._calls["c1"]).last_event == 0
