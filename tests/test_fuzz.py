"""Property-based fuzzing: the parser is total, and no request gets a 5xx or kills the process."""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from exporter.errors import Rejected
from exporter.payloads import (
    CALL_STATUSES,
    CONTENT_TYPES,
    DIRECTIONS,
    collect_fields,
    decode_pairs,
    parse_call_event,
)

FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])

KNOWN = ["CallSid", "CallStatus", "Direction", "SequenceNumber", "CallDuration",
         "SipResultCode", "AudioInMos", "AudioInJitterMaxVariance", "AudioInJitterMinVariance",
         "AudioInMediaPacketCount", "AudioInSkipPacketCount", "AudioInFlushPacketCount",
         "Timestamp", "From", "To", "CallerName", "RecordingDuration", "AudioInAveragePtime"]
texts = st.text(max_size=40) | st.sampled_from(
    [*CALL_STATUSES, "answered", *DIRECTIONS, "-1", "1e309", "nan", "inf", "0x10", "486",
     "99999999999999999999999", " 3 ", "4.5", "Thu, 09 Nov 2023 17:05:04 +0000",
     "Sept 31 Thur", "\x00", "\ud800"])
field_maps = st.dictionaries(st.sampled_from(KNOWN) | st.text(max_size=10), texts, max_size=25)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=20)


def form_bytes(fields: dict[str, str]) -> bytes:
    return urlencode(fields, errors="surrogatepass").encode("utf-8", "surrogatepass")


bodies = st.one_of(
    st.binary(max_size=300),
    field_maps.map(form_bytes),
    st.dictionaries(st.sampled_from(KNOWN), json_values, max_size=12).map(
        lambda d: json.dumps(d).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.tuples(field_maps, st.integers(0, 60)).map(  # truncated JSON
        lambda t: json.dumps(t[0]).encode()[:t[1]]),
    st.integers(0, 5000).map(lambda n: "&".join(f"f{i}=1" for i in range(n)).encode()),
    st.integers(0, 80_000).map(lambda n: b"CallSid=c&CallStatus=ringing&Note=" + b"x" * n),
    st.integers(1, 3000).map(lambda n: b"[" * n),  # deep nesting
)
content_types = st.sampled_from([*CONTENT_TYPES, "multipart/form-data; boundary=xyz",
                                 "application/json; charset=latin-1", "text/plain", "",
                                 "application/x-www-form-urlencoded; charset=utf-16", "\u00e9/x"])


def parser_outcome(content_type: str, body: bytes) -> None:
    """Either a typed event or a Rejected 4xx: nothing else may come out."""
    try:
        pairs = decode_pairs(content_type.split(";")[0], body, max_fields=200,
                             raw_content_type=content_type)
        fields = collect_fields(pairs, max_fields=200, max_field_length=4096)
        event = parse_call_event(fields, "voice")
    except Rejected as exc:
        assert 400 <= exc.status < 500 and exc.message
        return
    assert event.status in CALL_STATUSES
    assert event.direction in DIRECTIONS


@FUZZ
@given(content_types, bodies)
def test_parser_is_total(content_type: str, body: bytes) -> None:
    parser_outcome(content_type, body)


@FUZZ
@given(field_maps)
def test_any_fields_give_a_bounded_event_or_400(fields: dict[str, str]) -> None:
    for endpoint in ("voice", "inbound"):
        try:
            event = parse_call_event(fields, endpoint)
        except Rejected as exc:
            assert exc.status == 400
            continue
        assert event.status in CALL_STATUSES and event.direction in DIRECTIONS


requests = st.fixed_dictionaries({
    "method": st.sampled_from(["POST", "POST", "POST", "GET", "PUT"]),
    "endpoint": st.sampled_from(["voice", "inbound"]),
    "query": st.one_of(st.just(""), field_maps.map(lambda f: form_bytes(f).decode())),
    "content_type": st.none() | content_types,
    "body": bodies,
})


@pytest.fixture
def target(exporter_process: Any) -> Any:
    """One exporter process for all examples of a test: it must survive every one."""
    return exporter_process("", "--log-level", "error")


@FUZZ
@given(request=requests)
def test_endpoints_never_fail_and_the_process_lives(target: Any,
                                                     request: dict[str, Any]) -> None:
    exporter = target
    conn = http.client.HTTPConnection("127.0.0.1", exporter.port, timeout=10)
    try:
        headers = {"Content-Type": request["content_type"]} if request["content_type"] else {}
        path = f"/callbacks/{request['endpoint']}"
        if request["query"]:
            path += "?" + request["query"]
        body = request["body"] if request["method"] != "GET" else None
        conn.request(request["method"], path, body=body,
                     headers={k: v.encode("utf-8").decode("latin-1")
                              for k, v in headers.items()})
        response = conn.getresponse()
        payload = response.read()
        assert response.status == 200 or 400 <= response.status < 500, (response.status,
                                                                         payload[:200])
        if response.status != 200:
            assert "error" in json.loads(payload)
        conn.request("GET", "/metrics")
        metrics = conn.getresponse()
        assert metrics.status == 200
        families = list(text_string_to_metric_families(metrics.read().decode()))
        assert any(f.name == "signalwire_exporter_callbacks" for f in families)
    finally:
        conn.close()
    assert exporter.proc.poll() is None, exporter.log()
