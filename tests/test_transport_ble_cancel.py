"""BLE connection attempts stay bounded when the GATT client mishandles cancellation.

A client stack can lose a cancellation (Python 3.11's ``asyncio.wait_for`` returns a result that
arrives in the same loop turn as the cancel) and then wait for an event that never comes. The
transport must still give up on time, and the supervisor must still stop when cancelled.
"""
from __future__ import annotations

import asyncio
import time

import pytest

from hypnolum.host.config import parse
from hypnolum.host.transport import TransportError
from hypnolum.host.transport.ble import BleTransport, supervise

from helpers.ble_peer import UnconnectedLink


class StubbornLink(UnconnectedLink):
    """A GATT client whose connect ignores cancellation; it ends only when the link is dropped
    (``ends_on_disconnect``), or never."""

    def __init__(self, ends_on_disconnect: bool):
        self.address = "F0:F0:F0:F0:F0:0A"
        self.ends_on_disconnect = ends_on_disconnect
        self.dropped = asyncio.Event()
        self.cancels_ignored = 0
        self.disconnects = 0
        self.connect_running = False

    async def connect(self, timeout_s):
        self.connect_running = True
        try:
            while True:
                try:
                    await self.dropped.wait()
                    if self.ends_on_disconnect:
                        raise TransportError(f"ble:{self.address}: connection aborted")
                    self.dropped.clear()
                except asyncio.CancelledError:
                    self.cancels_ignored += 1
        finally:
            self.connect_running = False

    async def disconnect(self):
        self.disconnects += 1
        self.dropped.set()


async def test_attempt_that_ignores_cancel_is_ended_by_dropping_the_link():
    link = StubbornLink(ends_on_disconnect=True)
    transport = BleTransport(link.address, link, connect_timeout_s=0.2)
    started = time.monotonic()
    with pytest.raises(TransportError, match="no connection within 0.2 s"):
        await transport.open()
    assert time.monotonic() - started < 2.0
    assert link.cancels_ignored >= 1 and link.disconnects >= 1
    assert not link.connect_running  # the attempt ended, none left behind


async def test_attempt_that_never_ends_is_left_behind_not_waited_for(caplog):
    link = StubbornLink(ends_on_disconnect=False)
    transport = BleTransport(link.address, link, connect_timeout_s=0.2)
    started = time.monotonic()
    with pytest.raises(TransportError, match="no connection"):
        await transport.open()
    assert time.monotonic() - started < 5.0  # timeout + the bounded wait for the attempt to end
    assert link.connect_running
    assert "left behind" in caplog.text
    link.ends_on_disconnect = True  # let it go, so the test's loop does not end with it pending
    link.dropped.set()
    await asyncio.sleep(0.01)
    assert not link.connect_running


async def test_cancelled_supervisor_stops_while_an_attempt_ignores_cancel():
    cfg = parse({"host": {"id": "x"},
                 "ble": {"reconnect_min_s": 0.1, "reconnect_max_s": 0.2, "connect_timeout_s": 30}}).ble
    links: list[StubbornLink] = []
    opened = asyncio.Event()

    def factory(addr):
        links.append(StubbornLink(ends_on_disconnect=True))
        return links[-1]

    async def serve(transport):
        opened.set()
        await transport.open()

    task = asyncio.create_task(supervise("F0:F0:F0:F0:F0:0A", cfg, serve, factory))
    await asyncio.wait_for(opened.wait(), 5)
    await asyncio.sleep(0.05)  # the attempt is under way, 30 s from its timeout
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)
    assert done and task.cancelled()
    assert links[-1].cancels_ignored >= 1 and not links[-1].connect_running
