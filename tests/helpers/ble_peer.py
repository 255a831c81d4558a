"""hostd's side of BLE at its OS boundary: a ``GattLink`` over a bumble central.

``BumbleGattLink`` stands in for BlueZ (which needs a radio and D-Bus) on bumble's
in-process ``LocalLink``; the pod's side is the emulated pod's own radio
(emulator/ble_radio.py), driven by the firmware's bluetooth calls. As BlueZ does for a
paired device, the central encrypts with the bond it holds, or pairs (LE Secure
Connections, bonding) when it holds none and ``pair`` is set.
"""
from __future__ import annotations

import asyncio

from bumble.controller import Controller
from bumble.core import UUID
from bumble.device import Device, Peer
from bumble.hci import Address
from bumble.host import Host
from bumble.keys import MemoryKeyStore
from bumble.link import LocalLink
from bumble.pairing import PairingConfig, PairingDelegate
from bumble.transport.common import AsyncPipeSink

from hypnolum.emulator.ble_radio import peer_name
from hypnolum.host.transport import TransportError
from hypnolum.host.transport.ble import ATT_HEADER, NUS_RX, NUS_SERVICE, NUS_TX, GattLink


class CentralKeyStore(MemoryKeyStore):
    """A central's bonds by peer address, whatever address type bumble reports it with."""

    async def update(self, name, keys):
        await super().update(peer_name(name), keys)

    async def get(self, name):
        return await super().get(peer_name(name))

    async def delete(self, name):
        await super().delete(peer_name(name))


def _device(link: LocalLink, name: str, address: str) -> tuple[Device, Controller]:
    controller = Controller(name, link=link, public_address=address)
    return Device(address=Address(address), host=Host(controller, AsyncPipeSink(controller))), controller


class BumbleGattLink(GattLink):
    """hostd's GATT client on a bumble central; one per connection attempt, as with bleak.

    ``keystore``: the central's bonds, kept across attempts (BlueZ keeps them in
    /var/lib/bluetooth). ``pair``: pair when no bond is held (False: connect and use the link
    without securing it, as a stranger's central would)."""

    def __init__(self, link: LocalLink, peer_address, want_mtu: int | None = None, address: str = "F0:F0:F0:F0:F0:02",
                 keystore: CentralKeyStore | None = None, pair: bool = True):
        self.address = str(peer_address)
        self._link = link
        self._peer_address = peer_address
        self._own = address
        self.want_mtu = want_mtu
        self.keystore = keystore if keystore is not None else CentralKeyStore()
        self.pair = pair
        self.device: Device | None = None
        self.connection = None
        self.peer: Peer | None = None
        self._chars = {}
        self._callbacks = []

    async def connect(self, timeout_s: float) -> None:
        self.device, self._controller = _device(self._link, "host", self._own)
        self.device.keystore = self.keystore
        self.device.pairing_config_factory = lambda _c: PairingConfig(
            sc=True, mitm=False, bonding=True, delegate=PairingDelegate(PairingDelegate.IoCapability.NO_OUTPUT_NO_INPUT))
        await self.device.power_on()
        try:
            self.connection = await self.device.connect(self._peer_address, timeout=timeout_s)
        except Exception as exc:  # noqa: BLE001  (the boundary: any controller error is a failed connect)
            raise TransportError(f"ble:{self.address}: cannot connect: {exc!r}") from None
        self.connection.on("disconnection", self._dropped)
        try:
            await self._secure_and_discover()
        except (Exception, asyncio.CancelledError) as exc:  # noqa: BLE001  (refused, or the pod dropped the link)
            if asyncio.current_task().cancelling():
                raise  # this attempt is being cancelled: not the pod's doing
            raise TransportError(f"ble:{self.address}: link lost while connecting: {exc!r}") from None
        if NUS_RX not in self._chars or NUS_TX not in self._chars:
            raise TransportError(f"ble:{self.address}: no pod UART service")

    async def _secure_and_discover(self) -> None:
        conn = self.connection
        if await self.keystore.get(str(conn.peer_address)) is not None:
            await conn.encrypt()
        elif self.pair:
            await conn.pair()
        self.peer = Peer(conn)
        if self.want_mtu:
            await self.peer.request_mtu(self.want_mtu)
        await self.peer.discover_services([UUID(NUS_SERVICE)])
        for service in self.peer.services:
            await service.discover_characteristics()
            for c in service.characteristics:
                self._chars[str(c.uuid).lower()] = c

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


class UnconnectedLink(GattLink):
    """A GATT client that never gets a link: only its connect() differs (a subclass's), the rest
    says so. For tests of what hostd does while a pod does not answer."""

    @property
    def mtu(self):
        return 23

    async def subscribe(self, uuid, on_data):
        raise AssertionError("never connected")

    async def write(self, uuid, data):
        raise AssertionError("never connected")

    def on_disconnect(self, callback):
        pass

    async def disconnect(self):
        pass
