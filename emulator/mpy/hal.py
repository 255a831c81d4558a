"""Hardware abstraction layer, emulator shim (MicroPython unix port).

Same names and behaviour as firmware/hal.py, whose docstrings are the
contract; here the hardware is the AF_UNIX sockets that the emulator binds in
the pod directory before starting the interpreter (docs/emulator.md):
link.sock and headset.sock (stream), leds.sock and sys.sock (datagram).

Every socket is non-blocking: a blocking read would freeze the event loop.
Datagrams that cannot be sent at once are dropped and counted (dropped_leds,
dropped_sys), never waited for.

The pod clock wraps at 2**30 as on the ESP32 and starts at HYPNOLUM_TICKS_MS0
/ HYPNOLUM_TICKS_US0 (a few seconds before the wrap), so wrap bugs show here.
HYPNOLUM_CLOCK_PPM makes it run fast (> 0) or slow (< 0) by that many parts
per million of the host's monotonic clock, as a crystal's error does.

Each LED datagram carries, besides the pod's ticks_ms, two of the host's
CLOCK_MONOTONIC microsecond instants: when the frame lit (for Leds.show_at,
the scheduled instant, as a board's LED output starts on time: the true
render instant the emulator measures inter-pod skew with), and when the
datagram was written (docs/emulator.md).
"""
import asyncio
import binascii
import gc
import os
import socket
import struct
import sys
import time

from micropython import const

from pod import ledwire  # pure encoders: gamma, order, framing
from pod.mem import copy as _copy  # no allocation per frame

PLATFORM = "emulator"

TICKS_PERIOD = const(1 << 30)
SHOW_AT_AHEAD_US = const(1000000)  # Leds.show_at sleeps: the render loop may call it at once
_TICKS_MASK = const((1 << 30) - 1)
_TICKS_HALF = const(1 << 29)

_LED_HDR = "<4sIIHQQ"  # magic, ticks_ms, frame number, LED count, host monotonic us shown, written
_LED_HDR_SIZE = const(30)

_DIR = os.getenv("HYPNOLUM_POD_DIR") or "."

# Host clock readings at import, paired with the pod clock's first readings.
_host_ms0 = time.ticks_ms()
_host_us0 = time.ticks_us()
_pod_ms0 = int(os.getenv("HYPNOLUM_TICKS_MS0") or "0") & _TICKS_MASK
_pod_us0 = int(os.getenv("HYPNOLUM_TICKS_US0") or "0") & _TICKS_MASK
# clock error in parts per billion (small ints on the unix port: no allocation)
_ppb = int(float(os.getenv("HYPNOLUM_CLOCK_PPM") or "0") * 1000)


