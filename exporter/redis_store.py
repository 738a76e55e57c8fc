"""Track and record in Redis: the state and the metrics a group of replicas shares.

``RedisStore`` keeps the ``Store`` contract (``store``) with everything in one Redis
(or Valkey) under ``state.key_prefix``:

- ``c:<CallSid>``: a hash per tracked call (direction, final status, flags, last
  sequence, event times, the (sequence, status) pairs seen); ``calls``: a sorted set of
  tracked calls in arrival order, for the cap and the TTL. ``i:<kind>:<sid>`` and
  ``items:<kind>`` the same for messages, recordings and transcriptions.
- ``m:<metric name>``: a hash per cluster-wide metric family, one field per series
  (label values joined by ``|``; for histograms a bucket index or ``s`` for the sum
  follows), read back at each scrape into the same plain series the memory backend
  renders. ``m:<metric name>:ex``: the same fields for the families with exemplars, each
  the latest ``<sid>|<value>|<unix time>``.

Each callback is one script call: the script decides the event by
the rules of ``calls`` / ``statuses`` and applies the metric increments the decision
grants, atomically, so replicas never race and a replica that dies loses nothing it
answered. The increments come from ``metrics`` as operations with a condition; the
script only evaluates the conditions, so what a decision records is written once, in
Python. The script calls of callbacks handled at the same time share one round trip
(``Batcher``): under load that is most of what the client spends per callback.

While Redis cannot be reached, callbacks are answered from a bounded in-order spool
and applied once it is back: applying an event twice is harmless (the second time it
is a duplicate), so a command that timed out after Redis ran it costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections import deque
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from prometheus_client import Counter, Gauge, Histogram
from redis import asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError

from .calls import Decision
from .errors import Rejected
from .metrics import EXEMPLARS, ExemplarOf, Plain, PlainHistogram, call_ops, item_ops
from .payloads import FINAL_CALL_STATUSES, CallEvent
from .reports import REPORTED_STATUSES, failed_call_row
from .statuses import Lifecycle, StatusDecision

if TYPE_CHECKING:
    from collections.abc import Sequence

    from prometheus_client import CollectorRegistry
    from redis.asyncio.connection import AbstractConnection
    from redis.commands.core import AsyncScript

    from .config import Config
    from .metrics import ExporterMetrics, ItemEvent, StatusMetrics

try:
    import hiredis
except ImportError:  # pragma: no cover - a dependency; without it redis-py packs alone
    hiredis = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

_FINALS = ", ".join(f"['{status}'] = true" for status in sorted(FINAL_CALL_STATUSES))

# Shared by the scripts: apply the operations whose condition holds.
_APPLY_OPS = r"""
local PART = '([^\t\n]*)\t'
local OPERATION = PART .. PART .. PART .. '([^\n]*)\n'

local function apply_ops(P, ops, cond, subst)
  -- ops: one line per operation, "condition TAB family TAB field TAB amount"
  for c, family, field, amount in string.gmatch(ops, OPERATION) do
    if cond[c] then
      field = string.gsub(field, '@(%u)', subst)
      if string.sub(family, -3) == ':ex' then  -- an exemplar: the latest replaces it
        redis.call('HSET', P .. 'm:' .. family, field, (string.gsub(amount, '@(%u)', subst)))
      else
        redis.call('HINCRBYFLOAT', P .. 'm:' .. family, field, amount)
      end
    end
  end
end

local function observe(P, family, prefix, value, bounds)
  local index = #bounds
  for j, bound in ipairs(bounds) do
    if value <= bound then index = j - 1 break end
  end
  redis.call('HINCRBYFLOAT', P .. 'm:' .. family, prefix .. index, 1)
  redis.call('HINCRBYFLOAT', P .. 'm:' .. family, prefix .. 's', value)
end
"""

# ARGV: prefix, sid, status, sequence ('' = none), direction, now, stamp ('' = none), has
# duration, has MOS, has SIP code ('1' or ''), unanswered status ('' = none), report row
# JSON ('' = none), settle ('1': a final status from the REST API, see Store.settle), the
# event's slice ('|app|line' label values, '' without), the operations (see apply_ops).
# Returns {2} for a settle of an untracked call, {1, ...} for a duplicate.
_CALL_SCRIPT = _APPLY_OPS + """
local P, sid, status, seq, evdir = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local now, stamp = tonumber(ARGV[6]), ARGV[7]
local has_duration, has_mos, has_sip = ARGV[8] == '1', ARGV[9] == '1', ARGV[10] == '1'
local unanswered, row = ARGV[11], ARGV[12]
local settle, sl, ops = ARGV[13] == '1', ARGV[14], ARGV[15]
-- this exporter's constants (RedisStore fills them in): max_calls, report_size, gauge,
-- expired, pdd_family, pdd_bounds, tta_family, tta_bounds
@CONSTANTS@
local FINAL = {@FINALS@}
local IN_PROGRESS, QUALITY, PDD, ANSWER, SIP, ANSWERED = 1, 2, 4, 8, 16, 32
local key, zkey = P .. 'c:' .. sid, P .. 'calls'

local function has(flags, b) return bit.band(flags, b) ~= 0 end

