"""Hardware abstraction layer: the only module that touches the board.

This file is the ESP32 implementation and its docstrings are the contract.
emulator/mpy/hal.py implements the same names over the emulator's sockets
(docs/emulator.md); everything in firmware/pod/ reaches hardware only through
these names, so the very same files run on a board and in the emulator.

Board wiring comes from pod/board.py, generated from the pin map in
hardware/schematics/: one-wire LEDs on LED output 0; APA102/SK9822 use both
outputs (clock on output 0, data on output 1); the headset on UART2; BOOT.

Pod link: a USB function of its own beside the REPL's CDC (pod/usblink.py:
a CDC-ACM interface or a vendor interface), so link bytes never go through
stdio. The REPL stays on the first port; hold BOOT while resetting to keep
the firmware from starting there.
"""
import asyncio
import gc
import os
import time

import machine
from micropython import const

from pod import board  # the pin map, generated from hardware/schematics/pinmap.toml
from pod import ledwire  # pure encoders: gamma, order, framing
from pod.flagwait import FlagWait  # the await protocol FrameTimer shares with the emulator's

# Pins come from the board's pin map and are used here only.
_LED_PIN = board.LED0_PIN  # one-wire LEDs (WS2812/SK6812) data, LED output 0
_LED_SPI = const(1)  # APA102/SK9822 on SPI(1) (IDF SPI2), every pin given: defaults can be PSRAM's
_LED_SPI_SCK = board.LED0_PIN  # clock on LED output 0's data line
_LED_SPI_MOSI = board.LED1_PIN  # data on LED output 1's data line
_LED_SPI_BAUD = const(8000000)  # 1.2 ms a 300-LED frame; long APA102 chains fail near 24 MHz (board-port.md)
_HEADSET_UART = board.HEADSET_UART
_HEADSET_TX = board.HEADSET_TX_PIN
_HEADSET_RX = board.HEADSET_RX_PIN
_HEADSET_RXBUF = const(4096)  # ~0.5 s of Cyton packets: rides out a long GC pause
_HEADSET_CHAR_MS = const(1)  # keeps the RX FIFO threshold; reads still never wait (open_headset)
_BOOT_PIN = board.BOOT_PIN


PLATFORM = "esp32"

# time.ticks_* wrap at 2**30 on the ESP32 already; the emulator shim copies this.
TICKS_PERIOD = const(1 << 30)
ticks_ms = time.ticks_ms
"""ticks_ms() -> int: pod clock in ms, wraps at TICKS_PERIOD. Compare with ticks_diff."""
ticks_us = time.ticks_us
"""ticks_us() -> int: pod clock in us, wraps at TICKS_PERIOD."""
ticks_diff = time.ticks_diff
"""ticks_diff(a, b) -> signed a - b, correct across the wrap (|a - b| < TICKS_PERIOD/2)."""
ticks_add = time.ticks_add
"""ticks_add(t, delta) -> t + delta, wrapped."""


def _bluetooth():
    import bluetooth  # ESP-IDF's NimBLE, MicroPython's bindings only (ports/esp32/mpconfigport.h:109-110)

    return bluetooth


async def open_link(cfg=None):
    """Open the pod link: a non-blocking byte pipe (pod/ports.py: one Port, or a Ports in
    front of several).

    port.write(buf, n) -> bytes of buf[0:n] taken into the TX ring (what fits;
    never waits: the caller keeps the rest); port.tx_free() -> bytes write()
    would take now; port.readinto(buf) -> bytes copied from what has arrived,
    0 if none (never waits); await port.wait() returns once bytes arrived since
    the last wait (one waiter); port.up() -> a host is attached. None of them
    allocates. A Ports' run() runs the transports' tasks. Behind it, one transport
    at a time (pod/ports.py): machine.USBDevice with a function beside the REPL's
    CDC, as cfg.usb_link picks it (pod/usblink.py: a second CDC-ACM interface,
    interfaces 2-3, or a vendor interface, interface 2) and, when pod.json (cfg)
    enables it, BLE (pod/ble.py). The emulator runs the same modules over its
    stand-ins.
    """
    from pod import usblink

    return usblink.open_link(machine.USBDevice(), cfg, _bluetooth)


