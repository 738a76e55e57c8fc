"""Realistic voice status callbacks for the benchmark: every field of seed 000, signed.

Each body is a final-status callback with all 30 fields the provider documents,
a new CallSid each time, and a signature computed exactly the way the provider
does (``exporter.signature.form_signature`` over the URL the exporter rebuilds).
"""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from urllib.parse import quote_plus

from exporter.signature import form_signature

SIGNING_KEY = "PSK_bench_0123456789abcdef0123456789abcdef"
PATH = "/callbacks/voice"

# (final status, SIP code, phrase, weight): roughly what a busy call centre sees.
_OUTCOMES = (
    ("completed", "200", "OK", 70),
    ("failed", "404", "Not Found", 8),
    ("busy", "486", "Busy Here", 10),
    ("no-answer", "480", "Temporarily Unavailable", 9),
    ("canceled", "487", "Request Terminated", 3),
)
_DIRECTIONS = ("inbound", "outbound-api", "outbound-dial")


def call_fields(rng: random.Random, moment: datetime) -> list[tuple[str, str]]:
    """The 30 fields of one final voice status callback, for a new call."""
    status, sip, phrase, _ = rng.choices(_OUTCOMES, weights=[o[3] for o in _OUTCOMES])[0]
    completed = status == "completed"
    duration = rng.randint(5, 900) if completed else 0
    media = duration * 50
    skipped = rng.randint(0, max(1, media // 50)) if completed else 0
    sid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    return [
        ("AccountSid", "b3877c40-da60-4998-90ad-b792e98472af"),
        ("ApiVersion", "2010-04-01"),
        ("AudioInAveragePtime", "20" if completed else "0"),
        ("AudioInDtmfPacketCount", str(rng.randint(0, 12)) if completed else "0"),
        ("AudioInFlushPacketCount", str(rng.randint(0, 40)) if completed else "0"),
        ("AudioInJitterMaxVariance", str(rng.randint(5, 60)) if completed else "0"),
        ("AudioInJitterMinVariance", str(rng.randint(0, 4)) if completed else "0"),
        ("AudioInLargestJbSize", str(rng.randint(40, 200)) if completed else "0"),
        ("AudioInMos", f"{rng.uniform(2.8, 4.5):.2f}" if completed else ""),
        ("AudioInMediaPacketCount", str(media)),
        ("AudioInSkipPacketCount", str(skipped)),
        ("AudioOutDtmfPacketCount", "0"),
        ("AudioOutMediaPacketCount", str(media)),
        ("CallbackSource", "call-progress-events"),
        ("CallDuration", str(duration)),
        ("CallerName", "ACME SUPPORT"),
        ("CallSid", sid),
        ("CallStatus", status),
        ("Direction", rng.choice(_DIRECTIONS)),
        ("ForwardedFrom", ""),
        ("From", f"+1555{rng.randint(0, 9999999):07d}"),
        ("ParentCallSid", ""),
        ("RecordingDuration", str(duration) if completed else ""),
        ("RecordingSid", str(uuid.UUID(int=rng.getrandbits(128), version=4))),
        ("RecordingUrl", f"https://example.signalwire.com/api/laml/2010-04-01/Accounts/"
                         f"b3877c40-da60-4998-90ad-b792e98472af/Recordings/{sid}"),
        ("SequenceNumber", str(rng.randint(2, 4))),
        ("SipInviteResultPhrase", phrase),
        ("SipResultCode", sip),
        ("Timestamp", format_datetime(moment, usegmt=False)),
        ("To", f"+1555{rng.randint(0, 9999999):07d}"),
    ]


def calls(seed: int) -> Iterator[list[tuple[str, str]]]:
    """An endless stream of distinct calls; the same ``seed`` gives the same stream."""
    rng = random.Random(seed)
    moment = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    while True:
        moment += timedelta(milliseconds=rng.randint(1, 900))
        yield call_fields(rng, moment)


_SAFE = re.compile(r"[A-Za-z0-9_.~-]*")


def form_body(pairs: list[tuple[str, str]]) -> str:
    """``urlencode(pairs)``, quicker: most values need no quoting."""
    return "&".join(f"{name}={value if _SAFE.fullmatch(value) else quote_plus(value)}"
                    for name, value in pairs)


def signed_bodies(base_url: str, count: int, seed: int) -> Iterator[tuple[str, str]]:
    """(signature, url-encoded body) of ``count`` distinct callbacks to ``base_url``."""
    url = base_url.rstrip("/") + PATH
    stream = calls(seed)
    for _ in range(count):
        pairs = next(stream)
        yield form_signature(SIGNING_KEY, url, pairs), form_body(pairs)


def write_bodies(path: Path, base_url: str, count: int, seed: int) -> Path:
    """One ``signature body`` line per request: what bench/load.lua cycles through."""
    with path.open("w") as out:
        for sig, body in signed_bodies(base_url, count, seed):
            out.write(f"{sig} {body}\n")
    return path
