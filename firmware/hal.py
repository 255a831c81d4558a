"""Hardware abstraction layer: the only module that touches the board.

This file is the ESP32 implementation and its docstrings are the contract.
emulator/mpy/hal.py implements the same names over the emulator's sockets
(docs/emulator.md); everything in firmware/pod/ reaches hardware only through
these names, so the very same files run on a board and in the emulator.

Board wiring comes from pod/board.py, generated from the pin map in
hardware/schematics/: one-wire LEDs on LED output 0; APA102/SK9822 use both
outputs (clock on output 0, data on output 1); the headset on UART2; BOOT.

Pod link: the USB-UART that also carries the REPL. open_link() turns Ctrl-C
into data (micropython.kbd_intr(-1)) because 0x03 is an ordinary byte of a
frame. To get a REPL back, hold BOOT while resetting: boot.py then reports
safe_mode() and main.py does not start the firmware.
"""
import asyncio
import gc
import os
import select
import sys
import time

import machine
import micropython
from micropython import const

from pod import board  # the pin map, generated from hardware/schematics/pinmap.toml
from pod import ledwire  # pure encoders: gamma, order, framing

# Pins come from the board's pin map and are used here only.
_LED_PIN = board.LED0_PIN  # one-wire LEDs (WS2812/SK6812) data, LED output 0
_LED_SPI = const(1)  # APA102/SK9822 on HSPI through the GPIO matrix:
_LED_SPI_SCK = board.LED0_PIN  # clock on LED output 0's data line
_LED_SPI_MOSI = board.LED1_PIN  # data on LED output 1's data line
_LED_SPI_BAUD = const(4000000)
_HEADSET_UART = board.HEADSET_UART
_HEADSET_TX = board.HEADSET_TX_PIN
_HEADSET_RX = board.HEADSET_RX_PIN
_HEADSET_RXBUF = const(4096)  # ~0.5 s of Cyton packets: rides out a long GC pause
_BOOT_PIN = board.BOOT_PIN

# 800 kHz WS2812 bit timing in ns (high0, low0, high1, low1), as neopixel.py uses
_WS2812_TIMING = (400, 850, 800, 450)

PLATFORM = "esp32"

# time.ticks_* wrap at 2**30 on the ESP32 already; the emulator shim copies this.
TICKS_PERIOD = const(1 << 30)
SHOW_AT_AHEAD_US = const(1500)  # Leds.show_at spins: call it no earlier than this before the instant
ticks_ms = time.ticks_ms
"""ticks_ms() -> int: pod clock in ms, wraps at TICKS_PERIOD. Compare with ticks_diff."""
ticks_us = time.ticks_us
"""ticks_us() -> int: pod clock in us, wraps at TICKS_PERIOD."""
ticks_diff = time.ticks_diff
"""ticks_diff(a, b) -> signed a - b, correct across the wrap (|a - b| < TICKS_PERIOD/2)."""
ticks_add = time.ticks_add
"""ticks_add(t, delta) -> t + delta, wrapped."""


class _StdinReader:
    """Non-blocking reader over sys.stdin.buffer.

    The stdio stream's readinto() blocks until the whole buffer is full, which
    would stall the event loop, so read one byte when poll says readable and
    then only as many more as poll keeps promising.
    """

    def __init__(self):
        self._s = sys.stdin.buffer
        self._stream = asyncio.StreamReader(self._s)
        self._poll = select.poll()
        self._poll.register(self._s, select.POLLIN)

    async def readinto(self, buf):
        mv = memoryview(buf)
        n = await self._stream.readinto(mv[:1])
        if not n:
            return n
        ipoll = self._poll.ipoll
        read = self._s.readinto
        size = len(buf)
        while n < size:
            ready = False
            for _ in ipoll(0):
                ready = True
            if not ready:
                break
            read(mv[n:n + 1])
            n += 1
        return n


async def open_link():
    """Open the pod link. Returns (reader, writer) asyncio streams.

    reader.readinto(buf) -> bytes read (0 = link closed); writer.write(buf)
    then await writer.drain(). On the ESP32 this is the USB-UART (REPL port);
    Ctrl-C is disabled so 0x03 bytes reach the firmware as data.
    """
    micropython.kbd_intr(-1)
    return _StdinReader(), asyncio.StreamWriter(sys.stdout.buffer, {})


