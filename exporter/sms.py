"""SMS relay: Alertmanager webhook notification → one short SMS per recipient.

Replaces the seed example's hard-coded "100 failures → SMS": Prometheus decides when
to alert, Alertmanager groups and routes, and this module only turns one
notification into one text and hands it to SignalWire's Messages API (the
Compatibility REST API, what ``client.messages.create`` called in the seed).

What the relay answers Alertmanager (which retries on 5xx, not on 4xx):

* every recipient got the SMS, or only some did → ``200``: retrying the whole
  notification would text the recipients who already have it again;
* nobody got it and at least one failure may pass (5xx, 429, timeout, connection)
  → ``502``, so Alertmanager tries again later; nobody has the text yet;
* nobody got it and the API refused every message (4xx: bad credentials, bad
  number) → ``424``: a retry would fail the same way, so Alertmanager should stop.

The same notification may arrive more than once: at two replicas behind a load
balancer, from both members of an Alertmanager HA pair (which differ only in
``externalURL``), or again after an answer was lost. Each recipient's SMS is claimed
in the shared store (``Store.claim``) under a key made from what identifies the
notification, so only the first delivery texts; a claim whose SMS failed is released,
so Alertmanager's retry can still send it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import aiohttp

from .config import LimitsConfig, SmsConfig
from .errors import Rejected, invalid
from .metrics import RelayMetrics
from .payloads import decode_json
from .reports import mask_number
from .signalwire_api import api_session

if TYPE_CHECKING:
    from .store import Store

log = logging.getLogger(__name__)

API_PATH = "/api/laml/2010-04-01/Accounts/{project_id}/Messages.json"
ELLIPSIS = "..."  # not "…": that one character would force UCS-2 and 70-character segments
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_SPACES = re.compile(r"\s+")


# --- auth ------------------------------------------------------------------------------------

def authorize(header: str | None, token: str) -> None:
    """Accept ``Bearer <token>``, or basic auth whose password is ``token``; else 401."""
    scheme, _, credentials = (header or "").strip().partition(" ")
    credentials = credentials.strip()
    secret = ""
    if scheme.lower() == "bearer":
        secret = credentials
    elif scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        secret = decoded.partition(":")[2]
    if not token or not hmac.compare_digest(secret.encode(), token.encode()):
        raise Rejected(401, "unauthorized", "missing or wrong webhook token "
                                            "(Authorization: Bearer, see sms.webhook_token)")


# --- payload → text --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Notification:
    """What the SMS says about one Alertmanager notification."""

    status: Literal["firing", "resolved"]
    alertname: str
    summary: str
    count: int
    description: str = ""
    key: str = ""  # the same for every delivery of this notification (notification_key)


def _mapping(value: Any, name: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise invalid(f"{name} must be an object of strings")
    return value


def _status(value: Any, name: str) -> Literal["firing", "resolved"]:
    if value == "firing":
        return "firing"
    if value == "resolved":
        return "resolved"
    raise invalid(f"{name} must be firing or resolved")


def parse_notification(document: Any) -> Notification:
    """Check an Alertmanager webhook payload (version 4) and pick what the SMS needs."""
    if not isinstance(document, dict):
        raise invalid("body must be an Alertmanager webhook JSON object")
    version = document.get("version", "4")
    if version != "4":
        raise invalid(f"unsupported webhook version {str(version)[:10]!r}; expected \"4\"")
    status = _status(document.get("status"), "status")
    alerts = document.get("alerts")
    if not isinstance(alerts, list) or not alerts:
        raise invalid("alerts must be a non-empty list")
    names: list[str] = []
    first: dict[str, str] = {}  # annotations of the first alert in the notification's status
    count = 0
    for index, alert in enumerate(alerts):
        if not isinstance(alert, dict):
            raise invalid(f"alerts[{index}] must be an object")
        matches = _status(alert.get("status"), f"alerts[{index}].status") == status
        count += matches
        name = _mapping(alert.get("labels"), f"alerts[{index}].labels").get("alertname", "")
        if name and name not in names:
            names.append(name)
        annotations = _mapping(alert.get("annotations"), f"alerts[{index}].annotations")
        if matches and not first:
            first = annotations
    common_labels = _mapping(document.get("commonLabels"), "commonLabels")
    group_labels = _mapping(document.get("groupLabels"), "groupLabels")
    common = _mapping(document.get("commonAnnotations"), "commonAnnotations")
    alertname = (group_labels.get("alertname") or common_labels.get("alertname")
                 or ",".join(names) or "alert")
    return Notification(status, alertname,
                        common.get("summary") or first.get("summary", ""),
                        count or len(alerts),
                        common.get("description") or first.get("description", ""),
                        notification_key(document, alerts))


def notification_key(document: dict[str, Any], alerts: list[dict[str, Any]]) -> str:
    """A hash of what makes a notification itself: receiver, group, status and alerts.

    Not ``externalURL`` (each Alertmanager of an HA pair puts its own) nor the text. An
    alert is its fingerprint (its labels, if a sender gives none), status, start and end:
    a firing alert's ``endsAt`` is the zero time, so Alertmanager's repeat of the same
    group hashes the same; ``sms.dedupe_window_seconds`` stays below repeat_interval.
    """
    def alert_identity(alert: dict[str, Any]) -> str:
        return json.dumps([alert.get("fingerprint") or alert.get("labels"), alert.get("status"),
                           alert.get("startsAt"), alert.get("endsAt")], sort_keys=True)

    identity = [document.get("receiver"), document.get("groupKey"), document.get("status"),
                sorted(map(alert_identity, alerts))]
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def claim_key(key: str, to: str) -> str:
    """The store key of notification ``key``'s SMS to ``to`` (no number in clear)."""
    return "sms:" + hashlib.sha256(f"{key}\n{to}".encode()).hexdigest()


