"""hostd entry points: ``run(config)`` (async) and ``main(argv)`` (CLI).

    hypnolum hostd --config /etc/hypnolum/hostd.toml
    hypnolum hostd --check-config /etc/hypnolum/hostd.toml   # exit 2 if invalid
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from . import log as logsetup
from .config import Config, ConfigError, load
from .hub import Hub
from .mqtt import MqttBridge
from .ports import PortScanner

log = logging.getLogger("hypnolum.hostd")

_SHUTDOWN_S = 5.0


async def run(config: Config, stop: asyncio.Event | None = None) -> None:
    """Serve pods until ``stop`` is set (or SIGTERM/SIGINT), then shut down cleanly:
    ports closed, every pod and the host published offline, broker disconnected."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    bridge = MqttBridge(config)
    hub = Hub(config, bridge)
    scanner = PortScanner(config.serial, hub.serve_port)
    log.info("hostd %s starting: broker %s:%d, ports %s", config.host.id, config.mqtt.host, config.mqtt.port,
             ", ".join(config.serial.ports) or "(none)")
    bridge_task = asyncio.create_task(bridge.run(), name="mqtt")
    tasks = [asyncio.create_task(scanner.run(), name="scanner"), asyncio.create_task(hub.serve_commands(), name="commands")]
    stopper = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait([bridge_task, stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopper and task.exception():
                log.error("%s failed: %r", task.get_name(), task.exception())
    finally:
        log.info("hostd %s stopping", config.host.id)
        for task in (*tasks, stopper):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await asyncio.wait_for(bridge.close(), _SHUTDOWN_S)
            await asyncio.wait_for(bridge_task, _SHUTDOWN_S)
        except (TimeoutError, Exception) as exc:  # noqa: BLE001
            log.warning("MQTT shutdown incomplete: %r", exc)
            bridge_task.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):
                pass
        log.info("hostd %s stopped", config.host.id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hypnolum hostd", description="Host daemon for hypnolum pods.")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--config", metavar="FILE", help="run with this TOML configuration")
    group.add_argument("--check-config", metavar="FILE", help="validate FILE, print every error, exit 2 if invalid")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    try:
        config = load(args.check_config or args.config)
    except ConfigError as exc:
        for line in exc.errors:
            print(f"{exc.source}: {line}", file=sys.stderr)
        return 2
    if args.check_config:
        print(f"{args.check_config}: ok")
        return 0
    logsetup.setup(args.log_level)
    asyncio.run(run(config))
    return 0
