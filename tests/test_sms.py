"""The SMS relay: formatting, auth, and delivery to a real local stand-in of the API."""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from exporter import sms
from exporter.config import ConfigError, parse_config
from exporter.errors import Rejected

from .conftest import ClientFactory, sample
from .fake_signalwire import FROM, HANG, FakeSignalWire, fake_api

__all__ = ["fake_api"]  # the fixture, imported so pytest finds it here

TO = ["+15551234567", "+15559876543"]
BEARER = {"Authorization": "Bearer hook-secret"}
SUMMARY = "Many SignalWire calls failed on signalwire-exporter"
DESCRIPTION = "131 calls ended failed in the last 1h."
FIRING_SMS = f"[FIRING:2] SignalWireCallFailuresHigh: {SUMMARY}. {DESCRIPTION}"


def notification(status: str = "firing", count: int = 2, **extra: Any) -> dict[str, Any]:
    """An Alertmanager webhook payload (version 4), as Alertmanager 0.25 sends it."""
    alerts = [{
        "status": status,
        "labels": {"alertname": "SignalWireCallFailuresHigh", "severity": "critical",
                   "instance": f"exporter-{i}:9880", "job": "signalwire-exporter"},
        "annotations": {"summary": SUMMARY, "description": DESCRIPTION,
                        "runbook_url": "https://example.com/runbook"},
        "startsAt": "2026-11-23T15:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph", "fingerprint": f"abc{i}",
    } for i in range(count)]
    document = {
        "version": "4", "groupKey": '{}:{alertname="SignalWireCallFailuresHigh"}',
        "truncatedAlerts": 0, "status": status, "receiver": "sms",
        "groupLabels": {"alertname": "SignalWireCallFailuresHigh"},
        "commonLabels": {"alertname": "SignalWireCallFailuresHigh", "severity": "critical",
                         "job": "signalwire-exporter"},
        "commonAnnotations": {"summary": SUMMARY, "description": DESCRIPTION,
                              "runbook_url": "https://example.com/runbook"},
        "externalURL": "http://alertmanager:9093", "alerts": alerts,
    }
    document.update(extra)
    return document


def relay_config(api: FakeSignalWire, to: list[str] | None = None,
                 **overrides: Any) -> dict[str, Any]:
    return {"sms": api.sms_config(to or TO[:1], retry_initial_delay_seconds=0.01,
                                  **overrides)}


async def notify(exporter_client: ClientFactory, api: FakeSignalWire, script: list[int],
                 to: list[str] | None = None, **overrides: Any,
                 ) -> tuple[TestClient, ClientResponse]:
    """Start an exporter relaying to ``api``, which answers ``script``; send one notification."""
    api.script[:] = script
    client = await exporter_client(relay_config(api, to, **overrides))
    response = await client.post("/alerts/sms", json=notification(), headers=BEARER)
    return client, response


# --- formatting (pure) -----------------------------------------------------------------------

def test_firing_sms_names_count_alert_summary_and_description() -> None:
    text = sms.format_sms(sms.parse_notification(notification()), 160)
    assert text == FIRING_SMS


def test_resolved_sms_counts_resolved_alerts() -> None:
    text = sms.format_sms(sms.parse_notification(notification("resolved", 1)), 160)
    assert text == f"[RESOLVED:1] SignalWireCallFailuresHigh: {SUMMARY}. {DESCRIPTION}"


def test_description_is_what_a_short_limit_cuts() -> None:
    text = sms.format_sms(sms.parse_notification(notification()), 105)
    assert text == f"[FIRING:2] SignalWireCallFailuresHigh: {SUMMARY}. 131 calls..."


def test_count_is_alerts_in_the_notifications_status() -> None:
    document = notification(count=3)
    document["alerts"][0]["status"] = "resolved"
    assert sms.parse_notification(document).count == 2


def test_annotations_fall_back_to_the_first_alert_then_to_none() -> None:
    document = notification(commonAnnotations={})
    document["alerts"][0]["status"] = "resolved"
    document["alerts"][1]["annotations"]["summary"] = "the firing one"
    assert format_text(document) == (
        f"[FIRING:1] SignalWireCallFailuresHigh: the firing one. {DESCRIPTION}")
    for alert in document["alerts"]:
        alert["annotations"] = {}
    assert format_text(document) == "[FIRING:1] SignalWireCallFailuresHigh"


def format_text(document: dict[str, Any]) -> str:
    return sms.format_sms(sms.parse_notification(document), 160)