local function depart(member, reason)
  local k = P .. 'c:' .. member
  local st = redis.call('HMGET', k, 'dir', 'fin', 'fl', 'sl')
  if st[1] then
    local labels = st[1] .. (st[4] or '')
    if has(tonumber(st[3]) or 0, IN_PROGRESS) then
      redis.call('HINCRBYFLOAT', P .. 'm:' .. gauge, labels, -1)
    end
    if not st[2] then
      redis.call('HINCRBYFLOAT', P .. 'm:' .. expired, labels .. '|' .. reason, 1)
    end
  end
  redis.call('DEL', k)
  redis.call('ZREM', zkey, member)
  redis.call('ZREM', P .. 'open', member)
end

local st = redis.call('HMGET', key, 'dir', 'fin', 'fl', 'ls', 'ti', 'tr', 'ta', 'cr', 'sd',
                      'sl')
local new = not st[1]
if new and settle then return {2} end
if not new then sl = st[10] or '' end
if settle and st[2] then return {1, st[1], status, sl} end
local created, settled = tonumber(st[8]) or now, st[9]
local dir, fin, fl, ls = st[1], st[2] or nil, tonumber(st[3]) or 0, tonumber(st[4]) or -1
local ti, tr, ta = tonumber(st[5]), tonumber(st[6]), tonumber(st[7])
if new then
  while redis.call('ZCARD', zkey) >= max_calls do
    depart(redis.call('ZRANGE', zkey, 0, 0)[1], 'capacity')
  end
  dir = evdir
  fin = nil
end
if unanswered ~= '' and FINAL[status] and not has(fl, ANSWERED) then status = unanswered end

local seen = 's' .. (seq == '' and 'n' or seq) .. '|' .. status
local dup = false
if FINAL[status] then
  dup = settled or redis.call('HEXISTS', key, (seq == '' and 'a|' or 'sn|') .. status) == 1
end
if dup or redis.call('HEXISTS', key, seen) == 1 then
  return {1, dir, status, sl}
end

local moved = ''
if dir == 'unknown' and evdir ~= 'unknown' then
  dir = evdir
  if has(fl, IN_PROGRESS) then moved = 'unknown' end
end
local late = fin ~= nil or (seq ~= '' and tonumber(seq) <= ls)
if not late and seq ~= '' then ls = math.min(tonumber(seq), 4294967294) end

local final_status, delta = '', 0
local cond = {e = true}
if FINAL[status] then
  if not fin then
    fin, final_status = status, status
    cond.f = true
    cond.d = status == 'completed' and has_duration
    if has(fl, IN_PROGRESS) then fl = fl - IN_PROGRESS; delta = -1 end
  end
  if not has(fl, QUALITY) and has_mos then fl = fl + QUALITY; cond.q = true end
elseif status == 'in-progress' then
  if not has(fl, ANSWERED) then fl = fl + ANSWERED end
  if not late and not has(fl, IN_PROGRESS) then fl = fl + IN_PROGRESS; delta = 1 end
end
if has_sip and not has(fl, SIP) then fl = fl + SIP; cond.s = true end

local pdd, tta = '', ''
if stamp ~= '' then
  local t = tonumber(stamp)
  if t >= 0 and t < 17179869183 then
    local changed = true
    if status == 'initiated' and not ti then ti = t
    elseif status == 'ringing' and not tr then tr = t
    elseif status == 'in-progress' and not ta then ta = t
    else changed = false end
    if changed then
      if not has(fl, PDD) and ti and tr and tr >= ti then
        fl = fl + PDD; pdd = tr - ti
        observe(P, pdd_family, dir .. sl .. '|', pdd, pdd_bounds)
      end
      if not has(fl, ANSWER) and tr and ta and ta >= tr then
        fl = fl + ANSWER; tta = ta - tr
        observe(P, tta_family, dir .. sl .. '|', tta, tta_bounds)
      end
    end
  end
end

redis.call('HSET', key, seen, 1, 'a|' .. status, 1, 'dir', dir, 'fl', fl, 'ls', ls)
if fin then redis.call('HSET', key, 'fin', fin) end
if ti then redis.call('HSET', key, 'ti', ti) end
if tr then redis.call('HSET', key, 'tr', tr) end
if ta then redis.call('HSET', key, 'ta', ta) end
if settle then
  redis.call('HSET', key, 'sd', 1)
else
  local ticks = math.floor((now - created) / 0.1 + 0.5)
  redis.call('HSET', key, 'le', math.min(math.max(0, ticks), 16777215))
end
if new then
  local order = redis.call('INCR', P .. 'order')
  redis.call('HSET', key, 'cr', now)
  if sl ~= '' then redis.call('HSET', key, 'sl', sl) end
  redis.call('ZADD', zkey, order, sid)
  if not fin then redis.call('ZADD', P .. 'open', order, sid) end
elseif final_status ~= '' then
  redis.call('ZREM', P .. 'open', sid)
end
if delta ~= 0 then redis.call('HINCRBYFLOAT', P .. 'm:' .. gauge, dir .. sl, delta) end
if moved ~= '' then
  redis.call('HINCRBYFLOAT', P .. 'm:' .. gauge, moved .. sl, -1)
  redis.call('HINCRBYFLOAT', P .. 'm:' .. gauge, dir .. sl, 1)
