"""Config loading and validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.config import Config, ConfigError, load_config, parse_config, split_listen

ROOT = Path(__file__).resolve().parent.parent


def test_no_file_means_defaults() -> None:
    config = load_config(None, environ={})
    assert config == Config()
    assert (config.host, config.port) == ("0.0.0.0", 9880)
    assert config.signature.signing_keys == ()
    assert config.limits.max_body_bytes == 65536


def test_example_documents_exactly_the_defaults() -> None:
    assert load_config(ROOT / "config.example.yaml", environ={}) == Config()


def test_example_lists_every_key() -> None:
    document = yaml.safe_load((ROOT / "config.example.yaml").read_text())

    def keys(value: object, prefix: str = "") -> set[str]:
        if isinstance(value, dict) and value:  # an empty mapping is a leaf default
            return set().union(*(keys(v, f"{prefix}{k}.") for k, v in value.items()))
        return {prefix.rstrip(".")}

    from dataclasses import fields, is_dataclass

    def config_keys(obj: object, prefix: str = "") -> set[str]:
        out: set[str] = set()
        for f in fields(obj):  # type: ignore[arg-type]
            value = getattr(obj, f.name)
            if is_dataclass(value):
                out |= config_keys(value, f"{prefix}{f.name}.")
            else:
                out.add(f"{prefix}{f.name}")
        return out

    assert keys(document) == config_keys(Config())


def test_env_var_from_config_path(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("listen: 127.0.0.1:9999\n")
    assert load_config(None, environ={"SIGNALWIRE_EXPORTER_CONFIG": str(path)}).port == 9999


def test_env_expansion_for_secrets() -> None:
    config = parse_config({"signature": {"signing_keys": ["${KEY}", "${OLD:-}"]}},
                          environ={"KEY": "PSK_secret"})
    assert config.signature.signing_keys == ("PSK_secret",)
    assert "PSK_secret" not in repr(config)


def test_every_error_names_its_key() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({
            "listen": "nowhere",
            "signature": {"public_base_url": "ftp://x", "signing_keys": "${MISSING}",
                          "trust_forwarded_headers": "maybe"},
            "limits": {"max_body_bytes": -1, "read_timeout_seconds": "soon"},
            "tracking": {"max_calls": 0},
            "buckets": {"mos": [1, 2, 3], "jitter_seconds": [0.1, 0.05]},
            "logging": {"level": "loud"},
            "surprise": 1,
        }, environ={})
    text = "\n".join(info.value.errors)
    for key in ("listen", "signature.public_base_url", "signature.signing_keys",
                "signature.trust_forwarded_headers", "limits.max_body_bytes",
                "limits.read_timeout_seconds", "tracking.max_calls",
                "buckets.jitter_seconds", "logging.level", "surprise"):
        assert f"{key}:" in text, key
    assert "MISSING" in text


@pytest.mark.parametrize(("section", "message"), [
    ({"reconcile": {"enabled": True}},
     "reconcile.enabled: needs the REST API credentials: set signalwire_api.space_url, "
     "project_id and api_token"),
    ({"signalwire_api": {"space_url": "example.signalwire.com"}},
     "signalwire_api.project_id: required when signalwire_api.space_url is set"),
    ({"reconcile": {"fetch_price": True}},
     "reconcile.fetch_price: needs reconcile.enabled: true"),
    ({"reconcile": {"enabled": True, "after_seconds": 7200},
      "tracking": {"call_ttl_seconds": 3600},
      "signalwire_api": {"space_url": "x.signalwire.com", "project_id": "p",
                         "api_token": "t"}},
     "reconcile.after_seconds: must be less than tracking.call_ttl_seconds (calls would be "
     "forgotten before a lookup)"),
])
def test_reconcile_needs_credentials_and_consistent_timing(section: dict[str, Any],
                                                           message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(section, environ={})
    assert message in info.value.errors


def test_the_api_token_never_shows_in_the_config_repr() -> None:
    config = parse_config({"signalwire_api": {
        "space_url": "example.signalwire.com", "project_id": "p",
        "api_token": "${SIGNALWIRE_API_TOKEN}"}}, environ={"SIGNALWIRE_API_TOKEN": "PT-hush"})
    assert config.signalwire_api.api_token == "PT-hush"
    assert config.signalwire_api.space_url == "https://example.signalwire.com"
    assert "PT-hush" not in repr(config)


def test_mos_buckets_must_keep_quality_tiers() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"buckets": {"mos": [1, 2, 3, 4, 5]}}, environ={})
    assert "buckets.mos" in info.value.errors[0]


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("listen: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad, environ={})
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml", environ={})


@pytest.mark.parametrize(("text", "expected"), [
    ("0.0.0.0:9880", ("0.0.0.0", 9880)),
    ("[::1]:80", ("::1", 80)),
    (":9880", ("0.0.0.0", 9880)),
])
def test_split_listen(text: str, expected: tuple[str, int]) -> None:
    assert split_listen(text) == expected


# --- issue 14 ------------------------------------------------------------------------------

def test_trusting_forwarded_headers_needs_the_allowed_hosts() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"signature": {"trust_forwarded_headers": True}}, environ={})
    assert info.value.errors[0].startswith("signature.allowed_hosts: required")
    assert "X-Forwarded-Host" in info.value.errors[0]
    config = parse_config({"signature": {"trust_forwarded_headers": True, "allowed_hosts": [
        "Metrics.Example.com", "metrics.example.com:8443", "[::1]:9880"]}}, environ={})
    assert config.signature.allowed_hosts == (
        "metrics.example.com", "metrics.example.com:8443", "[::1]:9880")
    parse_config({"signature": {"trust_forwarded_headers": True,
                                "public_base_url": "https://m.example.com"}}, environ={})


@pytest.mark.parametrize("host", ["https://metrics.example.com", "metrics.example.com/x",
                                  "a b", "host:port"])
def test_allowed_hosts_are_host_names(host: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"signature": {"allowed_hosts": [host]}}, environ={})
    assert info.value.errors == [info.value.errors[0]]
    assert info.value.errors[0].startswith("signature.allowed_hosts:")


def test_every_problem_in_sms_is_listed_with_the_others() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"listen": "nowhere", "sms": {
            "space_url": "ftp://x y", "project_id": "p", "max_attempts": 0}}, environ={})
    keys = [error.partition(":")[0] for error in info.value.errors]
    assert sorted(keys) == sorted([
        "listen", "sms.space_url", "sms.max_attempts", "sms.api_token", "sms.from_number",
        "sms.to_numbers", "sms.webhook_token"])