def test_long_text_is_cut_at_a_word_with_ascii_ellipsis() -> None:
    summary = "calls failed " * 30
    document = notification(commonAnnotations={"summary": summary})
    text = sms.format_sms(sms.parse_notification(document), 160)
    assert len(text) <= 160
    assert text.endswith("failed...")
    assert text.startswith("[FIRING:2] SignalWireCallFailuresHigh: calls failed calls")


def test_newlines_and_control_characters_become_single_spaces() -> None:
    document = notification(commonAnnotations={"summary": "line one\n\n\tline\x00two  ",
                                               "description": "\r\nsecond\tpart\x7f"})
    assert format_text(document).endswith(": line one line two. second part")


@pytest.mark.parametrize(("document", "message"), [
    ([], "JSON object"),
    (notification(version="3"), "version"),
    (notification(status="pending"), "status"),
    (notification(alerts=[]), "alerts"),
    (notification(alerts=["x"]), "alerts[0]"),
    (notification(commonLabels={"alertname": 5}), "commonLabels"),
])
def test_bad_payloads_are_named(document: Any, message: str) -> None:
    with pytest.raises(Rejected) as info:
        sms.parse_notification(document)
    assert info.value.status == 400
    assert message in info.value.message


@pytest.mark.parametrize(("header", "ok"), [
    ("Bearer hook-secret", True),
    ("bearer  hook-secret", True),
    ("Basic " + base64.b64encode(b"alertmanager:hook-secret").decode(), True),
    ("Basic " + base64.b64encode(b"hook-secret:wrong").decode(), False),
    ("Basic not-base64!", False),
    ("Bearer hook-secret2", False),
    ("hook-secret", False),
    (None, False),
])
def test_webhook_auth(header: str | None, ok: bool) -> None:
    if ok:
        sms.authorize(header, "hook-secret")
    else:
        with pytest.raises(Rejected) as info:
            sms.authorize(header, "hook-secret")
        assert info.value.status == 401


@pytest.mark.parametrize(("outcomes", "expected"), [
    (["sent", "sent"], (200, "sent")),
    (["sent", "client_error"], (200, "partial")),
    (["sent", "timeout"], (200, "partial")),
    (["client_error", "timeout"], (502, "failed")),
    (["server_error"], (502, "failed")),
    (["client_error", "client_error"], (424, "refused")),
])
def test_answer_to_alertmanager(outcomes: list[str], expected: tuple[int, str]) -> None:
    retry = {"sent": False, "client_error": False}
    results = [sms.Attempt(o, retry.get(o, True)) for o in outcomes]
    assert sms.answer(results) == expected


# --- config ------------------------------------------------------------------------------------

def test_half_configured_relay_names_every_missing_key() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"sms": {"space_url": "example.signalwire.com"}}, environ={})
    assert sorted(info.value.errors) == sorted(
        f"sms.{key}: required when sms.space_url is set"
        + (f" (or set signalwire_api.{key})" if key in ("project_id", "api_token") else "")
        for key in ("project_id", "api_token", "from_number", "to_numbers", "webhook_token"))


def test_space_url_takes_a_bare_host_and_numbers_must_be_quoted() -> None:
    config = {"space_url": "example.signalwire.com", "project_id": "p", "api_token": "t",
              "from_number": "+15550001111", "to_numbers": ["+15551234567"],
              "webhook_token": "w"}
    assert parse_config({"sms": config}, environ={}).sms.space_url == (
        "https://example.signalwire.com")
    with pytest.raises(ConfigError) as info:
        parse_config({"sms": {**config, "to_numbers": [15551234567]}}, environ={})
    assert info.value.errors[0].startswith("sms.to_numbers: must be a list of strings")
    with pytest.raises(ConfigError) as info:
        parse_config({"sms": {**config, "space_url": "https://x.signalwire.com/api"}},
                     environ={})
    assert info.value.errors[0].startswith("sms.space_url:")


def test_repr_hides_secrets_and_numbers() -> None:
    config = parse_config({"sms": {
        "space_url": "example.signalwire.com", "project_id": "p", "api_token": "${TOKEN}",
        "from_number": "+15550001111", "to_numbers": ["+15551234567"],
        "webhook_token": "${HOOK}"}}, environ={"TOKEN": "PT-very-secret", "HOOK": "hooky"})
    text = repr(config)
    for secret in ("PT-very-secret", "hooky", "+15551234567", "+15550001111"):
        assert secret not in text


# --- through a real exporter and the fake API ----------------------------------------------------

