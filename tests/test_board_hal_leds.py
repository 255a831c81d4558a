"""The board HAL's LED output and frame timer (firmware/hal.py) under
micropython, with the hardware faked at the `machine` boundary: a machine.py
earlier on MICROPYPATH records what the HAL sends to bitstream(), SPI.write()
and Timer.init(). And the emulator shim's timing constants are the board's."""
import ast
import json
import re
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.micropython

FAKE_MACHINE = '''
from umachine import *
SENT = []

class Pin:
    OUT = 1
    IN = 0
    PULL_UP = 2

    def __init__(self, n, mode=None, pull=None, value=None):
        self.n = n

class SPI:
    def __init__(self, bus, baudrate=0, sck=-1, mosi=-1, miso=-1):
        # -1: not given (the port then takes SPI(1)'s IO MUX pins); None: no pin
        self.bus, self.baud, self.miso = bus, baudrate, miso
        self.sck = sck.n if isinstance(sck, Pin) else sck
        self.mosi = mosi.n if isinstance(mosi, Pin) else mosi

    def write(self, buf):
        import _thread
        SENT.append(["spi", self.bus, self.sck, self.mosi, bytes(buf).hex(), self.baud, self.miso,
                     _thread.get_ident() != MAIN])

MAIN = __import__("_thread").get_ident()

class Timer:
    ONE_SHOT = 0
    PERIODIC = 1
    MADE = []

    def __init__(self, n):
        self.n = n
        self.kw = None
        Timer.MADE.append(self)

    def init(self, **kw):
        self.kw = kw

    def deinit(self):
        self.kw = None

class UART:
    IRQ_RX = 1
    MADE = []

    def __init__(self, n, **kw):
        self.n, self.kw, self.irq_args = n, kw, None
        UART.MADE.append(self)

    def irq(self, handler=None, trigger=0, hard=False):
        self.irq_args = (callable(handler), trigger)

    def read(self, n=-1):
        return None

    def write(self, b):
        return len(b)

def bitstream(pin, encoding, timing, buf):
    SENT.append(["bitstream", pin.n, encoding, list(timing), bytes(buf).hex()])
'''

SCRIPT = '''
import json
import machine
import hal
src = bytearray((255, 128, 0, 10, 20, 30))
import time
for kind, order in (("ws2812", "GRB"), ("sk6812_rgbw", "GRBW"), ("apa102", "BGR")):
    leds = hal.Leds(2, order, kind)
    leds.write(src)
    for _ in range(200):  # the writer thread sends it
        if len(machine.SENT) == 1 + ("ws2812", "sk6812_rgbw", "apa102").index(kind):
            break
        time.sleep_ms(5)
print(json.dumps(machine.SENT))
'''


