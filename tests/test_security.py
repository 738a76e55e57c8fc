"""Hostile traffic through a real server: signatures, limits, /metrics protection, shutdown."""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import logging
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import bcrypt
import pytest
from aiohttp.test_utils import TestClient

from exporter import signature
from exporter.access import hash_password, parse_basic

from .conftest import ROOT, ClientFactory, in_flight, require_tool, sample, scrape

KEY = "PSK_http_level_secret_91c2"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
PUBLIC = "https://metrics.example.com"


def callback(sid: str = "c1", status: str = "completed") -> dict[str, str]:
    return {"CallSid": sid, "CallStatus": status, "Direction": "inbound", "SequenceNumber": "1"}


def signed_headers(url: str, fields: dict[str, str]) -> dict[str, str]:
    return {**FORM, "X-SignalWire-Signature":
            signature.form_signature(KEY, url, list(fields.items()))}


def callbacks(client: TestClient, outcome: str) -> float:
    return sample(client, "signalwire_exporter_callbacks_total", endpoint="voice",
                  outcome=outcome)


# --- signatures over HTTP ------------------------------------------------------------

async def test_signed_accepted_forged_refused_and_logged_without_key(
        exporter_client: ClientFactory, caplog: pytest.LogCaptureFixture) -> None:
    client = await exporter_client({"signature": {"signing_keys": [KEY]}})
    fields = callback()
    url = str(client.make_url("/callbacks/voice"))
    response = await client.post("/callbacks/voice", data=urlencode(fields),
                                  headers=signed_headers(url, fields))
    assert response.status == 200
    forged = {**fields, "CallStatus": "failed", "CallSid": "c2"}
    with caplog.at_level(logging.DEBUG):
        response = await client.post("/callbacks/voice", data=urlencode(forged),
                                      headers=signed_headers(url, fields))
        unsigned = await client.post("/callbacks/voice", data=urlencode(forged), headers=FORM)
    assert (response.status, unsigned.status) == (403, 403)
    body = await response.json()
    assert "signature" in body["error"] and KEY not in str(body)
    assert callbacks(client, "accepted") == 1
    assert callbacks(client, "unauthorized") == 2
    assert sample(client, "signalwire_calls_total", status="failed", direction="inbound") == 0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all("unauthorized" in str(r.__dict__) for r in warnings)
    assert all(KEY not in str(r.__dict__) for r in caplog.records)


async def test_public_base_url_is_the_url_checked(exporter_client: ClientFactory) -> None:
    client = await exporter_client({"signature": {"signing_keys": [KEY],
                                                  "public_base_url": PUBLIC + "/sw"}})
    fields = callback()
    public = await client.post("/callbacks/voice?t=1", data=urlencode(fields),
                               headers=signed_headers(f"{PUBLIC}/sw/callbacks/voice?t=1", fields))
    local_url = str(client.make_url("/callbacks/voice?t=1"))
    local = await client.post("/callbacks/voice?t=1", data=urlencode(fields),
                              headers=signed_headers(local_url, fields))
    assert (public.status, local.status) == (200, 403)


@pytest.mark.parametrize("trusted", [False, True])
async def test_forwarded_headers_only_when_trusted(exporter_client: ClientFactory,
                                                   trusted: bool) -> None:
    client = await exporter_client({"signature": {
        "signing_keys": [KEY], "trust_forwarded_headers": trusted,
        "allowed_hosts": ["metrics.example.com"] if trusted else []}})
    fields = callback()
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "metrics.example.com"}
    via_proxy = await client.post(
        "/callbacks/voice", data=urlencode(fields),
        headers={**forwarded, **signed_headers(f"{PUBLIC}/callbacks/voice", fields)})
    # A client that forges the headers to match a URL it signed for elsewhere.
    direct = await client.post(
        "/callbacks/voice", data=urlencode(callback("c2")),
        headers={**forwarded, **signed_headers(str(client.make_url("/callbacks/voice")),
                                               callback("c2"))})
    assert (via_proxy.status, direct.status) == ((200, 403) if trusted else (403, 200))


# --- the host a signature is checked against (issue 14) -------------------------------------

def trusting(hosts: list[str]) -> dict[str, Any]:
    return {"signature": {"signing_keys": [KEY], "trust_forwarded_headers": True,
                          "allowed_hosts": hosts}}