async def test_each_recipient_gets_one_sms(exporter_client: ClientFactory,
                                           fake_api: FakeSignalWire) -> None:
    client, response = await notify(exporter_client, fake_api, [], TO)
    assert response.status == 200
    assert await response.json() == {"sent": 2, "failed": 0}
    assert sorted(fake_api.messages, key=lambda m: m["To"]) == [
        {"From": FROM, "To": to, "Body": FIRING_SMS} for to in TO]
    assert fake_api.refused == []
    assert sample(client, "signalwire_exporter_sms_total", result="sent") == 2
    assert sample(client, "signalwire_exporter_alert_notifications_total", outcome="sent") == 1


async def test_the_relay_uses_the_signalwire_api_credentials_when_its_own_are_unset(
        exporter_client: ClientFactory, fake_api: FakeSignalWire) -> None:
    own = {key: value for key, value in relay_config(fake_api)["sms"].items()
           if key not in ("space_url", "project_id", "api_token")}
    client = await exporter_client({"sms": own, "signalwire_api": fake_api.api_config()})
    response = await client.post("/alerts/sms", json=notification(), headers=BEARER)
    assert response.status == 200 and fake_api.refused == []
    assert [m["Body"] for m in fake_api.messages] == [FIRING_SMS]


def test_api_credentials_alone_do_not_turn_the_relay_on(fake_api: FakeSignalWire) -> None:
    config = parse_config({"signalwire_api": fake_api.api_config()}, environ={})
    assert not config.sms.enabled


async def test_resolved_and_basic_auth(exporter_client: ClientFactory,
                                       fake_api: FakeSignalWire) -> None:
    client = await exporter_client(relay_config(fake_api))
    basic = base64.b64encode(b"alertmanager:hook-secret").decode()
    response = await client.post("/alerts/sms", json=notification("resolved", 1),
                                 headers={"Authorization": f"Basic {basic}"})
    assert response.status == 200
    assert fake_api.messages[0]["Body"].startswith("[RESOLVED:1] SignalWireCallFailuresHigh")


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"},
                                     {"Authorization": "Basic !!"}])
async def test_callers_without_the_token_get_401(exporter_client: ClientFactory,
                                                 fake_api: FakeSignalWire,
                                                 headers: dict[str, str]) -> None:
    client = await exporter_client(relay_config(fake_api))
    response = await client.post("/alerts/sms", json=notification(), headers=headers)
    assert response.status == 401
    assert "error" in await response.json()
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert fake_api.requests == 0
    assert sample(client, "signalwire_exporter_alert_notifications_total",
                  outcome="unauthorized") == 1


@pytest.mark.parametrize(("body", "content_type", "status", "outcome"), [
    (b"{not json", "application/json", 400, "invalid"),
    (b'{"version": "4", "status": "firing", "alerts": []}', "application/json", 400,
     "invalid"),
    (b"", "application/json", 400, "invalid"),
    # json.loads raises a plain ValueError past 4300 digits: once a 500
    pytest.param(b'{"version": "4", "truncatedAlerts": ' + b"9" * 5000 + b"}",
                 "application/json", 400, "invalid", id="json-number-over-4300-digits"),
    (b"status=firing", "application/x-www-form-urlencoded", 415, "unsupported"),
])
async def test_bad_payloads_get_a_json_4xx(exporter_client: ClientFactory,
                                           fake_api: FakeSignalWire, body: bytes,
                                           content_type: str, status: int,
                                           outcome: str) -> None:
    client = await exporter_client(relay_config(fake_api))
    response = await client.post("/alerts/sms", data=body,
                                 headers={**BEARER, "Content-Type": content_type})
    assert response.status == status
    assert "error" in await response.json()
    assert fake_api.requests == 0
    assert sample(client, "signalwire_exporter_alert_notifications_total",
                  outcome=outcome) == 1


async def test_payload_over_the_limit_gets_413(exporter_client: ClientFactory,
                                               fake_api: FakeSignalWire) -> None:
    client = await exporter_client(relay_config(fake_api, max_payload_bytes=1000))
    document = notification(count=20)
    response = await client.post("/alerts/sms", json=document, headers=BEARER)
    assert response.status == 413
    assert fake_api.requests == 0


async def test_get_is_405(exporter_client: ClientFactory, fake_api: FakeSignalWire) -> None:
    client = await exporter_client(relay_config(fake_api))
    response = await client.get("/alerts/sms", headers=BEARER)
    assert response.status == 405
    assert "error" in await response.json()


async def test_relay_off_answers_404(exporter_client: ClientFactory) -> None:
    client = await exporter_client()
    response = await client.post("/alerts/sms", json=notification(), headers=BEARER)
    assert response.status == 404
    assert "sms" in (await response.json())["error"]
    assert sample(client, "signalwire_exporter_alert_notifications_total",
                  outcome="not_configured") == 1