def run_with_fake_machine(tmp_path, script):
    """Run script under micropython with the board HAL and the fake machine; its last line, as JSON."""
    (tmp_path / "machine.py").write_text(FAKE_MACHINE)
    (tmp_path / "run.py").write_text(script)
    env = dict(os.environ, MICROPYPATH=os.pathsep.join([str(tmp_path), str(ROOT / "firmware"), ".frozen"]))
    exe = Path(sys.executable).parent / "micropython"
    out = subprocess.run([str(exe), str(tmp_path / "run.py")], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def duty(v):  # sRGB -> PWM duty, written out here from the sRGB definition
    c = v / 255
    lin = c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
    return int(lin * 255 + 0.5)


def onewire_bits(hexbytes):
    """SPI bytes back to LED bytes: every 4 SPI bits are 1000 (a 0) or 1110 (a 1), nothing else."""
    bits = "".join(f"{b:08b}" for b in bytes.fromhex(hexbytes))
    nibbles = [bits[i:i + 4] for i in range(0, len(bits), 4)]
    assert set(nibbles) <= {"1000", "1110"}, set(nibbles)
    led = "".join("1" if n == "1110" else "0" for n in nibbles)
    return bytes(int(led[i:i + 8], 2) for i in range(0, len(led), 8))


def test_board_hal_drives_each_led_type(tmp_path):
    ws, rgbw, apa = run_with_fake_machine(tmp_path, SCRIPT)
    d = duty
    # pins from the board's pin map: LED output 0 = GPIO 18, output 1 = GPIO 19
    pins = dict(re.findall(r"^(LED[01]_PIN) = const\((\d+)\)", (ROOT / "firmware/pod/board.py").read_text(), re.M))
    led0, led1 = int(pins["LED0_PIN"]), int(pins["LED1_PIN"])
    # one-wire LEDs: SPI data only, 3.2 MHz, each LED bit as 4 SPI bits (1000 = 0, 1110 = 1)
    assert ws[:4] == ["spi", 1, None, led0] and ws[5:] == [3_200_000, None, True]
    assert onewire_bits(ws[4]) == bytes((d(128), 255, 0, d(20), d(10), d(30)))
    w = d(10)  # second LED: the common part of (10, 20, 30) moves to white
    assert onewire_bits(rgbw[4]) == bytes((d(128), 255, 0, 0, d(20) - w, 0, d(30) - w, w))
    assert apa[:4] == ["spi", 1, led0, led1]
    assert apa[5:] == [8_000_000, None, True]  # 8 MHz; no MISO pin claimed; sent from the writer thread
    assert bytes.fromhex(apa[4]) == bytes((0, 0, 0, 0, 0xFF, 0, d(128), 255, 0xFF, d(30), d(20), d(10), 0xFF))


FRAME_TIMER_SCRIPT = '''
import json
import time
import asyncio
import machine
import hal

ft = hal.FrameTimer()
t = machine.Timer.MADE[0]
due = time.ticks_add(time.ticks_us(), 5000)
ft.arm(due)
kw = t.kw
out = {"id": t.n, "mode": kw["mode"], "tick_hz": kw["tick_hz"], "period": kw["period"]}

async def isr_later():
    await asyncio.sleep_ms(20)
    kw["callback"](t)  # what the port's scheduled callback does (machine_timer.c:169-171)

async def main():
    asyncio.create_task(isr_later())
    t0 = time.ticks_ms()
    await ft.wait()
    out["waited_ms"] = time.ticks_diff(time.ticks_ms(), t0)
    ft.arm(time.ticks_add(time.ticks_us(), -10))  # past: no alarm, at once
    out["past_kw"] = t.kw
    t0 = time.ticks_ms()
    await ft.wait()
    out["past_ms"] = time.ticks_diff(time.ticks_ms(), t0)

asyncio.run(main())
print(json.dumps(out))
'''


def test_board_frame_timer_is_a_one_shot_machine_timer_in_us(tmp_path):
    got = run_with_fake_machine(tmp_path, FRAME_TIMER_SCRIPT)
    # ports/esp32/machine_timer.c: period in units of 1/tick_hz, mode ONE_SHOT = 0
    assert (got["id"], got["mode"], got["tick_hz"]) == (0, 0, 1_000_000)
    assert 4000 < got["period"] <= 5000, got
    assert 15 <= got["waited_ms"] < 200, got  # returned once the callback set the flag
    assert got["past_kw"] is None and got["past_ms"] < 50, got


def _consts(path):
    out = {}
    for node in ast.parse(path.read_text()).body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and isinstance(node.value, ast.Call) and getattr(node.value.func, "id", "") == "const"):
            out[node.targets[0].id] = eval(compile(ast.Expression(node.value.args[0]), str(path), "eval"))  # noqa: S307
    return out


def test_the_shims_timing_constants_are_the_boards():
    board = _consts(ROOT / "firmware" / "hal.py")
    shim = _consts(ROOT / "emulator" / "mpy" / "hal.py")
    for name in ("_TIMER_MIN_US", "_LATE_START_US", "TICKS_PERIOD", "_LED_SPI_BAUD"):
        assert shim[name] == board[name], (name, shim[name], board[name])


