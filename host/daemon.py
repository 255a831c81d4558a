"""hostd entry points: ``run(config)`` (async) and ``main(argv)`` (CLI).

    hypnolum hostd --config /etc/hypnolum/hostd.toml
    hypnolum hostd --check-config /etc/hypnolum/hostd.toml   # exit 2 if invalid

hostd is a tree of task groups (host/supervisor.py): the root holds one
supervised task per subsystem (the MQTT connection with the pods' availability
links, the commands and pod inputs, circles, the port scanner, the BLE and
USB supervisors, the systemd status and watchdog, the log summaries); each
subsystem holds its own group (the commands in flight, the port sessions, ...).
A subsystem that fails is restarted with backoff; one that keeps failing ends
hostd.

Exit status: 0 only when asked to stop (SIGTERM or SIGINT); 2 when the
configuration cannot be used (every problem printed, ``FILE: key: problem``);
1 when hostd cannot go on (a subsystem failed more often than its restart
budget allows, or hostd itself failed). The unit restarts hostd after any
exit it did not ask for (``Restart=always``).

Under systemd (``Type=notify``) hostd reports READY once its tasks run,
a STATUS line whenever the picture changes, WATCHDOG pings from the event
loop, and STOPPING when it shuts down. Stopping, every online pod is faded to
off (safe), the sessions end, each pod and the host are published
``offline``, and the broker connection is closed.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import ssl
import sys
from typing import Awaitable, Callable

from . import log as logsetup
from . import state as st
from .broker import client_id_problem, tls_context
from .circles import CircleCoordinator
from .config import Config, ConfigError, load
from .hub import Hub
from .links import Boundaries
from .mqtt import MqttBridge
from .notify import Notifier
from .ports import PortScanner
from .supervisor import Backoff, Supervisor, first

log = logging.getLogger("hypnolum.hostd")

EXIT_STOPPED = 0  # asked to stop
EXIT_FAILED = 1  # cannot go on
EXIT_CONFIG = 2  # the configuration cannot be used

_SHUTDOWN_S = 5.0
_STATUS_S = 1.0
_SUMMARY_S = 1.0  # how often the log rate limit is asked for its summaries
RESTART = Backoff(first_s=1.0, max_s=30.0, stable_s=60.0)  # a failed subsystem's restart delays
RESTART_BUDGET = 5  # failures of one subsystem within RESTART_WINDOW_S that hostd survives
RESTART_WINDOW_S = 60.0

Run = Callable[[], Awaitable[object]]


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


async def _log_summaries(limit: logsetup.RateLimit) -> None:
    try:
        while True:
            await asyncio.sleep(_SUMMARY_S)
            limit.flush()
    finally:
        limit.flush(force=True)


def problems(config: Config) -> list[str]:
    """What keeps a valid-looking configuration from being used, as ``key: problem`` lines:
    client ids too long for the pod links, TLS files that do not load, a password file
    that cannot be read."""
    out = []
    if (problem := client_id_problem(config)) is not None:
        out.append(f"{problem[0]}: {problem[1]}")
    if config.mqtt.tls:
        try:
            tls_context(config.mqtt)
        except (ssl.SSLError, OSError) as exc:
            key = "mqtt.cert_file/key_file" if config.mqtt.cert_file else "mqtt.ca_file"
            out.append(f"{key}: the TLS files do not load: {exc}")
    try:
        config.mqtt.secret()
    except (OSError, ValueError) as exc:
        out.append(f"mqtt.password_file: cannot be read: {exc}")
    return out


class Daemon:
    """One run of hostd: its parts and its task tree."""

    def __init__(self, config: Config, notifier: Notifier, boundaries: Boundaries | None = None) -> None:
        self.config = config
        self.notifier = notifier
        self.boundaries = boundaries  # host/links.py Boundaries; None: BlueZ and libusb
        self.bridge = MqttBridge(config)
        self.hub = Hub(config, self.bridge)
        self.supervisor = Supervisor(RESTART, RESTART_BUDGET, RESTART_WINDOW_S, restarts=self.hub.restarts,
                                     changed=self.hub.host_state.changed)
        self.tasks: dict[str, asyncio.Task] = {}

    def subsystems(self) -> dict[str, Run]:
        hub, bridge = self.hub, self.bridge
        runs: dict[str, Run] = {
            "mqtt": bridge.run,
            "commands": hub.serve_commands,
            "updates": hub.updates.serve,
            "circles": CircleCoordinator(self.config, hub).run,
            "ports": PortScanner(self.config.serial, hub.serve_port).run,
            **hub.transports(self.boundaries),
        }
        if self.notifier.enabled:
            runs["status"] = lambda: _report_status(self.notifier, hub, bridge)
            if self.notifier.watchdog_s:
                runs["watchdog"] = self.notifier.watchdog
        if (limit := logsetup.rate_limit()) is not None:
            runs["log summaries"] = lambda: _log_summaries(limit)
        return runs

    async def serve(self, stop: asyncio.Event) -> int:
        """Run the tree until ``stop`` is set or a subsystem is beyond repair; then shut down.
        Returns the exit status."""
        async with asyncio.TaskGroup() as root:
            for name, run in self.subsystems().items():
                self.tasks[name] = self.supervisor.start(root, name, run)
            self.notifier.notify(READY=1, STATUS=status_line(self.hub, self.bridge))
            await first(stop.wait(), self.supervisor.failed.wait())
            await self.shutdown()
        if self.supervisor.failure is not None:
            log.critical("hostd %s exits: %s", self.config.host.id, self.supervisor.failure)
            return EXIT_FAILED
        return EXIT_STOPPED

    async def shutdown(self) -> None:
        """Pods faded to off, sessions and commands ended, pods and host offline, broker closed."""
        log.info("hostd %s stopping", self.config.host.id)
        self.supervisor.stopping = True
        self.notifier.notify(STOPPING=1, STATUS="stopping: fading pods to off")
        try:
            async with asyncio.timeout(self.config.pods.stop_fade_ms / 1000 + _SHUTDOWN_S):
                await self.hub.fade_all()
        except TimeoutError:
            log.warning("fading pods to off did not finish in time")
        others = [task for name, task in self.tasks.items() if name != "mqtt"]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        mqtt = self.tasks["mqtt"]
        try:
            async with asyncio.timeout(_SHUTDOWN_S):
                await self.hub.host_state.final()
                await self.bridge.close()
            async with asyncio.timeout(_SHUTDOWN_S):
                await asyncio.shield(mqtt)
        except (TimeoutError, Exception) as exc:  # noqa: BLE001
            log.warning("MQTT shutdown incomplete: %r", exc)
            mqtt.cancel()


async def run(config: Config, stop: asyncio.Event | None = None, notifier: Notifier | None = None,
              boundaries: Boundaries | None = None) -> int:
    """Serve pods until ``stop`` is set (or SIGTERM/SIGINT), then shut down cleanly:
    pods faded to off, ports closed, every pod and the host published offline,
    broker disconnected. Returns the exit status (0: stopped as asked). ``boundaries``:
    where BLE and USB meet the OS (host/links.py; None: BlueZ and libusb)."""
    stop = stop or asyncio.Event()
    notifier = notifier or Notifier()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    log.info("hostd %s starting: broker %s:%d%s, ports %s", config.host.id, config.mqtt.host, config.mqtt.port,
             " (TLS)" if config.mqtt.tls else "", ", ".join(config.serial.ports) or "(none)")
    try:
        status = await Daemon(config, notifier, boundaries).serve(stop)
    except Exception as exc:  # the tree itself failed: say so, exit non-zero
        log.critical("hostd %s failed: %r", config.host.id, exc, exc_info=exc)
        status = EXIT_FAILED
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):
                pass
        notifier.close()
    log.info("hostd %s stopped (exit status %d)", config.host.id, status)
    if (limit := logsetup.rate_limit()) is not None:
        limit.flush(force=True)  # what was suppressed while stopping
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hypnolum hostd", description="Host daemon for hypnolum pods.")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--config", metavar="FILE", help="run with this TOML configuration")
    group.add_argument("--check-config", metavar="FILE", help="validate FILE, print every error, exit 2 if invalid")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    source = args.check_config or args.config
    try:
        config = load(source)
    except ConfigError as exc:
        for line in exc.errors:
            print(f"{exc.source}: {line}", file=sys.stderr)
        return EXIT_CONFIG
    if errors := problems(config):
        for line in errors:
            print(f"{source}: {line}", file=sys.stderr)
        return EXIT_CONFIG
    if args.check_config:
        print(f"{args.check_config}: ok")
        return EXIT_STOPPED
    logsetup.setup(args.log_level)
    return asyncio.run(run(config))
