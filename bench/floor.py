"""The floor: the least any Python callback handler on aiohttp must do, and nothing more.

Run as ``python3 bench/floor.py PORT``. Per request it reads the body, percent-decodes
it with the standard library, builds the field dict, checks the form signature
(HMAC-SHA1 over the URL and the sorted fields, as the provider signs) and counts one
prometheus-client counter. No limits, no validation, no call state, no per-field
metrics: it is not an exporter (it would count a duplicate twice and trusts every
field), only a measure of what a handler that cannot skip decoding and the signature
costs before any exporter logic runs. bench/run.py loads it beside the exporter and
the bare app, so "exporter/bare" splits into what Python's per-request minimum
costs (floor/bare) and what the exporter adds on top (exporter/floor).
"""

from __future__ import annotations

import base64
import hmac
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import unquote_plus

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.workload import PATH, SIGNING_KEY

KEY = SIGNING_KEY.encode()
HEADER = "X-SignalWire-Signature"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def accepted_counter() -> Counter:
    """The one metric a floor updates per callback."""
    return Counter("floor_callbacks_total", "Callbacks accepted.", ["outcome"],
                   registry=CollectorRegistry()).labels("accepted")


def make_handler(url: str) -> Handler:
    accepted = accepted_counter()

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        # Correct for the benchmark's bodies, which never percent-encode "&" or "=".
        pairs = [piece.partition("=")[::2]
                 for piece in unquote_plus(body.decode()).split("&")]
        fields = dict(pairs)
        pairs.sort()
        signed = url + "".join([name + value for name, value in pairs])
        expected = base64.b64encode(hmac.digest(KEY, signed.encode(), "sha1"))
        if not (fields and hmac.compare_digest(expected, request.headers.get(HEADER, "")
                                               .encode())):
            return web.Response(status=403)
        accepted.inc()
        return web.Response(status=200)

    return handle


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def serve(port: int, handle: Handler) -> None:
    """``handle`` on the callback path (and /healthz), as bench/run.py expects a server."""
    app = web.Application()
    app.router.add_post(PATH, handle)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def main() -> None:
    port = int(sys.argv[1])
    serve(port, make_handler(f"http://127.0.0.1:{port}{PATH}"))


if __name__ == "__main__":
    main()
