"""Cost of each pipeline stage for one realistic callback, in microseconds.

The best of several repeats of each pure stage function: unlike requests/s, barely
moved by other processes on the machine, so it shows what one optimisation buys.
Run alone as ``python3 bench/stages.py``; bench/run.py includes it.
"""

from __future__ import annotations

import sys
import timeit
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client import CollectorRegistry

from bench.workload import SIGNING_KEY, calls, form_body
from exporter import signature
from exporter.calls import CallTracker
from exporter.config import parse_config
from exporter.metrics import ExporterMetrics
from exporter.payloads import FORM, collect_fields, decode_pairs, parse_call_event

URL = "http://127.0.0.1:9880/callbacks/voice"


def measure(number: int = 2000, repeat: int = 5) -> dict[str, float]:
    stream = calls(seed=42)
    samples = [next(stream) for _ in range(number)]
    bodies = [form_body(pairs).encode() for pairs in samples]
    headers = [{signature.SIGNATURE_HEADER: signature.form_signature(SIGNING_KEY, URL, pairs)}
               for pairs in samples]
    limits = parse_config({}, environ={}).limits
    pairs = [decode_pairs(FORM, body, max_fields=limits.max_fields) for body in bodies]
    fields = [collect_fields(p, max_fields=limits.max_fields,
                             max_field_length=limits.max_field_length) for p in pairs]
    events = [parse_call_event(f, "voice") for f in fields]
    metrics = ExporterMetrics(CollectorRegistry(), parse_config({}, environ={}).buckets,
                              lambda: 0)

    def track_all() -> None:
        tracker = CallTracker(number, 1e9)  # fresh each repeat: every call is new
        for event in events:
            tracker.track(event, 0.0)

    decisions = []
    tracker = CallTracker(number, 1e9)
    for event in events:
        decisions.append(tracker.track(event, 0.0)[0])

    def each(stage: Callable[[int], object]) -> Callable[[], None]:
        def loop() -> None:
            for i in range(number):
                stage(i)
        return loop

    stages: dict[str, Callable[[], None]] = {
        "decode_form": each(lambda i: decode_pairs(FORM, bodies[i],
                                                   max_fields=limits.max_fields)),
        "collect_fields": each(lambda i: collect_fields(
            pairs[i], max_fields=limits.max_fields, max_field_length=limits.max_field_length)),
        "verify_signature": each(lambda i: signature.verify(
            [SIGNING_KEY], URL, headers[i], body=bodies[i], form_pairs=pairs[i])),
        "parse_call_event": each(lambda i: parse_call_event(fields[i], "voice")),
        "track": track_all,
        "record_call": each(lambda i: metrics.record_call(events[i], decisions[i])),
    }
    result = {name: min(timeit.repeat(run, number=1, repeat=repeat)) / number * 1e6
              for name, run in stages.items()}
    result["total"] = sum(result.values())
    return result


if __name__ == "__main__":
    for name, us in measure().items():
        print(f"{name:18s} {us:7.1f} us")
