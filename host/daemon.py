"""hostd entry points: ``run(config)`` (async) and ``main(argv)`` (CLI).

    hypnolum hostd --config /etc/hypnolum/hostd.toml
    hypnolum hostd --check-config /etc/hypnolum/hostd.toml   # exit 2 if invalid

Under systemd (``Type=notify``) hostd reports READY once its tasks run,
a STATUS line whenever the picture changes, WATCHDOG pings from the event
loop, and STOPPING when it shuts down. SIGTERM stops it gracefully: every
online pod is faded to off (safe), the sessions end, each pod and the host
are published ``offline``, and the broker connection is closed.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from . import log as logsetup
from . import state as st
from .circles import CircleCoordinator
from .config import Config, ConfigError, load
from .hub import Hub
from .mqtt import MqttBridge
from .notify import Notifier
from .ports import PortScanner

log = logging.getLogger("hypnolum.hostd")

_SHUTDOWN_S = 5.0
_STATUS_S = 1.0


def status_line(hub: Hub, bridge: MqttBridge) -> str:
    online = sum(1 for s in hub.pods.values() if s.state.link == st.ONLINE)
    broker = "connected" if bridge.connected.is_set() else "disconnected"
    return f"{online} pod(s) online of {len(hub.pods)}; broker {broker}"


async def _report_status(notifier: Notifier, hub: Hub, bridge: MqttBridge) -> None:
    last = None
    while True:
        line = status_line(hub, bridge)
        if line != last:
            notifier.notify(STATUS=line)
            last = line
        await asyncio.sleep(_STATUS_S)


async def run(config: Config, stop: asyncio.Event | None = None, notifier: Notifier | None = None) -> None:
    """Serve pods until ``stop`` is set (or SIGTERM/SIGINT), then shut down cleanly:
    pods faded to off, ports closed, every pod and the host published offline,
    broker disconnected."""
    stop = stop or asyncio.Event()
    notifier = notifier or Notifier()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    bridge = MqttBridge(config)
    hub = Hub(config, bridge)
    scanner = PortScanner(config.serial, hub.serve_port)
    log.info("hostd %s starting: broker %s:%d%s, ports %s", config.host.id, config.mqtt.host, config.mqtt.port,
             " (TLS)" if config.mqtt.tls else "", ", ".join(config.serial.ports) or "(none)")
    bridge_task = asyncio.create_task(bridge.run(), name="mqtt")
    tasks = [
        asyncio.create_task(scanner.run(), name="scanner"),
        asyncio.create_task(hub.serve_commands(), name="commands"),
        asyncio.create_task(CircleCoordinator(config, hub).run(), name="circles"),
        *hub.start_transports(),
    ]
    if notifier.enabled:
        tasks.append(asyncio.create_task(_report_status(notifier, hub, bridge), name="status"))
        if notifier.watchdog_s:
            tasks.append(asyncio.create_task(notifier.watchdog(), name="watchdog"))
    stopper = asyncio.create_task(stop.wait())
    notifier.notify(READY=1, STATUS=status_line(hub, bridge))
    try:
        done, _ = await asyncio.wait([bridge_task, stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopper:
                exc = None if task.cancelled() else task.exception()
                log.error("%s ended unexpectedly: %r", task.get_name(), exc)
    finally:
        log.info("hostd %s stopping", config.host.id)
        notifier.notify(STOPPING=1, STATUS="stopping: fading pods to off")
        try:
            async with asyncio.timeout(config.pods.stop_fade_ms / 1000 + _SHUTDOWN_S):
                await hub.fade_all()
        except TimeoutError:
            log.warning("fading pods to off did not finish in time")
        for task in (*tasks, stopper):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            async with asyncio.timeout(_SHUTDOWN_S):
                await bridge.close()
            async with asyncio.timeout(_SHUTDOWN_S):
                await bridge_task
        except (TimeoutError, Exception) as exc:  # noqa: BLE001
            log.warning("MQTT shutdown incomplete: %r", exc)
            bridge_task.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):
                pass
        log.info("hostd %s stopped", config.host.id)
        notifier.close()


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
