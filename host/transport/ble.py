"""BLE transport: a pod's Nordic-UART-style GATT service.

The pod serves one primary service with two characteristics:

- RX (``6e400002-…``): the host writes frames here (write without response);
- TX (``6e400003-…``): the pod notifies its frames here.

The link is a byte stream cut into ATT packets: a write carries at most
``ATT_MTU - 3`` bytes, so ``write()`` splits at that size (the MTU is what
the two sides negotiated, 23 before any exchange, up to 247 or more); the
frames' COBS delimiters put them back together on the other side, so chunk
and frame boundaries need not agree.

``BleTransport`` speaks to the GATT client through ``GattLink``: in
production ``BleakGattLink`` (bleak, BlueZ over D-Bus); any other GATT client
(a test's in-process controller) fits the same interface. ``supervise()`` keeps
one pod connected: it reconnects with exponential backoff whenever the link drops
or cannot be made. Only a link that was up for ``_STABLE_S`` starts the backoff
again from ``reconnect_min_s``: an attempt that runs to its timeout (a pod out of
range) or fails at once (no adapter, no BlueZ) is followed by the next longer
delay, so an absent pod costs at most one attempt per ``reconnect_max_s`` once
the series has grown.
"""
from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from typing import Awaitable, Callable

from ..supervisor import Backoff
from .base import Transport, TransportClosed, TransportError

log = logging.getLogger(__name__)

NUS_SERVICE = "6e400001-b5a3-f393-e0a9-e50e24dcca9e"
NUS_RX = "6e400002-b5a3-f393-e0a9-e50e24dcca9e"  # host -> pod (write without response)
NUS_TX = "6e400003-b5a3-f393-e0a9-e50e24dcca9e"  # pod -> host (notify)
ATT_HEADER = 3  # opcode + handle in every ATT write/notification
ATT_DEFAULT_MTU = 23
_STABLE_S = 10.0  # a link that lasted this long resets the reconnect backoff
_QUEUE = 1024  # notifications buffered before the oldest are dropped (counted)
_END_S = 2.0  # how long an abandoned connection attempt gets to end after its link is dropped


