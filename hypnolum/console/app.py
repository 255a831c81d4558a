"""``hypnolum console``: the session console, a web page on hostd's broker.

    hypnolum console --config /etc/hypnolum/hostd.toml [--listen HOST:PORT]
    hypnolum console --demo [--listen HOST:PORT]        # the running `hypnolum demo`'s broker
    hypnolum console --add-user NAME [--role operator|viewer] (--config FILE | --users-file FILE)
    hypnolum console --check-config FILE

It reaches hostd only through MQTT (docs/mqtt.md), so one console shows the
pods of every host on the broker. ``--add-user`` reads the password from the
terminal (twice) or, when stdin is not a terminal, from its first line.

Exit status: 0 when stopped (SIGTERM, SIGINT) or a user was added; 1 when it
cannot listen; 2 for a configuration or usage error.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import logging
import os
import signal
import threading
import ssl
import sys
from pathlib import Path

from aiohttp import web

from ..host.config import ConfigError
from .auth import ROLES, UsersFileError, add_user
from .config import ConsoleConfig, WebConfig, load, parse
from .demo_link import DemoTarget
from .mqtt_feed import FixedTarget, Target
from .server import Console, make_app

log = logging.getLogger("hypnolum.console")

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hypnolum console",
                                description="The session console: every pod at a glance, live EEG, controls.")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--config", metavar="FILE", help="hostd's TOML file: [mqtt] and [web] are read")
    source.add_argument("--demo", action="store_true", help="use the running `hypnolum demo`'s broker")
    source.add_argument("--check-config", metavar="FILE", help="validate FILE's [mqtt] and [web], exit 2 if invalid")
    p.add_argument("--listen", metavar="HOST:PORT", help="instead of [web] listen (default 127.0.0.1:8480)")
    p.add_argument("--add-user", metavar="NAME", help="add NAME to the users file (password from the terminal)")
    p.add_argument("--role", choices=ROLES, default="operator", help="with --add-user (default operator)")
    p.add_argument("--users-file", metavar="FILE", help="with --add-user: instead of [web] users_file")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def _read_password(name: str) -> str:
    if sys.stdin.isatty():
        first = getpass.getpass(f"password for {name}: ")
        if getpass.getpass("again: ") != first:
            raise UsersFileError("the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def _add_user(args: argparse.Namespace, cfg: ConsoleConfig | None) -> int:
    path = Path(args.users_file) if args.users_file else (cfg.web.users_file if cfg else None)
    if path is None:
        print("hypnolum console: --add-user needs --users-file or [web] users_file in --config", file=sys.stderr)
        return EXIT_CONFIG
    try:
        replaced = add_user(path, args.add_user, args.role, _read_password(args.add_user))
    except UsersFileError as exc:
        print(f"hypnolum console: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"{'replaced' if replaced else 'added'} {args.role} {args.add_user} in {path}")
    return EXIT_OK


def _tls(web_cfg: WebConfig) -> ssl.SSLContext | None:
    if not web_cfg.tls:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(web_cfg.tls_cert), str(web_cfg.tls_key))
    return ctx


_SHUTDOWN_S = 10.0  # a stop that takes longer than this ends the process anyway


def _exit_after(seconds: float) -> None:
    """Make sure a stop ends the process: should closing the pages, the MQTT connection or
    the server hang (a connection half-made when the stop came), exit regardless after
    ``seconds``, as a supervisor would kill it, with a line saying so."""
    def _force() -> None:
        print(f"hypnolum console: stopping took more than {seconds:.0f} s; exiting", file=sys.stderr, flush=True)
        os._exit(EXIT_OK)

    timer = threading.Timer(seconds, _force)
    timer.daemon = True
    timer.start()


async def serve(web_cfg: WebConfig, target: Target) -> int:
    """Run until SIGTERM or SIGINT."""
    console = Console(web_cfg, target)
    runner = web.AppRunner(make_app(console), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, web_cfg.host, web_cfg.port, ssl_context=_tls(web_cfg), shutdown_timeout=2.0)
        await site.start()
    except (OSError, ssl.SSLError) as exc:
        await runner.cleanup()
        print(f"hypnolum console: cannot listen on {web_cfg.listen}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    scheme = "https" if web_cfg.tls else "http"
    host = f"[{web_cfg.host}]" if ":" in web_cfg.host else web_cfg.host
    url = f"{scheme}://{host}:{web_cfg.port}/"
    print(f"hypnolum console on {url}", flush=True)
    if console.operator_token is not None:
        print(f"operators open {url}login?token={console.operator_token}  (viewers: {url})", flush=True)
    if console.users is not None:
        print(f"{console.users.count()} user(s) in {console.users.path}", flush=True)
        for problem in console.users.problems:
            print(f"  {problem}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(console.feed.run(), name="mqtt"), asyncio.create_task(console.ticker(), name="ticker")]
    try:
        await stop.wait()
    finally:
        _exit_after(_SHUTDOWN_S)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for page in list(console.pages.open.values()):
            with contextlib.suppress(Exception):
                await page.ws.close()
        await runner.cleanup()
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not (args.config or args.demo or args.check_config or args.add_user):
        parser.error("one of --config, --demo, --check-config or --add-user is required")
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg: ConsoleConfig | None = None
    try:
        if args.config or args.check_config:
            cfg = load(args.config or args.check_config, listen=args.listen)
        elif args.listen is not None:
            cfg = parse({"web": {"listen": args.listen}}, "--listen")
    except ConfigError as exc:
        for line in exc.errors:
            print(f"{exc.source}: {line}", file=sys.stderr)
        return EXIT_CONFIG
    if args.add_user:
        return _add_user(args, cfg)
    if args.check_config:
        print(f"{args.check_config}: ok (console on {cfg.web.listen}, broker {cfg.mqtt.host}:{cfg.mqtt.port})")
        return EXIT_OK
    cfg = cfg or ConsoleConfig()
    target: Target = DemoTarget() if args.demo else FixedTarget(cfg.web.broker(cfg.mqtt))
    try:
        return asyncio.run(serve(cfg.web, target))
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
