# The device end of an emulated USB cable: machine.USBDevice's stand-in
# (emulator/mpy/machine.py) presents the whole device, with the descriptors the
# firmware gave config(), on D/usb.sock. A host (tests/helpers/fake_usb.py, a
# pyusb backend) connects to plug the cable in and closes to pull it out.
#
# Messages both ways: <BBH kind, endpoint, payload length>, then the payload.
#   host -> device
#     RESET          bus reset: transfers forgotten, reset_cb(), unconfigured
#     SETUP          8-byte setup packet + the OUT data stage; answered by CTRL
#     OUT   ep       one bulk packet (<= 64 B); answered by ACK (taken) or NAK
#     IN    ep       <H length>: read up to length; answered by DATA until the
#                    length is reached or a short packet ends it
#     CANCEL ep      the host gave up on its IN read; answered by CANCELLED
#   device -> host
#     CTRL           <B status 0 ok / 1 stall> + the IN data stage
#     ACK / NAK ep, DATA ep (packets of one frame), CANCELLED ep
#
# Standard requests are answered here as TinyUSB answers them; class and vendor
# requests go to the firmware's control_xfer_cb. A 1 ms frame carries at most
# 19 bulk packets (USB 2.0 section 5.8.4, table 5-9): the stand-in's frame_packets(),
# as on the CDC path. Pulling
# the cable out is a suspend to the device, as on the S3 without VBUS sensing
# (ports/esp32/usb.c:41-53 configures none): nothing changes until the next
# host's bus reset.
import asyncio
import os
import socket
import struct
import time

import micropython
from micropython import const

import emutime
from pod.mem import copy  # the firmware's own: a forward byte copy, no allocation

H_RESET = const(1)
H_SETUP = const(2)
H_OUT = const(3)
H_IN = const(4)
H_CANCEL = const(5)
D_CTRL = const(0x81)
D_ACK = const(0x82)
D_NAK = const(0x83)
D_DATA = const(0x84)
D_CANCELLED = const(0x85)

_PKT = const(64)
_MAX_PAYLOAD = const(512)  # a host message: an OUT packet, a SETUP and its data stage

# the S3 image's built-in strings (ports/esp32/mpconfigport.h:257-262,
# shared/tinyusb/tusb_config.h:47; the serial number is the chip's MAC in hex,
# mp_usbd_port_get_serial_number; here the emulator's HYPNOLUM_UID)
_MANUFACTURER = "Espressif Systems"
_PRODUCT = "Espressif Device"
_CDC_NAME = "Board CDC"


def _string(text):
    data = text.encode()
    out = bytearray(2 + 2 * len(data))
    out[0] = len(out)
    out[1] = 3
    for i, c in enumerate(data):  # ASCII: the pod id and interface names are
        out[2 + 2 * i] = c
    return out


