"""A pod link on a bulk IN/OUT endpoint pair of machine.USBDevice: the rings and
transfers that every USB function of the pod's link shares (pod/usbcdc.py,
pod/usbvendor.py add their descriptors and class requests).

TinyUSB's callbacks run from the MicroPython scheduler. They only move bytes
between the endpoint buffers and two preallocated rings and set a
ThreadSafeFlag. Every transfer is also submitted from scheduler context, so
two submissions can never race. Nothing here allocates after __init__.
"""
import asyncio

import micropython
from micropython import const

_TX_SIZE = const(4096)  # backlog: a burst of telemetry plus the 2 KB link.py keeps for answers
_RX_SIZE = const(1024)  # host commands that arrive during a 10-20 ms render or GC stall
_TX_WRAP = const(8191)  # indices run mod 2*size, so a full ring and an empty one differ
_RX_WRAP = const(2047)
PKT = const(64)  # full-speed bulk wMaxPacketSize
_IN_PKTS = const(8)  # largest IN transfer: 512 B, so a busy link costs few callbacks

STAGE_SETUP = const(1)  # TinyUSB CONTROL_STAGE_*
INTERFACE_NAME = "hypnolum link"  # iInterface: hostd and udev match it (host/deploy/60-hypnolum.rules)


def config_descriptor(builtin, function, interfaces):
    """The built-in configuration (the REPL's CDC) with function appended and
    wTotalLength and bNumInterfaces set (interfaces: how many function adds)."""
    cfg = bytearray(builtin.desc_cfg)
    cfg += function
    cfg[2] = len(cfg) & 0xFF  # wTotalLength
    cfg[3] = len(cfg) >> 8
    cfg[4] = builtin.itf_max + interfaces  # bNumInterfaces
    return cfg


class BulkPort:
    """A non-blocking byte pipe over bulk endpoints (the hal.open_link contract).

    write(buf, n) -> how many of buf[0:n] were taken (what fits; never waits).
    tx_free() -> bytes write() would take now. readinto(buf) -> bytes copied
    from what has arrived, 0 if nothing (never waits). await wait() returns
    once bytes have arrived since the last wait (one waiter). up() -> a host
    uses this function now.

    A subclass builds the descriptors, then calls start(); it answers its class
    requests in _on_control. zlp: end an IN burst that fills its last packet
    with a zero-length packet, so a host read larger than the burst completes
    (USB 2.0 5.8.3: a bulk transfer ends at a short packet).
    """

    def __init__(self, usbd, itf, ep_out, ep_in, zlp):
        self._usbd = usbd
        self._itf = itf  # the function's first interface: open_itf_cb and class requests name it
        self._ep_in = ep_in
        self._ep_out = ep_out
        self._zlp = zlp
        self._tx = bytearray(_TX_SIZE)
        self._rx = bytearray(_RX_SIZE)
        self._th = self._tt = 0  # TX head (written by write) and tail (by callbacks)
        self._rh = self._rt = 0  # RX head (callbacks) and tail (readinto)
        self._in = bytearray(_IN_PKTS * PKT)
        mv = memoryview(self._in)
        # an IN transfer's length is its buffer's: one view per length it can have (no slicing later)
        self._in_views = [mv[:n] for n in range(PKT)] + [mv[:k * PKT] for k in range(1, _IN_PKTS + 1)]
        self._out = bytearray(PKT)
        self._flag = asyncio.ThreadSafeFlag()
        self._open = False  # the host configured the device: endpoints exist
        self._in_busy = False
        self._in_full = False  # the last IN transfer ended on a full packet (zlp)
        self._out_busy = False
        self._kick_pending = False
        self._kick_cb = self._kick  # bound once: schedule() then allocates nothing
        self.xfer_errors = 0

    def start(self, builtin, desc_dev, cfg, strs):
        """Keep the built-in function (the REPL's CDC), add ours with these
        descriptors, and (re)enumerate."""
        usbd = self._usbd
        usbd.active(False)
        usbd.builtin_driver = builtin  # only while inactive (machine_usb_device.c:318-329)
        usbd.config(desc_dev, cfg, strs, self._on_open, self._on_reset, self._on_control, self._on_xfer)
        usbd.active(True)

    # -- main context -------------------------------------------------------
    def up(self):
        return self._open

    def tx_free(self):
        return _TX_SIZE - ((self._th - self._tt) & _TX_WRAP)

    def write(self, buf, n):
        th = self._th
        free = _TX_SIZE - ((th - self._tt) & _TX_WRAP)
        if n > free:
            n = free
        if n:
            _ring_copy(self._tx, _TX_SIZE, th & (_TX_SIZE - 1), buf, n, 1)
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
        _ring_copy(self._rx, _RX_SIZE, rt & (_RX_SIZE - 1), buf, n, 0)
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
            if self._in_full:  # the burst ended on a full packet: a zero-length one ends it
                if self._usbd.submit_xfer(self._ep_in, self._in_views[0]):
                    self._in_busy = True
                    self._in_full = False
            return
        if n >= PKT:  # whole packets; a short tail goes in its own transfer
            k = n // PKT
            if k > _IN_PKTS:
                k = _IN_PKTS
            n = k * PKT
            view = self._in_views[PKT - 1 + k]
        else:
            view = self._in_views[n]
        _ring_copy(self._tx, _TX_SIZE, tt & (_TX_SIZE - 1), self._in, n, 0)
        if self._usbd.submit_xfer(self._ep_in, view):
            self._in_busy = True
            self._in_full = self._zlp and not n & (PKT - 1)
            self._tt = (tt + n) & _TX_WRAP

    def _submit_out(self):
        if not self._open or _RX_SIZE - ((self._rh - self._rt) & _RX_WRAP) < PKT:
            return  # no room for a packet: the host is NAKed until readinto frees some
        if self._usbd.submit_xfer(self._ep_out, self._out):
            self._out_busy = True

    def _on_xfer(self, ep, result, n):
        if result:
            self.xfer_errors += 1
        if ep == self._ep_in:
            self._in_busy = False
            self._submit_in()
        elif ep == self._ep_out:
            self._out_busy = False
            if n and not result:
                rh = self._rh
                _ring_copy(self._rx, _RX_SIZE, rh & (_RX_SIZE - 1), self._out, n, 1)
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
        self._in_busy = False
        self._in_full = False
        self._out_busy = False

    def _on_control(self, stage, req):
        return False  # no class requests: stall


@micropython.viper
def _ring_copy(ring, size: int, pos: int, buf, n: int, put: int):
    # put: ring[pos:] = buf[0:n], else buf[0:n] = ring[pos:]; wrapping at size (n <= size).
    # One call, no allocation
    r = ptr8(ring)
    b = ptr8(buf)
    first = size - pos
    if n < first:
        first = n
    i = 0
    if put:
        while i < first:
            r[pos + i] = b[i]
            i += 1
        while i < n:
            r[i - first] = b[i]
            i += 1
    else:
        while i < first:
            b[i] = r[pos + i]
            i += 1
        while i < n:
            b[i] = r[i - first]
            i += 1
