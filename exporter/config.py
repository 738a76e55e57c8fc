"""Configuration: YAML file → validated, frozen dataclasses.

Every key has a default, so the exporter runs with no file at all. Validation
collects *all* problems and names each key, so `check-config` can print them
in one go instead of making the user fix one error per run.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import yaml

ENV_CONFIG_PATH = "SIGNALWIRE_EXPORTER_CONFIG"

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """One or more configuration problems, each naming its key."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass(frozen=True, slots=True)
class SignatureConfig:
    signing_keys: tuple[str, ...] = ()
    public_base_url: str | None = None
    trust_forwarded_headers: bool = False
    allowed_hosts: tuple[str, ...] = ()  # lower-case host[:port] SignalWire calls

    def __repr__(self) -> str:  # never print the keys themselves
        return (
            f"SignatureConfig(signing_keys=<{len(self.signing_keys)} hidden>, "
            f"public_base_url={self.public_base_url!r}, "
            f"trust_forwarded_headers={self.trust_forwarded_headers!r}, "
            f"allowed_hosts={self.allowed_hosts!r})"
        )


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_body_bytes: int = 65536
    max_fields: int = 200
    max_field_length: int = 4096
    read_timeout_seconds: float = 10.0
    keepalive_timeout_seconds: float = 15.0


@dataclass(frozen=True, slots=True)
class TrackingConfig:
    max_calls: int = 100_000
    call_ttl_seconds: float = 6 * 3600.0
    sweep_interval_seconds: float = 5.0
    max_items: int = 100_000
    item_ttl_seconds: float = 6 * 3600.0


@dataclass(frozen=True, slots=True)
class AppLabelConfig:
    """Label ``app`` from a query parameter of the callback URL, from an allow-list."""

    query_parameter: str | None = None
    values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LabelsConfig:
    """User-chosen, bounded slices of the call and message metrics (``slices``)."""

    app: AppLabelConfig = field(default_factory=AppLabelConfig)
    lines: tuple[tuple[str, str], ...] = ()  # (phone number, name)


# Above this many (app, line) combinations per series, check-config warns (a series per
# combination, status and direction); past MAX_LABEL_COMBINATIONS it refuses.
LABEL_COMBINATIONS_WARNING = 100
MAX_LABEL_COMBINATIONS = 1000


STATE_BACKENDS = ("memory", "redis")


@dataclass(frozen=True, slots=True)
class StateConfig:
    """Where per-call state and the call metrics live: this process, or a shared Redis."""

    backend: str = "memory"
    redis_url: str | None = None
    key_prefix: str = "signalwire-exporter:"
    spool_max_callbacks: int = 100_000
    timeout_seconds: float = 2.0

    def __repr__(self) -> str:  # the URL may carry a password
        return (f"StateConfig(backend={self.backend!r}, redis_url="
                f"{'<hidden>' if self.redis_url else None}, key_prefix={self.key_prefix!r}, "
                f"spool_max_callbacks={self.spool_max_callbacks}, "
                f"timeout_seconds={self.timeout_seconds})")


@dataclass(frozen=True, slots=True)
class BucketsConfig:
    call_duration_seconds: tuple[float, ...] = (
        5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200,
    )
    mos: tuple[float, ...] = (1.0, 2.0, 2.5, 3.1, 3.5, 3.7, 4.0, 4.2, 4.4, 5.0)
    jitter_seconds: tuple[float, ...] = (
        0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5,
    )
    packet_loss_ratio: tuple[float, ...] = (
        0.001, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1.0,
    )
    post_dial_delay_seconds: tuple[float, ...] = (0.5, 1, 2, 3, 5, 8, 13, 20, 30, 60)
    time_to_answer_seconds: tuple[float, ...] = (1, 2, 5, 10, 15, 20, 30, 45, 60, 120)
    message_delivery_seconds: tuple[float, ...] = (
        1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600,
    )
    recording_duration_seconds: tuple[float, ...] = (
        5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200,
    )
    transcription_text_characters: tuple[float, ...] = (
        0, 10, 50, 100, 250, 500, 1000, 2000, 4000,
    )


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: str = "info"
    format: str = "text"
    event_level: str = "info"