async def open_headset(baud):
    """Open the headset UART at baud. Returns (reader, writer) asyncio streams.

    pod/cyton.py polls the UART (reader.s) at each RTOS tick once the headset
    streams, rather than awaiting its bytes: no irq, so the port starts no UART
    event task (ports/esp32/machine_uart.c:362-365, :664-670) and nothing wakes
    the main task per packet, each wake costing asyncio's I/O queue an
    allocation. timeout_char is 1 ms, not 0: with 0 the port sets the RX FIFO
    threshold to one byte (machine_uart.c:457-469), an RX interrupt per byte;
    with 1 the driver's threshold stays and the FIFO is flushed after one idle
    character. A read still never waits: after the first byte it waits
    timeout_char for the rest (machine_uart.c:692-695), pdMS_TO_TICKS(1), which
    is 0 ticks at the 100 Hz tick (docs/board-port.md section 1)."""
    uart = machine.UART(
        _HEADSET_UART, baudrate=baud, tx=_HEADSET_TX, rx=_HEADSET_RX,
        rxbuf=_HEADSET_RXBUF, timeout=0, timeout_char=_HEADSET_CHAR_MS,
    )
    return asyncio.StreamReader(uart), asyncio.StreamWriter(uart, {})



_FRAME_TIMER = const(0)  # hardware timers 0 and 1 of the S3's 4 (ports/esp32/machine_timer.c:124-127)
_LED_TIMER = const(1)
_TIMER_MIN_US = const(50)  # nearer than this: no alarm, at once
_LATE_START_US = const(100)  # a timed LED frame handed over later than this after its instant is late


def _led_spi(k, wire_size):
    """(the LED SPI bus, one-wire?, bytes a frame takes on it) for LED kind k."""
    pin = machine.Pin
    if k == ledwire.KIND_APA102:
        # miso=None: left out, SPI(1) would claim its IO MUX MISO pin (GPIO 13) as well
        spi = machine.SPI(_LED_SPI, baudrate=_LED_SPI_BAUD, sck=pin(_LED_SPI_SCK), mosi=pin(_LED_SPI_MOSI), miso=None)
        return spi, False, wire_size
    # data only: no clock pin (sck=None), the line idles low between frames (the latch)
    spi = machine.SPI(_LED_SPI, baudrate=ledwire.SPI_ONEWIRE_BAUD, sck=None, mosi=machine.Pin(_LED_PIN), miso=None)
    return spi, True, ledwire.spi_onewire_size(wire_size)


def dark(count, order="GRB", kind="ws2812"):
    """Drive count LEDs dark once and keep nothing: no writer thread, no timer, the
    SPI bus released (boot.py, before the app makes its Leds). The write waits
    for the transfer (machine_hw_spi.c:378-392)."""
    k, idx, wire = ledwire.setup(count, order, kind)
    spi, onewire, n = _led_spi(k, len(wire))
    ledwire.encode(k, wire, bytearray(count * 3), count * 3, idx)
    if onewire:
        buf = bytearray(n)
        ledwire.spread_onewire(buf, wire, len(wire))
    else:
        buf = wire
    spi.write(buf)
    spi.deinit()


