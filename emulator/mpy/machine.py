# machine for emulated pods: the unix port's machine plus a stand-in for
# machine.USBDevice (extmod/machine_usb_device.c at v1.28.0), so the firmware's
# own USB code (pod/usbcdc.py, pod/usbvendor.py) runs in every emulator test.
# With a runtime CDC function the stand-in is the S3's USB device controller and
# the host's cdc-acm driver in one: the bulk endpoints of that function carry
# link.sock. With a vendor-class interface it presents the whole device, its
# descriptors and endpoints, on usb.sock (emulator/mpy/usbcable.py) for a host's
# pyusb backend (docs/emulator.md, "The pod link").
#
# Timing is full-speed USB: 64-byte packets, at most 19 bulk packets per 1 ms
# frame (USB 2.0 section 5.8.4, table 5-9: 1,216 B/frame, ~1.2 MB/s). An IN
# transfer completes only once the host side has taken all of it: while link.sock
# is full (hostd not reading the pty) it stays pending, as a host NAKs. Completions
# reach the firmware through micropython.schedule, as TinyUSB's callbacks do.
import asyncio
import os
import socket
import struct
import time

import micropython
from micropython import const

from umachine import *  # noqa: F401,F403 - the unix port's machine

import emutime

_PKT = const(64)
_PKTS_PER_FRAME = const(19)
_ENUM_MS = const(100)  # activation to SET_CONFIGURATION: order of a Linux enumeration, not measured
_NAK_POLL_MAX_MS = const(8)  # re-polls of a full link.sock back off to this
_SNDBUF = const(1)  # the kernel's minimum, ~2.4 KB of data: about cdc-acm's 16 queued 128 B read URBs
_MAX_IN_EPS = const(5)  # the S3's OTG controller: at most 5 IN endpoints, EP0 included (ESP32-S3 TRM)
_REPLUG_MS = const(100)  # a pulled cable's link.sock is tried again this often
_EINVAL = const(22)
_EBUSY = const(16)
_ENODEV = const(19)

# The built-in descriptors of the ESP32_GENERIC_S3 image (shared/tinyusb/mp_usbd_descriptor.c):
# VID 0x303A, PID 0x4001 (CDC only), then the REPL's CDC function on interfaces 0-1.
_DESC_DEV = bytes((18, 1, 0x00, 0x02, 0xEF, 0x02, 0x01, 64, 0x3A, 0x30, 0x01, 0x40, 0x00, 0x01, 1, 2, 3, 1))
_DESC_CFG = bytes((
    9, 2, 75, 0, 2, 1, 0, 0x80, 125,
    8, 0x0B, 0, 2, 0x02, 0x02, 0x00, 0,
    9, 0x04, 0, 0, 1, 0x02, 0x02, 0x00, 4,
    5, 0x24, 0x00, 0x20, 0x01,
    5, 0x24, 0x01, 0x00, 1,
    4, 0x24, 0x02, 0x02,
    5, 0x24, 0x06, 0, 1,
    7, 0x05, 0x81, 0x03, 8, 0, 16,
    9, 0x04, 1, 0, 2, 0x0A, 0x00, 0x00, 0,
    7, 0x05, 0x02, 0x02, 64, 0, 0,
    7, 0x05, 0x82, 0x02, 64, 0, 0,
))


class _Builtin:
    def __init__(self, itf_max, ep_max, str_max, desc_cfg):
        self.itf_max = itf_max
        self.ep_max = ep_max
        self.str_max = str_max
        self.desc_dev = _DESC_DEV
        self.desc_cfg = desc_cfg


