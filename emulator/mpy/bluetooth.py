# bluetooth for emulated pods: MicroPython's bluetooth.BLE (extmod/modbluetooth.c at v1.28.0,
# with the NimBLE binding of the ESP32 port) for the firmware's own pod/ble.py, its radio a
# bumble Device beyond the process: D/ble.sock, served by emulator/ble_radio.py. Everything the
# radio does comes from the firmware's calls: the GATT table (gatts_register_services), the
# advertising data (gap_advertise), the security config (config bond/le_secure/mitm/io), the
# notifications, and the bonds, which the radio asks the firmware for and hands it to store
# (_IRQ_GET_SECRET/_IRQ_SET_SECRET) as NimBLE's store does.
#
# ble.sock carries messages <H length><B op> payload (the length counts op and payload).
# Firmware -> radio: c config (JSON), s services (JSON: [[uuid, [[value handle, uuid, flags]]]]),
# a advertise (<IB interval_us, connectable, <B adv length, adv, resp), n notify (<HH conn,
# handle, data), d disconnect (<H), r a secret's answer (<B kind, value). Radio -> firmware: the
# irq events C connect, D disconnect, W write (<HH, data), M MTU (<HH), E encryption (<HBBBB),
# G get secret (<BHB type, index, has key, key), S set secret (<BBB type, key length, has
# value, key, value); G and S wait for r, as the irq's return value.
#
# Like the board's, the irq runs at once, not from the scheduler (sync events:
# ports/esp32/mpconfigport.h:101-102), and its buffers are memoryviews valid during the call.
#
# Link timing (docs/transports.md, "BLE", "Figures"): notifications leave at most PKTS_PER_EVENT per
# connection interval (HYPNOLUM_BLE_INTERVAL_MS, HYPNOLUM_BLE_PKTS); the stack holds at most
# QUEUE of them, and gatts_notify raises OSError(ENOMEM) when it is full, as NimBLE does when its
# mbuf pool is spent (extmod/nimble/modbluetooth_nimble.c:1058-1072).
import asyncio
import json
import os
import socket
import struct

from micropython import const

_ENOMEM = const(12)
_ENOTCONN = const(107)
_IRQ_CENTRAL_CONNECT = const(1)
_IRQ_CENTRAL_DISCONNECT = const(2)
_IRQ_GATTS_WRITE = const(3)
_IRQ_MTU_EXCHANGED = const(21)
_IRQ_ENCRYPTION_UPDATE = const(28)
_IRQ_GET_SECRET = const(29)
_IRQ_SET_SECRET = const(30)
_QUEUE = const(8)  # notifications NimBLE can hold: its msys pool (ESP-IDF's 24 x 128 B blocks, 2-3 each)

INTERVAL_US = int(os.getenv("HYPNOLUM_BLE_INTERVAL_MS") or "30") * 1000  # BlueZ's default minimum
PKTS_PER_EVENT = int(os.getenv("HYPNOLUM_BLE_PKTS") or "4")

FLAG_READ = const(0x0002)
FLAG_WRITE_NO_RESPONSE = const(0x0004)
FLAG_WRITE = const(0x0008)
FLAG_NOTIFY = const(0x0010)


class UUID:
    def __init__(self, value):
        if isinstance(value, int):
            value = "%08x-0000-1000-8000-00805f9b34fb" % value
        self._s = value.lower()

    def __str__(self):
        return self._s

    def __eq__(self, other):
        return isinstance(other, UUID) and other._s == self._s

    def __hash__(self):
        return hash(self._s)