async def open_headset(baud):
    """Open the headset UART at baud. Returns (reader, writer) asyncio streams."""
    uart = machine.UART(
        _HEADSET_UART, baudrate=baud, tx=_HEADSET_TX, rx=_HEADSET_RX,
        rxbuf=_HEADSET_RXBUF, timeout=0,
    )
    return asyncio.StreamReader(uart), asyncio.StreamWriter(uart, {})



class Leds:
    """The LED array: count LEDs, wire colour order, LED type.

    order: "GRB" etc., or four letters with W for RGBW strips; kind: "ws2812",
    "sk6812" (RGB), "sk6812_rgbw" (one-wire, on _LED_PIN through
    machine.bitstream, as the neopixel module drives them) or "apa102",
    "sk9822" (clock + data on hardware SPI). write(rgb) shows one frame: rgb is
    count * 3 sRGB bytes in R, G, B order, already passed by the safety
    governor; it is gamma-corrected, reordered and framed into a preallocated
    wire buffer (pod/ledwire.py), so the caller may reuse it at once. show_at(rgb,
    due_us) does the same at a scheduled instant (the shared timeline of a
    circle). No allocation.
    """

    def __init__(self, count, order="GRB", kind="ws2812"):
        self.count = count
        self.order = order
        self.kind = kind
        self._k, self._idx, self.wire = ledwire.setup(count, order, kind)
        if self._k == ledwire.KIND_APA102:
            self._spi = machine.SPI(
                _LED_SPI, baudrate=_LED_SPI_BAUD, sck=machine.Pin(_LED_SPI_SCK), mosi=machine.Pin(_LED_SPI_MOSI)
            )
            self._pin = None
        else:
            self._spi = None
            self._pin = machine.Pin(_LED_PIN, machine.Pin.OUT, value=0)
        self.frames = 0

    def write(self, rgb):
        ledwire.encode(self._k, self.wire, rgb, self.count * 3, self._idx)
        self._out()

    def show_at(self, rgb, due_us):
        """Show rgb as write() does, with the data starting at pod instant due_us
        (ticks_us), or at once if that instant has passed. The wire encoding is
        done first, so the instant does not depend on it. Returns how late rgb
        was handed over (us; 0 when it came before due_us).

        The CPU spins for the wait: the render loop sleeps until a millisecond or
        two before and calls this for the last stretch, which is all the board's."""
        ledwire.encode(self._k, self.wire, rgb, self.count * 3, self._idx)
        diff = time.ticks_diff
        now = time.ticks_us
        late = diff(now(), due_us)
        while diff(due_us, now()) > 0:
            pass
        self._out()
        return late if late > 0 else 0

    def _out(self):
        if self._spi is not None:
            self._spi.write(self.wire)
        else:
            machine.bitstream(self._pin, 0, _WS2812_TIMING, self.wire)
        self.frames += 1

    @property
    def dropped(self):
        """Frames that could not be shown (always 0 here; the emulator's can be)."""
        return 0


class Watchdog:
    """Hardware watchdog: the chip resets unless feed() comes within timeout_ms.

    Once started it cannot be stopped.
    """

    def __init__(self, timeout_ms):
        self.timeout_ms = timeout_ms
        self._wdt = machine.WDT(timeout=timeout_ms)

    def feed(self):
        self._wdt.feed()


def read_file(name):
    """Contents of file name in the pod's filesystem as bytes, or None if absent."""
    try:
        with open(name, "rb") as f:
            return f.read()
    except OSError:
        return None


def write_file(name, data):
    """Replace file name with data atomically (write a temp file, then rename)."""
    tmp = name + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, name)


def list_dir(name):
    """Names of the files (not directories) in directory name, [] if it is absent."""
    try:
        return [e[0] for e in os.ilistdir(name) if e[1] == 0x8000]
    except OSError:
        return []


def unique_id():
    """The board's unique id as bytes (the MAC on an ESP32)."""
    return machine.unique_id()


def reset():
    """Hard-reset the pod. Does not return."""
    machine.reset()


_safe = None


def safe_mode():
    """True when the BOOT button was held at reset: keep the REPL, start nothing.

    Sampled once (boot.py asks first), so releasing the button later changes nothing.
    """
    global _safe
    if _safe is None:
        _safe = machine.Pin(_BOOT_PIN, machine.Pin.IN, machine.Pin.PULL_UP).value() == 0
    return _safe


def mem_free():
    """Free heap in bytes."""
    return gc.mem_free()
