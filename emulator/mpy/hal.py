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

The board's timing is modelled (emutime.py; docs/emulator.md "Timing model"):
asyncio waits end on the 10 ms RTOS tick, FrameTimer wakes at its instant,
show_at returns at once and its frame goes out when the LED timer's callback
runs (emutime.Alarm: at the interpreter's next branch after the instant, as
the board's scheduled timer callback), an LED frame keeps the wire busy for
its transfer time while the interpreter goes on (the board's SPI writer
thread), and a frame waits for the wire to be free.

Each LED datagram carries, besides the pod's ticks_ms, two of the host's
CLOCK_MONOTONIC microsecond instants: when the frame lit (when it was handed
to the wire, or once the wire was free: the true render instant the emulator
measures inter-pod skew with), and when the datagram was written
(docs/emulator.md).
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

import emutime  # the board's timing: pod clock, RTOS tick, frame timer
from pod import ledwire  # pure encoders: gamma, order, framing
from pod.mem import copy as _copy  # no allocation per frame

PLATFORM = "emulator"

TICKS_PERIOD = const(1 << 30)
_TIMER_MIN_US = const(50)  # the board's: a show_at nearer its instant than this goes out at once
_LATE_START_US = const(100)  # the board's: a timed frame handed over later than this is late
_TICKS_MASK = const((1 << 30) - 1)
_TICKS_HALF = const(1 << 29)
_LED_SPI_BAUD = const(8000000)  # the board's APA102/SK9822 clock (firmware/hal.py)

_LED_HDR = "<4sIIH"  # magic, ticks_ms, frame number, LED count; then u64 host us shown, written
_LED_HDR_SIZE = const(30)
_LED_SHOWN = const(14)  # offsets of the two u64 host instants
_LED_WRITTEN = const(22)

_DIR = os.getenv("HYPNOLUM_POD_DIR") or "."

# The pod clock and the RTOS tick (emutime.py): asyncio waits on the tick from here on.
ticks_ms = emutime.ticks_ms
ticks_us = emutime.ticks_us
FrameTimer = emutime.FrameTimer
emutime.install()


def ticks_diff(a, b):
    # the sum a - b + 2**29 may leave the small ints (an allocation): xor instead
    return (((a - b) & _TICKS_MASK) ^ _TICKS_HALF) - _TICKS_HALF


def ticks_add(t, delta):
    return ((t - _TICKS_HALF + delta) & _TICKS_MASK) ^ _TICKS_HALF


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


def _bluetooth():
    import bluetooth  # the stand-in: bumble beyond ble.sock (emulator/mpy/bluetooth.py)

    return bluetooth


async def open_link(cfg=None):
    # the firmware's own link modules (pod/ports.py: USB as pod/usblink.py picks it, and BLE
    # when cfg enables it) over the stand-in USBDevice (emulator/mpy/machine.py: a CDC
    # function's bulk endpoints carry link.sock, a vendor interface is presented whole on
    # usb.sock) and the stand-in bluetooth module (emulator/mpy/bluetooth.py: ble.sock);
    # docs/emulator.md, "The pod link"
    import machine

    try:
        from pod import usblink
    except ImportError:  # firmware from before the vendor interface: its CDC function only
        from pod import usbcdc

        return usbcdc.open(machine.USBDevice())
    return usblink.open_link(machine.USBDevice(), cfg, _bluetooth)


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

    def close(self):
        if self._s is not None:
            self._s.close()
            self._s = None


_sys = None


def _sys_sock():
    global _sys
    if _sys is None:
        _sys = _Datagrams("sys.sock")
    return _sys



def _led_datagram(out, buf, frame_no, count, lit_us):
    # buf: the header's room, then the frame's sRGB bytes; lit lit_us after now
    c = emutime.clock
    struct.pack_into(_LED_HDR, buf, 0, b"LED3", c.ms, frame_no, count)
    emutime.put_host_us(buf, _LED_SHOWN, lit_us)
    emutime.put_host_us(buf, _LED_WRITTEN, 0)
    out.send(buf)


def dark(count, order="GRB", kind="ws2812"):
    # as the board's: one dark frame, nothing kept (the datagram socket is closed)
    ledwire.setup(count, order, kind)  # the same refusals as the board's
    emutime.clock.advance()
    out = _Datagrams("leds.sock")
    _led_datagram(out, bytearray(_LED_HDR_SIZE + count * 3), 0, count, 0)
    out.close()


class Leds:
    def __init__(self, count, order="GRB", kind="ws2812"):
        # The virtual array shows the sRGB frame (a screen applies the gamma);
        # the wire encoding still runs, into self.wire, as on a board.
        self.count = count
        self.order = order
        self.kind = kind
        self._k, self._idx, self.wire = ledwire.setup(count, order, kind)
        n = len(self.wire)
        # the board sends every kind on SPI with DMA from a writer thread (firmware/hal.py
        # Leds): the interpreter goes on while the wire is busy this long per frame
        if self._k == ledwire.KIND_APA102:
            self.transfer_us = (n * 8000 + _LED_SPI_BAUD // 1000 - 1) // (_LED_SPI_BAUD // 1000)
        else:
            baud_k = ledwire.SPI_ONEWIRE_BAUD // 1000
            self.transfer_us = (ledwire.spi_onewire_size(n) * 8000 + baud_k - 1) // baud_k
        self._ends = [0, 0]  # pod us when each of the two buffers' transfers end
        self._back = 0  # the buffer the next frame is encoded into
        self._wire_free = 0  # pod us when the wire has sent everything handed over
        self._buf = bytearray(_LED_HDR_SIZE + count * 3)
        self._out = _Datagrams("leds.sock")
        self.frames = 0
        self.late_starts = 0  # as the board's: timed frames handed over late
        self._pending = False  # a frame staged in _buf waits for its instant
        self._due = 0
        self._alarm = emutime.Alarm(self._fire)  # the board's LED timer (timer 1)

    def _encode(self, rgb):
        # as the board: the buffer about to be reused must be off the wire (it waits, spinning)
        c = emutime.clock
        c.advance()
        left = ticks_diff(self._ends[self._back], c.us)
        if 0 < left < self.transfer_us + 1000:
            time.sleep_us(emutime.host_delta(left))
            c.advance()
        ledwire.encode(self._k, self.wire, rgb, self.count * 3, self._idx)
        _copy(self._buf, _LED_HDR_SIZE, rgb, 0, self.count * 3)

    def _flush(self):
        # as the board: a frame still waiting for its instant goes out first
        if self._pending:
            self._alarm.disarm()
            self._fire(None)

    def write(self, rgb):
        self._flush()
        self._encode(rgb)
        self._send()

    def show_at(self, rgb, due_us):
        # As the board: encode, then return at once; the LED timer's callback hands
        # the frame to the wire at due_us, at the interpreter's next branch.
        self._flush()
        self._encode(rgb)
        c = emutime.clock
        left = ticks_diff(due_us, c.us)
        if left < _TIMER_MIN_US:
            self._send()
            return -left if left < 0 else 0
        self._due = due_us
        self._pending = True
        self._alarm.arm(due_us)
        return 0

    def _fire(self, _alarm):
        if not self._pending:
            return
        self._pending = False
        c = emutime.clock
        c.advance()
        if ticks_diff(c.us, self._due) > _LATE_START_US:
            self.late_starts += 1
        self._send()

    def _send(self):
        # the frame staged in _buf is handed to the wire now (the clock's last
        # reading); it lights then, or once the wire has sent the frame before it
        c = emutime.clock
        now = c.us
        lit_us = 0
        wait = ticks_diff(self._wire_free, now)
        if 0 < wait < self.transfer_us + 1000:
            lit_us = emutime.host_delta(wait)
            now = self._wire_free
        self._wire_free = end = ticks_add(now, self.transfer_us)
        b = self._back
        self._ends[b] = end
        self._back = b ^ 1
        _led_datagram(self._out, self._buf, self.frames, self.count, lit_us)
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


def open_file(name):
    try:
        return open(_path(name), "rb")
    except OSError:
        return None


def write_file(name, data):
    tmp = name + ".tmp"
    with open(_path(tmp), "wb") as f:
        _File(f).write(data)
    rename(tmp, name)


def list_dir(name):
    try:
        return [e[0] for e in os.ilistdir(_path(name)) if e[1] == 0x8000]
    except OSError:
        return []


# ---------------------------------------------------------------------------
# The update store's file primitives, and power cuts (docs/update.md "Power loss").
# HYPNOLUM_POWER_CUT=K[:SEED] cuts the power at the K-th change this boot makes to the
# filesystem through hal (a file write, a rename, a remove, a mkdir): a write leaves a
# random prefix of its bytes (SEED picks it), a rename, remove or mkdir is done or not,
# then the process is killed with SIGKILL, so nothing after it runs, as when a board
# loses power. _changes counts them (a run without a cut tells how many there are).

_changes = 0
_cut = os.getenv("HYPNOLUM_POWER_CUT") or ""
_cut_at = int(_cut.split(":")[0]) if _cut else 0
_cut_seed = int(_cut.split(":")[1]) if ":" in _cut else _cut_at


def _cut_now():
    global _changes
    _changes += 1
    return _changes == _cut_at


def _power_off():
    print("hypnolum-emulator: power cut at change", _changes)
    os.system("kill -KILL $PPID")  # the shell's parent: this interpreter
    while True:
        time.sleep(1)


def _cut_prefix(n):
    import random

    random.seed(_cut_seed)
    return random.getrandbits(20) % n if n > 0 else 0


def _changed():
    # a change that is whole or not at all (rename, remove, mkdir): done or not, then off
    if _cut_now():
        if _cut_prefix(2):
            return  # done: the caller makes it, the next change check ends the boot
        _power_off()


class _File:
    """A file whose writes count as changes; the cut one leaves a prefix."""

    def __init__(self, f):
        self._f = f

    def seek(self, pos, whence=0):
        return self._f.seek(pos, whence)

    def readinto(self, buf):
        return self._f.readinto(buf)

    def read(self, n=-1):
        return self._f.read(n)

    def write(self, buf, off=0, n=-1):
        if n < 0:
            n = len(buf) - off
        if _cut_now():
            self._f.write(buf, off, _cut_prefix(n))
            self._f.close()
            _power_off()
        return self._f.write(buf, off, n)

    def close(self):
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def open_rw(name):
    try:
        f = open(_path(name), "r+b")
    except OSError:
        f = open(_path(name), "w+b")
    return _File(f)


def rename(old, new):
    _changed()
    os.rename(_path(old), _path(new))
    _after_done()


def remove(name):
    _changed()
    try:
        os.remove(_path(name))
    except OSError:
        try:
            os.rmdir(_path(name))
        except OSError:
            _after_done()
            return False
    _after_done()
    return True


def make_dir(name):
    _changed()
    try:
        os.mkdir(_path(name))
    except OSError:
        pass
    _after_done()


def _after_done():
    # a cut change that was done: the power goes now
    if _changes == _cut_at:
        _power_off()


def list_dirs(name):
    try:
        return [e[0] for e in os.ilistdir(_path(name)) if e[1] == 0x4000]
    except OSError:
        return []


def file_size(name):
    try:
        return os.stat(_path(name))[6]
    except OSError:
        return -1


_FS_BLOCK = const(4096)  # the board's littlefs block (firmware/hal.py fs_free)


def _used(path):
    # bytes the files under path take in whole blocks, as littlefs stores them
    n = 0
    for e in os.ilistdir(path):
        if e[1] == 0x4000:
            n += _used(path + "/" + e[0])
        else:
            n += (os.stat(path + "/" + e[0])[6] + _FS_BLOCK - 1) // _FS_BLOCK * _FS_BLOCK
    return n


def fs_free():
    # HYPNOLUM_FS_BYTES: a filesystem of that size holding the pod directory's files; else the host's
    size = os.getenv("HYPNOLUM_FS_BYTES")
    if size:
        return max(0, int(size) - _used(_DIR))
    st = os.statvfs(_DIR)
    return st[0] * st[3]


def unique_id():
    uid = os.getenv("HYPNOLUM_UID")
    if uid:
        return binascii.unhexlify(uid)
    return b"\x02\x00\x00\x00\x00\x01"


def reset():
    _sys_sock().send(b"RST!")
    # the process ends as the chip would; the emulator restarts it
    sys.exit(0)


_safe = None


def safe_mode():
    # HYPNOLUM_SAFE_MODE=1 stands for the SAFE button held at reset; the flag file is the
    # SAFE_MODE command's (consumed, as on the board); sampled once per boot
    global _safe
    if _safe is None:
        _safe = _take_safe_flag() or os.getenv("HYPNOLUM_SAFE_MODE") == "1"
        if _safe:
            print("hypnolum: safe mode, firmware not started")
    return _safe


def mem_free():
    return gc.mem_free()


# ---------------------------------------------------------------------------
# Safe mode on command, and the board's sensors (firmware/hal.py is the contract)

SAFE_MODE_FLAG = "safe_mode.flag"


def request_safe_mode():
    write_file(SAFE_MODE_FLAG, b"1")


def _take_safe_flag():
    try:
        os.remove(_path(SAFE_MODE_FLAG))
    except OSError:
        return False
    return True


# The virtual sensors: D/sensors.bin, 5 bytes <hHB = DS18B20 reading in 1/16 degC,
# VIN in mV, flags (_SNS_*), rewritten in place by the emulator
# (emulator/pod.py EmulatedPod.set_sensors) while the pod runs. The file stays open
# and is re-read into one buffer: no allocation per read. No file: a healthy board
# at 25 degC and 5.0 V.
_SNS_NAME = "sensors.bin"
_SNS_SIZE = const(5)
_SNS_NO_THERMOMETER = const(1)  # the DS18B20 does not answer (absent, bus fault)
_SNS_CRC_ERROR = const(2)  # it answers with a scratchpad that fails its CRC
_SNS_NO_VIN = const(4)  # the VIN pin has no ADC
_sns = bytearray(b"\x90\x01\x88\x13\x00")  # 400/16 = 25 degC, 5000 mV, no faults
_sns_file = None


def _sensors():
    global _sns_file
    if _sns_file is None:
        try:
            _sns_file = open(_path(_SNS_NAME), "rb")
        except OSError:
            return _sns  # not written (yet): the defaults
    _sns_file.seek(0)
    _sns_file.readinto(_sns)
    return _sns


class Thermometer:
    def __init__(self):
        pass

    async def convert(self):
        return not _sensors()[4] & _SNS_NO_THERMOMETER

    async def read_c16(self):
        b = _sensors()
        if b[4] & (_SNS_NO_THERMOMETER | _SNS_CRC_ERROR):
            return None
        t = b[0] | b[1] << 8
        return t - 0x10000 if t & 0x8000 else t


class VinSense:
    def __init__(self):
        pass

    def read_mv(self):
        b = _sensors()
        if b[4] & _SNS_NO_VIN:
            return None
        return b[2] | b[3] << 8
