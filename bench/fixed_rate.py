"""Open-loop load at a fixed rate (what wrk2 does; Debian's wrk cannot).

Request ``i`` is due at ``start + i / rate`` and is sent then on an idle keep-alive
connection (a new one is opened when none is idle, up to ``--connections``). Its
latency is measured from when it was due, not when it was sent, so a stalled server
is charged for the requests that queued behind it (no coordinated omission).

Run as ``python3 bench/fixed_rate.py HOST PORT BODIES RATE SECONDS``; prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

PATH = "/callbacks/voice"


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request in flight at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.waiter: asyncio.Future[bytes] | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0 or self.waiter is None:
            return
        head = self.buffer[:head_end].lower()
        at = head.find(b"content-length:")
        length = 0
        if at >= 0:
            stop = head.find(b"\r\n", at)
            length = int(head[at + 15:stop if stop >= 0 else len(head)])
        end = head_end + 4 + length
        if len(self.buffer) >= end:
            response, self.buffer = self.buffer[:end], self.buffer[end:]
            waiter, self.waiter = self.waiter, None
            waiter.set_result(response)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed"))
        if not self.closed.done():
            self.closed.set_result(None)

    async def send(self, request: bytes) -> bytes:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.waiter


def requests_from(path: Path, host: str, port: int) -> list[bytes]:
    out = []
    for line in path.read_text().splitlines():
        sig, body = line.split(" ", 1)
        out.append(
            f"POST {PATH} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\n"
            f"X-SignalWire-Signature: {sig}\r\nContent-Length: {len(body)}\r\n\r\n{body}"
            .encode())
    return out


async def run(host: str, port: int, requests: list[bytes], rate: float, seconds: float,
              max_connections: int) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    idle: list[Connection] = []
    opened = 0
    latencies: list[float] = []
    errors = 0
    skipped = 0

    async def one(request: bytes, due: float, conn: Connection) -> None:
        nonlocal errors
        try:
            response = await conn.send(request)
        except ConnectionError:
            errors += 1
            return
        latencies.append(loop.time() - due)
        if not response.startswith(b"HTTP/1.1 200"):
            errors += 1
        idle.append(conn)

    total = min(int(rate * seconds), len(requests))
    tasks = set()
    start = loop.time() + 0.05
    for i in range(total):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if idle:
            conn = idle.pop()
        elif opened < max_connections:
            _, conn = await loop.create_connection(Connection, host, port)
            opened += 1
        else:
            skipped += 1  # every connection busy: the server is far behind
            continue
        task = asyncio.create_task(one(requests[i], due, conn))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=30)
    elapsed = loop.time() - start
    for conn in idle:
        if conn.transport is not None:
            conn.transport.close()
    latencies.sort()

    def percentile(p: float) -> float:
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000

    return {"target_rps": rate, "sent": total - skipped, "completed": len(latencies),
            "achieved_rps": len(latencies) / elapsed, "errors": errors,
            "skipped_all_busy": skipped, "connections": opened,
            "p50_ms": percentile(50), "p99_ms": percentile(99), "max_ms": percentile(100)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("bodies", type=Path)
    parser.add_argument("rate", type=float)
    parser.add_argument("seconds", type=float)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    requests = requests_from(args.bodies, args.host, args.port)
    result = asyncio.run(run(args.host, args.port, requests, args.rate, args.seconds,
                             args.connections))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