SEVERITIES = ("critical", "warning", "info")
# Where users reach the exporter unless web.external_url says otherwise; the alerts' links
# (runbook, failed-call report) default to pages the exporter itself serves there.
DEFAULT_EXTERNAL_URL = "http://localhost:9880"
DEFAULT_RUNBOOK_URL = f"{DEFAULT_EXTERNAL_URL}/runbook"
DEFAULT_REPORT_URL = f"{DEFAULT_EXTERNAL_URL}/reports/failed-calls"


# One dataclass per alert, keys from a shared vocabulary (see _ALERT_KEY_CHECKERS) so a new
# alert needs no new validators: add its section here and its builder in exporter/rules.py.
@dataclass(frozen=True, slots=True)
class CallFailuresHighConfig:
    severity: str = "critical"
    window: str = "1h"
    threshold: float = 100.0
    pending_for: str = "0s"


@dataclass(frozen=True, slots=True)
class CallFailureRatioHighConfig:
    severity: str = "warning"
    window: str = "15m"
    max_ratio: float = 0.2
    min_count: float = 20.0
    pending_for: str = "0s"


@dataclass(frozen=True, slots=True)
class CallQualityLowConfig:
    severity: str = "warning"
    window: str = "15m"
    mos_below: float = 3.5
    max_ratio: float = 0.1
    min_count: float = 10.0
    pending_for: str = "0s"


@dataclass(frozen=True, slots=True)
class CallbacksRejectedConfig:
    severity: str = "warning"
    window: str = "10m"
    threshold: float = 0.0
    outcomes: tuple[str, ...] = ("unauthorized", "invalid")
    pending_for: str = "0s"


@dataclass(frozen=True, slots=True)
class MessageDeliveryFailuresHighConfig:
    severity: str = "warning"
    window: str = "15m"
    max_ratio: float = 0.1
    min_count: float = 20.0
    pending_for: str = "0s"


@dataclass(frozen=True, slots=True)
class CallbacksMissingConfig:
    severity: str = "warning"
    window: str = "1h"
    max_ratio: float = 0.05
    min_count: float = 20.0
    pending_for: str = "15m"


@dataclass(frozen=True, slots=True)
class TenDlcCampaignDeactivatedConfig:
    severity: str = "critical"
    window: str = "24h"
    pending_for: str = "0s"


@dataclass(frozen=True, slots=True)
class TenDlcNumberAssignmentFailedConfig:
    severity: str = "warning"
    window: str = "24h"
    pending_for: str = "0s"


@dataclass(frozen=True, slots=True)
class ExporterDownConfig:
    severity: str = "critical"
    pending_for: str = "5m"


@dataclass(frozen=True, slots=True)
class StateStoreDownConfig:
    severity: str = "critical"
    pending_for: str = "5m"


@dataclass(frozen=True, slots=True)
class CallbacksSpooledConfig:
    severity: str = "warning"
    window: str = "15m"
    pending_for: str = "0s"