async def test_a_client_cannot_choose_the_forwarded_host(exporter_client: ClientFactory) -> None:
    """A signature the same project made for another URL (a webhook at evil.example, say)
    replayed with X-Forwarded-Host naming that URL's host: refused."""
    client = await exporter_client(trusting(["metrics.example.com"]))
    fields = callback()
    evil = await client.post("/callbacks/voice", data=urlencode(fields), headers={
        **signed_headers("https://evil.example/callbacks/voice", fields),
        "X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"})
    assert evil.status == 403
    assert "allowed_hosts" in (await evil.json())["error"]
    assert callbacks(client, "unauthorized") == 1
    assert sample(client, "signalwire_calls_total", status="completed",
                  direction="inbound") == 0
    good = await client.post("/callbacks/voice", data=urlencode(fields), headers={
        **signed_headers(f"{PUBLIC}/callbacks/voice", fields),
        "X-Forwarded-Proto": "https", "X-Forwarded-Host": "metrics.example.com"})
    assert good.status == 200


async def test_the_host_header_is_checked_too(exporter_client: ClientFactory) -> None:
    client = await exporter_client({"signature": {"signing_keys": [KEY],
                                                  "allowed_hosts": ["metrics.example.com"]}})
    fields = callback()
    evil = await client.post("/callbacks/voice", data=urlencode(fields), headers={
        **signed_headers("http://evil.example/callbacks/voice", fields), "Host": "evil.example"})
    good = await client.post("/callbacks/voice", data=urlencode(fields), headers={
        **signed_headers("http://metrics.example.com/callbacks/voice", fields),
        "Host": "metrics.example.com"})
    assert (evil.status, good.status) == (403, 200)


@pytest.mark.parametrize(("allowed", "forwarded", "status"), [
    (["metrics.example.com:8443"], "metrics.example.com:8443", 200),
    (["metrics.example.com:8443"], "metrics.example.com", 403),
    (["metrics.example.com"], "metrics.example.com:8443", 403),
    (["metrics.example.com"], "metrics.example.com:443", 200),
    (["metrics.example.com:443"], "metrics.example.com", 200),
])
async def test_a_public_url_on_another_port(exporter_client: ClientFactory, allowed: list[str],
                                            forwarded: str, status: int) -> None:
    """What nginx forwards with `X-Forwarded-Host $http_host`: the host with its port."""
    client = await exporter_client(trusting(allowed))
    fields = callback()
    url = f"https://{forwarded}/callbacks/voice"
    response = await client.post("/callbacks/voice", data=urlencode(fields), headers={
        **signed_headers(url, fields), "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": forwarded})
    assert response.status == status


def raw_request(port: int, head: bytes, body: bytes = b"") -> bytes:
    """One request as bytes on a fresh connection; the server's whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + body)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks) and b"}" in chunk:
                break
        return b"".join(chunks)


@pytest.mark.parametrize("signing", [False, True])
@pytest.mark.parametrize(("header", "value"), [
    ("Host", b"\xe9vil.example"), ("Host", "\u00e9vil.example".encode()),
    ("X-Forwarded-Host", b"\xff"), ("X-Forwarded-Proto", b"\xffhttps"),
    ("X-SignalWire-Signature", b"\xff\xfe"), ("Content-Type", b"\xe9/x"),
])
def test_a_non_ascii_header_gets_a_counted_4xx(exporter_process: Any, signing: bool,
                                               header: str, value: bytes) -> None:
    config = ("signature:\n  signing_keys: [k]\n  trust_forwarded_headers: true\n"
              "  allowed_hosts: [metrics.example.com]\n" if signing else "")
    exporter = exporter_process(config)
    body = b"CallSid=c1&CallStatus=completed"
    headers = {"Host": b"metrics.example.com", "X-SignalWire-Signature": b"abc",
               "Content-Type": b"application/x-www-form-urlencoded", header: value}
    head = b"POST /callbacks/voice HTTP/1.1\r\n" + b"".join(
        name.encode() + b": " + v + b"\r\n" for name, v in headers.items()) + (
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
    answer = raw_request(exporter.port, head, body)
    status = int(answer.split(b" ")[1])
    assert status == 200 or 400 <= status < 500, answer
    if status != 200:
        assert b'{"error": ' in answer
    assert http_status(f"{exporter.url}/healthz") == 200
    with urllib.request.urlopen(f"{exporter.url}/metrics", timeout=5) as response:
        metrics = response.read().decode()
    outcome = {200: "accepted", 400: "invalid", 403: "unauthorized", 415: "unsupported"}[status]
    assert (f'signalwire_exporter_callbacks_total{{endpoint="voice",outcome="{outcome}"}} 1.0'
            in metrics)
    assert "Traceback" not in exporter.log()


# --- limits, with a raw socket where the client must misbehave --------------------------

async def partial_post(client: TestClient, content_length: int, sent: bytes) -> bytes:
    """Announce ``content_length`` bytes, send only ``sent``, return the server's answer."""
    head = (b"POST /callbacks/voice HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: %d\r\n\r\n" % content_length)
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(head + sent)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), 10)
    finally:
        writer.close()