class BLE:
    def __init__(self):
        self._active = False
        self._sock = None
        self._irq = None
        self._cfg = {"mtu": 23, "gap_name": "MPY NIMBLE", "bond": False, "le_secure": False, "mitm": False,
                     "io": 3}
        self._values = {}  # value handle -> bytearray (the local attribute database)
        self._append = {}  # value handle -> True: writes append, a read clears (gatts_set_buffer)
        self._next_handle = 1
        self._hdr = bytearray(7)
        self._queued = 0  # notifications the modelled stack holds
        self._drained_us = 0  # the connection event instant the queue was last drained at
        self._reader = None
        self.notified = 0

    # -- module API ----------------------------------------------------------
    def active(self, value=None):
        if value is None:
            return self._active
        if value and not self._active:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            path = (os.getenv("HYPNOLUM_POD_DIR") or ".") + "/ble.sock"
            s.connect(struct.pack("H", socket.AF_UNIX) + path.encode() + b"\0")
            self._sock = s
            self._reader = asyncio.create_task(self._read_loop())
        self._active = bool(value)
        return self._active

    def config(self, *args, **kw):
        if args:
            return self._cfg[args[0]]
        self._cfg.update(kw)
        self._send(b"c", json.dumps(self._cfg).encode())

    def irq(self, handler):
        self._irq = handler

    def gatts_register_services(self, services):
        # handles as NimBLE numbers them: service declaration, then per characteristic its
        # declaration and value (and a CCCD after a notifying one)
        out = []
        table = []
        for uuid, chars in services:
            self._next_handle += 1
            handles = []
            rows = []
            for c in chars:
                self._next_handle += 1
                h = self._next_handle
                self._next_handle += 1
                if c[1] & 0x30:
                    self._next_handle += 1
                self._values[h] = bytearray()
                handles.append(h)
                rows.append([h, str(c[0]), c[1]])
            out.append(tuple(handles))
            table.append([str(uuid), rows])
        self._send(b"s", json.dumps(table).encode())
        return tuple(out)

    def gatts_set_buffer(self, handle, n, append=False):
        self._append[handle] = append

    def gatts_read(self, handle):
        v = self._values[handle]
        out = bytes(v)
        if self._append.get(handle):
            v[:] = b""
        return out

    def gatts_write(self, handle, data, send_update=False):
        self._values[handle][:] = data

    def gatts_notify(self, conn, handle, data=None):
        if data is None:
            data = self._values[handle]
        self._drain()
        if self._queued >= _QUEUE:
            raise OSError(_ENOMEM)
        self._queued += 1
        self.notified += 1
        h = self._hdr
        n = len(data) + 5
        struct.pack_into("<HBHH", h, 0, n, 0x6E, conn, handle)  # 0x6E: "n"
        self._sock.write(h)
        self._sock.write(data)

    def gap_advertise(self, interval_us, adv_data=None, resp_data=None, connectable=True):
        if interval_us is None:
            self._send(b"a", b"")
            return
        adv = bytes(adv_data or b"")
        self._send(b"a", struct.pack("<IBB", interval_us, 1 if connectable else 0, len(adv)) + adv
                   + bytes(resp_data or b""))

    def gap_disconnect(self, conn):
        self._send(b"d", struct.pack("<H", conn))
        return True

    # -- the radio ------------------------------------------------------------
    def _drain(self):
        # notifications the connection events since the last call took off the air
        import time

        now = time.ticks_us()
        events = time.ticks_diff(now, self._drained_us) // INTERVAL_US
        if events > 0:
            left = self._queued - events * PKTS_PER_EVENT
            self._queued = left if left > 0 else 0
            self._drained_us = time.ticks_add(self._drained_us, events * INTERVAL_US)
        if not self._queued:
            self._drained_us = now

    def _send(self, op, payload):
        self._sock.write(struct.pack("<H", len(payload) + 1) + op + payload)

    def _call(self, event, data):
        # as modbluetooth.c:1224-1247: an exception in the handler is printed and the handler
        # is disabled
        if self._irq is None:
            return None
        try:
            return self._irq(event, data)
        except Exception as e:  # noqa: the firmware's bug, reported as the board does
            import sys

            print("Unhandled exception in IRQ callback handler")
            sys.print_exception(e)
            self._irq = None
            return None

    async def _read_loop(self):
        r = asyncio.StreamReader(self._sock)
        while True:
            head = await r.readexactly(2)
            (n,) = struct.unpack("<H", head)
            msg = await r.readexactly(n)
            self._on(msg[0], memoryview(msg)[1:])

    def _on(self, op, p):
        if op == 0x57:  # W
            conn, h = struct.unpack_from("<HH", p)
            v = self._values.get(h)
            if v is None:
                return
            if self._append.get(h):
                v.extend(p[4:])
            else:
                v[:] = p[4:]
            self._call(_IRQ_GATTS_WRITE, (conn, h))
        elif op == 0x43 or op == 0x44:  # C, D
            conn, t = struct.unpack_from("<HB", p)
            if op == 0x43:
                self._queued = 0
            self._call(_IRQ_CENTRAL_CONNECT if op == 0x43 else _IRQ_CENTRAL_DISCONNECT, (conn, t, p[3:9]))
        elif op == 0x4D:  # M
            self._call(_IRQ_MTU_EXCHANGED, struct.unpack_from("<HH", p))
        elif op == 0x45:  # E
            self._call(_IRQ_ENCRYPTION_UPDATE, struct.unpack_from("<HBBBB", p))
        elif op == 0x47:  # G
            t, index, has = struct.unpack_from("<BHB", p)
            v = self._call(_IRQ_GET_SECRET, (t, index, p[4:] if has else None))
            self._send(b"r", b"" if v is None else b"\x01" + bytes(v))
        elif op == 0x53:  # S
            t, kl, has = struct.unpack_from("<BBB", p)
            ok = self._call(_IRQ_SET_SECRET, (t, p[3:3 + kl], p[3 + kl:] if has else None))
            self._send(b"r", b"\x01" if ok else b"\x00")