def truncate(text: str, max_length: int) -> str:
    """Cut ``text`` to ``max_length``, at a word boundary when one is near the end."""
    if len(text) <= max_length:
        return text
    cut = text[:max_length - len(ELLIPSIS)]
    space = cut.rfind(" ")
    if space > max_length // 2:
        cut = cut[:space]
    return cut.rstrip(" ,.;:-") + ELLIPSIS


def format_sms(notification: Notification, max_length: int) -> str:
    """``[FIRING:1] Name: summary. description``, cut to ``max_length``.

    The description goes last: it carries the numbers (how many calls failed), useful
    when it fits, the first thing cut when it does not.
    """
    head = f"[{notification.status.upper()}:{notification.count}] {notification.alertname}"
    parts = [part.strip() for part in (notification.summary, notification.description)
             if part.strip()]
    body = " ".join([*(p if p[-1] in ".!?" else f"{p}." for p in parts[:-1]), *parts[-1:]])
    text = f"{head}: {body}" if body else head
    text = _SPACES.sub(" ", _CONTROL.sub(" ", text)).strip()
    return truncate(text, max_length)


def decode_notification(content_type: str, body: bytes) -> Notification:
    if content_type not in ("application/json", ""):
        raise Rejected(415, "unsupported", "send the Alertmanager webhook as application/json")
    return parse_notification(decode_json(body))


# --- text → SignalWire ---------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Attempt:
    """The end of one API request: ``retry`` says whether trying again may help."""

    outcome: str  # sent | client_error | server_error | timeout | connection_error
    retry: bool
    status: int | None = None


def classify(status: int) -> Attempt:
    if 200 <= status < 300:
        return Attempt("sent", retry=False, status=status)
    if status == 429 or status >= 500:  # 429 = rate limited: waiting is the cure
        return Attempt("server_error" if status >= 500 else "rate_limited", True, status)
    return Attempt("client_error", retry=False, status=status)


def answer(results: list[Attempt]) -> tuple[int, str]:
    """HTTP status for Alertmanager and the notification outcome (see module docstring)."""
    sent = sum(result.outcome == "sent" for result in results)
    if sent == len(results):
        return 200, "sent"
    if sent:
        return 200, "partial"
    if any(result.retry for result in results):
        return 502, "failed"
    return 424, "refused"


