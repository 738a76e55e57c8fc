"""Verify: is this request really from the provider? Pure functions, no I/O.

Schemes accepted (reference §3), for every configured Signing Key (rotation):
- form / GET: base64 HMAC-SHA1 over URL + each field's name and value, sorted by
  name, in ``X-SignalWire-Signature`` (or the legacy ``X-Twilio-Signature``);
- JSON with ``bodySHA256`` in the query: the same over the URL alone, plus the
  SHA-256 of the raw body matching that parameter;
- SignalWire JSON: hex HMAC-SHA1 (``X-SignalWire-Signature``) or hex HMAC-SHA256
  (``X-SignalWire-Sha256-Signature``) over URL + raw body.
The URL is tried with and without its port (the scheme's default port added when
it has none), as the official validators do. Every comparison is constant-time and exact.
tests/vectors/signature_vectors.json holds the verdicts of the official SDKs on
the same requests; docs/security.md lists where, and why, this module differs.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import itertools
import operator
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from urllib.parse import parse_qsl, urlsplit

SIGNATURE_HEADER = "X-SignalWire-Signature"
LEGACY_HEADER = "X-Twilio-Signature"
SHA256_HEADER = "X-SignalWire-Sha256-Signature"

_DEFAULT_PORTS = {"http": "80", "https": "443"}


def request_url(*, path_qs: str, scheme: str, host: str, public_base_url: str | None,
                trust_forwarded_headers: bool, forwarded_proto: str | None,
                forwarded_host: str | None) -> str:
    """The URL the provider called, which is what it signed.

    ``public_base_url`` (scheme + host [+ path prefix]) wins; forwarded headers are
    believed only when the operator says the proxy in front sets them.
    """
    if public_base_url:
        return public_base_url.rstrip("/") + path_qs
    if trust_forwarded_headers:
        # A proxy chain appends: the first value is the one the client used.
        if forwarded_proto:
            scheme = forwarded_proto.split(",")[0].strip() or scheme
        if forwarded_host:
            host = forwarded_host.split(",")[0].strip() or host
    return f"{scheme}://{host}{path_qs}"


def _split(url: str) -> tuple[str, str, str] | None:
    """(scheme, netloc, the rest) of an http(s) URL; None for anything else."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in _DEFAULT_PORTS:
        return None
    cut = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0),
              default=len(rest))
    return scheme, rest[:cut], rest[cut:]


def _port(hostport: str) -> tuple[str, str]:
    """(host, port) of ``host[:port]``; port "" when none ("[::1]" has none)."""
    host, colon, port = hostport.rpartition(":")
    if colon and host and port.isdigit():
        return host, port
    return hostport, ""


def url_variants(url: str) -> list[str]:
    """``url`` as given, plus the one other spelling the official validators accept.

    With a port (default or not) the URL without it; without one, the URL with the
    scheme's default port. The twilio (6.x, 9.x) and signalwire 2.x validators do the
    same: the key still has to sign one of the two, so this widens nothing an attacker
    could use.
    """
    parts = _split(url)
    if parts is None:
        return [url]
    scheme, netloc, tail = parts
    userinfo, at, hostport = netloc.rpartition("@")
    prefix = userinfo + at
    host, port = _port(hostport)
    if port:
        return [url, f"{scheme}://{prefix}{host}{tail}"]
    return [url, f"{scheme}://{prefix}{hostport}:{_DEFAULT_PORTS[scheme.lower()]}{tail}"]


def host_allowed(url: str, allowed: Collection[str]) -> bool:
    """Is the URL's ``host[:port]`` one of ``allowed`` (lower-case), the default port optional?"""
    parts = _split(url)
    if parts is None:
        return False
    scheme, netloc, _ = parts
    netloc = netloc.rpartition("@")[2].lower()
    if netloc in allowed:
        return True
    default = _DEFAULT_PORTS[scheme.lower()]
    host, port = _port(netloc)
    if port:
        return port == default and host in allowed
    return f"{netloc}:{default}" in allowed


