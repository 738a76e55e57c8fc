"""What a compiled decode + signature could reach: a one-off experiment, not a phase.

The question it answers: would moving the exporter's decoding and signature check into C
bring it to 0.80 of the bare app? The server here (``serve``) does per request only what C
functions do: every escape decoded by ``codecs.escape_decode``, the signed string made by
two ``bytes.replace`` (valid because the bodies it is sent carry their fields in
code-point order, so the sorted name/value string is the decoded body without ``=`` and
``&``), HMAC-SHA1 from the key's prepared state, one counter. No Python runs per field: a
compiled extension would do about this, and could not do less before any exporter logic.
The run loads it and the bare app in turn with wrk (as bench/run.py does) and counts
instructions per request.

    python3 bench/compiled_floor.py          # about two minutes; prints the ratios
"""

from __future__ import annotations

import base64
import codecs
import hmac
import statistics
import sys
import tempfile
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import floor
from bench.instructions import per_request
from bench.run import BENCH, Server, free_port, wrk
from bench.workload import PATH, SIGNING_KEY, calls, form_body
from exporter.signature import form_signature


def serve(port: int) -> None:
    url = f"http://127.0.0.1:{port}{PATH}".encode()
    keyed = hmac.new(SIGNING_KEY.encode(), digestmod="sha1")
    accepted = floor.accepted_counter()

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        decoded = codecs.escape_decode(body.replace(b"+", b" ").replace(b"%", b"\\x"))[0]
        signed = url + decoded.replace(b"=", b"").replace(b"&", b"")
        mac = keyed.copy()  # the key's state set up once: quicker than hmac.digest
        mac.update(signed)
        expected = base64.b64encode(mac.digest())
        if not hmac.compare_digest(expected, request.headers.get(floor.HEADER, "").encode()):
            return web.Response(status=403)
        accepted.inc()
        return web.Response(status=200)

    floor.serve(port, handle)


def sorted_bodies(path: Path, port: int, count: int) -> Path:
    """Signed callbacks whose fields are in code-point order (what ``serve`` relies on)."""
    url = f"http://127.0.0.1:{port}{PATH}"
    stream = calls(seed=77)
    with path.open("w") as out:
        for _ in range(count):
            pairs = sorted(next(stream))
            out.write(f"{form_signature(SIGNING_KEY, url, pairs)} {form_body(pairs)}\n")
    return path


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="compiled-floor-") as tmp:
        workdir = Path(tmp)
        ports = {"compiled-floor": free_port(), "bare": free_port()}
        argv = {"compiled-floor": [sys.executable, __file__, "serve",
                                   str(ports["compiled-floor"])],
                "bare": [sys.executable, str(BENCH / "bare.py"), str(ports["bare"])]}
        bodies = {name: sorted_bodies(workdir / f"{name}.txt", port, 60_000)
                  for name, port in ports.items()}
        servers = [Server(name, argv[name], ports[name], workdir) for name in ports]
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name in ports}
        try:
            for round_ in range(7):  # the first is a warm-up
                for server in servers:
                    result = wrk(server, bodies[server.name], 2, 32)
                    if result["non_2xx"]:
                        raise SystemExit(f"{server.name}: {result['non_2xx']} non-2xx answers")
                    if round_:
                        rounds[server.name].append(result)
        finally:
            for server in servers:
                server.stop()
        rps = {name: statistics.median(r["rps"] for r in runs) for name, runs in rounds.items()}
        cpu = {name: statistics.median(r["cpu_us_per_request"] for r in runs)
               for name, runs in rounds.items()}
        instructions = {name: per_request(argv[name], ports[name], bodies[name], workdir,
                                          small=300, large=1300) for name in ports}
    for name in ports:
        print(f"{name:15s} {rps[name]:8.0f} req/s  {cpu[name]:6.1f} us CPU/req  "
              f"{instructions[name]:10,.0f} instructions")
    print(f"compiled-floor/bare = {rps['compiled-floor'] / rps['bare']:.2f} in requests/s, "
          f"{cpu['bare'] / cpu['compiled-floor']:.2f} in CPU per request, "
          f"{instructions['bare'] / instructions['compiled-floor']:.2f} in instructions "
          f"(medians of 6 alternating 2 s runs)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve(int(sys.argv[2]))
    else:
        main()
