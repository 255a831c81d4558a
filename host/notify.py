"""systemd service notification (sd_notify) without libsystemd.

systemd passes ``NOTIFY_SOCKET`` (a datagram socket path; a leading ``@``
means the abstract namespace) to a ``Type=notify`` service. A message is one
datagram of ``KEY=value`` lines: ``READY=1`` once serving, ``STATUS=...`` for
``systemctl status``, ``WATCHDOG=1`` at least every ``WATCHDOG_USEC`` / 2,
``STOPPING=1`` on the way out. Outside systemd every call is a no-op.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None):
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        self.address: str | bytes | None = None
        if path.startswith("@"):
            self.address = "\0" + path[1:]
        elif path.startswith("/"):
            self.address = path
        self.watchdog_s = self._watchdog(env)
        self._sock: socket.socket | None = None
        self.failures = 0

    @staticmethod
    def _watchdog(env) -> float | None:
        """The watchdog period in seconds, if the watchdog is meant for this process."""
        try:
            usec = int(env.get("WATCHDOG_USEC", ""))
        except ValueError:
            return None
        pid = env.get("WATCHDOG_PID")
        if usec <= 0 or (pid and pid != str(os.getpid())):
            return None
        return usec / 1e6

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, **fields: str | int) -> bool:
        """Send ``KEY=value`` lines (``notify(READY=1, STATUS="...")``); False if not delivered."""
        if self.address is None:
            return False
        msg = "\n".join(f"{k}={v}" for k, v in fields.items()).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(msg, self.address)
        except OSError as exc:
            self.failures += 1
            if self.failures == 1:  # systemd gone or socket wrong: say so once
                log.warning("sd_notify to %s failed: %s", os.environ.get("NOTIFY_SOCKET"), exc)
            return False
        return True

    async def watchdog(self) -> None:
        """Ping the watchdog at half its period for as long as the event loop runs.

        Running as a task on the main loop is the point: a loop that hangs
        stops pinging, and systemd restarts the service.
        """
        if self.watchdog_s is None or not self.enabled:
            return
        while True:
            self.notify(WATCHDOG=1)
            await asyncio.sleep(self.watchdog_s / 2)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
