"""A pod link on a bulk IN/OUT endpoint pair of machine.USBDevice: the rings and
transfers that every USB function of the pod's link shares (pod/usbcdc.py,
pod/usbvendor.py add their descriptors and class requests).

TinyUSB's callbacks run from the MicroPython scheduler. They only move bytes
between the endpoint buffers and the two rings (pod/linkring.py) and set a
ThreadSafeFlag. Every transfer is also submitted from scheduler context, so
two submissions can never race. Nothing here allocates after __init__.
"""
import asyncio

import micropython
from micropython import const

from pod.flagwait import FlagWait
from pod.linkring import Rings

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


class BulkPort(Rings, FlagWait):
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
        Rings.__init__(self)
        self._in = bytearray(_IN_PKTS * PKT)
        mv = memoryview(self._in)
        # an IN transfer's length is its buffer's: one view per length it can have (no slicing later)
        self._in_views = [mv[:n] for n in range(PKT)] + [mv[:k * PKT] for k in range(1, _IN_PKTS + 1)]
        self._out = bytearray(PKT)
        self._init_wait(asyncio.ThreadSafeFlag())  # wait() parks on it without a coroutine per wait
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

    def _tx_added(self):
        if not (self._in_busy or self._kick_pending):
            self._schedule_kick()

    def _rx_taken(self):
        if not (self._out_busy or self._kick_pending):
            self._schedule_kick()  # the ring was too full to take a packet: room again

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
        n = self.tx_pending()
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
        self.tx_peek(self._in, n)
        if self._usbd.submit_xfer(self._ep_in, view):
            self._in_busy = True
            self._in_full = self._zlp and not n & (PKT - 1)
            self.tx_done(n)

    def _submit_out(self):
        if not self._open or self.rx_room() < PKT:
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
                self.rx_put(self._out, n)
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
