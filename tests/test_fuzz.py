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


# --- headers (issue 14): any header value gets 200 or a JSON 4xx, signing on or off --------

HEADER_NAMES = ["Host", "X-Forwarded-Host", "X-Forwarded-Proto", "X-SignalWire-Signature",
                "X-Twilio-Signature", "X-SignalWire-Sha256-Signature", "Content-Type",
                "Content-Encoding", "Accept", "Accept-Encoding", "Authorization", "Expect",
                "Connection", "X-Anything"]
header_values = (st.binary(max_size=60) | st.sampled_from([
    b"", b"\xe9vil.example", "\u00e9".encode(), b"\xff", b"metrics.example.com:8443",
    b"https, http", b"br", b"zstd", b"gzip", b"deflate, br", b"100-continue",
    b"application/json", b"multipart/form-data", b"\x00", b" \t ", b"a" * 200,
])).map(lambda v: v.replace(b"\r", b"").replace(b"\n", b""))
header_sets = st.dictionaries(st.sampled_from(HEADER_NAMES), header_values, max_size=6)


@pytest.fixture(params=[False, True], ids=["signing-off", "signing-on"])
def header_target(request: Any, exporter_process: Any) -> Any:
    config = ("signature:\n  signing_keys: [fuzz-key]\n  trust_forwarded_headers: true\n"
              "  allowed_hosts: [metrics.example.com]\n" if request.param else "")
    return exporter_process(config, "--log-level", "error")


@FUZZ
@given(headers=header_sets, endpoint=st.sampled_from(["voice", "messaging", "nope"]),
       method=st.sampled_from(["POST", "GET"]))
def test_any_header_gets_200_or_a_json_4xx(header_target: Any, headers: dict[str, bytes],
                                           endpoint: str, method: str) -> None:
    exporter = header_target
    body = (b"CallSid=c1&CallStatus=completed&MessageSid=m1&MessageStatus=sent"
            if method == "POST" else None)
    conn = http.client.HTTPConnection("127.0.0.1", exporter.port, timeout=10)
    try:
        conn.putrequest(method, f"/callbacks/{endpoint}", skip_host=True,
                        skip_accept_encoding=True)
        headers.setdefault("Host", b"metrics.example.com")
        headers.setdefault("Content-Type", b"application/x-www-form-urlencoded")
        for name, value in headers.items():
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        payload = response.read()
        assert response.status == 200 or 400 <= response.status < 500, (
            response.status, payload[:200])
        if response.status != 200:
            assert "error" in json.loads(payload), payload[:200]
    finally:
        conn.close()
    assert exporter.proc.poll() is None, exporter.log()
