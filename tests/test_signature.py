"""Signature checks against the official SDKs' own verdicts.

tests/vectors/signature_vectors.json was made by tests/vectors/make_signature_vectors.py:
each request was signed by an official SDK (twilio, signalwire, signalwire-sdk) and
validated by all of them. Every vector is checked twice: against the pure ``verify``
and through a real server on loopback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from multidict import CIMultiDict
from yarl import URL

from exporter import signature
from exporter.payloads import FORM

from .conftest import ClientFactory, sample

VECTORS = json.loads((Path(__file__).parent / "vectors" / "signature_vectors.json").read_text())
KEY: str = VECTORS["key"]
IDS = [v["name"] for v in VECTORS["vectors"]]


def form_pairs(vector: dict[str, Any]) -> list[tuple[str, str]] | None:
    """What verify.read_fields hands ``signature.verify``: decoded pairs for a form body only."""
    if vector["method"] == "GET" or vector["content_type"] != FORM:
        return None
    return parse_qsl(vector["body"], keep_blank_values=True)


def test_vectors_cover_the_brief() -> None:
    names = " ".join(IDS)
    for topic in ("repeated", "unicode", "%20", "empty values", "query string", ":443",
                  "non-default port", "non-default port dropped", "another non-default port",
                  "bodySHA256", "hex sha1", "hex sha256", "get:",
                  "another endpoint", "another project's key", "truncated",
                  "bare-URL signature", "/callbacks/calling", "/callbacks/10dlc",
                  "JSON message status callback"):
        assert topic in names, topic


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=IDS)
def test_official_sdks_agree_except_where_documented(vector: dict[str, Any]) -> None:
    verdicts = {sdk: v for sdk, v in vector["sdk"].items() if v is not None}
    assert verdicts, "at least one SDK judged this request"
    for sdk, verdict in verdicts.items():
        if sdk not in vector["differs"]:
            assert verdict == vector["expected"], sdk
    for sdk in vector["differs"]:  # a documented difference must still be real
        assert verdicts.get(sdk, vector["expected"]) != vector["expected"] \
            or vector["sdk"][sdk] is None, sdk


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=IDS)
def test_verify_matches_vector(vector: dict[str, Any]) -> None:
    headers = CIMultiDict({vector["header"]: vector["signature"]})
    ok = signature.verify([KEY], vector["url"], headers, body=vector["body"].encode(),
                          form_pairs=form_pairs(vector))
    assert ok is vector["expected"]


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=IDS)
async def test_vector_through_a_real_server(exporter_client: ClientFactory,
                                            vector: dict[str, Any]) -> None:
    """The whole request path, the public URL told by trusted forwarded headers."""
    client = await exporter_client({"signature": {
        "signing_keys": [KEY], "trust_forwarded_headers": True,
        "allowed_hosts": ["metrics.example.com", "metrics.example.com:8443"]}})
    parts = urlsplit(vector["url"])
    headers = {vector["header"]: vector["signature"], "X-Forwarded-Proto": parts.scheme,
               "X-Forwarded-Host": parts.netloc}
    if vector["content_type"]:
        headers["Content-Type"] = vector["content_type"]
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    response = await client.request(vector["method"], URL(path, encoded=True),
                                    data=vector["body"].encode(), headers=headers)
    endpoint = parts.path.rpartition("/")[2]  # voice, or calling, messaging, 10dlc (JSON)
    unauthorized = sample(client, "signalwire_exporter_callbacks_total", endpoint=endpoint,
                          outcome="unauthorized")
    if vector["expected"]:
        assert response.status in (200, 400), await response.text()  # 400: no CallSid
        assert unauthorized == 0
    else:
        assert response.status == 403
        assert unauthorized == 1


def test_any_configured_key_is_accepted_during_rotation() -> None:
    url = "https://metrics.example.com/callbacks/voice"
    pairs = [("CallSid", "c1"), ("CallStatus", "ringing")]
    sig = signature.form_signature("new-key", url, pairs)
    headers = {signature.SIGNATURE_HEADER: sig}
    assert signature.verify(["old-key", "new-key"], url, headers, form_pairs=pairs)
    assert not signature.verify(["old-key"], url, headers, form_pairs=pairs)
    assert not signature.verify([], url, headers, form_pairs=pairs)


@pytest.mark.parametrize(("url", "variants"), [
    ("https://h/p", ["https://h/p", "https://h:443/p"]),
    ("https://h:443/p?q=1", ["https://h:443/p?q=1", "https://h/p?q=1"]),
    ("http://h:80", ["http://h:80", "http://h"]),
    ("https://h:8443/p", ["https://h:8443/p", "https://h/p"]),  # as twilio and signalwire 2.x
    ("http://u@h:8080/p?q", ["http://u@h:8080/p?q", "http://u@h/p?q"]),
    ("https://[::1]/p", ["https://[::1]/p", "https://[::1]:443/p"]),
    ("https://[::1]:443/p", ["https://[::1]:443/p", "https://[::1]/p"]),
    ("ftp://h/p", ["ftp://h/p"]),
])
def test_url_variants(url: str, variants: list[str]) -> None:
    assert signature.url_variants(url) == variants


@pytest.mark.parametrize(("url", "allowed"), [
    ("https://metrics.example.com/p", True),
    ("https://METRICS.example.com:443/p", True),
    ("http://metrics.example.com:80", True),
    ("https://metrics.example.com:8443/p", True),
    ("https://metrics.example.com:9443/p", False),
    ("https://evil.example/p", False),
    ("https://metrics.example.com.evil.example/p", False),
    ("https://u@evil.example/p", False),
    ("ftp://metrics.example.com/p", False),
    ("\udcff://metrics.example.com/p", False),
])
def test_host_allowed(url: str, allowed: bool) -> None:
    assert signature.host_allowed(url, ("metrics.example.com", "metrics.example.com:8443")) \
        is allowed


def test_request_url_prefers_public_base_then_trusted_forwarded_headers() -> None:
    common = {"path_qs": "/callbacks/voice?a=1", "scheme": "http", "host": "127.0.0.1:9880",
              "forwarded_proto": "https, http", "forwarded_host": "edge.example.com, proxy"}
    assert signature.request_url(public_base_url="https://m.example.com/sw/",
                                 trust_forwarded_headers=True, **common) \
        == "https://m.example.com/sw/callbacks/voice?a=1"
    assert signature.request_url(public_base_url=None, trust_forwarded_headers=True,
                                 **common) == "https://edge.example.com/callbacks/voice?a=1"
    assert signature.request_url(public_base_url=None, trust_forwarded_headers=False,
                                 **common) == "http://127.0.0.1:9880/callbacks/voice?a=1"
