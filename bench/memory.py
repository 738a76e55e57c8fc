"""Resident memory of the call tracker: per tracked call, and bounded at the cap.

Run in a fresh process (``python3 bench/memory.py CALLS CAP``; prints JSON) so the
figures are this process's RSS and nothing else's. Each call passes through the
tracker as its ringing, answered (completed calls only) and final events, each
with a Timestamp: the state a real call leaves behind.
"""

from __future__ import annotations

import gc
import json
import os
import random
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

# BENCH_EXPORTER_ROOT: measure another checkout's tracker (bench/run.py --before)
sys.path.insert(0, os.environ.get("BENCH_EXPORTER_ROOT",
                                  str(Path(__file__).resolve().parent.parent)))

from exporter.calls import CallTracker
from exporter.payloads import CallEvent

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    """Resident set size of this process, in bytes."""
    gc.collect()
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


def feed(tracker: CallTracker, calls: int, seed: int) -> None:
    rng = random.Random(seed)
    ringing = datetime(2026, 1, 5, 9, 0, 0, tzinfo=UTC)
    answered = datetime(2026, 1, 5, 9, 0, 6, tzinfo=UTC)
    final = datetime(2026, 1, 5, 9, 0, 40, tzinfo=UTC)
    directions = ("inbound", "outbound-api", "outbound-dial")
    finals = ("completed", "completed", "completed", "busy", "failed", "no-answer")
    for i in range(calls):
        sid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        direction = directions[i % 3]
        tracker.track(CallEvent(call_sid=sid, status="ringing", direction=direction,
                                endpoint="voice", sequence_number=1, timestamp=ringing),
                      float(i))
        if finals[i % 6] == "completed":
            tracker.track(CallEvent(call_sid=sid, status="in-progress", direction=direction,
                                    endpoint="voice", sequence_number=2, timestamp=answered),
                          float(i))
        tracker.track(CallEvent(call_sid=sid, status=finals[i % 6], direction=direction,
                                endpoint="voice", sequence_number=3, timestamp=final,
                                call_duration=35, audio_in_mos=4.1, sip_result_code=200),
                      float(i))


def measure(calls: int, cap: int) -> dict[str, float]:
    """RSS before and after ``calls`` distinct calls through a tracker capped at ``cap``."""
    tracker = CallTracker(cap, ttl=1e12)
    before = rss()
    feed(tracker, calls, seed=cap)
    after = rss()
    tracked = len(tracker)
    return {"calls": calls, "cap": cap, "tracked": tracked, "rss_before_bytes": before,
            "rss_after_bytes": after,
            "bytes_per_tracked_call": (after - before) / tracked if tracked else 0.0}


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]), int(sys.argv[2]))))