class GattLink(ABC):
    """The GATT client operations a BLE transport needs, on one peer."""

    #: peer address, for names and logs
    address: str

    @abstractmethod
    async def connect(self, timeout_s: float) -> None:
        """Connect, discover the service, exchange the MTU. Raises ``TransportError``."""

    @property
    @abstractmethod
    def mtu(self) -> int:
        """The ATT MTU in force now."""

    @abstractmethod
    async def subscribe(self, uuid: str, on_data: Callable[[bytes], None]) -> None:
        """Enable notifications of ``uuid``; ``on_data`` is called on the event loop per notification."""

    @abstractmethod
    async def write(self, uuid: str, data: bytes) -> None:
        """Write without response (one ATT packet; ``len(data) <= mtu - 3``)."""

    @abstractmethod
    def on_disconnect(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (on the event loop) when the link drops."""

    @abstractmethod
    async def disconnect(self) -> None:
        """Drop the link; idempotent."""


class BleakGattLink(GattLink):
    """GattLink over bleak (BlueZ on Linux)."""

    def __init__(self, address: str):
        self.address = address
        self._client = None
        self._callbacks: list[Callable[[], None]] = []

    async def connect(self, timeout_s: float) -> None:
        import bleak
        from bleak.exc import BleakError

        loop = asyncio.get_running_loop()

        def dropped(_client) -> None:
            for cb in self._callbacks:
                loop.call_soon_threadsafe(cb)

        self._client = bleak.BleakClient(self.address, disconnected_callback=dropped, timeout=timeout_s)
        try:
            await self._client.connect()
            if self._client.services.get_characteristic(NUS_RX) is None:
                raise TransportError(f"ble:{self.address}: no pod UART service")
        except (BleakError, OSError, TimeoutError) as exc:
            # OSError: no D-Bus / BlueZ on this machine
            raise TransportError(f"ble:{self.address}: cannot connect: {exc or type(exc).__name__}") from None

    @property
    def mtu(self) -> int:
        return self._client.mtu_size if self._client is not None else ATT_DEFAULT_MTU

    async def subscribe(self, uuid, on_data) -> None:
        await self._client.start_notify(uuid, lambda _char, data: on_data(bytes(data)))

    async def write(self, uuid, data) -> None:
        from bleak.exc import BleakError

        try:
            await self._client.write_gatt_char(uuid, data, response=False)
        except (BleakError, OSError) as exc:
            raise TransportClosed(f"ble:{self.address}: write failed: {exc}") from None

    def on_disconnect(self, callback) -> None:
        self._callbacks.append(callback)

    async def disconnect(self) -> None:
        if self._client is not None:
            try:
                await self._client.disconnect()
            except Exception as exc:  # noqa: BLE001  (already gone is fine)
                log.debug("ble:%s: disconnect: %r", self.address, exc)


class BleTransport(Transport):
    def __init__(self, address: str, link: GattLink | None = None, connect_timeout_s: float = 10.0):
        self.name = f"ble:{address}"
        self.link = link or BleakGattLink(address)
        self.connect_timeout_s = connect_timeout_s
        self.chunks_written = 0
        self.notifications_dropped = 0
        self._rx: asyncio.Queue[bytes] = asyncio.Queue(_QUEUE)
        self._closed = False
        self._opened_at: float | None = None  # monotonic time the link came up

    def _on_data(self, data: bytes) -> None:
        if self._closed or not data:
            return
        if self._rx.full():
            self._rx.get_nowait()
            self.notifications_dropped += 1
        self._rx.put_nowait(data)

    def _on_drop(self) -> None:
        if not self._closed:
            log.info("%s: link dropped", self.name)
        self._end()

    def _end(self) -> None:
        self._closed = True
        if self._rx.full():
            self._rx.get_nowait()
        self._rx.put_nowait(b"")

    async def open(self) -> None:
        self.link.on_disconnect(self._on_drop)
        # The attempt runs as its own task and is waited on with asyncio.wait, which never waits
        # for a cancelled task to end: a GATT client that loses a cancellation (Python 3.11's
        # wait_for can) must not hold the supervisor, or hostd's shutdown, forever.
        attempt = asyncio.ensure_future(self._connect())
        try:
            await asyncio.wait({attempt}, timeout=self.connect_timeout_s)
        except asyncio.CancelledError:
            await self._abandon(attempt)
            raise
        if not attempt.done():
            await self._abandon(attempt)
            raise TransportError(f"{self.name}: no connection within {self.connect_timeout_s} s")
        try:
            attempt.result()
        except TransportError:
            await self._disconnect()
            raise
        except Exception as exc:  # the GATT client's own failure (its stack, the adapter): still a failed connect
            await self._disconnect()
            raise TransportError(f"{self.name}: cannot connect: {exc!r}") from exc
        except BaseException:
            await self._disconnect()
            raise
        self._opened_at = time.monotonic()
        log.info("%s: connected, ATT MTU %d", self.name, self.link.mtu)

    def up_s(self) -> float:
        """Seconds the link has been up since it opened (0 if it never did)."""
        return 0.0 if self._opened_at is None else time.monotonic() - self._opened_at

    async def _connect(self) -> None:
        await self.link.connect(self.connect_timeout_s)
        await self.link.subscribe(NUS_TX, self._on_data)

    async def _abandon(self, attempt: asyncio.Future) -> None:
        """Stop a connection attempt: cancel it, drop the link (which also ends a client that
        ignored the cancellation), and wait a bounded time for it to end."""
        attempt.cancel()
        await self._disconnect()
        await _settle(attempt, _END_S, f"{self.name}: the cancelled connection attempt")

    async def _disconnect(self) -> None:
        await _settle(asyncio.ensure_future(self.link.disconnect()), self.connect_timeout_s, f"{self.name}: disconnect")

    async def read(self) -> bytes:
        if self._closed and self._rx.empty():
            return b""
        data = await self._rx.get()
        if not data:
            self._rx.put_nowait(b"")  # every later read sees the end too
        return data

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._closed:
                raise TransportClosed(f"{self.name}: closed")
            size = max(1, self.link.mtu - ATT_HEADER)  # the MTU may grow after an exchange
            await self.link.write(NUS_RX, bytes(view[:size]))
            self.chunks_written += 1
            view = view[size:]

    async def close(self) -> None:
        if not self._closed:
            self._end()
        await self._disconnect()


async def _settle(task: asyncio.Future, timeout_s: float, what: str) -> None:
    """Wait up to ``timeout_s`` for ``task`` to end, never longer (``asyncio.wait`` does not wait
    for a cancelled task); a task still running is cancelled and left behind. Errors are logged."""
    await asyncio.wait({task}, timeout=timeout_s)
    if not task.done():
        task.cancel()
        log.warning("%s did not end in %.1f s; left behind", what, timeout_s)
    elif not task.cancelled() and task.exception() is not None:
        log.debug("%s: %r", what, task.exception())


async def supervise(address: str, cfg, serve: Callable[[Transport], Awaitable[None]],
                    link_factory: Callable[[str], GattLink] = BleakGattLink, stable_s: float = _STABLE_S) -> None:
    """Keep a session on the BLE pod at ``address``, reconnecting with backoff (``cfg``: BleConfig);
    a link up for ``stable_s`` starts the series again."""
    retry = Backoff(cfg.reconnect_min_s, cfg.reconnect_max_s, stable_s).retry()
    while True:
        transport = BleTransport(address, link_factory(address), cfg.connect_timeout_s)
        await serve(transport)
        retry.ran(transport.up_s())  # how long the link was up; an attempt's own time does not count
        delay = retry.delay()
        log.debug("ble:%s: reconnecting in %.1f s", address, delay)
        await asyncio.sleep(delay)
