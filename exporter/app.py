"""The aiohttp application: the app factory, routes and thin handlers.

request → verify (size, content type, signature) → parse (typed event)
        → track (dedupe, ordering) → record (metrics)

Every callback endpoint shares one request path here (method, read, verify), then
hands the fields to its processor in ``callbacks``. Handlers only move data between
the modules and turn a ``Rejected`` into its JSON 4xx answer; the rules live in the
modules themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from aiohttp import HttpVersion11, web
from aiohttp.http_exceptions import ContentEncodingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from prometheus_client import CollectorRegistry, Gauge, disable_created_metrics
from prometheus_client.exposition import choose_encoder

from . import callbacks, reports, runbook, sms
from .access import BASIC_AUTH, BasicAuth, protected
from .config import Config
from .errors import Rejected
from .logs import level_number
from .metrics import ApiMetrics, ExporterMetrics, RelayMetrics, ReportMetrics, StatusMetrics
from .reconcile import Prices, Reconciler
from .signalwire_api import SignalWireApi
from .slices import Slices
from .store import MemoryStore, Store, state_group
from .verify import read_body, read_fields

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Exporter:
    """Everything a request needs, built once per application."""

    config: Config
    registry: CollectorRegistry
    metrics: ExporterMetrics
    store: Store  # per-call state and the cluster-wide metrics
    slices: Slices  # the user's app/line labels
    event_level: int
    item_metrics: StatusMetrics
    failed_calls: reports.FailedCallReport
    report_metrics: ReportMetrics
    relay_metrics: RelayMetrics
    relay: sms.SmsRelay | None  # None while sms.space_url is unset
    stopping: Stopping
    reconciler: Reconciler | None = None  # None unless reconcile.enabled
    prices: Prices | None = None  # final calls to price, when reconcile.fetch_price


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Stopping:
    """What SIGTERM changes (``cli.run_server`` drives the stop).

    Once ``active``, callbacks are refused with 503 and ``/healthz`` answers 503, so a
    load balancer sends the traffic to another replica, and every answer closes its
    connection, so keep-alive clients reconnect elsewhere. The memory backend's counts
    exist only here, so the stop waits for a scrape that has seen every callback
    handled: ``handled`` counts them (any outcome but ``stopping``), and each scrape
    notes how many it saw.
    """

    def __init__(self, handled: Callable[[], float]) -> None:
        self.active = False
        self.given_up = False
        self._handled = handled
        self._scraped = 0.0  # handled() when the last scrape was rendered
        self._scrape = asyncio.Event()

    def scraping(self) -> None:
        """Called by ``/metrics`` just before it renders."""
        self._scraped = self._handled()
        self._scrape.set()

    def give_up(self) -> None:
        """Stop waiting for the scrape now (a second SIGTERM or Ctrl-C)."""
        self.given_up = True
        self._scrape.set()

    async def final_scrape(self, timeout: float) -> bool:
        """Wait, at most ``timeout`` seconds, for a scrape that saw every callback."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self._scraped < self._handled() and not self.given_up:
                    self._scrape.clear()
                    await self._scrape.wait()
        return self._scraped >= self._handled()


