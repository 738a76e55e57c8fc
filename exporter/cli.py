"""Command line: run the exporter, or check a config file.

    signalwire-exporter [--config FILE] [--listen-address HOST:PORT] [--log-level LEVEL]
    signalwire-exporter check-config --config FILE
    signalwire-exporter hash-password   (reads the password from stdin)
    signalwire-exporter rules [--config FILE] [--output FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

from . import __version__
from .access import hash_password, tls_context
from .app import CALLBACKS_IN_FLIGHT, EXPORTER, IN_FLIGHT, ExporterRunner, create_app
from .config import (
    ENV_CONFIG_PATH,
    LOG_LEVELS,
    Config,
    ConfigError,
    config_warnings,
    load_config,
    split_listen,
)
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
    commands.add_parser("hash-password",
                        help="print a bcrypt hash for web.basic_auth_users (password on stdin)")
    rules = commands.add_parser(
        "rules", help="write the Prometheus rule file from the config's alerts: section")
    rules.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                       help="config file with the thresholds (default: built-in defaults)")
    rules.add_argument("--output", metavar="FILE",
                       help="write the rules here instead of to standard output")
    return parser


def print_password_hash() -> int:
    """Read a password (twice at a terminal, once from a pipe) and print its bcrypt hash.

    Ctrl-D or Ctrl-C end it with a one-line message and exit 1, never a traceback.
    """
    import getpass

    try:
        if sys.stdin.isatty():
            password = getpass.getpass("Password: ")
            if getpass.getpass("Again: ") != password:
                print("error: the two passwords differ", file=sys.stderr)
                return 1
        else:
            password = sys.stdin.readline()
    except (EOFError, KeyboardInterrupt):
        print("\nno password given", file=sys.stderr)
        return 1
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
    for warning in config_warnings(config):
        print(f"{source}: warning: {warning}")
    print(f"{source}: OK (listen {config.listen}, {keys} signing key(s))")
    return 0


SHUTDOWN_TIMEOUT_SECONDS = 10.0


async def run_server(app: web.Application, config: Config) -> None:
    """Serve until SIGTERM/SIGINT, then stop without losing a request or a count.

    aiohttp's own shutdown (web.run_app, runner.cleanup) stops reading from open
    connections at once, so a callback still sending its body would be cut off and
    the provider would see it fail. So, on the signal: refuse new callbacks with 503
    and answer 503 on /healthz (the load balancer moves traffic to another replica),
    close every connection after its next answer, let the callbacks in flight finish;
    with the memory backend, whose counts live only in this process, keep serving
    /metrics until a scrape has seen them all (bounded by
    shutdown.final_scrape_timeout_seconds); only then close the listener, wait
    (bounded) for the last requests, and clean up.
    """
    exporter = app[EXPORTER]
    in_flight, callbacks_in_flight = app[IN_FLIGHT], app[CALLBACKS_IN_FLIGHT]
    runner = ExporterRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS,
                           keepalive_timeout=config.limits.keepalive_timeout_seconds,
                           max_line_size=MAX_LINE_SIZE, max_field_size=MAX_FIELD_SIZE,
                           max_headers=MAX_HEADERS)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        host, port = config.host, config.port
        site = web.TCPSite(runner, host, port, ssl_context=tls_context(config.web))
        try:
            await site.start()
        except OSError as exc:  # in use, not this machine's, or a name that does not resolve
            raise ListenError(f"cannot listen on {config.listen}: "
                              f"{exc.strerror or exc}") from None
        log.info("listening", extra={"fields": {
            "address": f"{host}:{port}", "version": __version__,
            "tls": config.web.tls_cert_file is not None,
            "basic_auth": bool(config.web.basic_auth_users)}})
        await stop.wait()
        exporter.stopping.active = True
        log.info("stopping: refusing new callbacks, finishing in-flight requests",
                 extra={"fields": {"in_flight": in_flight.count + callbacks_in_flight.count}})
        await callbacks_in_flight.drained(SHUTDOWN_TIMEOUT_SECONDS)
        if exporter.store.backend == "memory":
            for signum in (signal.SIGTERM, signal.SIGINT):  # a second one: stop waiting
                loop.add_signal_handler(signum, exporter.stopping.give_up)
            timeout = config.shutdown.final_scrape_timeout_seconds
            log.info("stopping: serving /metrics until the last counts are scraped "
                     "(a second signal stops at once)",
                     extra={"fields": {"timeout_seconds": timeout}})
            if not await exporter.stopping.final_scrape(timeout):
                why = ("a second signal" if exporter.stopping.given_up else
                       "no scrape within shutdown.final_scrape_timeout_seconds")
                log.warning(f"stopping: {why}; the counts since the last scrape are lost",
                            extra={"fields": {"timeout_seconds": timeout}})
        await site.stop()
        await in_flight.drained(SHUTDOWN_TIMEOUT_SECONDS)
        await callbacks_in_flight.drained(SHUTDOWN_TIMEOUT_SECONDS)
    finally:
        await runner.cleanup()


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


class ListenError(Exception):
    """The listen address cannot be had: one line for the user, not a traceback."""


def serve(config: Config) -> int:
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    app = create_app(config, registry)
    for warning in config_warnings(config):
        log.warning(warning)
    if not config.signature.signing_keys:
        log.warning("signature checking is OFF: anyone who can reach the callback "
                    "endpoints can feed metrics; set signature.signing_keys")
    try:
        asyncio.run(run_server(app, config))
    except ListenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    # Closing the loop restored the default handlers: a repeated SIGTERM while the
    # interpreter winds down would turn a clean exit 0 into a kill.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)
    log.info("stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "check-config":
        return check_config(args.config)
    if args.command == "hash-password":
        return print_password_hash()
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
    return serve(config)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
