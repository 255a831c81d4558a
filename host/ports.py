"""Port scanner: open a session on every configured port that appears.

Every ``scan_interval_s`` the configured paths and glob patterns are
expanded; a path not being served gets ``serve(path)`` in its own task, in the
scanner's task group. When that task ends (port vanished, I/O error, or a
session that failed: logged, and contained to that port) the path is
forgotten, so a device that is plugged back in is picked up at the next scan.
"""
from __future__ import annotations

import asyncio
import glob
import logging
import os
from typing import Awaitable, Callable

from .config import SerialConfig

log = logging.getLogger(__name__)


def expand(patterns: tuple[str, ...], known: dict[str, str] | None = None) -> list[str]:
    """Existing paths matching the patterns; one path per device (symlinks resolved for de-duplication).

    ``known`` maps paths to their resolved paths where already known (ports being served),
    which spares resolving them on every scan."""
    known = known or {}
    seen: set[str] = set()
    out = []
    for pattern in patterns:
        paths = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        for path in paths:
            if not os.path.exists(path):  # also false for a dangling symlink
                continue
            real = known.get(path) or os.path.realpath(path)
            if real not in seen:
                seen.add(real)
                out.append(path)
    return out


class PortScanner:
    def __init__(self, cfg: SerialConfig, serve: Callable[[str], Awaitable[None]]):
        self.cfg = cfg
        self.serve = serve
        self.active: dict[str, asyncio.Task] = {}
        self._real: dict[str, str] = {}  # active path -> the device it resolved to when it was opened
        self._group: asyncio.TaskGroup | None = None

    async def run(self) -> None:
        """Scan until cancelled; the port sessions end with it."""
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                while True:
                    self.scan()
                    await asyncio.sleep(self.cfg.scan_interval_s)
        finally:
            self._group = None

    def scan(self) -> None:
        busy = set(self._real.values())
        for path in expand(self.cfg.ports, self._real):
            if path in self.active:
                continue
            real = os.path.realpath(path)
            if real in busy:
                continue
            log.debug("port %s appeared", path)
            task = self._group.create_task(self._serve(path), name=f"port {path}")
            self.active[path] = task
            self._real[path] = real

    async def _serve(self, path: str) -> None:
        try:
            await self.serve(path)
        except Exception:
            log.exception("port %s: session failed", path)
        finally:
            self.active.pop(path, None)
            self._real.pop(path, None)
