"""The pod link on a USB CDC-ACM interface of its own, beside the REPL's.

machine.USBDevice keeps MicroPython's built-in CDC (interfaces 0-1, the REPL)
and appends this function after it: an IAD, a communication interface with
its notification endpoint and a data interface with bulk OUT/IN endpoints
(docs/board-port.md, "Pod link"). The host sees a second /dev/ttyACM. Its
bytes never pass through stdio, so they are not copied to UART0 at 115200,
0x03 is plain data and the DTR/RTS bootloader sequence does nothing here.

TinyUSB's callbacks run from the MicroPython scheduler. They only move bytes
between the endpoint buffers and two preallocated rings and set a
ThreadSafeFlag. Every transfer is also submitted from scheduler context, so
two submissions can never race. Nothing here allocates after open().
"""
import asyncio

import micropython
from micropython import const

_TX_SIZE = const(4096)  # backlog: a burst of telemetry plus the 2 KB link.py keeps for answers
_RX_SIZE = const(1024)  # host commands that arrive during a 10-20 ms render or GC stall
_TX_WRAP = const(8191)  # indices run mod 2*size, so a full ring and an empty one differ
_RX_WRAP = const(2047)
_PKT = const(64)  # full-speed bulk wMaxPacketSize
_IN_PKTS = const(8)  # largest IN transfer: 512 B, so a busy link costs few callbacks

_STAGE_SETUP = const(1)  # TinyUSB CONTROL_STAGE_*
_REQ_TYPE_CLASS = const(0x20)
_SET_LINE_CODING = const(0x20)
_GET_LINE_CODING = const(0x21)
_SET_CONTROL_LINE_STATE = const(0x22)
_SEND_BREAK = const(0x23)

INTERFACE_NAME = "hypnolum link"  # iInterface: udev matches it (host/deploy/60-hypnolum.rules)


def descriptor(itf, ep, istr):
    """The CDC-ACM function: IAD, comm interface itf, data interface itf+1,
    notification endpoint 0x80|ep, bulk OUT ep+1 and IN 0x80|(ep+1)."""
    return bytes((
        8, 0x0B, itf, 2, 0x02, 0x02, 0x00, istr,  # IAD: 2 interfaces, CDC / ACM
        9, 0x04, itf, 0, 1, 0x02, 0x02, 0x00, istr,  # comm interface, 1 endpoint
        5, 0x24, 0x00, 0x20, 0x01,  # CDC header, bcdCDC 1.20
        5, 0x24, 0x01, 0x00, itf + 1,  # call management: data on itf+1
        4, 0x24, 0x02, 0x02,  # ACM: line coding and control line state
        5, 0x24, 0x06, itf, itf + 1,  # union: comm itf, data itf+1
        7, 0x05, 0x80 | ep, 0x03, 8, 0, 16,  # notification: interrupt IN, 8 B
        9, 0x04, itf + 1, 0, 2, 0x0A, 0x00, 0x00, 0,  # data interface, 2 endpoints
        7, 0x05, ep + 1, 0x02, _PKT, 0, 0,  # bulk OUT
        7, 0x05, 0x80 | (ep + 1), 0x02, _PKT, 0, 0,  # bulk IN
    ))


