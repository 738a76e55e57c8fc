"""Command line: run the exporter, or check a config file.

    signalwire-exporter [--config FILE] [--listen-address HOST:PORT] [--log-level LEVEL]
    signalwire-exporter check-config --config FILE
    signalwire-exporter rules [--config FILE] [--output FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

from . import __version__
from .app import create_app
from .config import ENV_CONFIG_PATH, LOG_LEVELS, Config, ConfigError, load_config, split_listen
from .logs import setup_logging
from .rules import render_rules

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
    rules = commands.add_parser(
        "rules", help="write the Prometheus rule file from the config's alerts: section")
    rules.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                       help="config file with the thresholds (default: built-in defaults)")
    rules.add_argument("--output", metavar="FILE",
                       help="write the rules here instead of to standard output")
    return parser


def load_or_report(path: str | None) -> Config | None:
    """The config at ``path``, or None after printing each of its errors."""
    try:
        return load_config(path)
    except ConfigError as exc:
        for error in exc.errors:
            print(f"error: {error}", file=sys.stderr)
        return None


def check_config(path: str | None) -> int:
    config = load_or_report(path)
    if config is None:
        return 1
    # Name the file the env var chose too: in a container that is the usual way in.
    source = path or os.environ.get(ENV_CONFIG_PATH) or "built-in defaults"
    keys = len(config.signature.signing_keys)
    print(f"{source}: OK (listen {config.listen}, {keys} signing key(s))")
    return 0


def write_rules(path: str | None, output: str | None) -> int:
    config = load_or_report(path)
    if config is None:
        return 1
    text = render_rules(config.alerts)
    if output is None:
        sys.stdout.write(text)
        return 0
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as exc:
        print(f"error: {output}: cannot write: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"wrote {output}; check it with: promtool check rules {output}", file=sys.stderr)
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
    log.info("listening", extra={"fields": {"address": f"{host}:{port}",
                                            "version": __version__}})
    # run_app turns SIGTERM/SIGINT into a graceful stop: the listener closes, in-flight
    # requests finish (up to shutdown_timeout), then it returns and we exit 0.
    web.run_app(app, host=host, port=port, print=None, access_log=None,
                shutdown_timeout=10.0, handle_signals=True)
    log.info("stopped")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "check-config":
        return check_config(args.config)
    if args.command == "rules":
        return write_rules(args.config, args.output)
    config = load_or_report(args.config)
    if config is None:
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
