"""The test servers themselves: a Redis the backend tests can rely on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis

from .servers import RedisServer


def test_redis_url_is_an_empty_loopback_database(redis_url: str, redis_server: Any) -> None:
    assert redis_url.startswith("redis://127.0.0.1:") and redis_url.endswith("/0")
    with redis.Redis.from_url(redis_url) as client:
        assert client.dbsize() == 0
        client.set("left-behind", "1")
    redis_server.flush()
    with redis.Redis.from_url(redis_url) as client:
        assert client.dbsize() == 0


def test_persistent_redis_keeps_its_data_across_a_crash(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", persistent=True)
    try:
        with server.client() as client:
            client.incrby("counter", 7)
        server.kill()
        server.start()
        with server.client() as client:
            assert client.get("counter") == b"7"
    finally:
        server.stop()


def test_plain_redis_keeps_nothing_on_disk(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    try:
        with server.client() as client:
            client.set("k", "v")
        server.restart()
        with server.client() as client:
            assert client.get("k") is None
    finally:
        server.stop()