@dataclass(frozen=True, slots=True)
class AlertsConfig:
    """Inputs of ``signalwire-exporter rules``: the exporter itself never reads them."""

    job: str = "signalwire-exporter"
    runbook_url: str = DEFAULT_RUNBOOK_URL
    report_url: str = DEFAULT_REPORT_URL
    dashboard_url: str = "http://localhost:3000/d/signalwire-calls"
    call_failures_high: CallFailuresHighConfig = field(default_factory=CallFailuresHighConfig)
    call_failure_ratio_high: CallFailureRatioHighConfig = field(
        default_factory=CallFailureRatioHighConfig)
    call_quality_low: CallQualityLowConfig = field(default_factory=CallQualityLowConfig)
    callbacks_rejected: CallbacksRejectedConfig = field(
        default_factory=CallbacksRejectedConfig)
    exporter_down: ExporterDownConfig = field(default_factory=ExporterDownConfig)
    message_delivery_failures_high: MessageDeliveryFailuresHighConfig = field(
        default_factory=MessageDeliveryFailuresHighConfig)
    callbacks_missing: CallbacksMissingConfig = field(default_factory=CallbacksMissingConfig)
    ten_dlc_campaign_deactivated: TenDlcCampaignDeactivatedConfig = field(
        default_factory=TenDlcCampaignDeactivatedConfig)
    ten_dlc_number_assignment_failed: TenDlcNumberAssignmentFailedConfig = field(
        default_factory=TenDlcNumberAssignmentFailedConfig)
    state_store_down: StateStoreDownConfig = field(default_factory=StateStoreDownConfig)
    callbacks_spooled: CallbacksSpooledConfig = field(default_factory=CallbacksSpooledConfig)


@dataclass(frozen=True, slots=True)
class SmsConfig:
    """The Alertmanager → SMS relay (docs/sms-relay.md); off until ``space_url`` is set."""

    space_url: str | None = None
    project_id: str = ""
    api_token: str = ""
    from_number: str = ""
    to_numbers: tuple[str, ...] = ()
    webhook_token: str = ""
    timeout_seconds: float = 10.0
    max_attempts: int = 3
    retry_initial_delay_seconds: float = 1.0
    max_length: int = 160
    max_payload_bytes: int = 262144
    dedupe_window_seconds: float = 300.0

    @property
    def enabled(self) -> bool:
        return self.space_url is not None

    def __repr__(self) -> str:  # never print the token, the webhook secret or the numbers
        return (
            f"SmsConfig(space_url={self.space_url!r}, project_id={self.project_id!r}, "
            f"api_token=<hidden>, from_number=<hidden>, "
            f"to_numbers=<{len(self.to_numbers)} hidden>, webhook_token=<hidden>, "
            f"timeout_seconds={self.timeout_seconds!r}, max_attempts={self.max_attempts!r}, "
            f"retry_initial_delay_seconds={self.retry_initial_delay_seconds!r}, "
            f"max_length={self.max_length!r}, max_payload_bytes={self.max_payload_bytes!r}, "
            f"dedupe_window_seconds={self.dedupe_window_seconds!r})"
        )


# Keys that must all be given once any is: a half-configured relay would fail at 3 a.m.
SMS_REQUIRED = ("space_url", "project_id", "api_token", "from_number", "to_numbers",
                "webhook_token")


@dataclass(frozen=True, slots=True)
class SignalWireApiConfig:
    """Credentials of the SignalWire REST API (reconciliation, prices, and the SMS relay's
    fallback); unset until ``space_url`` is set."""

    space_url: str | None = None
    project_id: str = ""
    api_token: str = ""
    timeout_seconds: float = 10.0
    max_attempts: int = 3

    @property
    def enabled(self) -> bool:
        return self.space_url is not None

    def __repr__(self) -> str:  # never print the token
        return (f"SignalWireApiConfig(space_url={self.space_url!r}, "
                f"project_id={self.project_id!r}, api_token=<hidden>, "
                f"timeout_seconds={self.timeout_seconds!r}, "
                f"max_attempts={self.max_attempts!r})")


API_REQUIRED = ("space_url", "project_id", "api_token")


@dataclass(frozen=True, slots=True)
class ReconcileConfig:
    """Looking up calls whose final callback never came, and call prices (reconcile.py)."""

    enabled: bool = False
    after_seconds: float = 900.0
    max_requests_per_second: float = 2.0
    fetch_price: bool = False


@dataclass(frozen=True, slots=True)
class FailedCallsReportConfig:
    max_entries: int = 1000
    max_age_seconds: float = 86400.0
    mask_numbers: bool = False


@dataclass(frozen=True, slots=True)
class ReportsConfig:
    failed_calls: FailedCallsReportConfig = field(default_factory=FailedCallsReportConfig)


