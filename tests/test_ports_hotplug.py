"""Hotplug: serial devices matching the configured globs are picked up while hostd runs."""
from __future__ import annotations

import asyncio
import os

from hypnolum.host.config import SerialConfig
from hypnolum.host.ports import PortScanner

from helpers.wait import wait_until


class Pty:
    """A device node that appears and disappears like a USB serial port (a pty behind a symlink)."""

    def __init__(self, link):
        self.link = link
        self.master, self.slave = os.openpty()

    def plug(self):
        os.symlink(os.ttyname(self.slave), self.link)

    def unplug(self):
        os.unlink(self.link)


async def test_new_matching_ports_are_served_without_a_restart(tmp_path):
    served: list[str] = []
    ends: dict[str, asyncio.Event] = {}

    async def serve(path):
        served.append(path)
        ends[path] = asyncio.Event()
        while os.path.exists(path):  # a session lasts as long as its device
            await asyncio.sleep(0.02)

    scanner = PortScanner(SerialConfig(ports=(f"{tmp_path}/pod-*",), scan_interval_s=0.05), serve)
    task = asyncio.create_task(scanner.run())
    a, b, other = Pty(tmp_path / "pod-a"), Pty(tmp_path / "pod-b"), Pty(tmp_path / "modem0")
    try:
        await asyncio.sleep(0.2)
        assert served == []
        a.plug()
        await wait_until(lambda: served == [str(a.link)], what="first pod picked up")
        other.plug()
        b.plug()
        await wait_until(lambda: str(b.link) in served, what="second pod picked up")
        await asyncio.sleep(0.2)
        assert sorted(served) == sorted([str(a.link), str(b.link)])  # the non-matching device is left alone
        a.unplug()
        await wait_until(lambda: str(a.link) not in scanner.active, what="unplugged port forgotten")
        a.plug()
        await wait_until(lambda: served.count(str(a.link)) == 2, what="replugged pod picked up again")
        assert set(scanner.active) == {str(a.link), str(b.link)}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert scanner.active == {}
