"""Verify: read one request within its limits and check its signature.

The aiohttp-facing half of the verify stage (``signature`` holds the pure checks):
the body is refused as soon as it is known to be too large or too slow, decoded
into pairs (the form signature is computed over them), checked, and only then
handed on as fields. Every refusal is a ``Rejected`` carrying its 4xx.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from . import signature
from .config import Config, LimitsConfig
from .errors import Rejected
from .payloads import FORM, collect_fields, decode_pairs, decode_query


def _too_large(limits: LimitsConfig) -> Rejected:
    return Rejected(413, "too_large", f"body larger than {limits.max_body_bytes} bytes")


async def read_body(request: web.Request, limits: LimitsConfig) -> bytes:
    """The raw body, refused with 413 as soon as it is known to be too large.

    Content-Length is checked before reading anything; a chunked body is cut off
    at the limit. A client that stalls gets 408 after the read timeout.
    """
    if request.content_length is not None and request.content_length > limits.max_body_bytes:
        raise _too_large(limits)
    try:
        return await _read_body(request, limits)
    except RequestPayloadError:  # e.g. Content-Encoding: gzip over bytes that are not gzip
        raise Rejected(400, "invalid", "body does not decode as its Content-Encoding") from None


async def _read_body(request: web.Request, limits: LimitsConfig) -> bytes:
    if request.content.is_eof():
        # The usual callback: the whole body came with the headers, so there is nothing
        # to wait for and no timeout to arm (that costs more than the read itself).
        body = request.content.read_nowait()
        if len(body) > limits.max_body_bytes:
            raise _too_large(limits)
        return body
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(limits.read_timeout_seconds):
            while chunk := await request.content.readany():
                size += len(chunk)
                if size > limits.max_body_bytes:
                    raise _too_large(limits)
                chunks.append(chunk)
    except TimeoutError:
        raise Rejected(408, "timeout", "timed out reading the request body") from None
    return b"".join(chunks)


def check_signature(request: web.Request, config: Config, body: bytes,
                    form_pairs: list[tuple[str, str]] | None) -> None:
    """403 unless the request carries a valid signature (when signing keys are set).

    Without ``public_base_url`` the host comes from the request (Host, or X-Forwarded-Host
    when trusted), which the client chooses: with ``allowed_hosts`` set, any other host is
    refused, so a signature captured for another URL of the same project cannot be replayed.
    """
    sig = config.signature
    if not sig.signing_keys:
        return
    url = signature.request_url(
        path_qs=request.raw_path, scheme=request.scheme, host=request.host,
        public_base_url=sig.public_base_url,
        trust_forwarded_headers=sig.trust_forwarded_headers,
        forwarded_proto=request.headers.get("X-Forwarded-Proto"),
        forwarded_host=request.headers.get("X-Forwarded-Host"))
    if not url.isascii():
        try:  # aiohttp keeps bytes that are not UTF-8 as lone surrogates
            url.encode("utf-8")
        except UnicodeEncodeError:
            raise Rejected(400, "invalid", "the request URL or a Host, X-Forwarded-Host or "
                                           "X-Forwarded-Proto header is not valid UTF-8") from None
    if (sig.allowed_hosts and not sig.public_base_url
            and not signature.host_allowed(url, sig.allowed_hosts)):
        raise Rejected(403, "unauthorized",
                       "host not allowed: it is not one of signature.allowed_hosts")
    if not signature.verify(sig.signing_keys, url, request.headers,
                            body=body, form_pairs=form_pairs):
        raise Rejected(403, "unauthorized", "missing or invalid request signature")


async def read_fields(request: web.Request, config: Config) -> dict[str, str]:
    """Verified, decoded fields of one callback request (body, or query in GET mode)."""
    limits = config.limits
    if request.method == "GET":
        body = b""
        query = request.rel_url.raw_query_string
        pairs = decode_query(query, max_fields=limits.max_fields)
        form_pairs = None
        source_length: int | None = len(query)
    else:
        body = await read_body(request, limits)
        raw_type = request.headers.get("Content-Type", "")
        # The usual callback's header is exactly FORM: nothing to parse (request.content_type
        # costs more than the comparison).
        content_type = ("" if not (body or request.content_length)
                        else FORM if raw_type == FORM else request.content_type)
        pairs = decode_pairs(content_type, body, max_fields=limits.max_fields,
                             raw_content_type=raw_type)
        form_pairs = pairs if content_type in (FORM, "") else None
        source_length = len(body) if form_pairs is not None else None
    check_signature(request, config, body, form_pairs)
    return collect_fields(pairs, max_fields=limits.max_fields,
                          max_field_length=limits.max_field_length,
                          source_length=source_length)