async def test_large_content_length_refused_without_reading_the_body(
        exporter_client: ClientFactory) -> None:
    client = await exporter_client({"limits": {"max_body_bytes": 1024}})
    # The answer comes although 99.99 MB are never sent.
    answer = await partial_post(client, 100_000_000, b"CallSid=c1")
    assert answer.startswith(b"HTTP/1.1 413")
    assert b'"error"' in answer
    assert callbacks(client, "too_large") == 1


async def test_stalled_body_times_out(exporter_client: ClientFactory) -> None:
    client = await exporter_client({"limits": {"read_timeout_seconds": 0.3}})
    answer = await partial_post(client, 200, b"CallSid=c1")
    assert answer.startswith(b"HTTP/1.1 408")
    assert callbacks(client, "timeout") == 1


@pytest.mark.parametrize(("body", "named"), [
    ("&".join(f"f{i}=v" for i in range(300)), "too many fields"),
    (urlencode({"CallSid": "c1", "CallStatus": "ringing", "Note": "x" * 5000}), "longer than"),
    (urlencode({"CallSid": "c1", "CallStatus": "ringing", "N" * 5000: "x"}), "longer than"),
])
async def test_field_caps(client: TestClient, body: str, named: str) -> None:
    response = await client.post("/callbacks/voice", data=body, headers=FORM)
    assert response.status == 400
    assert named in (await response.json())["error"]
    assert callbacks(client, "invalid") == 1


async def test_unsupported_content_type(client: TestClient) -> None:
    response = await client.post("/callbacks/voice", data=b"CallSid=c1",
                                 headers={"Content-Type": "text/plain"})
    assert response.status == 415
    assert "multipart/form-data" in (await response.json())["error"]
    assert callbacks(client, "unsupported") == 1


def http_status(url: str, **kwargs: Any) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5, **kwargs) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_slow_or_idle_connections_are_closed_and_headers_capped(exporter_process: Any) -> None:
    exporter = exporter_process("limits:\n  keepalive_timeout_seconds: 0.5\n")
    port = exporter.port
    with socket.create_connection(("127.0.0.1", port), timeout=10) as idle, \
            socket.create_connection(("127.0.0.1", port), timeout=10) as dripping:
        dripping.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        # Both are closed by the server: recv returns b"" long before the socket timeout.
        assert idle.recv(1024) == b""
        assert dripping.recv(1024) == b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as big:
        big.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
        answer = big.recv(1024)
        assert answer.split(b" ")[1] in (b"400", b"431")
        assert b"application/json" in answer
    assert http_status(f"{exporter.url}/healthz") == 200  # still serving
    assert exporter.stop() == 0


# --- malformed HTTP: aiohttp refuses it before any route, as JSON and counted (issue 14) ----

