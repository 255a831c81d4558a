"""BLE at its OS boundary: bumble's in-process link with two virtual controllers.

- ``BlePodBridge`` is the pod side: a bumble peripheral serving the Nordic-UART
  GATT service, whose bytes go to and from a pod link (the emulator's pty), so
  the real firmware answers over BLE. It records every ATT write it receives.
- ``BumbleGattLink`` is hostd's side: a ``GattLink`` over a bumble central, in
  place of BlueZ (which needs a radio and D-Bus).
"""
from __future__ import annotations

import asyncio
import os
import tty

from bumble.controller import Controller
from bumble.core import UUID
from bumble.device import Device, Peer
from bumble.gatt import Characteristic, CharacteristicValue, Service
from bumble.hci import Address
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport.common import AsyncPipeSink

from hypnolum.host.transport import TransportError
from hypnolum.host.transport.ble import ATT_HEADER, NUS_RX, NUS_SERVICE, NUS_TX, GattLink


def _device(link: LocalLink, name: str, address: str) -> tuple[Device, Controller]:
    controller = Controller(name, link=link, public_address=address)
    return Device(address=Address(address), host=Host(controller, AsyncPipeSink(controller))), controller


class BlePodBridge:
    def __init__(self, link: LocalLink, tty_path: str, address: str = "F0:F0:F0:F0:F0:01"):
        self.tty_path = tty_path
        self.device, self.controller = _device(link, "pod", address)
        self.writes: list[bytes] = []  # ATT writes received, as they came
        self.notifications: list[int] = []  # sizes of notifications sent
        self.rx = Characteristic(NUS_RX, Characteristic.Properties.WRITE_WITHOUT_RESPONSE | Characteristic.Properties.WRITE,
                                 Characteristic.WRITEABLE, CharacteristicValue(write=self._on_write))
        self.tx = Characteristic(NUS_TX, Characteristic.Properties.NOTIFY, Characteristic.READABLE, b"")
        self.device.add_service(Service(NUS_SERVICE, [self.rx, self.tx]))
        self.connection = None
        self._fd = -1
        self._out: asyncio.Queue[bytes] = asyncio.Queue()
        self._pump: asyncio.Task | None = None

    @property
    def address(self):
        return self.device.random_address

    async def start(self) -> None:
        await self.device.power_on()
        self.device.on("connection", self._on_connection)
        await self.device.start_advertising(auto_restart=True, advertising_interval_min=1.0)
        self._fd = os.open(self.tty_path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self._fd)
        asyncio.get_running_loop().add_reader(self._fd, self._on_tty)
        self._pump = asyncio.create_task(self._notify_loop())

    def _on_connection(self, connection) -> None:
        self.connection = connection
        connection.on("disconnection", lambda *_: setattr(self, "connection", None))

    def _on_write(self, _connection, value: bytes) -> None:
        self.writes.append(bytes(value))
        if self._fd >= 0:
            os.write(self._fd, value)

    def _on_tty(self) -> None:
        try:
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self._out.put_nowait(data)

    async def _notify_loop(self) -> None:
        pending = b""
        while True:
            pending += await self._out.get()
            conn = self.connection
            if conn is None:
                pending = b""  # nobody listens: a UART drops what it cannot send
                continue
            size = conn.att_mtu - ATT_HEADER  # one notification carries at most this
            while pending:
                chunk, pending = pending[:size], pending[size:]
                self.notifications.append(len(chunk))
                await self.device.notify_subscribers(self.tx, chunk)

    async def drop_link(self) -> None:
        """The radio link breaks (out of range, pod power cycle)."""
        if self.connection is not None:
            await self.connection.disconnect()

    async def stop(self) -> None:
        if self._pump:
            self._pump.cancel()
        if self._fd >= 0:
            asyncio.get_running_loop().remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1
        await self.device.power_off()


class BumbleGattLink(GattLink):
    """hostd's GATT client on a bumble central; one per connection attempt, as with bleak."""

    def __init__(self, link: LocalLink, peer_address, want_mtu: int | None = None, address: str = "F0:F0:F0:F0:F0:02"):
        self.address = str(peer_address)
        self._link = link
        self._peer_address = peer_address
        self._own = address
        self.want_mtu = want_mtu
        self.device: Device | None = None
        self.connection = None
        self.peer: Peer | None = None
        self._chars = {}
        self._callbacks = []

    async def connect(self, timeout_s: float) -> None:
        self.device, self._controller = _device(self._link, "host", self._own)
        await self.device.power_on()
        try:
            self.connection = await self.device.connect(self._peer_address, timeout=timeout_s)
        except Exception as exc:  # noqa: BLE001  (the boundary: any controller error is a failed connect)
            raise TransportError(f"ble:{self.address}: cannot connect: {exc!r}") from None
        self.connection.on("disconnection", self._dropped)
        self.peer = Peer(self.connection)
        if self.want_mtu:
            await self.peer.request_mtu(self.want_mtu)
        await self.peer.discover_services([UUID(NUS_SERVICE)])
        for service in self.peer.services:
            await service.discover_characteristics()
            for c in service.characteristics:
                self._chars[str(c.uuid).lower()] = c
        if NUS_RX not in self._chars or NUS_TX not in self._chars:
            raise TransportError(f"ble:{self.address}: no pod UART service")

    @property
    def mtu(self) -> int:
        return self.connection.att_mtu if self.connection is not None else 23

    async def subscribe(self, uuid, on_data) -> None:
        await self._chars[uuid].subscribe(lambda value: on_data(bytes(value)))

    async def write(self, uuid, data) -> None:
        if len(data) > self.mtu - ATT_HEADER:
            raise AssertionError(f"ATT write of {len(data)} bytes exceeds MTU {self.mtu}")
        await self._chars[uuid].write_value(data, with_response=False)

    def _dropped(self, *_):
        self.connection = None
        for cb in self._callbacks:
            cb()

    def on_disconnect(self, callback) -> None:
        self._callbacks.append(callback)

    async def disconnect(self) -> None:
        if self.connection is not None:
            conn, self.connection = self.connection, None
            try:
                await asyncio.wait_for(conn.disconnect(), 2)
            except Exception:  # noqa: BLE001  (already gone)
                pass
        if self.device is not None:
            dev, self.device = self.device, None
            try:
                await asyncio.wait_for(dev.power_off(), 2)
            except Exception:  # noqa: BLE001
                pass
            self._link.remove_controller(self._controller)