@dataclass(frozen=True, slots=True)
class ShutdownConfig:
    final_scrape_timeout_seconds: float = 30.0


@dataclass(frozen=True, slots=True)
class WebConfig:
    """Protection of the read endpoints, after the Prometheus exporter-toolkit web config."""

    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    basic_auth_users: tuple[tuple[str, str], ...] = ()  # (name, bcrypt hash)
    external_url: str | None = None  # as Prometheus' --web.external-url

    def __repr__(self) -> str:  # the hashes are secrets too
        return (f"WebConfig(tls_cert_file={self.tls_cert_file!r}, "
                f"tls_key_file={self.tls_key_file!r}, external_url={self.external_url!r}, "
                f"basic_auth_users=<{len(self.basic_auth_users)} hidden>)")


@dataclass(frozen=True, slots=True)
class Config:
    listen: str = "0.0.0.0:9880"
    signature: SignatureConfig = field(default_factory=SignatureConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    state: StateConfig = field(default_factory=StateConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    buckets: BucketsConfig = field(default_factory=BucketsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    web: WebConfig = field(default_factory=WebConfig)
    sms: SmsConfig = field(default_factory=SmsConfig)
    signalwire_api: SignalWireApiConfig = field(default_factory=SignalWireApiConfig)
    reconcile: ReconcileConfig = field(default_factory=ReconcileConfig)
    reports: ReportsConfig = field(default_factory=ReportsConfig)
    shutdown: ShutdownConfig = field(default_factory=ShutdownConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")


def split_listen(listen: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (IPv6 as ``[::1]:9880``); raise ValueError if malformed."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"expected HOST:PORT, got {listen!r}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} out of range")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "0.0.0.0", port


def expand_env(value: Any, environ: Mapping[str, str], path: str, errors: list[str]) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string, so secrets stay out of files."""
    if isinstance(value, str):
        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in environ:
                return environ[name]
            if default is not None:
                return default
            errors.append(f"{path}: environment variable {name} is not set")
            return ""

        return _ENV_REF.sub(substitute, value)
    if isinstance(value, dict):
        return {k: expand_env(v, environ, f"{path}.{k}" if path else str(k), errors)
                for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, environ, f"{path}[{i}]", errors) for i, v in enumerate(value)]
    return value


# --- value checkers: each returns the converted value or raises ValueError ---------

def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.lower() in ("true", "yes", "1")
    raise ValueError("must be true or false")


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("must be a positive integer")
    try:
        number = int(value)
    except ValueError:
        raise ValueError("must be a positive integer") from None
    if number <= 0:
        raise ValueError("must be a positive integer")
    return number


def _positive_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("must be a positive number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError("must be a positive number") from None
    if not math.isfinite(number) or number <= 0:
        raise ValueError("must be a positive number")
    return number


def _non_negative(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("must be a number >= 0")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError("must be a number >= 0") from None
    if not math.isfinite(number) or number < 0:
        raise ValueError("must be a number >= 0")
    return number


def _buckets(value: Any) -> tuple[float, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError("must be a non-empty list of numbers")
    try:
        bounds = tuple(_finite(v) for v in value)
    except ValueError:
        raise ValueError("must be a non-empty list of finite numbers") from None
    if any(b >= a for a, b in zip(bounds[1:], bounds, strict=False)):
        raise ValueError("bucket bounds must be strictly increasing")
    return bounds


def _finite(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("not a number")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("not finite")
    return number


def _string_list(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("must be a list of strings")
    return tuple(v for v in value if v)


def _optional_url(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not re.match(r"^https?://[^/?#\s]+(/[^?#\s]*)?$", value):
        raise ValueError("must be an http(s) URL such as https://metrics.example.com")
    return value.rstrip("/")


_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(:[0-9]{1,5})?$")


def _hosts(value: Any) -> tuple[str, ...]:
    """Public host names as in a URL (``metrics.example.com``, ``host:8443``), lower-cased."""
    hosts = _string_list(value)
    for host in hosts:
        if not _HOST.match(host):
            raise ValueError(f"{host[:80]!r} is not a host name: give the host (and port, if "
                             "not the default) SignalWire calls, such as metrics.example.com "
                             "or metrics.example.com:8443, without scheme or path")
    return tuple(host.lower() for host in hosts)


def _optional_file(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError("must be a file path")
    if not os.path.isfile(value):
        raise ValueError(f"no such file: {value}")
    return value


_BCRYPT_HASH = re.compile(r"^\$2[aby]?\$\d{2}\$[./A-Za-z0-9]{53}$")


def _basic_auth_users(value: Any) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise ValueError("must be a mapping of user name to bcrypt hash")
    users = []
    for name, hashed in value.items():
        if not isinstance(name, str) or not name or ":" in name:
            raise ValueError("user names must be non-empty strings without ':'")
        if not isinstance(hashed, str) or not _BCRYPT_HASH.match(hashed):
            # never echo the value: it may be a plain password pasted by mistake
            raise ValueError(f"{name}: not a bcrypt hash (make one with "
                             "'signalwire-exporter hash-password')")
        users.append((name, hashed))
    return tuple(users)
def _space_url(value: Any) -> str | None:
    """A Space as the SDKs take it (``example.signalwire.com``) or as a full URL."""
    if isinstance(value, str) and value and "://" not in value:
        value = f"https://{value}"
    url = _optional_url(value)
    if url is not None and urlsplit(url).path:
        raise ValueError("must be the Space URL without a path, "
                         "such as https://example.signalwire.com")
    return url


def _text(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):  # YAML reads an unquoted +15551234567 as the int 15551234567
        raise ValueError("must be a string (quote phone numbers: \"+15551234567\")")
    return value


def _sms_length(value: Any) -> int:
    number = _positive_int(value)
    if number < 20:
        raise ValueError("must be at least 20 characters")
    return number


def _phone_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, list) and any(not isinstance(v, str) for v in value):
        raise ValueError("must be a list of strings (quote phone numbers: \"+15551234567\")")
    return _string_list(value)


_LABEL_VALUE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def _slice_value(value: Any) -> str:
    """A label value the user chose: short, plain, and not one the exporter uses itself."""
    if not isinstance(value, str) or not _LABEL_VALUE.match(value) or value == "other":
        raise ValueError("values must be 1-64 letters, digits or _.:- and not 'other' "
                         "(the exporter's value for anything else)")
    return value


def _query_parameter(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or not value.isascii() or "&" in value:
        raise ValueError("must be the name of a query parameter, such as app")
    return value


def _label_values(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ValueError("must be a list of label values")
    return tuple(dict.fromkeys(_slice_value(v) for v in value))


def _lines(value: Any) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise ValueError('must map your numbers to names: {"+15551234567": main}')
    lines = []
    for number, name in value.items():
        if not isinstance(number, str) or not number.strip():
            raise ValueError("numbers must be strings (quote them: \"+15551234567\")")
        lines.append((number.strip(), _slice_value(name)))
    return tuple(lines)


def label_combinations(labels: LabelsConfig) -> int:
    """How many (app, line) label sets a series can be split into: each allowed value,
    plus ``other`` and empty."""
    apps = len(labels.app.values) + 2 if labels.app.query_parameter else 1
    lines = len({name for _, name in labels.lines}) + 2 if labels.lines else 1
    return apps * lines


def config_warnings(config: Config) -> list[str]:
    """What is allowed but worth a second look; check-config prints these, the server logs them."""
    combinations = label_combinations(config.labels)
    if combinations > LABEL_COMBINATIONS_WARNING:
        return [f"labels: {combinations} (app, line) combinations split every call series "
                f"that many ways (warned above {LABEL_COMBINATIONS_WARNING}); fewer app "
                "values or line names keep Prometheus small"]
    return []


def _redis_url(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must be a redis://, rediss:// or unix:// URL")  # never echo it
    return value


def _listen(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string HOST:PORT")
    split_listen(value)
    return value


def _choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or value.lower() not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return value.lower()

    return check


_CHECKERS: dict[str, Callable[[Any], Any]] = {
    "listen": _listen,
    "signature.signing_keys": _string_list,
    "signature.public_base_url": _optional_url,
    "signature.trust_forwarded_headers": _bool,
    "signature.allowed_hosts": _hosts,
    "limits.max_body_bytes": _positive_int,
    "limits.max_fields": _positive_int,
    "limits.max_field_length": _positive_int,
    "limits.read_timeout_seconds": _positive_float,
    "limits.keepalive_timeout_seconds": _positive_float,
    "tracking.max_calls": _positive_int,
    "tracking.call_ttl_seconds": _positive_float,
    "tracking.sweep_interval_seconds": _positive_float,
    "tracking.max_items": _positive_int,
    "tracking.item_ttl_seconds": _positive_float,
    "labels.app.query_parameter": _query_parameter,
    "labels.app.values": _label_values,
    "labels.lines": _lines,
    "state.backend": _choice(STATE_BACKENDS),
    "state.redis_url": _redis_url,
    "state.key_prefix": _text,
    "state.spool_max_callbacks": _positive_int,
    "state.timeout_seconds": _positive_float,
    "logging.level": _choice(LOG_LEVELS),
    "logging.format": _choice(LOG_FORMATS),
    "logging.event_level": _choice(LOG_LEVELS),
    "web.tls_cert_file": _optional_file,
    "web.tls_key_file": _optional_file,
    "web.basic_auth_users": _basic_auth_users,
    "web.external_url": _optional_url,
    "sms.space_url": _space_url,
    "sms.project_id": _text,
    "sms.api_token": _text,
    "sms.from_number": _text,
    "sms.to_numbers": _phone_list,
    "sms.webhook_token": _text,
    "sms.timeout_seconds": _positive_float,
    "sms.max_attempts": _positive_int,
    "sms.retry_initial_delay_seconds": _positive_float,
    "sms.max_length": _sms_length,
    "sms.max_payload_bytes": _positive_int,
    "sms.dedupe_window_seconds": _non_negative,
    "signalwire_api.space_url": _space_url,
    "signalwire_api.project_id": _text,
    "signalwire_api.api_token": _text,
    "signalwire_api.timeout_seconds": _positive_float,
    "signalwire_api.max_attempts": _positive_int,
    "reconcile.enabled": _bool,
    "reconcile.after_seconds": _positive_float,
    "reconcile.max_requests_per_second": _positive_float,
    "reconcile.fetch_price": _bool,
    "reports.failed_calls.max_entries": _positive_int,
    "reports.failed_calls.max_age_seconds": _positive_float,
    "reports.failed_calls.mask_numbers": _bool,
    "shutdown.final_scrape_timeout_seconds": _non_negative,
}


def _url(value: Any) -> str:
    """An absolute http(s) link for an alert annotation; a query string is allowed."""
    if not isinstance(value, str) or not re.match(r"^https?://[^/?#\s]+[^#\s]*$", value):
        raise ValueError("must be an http(s) URL without a #fragment")
    return value


_DURATION = re.compile(r"^((\d+)(ms|s|m|h|d|w|y))+$")


def _duration(value: Any) -> str:
    """A Prometheus duration such as 90s, 15m or 1h30m, kept as text for the rule file."""
    if not isinstance(value, str) or not _DURATION.match(value):
        raise ValueError("must be a Prometheus duration such as 30s, 15m or 1h")
    return value


def _ratio(value: Any) -> float:
    number = _non_negative(value)
    if number >= 1:
        raise ValueError("must be a ratio from 0 up to (not including) 1, e.g. 0.2 for 20%")
    return number


def _label_value(value: Any) -> str:
    if not isinstance(value, str) or not re.match(r"^[A-Za-z0-9_.:-]+$", value):
        raise ValueError("must be a plain name (letters, digits, _ . : -)")
    return value


def _outcomes(value: Any) -> tuple[str, ...]:
    from .errors import OUTCOMES

    outcomes = _string_list(value)
    unknown = [o for o in outcomes if o not in OUTCOMES]
    if unknown or not outcomes:
        raise ValueError(f"must be a non-empty list of: {', '.join(OUTCOMES)}")
    return outcomes


_ALERT_KEY_CHECKERS: dict[str, Callable[[Any], Any]] = {
    "severity": _choice(SEVERITIES),
    "window": _duration,
    "pending_for": _duration,
    "threshold": _non_negative,
    "max_ratio": _ratio,
    "min_count": _non_negative,
    "mos_below": _finite,
    "outcomes": _outcomes,
}


def _alert_checkers() -> dict[str, Callable[[Any], Any]]:
    """Validators for every ``alerts.*`` key; per-alert keys go by their leaf name."""
    checkers: dict[str, Callable[[Any], Any]] = {
        "alerts.job": _label_value,
        "alerts.runbook_url": _url,
        "alerts.report_url": _url,
        "alerts.dashboard_url": _url,
    }
    defaults = AlertsConfig()
    for section in fields(defaults):
        alert = getattr(defaults, section.name)
        if is_dataclass(alert):
            for key in fields(alert):
                checkers[f"alerts.{section.name}.{key.name}"] = _ALERT_KEY_CHECKERS[key.name]
    return checkers


_CHECKERS.update(_alert_checkers())

T = TypeVar("T")


def _build(cls: type[T], data: Any, path: str, errors: list[str]) -> T:
    """Build dataclass ``cls`` from a mapping, collecting one error per bad key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        errors.append(f"{path or 'config'}: must be a mapping")
        return cls()
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        key_path = f"{path}.{key}" if path else str(key)
        if key not in known:
            errors.append(f"{key_path}: unknown key")
            continue
        default = getattr(cls(), key)
        if is_dataclass(default):
            kwargs[key] = _build(type(default), value, key_path, errors)
            continue
        checker = _CHECKERS.get(key_path) or (_buckets if path == "buckets" else None)
        if checker is None:  # pragma: no cover - every leaf key has a checker
            errors.append(f"{key_path}: no validator")
            continue
        try:
            kwargs[key] = checker(value)
        except ValueError as exc:
            errors.append(f"{key_path}: {exc}")
    return cls(**kwargs)


def parse_config(data: Any, environ: Mapping[str, str] | None = None) -> Config:
    """Validate a parsed YAML document; raise ConfigError listing every problem."""
    errors: list[str] = []
    data = expand_env(data, os.environ if environ is None else environ, "", errors)
    config = _build(Config, data, "", errors)
    # Checks across keys run whatever else is wrong, so check-config lists every problem;
    # a key that has its own error already is not blamed again.
    bad_keys = {error.partition(":")[0] for error in errors}
    if "buckets.mos" not in bad_keys:
        missing = [b for b in (3.1, 3.5, 3.7, 4.2) if b not in config.buckets.mos]
        if missing:
            errors.append(
                "buckets.mos: must include the quality tiers 3.1, 3.5, 3.7 and 4.2 "
                f"(missing {', '.join(map(str, missing))})"
            )
        if ("alerts.call_quality_low.mos_below" not in bad_keys
              and config.alerts.call_quality_low.mos_below not in config.buckets.mos):
            errors.append("alerts.call_quality_low.mos_below: must be one of buckets.mos "
                          "(the alert reads that histogram bucket)")
    sig = config.signature
    if (sig.trust_forwarded_headers and not sig.allowed_hosts and not sig.public_base_url
            and not bad_keys & {"signature.allowed_hosts", "signature.public_base_url"}):
        errors.append(
            "signature.allowed_hosts: required when signature.trust_forwarded_headers is "
            "true: list the public host names SignalWire calls (e.g. [metrics.example.com], "
            "with the port if it is not 443); otherwise a client chooses, through "
            "X-Forwarded-Host, the URL its signature is checked against (or set "
            "signature.public_base_url instead)")
    if not bad_keys & {"web.tls_cert_file", "web.tls_key_file"} and (
            (config.web.tls_cert_file is None) != (config.web.tls_key_file is None)):
        errors.append("web: tls_cert_file and tls_key_file must be set together")
    config = _external_links(config, data)
    config = _sms_fallback(config)
    errors.extend(_sms_errors(config.sms, bad_keys))
    errors.extend(_api_errors(config))
    if label_combinations(config.labels) > MAX_LABEL_COMBINATIONS:
        errors.append(f"labels: {label_combinations(config.labels)} (app, line) "
                      f"combinations; at most {MAX_LABEL_COMBINATIONS}")
    if config.state.backend == "redis" and not config.state.redis_url \
            and "state.redis_url" not in bad_keys:
        errors.append("state.redis_url: required when state.backend is redis "
                      "(e.g. redis://redis:6379/0)")
    if errors:
        raise ConfigError(errors)
    return config


def _external_links(config: Config, data: Any) -> Config:
    """The alerts' runbook and report links under web.external_url, unless given themselves."""
    external = config.web.external_url
    if external is None:
        return config
    alerts = data.get("alerts") if isinstance(data, dict) else None
    given = set(alerts) if isinstance(alerts, dict) else set()
    links = config.alerts
    if "runbook_url" not in given:
        links = replace(links, runbook_url=f"{external}/runbook")
    if "report_url" not in given:
        links = replace(links, report_url=f"{external}/reports/failed-calls")
    return replace(config, alerts=links)


def _sms_errors(sms: SmsConfig, bad_keys: set[str]) -> list[str]:
    given = [key for key in SMS_REQUIRED if getattr(sms, key) or f"sms.{key}" in bad_keys]
    if not given:
        return []
    return [f"sms.{key}: required when sms.{given[0]} is set"
            + (f" (or set signalwire_api.{key})" if key in API_REQUIRED else "")
            for key in SMS_REQUIRED if key not in given]


def _sms_fallback(config: Config) -> Config:
    """The relay's unset space_url, project_id and api_token come from ``signalwire_api``,
    once the relay is configured at all (from, to or webhook token given)."""
    sms, api = config.sms, config.signalwire_api
    if not (sms.from_number or sms.to_numbers or sms.webhook_token):
        return config
    fallback = {key: getattr(api, key) for key in API_REQUIRED
                if not getattr(sms, key) and getattr(api, key)}
    return replace(config, sms=replace(sms, **fallback)) if fallback else config


def _api_errors(config: Config) -> list[str]:
    api, reconcile = config.signalwire_api, config.reconcile
    given = [key for key in API_REQUIRED if getattr(api, key)]
    errors = [f"signalwire_api.{key}: required when signalwire_api.{given[0]} is set"
              for key in API_REQUIRED if given and key not in given]
    if reconcile.enabled and not given:
        errors.append("reconcile.enabled: needs the REST API credentials: set "
                      "signalwire_api.space_url, project_id and api_token")
    if reconcile.fetch_price and not reconcile.enabled:
        errors.append("reconcile.fetch_price: needs reconcile.enabled: true")
    if reconcile.enabled and reconcile.after_seconds >= config.tracking.call_ttl_seconds:
        errors.append("reconcile.after_seconds: must be less than "
                      "tracking.call_ttl_seconds (calls would be forgotten before a lookup)")
    return errors


def load_config(path: str | os.PathLike[str] | None,
                environ: Mapping[str, str] | None = None) -> Config:
    """Load ``path`` (or $SIGNALWIRE_EXPORTER_CONFIG); no path at all means defaults."""
    env = os.environ if environ is None else environ
    if path is None:
        path = env.get(ENV_CONFIG_PATH) or None
    if path is None:
        return Config()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: invalid YAML: {exc}"]) from None
    return parse_config(data, env)