async def test_5xx_is_retried_until_it_succeeds(exporter_client: ClientFactory,
                                                fake_api: FakeSignalWire) -> None:
    client, response = await notify(exporter_client, fake_api, [500, 503])
    assert response.status == 200
    assert fake_api.requests == 3
    assert len(fake_api.messages) == 1
    assert sample(client, "signalwire_exporter_sms_api_requests_total",
                  outcome="server_error") == 2
    assert sample(client, "signalwire_exporter_sms_total", result="sent") == 1


async def test_429_is_retried(exporter_client: ClientFactory,
                              fake_api: FakeSignalWire) -> None:
    _, response = await notify(exporter_client, fake_api, [429])
    assert response.status == 200
    assert fake_api.requests == 2


async def test_gives_up_after_max_attempts_with_502(exporter_client: ClientFactory,
                                                    fake_api: FakeSignalWire) -> None:
    client, response = await notify(exporter_client, fake_api, [500, 500, 500, 500],
                                    max_attempts=3)
    assert response.status == 502
    assert await response.json() == {
        "sent": 0, "failed": 1, "error": "SignalWire API did not accept the SMS (retry later)"}
    assert fake_api.requests == 3
    assert fake_api.messages == []
    assert sample(client, "signalwire_exporter_sms_total", result="failed") == 1
    assert sample(client, "signalwire_exporter_alert_notifications_total",
                  outcome="failed") == 1


async def test_4xx_is_not_retried_and_answers_424(exporter_client: ClientFactory,
                                                  fake_api: FakeSignalWire) -> None:
    client, response = await notify(exporter_client, fake_api, [400])
    assert response.status == 424
    assert fake_api.requests == 1
    assert sample(client, "signalwire_exporter_sms_api_requests_total",
                  outcome="client_error") == 1
    assert sample(client, "signalwire_exporter_alert_notifications_total",
                  outcome="refused") == 1


async def test_wrong_api_credentials_are_refused_not_retried(
        exporter_client: ClientFactory, fake_api: FakeSignalWire) -> None:
    _, response = await notify(exporter_client, fake_api, [], api_token="wrong")
    assert response.status == 424
    assert fake_api.refused == ["wrong basic auth"]


async def test_a_hanging_api_times_out_and_is_retried(exporter_client: ClientFactory,
                                                      fake_api: FakeSignalWire) -> None:
    client, response = await notify(exporter_client, fake_api, [HANG], timeout_seconds=0.3)
    assert response.status == 200
    assert len(fake_api.messages) == 1
    assert sample(client, "signalwire_exporter_sms_api_requests_total", outcome="timeout") == 1


async def test_unreachable_api_gives_up_with_502(exporter_client: ClientFactory,
                                                 fake_api: FakeSignalWire) -> None:
    fake_api.stop()  # nothing listens on its port any more
    client, response = await notify(exporter_client, fake_api, [], max_attempts=2)
    assert response.status == 502
    assert sample(client, "signalwire_exporter_sms_api_requests_total",
                  outcome="connection_error") == 2


async def test_partial_delivery_answers_200_so_nobody_gets_it_twice(
        exporter_client: ClientFactory, fake_api: FakeSignalWire) -> None:
    client, response = await notify(exporter_client, fake_api, [400], TO)
    assert response.status == 200
    assert await response.json() == {"sent": 1, "failed": 1}
    assert sample(client, "signalwire_exporter_alert_notifications_total",
                  outcome="partial") == 1


async def test_secrets_and_numbers_stay_out_of_logs_metrics_and_answers(
        exporter_client: ClientFactory, fake_api: FakeSignalWire,
        caplog: pytest.LogCaptureFixture) -> None:
    fake_api.script[:] = [500, 500, 400]
    caplog.set_level(logging.DEBUG)
    client = await exporter_client(relay_config(fake_api, TO))
    answers = [await (await client.post("/alerts/sms", json=notification(),
                                        headers=headers)).text()
               for headers in (BEARER, {"Authorization": "Bearer guess"})]
    metrics = await (await client.get("/metrics")).text()
    logged = "\n".join(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in caplog.records)
    assert "SMS not sent" in logged
    for secret in (fake_api.api_token, "hook-secret", "guess", *TO, FROM):
        for where in (logged, metrics, *answers):
            assert secret not in where
    assert "+1555***4567" in logged


# --- one SMS per notification, however often it is delivered ----------------------------------