@functools.lru_cache(maxsize=64)
def _keyed(key: str, digest: str) -> hmac.HMAC:
    """The HMAC state after the key, set up once per key: each request copies it."""
    return hmac.new(key.encode("utf-8"), digestmod=digest)


def _mac(key: str, message: bytes, digest: str) -> hmac.HMAC:
    mac = _keyed(key, digest).copy()
    mac.update(message)
    return mac


def _candidates(url: str) -> Iterator[str]:
    """``url_variants``, the default-port spelling built only if the first one fails."""
    yield url
    yield from url_variants(url)[1:]


_NAME = operator.itemgetter(0)


def form_payload(url: str, pairs: Iterable[tuple[str, str]], *, sort_values: bool = False) -> str:
    """URL + name/value of each field, sorted by name (code-point order).

    Repeated names keep their body order (signalwire-sdk) or, with ``sort_values``,
    are sorted and de-duplicated (twilio 9.x); both readings are tried.
    """
    items = sorted(set(pairs)) if sort_values else sorted(pairs, key=_NAME)
    return url + "".join(itertools.chain.from_iterable(items))


def form_signature(key: str, url: str, pairs: Iterable[tuple[str, str]] = (), *,
                   sort_values: bool = False) -> str:
    """Base64 HMAC-SHA1, as sent in X-SignalWire-Signature for form callbacks."""
    message = form_payload(url, pairs, sort_values=sort_values)
    return base64.b64encode(_mac(key, message.encode("utf-8"), "sha1").digest()).decode("ascii")


def body_signature(key: str, url: str, body: bytes, digest: str = "sha1") -> str:
    """Hex HMAC over URL + raw body: SignalWire's JSON scheme (sha1 or sha256)."""
    return _mac(key, url.encode("utf-8") + body, digest).hexdigest()


def _equal(expected: str, given: str) -> bool:
    """Constant-time and exact, as in every SDK (no case folding of hex digests)."""
    return hmac.compare_digest(expected.encode("ascii"), given.encode("utf-8", "replace"))


def _body_hash_ok(url: str, body: bytes) -> bool:
    query = urlsplit(url).query
    claimed = [v for k, v in parse_qsl(query, keep_blank_values=True) if k == "bodySHA256"]
    return len(claimed) == 1 and _equal(hashlib.sha256(body).hexdigest(), claimed[0])


def verify(keys: Sequence[str], url: str, headers: Mapping[str, str], *,
           body: bytes = b"", form_pairs: Sequence[tuple[str, str]] | None = None) -> bool:
    """True if any key signs this request under any accepted scheme.

    ``form_pairs`` are the decoded fields of a form body (None for JSON, multipart
    or GET, whose fields are not part of the form-scheme string).
    """
    primary = headers.get(SIGNATURE_HEADER) or headers.get(LEGACY_HEADER) or ""
    sha256 = headers.get(SHA256_HEADER) or ""
    if not keys or not (primary or sha256):
        return False
    for candidate in _candidates(url):
        for key in keys:
            if _signs(key, candidate, primary, sha256, body, form_pairs):
                return True
    return False


def _signs(key: str, url: str, primary: str, sha256: str, body: bytes,
           form_pairs: Sequence[tuple[str, str]] | None) -> bool:
    """Does ``key`` sign this request for this one spelling of its URL?"""
    if sha256 and _equal(body_signature(key, url, body, "sha256"), sha256):
        return True
    if not primary:
        return False
    if len(primary) == 40 and _equal(body_signature(key, url, body), primary):
        return True
    if form_pairs:
        if _equal(form_signature(key, url, form_pairs), primary):
            return True
        # Repeated names: signalwire-sdk keeps body order (above), twilio 9 sorts the values.
        if len(dict(form_pairs)) < len(form_pairs) and _equal(
                form_signature(key, url, form_pairs, sort_values=True), primary):
            return True
    # URL-only signature: GET mode (no body), or a body vouched for by bodySHA256.
    # Never for any other body: that would leave its fields unsigned (reference 3.4).
    return _equal(form_signature(key, url), primary) and (not body or _body_hash_ok(url, body))