class InFlight:
    """Requests being handled now, so a stop can wait until they are done.

    Counted by wrapping each route's handler: an aiohttp middleware would do the same
    at about twice the cost per request (its chain adds two coroutines). Callbacks
    have their own (``CALLBACKS_IN_FLIGHT``), so a stop knows when the last one is done.
    """

    def __init__(self, stopping: Stopping) -> None:
        self.count = 0
        self._stopping = stopping
        self._idle = asyncio.Event()
        self._idle.set()

    def counted(self, handler: Handler) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            self.count += 1
            self._idle.clear()
            try:
                response = await handler(request)
            finally:
                self.count -= 1
                if not self.count:
                    self._idle.set()
            if self._stopping.active:
                response.force_close()  # "Connection: close": reconnect, to another replica
            return response

        return handle

    async def drained(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._idle.wait()


EXPORTER = web.AppKey("exporter", Exporter)
IN_FLIGHT = web.AppKey("in_flight", InFlight)
CALLBACKS_IN_FLIGHT = web.AppKey("callbacks_in_flight", InFlight)


# --- handlers ----------------------------------------------------------------------------

def error_response(exc: Rejected, **headers: str) -> web.Response:
    """The one answer to every refusal: its 4xx and ``{"error": message}``."""
    return web.json_response({"error": exc.message}, status=exc.status, headers=headers)


# aiohttp's own refusals, as the JSON every other refusal is. Fixed texts: aiohttp's own
# messages can quote the request line or a header, which may carry a secret.
REFUSALS = {
    400: "malformed HTTP request",
    404: "no such endpoint (GET / lists them; paths have no trailing slash)",
    405: "method not allowed here",
    413: "request too large",
    415: "unsupported Content-Encoding: send the body as is, or gzip or deflate",
    417: "unsupported Expect header: only 100-continue is",
    431: "request header fields too large",
}


def refusal(status: int, **headers: str) -> web.Response:
    message = REFUSALS.get(status) or HTTPStatus(status).phrase.lower()
    return web.json_response({"error": message}, status=status, headers=headers)


def expect_handler(count: Callable[[int], None]) -> Callable[
        [web.Request], Awaitable[web.StreamResponse | None]]:
    """aiohttp's handling of ``Expect``, with its 417 as JSON (its own quotes the header,
    and fails with a 500 on a header that is not UTF-8)."""

    async def handle(request: web.Request) -> web.StreamResponse | None:
        if request.version != HttpVersion11:
            return None
        if request.headers.get("Expect", "").lower() != "100-continue":
            count(417)
            return refusal(417)
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # as aiohttp's own: the answer proper is still to come
        return None

    return handle


def not_routed(router: web.UrlDispatcher, count: Callable[[int], None]) -> Handler:
    """The last route: aiohttp's 404 and 405, as JSON and counted.

    The router tries it only after every other route failed to match, so a request that
    reaches a handler pays nothing for it. A catch-all hides the router's 405, so the
    methods each path allows are looked up here (every route is a plain path).
    """
    allowed: dict[str, set[str]] = {}
    for route in router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        if "path" in info:
            allowed.setdefault(info["path"], set()).add(route.method)

    async def handle(request: web.Request) -> web.StreamResponse:
        methods = allowed.get(request.path)
        if methods is None:
            count(404)
            return refusal(404)
        count(405)
        return refusal(405, Allow=", ".join(sorted(methods)))

    return handle


class _JsonErrorHandler(RequestHandler):
    """aiohttp's protocol handler, answering malformed HTTP with JSON (and counting it)."""

    __slots__ = ("_count",)

    def __init__(self, manager: web.Server, *, count: Callable[[int], None],
                 **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._count = count

    def handle_error(self, request: BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs; raises once answering
        if isinstance(exc, ContentEncodingError) and "install" in str(exc):
            status = 415  # br or zstd, whose decoders are not installed
        self._count(status)
        response = refusal(status)
        response.force_close()
        return response


class _JsonErrorServer(web.Server):
    count: Callable[[int], None]

    def __call__(self) -> RequestHandler:
        return _JsonErrorHandler(self, loop=self._loop, count=self.count, **self._kwargs)


class ExporterRunner(web.AppRunner):
    """``web.AppRunner`` whose connections answer malformed HTTP as JSON, counted.

    Those requests never reach the application (aiohttp refuses them while parsing),
    so neither a route nor a middleware can answer them.
    """

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _JsonErrorServer  # same layout: only the handler class differs
        assert isinstance(server, _JsonErrorServer)
        server.count = self.app[EXPORTER].metrics.http_error
        return server


def log_rejected(what: str, exc: Rejected, **fields: str) -> None:
    """A missing or wrong credential is a warning (a probe, or a wrong key); the rest is routine."""
    level = logging.WARNING if exc.outcome == "unauthorized" else logging.INFO
    log.log(level, f"{what} rejected", extra={"fields": {
        **fields, "outcome": exc.outcome, "status": exc.status, "reason": exc.message}})


def callback_handler(endpoint: str, process: callbacks.Processor) -> Handler:
    """The one request path every callback endpoint shares: method, verify, process."""

    async def handle(request: web.Request) -> web.StreamResponse:
        exporter = request.app[EXPORTER]
        try:
            if exporter.stopping.active:
                raise Rejected(503, "stopping", "this exporter is stopping: send the callback "
                                                "again (another replica will take it)")
            if request.method not in ("POST", "GET"):
                raise Rejected(405, "method_not_allowed",
                               f"use POST (or GET) for /callbacks/{endpoint}")
            fields = await read_fields(request, exporter.config)
            app = exporter.slices.app(request.query) if exporter.slices.parameter else ""
            outcome = await process(exporter, fields, endpoint, app)
        except Rejected as exc:
            exporter.metrics.callback(endpoint, exc.outcome)
            log_rejected("callback", exc, endpoint=endpoint)
            # RFC 9110: a 405 names the methods that are allowed
            return error_response(exc, **({"Allow": "GET, POST"} if exc.status == 405 else {}))
        exporter.metrics.callback(endpoint, outcome)
        return web.Response(status=200)

    return handle


async def metrics_handler(request: web.Request) -> web.Response:
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    exporter = request.app[EXPORTER]
    await exporter.store.before_scrape()
    exporter.stopping.scraping()
    response = web.Response(body=encoder(exporter.registry))
    response.headers["Content-Type"] = content_type
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        response.enable_compression()
    return response


async def alerts_sms(request: web.Request) -> web.Response:
    """Alertmanager webhook → SMS; the rules and the answer codes live in sms.py."""
    exporter = request.app[EXPORTER]
    relay = exporter.relay
    if relay is None:
        exporter.relay_metrics.notification("not_configured")
        # 404, not 503: nothing here will start working without a config change, and a
        # 5xx would only make Alertmanager retry in vain.
        return web.json_response({"error": "the SMS relay is off: set the sms section of "
                                           "the config (docs/sms-relay.md)"}, status=404)
    try:
        if request.method != "POST":
            raise Rejected(405, "method_not_allowed", "use POST for /alerts/sms")
        sms.authorize(request.headers.get("Authorization"), relay.config.webhook_token)
        body = await read_body(request, relay.limits)
        notification = sms.decode_notification(
            request.content_type if body else "", body)
    except Rejected as exc:
        relay.metrics.notification(exc.outcome)
        log_rejected("alert notification", exc)
        challenge = {"WWW-Authenticate": 'Bearer realm="alerts"'} if exc.status == 401 else {}
        return error_response(exc, **challenge)
    status, document = await relay.deliver(notification, exporter.store)
    return web.json_response(document, status=status)


async def failed_calls_report(request: web.Request) -> web.Response:
    """The recent unsuccessful calls as CSV (the old failedCallReport.csv) or JSON."""
    exporter = request.app[EXPORTER]
    config = exporter.config.reports.failed_calls
    store = exporter.store
    try:
        query = reports.parse_query(request.query, config)
        rows = query.select(await store.failed_call_rows(store.clock()))
    except Rejected as exc:
        exporter.report_metrics.request(exc.outcome)
        return error_response(exc)
    exporter.report_metrics.request("ok")
    if query.mask:
        rows = reports.masked(rows)
    if query.format == "json":
        return web.json_response(reports.to_json(rows, config, query.mask))
    return web.Response(text=reports.to_csv(rows), content_type="text/csv", headers={
        "Content-Disposition": 'inline; filename="failedCallReport.csv"'})


async def runbook_handler(request: web.Request) -> web.Response:
    """The runbook every alert links to, one anchor per alert (exporter/runbook.py)."""
    return web.Response(text=runbook.page(), content_type="text/html")


async def healthz(request: web.Request) -> web.Response:
    if request.app[EXPORTER].stopping.active:  # out of the load balancer's rotation
        return web.Response(status=503, text="stopping")
    return web.Response(text="ok")


async def index(request: web.Request) -> web.Response:
    return web.Response(text=(
        "signalwire-exporter\n\n"
        "GET  /metrics                 Prometheus metrics\n"
        "GET  /healthz                 liveness\n"
        "POST /callbacks/voice         voice status callbacks\n"
        "POST /callbacks/inbound       incoming-number status callbacks\n"
        "POST /callbacks/messaging     SMS/MMS status callbacks\n"
        "POST /callbacks/recording     recording status callbacks\n"
        "POST /callbacks/transcription transcription callbacks\n"
        "POST /callbacks/calling       SWML/RELAY/Calling API calling.* events (JSON)\n"
        "POST /callbacks/10dlc         10DLC brand/campaign/number-assignment callbacks\n"
        "POST /alerts/sms              Alertmanager webhook → SMS (when configured)\n"
        "GET  /reports/failed-calls    recent unsuccessful calls (?format=csv|json, ?mask=1,\n"
        "                              ?call_sid=: one call)\n"
        "GET  /runbook                 what to do when an alert fires\n"))


# --- background --------------------------------------------------------------------------

async def sweep_expired(app: web.Application) -> AsyncIterator[None]:
    """Expire calls and items that outlive their TTL even when no traffic arrives."""
    exporter = app[EXPORTER]
    store = exporter.store

    async def sweep() -> None:
        while True:
            await asyncio.sleep(exporter.config.tracking.sweep_interval_seconds)
            await store.expire(store.clock())

    task = asyncio.create_task(sweep())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def store_connection(app: web.Application) -> AsyncIterator[None]:
    """The state backend's connections, open while the app runs."""
    store = app[EXPORTER].store
    await store.start()
    yield
    await store.close()


async def sms_session(app: web.Application) -> AsyncIterator[None]:
    """One HTTP client session for all SMS, closed with the app."""
    relay = app[EXPORTER].relay
    if relay is not None:
        await relay.open()
    yield
    if relay is not None:
        await relay.close()


async def reconciling(app: web.Application) -> AsyncIterator[None]:
    """The REST API lookups (reconcile.py), in the background while the app runs."""
    reconciler = app[EXPORTER].reconciler
    if reconciler is None:
        yield
        return
    await reconciler.api.open()
    tasks = [asyncio.create_task(reconciler.run()),
             asyncio.create_task(reconciler.run_prices())]
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await reconciler.api.close()


# --- factory -------------------------------------------------------------------------------

def create_app(config: Config, registry: CollectorRegistry | None = None) -> web.Application:
    """Build the application; each app gets its own registry unless one is given."""
    disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series double the output and serve no query
    registry = registry if registry is not None else CollectorRegistry()
    failed_calls = reports.FailedCallReport(config.reports.failed_calls)
    relay_metrics = RelayMetrics(registry)
    relay = (sms.SmsRelay(config.sms, relay_metrics, config.limits.read_timeout_seconds)
             if config.sms.enabled else None)
    slices = Slices(config.labels)
    metrics = ExporterMetrics(registry, config.buckets, lambda: store.tracked_calls(),
                              slices.names)
    item_metrics = StatusMetrics(registry, config.buckets, {
        lifecycle.kind: functools.partial(lambda e: store.tracked_items(e), endpoint)
        for endpoint, lifecycle in callbacks.LIFECYCLES.items()}, slices.names)
    store: Store
    if config.state.backend == "redis":
        from .redis_store import RedisStore  # the redis package loads only when used

        store = RedisStore(config, callbacks.LIFECYCLES, metrics, item_metrics, registry)
    else:
        store = MemoryStore(config, callbacks.LIFECYCLES, metrics, item_metrics, failed_calls)
    callback_counts = metrics.callbacks.values
    stopping = Stopping(lambda: sum(
        count for (_, outcome), count in callback_counts.items() if outcome != "stopping"))
    exporter = Exporter(
        config=config, registry=registry, metrics=metrics, store=store, slices=slices,
        event_level=level_number(config.logging.event_level),
        item_metrics=item_metrics,
        failed_calls=failed_calls,
        report_metrics=ReportMetrics(registry, lambda: store.failed_calls_held()),
        relay_metrics=relay_metrics, relay=relay, stopping=stopping)
    api_metrics = ApiMetrics(registry)
    if config.reconcile.enabled:
        api = SignalWireApi(config.signalwire_api, config.reconcile.max_requests_per_second,
                            api_metrics)
        exporter.reconciler = Reconciler(config, store, api)
        exporter.prices = exporter.reconciler.prices

    state_info = Gauge(
        "signalwire_exporter_state_info",
        "Always 1; which state this replica serves its call metrics from: backend, and "
        "group (replicas of one group serve the same cluster-wide values: count a group "
        "once, e.g. max by (group), then sum the groups).", ["backend", "group"],
        registry=registry)
    state_info.labels(store.backend,
                      state_group(store.backend, config.state.key_prefix)).set(1)
    in_flight, callbacks_in_flight = InFlight(stopping), InFlight(stopping)
    Gauge("signalwire_exporter_http_requests_in_flight",
          "HTTP requests being handled now, this scrape included.",
          registry=registry).set_function(
              lambda: float(in_flight.count + callbacks_in_flight.count))

    app = web.Application(client_max_size=config.limits.max_body_bytes)
    app[EXPORTER] = exporter
    app[IN_FLIGHT] = in_flight
    app[CALLBACKS_IN_FLIGHT] = callbacks_in_flight
    app[BASIC_AUTH] = BasicAuth(config.web.basic_auth_users)

    expect = expect_handler(metrics.http_error)

    def route(method: str, path: str, handler: Handler, counter: InFlight = in_flight) -> None:
        if method == "GET":  # HEAD too
            app.router.add_get(path, counter.counted(handler), expect_handler=expect)
        else:
            app.router.add_route(method, path, counter.counted(handler),
                                 expect_handler=expect)

    route("GET", "/", index)
    route("GET", "/metrics", protected(metrics_handler))
    route("GET", "/healthz", healthz)
    route("GET", "/runbook", runbook_handler)
    for endpoint, process in callbacks.PROCESSORS.items():
        route("*", f"/callbacks/{endpoint}", callback_handler(endpoint, process),
              callbacks_in_flight)
    route("*", "/alerts/sms", alerts_sms)
    route("GET", "/reports/failed-calls", protected(failed_calls_report))
    app.router.add_route("*", "/{path:.*}", not_routed(app.router, metrics.http_error),
                         expect_handler=expect)
    app.cleanup_ctx.append(store_connection)
    app.cleanup_ctx.append(sweep_expired)
    app.cleanup_ctx.append(sms_session)
    app.cleanup_ctx.append(reconciling)
    return app