end
apply_ops(P, ops, cond, {D = dir .. sl, S = status, F = final_status, I = sid})
if final_status ~= '' and row ~= '' then
  local entry = cjson.decode(row)
  if entry['reported'][final_status] then
    entry['row']['call_status'] = final_status
    entry['row']['call_direction'] = dir
    redis.call('LPUSH', P .. 'report', cjson.encode(entry['row']))
    redis.call('LTRIM', P .. 'report', 0, report_size - 1)
  end
end
local function flag(b) return b and 1 or 0 end
return {0, dir, status, flag(late), final_status, delta, moved, flag(cond.d), flag(cond.q),
        flag(cond.s), tostring(pdd), tostring(tta), sl}
""".replace("@FINALS@", _FINALS)

# ARGV: prefix, kind, sid, status, now, is final, is start, is end, timed (the kind's
# start → end time is observed) ('1' or ''), wants, the operations (see apply_ops).
_ITEM_SCRIPT = _APPLY_OPS + """
local P, kind, sid, status = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now = tonumber(ARGV[5])
local is_final, is_start, is_end = ARGV[6] == '1', ARGV[7] == '1', ARGV[8] == '1'
local timed, wants, ops = ARGV[9] == '1', tonumber(ARGV[10]), ARGV[11]
-- this exporter's constants (RedisStore fills them in): max_items, expired,
-- elapsed_family, elapsed_bounds
@CONSTANTS@
local key, zkey = P .. 'i:' .. kind .. ':' .. sid, P .. 'items:' .. kind

local st = redis.call('HMGET', key, 'cr', 'fin', 'gr', 'st', 'en', 'tm')
if not st[1] then
  while redis.call('ZCARD', zkey) >= max_items do
    local member = redis.call('ZRANGE', zkey, 0, 0)[1]
    local k = P .. 'i:' .. kind .. ':' .. member
    if not redis.call('HGET', k, 'fin') then
      redis.call('HINCRBYFLOAT', P .. 'm:' .. expired, kind .. '|capacity', 1)
    end
    redis.call('DEL', k)
    redis.call('ZREM', zkey, member)
  end
  redis.call('HSET', key, 'cr', now)
  redis.call('ZADD', zkey, redis.call('INCR', P .. 'order'), sid)
end
if redis.call('HSETNX', key, 's|' .. status, 1) == 0 then return {1} end

local fin, granted = st[2], tonumber(st[3]) or 0
local cond = {e = true}
local late = fin and not is_final
local final_status = ''
if is_final and not fin then
  final_status = status
  cond.f = true
  redis.call('HSET', key, 'fin', status)
end
local grant = bit.band(wants, bit.bnot(granted))
for _, b in ipairs({1, 2, 4, 8}) do
  if bit.band(grant, b) ~= 0 then cond['g' .. b] = true end
end
redis.call('HSET', key, 'gr', bit.bor(granted, wants))

local elapsed = ''
if timed and not st[6] then
  local start, stop = tonumber(st[4]), tonumber(st[5])
  local changed = true
  if is_start then start = start and math.min(start, now) or now
  elseif is_end then stop = now
  else changed = false end
  if changed then
    if start then redis.call('HSET', key, 'st', start) end
    if stop then redis.call('HSET', key, 'en', stop) end
    if start and stop then
      redis.call('HSET', key, 'tm', 1)
      if stop >= start then
        elapsed = stop - start
        observe(P, elapsed_family, '', elapsed, elapsed_bounds)
      end
    end
  end
end
apply_ops(P, ops, cond, {F = final_status, S = status, I = sid})
return {0, late and 1 or 0, final_status, grant, tostring(elapsed)}
"""

# ARGV: prefix, deadline, call gauge family, calls expired family, items expired family,
# then (zset, hash prefix, kind, item deadline) per item kind; at most LIMIT per zset.
_EXPIRE_SCRIPT = """
local P, deadline, gauge, expired, items_expired = ARGV[1], tonumber(ARGV[2]), ARGV[3],
  ARGV[4], ARGV[5]
local LIMIT, left = 500, 0
local function sweep(zkey, hprefix, limit_deadline, gone)
  local members = redis.call('ZRANGE', zkey, 0, LIMIT - 1)
  for _, member in ipairs(members) do
    local k = hprefix .. member
    local cr = tonumber(redis.call('HGET', k, 'cr'))
    if cr and cr > limit_deadline then return end
    gone(k, member)
    redis.call('DEL', k)
    redis.call('ZREM', zkey, member)
  end
  if #members == LIMIT then left = 1 end
