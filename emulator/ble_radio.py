"""An emulated pod's BLE radio: a bumble Device driven by the firmware's own bluetooth calls.

The pod's interpreter sees MicroPython's ``bluetooth.BLE`` (emulator/mpy/bluetooth.py); behind
it, over ``D/ble.sock``, this radio is the pod's controller and host stack: a bumble
:class:`~bumble.device.Device` with a virtual controller on a :class:`~bumble.link.LocalLink`
the test shares with hostd's bumble central (tests/helpers/ble_peer.py ``BumbleGattLink``).
Its GATT table, advertising data, security configuration and notifications are the ones the
firmware asked for, and its bonds are the firmware's: the key store asks the firmware for them
and hands new ones to it to store (``_IRQ_GET_SECRET`` / ``_IRQ_SET_SECRET``), which may refuse.
So the pod's own GATT code, advertising and bonding run in every test. A reboot closes the
socket: the radio powers off (a connected central sees the link drop) and waits for the next boot.

The message format is emulator/mpy/bluetooth.py's.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import struct
from pathlib import Path

from bumble.controller import Controller
from bumble.core import UUID
from bumble.device import Connection, Device
from bumble.gatt import Characteristic, CharacteristicValue, Service
from bumble.hci import Address
from bumble.host import Host
from bumble.keys import KeyStore, PairingKeys
from bumble.link import LocalLink
from bumble.pairing import PairingConfig, PairingDelegate
from bumble.transport.common import AsyncPipeSink

_PEER_SEC = 2  # NimBLE's BLE_STORE_OBJ_TYPE_PEER_SEC: the peer's keys, by its address
_IO = {0: PairingDelegate.IoCapability.DISPLAY_OUTPUT_ONLY, 1: PairingDelegate.IoCapability.DISPLAY_OUTPUT_AND_YES_NO_INPUT,
       2: PairingDelegate.IoCapability.KEYBOARD_INPUT_ONLY, 3: PairingDelegate.IoCapability.NO_OUTPUT_NO_INPUT,
       4: PairingDelegate.IoCapability.DISPLAY_OUTPUT_AND_KEYBOARD_INPUT}
_F_WRITE_NO_RESPONSE, _F_WRITE, _F_NOTIFY, _F_WRITE_ENCRYPTED = 0x0004, 0x0008, 0x0010, 0x1000


def peer_name(name: str) -> str:
    """A peer's address as bonds are keyed by: without bumble's address-type suffix ("/P"),
    which differs between an identity address and the one a connection reports."""
    return name.split("/")[0]


class FirmwareKeyStore(KeyStore):
    """The pod's bonds, kept by the firmware (pod/bonds.py) and reached through its irq."""

    def __init__(self, radio: "PodRadio"):
        self.radio = radio
        self.stored: set[str] = set()  # peers the firmware holds keys for (found or stored)

    async def get(self, name: str) -> PairingKeys | None:
        name = peer_name(name)
        value = await self.radio.secret_get(_PEER_SEC, 0, name.encode())
        if value is None:
            return None
        self.stored.add(name)
        return PairingKeys.from_dict(json.loads(value))

    async def update(self, name: str, keys: PairingKeys) -> None:
        name = peer_name(name)
        ok = await self.radio.secret_set(_PEER_SEC, name.encode(), json.dumps(keys.to_dict()).encode())
        if ok:
            self.stored.add(name)
        else:
            self.stored.discard(name)
            self.radio.bonds_refused += 1

    async def delete(self, name: str) -> None:
        name = peer_name(name)
        await self.radio.secret_set(_PEER_SEC, name.encode(), None)
        self.stored.discard(name)

    async def get_all(self) -> list[tuple[str, PairingKeys]]:
        return []  # no resolving list: the emulated centrals use static addresses


INTERVAL_MS = 30  # BlueZ's default LE connection interval, the shortest it asks for (30-50 ms)
PKTS_PER_EVENT = 4  # notifications per connection event: a conservative figure for the S3's controller


