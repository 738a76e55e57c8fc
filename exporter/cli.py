"""Command line: run the exporter, or check a config file.

    signalwire-exporter [--config FILE] [--listen-address HOST:PORT] [--log-level LEVEL]
    signalwire-exporter check-config --config FILE
    signalwire-exporter hash-password   (reads the password from stdin)
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence

from aiohttp import web
from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

from . import __version__
from .access import hash_password, tls_context
from .app import create_app
from .config import ENV_CONFIG_PATH, LOG_LEVELS, Config, ConfigError, load_config, split_listen
from .logs import setup_logging

log = logging.getLogger("exporter")


def _listen_address(value: str) -> str:
    try:
        split_listen(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="signalwire-exporter",
        description="Prometheus exporter for SignalWire status callbacks.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--config", metavar="FILE",
                        help=f"YAML config file (default: ${ENV_CONFIG_PATH}, else built-in "
                             "defaults)")
    parser.add_argument("--listen-address", metavar="HOST:PORT", type=_listen_address,
                        help="address to listen on (overrides 'listen' in the config)")
    parser.add_argument("--log-level", choices=LOG_LEVELS, type=str.lower,
                        help="log level (overrides logging.level in the config)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    check = commands.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                       help="config file to check")
    commands.add_parser("hash-password",
                        help="print a bcrypt hash for web.basic_auth_users (password on stdin)")
    return parser


def print_password_hash() -> int:
    import getpass

    password = getpass.getpass("Password: ") if sys.stdin.isatty() else sys.stdin.readline()
    password = password.rstrip("\r\n")
    if not password:
        print("error: empty password", file=sys.stderr)
        return 1
    print(hash_password(password))
    return 0


# Header limits for every connection (aiohttp's defaults, stated so docs/security.md can
# name them): longer request or header lines, or more headers, get 400 before any handler.
MAX_LINE_SIZE = 8190
MAX_FIELD_SIZE = 8190
MAX_HEADERS = 100


def check_config(path: str | None) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        for error in exc.errors:
            print(f"error: {error}", file=sys.stderr)
        return 1
    source = path or "built-in defaults"
    keys = len(config.signature.signing_keys)
    print(f"{source}: OK (listen {config.listen}, {keys} signing key(s))")
    return 0


def serve(config: Config) -> None:
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    app = create_app(config, registry)
    if not config.signature.signing_keys:
        log.warning("signature checking is OFF: anyone who can reach the callback "
                    "endpoints can feed metrics; set signature.signing_keys")
    host, port = config.host, config.port
    log.info("listening", extra={"fields": {
        "address": f"{host}:{port}", "version": __version__,
        "tls": config.web.tls_cert_file is not None,
        "basic_auth": bool(config.web.basic_auth_users)}})
    # run_app turns SIGTERM/SIGINT into a graceful stop: the listener closes, in-flight
    # requests finish (up to shutdown_timeout), then it returns and we exit 0.
    web.run_app(app, host=host, port=port, print=None, access_log=None,
                shutdown_timeout=10.0, handle_signals=True,
                ssl_context=tls_context(config.web),
                keepalive_timeout=config.limits.keepalive_timeout_seconds,
                max_line_size=MAX_LINE_SIZE, max_field_size=MAX_FIELD_SIZE,
                max_headers=MAX_HEADERS)
    log.info("stopped")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "check-config":
        return check_config(args.config)
    if args.command == "hash-password":
        return print_password_hash()
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for error in exc.errors:
            print(f"error: {error}", file=sys.stderr)
        return 1
    if args.listen_address:
        config = dataclasses.replace(config, listen=args.listen_address)
    if args.log_level:
        config = dataclasses.replace(
            config, logging=dataclasses.replace(config.logging, level=args.log_level))
    setup_logging(config.logging.level, config.logging.format)
    serve(config)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