def test_notification_key_ignores_external_url_and_alert_order() -> None:
    key = sms.parse_notification(notification()).key
    other_peer = notification(externalURL="http://alertmanager-2:9093")
    other_peer["alerts"].reverse()
    assert sms.parse_notification(other_peer).key == key
    for changed in (notification("resolved"), notification(count=3),
                    notification(groupKey="{}:{alertname=\"Other\"}")):
        assert sms.parse_notification(changed).key != key
    restarted = notification()
    restarted["alerts"][0]["startsAt"] = "2026-11-23T16:00:00Z"
    assert sms.parse_notification(restarted).key != key


def test_claim_keys_do_not_carry_the_number() -> None:
    key = sms.parse_notification(notification()).key
    claims = {sms.claim_key(key, to) for to in TO}
    assert len(claims) == 2
    assert not any(to.lstrip("+") in claim for claim in claims for to in TO)


async def test_an_ha_pair_sending_the_same_notification_texts_each_recipient_once(
        exporter_client: ClientFactory, fake_api: FakeSignalWire) -> None:
    client = await exporter_client(relay_config(fake_api, TO))
    first, second = await asyncio.gather(*(
        client.post("/alerts/sms", json=notification(externalURL=url), headers=BEARER)
        for url in ("http://alertmanager-0:9093", "http://alertmanager-1:9093")))
    assert (first.status, second.status) == (200, 200)
    answers = sorted([await first.json(), await second.json()], key=lambda a: a["sent"])
    assert answers == [{"sent": 0, "failed": 0, "duplicate": 2}, {"sent": 2, "failed": 0}]
    assert sorted(m["To"] for m in fake_api.messages) == TO
    assert sample(client, "signalwire_exporter_sms_total", result="sent") == 2
    assert sample(client, "signalwire_exporter_sms_total", result="duplicate") == 2
    assert sample(client, "signalwire_exporter_alert_notifications_total",
                  outcome="duplicate") == 1
    # The alert resolving is news: it is texted.
    response = await client.post("/alerts/sms", json=notification("resolved"), headers=BEARER)
    assert (await response.json())["sent"] == 2
    assert len(fake_api.messages) == 4


async def test_a_failed_sms_can_be_sent_by_the_retry(exporter_client: ClientFactory,
                                                     fake_api: FakeSignalWire) -> None:
    client, response = await notify(exporter_client, fake_api, [500, 400], TO, max_attempts=1)
    assert response.status == 502  # nobody texted: one failed, one refused
    response = await client.post("/alerts/sms", json=notification(), headers=BEARER)
    assert (response.status, await response.json()) == (200, {"sent": 2, "failed": 0})
    response = await client.post("/alerts/sms", json=notification(), headers=BEARER)
    assert await response.json() == {"sent": 0, "failed": 0, "duplicate": 2}
    assert len(fake_api.messages) == 2


async def test_dedupe_window_zero_texts_every_delivery(exporter_client: ClientFactory,
                                                       fake_api: FakeSignalWire) -> None:
    client = await exporter_client(relay_config(fake_api, dedupe_window_seconds=0))
    for _ in range(2):
        response = await client.post("/alerts/sms", json=notification(), headers=BEARER)
        assert await response.json() == {"sent": 1, "failed": 0}
    assert len(fake_api.messages) == 2


async def test_two_replicas_on_one_redis_text_each_recipient_once(
        exporter_client: ClientFactory, fake_api: FakeSignalWire, redis_url: str) -> None:
    state = {"state": {"backend": "redis", "redis_url": redis_url}}
    replicas = [await exporter_client({**relay_config(fake_api, TO), **state})
                for _ in range(2)]
    answers = await asyncio.gather(*(
        replica.post("/alerts/sms", json=notification(externalURL=f"http://am-{n}:9093"),
                     headers=BEARER) for n, replica in enumerate(replicas)))
    assert [answer.status for answer in answers] == [200, 200]
    assert sorted(m["To"] for m in fake_api.messages) == TO
    assert sum(sample(replica, "signalwire_exporter_sms_total", result="duplicate")
               for replica in replicas) == 2


async def test_an_sms_one_replica_failed_is_sent_by_the_retry_on_another(
        exporter_client: ClientFactory, fake_api: FakeSignalWire, redis_url: str) -> None:
    state = {"state": {"backend": "redis", "redis_url": redis_url}}
    first = await exporter_client({**relay_config(fake_api, max_attempts=1), **state})
    second = await exporter_client({**relay_config(fake_api, max_attempts=1), **state})
    fake_api.script[:] = [500]
    response = await first.post("/alerts/sms", json=notification(), headers=BEARER)
    assert response.status == 502
    response = await second.post("/alerts/sms", json=notification(), headers=BEARER)
    assert (response.status, await response.json()) == (200, {"sent": 1, "failed": 0})
    assert len(fake_api.messages) == 1
