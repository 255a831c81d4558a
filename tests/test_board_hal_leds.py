"""The board HAL's LED output (firmware/hal.py) under micropython, with the
hardware faked at the `machine` boundary: a machine.py earlier on
MICROPYPATH records what the HAL sends to bitstream() and SPI.write()."""
import json
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
    def __init__(self, bus, baudrate=0, sck=None, mosi=None):
        self.bus, self.baud, self.sck, self.mosi = bus, baudrate, sck.n, mosi.n

    def write(self, buf):
        SENT.append(["spi", self.bus, self.sck, self.mosi, bytes(buf).hex()])

def bitstream(pin, encoding, timing, buf):
    SENT.append(["bitstream", pin.n, encoding, list(timing), bytes(buf).hex()])
'''

SCRIPT = '''
import json
import machine
import hal
src = bytearray((255, 128, 0, 10, 20, 30))
for kind, order in (("ws2812", "GRB"), ("sk6812_rgbw", "GRBW"), ("apa102", "BGR")):
    leds = hal.Leds(2, order, kind)
    leds.write(src)
print(json.dumps(machine.SENT))
'''


def duty(v):  # sRGB -> PWM duty, written out here from the sRGB definition
    c = v / 255
    lin = c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
    return int(lin * 255 + 0.5)


def test_board_hal_drives_each_led_type(tmp_path):
    (tmp_path / "machine.py").write_text(FAKE_MACHINE)
    (tmp_path / "run.py").write_text(SCRIPT)
    env = dict(os.environ, MICROPYPATH=os.pathsep.join([str(tmp_path), str(ROOT / "firmware"), ".frozen"]))
    exe = Path(sys.executable).parent / "micropython"
    out = subprocess.run([str(exe), str(tmp_path / "run.py")], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    ws, rgbw, apa = json.loads(out.stdout.strip().splitlines()[-1])
    d = duty
    # pins from the board's pin map: LED output 0 = GPIO 18, output 1 = GPIO 19
    assert ws[:4] == ["bitstream", 18, 0, [400, 850, 800, 450]]
    assert bytes.fromhex(ws[4]) == bytes((d(128), 255, 0, d(20), d(10), d(30)))
    w = d(10)  # second LED: the common part of (10, 20, 30) moves to white
    assert bytes.fromhex(rgbw[4]) == bytes((d(128), 255, 0, 0, d(20) - w, 0, d(30) - w, w))
    assert apa[:4] == ["spi", 1, 18, 19]
    assert bytes.fromhex(apa[4]) == bytes((0, 0, 0, 0, 0xFF, 0, d(128), 255, 0xFF, d(30), d(20), d(10), 0xFF))
