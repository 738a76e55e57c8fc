"""Who may read: basic auth and TLS for the read endpoints (the ``web:`` config).

Modelled on the Prometheus exporter-toolkit web config, so the same bcrypt hashes
(``htpasswd -nBC 10``) work here. Callback endpoints are not behind it: the
provider cannot send credentials, it proves itself with signatures instead.

bcrypt is slow on purpose (~0.1 s per check at cost 10), so a check runs in a
worker thread, one at a time (a flood of wrong passwords costs one core, not the
event loop), and a successful (user, password) pair is remembered by its SHA-256,
as exporter-toolkit does, so a scrape every few seconds stays cheap.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import ssl
from collections.abc import Awaitable, Callable

import bcrypt
from aiohttp import web

from .config import WebConfig

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

REALM = 'Basic realm="signalwire-exporter", charset="UTF-8"'


def hash_password(password: str, rounds: int = 10) -> str:
    """A bcrypt hash for ``web.basic_auth_users``."""
    return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(rounds)).decode("ascii")


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """(user, password) from an ``Authorization: Basic`` header, None if absent or malformed."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def _check(hashed: bytes, password: str) -> bool:
    try:
        return bcrypt.checkpw(password.encode("utf-8"), hashed)
    except ValueError:  # e.g. over bcrypt's 72-byte limit: never a valid password
        return False


class BasicAuth:
    """The configured users, and a cache of the credentials already proven right."""

    def __init__(self, users: tuple[tuple[str, str], ...]) -> None:
        self._users = {name: hashed.encode("ascii") for name, hashed in users}
        # Checked when the user name is unknown, at the same cost as a real hash, so a
        # wrong name takes as long as a wrong password.
        cost = int(users[0][1].split("$")[2]) if users else 4
        self._dummy = bcrypt.hashpw(b"not a password", bcrypt.gensalt(cost))
        self._proven: set[bytes] = set()
        self._lock = asyncio.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self._users)

    async def allows(self, header: str | None) -> bool:
        credentials = parse_basic(header)
        if credentials is None:
            return False
        user, password = credentials
        hashed = None
        for name, candidate in self._users.items():  # no early exit: same time for any name
            if hmac.compare_digest(name.encode(), user.encode()):
                hashed = candidate
        fingerprint = hashlib.sha256(
            b"\0".join((user.encode(), password.encode(), hashed or b""))).digest()
        if hashed is not None and fingerprint in self._proven:
            return True
        async with self._lock:
            ok = await asyncio.to_thread(_check, hashed or self._dummy, password)
        if ok and hashed is not None:
            if len(self._proven) > 1000:  # bounded, however many passwords are tried
                self._proven.clear()
            self._proven.add(fingerprint)
            return True
        return False


BASIC_AUTH = web.AppKey("basic_auth", BasicAuth)


def protected(handler: Handler) -> Handler:
    """Wrap a read endpoint so it needs the configured basic-auth credentials, if any."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        auth = request.app[BASIC_AUTH]
        if auth.enabled and not await auth.allows(request.headers.get("Authorization")):
            return web.json_response({"error": "authentication required"}, status=401,
                                     headers={"WWW-Authenticate": REALM})
        return await handler(request)

    return guarded


def tls_context(web_config: WebConfig) -> ssl.SSLContext | None:
    """Server TLS context from ``web.tls_cert_file``/``tls_key_file``; None means plain HTTP."""
    if not web_config.tls_cert_file or not web_config.tls_key_file:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(web_config.tls_cert_file, web_config.tls_key_file)
    return context