class Leds:
    """The LED array: count LEDs, wire colour order, LED type.

    order: "GRB" etc., or four letters with W for RGBW strips; kind: "ws2812",
    "sk6812" (RGB), "sk6812_rgbw" (one-wire on _LED_PIN) or "apa102", "sk9822"
    (clock + data). write(rgb) shows one frame: rgb is count * 3 sRGB bytes in
    R, G, B order, already passed by the safety governor; it is gamma-corrected,
    reordered and framed into a preallocated wire buffer (pod/ledwire.py), so
    the caller may reuse it at once. show_at(rgb, due_us) does the same at a
    scheduled instant (the shared timeline of a circle). No allocation.

    The transfer does not hold the interpreter (docs/board-port.md "LED output"):
    every kind goes out on SPI with DMA (one-wire LEDs as 4 SPI bits per LED bit
    at 3.2 MHz, ledwire.spread_onewire), and SPI.write releases the interpreter
    while the DMA runs (ports/esp32/machine_hw_spi.c:378-392), so a thread of
    its own makes the write. A frame is encoded into one of two buffers and
    handed to that thread, which waits for it with the GIL released
    (thread_lock_acquire, py/modthread.c). machine.bitstream would hold the
    interpreter 30 us per LED (9 ms a 300-LED frame, machine_bitstream.c:151-154).

    show_at starts a frame at its instant without the interpreter waiting: a
    one-shot hardware timer (timer 1; the render loop's FrameTimer is timer 0)
    fires at the instant, its callback is scheduled from the ISR and run at the
    interpreter's next branch (ports/esp32/machine_timer.c:169-171,
    py/vm.c:1341-1372), and hands the frame over: releasing the lock yields to
    the writer (ports/esp32/mpthreadport.c:205-212), which takes the GIL at the
    interpreter's next GIL bounce (every 32 branches, mpconfigport.h:87) and
    starts the DMA. So the start does not wait for the asyncio loop to come
    back to the render task.
    """

    def __init__(self, count, order="GRB", kind="ws2812"):
        import _thread

        self.count = count
        self.order = order
        self.kind = kind
        self._k, self._idx, self.wire = ledwire.setup(count, order, kind)
        self._spi, self._onewire, n = _led_spi(self._k, len(self.wire))
        self._bufs = (bytearray(n), bytearray(n))
        self._next = 0  # the buffer the writer thread sends next
        self._sending = -1  # the buffer on the wire, -1: none
        self.frames = 0
        self.replaced = 0  # frames handed over before the writer had started the one before
        self.late_starts = 0  # timed frames handed over more than _LATE_START_US after their instant
        self._pending = -1  # the buffer waiting for its instant (show_at), -1: none
        self._due = 0
        self._t = machine.Timer(_LED_TIMER)
        self._one_shot = machine.Timer.ONE_SHOT
        self._cb = self._fire  # one bound method, made here: the callback path allocates nothing
        self._go = _thread.allocate_lock()
        self._go.acquire()  # held: the writer waits on it; released to hand a frame over
        _thread.start_new_thread(self._writer, ())

    def _writer(self):
        go = self._go
        write = self._spi.write
        bufs = self._bufs
        while True:
            go.acquire()
            b = self._next
            self._sending = b
            write(bufs[b])  # DMA; the interpreter runs meanwhile
            self._sending = -1

    def _encode(self, rgb):
        # into the buffer not handed over last; wait only if the wire still carries it
        b = self._next ^ 1
        while self._sending == b:
            pass
        if self._onewire:
            ledwire.encode(self._k, self.wire, rgb, self.count * 3, self._idx)
            ledwire.spread_onewire(self._bufs[b], self.wire, len(self.wire))
        else:
            ledwire.encode(self._k, self._bufs[b], rgb, self.count * 3, self._idx)
        return b

    def _hand(self, b):
        self._next = b
        if self._go.locked():
            self._go.release()
        else:
            self.replaced += 1  # the writer has not taken the last one yet: this one goes instead
        self.frames += 1

    def _fire(self, _t):
        # the LED timer's callback (scheduled from its ISR): the waiting frame goes out
        b = self._pending
        if b < 0:
            return
        self._pending = -1
        if time.ticks_diff(time.ticks_us(), self._due) > _LATE_START_US:
            self.late_starts += 1
        self._hand(b)

    def _flush(self):
        # a frame still waiting for its instant goes out now: frames keep their order
        if self._pending >= 0:
            self._t.deinit()
            self._fire(None)

    def write(self, rgb):
        self._flush()
        self._hand(self._encode(rgb))

    def show_at(self, rgb, due_us):
        """Show rgb as write() does, with the data starting at pod instant due_us
        (ticks_us), or at once if that instant has passed. Returns at once: the
        wire encoding is done here, and the LED timer hands the frame to the
        writer at due_us (see the class doc). Returns how late rgb came (us after
        due_us; 0 when it came before). A frame still waiting from an earlier
        show_at goes out first, late."""
        self._flush()
        b = self._encode(rgb)
        left = time.ticks_diff(due_us, time.ticks_us())
        if left < _TIMER_MIN_US:
            self._hand(b)
            return -left if left < 0 else 0
        self._due = due_us
        self._pending = b
        self._t.init(mode=self._one_shot, period=left, tick_hz=1000000, callback=self._cb)
        return 0

    @property
    def dropped(self):
        """Frames that could not be shown: replaced before they went out."""
        return self.replaced




