"""A stand-in for SignalWire's REST API (Messages and Calls), on 127.0.0.1, for tests.

It is the one thing this machine cannot reach, so it is mocked, and as a real HTTP
server: it checks the path, the basic auth and the form fields the way the real
API would refuse them, records each accepted message, and answers from a script
(e.g. two 500s, then 201) so retries and give-ups can be driven. It runs its own
event loop in a thread so both async tests and blocking end-to-end tests can use it.

The Calls API (reconciliation and prices) serves ``calls``, which a test may change
while the exporter runs: ``GET Calls/{sid}.json`` and the paged ``GET Calls.json``
(newest first, ``Status`` and ``EndTime>`` filters, ``PageSize``/``Page``,
``next_page_uri``), answering from its own ``calls_script`` (then 200).
"""

from __future__ import annotations

import asyncio
import base64
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp import web

from .conftest import free_port

PROJECT = "7d2b7c3e-1111-4222-8333-944455556666"
TOKEN = "PTsecret-api-token-0123456789"
FROM = "+15550001111"

HANG = -1  # scripted answer: never reply (until the server stops)


@dataclass
class FakeSignalWire:
    project_id: str = PROJECT
    api_token: str = TOKEN
    script: list[int] = field(default_factory=list)  # answers in order, then 201 forever
    messages: list[dict[str, str]] = field(default_factory=list)
    requests: int = 0
    refused: list[str] = field(default_factory=list)  # why requests were refused
    calls: dict[str, dict[str, Any]] = field(default_factory=dict)  # sid → call resource
    calls_script: list[int] = field(default_factory=list)  # Calls API answers, then 200
    call_lookups: list[str] = field(default_factory=list)  # sids of Calls/{sid}.json asked
    list_requests: list[dict[str, str]] = field(default_factory=list)  # Calls.json queries

    def __post_init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.path = f"/api/laml/2010-04-01/Accounts/{self.project_id}/Messages.json"
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._release = asyncio.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake SignalWire API did not start")

    def sms_config(self, to: list[str], **overrides: Any) -> dict[str, Any]:
        """The exporter's ``sms`` config section pointing at this server."""
        return {"space_url": self.url, "project_id": self.project_id,
                "api_token": self.api_token, "from_number": FROM, "to_numbers": to,
                "webhook_token": "hook-secret", **overrides}

    def api_config(self, **overrides: Any) -> dict[str, Any]:
        """The exporter's ``signalwire_api`` config section pointing at this server."""
        return {"space_url": self.url, "project_id": self.project_id,
                "api_token": self.api_token, **overrides}

    def set_call(self, sid: str, status: str, *, direction: str = "outbound-api",
                 duration: int | None = None, price: float | None = None,
                 price_unit: str = "USD", ended: datetime | None = None) -> None:
        """Add or change a call as the API reports it (dates in the provider's RFC 2822)."""
        ended = ended or datetime.now(UTC)
        final = status in ("completed", "busy", "failed", "no-answer", "canceled")
        call = {"sid": sid, "account_sid": self.project_id, "status": status,
                "direction": direction, "parent_call_sid": None,
                "duration": None if duration is None else str(duration),
                "start_time": format_datetime(ended - timedelta(seconds=duration or 0)),
                "end_time": format_datetime(ended) if final else None,
                "answered_by": None, "price": None if price is None else f"{price:.5f}",
                "price_unit": price_unit,
                "uri": f"{self.calls_path}/{sid}.json"}
        with self._lock:
            # newest first, as the API lists them
            self.calls = {sid: call, **{k: v for k, v in self.calls.items() if k != sid}}

    @property
    def calls_path(self) -> str:
        return f"/api/laml/2010-04-01/Accounts/{self.project_id}/Calls"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, shutdown_timeout=1)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._runner = runner
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())
        self._loop.close()

    def _refuse(self, status: int, reason: str) -> web.Response:
        with self._lock:
            self.refused.append(reason)
        return web.json_response({"code": str(status), "message": reason}, status=status)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path.startswith(self.calls_path):
            return await self._handle_calls(request)
        with self._lock:
            self.requests += 1
            answer = self.script.pop(0) if self.script else 201
        if request.method != "POST" or request.path != self.path:
            return self._refuse(404, f"wrong method or path {request.method} {request.path}")
        expected = "Basic " + base64.b64encode(
            f"{self.project_id}:{self.api_token}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return self._refuse(401, "wrong basic auth")
        if request.content_type != "application/x-www-form-urlencoded":
            return self._refuse(400, f"not a form post: {request.content_type}")
        form = {k: str(v) for k, v in (await request.post()).items()}
        if set(form) != {"From", "To", "Body"} or not all(form.values()):
            return self._refuse(400, f"form fields {sorted(form)}")
        if answer == HANG:
            await self._release.wait()
            return web.Response(status=503)
        if answer != 201:
            return web.json_response({"code": "scripted", "message": "scripted failure"},
                                     status=answer)
        with self._lock:
            self.messages.append(form)
        return web.json_response({"sid": f"SM{len(self.messages)}", "status": "queued",
                                  **{k.lower(): v for k, v in form.items()}}, status=201)

    async def _handle_calls(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            self.requests += 1
            answer = self.calls_script.pop(0) if self.calls_script else 200
        expected = "Basic " + base64.b64encode(
            f"{self.project_id}:{self.api_token}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return self._refuse(401, "wrong basic auth")
        if request.method != "GET":
            return self._refuse(405, f"wrong method {request.method}")
        if answer == HANG:
            await self._release.wait()
            return web.Response(status=503)
        if answer != 200:
            return web.json_response({"code": "scripted", "message": "scripted failure"},
                                     status=answer, headers={"Retry-After": "0"})
        if request.path == f"{self.calls_path}.json":
            return self._list_calls(request)
        sid = request.path[len(self.calls_path) + 1:].removesuffix(".json")
        with self._lock:
            self.call_lookups.append(sid)
            call = self.calls.get(sid)
        if call is None:
            return web.json_response({"code": 20404, "message": "not found", "status": 404},
                                     status=404)
        return web.json_response(call)

    def _list_calls(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        with self._lock:
            self.list_requests.append(query)
            calls = list(self.calls.values())
        if "Status" in query:
            calls = [c for c in calls if c["status"] == query["Status"]]
        if "EndTime>" in query:
            since = datetime.fromisoformat(query["EndTime>"]).date()
            calls = [c for c in calls if c["end_time"] and datetime.strptime(
                c["end_time"], "%a, %d %b %Y %H:%M:%S %z").date() >= since]
        size, page = int(query.get("PageSize", "50")), int(query.get("Page", "0"))
        chunk = calls[page * size:(page + 1) * size]
        more = (page + 1) * size < len(calls)
        rest = {k: v for k, v in query.items() if k not in ("Page", "PageSize")}
        next_uri = (f"{self.calls_path}.json?"
                    + urlencode({"Page": page + 1, "PageSize": size, **rest})) if more else None
        return web.json_response({"calls": chunk, "page": page, "page_size": size,
                                  "next_page_uri": next_uri,
                                  "uri": f"{self.calls_path}.json"})

    def stop(self) -> None:
        if not self._loop.is_closed() and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._release.set)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def fake_api() -> Any:
    """A fresh fake Messages API per test, stopped at its end."""
    api = FakeSignalWire()
    yield api
    api.stop()