MALFORMED = [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: v\r\n\r\n", 400),
    (b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", None),
    (b"POST /callbacks/voice HTTP/1.1\r\nHost: x\r\nContent-Encoding: br\r\n"
     b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 4\r\n\r\nabcd", 415),
    (b"POST /callbacks/voice HTTP/1.1\r\nHost: x\r\nContent-Encoding: zstd\r\n"
     b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 4\r\n\r\nabcd", 415),
]


def test_malformed_http_is_a_counted_json_refusal(exporter_process: Any) -> None:
    exporter = exporter_process()
    statuses = []
    for raw, expected in MALFORMED:
        answer = raw_request(exporter.port, raw)
        head, _, body = answer.partition(b"\r\n\r\n")
        status = int(head.split(b" ")[1])
        assert status == expected or (expected is None and status in (400, 431)), answer
        assert b"application/json" in head, answer
        assert "error" in json.loads(body)
        assert b"Please install" not in body and b"Traceback" not in body
        statuses.append(status)
    with urllib.request.urlopen(f"{exporter.url}/metrics", timeout=5) as response:
        metrics = response.read().decode()
    for status in set(statuses):
        assert (f'signalwire_exporter_http_errors_total{{status="{status}"}} '
                f"{float(statuses.count(status))}") in metrics
    assert "Traceback" not in exporter.log()
    assert exporter.stop() == 0


@pytest.mark.parametrize("chunk", [10, 1000, 65536])
def test_a_chunked_gzip_body_inflating_past_the_limit_is_413(exporter_process: Any,
                                                             chunk: int) -> None:
    import gzip
    import http.client

    exporter = exporter_process("limits:\n  max_body_bytes: 4096\n")
    body = gzip.compress(b"CallSid=c1&CallStatus=completed&X=" + b"\0" * 2_000_000)
    conn = http.client.HTTPConnection("127.0.0.1", exporter.port, timeout=10)
    try:
        conn.request("POST", "/callbacks/voice",
                     body=iter([body[i:i + chunk] for i in range(0, len(body), chunk)]),
                     headers={**FORM, "Content-Encoding": "gzip"}, encode_chunked=True)
        response = conn.getresponse()
        assert response.status == 413
        assert "error" in json.loads(response.read())
    finally:
        conn.close()


# --- labels stay bounded -------------------------------------------------------------------

HOSTILE = ["+15551234567", "sip:alice@evil.example", "Robert'); DROP TABLE calls;--",
           "<script>alert(1)</script>", "\u202egnirts", "a" * 200, "${jndi:ldap://x}"]


async def test_scrape_after_hostile_traffic_has_no_sids_numbers_or_text(
        client: TestClient) -> None:
    async def storm(round_: int) -> None:
        for i, hostile in enumerate(HOSTILE):
            text = f"{hostile}{round_}"  # new values each round, same label sets expected
            fields = {"CallSid": f"SID-{round_}-{i}-{text}", "CallStatus": text,
                      "Direction": text, "From": text, "To": text, "CallerName": text,
                      "SipResultCode": ("499", "486", "1000", "abc")[i % 4],
                      "SipInviteResultPhrase": text, "SequenceNumber": str(i),
                      "AudioInMos": "4.0", "CallDuration": "7"}
            for endpoint in ("voice", "inbound"):
                await client.post(f"/callbacks/{endpoint}", data=urlencode(fields),
                                  headers=FORM)
                await client.post(f"/callbacks/{endpoint}", json={**fields, "X": {"y": text}})
            await client.post(f"/callbacks/{text[:20]}", data=b"x")

    await storm(0)
    first = await scrape(client)
    await storm(1)
    await storm(2)
    second = await scrape(client)
    assert set(first) == set(second), "series grew with the number of distinct inputs"
    text = await (await client.get("/metrics")).text()
    for token in ("SID-", "5551234567", "alice", "DROP", "alert(1)", "gnirts", "aaaa", "jndi"):
        assert token not in text, token
    # SIP 1000/abc: the field is skipped (as form and as JSON), the callback accepted
    assert sample(client, "signalwire_call_status_events_total",
                  status="unknown", direction="unknown") == 3 * len(HOSTILE)
    assert sample(client, "signalwire_exporter_invalid_fields_total", endpoint="voice",
                  field="SipResultCode") == 3 * 3 * 2
    assert sample(client, "signalwire_exporter_callbacks_total", endpoint="voice",
                  outcome="invalid") == 0
    assert sample(client, "signalwire_exporter_callbacks_total", endpoint="voice",
                  outcome="duplicate") == 3 * len(HOSTILE)  # the JSON copy (X.y flattened)


# --- /metrics protection ----------------------------------------------------------------

PASSWORD = "correct horse battery staple"


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture
async def guarded(exporter_client: ClientFactory) -> TestClient:
    return await exporter_client({"web": {"basic_auth_users": {
        "prometheus": hash_password(PASSWORD, rounds=4)}}})


@pytest.mark.parametrize("headers", [
    {},
    basic("prometheus", "wrong"),
    basic("somebody", PASSWORD),
    basic("prometheus", PASSWORD + "x"),
    {"Authorization": "Basic !!!not-base64"},
    {"Authorization": "Bearer " + PASSWORD},
    {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
])
async def test_metrics_refused_without_the_right_credentials(
        guarded: TestClient, headers: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        response = await guarded.get("/metrics", headers=headers)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic realm=")
    body = await response.text()
    assert "error" in body and "signalwire_" not in body and PASSWORD not in body
    assert all(PASSWORD not in r.getMessage() for r in caplog.records)


async def test_metrics_served_with_the_right_credentials(guarded: TestClient) -> None:
    for _ in range(3):  # later requests hit the cache of proven credentials
        response = await guarded.get("/metrics", headers=basic("prometheus", PASSWORD))
        assert response.status == 200
        assert "signalwire_exporter_callbacks_total" in await response.text()


async def test_failed_calls_report_is_protected_too(guarded: TestClient) -> None:
    """It lists phone numbers, so it sits behind the same credentials as /metrics."""
    assert (await guarded.get("/reports/failed-calls")).status == 401
    response = await guarded.get("/reports/failed-calls?format=json",
                                 headers=basic("prometheus", PASSWORD))
    assert response.status == 200


async def test_callbacks_and_healthz_stay_open(guarded: TestClient) -> None:
    assert (await guarded.get("/healthz")).status == 200
    response = await guarded.post("/callbacks/voice", data=urlencode(callback()), headers=FORM)
    assert response.status == 200


def test_parse_basic_handles_colons_in_passwords() -> None:
    token = base64.b64encode(b"user:pa:ss").decode()
    assert parse_basic(f"basic {token}") == ("user", "pa:ss")


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_https_scrape_with_basic_auth(exporter_process: Any, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    config = (f"signature:\n  signing_keys: ['{KEY}']\n"
              f"web:\n  tls_cert_file: {cert}\n  tls_key_file: {key}\n"
              f"  basic_auth_users:\n    prometheus: '{hash_password(PASSWORD, rounds=4)}'\n")
    exporter = exporter_process(config, scheme="https")
    trust = ssl.create_default_context(cafile=str(cert))
    trust.check_hostname = False  # the certificate names 127.0.0.1 as CN only
    request = urllib.request.Request(f"{exporter.url}/metrics",
                                     headers=basic("prometheus", PASSWORD))
    with urllib.request.urlopen(request, timeout=5, context=trust) as response:
        assert response.status == 200
        scraped = response.read()
    assert b"signalwire_calls_total" in scraped
    assert b"signalwire_exporter_http_requests_in_flight 1.0" in scraped
    lint = subprocess.run([require_tool("promtool"), "check", "metrics"], input=scraped,
                          capture_output=True, timeout=30)
    assert (lint.returncode, lint.stdout + lint.stderr) == (0, b"")
    assert http_status(f"{exporter.url}/metrics", context=trust) == 401
    with pytest.raises((urllib.error.URLError, ConnectionError)):  # plain HTTP, TLS port
        urllib.request.urlopen(f"http://127.0.0.1:{exporter.port}/healthz", timeout=5)
    assert exporter.stop() == 0
    log = exporter.log()
    assert PASSWORD not in log and KEY not in log
    assert "signature checking is OFF" not in log  # keys are set


def test_hash_password_command_and_check_config(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "exporter", "hash-password"],
                            input=PASSWORD + "\n", capture_output=True, text=True,
                            timeout=30, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    hashed = result.stdout.strip()
    assert bcrypt.checkpw(PASSWORD.encode(), hashed.encode())
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(f"web:\n  basic_auth_users:\n    prometheus: '{hashed}'\n")
    bad.write_text(f"web:\n  basic_auth_users:\n    prometheus: '{PASSWORD}'\n"
                   f"  tls_cert_file: {tmp_path / 'absent.pem'}\n")
    check = [sys.executable, "-m", "exporter", "check-config", "--config"]
    assert subprocess.run([*check, str(good)], capture_output=True, timeout=30,
                          cwd=ROOT).returncode == 0
    result = subprocess.run([*check, str(bad)], capture_output=True, text=True, timeout=30,
                            cwd=ROOT)
    assert result.returncode == 1
    assert "web.basic_auth_users" in result.stderr and "web.tls_cert_file" in result.stderr
    assert PASSWORD not in result.stderr


# --- graceful shutdown --------------------------------------------------------------------

def test_sigterm_lets_an_in_flight_callback_finish_and_count(exporter_process: Any) -> None:
    exporter = exporter_process("logging:\n  format: json\n")
    body = urlencode(callback("in-flight-1")).encode()
    with socket.create_connection(("127.0.0.1", exporter.port), timeout=15) as sock:
        sock.sendall(b"POST /callbacks/voice HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/x-www-form-urlencoded\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:10])
        for _ in range(100):  # until the handler waits for the rest of the body
            if in_flight(exporter.url) == 2:  # that request and this scrape
                break
            time.sleep(0.05)
        exporter.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert exporter.proc.poll() is None, "exited with a request in flight"
        sock.sendall(body[10:])
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 200")
    # The memory backend keeps serving /metrics until a scrape has seen that callback.
    with urllib.request.urlopen(f"{exporter.url}/metrics", timeout=5) as response:
        assert (b'signalwire_calls_total{direction="inbound",status="completed"} 1.0'
                in response.read())
    assert exporter.stop() == 0
    log = exporter.log()
    assert '"call_sid": "in-flight-1"' in log and '"outcome": "accepted"' in log