class FrameTimer(FlagWait):
    """A one-shot wake-up at a pod instant, for the render loop.

    arm(due_us) sets it for pod instant due_us (ticks_us), replacing any earlier
    arming; await wait() returns once that instant has come (at once if it has).
    An asyncio sleep ends only at the next 10 ms FreeRTOS tick; this is a
    one-shot machine.Timer whose callback (scheduled from its ISR, which also
    wakes the main task: ports/esp32/machine_timer.c:169-171) sets an
    asyncio.ThreadSafeFlag, so the loop resumes within an ISR and a task
    switch of the instant. Period in us (tick_hz=1_000_000; the timer counts at
    10 MHz). No allocation: the flag is awaited through this object itself
    (pod/flagwait.py).
    """

    def __init__(self, timer_id=_FRAME_TIMER):
        self._init_wait(asyncio.ThreadSafeFlag())
        self._t = machine.Timer(timer_id)
        self._one_shot = machine.Timer.ONE_SHOT
        self._cb = self._fire  # one bound method, made here: the ISR path allocates nothing

    def _fire(self, _t):
        self._flag.set()

    def arm(self, due_us):
        self._flag.clear()
        self._rearm()
        left = time.ticks_diff(due_us, time.ticks_us())
        if left < _TIMER_MIN_US:
            self._t.deinit()
            self._flag.set()
            return
        self._t.init(mode=self._one_shot, period=left, tick_hz=1000000, callback=self._cb)


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


def open_file(name):
    """File name in the pod's filesystem opened for reading (binary), or None if
    absent: for reading a large file in pieces (f.readinto into a buffer of the
    caller's), where read_file would need one heap block as large as the file."""
    try:
        return open(name, "rb")
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


# The update store's file primitives (pod/update.py). littlefs, the ESP32 port's
# filesystem, commits a file's data at close and makes a rename atomic
# (docs/update.md); a power cut inside any of these leaves the last commit.


def open_rw(name):
    """File name opened for reading and writing anywhere in it (binary), created empty
    if absent: f.seek(pos), f.write(buf, off, n) (py/stream.c:279-297: no slice to
    allocate), f.close() commits. Modes "r+b" / "w+b" (extmod/vfs_lfsx_file.c:56-75)."""
    try:
        return open(name, "r+b")
    except OSError:
        return open(name, "w+b")


def rename(old, new):
    """Rename file old to new, replacing new: atomic on littlefs."""
    os.rename(old, new)


def remove(name):
    """Remove file or empty directory name; False if there was none."""
    try:
        os.remove(name)
    except OSError:
        try:
            os.rmdir(name)
        except OSError:
            return False
    return True


def make_dir(name):
    """Make directory name (its parent must exist); nothing if it is there already."""
    try:
        os.mkdir(name)
    except OSError:
        pass


def list_dirs(name):
    """Names of the directories in directory name, [] if it is absent."""
    try:
        return [e[0] for e in os.ilistdir(name) if e[1] == 0x4000]
    except OSError:
        return []


def file_size(name):
    """Size of file name in bytes, -1 if it is absent."""
    try:
        return os.stat(name)[6]
    except OSError:
        return -1


def fs_free():
    """Bytes free in the filesystem: littlefs's free blocks times the block size
    (extmod/vfs_lfsx.c:424-449; 4096-byte blocks on an ESP32, ports/esp32/esp32_partition.c:42)."""
    st = os.statvfs("/")
    return st[0] * st[3]


def unique_id():
    """The board's unique id as bytes (the MAC on an ESP32)."""
    return machine.unique_id()


def reset():
    """Hard-reset the pod. Does not return."""
    machine.reset()


_safe = None


def safe_mode():
    """True when this boot is in safe mode: keep the REPL, start nothing, LEDs dark.

    Safe mode is the SAFE button (board.SAFE_PIN, else BOOT) held at reset, or the
    one-shot flag request_safe_mode() left (the SAFE_MODE command), which this
    consumes. Sampled once (boot.py asks first), so releasing the button later
    changes nothing. The LEDs are dark already: boot.py darkens them first, on
    every boot.
    """
    global _safe
    if _safe is None:
        pin = getattr(board, "SAFE_PIN", None)  # the SAFE button on newer pin maps
        held = machine.Pin(_BOOT_PIN if pin is None else pin, machine.Pin.IN, machine.Pin.PULL_UP).value() == 0
        _safe = _take_safe_flag() or held
        if _safe:
            print("hypnolum: safe mode, firmware not started")
    return _safe


def mem_free():
    """Free heap in bytes."""
    return gc.mem_free()


# ---------------------------------------------------------------------------
# Safe mode on command, and the board's sensors (pod/derate.py reads them)

SAFE_MODE_FLAG = "safe_mode.flag"  # one-shot: the next boot is in safe mode