class _USBDevice:
    BUILTIN_NONE = _Builtin(0, 0, 1, b"")
    BUILTIN_DEFAULT = BUILTIN_CDC = _Builtin(2, 3, 5, _DESC_CFG)

    def __init__(self):
        self._builtin = self.BUILTIN_NONE
        self._active = False
        self._cfg = None
        self._desc_dev = None
        self._strs = None
        self._cbs = (None, None, None, None)
        self._cable = None  # usbcable.Cable: a vendor interface, presented on usb.sock
        self._sock = None
        self._ep_in = self._ep_out = -1
        self._in_buf = self._out_buf = None  # submitted, not yet completed
        self._in_off = 0  # bytes of the IN transfer already on the bus
        self._in_done = self._out_done = -1  # completed bytes awaiting their callback
        self._in_flag = emutime.Flag()  # waits without a coroutine each: TinyUSB allocates nothing
        self._out_flag = emutime.Flag()
        self._dispatch_cb = self._dispatch  # bound once: schedule() allocates nothing
        self._dispatch_pending = False
        self._redispatch = False  # a completion whose dispatch did not fit in the schedule queue
        self._configured = False
        self._frame = 0
        self._budget = 0
        self._tasks = ()
        self.stalls = 0  # control requests the firmware refused

    @property
    def builtin_driver(self):
        return self._builtin

    @builtin_driver.setter
    def builtin_driver(self, value):
        if self._active:
            raise OSError(_EINVAL)  # deactivate first, as the C object demands
        self._builtin = value

    def config(self, desc_dev, desc_cfg, desc_strs=None, open_itf_cb=None, reset_cb=None,
               control_xfer_cb=None, xfer_cb=None):
        memoryview(desc_dev)
        memoryview(desc_cfg)  # ValueError/TypeError for a non-buffer, as config() refuses it
        self._desc_dev = desc_dev
        self._cfg = desc_cfg
        self._strs = desc_strs
        self._cbs = (open_itf_cb, reset_cb, control_xfer_cb, xfer_cb)

    def active(self, value=None):
        was = self._active
        if value is not None and bool(value) != was:
            if value:
                if self._cfg is None:
                    raise OSError(_EINVAL)
                self._start()
            self._active = bool(value)
        return was

    def submit_xfer(self, ep, buf):
        if not self._active or not self._configured:
            raise OSError(_EINVAL)
        if ep & 0x7F == 0 or ep & 0x7F >= 7:
            raise ValueError("ep")
        if self._cable is not None:
            return self._cable.submit(ep, buf)
        if ep == self._ep_in:
            if self._in_buf is not None or self._in_done >= 0:
                raise OSError(_EBUSY)
            self._in_buf = buf
            self._in_off = 0
            # the controller answers the host's next IN token by itself: what the bus
            # takes in this 1 ms frame leaves now, without waiting for the interpreter
            if self._in_send():
                self._in_buf = None
                self._in_done = len(buf)
                self._schedule()
            else:
                self._in_flag.set()
        elif ep == self._ep_out:
            if self._out_buf is not None or self._out_done >= 0:
                raise OSError(_EBUSY)
            self._out_buf = buf
            self._out_flag.set()
        # other endpoints (the notification endpoint): queued, the host never polls them here
        return True

    def stall(self, ep, stall=None):
        return False

    def remote_wakeup(self):
        return False

    # -- the host side ------------------------------------------------------
    def _start(self):
        cfg = self._cfg
        itfs = self._check(cfg)
        if self._vendor:
            import usbcable

            self._cable = usbcable.Cable(self, itfs)
            self._tasks = self._cable.start()
            return
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, 7, _SNDBUF)  # SO_SNDBUF: a small host-side queue
        path = (os.getenv("HYPNOLUM_POD_DIR") or ".") + "/" + (os.getenv("HYPNOLUM_LINK_SOCK") or "link.sock")
        s.connect(struct.pack("H", socket.AF_UNIX) + path.encode() + b"\0")  # the emulator listens first
        s.setblocking(False)
        self._sock = s
        self._tasks = (
            asyncio.create_task(self._enumerate(itfs)),
            asyncio.create_task(self._in_pump()),
            asyncio.create_task(self._out_pump()),
        )

    def _check(self, cfg):
        # what TinyUSB and the S3 would refuse, refused here; returns the runtime
        # interfaces as (offset, length) and picks the link's bulk endpoints
        if len(cfg) < 9 or cfg[1] != 2 or cfg[2] | cfg[3] << 8 != len(cfg):
            raise ValueError("desc_cfg: wTotalLength")
        first = self._builtin.itf_max
        numbers = set()
        groups = []  # [offset, length, interfaces still to come], as runtime_dev_open claims them
        cur = None
        iad = 0  # bInterfaceCount of an IAD just before this descriptor
        ins = 1  # EP0 IN
        self._vendor = False
        i = 9
        while i < len(cfg):
            ln, kind = cfg[i], cfg[i + 1]
            if ln < 2 or i + ln > len(cfg):
                raise ValueError("desc_cfg: descriptor length")
            if kind == 0x04:
                numbers.add(cfg[i + 2])
                if cfg[i + 2] < first:
                    cur = None
                elif cur is not None and cur[2] > 0:
                    cur[2] -= 1
                else:
                    cur = [i, 0, (iad or 1) - 1]
                    groups.append(cur)
                if cur is not None and cfg[i + 5] == 0xFF:
                    self._vendor = True  # a vendor-class interface: the host's pyusb opens it
            elif kind == 0x05:
                addr = cfg[i + 2]
                if addr & 0x80:
                    ins += 1
                if cur is not None:
                    if addr & 0x7F < self._builtin.ep_max:
                        raise OSError(_ENODEV)  # an endpoint the built-in CDC already has
                    if cfg[i + 3] & 3 == 2:  # bulk: the first pair carries link.sock
                        if addr & 0x80 and self._ep_in < 0:
                            self._ep_in = addr
                        elif not addr & 0x80 and self._ep_out < 0:
                            self._ep_out = addr
            iad = cfg[i + 3] if kind == 0x0B else 0
            if cur is not None:
                cur[1] = i + ln - cur[0]
            i += ln
        if cfg[4] != len(numbers):
            raise ValueError("desc_cfg: bNumInterfaces")
        if ins > _MAX_IN_EPS:
            raise OSError(_ENODEV)
        return groups

    async def _enumerate(self, itfs):
        await asyncio.sleep_ms(_ENUM_MS)
        micropython.schedule(self._configure, itfs)

    def _configure(self, itfs):
        # SET_CONFIGURATION, then what Linux cdc-acm sends when hostd opens the tty
        open_itf, reset, control, _ = self._cbs
        if reset:
            reset()
        self._configured = True
        cfg = memoryview(self._cfg)
        for off, ln, _n in itfs:
            if open_itf:
                open_itf(cfg[off:off + ln])
        if control and itfs:
            itf = self._cfg[itfs[0][0] + 2]
            coding = b"\x00\xc2\x01\x00\x00\x00\x08"  # 115200 8N1
            self._control(control, 0x21, 0x20, 0, itf, coding)  # SET_LINE_CODING
            got = self._control(control, 0xA1, 0x21, 0, itf, None, 7)  # GET_LINE_CODING
            if got != coding:
                self.stalls += 1
            self._control(control, 0x21, 0x22, 3, itf, None)  # SET_CONTROL_LINE_STATE: DTR, RTS

    def _control(self, cb, req_type, req, value, index, data, length=0):
        setup = bytearray(struct.pack("<BBHHH", req_type, req, value, index, len(data) if data else length))
        res = cb(1, memoryview(setup))
        if res is False or res is None:
            self.stalls += 1
            return None
        out = None
        if res is not True:  # a buffer for the data stage
            buf = memoryview(res)
            if data:
                buf[:len(data)] = data
            else:
                out = bytes(buf[:length])
            cb(2, memoryview(setup))
        cb(3, memoryview(setup))
        return out

    def _in_send(self):
        # as much of the pending IN transfer as this 1 ms frame and link.sock take; True once all is out
        buf = self._in_buf
        n = len(buf)
        self.frame_packets()
        m = n - self._in_off
        if m > self._budget * _PKT:
            m = self._budget * _PKT
        if m <= 0:
            return self._in_off >= n
        try:
            k = self._sock.write(buf, self._in_off, m)
        except OSError:
            return False  # the pump finds the socket gone
        if k:
            self._in_off += k
            self._budget -= (k + _PKT - 1) // _PKT
        return self._in_off >= n

    async def _in_pump(self):
        sock = self._sock
        flag = self._in_flag
        while True:
            if self.retry_dispatch():
                await asyncio.sleep_ms(0)  # the poll runs what is queued (modselect.c:345)
                continue
            buf = self._in_buf
            if buf is None:
                await flag.wait()
                continue
            n = len(buf)
            off = self._in_off
            nak_ms = 1
            while off < n:
                if not self.frame_packets():
                    await asyncio.sleep_ms(1)  # the next 1 ms frame
                    continue
                m = n - off
                if m > self._budget * _PKT:
                    m = self._budget * _PKT
                try:
                    k = sock.write(buf, off, m)
                except OSError:
                    self._host_gone()
                    return
                if not k:  # link.sock full: hostd is not reading; the transfer stays pending
                    await asyncio.sleep_ms(nak_ms)
                    if nak_ms < _NAK_POLL_MAX_MS:
                        nak_ms += nak_ms
                    continue
                nak_ms = 1
                off += k
                self._budget -= (k + _PKT - 1) // _PKT
            self._in_buf = None
            self._in_done = n
            self._schedule()

    async def _out_pump(self):
        sock = self._sock
        flag = self._out_flag
        readable = emutime.Readable(sock)
        while True:
            buf = self._out_buf
            if buf is None:
                await flag.wait()
                continue
            n = sock.readinto(buf)
            if n is None:
                await readable.wait()  # until link.sock is readable
                continue
            if not n:
                self._host_gone()
                return
            self._out_buf = None
            self._out_done = n
            self._schedule()

    def _schedule(self):
        if not self._dispatch_pending:
            self._dispatch_pending = True
            try:
                micropython.schedule(self._dispatch_cb, None)
            except RuntimeError:
                # the queue is full. TinyUSB's task is scheduled through a node of its own,
                # which cannot overflow (shared/tinyusb/mp_usbd.c:54): a completion is never
                # lost, so the IN pump schedules it again once the queue has room
                self._dispatch_pending = False
                self._redispatch = True
                self._in_flag.set()

    def frame_packets(self):
        # bulk packets the bus still carries in this 1 ms frame (_budget: spent by the caller)
        now = time.ticks_ms()
        if now != self._frame:
            self._frame = now
            self._budget = _PKTS_PER_FRAME
        return self._budget

    def retry_dispatch(self):
        # a completion whose dispatch did not fit in the schedule queue: scheduled
        # again; True while the queue is still full
        if not self._redispatch:
            return False
        self._redispatch = False
        self._schedule()
        return self._redispatch

    def _dispatch(self, _):
        # as TinyUSB: the endpoint is free again before its callback runs
        self._dispatch_pending = False
        xfer = self._cbs[3]
        n = self._in_done
        if n >= 0:
            self._in_done = -1
            if xfer:
                xfer(self._ep_in, 0, n)
        n = self._out_done
        if n >= 0:
            self._out_done = -1
            if xfer:
                xfer(self._ep_out, 0, n)

    def _host_gone(self):
        # link.sock closed: the cable is pulled. TinyUSB's unplug event resets every class
        # driver (lib/tinyusb/src/device/usbd.c, DCD_EVENT_UNPLUGGED -> usbd_reset), which
        # calls the runtime driver's reset callback (shared/tinyusb/mp_usbd_runtime.c:164-178);
        # endpoints are gone until the host enumerates the device again. link.sock is tried
        # again every _REPLUG_MS: the emulator keeps it only once the cable is back.
        me = asyncio.current_task()
        for t in self._tasks:
            if t is not me:
                t.cancel()
        try:
            self._sock.close()
        except OSError:
            pass
        self._sock = None
        self._configured = False
        self._in_buf = self._out_buf = None
        self._in_done = self._out_done = -1
        reset = self._cbs[1]
        if reset:
            micropython.schedule(lambda _: reset(), None)
        self._tasks = (asyncio.create_task(self._replug()),)

    async def _replug(self):
        while True:
            await asyncio.sleep_ms(_REPLUG_MS)
            try:
                self._start()
                return
            except OSError:
                pass  # the emulator is not listening (stopping): try again


_usbd = None


def USBDevice():
    """The singleton, as machine.USBDevice() returns one object every time."""
    global _usbd
    if _usbd is None:
        _usbd = _USBDevice()
    return _usbd