end
sweep(P .. 'calls', P .. 'c:', deadline, function(k, member)
  redis.call('ZREM', P .. 'open', member)
  local st = redis.call('HMGET', k, 'dir', 'fin', 'fl', 'sl')
  if st[1] then
    local labels = st[1] .. (st[4] or '')
    if bit.band(tonumber(st[3]) or 0, 1) ~= 0 then
      redis.call('HINCRBYFLOAT', P .. 'm:' .. gauge, labels, -1)
    end
    if not st[2] then
      redis.call('HINCRBYFLOAT', P .. 'm:' .. expired, labels .. '|ttl', 1)
    end
  end
end)
local i = 6
while i + 1 <= #ARGV do
  local kind, item_deadline = ARGV[i], tonumber(ARGV[i + 1])
  sweep(P .. 'items:' .. kind, P .. 'i:' .. kind .. ':', item_deadline, function(k)
    if not redis.call('HGET', k, 'fin') then
      redis.call('HINCRBYFLOAT', P .. 'm:' .. items_expired, kind .. '|ttl', 1)
    end
  end)
  i = i + 2
end
return left
"""

# KEYS: the claim, the counter's hash; ARGV: milliseconds to hold the claim, the field.
_COUNT_ONCE_SCRIPT = """
if not redis.call('SET', KEYS[1], 1, 'NX', 'PX', ARGV[1]) then return 0 end
redis.call('HINCRBYFLOAT', KEYS[2], ARGV[2], 1)
return 1
"""

# ARGV: prefix, now, silent_for, limit, ttl, max_calls; see Store.stale_calls.
_STALE_SCRIPT = """
local P, now, silent_for = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local limit, ttl, max_calls = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local due, order = {}, {}
if limit <= 0 then return order end
local function add(member, last_chance)
  if due[member] == nil then order[#order + 1] = member end
  if last_chance or due[member] == nil then due[member] = last_chance end
end
if redis.call('ZCARD', P .. 'calls') + limit >= max_calls then
  for _, member in ipairs(redis.call('ZRANGE', P .. 'calls', 0, limit - 1)) do
    local st = redis.call('HMGET', P .. 'c:' .. member, 'fin', 'lc')
    if not st[1] and not st[2] then add(member, true) end
  end
end
local last_chance_from = now - ttl + silent_for
local start, done = 0, false
while not done do
  local batch = redis.call('ZRANGE', P .. 'open', start, start + 199)
  if #batch == 0 then break end
  for _, member in ipairs(batch) do
    if #order >= limit then done = true break end
    local st = redis.call('HMGET', P .. 'c:' .. member, 'cr', 'le', 'of', 'lc')
    local created = tonumber(st[1])
    if created <= last_chance_from then
      if not st[4] then add(member, true) end
    else
      local last = created + (tonumber(st[2]) or 0) * 0.1
      if now - last >= silent_for * 2 ^ (tonumber(st[3]) or 0) then add(member, false) end
    end
  end
  start = start + 200
end
for _, member in ipairs(order) do
  local k = P .. 'c:' .. member
  if due[member] then
    redis.call('HSET', k, 'lc', 1)
  elseif (tonumber(redis.call('HGET', k, 'of')) or 0) < 7 then
    redis.call('HINCRBY', k, 'of', 1)
  end
end
return order
"""

_DOWN = (RedisError, OSError, asyncio.TimeoutError)


class _Queued(NamedTuple):
    sha: str
    args: Sequence[Any]
    future: asyncio.Future[Any] | None  # None: the caller sends it itself


_SEND = object()  # a waiting call's turn to send the next round trip


class Batcher:
    """Script calls made while one round trip is out go together in the next.

    A call never waits for a timer: alone, it is sent at once, by its own caller. The
    calls that arrive while that round trip is out wait; when it is back, the first of
    them sends them all, as one round trip, and so on. Under load that costs the client
    a small part of what a round trip each would (bench/README.md). Redis runs a
    pipeline's scripts in order, each atomically, as if they had come one by one.
    One round trip is out at a time, on the batcher's own connection.
    """

    def __init__(self, redis: aioredis.Redis, scripts: Sequence[AsyncScript],
                 registry: CollectorRegistry, timeout: float, limit: int = 256) -> None:
        self.redis = redis
        self.timeout = timeout
        self._conn: AbstractConnection | None = None
        self.scripts = scripts
        self.limit = limit
        self.sizes = Histogram(
            "signalwire_exporter_store_pipeline_commands",
            "Script calls sent to the state store in one round trip: above 1 while "
            "callbacks arrive faster than one round trip each.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=registry)
        self._waiting: list[_Queued] = []
        self._busy = False  # a round trip is out, or its successor is about to send

    async def run(self, script: AsyncScript, *args: Any) -> Any:
        """The script's result (or the error that stopped its round trip): ``args`` are
        EVALSHA's after the SHA (the number of keys, the keys, the arguments)."""
        if not self._busy:
            self._busy = True
            batch = [_Queued(script.sha, args, None)]
        else:
            future = asyncio.get_running_loop().create_future()
            queued = _Queued(script.sha, args, future)
            self._waiting.append(queued)
            try:
                result = await future
            except asyncio.CancelledError:
                if (future.done() and not future.cancelled()
                        and future.result() is _SEND):  # told to send, and gone
                    self._waiting.remove(queued)
                    self._hand_off()
                raise
            if result is not _SEND:
                return result
            batch = self._waiting[:self.limit]  # this call's is first
            del self._waiting[:self.limit]
        try:
            self.sizes.observe(len(batch))
            results = await self._execute([(queued.sha, queued.args) for queued in batch])
        except BaseException as exc:
            failure = exc if isinstance(exc, Exception) else RedisConnectionError(
                "the round trip was cut short")
            for _, _, waiter in batch[1:]:
                if waiter is not None and not waiter.done():
                    waiter.set_exception(failure)
            raise
        finally:
            self._hand_off()
        for (_, _, waiter), result in zip(batch[1:], results[1:], strict=True):
            if waiter is None or waiter.done():  # its caller gave up; Redis ran it anyway
                continue
            if isinstance(result, Exception):
                waiter.set_exception(result)
            else:
                waiter.set_result(result)
        if isinstance(results[0], Exception):
            raise results[0]
        return results[0]

    def _hand_off(self) -> None:
        """The first waiting call sends the next round trip; none waiting, the next
        call to come sends its own."""
        while self._waiting:
            future = self._waiting[0].future
            assert future is not None
            if not future.done():
                future.set_result(_SEND)
                return
            self._waiting.pop(0)  # its caller gave up before it was sent
        self._busy = False

    async def _execute(self, commands: list[tuple[str, Sequence[Any]]]) -> list[Any]:
        results = await self._pipeline(commands)
        missing = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
        if missing:  # a restarted Redis has forgotten the scripts: load them, run those again
            async with asyncio.timeout(self.timeout):  # this client has no socket timeout
                for script in self.scripts:
                    await self.redis.script_load(script.script)
            again = await self._pipeline([commands[i] for i in missing])
            for i, result in zip(missing, again, strict=True):
                results[i] = result
        return results

    async def _pipeline(self, commands: list[tuple[str, Sequence[Any]]]) -> list[Any]:
        """One round trip on the batcher's own connection. Not redis-py's ``Pipeline``:
        that costs about 60 us more a round trip (bench/README.md), and a pipeline that
        failed is spooled, not retried."""
        conn = self._conn
        if conn is None:
            conn = self._conn = await self.redis.connection_pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            async with asyncio.timeout(self.timeout):  # one timer for the whole batch
                await conn.send_packed_command(pack(
                    [("EVALSHA", sha, *args) for sha, args in commands], conn))
                results: list[Any] = []
                for _ in commands:
                    try:
                        results.append(await conn.read_response(timeout=math.inf))
                    except ResponseError as exc:  # that script's error: the rest stand
                        results.append(exc)
        except BaseException:
            await self._drop_connection()
            raise
        return results

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.disconnect(nowait=True)
            await self.redis.connection_pool.release(conn)

    async def close(self) -> None:
        await self._drop_connection()
        await self.redis.aclose()


def pack(commands: list[tuple[Any, ...]], conn: AbstractConnection) -> bytes | list[bytes]:
    """The commands in the protocol: by hiredis where it is installed (about 30 vs 4 us
    a script call), else by redis-py, which does not use hiredis to encode."""
    if hiredis is None:
        return conn.pack_commands(commands)
    return b"".join([hiredis.pack_command(command) for command in commands])


def _flag(value: object) -> str:
    return "1" if value else ""


def _lua_bounds(histogram: PlainHistogram) -> str:
    """A histogram's finite bounds as a Lua table, for a script's constants."""
    return "{" + ", ".join(repr(bound) for bound in histogram.bounds[:-1]) + "}"


class RedisStore:
    """The shared backend: see the module docstring."""

    backend = "redis"

    def __init__(self, config: Config, lifecycles: dict[str, Lifecycle],
                 metrics: ExporterMetrics, item_metrics: StatusMetrics,
                 registry: CollectorRegistry) -> None:
        state = config.state
        assert state.redis_url is not None  # parse_config requires it for this backend
        self.config = config
        self.prefix = state.key_prefix
        self.lifecycles = lifecycles
        self.metrics = metrics
        self.item_metrics = item_metrics
        self.shared: tuple[Plain, ...] = (*metrics.shared, *item_metrics.shared)
        self.exemplified = tuple(series for series in self.shared if series.exemplar_label)
        self.redis: aioredis.Redis = aioredis.from_url(
            state.redis_url, socket_timeout=state.timeout_seconds,
            socket_connect_timeout=state.timeout_seconds, health_check_interval=30)
        call_constants = (
            f"local max_calls, report_size = {config.tracking.max_calls}, "
            f"{config.reports.failed_calls.max_entries}\n"
            f"local gauge, expired = '{metrics.in_progress.name}', '{metrics.expired.name}'\n"
            f"local pdd_family, pdd_bounds = '{metrics.post_dial_delay.name}', "
            f"{_lua_bounds(metrics.post_dial_delay)}\n"
            f"local tta_family, tta_bounds = '{metrics.time_to_answer.name}', "
            f"{_lua_bounds(metrics.time_to_answer)}")
        elapsed = item_metrics.message_delivery
        item_constants = (
            f"local max_items, expired = {config.tracking.max_items}, "
            f"'{item_metrics.expired.name}'\n"
            f"local elapsed_family, elapsed_bounds = '{elapsed.name}', {_lua_bounds(elapsed)}")
        self._call_script = self.redis.register_script(
            _CALL_SCRIPT.replace("@CONSTANTS@", call_constants))
        self._item_script = self.redis.register_script(
            _ITEM_SCRIPT.replace("@CONSTANTS@", item_constants))
        self._expire_script = self.redis.register_script(_EXPIRE_SCRIPT)
        self._count_once_script = self.redis.register_script(_COUNT_ONCE_SCRIPT)
        self._stale_script = self.redis.register_script(_STALE_SCRIPT)
        # The batcher's connection times out a whole round trip itself: without a socket
        # timeout of its own, redis-py writes without a task of asyncio.wait_for's.
        self._batch = Batcher(
            aioredis.from_url(state.redis_url, socket_timeout=None,
                              socket_connect_timeout=state.timeout_seconds,
                              health_check_interval=30),
            (self._call_script, self._item_script, self._count_once_script), registry,
            state.timeout_seconds)
        self._spool: deque[tuple[str, Any, float, int]] = deque()
        self._spool_max = state.spool_max_callbacks
        self._drainer: asyncio.Task[None] | None = None
        self._sizes: dict[str, int] = {}
        self._report_size = 0
        self.up = Gauge("signalwire_exporter_store_up",
                        "1 while the state store (Redis) answers, 0 while callbacks are "
                        "spooled or it cannot be reached.", registry=registry)
        self.up.set(1)
        self._is_up = True
        Gauge("signalwire_exporter_store_spooled_callbacks",
              "Accepted callbacks waiting in this replica's spool for the store to return.",
              registry=registry).set_function(lambda: float(len(self._spool)))
        self.errors = Counter("signalwire_exporter_store_errors_total",
                              "Store commands that failed or timed out (the callback was "
                              "spooled, the scrape served the last values read, or "
                              "the failed-call report answered 503).",
                              registry=registry)
        self.spool_full = Counter("signalwire_exporter_store_spool_rejected_total",
                                  "Callbacks answered 503 because the spool was full.",
                                  registry=registry)

    # --- the contract ------------------------------------------------------------------

    def clock(self) -> float:
        # Wall-clock time: every replica ages the shared state by the same clock.
        return time.time()

    async def call(self, event: CallEvent, now: float) -> Decision:
        if not self._spool:
            try:
                decision = await self._call(event, now)
                assert decision is not None  # only a settle finds no call
                return decision
            except _DOWN as exc:
                self._failed(exc)
        self._enqueue("call", event, now, 0)
        return Decision(direction=event.direction, status=event.status)

    async def item(self, endpoint: str, event: ItemEvent, now: float,
                   wants: int) -> StatusDecision:
        if not self._spool:
            try:
                return await self._item(endpoint, event, now, wants)
            except _DOWN as exc:
                self._failed(exc)
        self._enqueue(endpoint, event, now, wants)
        return StatusDecision()

    async def expire(self, now: float) -> None:
        tracking = self.config.tracking
        args: list[str | float] = [
            self.prefix, now - tracking.call_ttl_seconds, self.metrics.in_progress.name,
            self.metrics.expired.name, self.item_metrics.expired.name]
        for lifecycle in self.lifecycles.values():
            args += [lifecycle.kind, now - tracking.item_ttl_seconds]
        try:
            for _ in range(100):  # bounded: 500 calls and items per kind a round
                if not await self._expire_script(args=args):
                    break
        except _DOWN as exc:
            self._failed(exc)

    async def claim(self, key: str, ttl: float) -> bool:
        try:
            return bool(await self.redis.set(f"{self.prefix}claim:{key}", 1, nx=True,
                                             px=max(1, round(ttl * 1000))))
        except _DOWN as exc:
            self._failed(exc)
            return True  # better a second SMS than none

    async def release(self, key: str) -> None:
        with contextlib.suppress(*_DOWN):
            await self.redis.delete(f"{self.prefix}claim:{key}")

    async def count_once(self, key: str, ttl: float, family: str,
                         labels: tuple[str, ...]) -> bool:
        once = (key, ttl, family, labels)
        if not self._spool:
            try:
                return await self._count_once(once)
            except _DOWN as exc:
                self._failed(exc)
        # Spooled: taken as the first delivery; if it was not, the events it leads to
        # are duplicates when applied, and only this count is off by one.
        self._enqueue("once", once, 0.0, 0)
        return True

    async def _count_once(self, once: tuple[str, float, str, tuple[str, ...]]) -> bool:
        key, ttl, family, labels = once
        return bool(await self._batch.run(
            self._count_once_script, 2, f"{self.prefix}claim:{key}",
            f"{self.prefix}m:{family}", max(1, round(ttl * 1000)), "|".join(labels)))

    async def stale_calls(self, now: float, silent_for: float, limit: int) -> list[str]:
        tracking = self.config.tracking
        try:
            found = await self._stale_script(args=[
                self.prefix, now, silent_for, limit, tracking.call_ttl_seconds,
                tracking.max_calls])
        except _DOWN as exc:
            self._failed(exc)
            return []
        return [_text(sid) for sid in found]

    async def settle(self, call_sid: str, status: str, direction: str,
                     duration: int | None, now: float) -> Decision | None:
        if status not in FINAL_CALL_STATUSES:
            raise ValueError(f"not a final call status: {status}")
        event = CallEvent(call_sid=call_sid, status=status, direction=direction,
                          endpoint="voice", call_duration=duration)
        return await self._call(event, now, settle=True)

    async def add_price(self, direction: str, currency: str, amount: float) -> bool:
        try:
            await self.redis.hincrbyfloat(f"{self.prefix}m:{self.metrics.price.name}",
                                          f"{direction}|{currency}", amount)
        except _DOWN as exc:
            self._failed(exc)
            return False
        return True

    async def before_scrape(self) -> None:
        """Read every cluster-wide family (one pipeline) into the plain series."""
        pipe = self.redis.pipeline(transaction=False)
        for series in self.shared:
            pipe.hgetall(f"{self.prefix}m:{series.name}")
        for series in self.exemplified:
            pipe.hgetall(f"{self.prefix}m:{series.name}{EXEMPLARS}")
        pipe.zcard(f"{self.prefix}calls")
        for lifecycle in self.lifecycles.values():
            pipe.zcard(f"{self.prefix}items:{lifecycle.kind}")
        try:
            results = await pipe.execute()
        except _DOWN as exc:
            self._failed(exc)
            return  # serve the values last read; signalwire_exporter_store_up says why
        self._back()
        for series, values in zip(self.shared, results, strict=False):
            load(series, values)
        exemplars = results[len(self.shared):len(self.shared) + len(self.exemplified)]
        for series, values in zip(self.exemplified, exemplars, strict=True):
            load_exemplars(series, values)
        sizes = results[len(self.shared) + len(self.exemplified):]
        self._sizes["calls"] = sizes[0]
        for lifecycle, size in zip(self.lifecycles.values(), sizes[1:], strict=False):
            self._sizes[lifecycle.kind] = size

    async def start(self) -> None:
        self._drainer = asyncio.create_task(self._drain())
        with contextlib.suppress(*_DOWN):
            await self.redis.ping()

    async def close(self) -> None:
        if self._drainer is not None:
            self._drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drainer
        if self._spool:
            # A clean stop hands its spool to Redis, trying for as long as a memory
            # backend would wait for its final scrape (shutdown.final_scrape_timeout_seconds).
            loop = asyncio.get_running_loop()
            deadline = loop.time() + max(self.config.shutdown.final_scrape_timeout_seconds,
                                         self.config.state.timeout_seconds)
            while self._spool and loop.time() < deadline:
                try:
                    async with asyncio.timeout(max(0.0, deadline - loop.time())):
                        await self._drain_once()
                except (*_DOWN, TimeoutError):
                    await asyncio.sleep(min(0.5, max(0.0, deadline - loop.time())))
            if self._spool:
                log.warning("state store unreachable at stop: spooled callbacks lost",
                            extra={"fields": {"spooled": len(self._spool)}})
        await self._batch.close()
        await self.redis.aclose()

    def tracked_calls(self) -> int:
        return self._sizes.get("calls", 0)

    def tracked_items(self, endpoint: str) -> int:
        return self._sizes.get(self.lifecycles[endpoint].kind, 0)

    async def failed_call_rows(self, now: float) -> list[dict[str, str]]:
        """The group's report rows, oldest first, within the report's age limit; a 503
        while Redis cannot be reached (the rows are the group's: none are held here)."""
        try:
            rows = await self.redis.lrange(f"{self.prefix}report", 0, -1)
        except _DOWN as exc:
            self._failed(exc)
            raise Rejected(503, "unavailable", "the state store is unreachable, and the "
                                               "report is kept there: retry later") from None
        self._back()
        deadline = now - self.config.reports.failed_calls.max_age_seconds
        kept = []
        for text in reversed(rows):
            row = json.loads(text)
            if float(row.pop("_at", 0)) >= deadline:
                kept.append(row)
        self._report_size = len(kept)
        return kept

    def failed_calls_held(self) -> int:
        return self._report_size

    # --- one event, one script call ---------------------------------------------------

    async def _call(self, event: CallEvent, now: float, *,
                    settle: bool = False) -> Decision | None:
        metrics = self.metrics
        stamp = ""
        if event.timestamp is not None:
            stamp = str(int(event.timestamp.timestamp()))
        row = ""
        if event.status in FINAL_CALL_STATUSES:
            entry = failed_call_row(event, "", "", _wall(now))
            row = json.dumps({"reported": dict.fromkeys(REPORTED_STATUSES, True),
                              "row": {**entry, "_at": now}})
        ops = call_ops(metrics, event, now)
        if settle:
            ops += ("f", metrics.reconciled.name, "@F", 1)
        args: list[str | float | int] = [
            self.prefix, event.call_sid, event.status,
            "" if event.sequence_number is None else event.sequence_number,
            event.direction, now, stamp,
            _flag(event.call_duration is not None), _flag(event.audio_in_mos),
            _flag(event.sip_result_code is not None), event.unanswered_status or "", row,
            _flag(settle), "".join(f"|{value}" for value in event.slice), _joined(ops)]
        result = await self._batch.run(self._call_script, 0, *args)
        self._back()
        if result[0] == 2:
            return None
        direction, status = _text(result[1]), _text(result[2])
        slice_ = tuple(_text(result[-1]).split("|")[1:])
        if result[0]:
            return Decision(direction=direction, status=status, slice=slice_, duplicate=True)
        return Decision(
            direction=direction, status=status, slice=slice_, late=bool(result[3]),
            final_status=_text(result[4]) or None, in_progress_delta=int(result[5]),
            moved_from=_text(result[6]) or None, observe_duration=bool(result[7]),
            observe_quality=bool(result[8]), observe_sip=bool(result[9]),
            post_dial_delay=_number(result[10]), time_to_answer=_number(result[11]))

    async def _item(self, endpoint: str, event: ItemEvent, now: float,
                    wants: int) -> StatusDecision:
        lifecycle = self.lifecycles[endpoint]
        args: list[str | float | int] = [
            self.prefix, lifecycle.kind, event.sid, event.status, now,
            _flag(event.status in lifecycle.finals), _flag(event.status in lifecycle.start),
            _flag(event.status == lifecycle.end), _flag(lifecycle.end is not None), wants,
            _joined(item_ops(self.item_metrics, event, now))]
        result = await self._batch.run(self._item_script, 0, *args)
        self._back()
        if result[0]:
            return StatusDecision(duplicate=True)
        return StatusDecision(late=bool(result[1]), final_status=_text(result[2]) or None,
                              granted=int(result[3]), elapsed=_number(result[4]))

    # --- the spool ----------------------------------------------------------------------

    def _failed(self, exc: BaseException) -> None:
        self.errors.inc()
        if self._is_up:  # log the change only
            log.warning("state store unreachable: spooling callbacks",
                        extra={"fields": {"error": type(exc).__name__}})
        self._is_up = False
        self.up.set(0)

    def _back(self) -> None:
        """A command succeeded: up again, once the spool is applied too."""
        if not self._is_up and not self._spool:
            self._is_up = True
            self.up.set(1)

    def _enqueue(self, endpoint: str, event: Any, now: float, wants: int) -> None:
        if len(self._spool) >= self._spool_max:
            self.spool_full.inc()
            raise Rejected(503, "unavailable",
                           "the state store is unreachable and this replica's spool is "
                           "full; retry later")
        self._spool.append((endpoint, event, now, wants))

    async def _drain_once(self) -> None:
        """Apply spooled events in arrival order; stop at the first failure."""
        while self._spool:
            endpoint, event, now, wants = self._spool[0]
            if endpoint == "call":
                await self._call(event, now)
            elif endpoint == "once":
                await self._count_once(event)
            else:
                await self._item(endpoint, event, now, wants)
            self._spool.popleft()

    async def _drain(self) -> None:
        delay = 0.05
        while True:
            await asyncio.sleep(delay if self._spool else 0.05)
            if not self._spool:
                continue
            try:
                await self._drain_once()
                self._back()
                delay = 0.05
                log.info("state store back: spool applied")
            except _DOWN as exc:
                self._failed(exc)
                delay = min(delay * 2, 2.0)


def load(series: Plain, values: dict[bytes, bytes]) -> None:
    """Replace a plain series' values with the fields of its Redis hash."""
    width = len(series.labelnames)
    if isinstance(series, PlainHistogram):
        size = len(series.bounds) + 1
        counts: dict[tuple[str, ...], list[float]] = {
            labels: [0.0] * size for labels in series.series}
        for field, value in values.items():
            *labels, slot = field.decode().split("|")
            row = counts.setdefault(tuple(labels[:width]), [0.0] * size)
            row[-1 if slot == "s" else int(slot)] = float(value)
        series.series = counts
        return
    totals = dict.fromkeys(series.values, 0.0)
    for field, value in values.items():
        text = field.decode()
        totals[tuple(text.split("|")) if width else ()] = float(value)
    series.values = totals


def load_exemplars(series: Plain, values: dict[bytes, bytes]) -> None:
    """Replace a plain series' exemplars with the fields of its ``:ex`` hash."""
    width = len(series.labelnames)
    found: dict[tuple[str, ...], ExemplarOf] = {}
    for field, value in values.items():
        sid, number, at = value.decode().rsplit("|", 2)
        found[tuple(field.decode().split("|"))] = (sid, float(number), float(at))
    if isinstance(series, PlainHistogram):  # the field ends in the bucket index
        series.exemplars = {(parts[:width], int(parts[width])): exemplar
                            for parts, exemplar in found.items()}
    else:
        series.exemplars = {parts if width else (): exemplar
                            for parts, exemplar in found.items()}


def _joined(ops: list[str | float]) -> str:
    """Operations as the scripts read them: one line each, fields tab-separated. A single
    argument: redis-py encodes each argument in Python, and a callback has dozens."""
    return "".join(f"{ops[i]}\t{ops[i + 1]}\t{ops[i + 2]}\t{ops[i + 3]!r}\n"
                   if isinstance(ops[i + 3], float) else
                   f"{ops[i]}\t{ops[i + 1]}\t{ops[i + 2]}\t{ops[i + 3]}\n"
                   for i in range(0, len(ops), 4))


def _text(value: bytes | str | int) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _number(value: bytes | str) -> float | None:
    text = _text(value)
    return float(text) if text else None


def _wall(now: float) -> datetime:
    return datetime.fromtimestamp(now, UTC)