HEADSET_SCRIPT = """
import asyncio
import json
import machine
import hal
asyncio.run(hal.open_headset(115200))
u = machine.UART.MADE[0]
print(json.dumps([u.n, u.kw["baudrate"], u.kw.get("timeout_char", 0), u.irq_args]))
"""


def test_board_headset_uart_is_polled_without_an_interrupt_per_byte(tmp_path):
    """pod/cyton.py polls the headset UART at each tick: no irq (whose event task would wake
    the loop per packet), and timeout_char >= 1 ms, since with 0 the port sets the RX FIFO
    threshold to one byte (ports/esp32/machine_uart.c:457-469 at v1.28.0)."""
    n, baud, timeout_char, irq = run_with_fake_machine(tmp_path, HEADSET_SCRIPT)
    uart = re.search(r"^HEADSET_UART = const\((\d+)\)", (ROOT / "firmware/pod/board.py").read_text(), re.M)
    assert (n, baud) == (int(uart.group(1)), 115200)
    assert 1 <= timeout_char < 10  # under one 10 ms tick: pdMS_TO_TICKS gives 0, a read never waits
    assert irq is None


LED_TIMER_SCRIPT = '''
import json
import time
import machine
import hal

def wait_sent(n):
    for _ in range(200):  # the writer thread sends it
        if len(machine.SENT) >= n:
            return True
        time.sleep_ms(5)
    return False

leds = hal.Leds(2, "BGR", "apa102")
t = [m for m in machine.Timer.MADE if m.n == 1][0]
a, b = bytearray((255, 0, 0, 255, 0, 0)), bytearray((0, 0, 255, 0, 0, 255))
out = {}
t0 = time.ticks_us()
out["late"] = leds.show_at(a, time.ticks_add(t0, 8000))
out["took_us"] = time.ticks_diff(time.ticks_us(), t0)
kw = t.kw
out["timer"] = [kw["mode"], kw["tick_hz"], kw["period"]]
time.sleep_ms(30)
out["sent_before_timer"] = len(machine.SENT)
kw["callback"](t)  # the port's scheduled callback (machine_timer.c:169-171)
out["sent_at_timer"] = wait_sent(1)
out["late_starts"] = leds.late_starts  # the callback ran 30 ms after the instant
out["past"] = leds.show_at(b, time.ticks_add(time.ticks_us(), -2000))
out["sent_past"] = wait_sent(2)
leds.show_at(a, time.ticks_add(time.ticks_us(), 50000))
leds.write(b)  # the waiting frame goes out first, then this one (or this one instead, if the
wait_sent(4)   # writer had not taken the waiting one yet: counted as replaced)
out["order"] = [s[4] for s in machine.SENT]
out["replaced"] = leds.replaced
out["disarmed"] = t.kw is None
print(json.dumps(out))
'''


def test_board_show_at_returns_at_once_and_its_led_timer_starts_the_frame(tmp_path):
    got = run_with_fake_machine(tmp_path, LED_TIMER_SCRIPT)
    assert got["late"] == 0 and got["took_us"] < 5000, got  # no spin
    mode, tick_hz, period = got["timer"]
    assert (mode, tick_hz) == (0, 1_000_000) and 7000 < period <= 8000, got  # timer 1, one-shot, us
    assert got["sent_before_timer"] == 0 and got["sent_at_timer"], got  # the timer starts it, not show_at
    assert got["late_starts"] == 1, got
    assert got["past"] >= 2000 and got["sent_past"], got  # a frame past its instant goes at once
    a, b, *rest = got["order"]
    assert a != b and rest[-1] == b, got["order"]  # the newest frame is the one left on the wire
    assert rest == [a, b] or (rest == [b] and got["replaced"] == 1), got  # the waiting frame first, or replaced
    assert got["disarmed"], got