def request_safe_mode():
    """Make the next boot a safe-mode boot (then reset()); safe_mode() consumes the flag."""
    write_file(SAFE_MODE_FLAG, b"1")


def _take_safe_flag():
    try:
        os.remove(SAFE_MODE_FLAG)
    except OSError:
        return False
    return True


_TEMP_PIN = board.TEMP_1WIRE_PIN
_VIN_PIN = board.VIN_SENSE_PIN
_VIN_RTOP = board.VIN_SENSE_RTOP_OHM
_VIN_RBOT = board.VIN_SENSE_RBOT_OHM
_OW_MATCH_ROM = const(0x55)
_OW_SKIP_ROM = const(0xCC)
_DS_CONVERT_T = const(0x44)
_DS_READ_SCRATCH = const(0xBE)
_DS_MAX_SENSORS = const(4)


class Thermometer:
    """The board's DS18B20s on the 1-Wire bus (board.TEMP_1WIRE_PIN): U5 beside the
    LED connectors and an optional second on J6, taped to a strip.

    await convert() starts a conversion on all of them (SKIP ROM, CONVERT T) and
    returns at once; a 12-bit result is ready 750 ms later. await read_c16() is the
    hottest sensor's last conversion in 1/16 degC, or None when a sensor found at
    start-up does not answer, fails its CRC or reads as a shorted bus (no sensor
    found: None too). The bus is worked a byte at a time with a yield between
    bytes (1-Wire has no timeout between time slots), so no task waits more than
    a byte (~0.6 ms). onewire and ds18x20 are frozen in the ESP32 port
    (ports/esp32/boards/manifest.py). No allocation once the sensors are found.
    """

    def __init__(self):
        import onewire

        self._ow = onewire.OneWire(machine.Pin(_TEMP_PIN))
        self._buf = bytearray(9)
        self._roms = ()
        self._scan()

    def _scan(self):
        import ds18x20

        try:
            self._roms = tuple(ds18x20.DS18X20(self._ow).scan()[:_DS_MAX_SENSORS])
        except Exception:  # noqa: OneWireError or a bus fault: no sensors, read_c16() says None
            self._roms = ()

    async def convert(self):
        """Start a conversion; False if no sensor answered (rescans then, allocating)."""
        if not self._roms:
            self._scan()
            if not self._roms:
                return False
        ow = self._ow
        if not ow.reset():
            return False
        ow.writebyte(_OW_SKIP_ROM)
        ow.writebyte(_DS_CONVERT_T)
        return True

    async def read_c16(self):
        ow = self._ow
        buf = self._buf
        hot = None
        for rom in self._roms:
            if not ow.reset():
                return None
            ow.writebyte(_OW_MATCH_ROM)
            for j in range(8):  # by index: iterating the bytearray would allocate an iterator
                ow.writebyte(rom[j])
            ow.writebyte(_DS_READ_SCRATCH)
            for i in range(9):
                await asyncio.sleep_ms(0)
                buf[i] = ow.readbyte()
            # all zeros passes the CRC: a DQ line held low; the config byte's low bits are 1s
            if ow.crc8(buf) or (rom[0] == 0x28 and buf[4] & 0x1F != 0x1F) or not (buf[0] | buf[1] | buf[4]):
                return None
            t = buf[1] << 8 | buf[0]
            if t & 0x8000:
                t -= 0x10000
            if rom[0] == 0x10:  # DS18S20: half degrees
                t <<= 3
            if hot is None or t > hot:
                hot = t
        return hot


class VinSense:
    """The 5 V LED rail through the board's divider (VIN_SENSE_RTOP/RBOT_OHM) on an ADC1
    pin at 11 dB, the widest range (~3.1 V on the S3, ~2.5 V on the ESP32): 5 V reads 1.6 V.

    read_mv() -> the rail in mV, or None if the pin has no ADC. machine.ADC.read_uv()
    is calibrated by ESP-IDF (curve or line fitting, ports/esp32/adc.c).
    """

    def __init__(self):
        try:
            self._adc = machine.ADC(machine.Pin(_VIN_PIN), atten=machine.ADC.ATTN_11DB)
        except (ValueError, OSError):  # the pin map names a GPIO without an ADC on this chip
            self._adc = None

    def read_mv(self):
        if self._adc is None:
            return None
        # mV first: uV x (RTOP + RBOT) would leave the small ints (an allocation)
        return self._adc.read_uv() // 1000 * (_VIN_RTOP + _VIN_RBOT) // _VIN_RBOT