class Port:
    """A non-blocking byte pipe over the CDC data endpoints (the hal.open_link contract).

    write(buf, n) -> how many of buf[0:n] were taken (what fits; never waits).
    tx_free() -> bytes write() would take now. readinto(buf) -> bytes copied
    from what has arrived, 0 if nothing (never waits). await wait() returns
    once bytes have arrived since the last wait (one waiter).
    """

    def __init__(self, usbd):
        b = usbd.BUILTIN_CDC  # the REPL keeps interfaces 0-1 and endpoints 1-2
        self._itf = itf = b.itf_max
        ep = b.ep_max
        self._ep_in = 0x80 | (ep + 1)
        self._ep_out = ep + 1
        cfg = bytearray(b.desc_cfg)
        cfg += descriptor(itf, ep, b.str_max)
        cfg[2] = len(cfg) & 0xFF  # wTotalLength
        cfg[3] = len(cfg) >> 8
        cfg[4] = itf + 2  # bNumInterfaces
        self._usbd = usbd
        self._tx = bytearray(_TX_SIZE)
        self._rx = bytearray(_RX_SIZE)
        self._th = self._tt = 0  # TX head (written by write) and tail (by callbacks)
        self._rh = self._rt = 0  # RX head (callbacks) and tail (readinto)
        self._in = bytearray(_IN_PKTS * _PKT)
        mv = memoryview(self._in)
        # an IN transfer's length is its buffer's: one view per length it can have (no slicing later)
        self._in_views = [mv[:n] for n in range(_PKT)] + [mv[:k * _PKT] for k in range(1, _IN_PKTS + 1)]
        self._out = bytearray(_PKT)
        self._coding = bytearray(b"\x00\xc2\x01\x00\x00\x00\x08")  # 115200 8N1 until the host sets one
        self._flag = asyncio.ThreadSafeFlag()
        self._open = False  # the host configured the device: endpoints exist
        self._in_busy = False
        self._out_busy = False
        self._kick_pending = False
        self._kick_cb = self._kick  # bound once: schedule() then allocates nothing
        self.dtr = False  # the host has the port open (SET_CONTROL_LINE_STATE)
        self.xfer_errors = 0
        usbd.active(False)
        usbd.builtin_driver = b
        usbd.config(
            b.desc_dev, cfg, {b.str_max: INTERFACE_NAME},
            self._on_open, self._on_reset, self._on_control, self._on_xfer,
        )
        usbd.active(True)

    # -- main context -------------------------------------------------------
    def up(self):
        """A host is attached: it configured the device and holds the port open (DTR)."""
        return self._open and self.dtr

    def tx_free(self):
        return _TX_SIZE - ((self._th - self._tt) & _TX_WRAP)

    def write(self, buf, n):
        th = self._th
        free = _TX_SIZE - ((th - self._tt) & _TX_WRAP)
        if n > free:
            n = free
        if n:
            _ring_put(self._tx, _TX_SIZE, th & (_TX_SIZE - 1), buf, n)
            self._th = (th + n) & _TX_WRAP  # publish only once the bytes are there
            if not (self._in_busy or self._kick_pending):
                self._schedule_kick()
        return n

    def readinto(self, buf):
        rt = self._rt
        n = (self._rh - rt) & _RX_WRAP
        if not n:
            return 0
        size = len(buf)
        if n > size:
            n = size
        _ring_get(self._rx, _RX_SIZE, rt & (_RX_SIZE - 1), buf, n)
        self._rt = (rt + n) & _RX_WRAP
        if not (self._out_busy or self._kick_pending):
            self._schedule_kick()  # the ring was too full to take a packet: room again
        return n

    def wait(self):
        return self._flag.wait()

    def _schedule_kick(self):
        if self._kick_pending:
            return
        self._kick_pending = True
        try:
            micropython.schedule(self._kick_cb, None)
        except RuntimeError:  # queue full: the next write, read or completion kicks again
            self._kick_pending = False

    # -- scheduler context (TinyUSB callbacks and kicks) ---------------------
    def _kick(self, _):
        self._kick_pending = False
        if not self._in_busy:
            self._submit_in()
        if not self._out_busy:
            self._submit_out()

    def _submit_in(self):
        if not self._open:
            return
        tt = self._tt
        n = (self._th - tt) & _TX_WRAP
        if not n:
            return
        if n >= _PKT:  # whole packets; a short tail goes in its own transfer
            k = n // _PKT
            if k > _IN_PKTS:
                k = _IN_PKTS
            n = k * _PKT
            view = self._in_views[_PKT - 1 + k]
        else:
            view = self._in_views[n]
        _ring_get(self._tx, _TX_SIZE, tt & (_TX_SIZE - 1), self._in, n)
        if self._usbd.submit_xfer(self._ep_in, view):
            self._in_busy = True
            self._tt = (tt + n) & _TX_WRAP

    def _submit_out(self):
        if not self._open or _RX_SIZE - ((self._rh - self._rt) & _RX_WRAP) < _PKT:
            return  # no room for a packet: the host is NAKed until readinto frees some
        if self._usbd.submit_xfer(self._ep_out, self._out):
            self._out_busy = True

    def _on_xfer(self, ep, result, n):
        if result:
            self.xfer_errors += 1
        if ep == self._ep_in:
            self._in_busy = False
            if self._th != self._tt:
                self._submit_in()
        elif ep == self._ep_out:
            self._out_busy = False
            if n and not result:
                rh = self._rh
                _ring_put(self._rx, _RX_SIZE, rh & (_RX_SIZE - 1), self._out, n)
                self._rh = (rh + n) & _RX_WRAP
                self._flag.set()
            self._submit_out()
        return True

    def _on_open(self, desc):
        # SET_CONFIGURATION: our endpoints exist now; what waited in the ring goes
        if desc[2] == self._itf:
            self._open = True
            self._submit_out()
            self._submit_in()

    def _on_reset(self):
        # a bus reset aborts every transfer; the rings keep their bytes
        self._open = False
        self.dtr = False
        self._in_busy = False
        self._out_busy = False

    def _on_control(self, stage, req):
        if req[0] & 0x60 != _REQ_TYPE_CLASS or (req[4] | req[5] << 8) != self._itf:
            return False  # not ours: stall
        if stage != _STAGE_SETUP:
            return True
        r = req[1]
        if r == _SET_LINE_CODING or r == _GET_LINE_CODING:
            return self._coding  # the baud rate means nothing on USB; kept for the host to read back
        if r == _SET_CONTROL_LINE_STATE:
            self.dtr = bool(req[2] & 1)
            return True
        return r == _SEND_BREAK


@micropython.viper
def _ring_put(ring, size: int, pos: int, src, n: int):
    # ring[pos:] = src[0:n], wrapping at size (n <= size); one call, no allocation
    r = ptr8(ring)
    s = ptr8(src)
    first = size - pos
    if n < first:
        first = n
    i = 0
    while i < first:
        r[pos + i] = s[i]
        i += 1
    while i < n:
        r[i - first] = s[i]
        i += 1


@micropython.viper
def _ring_get(ring, size: int, pos: int, dst, n: int):
    # dst[0:n] = ring[pos:], wrapping at size (n <= size); one call, no allocation
    r = ptr8(ring)
    d = ptr8(dst)
    first = size - pos
    if n < first:
        first = n
    i = 0
    while i < first:
        d[i] = r[pos + i]
        i += 1
    while i < n:
        d[i] = r[i - first]
        i += 1


def open(usbd):
    """The pod link on usbd (a machine.USBDevice): a Port."""
    return Port(usbd)
