"""The generic status tracker on its own: dedupe, first final, one-shot grants, timing, bounds."""

from __future__ import annotations

from exporter.callbacks import LIFECYCLES
from exporter.statuses import StatusTracker

MESSAGES = LIFECYCLES["messaging"]
RECORDINGS = LIFECYCLES["recording"]


def tracker(max_items: int = 100, ttl: float = 60.0) -> StatusTracker:
    return StatusTracker(MESSAGES, max_items, ttl)


def test_each_status_once_per_sid() -> None:
    t = tracker()
    assert not t.track("m1", "queued", 0.0)[0].duplicate
    assert t.track("m1", "queued", 1.0)[0].duplicate
    assert not t.track("m2", "queued", 1.0)[0].duplicate
    assert not t.track("m1", "sent", 2.0)[0].duplicate
    assert len(t) == 2


def test_first_final_wins_and_later_events_are_late() -> None:
    t = tracker()
    first = t.track("m", "undelivered", 0.0)[0]
    assert (first.final_status, first.late) == ("undelivered", False)
    second = t.track("m", "failed", 1.0)[0]  # a later final status, not a late one
    assert (second.final_status, second.late, second.duplicate) == (None, False, False)
    sent = t.track("m", "sent", 2.0)[0]
    assert (sent.final_status, sent.late) == (None, True)


def test_one_shot_bits_are_granted_once_per_item() -> None:
    t = tracker()
    assert t.track("m", "queued", 0.0, wants=0b10)[0].granted == 0b10
    assert t.track("m", "sent", 0.0, wants=0b11)[0].granted == 0b01
    assert t.track("m", "failed", 0.0, wants=0b11)[0].granted == 0
    assert t.track("other", "failed", 0.0, wants=0b11)[0].granted == 0b11
    # a duplicate never takes a grant
    assert t.track("x", "sent", 0.0)[0].granted == 0
    assert t.track("x", "sent", 0.0, wants=0b1)[0].granted == 0
    assert t.track("x", "delivered", 0.0, wants=0b1)[0].granted == 0b1


def test_delivery_time_from_the_earliest_start() -> None:
    t = tracker()
    t.track("m", "queued", 10.0)
    t.track("m", "sent", 12.0)
    assert t.track("m", "delivered", 15.5)[0].elapsed == 5.5


def test_delivery_time_when_only_sent_is_seen() -> None:
    t = tracker()
    t.track("m", "sent", 3.0)
    assert t.track("m", "delivered", 4.0)[0].elapsed == 1.0


def test_delivery_before_its_start_yields_no_time() -> None:
    """Receive times cannot order a late 'sent' before 'delivered': no observation."""
    t = tracker()
    assert t.track("m", "delivered", 5.0)[0].elapsed is None
    assert t.track("m", "sent", 6.0)[0].elapsed is None
    assert t.track("m", "queued", 7.0)[0].elapsed is None


def test_no_timing_without_an_end_status() -> None:
    t = StatusTracker(RECORDINGS, 10, 60.0)
    t.track("r", "in-progress", 0.0)
    assert t.track("r", "completed", 9.0)[0].elapsed is None


def test_capacity_and_ttl_report_unfinished_items() -> None:
    t = tracker(max_items=2, ttl=10.0)
    t.track("a", "sent", 0.0)
    t.track("b", "delivered", 1.0)
    _, departed = t.track("c", "sent", 2.0)
    assert departed == ["capacity"] and len(t) == 2  # "a" had no final status
    _, departed = t.track("d", "sent", 3.0)
    assert departed == [] and len(t) == 2  # "b" was final: not counted
    assert t.expire(12.5) == ["ttl"]  # "c"
    assert t.expire(100.0) == ["ttl"]  # "d"
    assert len(t) == 0


def test_a_forgotten_item_counts_afresh() -> None:
    t = tracker(ttl=1.0)
    t.track("m", "sent", 0.0)
    t.expire(5.0)
    assert not t.track("m", "sent", 6.0)[0].duplicate