class Cable:
    """The device's end of usb.sock for machine.USBDevice's stand-in (usbd)."""

    def __init__(self, usbd, itfs):
        self.usbd = usbd
        self.itfs = itfs  # runtime interfaces: (offset, length, _) in desc_cfg
        self.conn = None
        self.config_value = 0
        self.in_buf = None  # the firmware's submitted IN transfer
        self.in_off = 0
        self.in_want = 0  # bytes the host's IN read still takes (0: no read pending)
        self.out_buf = None
        self.in_flag = usbd._in_flag  # set by a submit, a host's read, or a dispatch to retry
        self.hdr = bytearray(4)
        self.out_hdr = bytearray(4)
        self.reset_cb = self._reset  # bound once
        self.configure_cb = self._configure
        self.chunk = bytearray(_MAX_PAYLOAD)
        self.rx = bytearray(2 * _MAX_PAYLOAD + 4)  # what a read brings after an unfinished message

    def start(self):
        path = (os.getenv("HYPNOLUM_POD_DIR") or ".") + "/usb.sock"
        try:
            os.remove(path)  # a previous boot's
        except OSError:
            pass
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(struct.pack("H", socket.AF_UNIX) + path.encode() + b"\0")
        s.listen(1)
        s.setblocking(False)
        self.listener = s
        return (asyncio.create_task(self._serve()), asyncio.create_task(self._in_pump()))

    # -- the firmware's side (machine.USBDevice.submit_xfer) ------------------
    def submit(self, ep, buf):
        usbd = self.usbd
        if ep == usbd._ep_in:
            if self.in_buf is not None or usbd._in_done >= 0:
                raise OSError(16)  # EBUSY
            self.in_buf = buf
            self.in_off = 0
            self.in_flag.set()
        elif ep == usbd._ep_out:
            if self.out_buf is not None or usbd._out_done >= 0:
                raise OSError(16)
            self.out_buf = buf
        return True

    # -- the host's side -------------------------------------------------------
    async def _serve(self):
        listening = emutime.Readable(self.listener)
        while True:
            await listening.wait()
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            conn.setblocking(False)
            self.conn = conn
            try:
                await self._host(conn)
            except OSError:
                pass
            self.conn = None
            self.in_want = 0  # unplugged: a suspend; the next host resets the bus
            conn.close()

    async def _host(self, conn):
        # messages as they arrive, several to a read: one wait per batch, nothing allocated per message
        rx = self.rx
        chunk = self.chunk
        readable = emutime.Readable(conn)
        have = 0
        while True:
            k = conn.readinto(chunk)  # what is there
            if k is None:
                await readable.wait()
                continue
            if not k:
                return
            copy(rx, have, chunk, 0, k)
            have += k
            used = 0
            while have - used >= 4:
                n = rx[used + 2] | rx[used + 3] << 8
                if n > _MAX_PAYLOAD:
                    return  # not a host we understand: pull the cable
                if have - used < 4 + n:
                    break
                await self._message(rx[used], rx[used + 1], used + 4, n)
                used += 4 + n
            if used:
                copy(rx, 0, rx, used, have - used)
                have -= used

    async def _message(self, kind, ep, off, n):
        rx = self.rx
        if kind == H_RESET:
            self._bus_reset()
            await self._call(self.reset_cb)
        elif kind == H_SETUP:
            if self._setup(memoryview(rx)[off:off + n]):
                await self._call(self.configure_cb)
        elif kind == H_OUT:
            self._out(ep, off, n)
        elif kind == H_IN:
            self.in_want = rx[off] | rx[off + 1] << 8
            self.in_flag.set()
        elif kind == H_CANCEL:
            self.in_want = 0
            self.send(D_CANCELLED, ep, None, 0, 0)

    def send(self, kind, ep, data, off, n):
        conn = self.conn
        if conn is None:
            return
        out = self.out_hdr
        struct.pack_into("<BBH", out, 0, kind, ep, n)
        try:
            _write_all(conn, out, 0, 4)
            if n:
                _write_all(conn, data, off, n)
        except OSError:
            pass  # the host is gone; the serve loop sees it

    def _bus_reset(self):
        usbd = self.usbd
        usbd._configured = False
        self.config_value = 0
        self.in_buf = self.out_buf = None
        self.in_want = 0
        usbd._in_done = usbd._out_done = -1  # forgotten: no callback

    async def _call(self, cb):
        # cb in scheduler context, as TinyUSB's task runs callbacks; in order with
        # the completions, retried while the queue is full
        while True:
            try:
                micropython.schedule(cb, None)
                return
            except RuntimeError:
                await asyncio.sleep_ms(1)

    def _reset(self, _):
        reset = self.usbd._cbs[1]
        if reset:
            reset()

    def _configure(self, _):
        usbd = self.usbd
        usbd._configured = True
        open_itf = usbd._cbs[0]
        cfg = memoryview(usbd._cfg)
        for off, ln, _n in self.itfs:
            if open_itf:
                open_itf(cfg[off:off + ln])

    def _setup(self, pkt):
        # answers the request; True if it was SET_CONFIGURATION 1 (the interfaces open next)
        req_type, req, value, index, length = struct.unpack_from("<BBHHH", pkt, 0)
        usbd = self.usbd
        reply = None
        configure = False
        if req_type & 0x60 == 0:  # standard
            if req == 6 and req_type == 0x80:  # GET_DESCRIPTOR
                kind, i = value >> 8, value & 0xFF
                if kind == 1:
                    reply = bytes(usbd._desc_dev)
                elif kind == 2:
                    reply = bytes(usbd._cfg)
                elif kind == 3:
                    reply = self._string(i)
            elif req == 5:  # SET_ADDRESS
                reply = b""
            elif req == 9:  # SET_CONFIGURATION
                if value == 1:
                    self.config_value = 1
                    configure = True
                    reply = b""
                elif value == 0:
                    self.config_value = 0
                    usbd._configured = False
                    reply = b""
            elif req == 8:  # GET_CONFIGURATION
                reply = bytes((self.config_value,))
            elif req == 0:  # GET_STATUS
                reply = b"\0\0"
            elif req == 11 and req_type == 0x01:  # SET_INTERFACE, alternate 0 only
                reply = b"" if value == 0 else None
        else:
            reply = self._class_request(pkt, req_type, length)
        if reply is None:
            self.send(D_CTRL, 0, b"\x01", 0, 1)  # stall
            return False
        reply = b"\x00" + reply[:length]
        self.send(D_CTRL, 0, reply, 0, len(reply))
        return configure

    def _class_request(self, pkt, req_type, length):
        # control_xfer_cb's stages, as mp_usbd_runtime.c calls them: SETUP, DATA, ACK
        control = self.usbd._cbs[2]
        if control is None:
            return None
        setup = memoryview(bytearray(pkt[:8]))
        res = control(1, setup)
        if res is False or res is None:
            self.usbd.stalls += 1
            return None
        reply = b""
        if res is not True:  # the data stage's buffer
            buf = memoryview(res)
            if req_type & 0x80:
                reply = bytes(buf[:length])
            else:
                buf[:len(pkt) - 8] = pkt[8:]
            control(2, setup)
        control(3, setup)
        return reply

    def _string(self, i):
        if i == 0:
            return b"\x04\x03\x09\x04"  # English
        strs = self.usbd._strs
        text = None
        if strs is not None:
            try:
                text = strs[i]
            except (KeyError, IndexError):
                text = None
        if text is None:
            if i == 1:
                text = _MANUFACTURER
            elif i == 2:
                text = _PRODUCT
            elif i == 3:
                text = os.getenv("HYPNOLUM_UID") or "0"
            elif i == 4:
                text = _CDC_NAME
            else:
                return None
        return bytes(_string(text))

    def _out(self, ep, off, n):
        usbd = self.usbd
        buf = self.out_buf
        if ep != usbd._ep_out or not usbd._configured or buf is None or n > len(buf):
            self.send(D_NAK, ep, None, 0, 0)
            return
        copy(buf, 0, self.rx, off, n)
        self.out_buf = None
        usbd._out_done = n
        usbd._schedule()
        self.send(D_ACK, ep, None, 0, 0)

    async def _in_pump(self):
        usbd = self.usbd
        flag = self.in_flag
        while True:
            if usbd.retry_dispatch():
                await asyncio.sleep_ms(0)  # the poll runs what is queued
                continue
            buf = self.in_buf
            if buf is None or not self.in_want or self.conn is None:
                await flag.wait()
                continue
            packets = usbd.frame_packets()
            if not packets:
                await asyncio.sleep_ms(1)  # the next 1 ms frame
                continue
            # packets of this transfer, as many as the frame, the host's read and the transfer allow
            n = len(buf)
            off = self.in_off
            left = n - off
            room = packets * _PKT
            if room > self.in_want:
                room = self.in_want
            m = left if left <= room else room - room % _PKT
            if m == 0 and left:
                await asyncio.sleep_ms(1)
                continue
            self.send(D_DATA, usbd._ep_in, buf, off, m)
            usbd._budget -= (m + _PKT - 1) // _PKT if m else 1
            self.in_off = off = off + m
            self.in_want -= m
            if m % _PKT or m == 0:
                self.in_want = 0  # a short packet ends the host's read
            if off >= n:
                self.in_buf = None
                usbd._in_done = n
                usbd._schedule()


def _write_all(conn, buf, off, n):
    # the host's reader thread always reads: a full socket is rare and short
    while n:
        k = conn.write(buf, off, n)
        if k is None:
            time.sleep_ms(1)
            continue
        off += k
        n -= k