def ticks_ms():
    # host ticks wrap at 2**62 here: their difference is exact, then wrap at 2**30
    d = time.ticks_diff(time.ticks_us(), _host_us0)
    return (_pod_ms0 + (d + d * _ppb // 1000000000) // 1000) & _TICKS_MASK


def ticks_us():
    d = time.ticks_diff(time.ticks_us(), _host_us0)
    return (_pod_us0 + d + d * _ppb // 1000000000) & _TICKS_MASK


def ticks_diff(a, b):
    return ((a - b + _TICKS_HALF) & _TICKS_MASK) - _TICKS_HALF


def ticks_add(t, delta):
    return (t + delta) & _TICKS_MASK


def _path(name):
    return _DIR + "/" + name


def _addr(name):
    # the unix port's connect() wants a packed sockaddr_un, not a path string
    return struct.pack("H", socket.AF_UNIX) + _path(name).encode() + b"\0"


def _connect(name, kind):
    s = socket.socket(socket.AF_UNIX, kind)
    s.connect(_addr(name))  # blocking connect: the emulator listens before we start
    s.setblocking(False)
    return s


async def open_link():
    # HYPNOLUM_LINK_SOCK: the emulator put a relay with latency in between
    s = _connect(os.getenv("HYPNOLUM_LINK_SOCK") or "link.sock", socket.SOCK_STREAM)
    return asyncio.StreamReader(s), asyncio.StreamWriter(s, {})


async def open_headset(baud):
    # the virtual headset has no baud rate; the argument keeps the API whole
    s = _connect("headset.sock", socket.SOCK_STREAM)
    return asyncio.StreamReader(s), asyncio.StreamWriter(s, {})


class _Datagrams:
    """A connected non-blocking datagram socket that drops instead of waiting."""

    def __init__(self, name):
        self.dropped = 0
        try:
            self._s = _connect(name, socket.SOCK_DGRAM)
        except OSError:
            self._s = None  # nobody listening: run anyway, count every datagram as dropped

    def send(self, data):
        if self._s is None:
            self.dropped += 1
            return
        try:
            self._s.send(data)
        except OSError:  # EAGAIN (receiver behind) or ECONNREFUSED (receiver gone)
            self.dropped += 1


_sys = None


def _sys_sock():
    global _sys
    if _sys is None:
        _sys = _Datagrams("sys.sock")
    return _sys



class Leds:
    def __init__(self, count, order="GRB", kind="ws2812"):
        # The virtual array shows the sRGB frame (a screen applies the gamma);
        # the wire encoding still runs, into self.wire, as on a board.
        self.count = count
        self.order = order
        self.kind = kind
        self._k, self._idx, self.wire = ledwire.setup(count, order, kind)
        self._buf = bytearray(_LED_HDR_SIZE + count * 3)
        self._out = _Datagrams("leds.sock")
        self.frames = 0

    def write(self, rgb):
        self._send(rgb, -1)

    def show_at(self, rgb, due_us):
        # A board's LED output starts at due_us whatever its CPU does meanwhile:
        # the instant reported is due_us on the host's clock (the inverse of the
        # pod clock's error), and the wait is a sleep, which leaves the machine's
        # CPUs to the other emulated pods (a board spins on a CPU of its own).
        # A frame handed over after due_us lights when it was handed over.
        left = ticks_diff(due_us, ticks_us())
        if left <= 0:
            self._send(rgb, -1)
            return -left
        self._send(rgb, time.ticks_us() + left - left * _ppb // 1000000000, left)
        return 0

    def _send(self, rgb, shown_us, wait_us=0):
        # shown_us < 0: the frame lights as it is written
        ledwire.encode(self._k, self.wire, rgb, self.count * 3, self._idx)
        _copy(self._buf, _LED_HDR_SIZE, rgb, 0, self.count * 3)
        if wait_us > 0:
            time.sleep_us(wait_us)
        written = time.ticks_us()
        struct.pack_into(_LED_HDR, self._buf, 0, b"LED3", ticks_ms(), self.frames, self.count,
                         written if shown_us < 0 else shown_us, written)
        self._out.send(self._buf)
        self.frames += 1

    @property
    def dropped(self):
        return self._out.dropped


class Watchdog:
    def __init__(self, timeout_ms):
        self.timeout_ms = timeout_ms
        self._feed = b"WDTF"
        _sys_sock().send(b"WDT1" + struct.pack("<I", timeout_ms))

    def feed(self):
        _sys_sock().send(self._feed)


def read_file(name):
    try:
        with open(_path(name), "rb") as f:
            return f.read()
    except OSError:
        return None


def write_file(name, data):
    tmp = _path(name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, _path(name))


def list_dir(name):
    try:
        return [e[0] for e in os.ilistdir(_path(name)) if e[1] == 0x8000]
    except OSError:
        return []


def unique_id():
    uid = os.getenv("HYPNOLUM_UID")
    if uid:
        return binascii.unhexlify(uid)
    return b"\x02\x00\x00\x00\x00\x01"


def reset():
    _sys_sock().send(b"RST!")
    # the process ends as the chip would; the emulator restarts it
    sys.exit(0)


def safe_mode():
    # stands for the BOOT button held at reset
    return os.getenv("HYPNOLUM_SAFE_MODE") == "1"


def mem_free():
    return gc.mem_free()