class SmsRelay:
    """Sends through one aiohttp ClientSession per application (opened by ``session_ctx``)."""

    def __init__(self, config: SmsConfig, metrics: RelayMetrics,
                 read_timeout_seconds: float) -> None:
        self.config = config
        self.metrics = metrics
        self.limits = LimitsConfig(max_body_bytes=config.max_payload_bytes,
                                   read_timeout_seconds=read_timeout_seconds)
        self.session: aiohttp.ClientSession | None = None
        self.url = (f"{config.space_url}"
                    f"{API_PATH.format(project_id=config.project_id)}")

    async def open(self) -> None:
        self.session = api_session(self.config.project_id, self.config.api_token,
                                   self.config.timeout_seconds)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def deliver(self, notification: Notification,
                      store: Store) -> tuple[int, dict[str, Any]]:
        """Text every recipient at once; the status and JSON answer for Alertmanager."""
        text = format_sms(notification, self.config.max_length)
        outcomes = await asyncio.gather(*(self.send_once(store, notification.key, to, text)
                                          for to in self.config.to_numbers))
        results = [result for result in outcomes if result is not None]
        duplicate = len(outcomes) - len(results)
        status, outcome = answer(results) if results else (200, "duplicate")
        self.metrics.notification(outcome)
        sent = sum(result.outcome == "sent" for result in results)
        document: dict[str, Any] = {"sent": sent, "failed": len(results) - sent}
        if duplicate:
            document["duplicate"] = duplicate
        if status != 200:
            document["error"] = ("SignalWire API did not accept the SMS"
                                 + (" (retry later)" if status == 502 else " (not retried)"))
        log.log(logging.INFO if status == 200 else logging.ERROR, "alert notification relayed",
                extra={"fields": {"alert": notification.alertname,
                                  "alert_status": notification.status, "outcome": outcome,
                                  "sent": sent, "failed": len(results) - sent,
                                  "duplicate": duplicate}})
        return status, document

    async def send_once(self, store: Store, key: str, to: str, text: str) -> Attempt | None:
        """``send``, unless another delivery of the notification has texted ``to`` (None)."""
        window = self.config.dedupe_window_seconds
        if not window:
            return await self.send(to, text)
        claim = claim_key(key, to)
        if not await store.claim(claim, window):
            self.metrics.sms_duplicate()
            return None
        attempt = await self.send(to, text)
        if attempt.outcome != "sent":
            await store.release(claim)  # let Alertmanager's retry try again
        return attempt

    async def send(self, to: str, text: str) -> Attempt:
        """One SMS to ``to``, retried with exponential backoff while retrying may help."""
        delay = self.config.retry_initial_delay_seconds
        attempt = Attempt("connection_error", retry=True)
        for number in range(1, self.config.max_attempts + 1):
            attempt = await self._post(to, text)
            self.metrics.api_request(attempt.outcome)
            if not attempt.retry:
                break
            log.warning("SMS API request failed", extra={"fields": {
                "to": mask_number(to), "attempt": number, "outcome": attempt.outcome,
                "http_status": attempt.status}})
            if number < self.config.max_attempts:
                await asyncio.sleep(delay)
                delay *= 2
        self.metrics.sms(attempt.outcome == "sent")
        if attempt.outcome != "sent":
            log.error("SMS not sent", extra={"fields": {
                "to": mask_number(to), "outcome": attempt.outcome,
                "http_status": attempt.status}})
        return attempt

    async def _post(self, to: str, text: str) -> Attempt:
        if self.session is None:  # pragma: no cover - the app opens it before serving
            raise RuntimeError("SmsRelay.open() was not called")
        form = {"From": self.config.from_number, "To": to, "Body": text}
        try:
            # No redirects: the API has none, and following one could carry the token away.
            async with self.session.post(self.url, data=form,
                                         allow_redirects=False) as response:
                await response.read()
                return classify(response.status)
        except TimeoutError:
            return Attempt("timeout", retry=True)
        except aiohttp.ClientError:
            return Attempt("connection_error", retry=True)