class PodRadio:
    """Link timing: the pod's notifications reach the central at connection events, every
    ``interval_ms``, at most ``pkts_per_event`` an event; the central's writes reach the pod at
    the next event. The interpreter's stand-in holds as many notifications as NimBLE would and
    refuses more (emulator/mpy/bluetooth.py), so a slow link fills the firmware's own ring."""

    def __init__(self, link: LocalLink, sock_path: str | os.PathLike, address: str,
                 interval_ms: int = INTERVAL_MS, pkts_per_event: int = PKTS_PER_EVENT):
        self.interval_s = interval_ms / 1000
        self.pkts_per_event = pkts_per_event
        self.notified_bytes = 0  # notification payload bytes delivered, in all
        self.notified_max = 0  # the largest notification
        self.link = link
        self.path = Path(sock_path)
        self.address = address
        self.device: Device | None = None
        self.controller: Controller | None = None
        self.connection: Connection | None = None
        self.bonds_refused = 0
        self.notifications = 0
        self.writes: list[bytes] = []  # ATT writes the firmware received, as they came
        self.advertising: tuple[bytes, bytes] | None = None  # (adv data, scan response), as the firmware set
        self._server: asyncio.AbstractServer | None = None
        self._conn_task: asyncio.Task | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._answers: asyncio.Queue[bytes] = asyncio.Queue()
        self._ask = asyncio.Lock()
        self._chars: dict[int, Characteristic] = {}
        self._handles: dict[int, int] = {}  # bumble value handle -> the firmware's
        self._cfg: dict = {}
        self._keystore = FirmwareKeyStore(self)
        self._notes: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
        self._writes: asyncio.Queue[bytes] = asyncio.Queue()
        self._anchor = 0.0  # the first connection event of the connection (loop time)
        self._pairing = False

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._conn_task is not None:
            self._conn_task.cancel()
        await self._power_off()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._power_off()  # a new boot: the last one's radio is gone
        self._conn_task = asyncio.current_task()
        self._writer = writer
        self._answers = asyncio.Queue()
        self.controller = Controller("pod", link=self.link, public_address=self.address)
        self.device = Device(address=Address(self.address), host=Host(self.controller, AsyncPipeSink(self.controller)))
        self.device.keystore = self._keystore
        self.device.on("connection", self._on_connection)
        pumps = (asyncio.create_task(self._notify_pump()), asyncio.create_task(self._write_pump()))
        try:
            while True:
                head = await reader.readexactly(2)
                (n,) = struct.unpack("<H", head)
                msg = await reader.readexactly(n)
                await self._on(msg[:1], msg[1:])
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            for pump in pumps:
                pump.cancel()
            writer.close()
            if self._writer is writer:
                self._writer = None
                await self._power_off()

    async def _power_off(self) -> None:
        # the central sees the link end (on air: its supervision timeout), then the radio is gone
        conn, self.connection = self.connection, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.disconnect(), 2)
        dev, self.device = self.device, None
        self._chars.clear()
        self._handles.clear()
        if dev is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(dev.power_off(), 2)
            with contextlib.suppress(Exception):
                self.link.remove_controller(self.controller)

    # ------------------------------------------------------- the firmware's calls
    async def _on(self, op: bytes, p: bytes) -> None:
        dev = self.device
        if op == b"r":
            self._answers.put_nowait(p)
        elif op == b"n":
            conn, h = struct.unpack_from("<HH", p)
            self._notes.put_nowait((h, p[4:]))
        elif op == b"c":
            self._cfg = json.loads(p)
            dev.pairing_config_factory = self._pairing_config
        elif op == b"s":
            services = []
            for uuid, rows in json.loads(p):
                chars = []
                for h, cuuid, flags in rows:
                    chars.append((h, self._characteristic(h, cuuid, flags)))
                services.append(Service(UUID(uuid), [c for _, c in chars]))
                for h, c in chars:
                    self._chars[h] = c
            dev.add_services(services)
            for h, c in self._chars.items():
                self._handles[c.handle] = h
            await dev.power_on()
        elif op == b"a":
            if not p:
                await dev.stop_advertising()
                return
            interval_us, connectable, n = struct.unpack_from("<IBB", p)
            adv, resp = p[6:6 + n], p[6 + n:]
            self.advertising = (adv, resp)
            if dev.is_advertising:
                await dev.stop_advertising()
            await dev.start_advertising(advertising_data=adv, scan_response_data=resp,
                                        advertising_interval_min=interval_us / 1000,
                                        advertising_interval_max=interval_us / 1000, auto_restart=False)
        elif op == b"d":
            if self.connection is not None:
                with contextlib.suppress(Exception):
                    await self.connection.disconnect()

    def _characteristic(self, h: int, uuid: str, flags: int) -> Characteristic:
        props = Characteristic.Properties(0)
        perms = Characteristic.Permissions(0)
        if flags & _F_WRITE:
            props |= Characteristic.Properties.WRITE
        if flags & _F_WRITE_NO_RESPONSE:
            props |= Characteristic.Properties.WRITE_WITHOUT_RESPONSE
        if flags & _F_NOTIFY:
            props |= Characteristic.Properties.NOTIFY
            perms |= Characteristic.READABLE
        if flags & (_F_WRITE | _F_WRITE_NO_RESPONSE):
            perms |= Characteristic.WRITEABLE
            if flags & _F_WRITE_ENCRYPTED:
                perms |= Characteristic.WRITE_REQUIRES_ENCRYPTION

        def on_write(connection, value: bytes) -> None:
            self.writes.append(bytes(value))
            self._writes.put_nowait(struct.pack("<HH", connection.handle, h) + bytes(value))

        return Characteristic(UUID(uuid), props, perms, CharacteristicValue(write=on_write) if perms & Characteristic.WRITEABLE else b"")

    def _pairing_config(self, _connection) -> PairingConfig:
        c = self._cfg
        return PairingConfig(sc=bool(c.get("le_secure")), mitm=bool(c.get("mitm")), bonding=bool(c.get("bond")),
                             delegate=PairingDelegate(io_capability=_IO[c.get("io", 3)]))

    async def _next_event(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        k = int((now - self._anchor) / self.interval_s) + 1
        await asyncio.sleep(self._anchor + k * self.interval_s - now)

    async def _notify_pump(self) -> None:
        while True:
            first = await self._notes.get()
            await self._next_event()
            batch = [first]
            while len(batch) < self.pkts_per_event and not self._notes.empty():
                batch.append(self._notes.get_nowait())
            for h, data in batch:
                conn, char = self.connection, self._chars.get(h)
                if conn is None or char is None:
                    continue  # not connected (any more): the stack drops it
                self.notifications += 1
                self.notified_bytes += len(data)
                self.notified_max = max(self.notified_max, len(data))
                with contextlib.suppress(Exception):
                    await self.device.notify_subscriber(conn, char, data, force=True)

    async def _write_pump(self) -> None:
        while True:
            first = await self._writes.get()
            await self._next_event()
            self._event(b"W", first)
            while not self._writes.empty():
                self._event(b"W", self._writes.get_nowait())

    # ------------------------------------------------------ events to the firmware
    def _event(self, op: bytes, payload: bytes) -> None:
        if self._writer is not None:
            self._writer.write(struct.pack("<H", len(payload) + 1) + op + payload)

    @staticmethod
    def _addr(conn: Connection) -> bytes:
        a = conn.peer_address
        return struct.pack("<B", 0 if a.is_public else 1) + bytes(a)

    def _on_connection(self, conn: Connection) -> None:
        # a second central while one is connected: the firmware is told and disconnects it
        self.connection = conn
        self._anchor = asyncio.get_running_loop().time()
        self._pairing = False
        self._event(b"C", struct.pack("<H", conn.handle) + self._addr(conn))
        conn.on("disconnection", lambda *_: self._on_disconnection(conn))
        conn.on("connection_att_mtu_update", lambda *_: self._event(b"M", struct.pack("<HH", conn.handle, conn.att_mtu)))
        conn.on("pairing_start", lambda *_: setattr(self, "_pairing", True))
        conn.on("pairing", lambda *_: self._pairing_done(conn))
        conn.on("pairing_failure", lambda *_: setattr(self, "_pairing", False))
        conn.on("connection_encryption_change", lambda *_: None if self._pairing else self._encryption(conn))

    def _on_disconnection(self, conn: Connection) -> None:
        if self.connection is conn:
            self.connection = None
        # the firmware advertises again on _IRQ_CENTRAL_DISCONNECT, as NimBLE needs it to
        self._event(b"D", struct.pack("<H", conn.handle) + self._addr(conn))

    def _pairing_done(self, conn: Connection) -> None:
        self._pairing = False
        self._encryption(conn)

    def _encryption(self, conn: Connection) -> None:
        bonded = peer_name(str(conn.peer_address)) in self._keystore.stored
        enc = 1 if conn.encryption else 0
        self._event(b"E", struct.pack("<HBBBB", conn.handle, enc, 1 if conn.authenticated else 0,
                                      1 if bonded else 0, 16 if enc else 0))

    # ------------------------------------------------------ the firmware's bonds
    async def _ask_firmware(self, op: bytes, payload: bytes) -> bytes:
        async with self._ask:
            self._event(op, payload)
            return await asyncio.wait_for(self._answers.get(), 5)

    async def secret_get(self, sec_type: int, index: int, key: bytes | None) -> bytes | None:
        p = await self._ask_firmware(b"G", struct.pack("<BHB", sec_type, index, 1 if key is not None else 0) + (key or b""))
        return p[1:] if p[:1] == b"\x01" else None

    async def secret_set(self, sec_type: int, key: bytes, value: bytes | None) -> bool:
        p = await self._ask_firmware(b"S", struct.pack("<BBB", sec_type, len(key), 0 if value is None else 1) + key + (value or b""))
        return p == b"\x01"
