"""Record every effect on an emulated pod and render the pictures.

    .venv/bin/python tools/light_showreel.py OUT_DIR [--seconds-per-effect 4]

Boots one emulated pod (30 LEDs) with --record-frames, plays each effect in
turn over the pod link (as hostd would), then goes silent so the pod fades to
safe, and renders OUT_DIR/showreel.png and OUT_DIR/showreel.gif with
`hypnolum render`. Prints the time at which each effect started.
"""
from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import serial

from hypnolum.emulator.runner import Emulator
from hypnolum.protocol import codec

REEL = [  # effect, palette, colour, period_ms, params
    ("solid", "warm", (255, 140, 60), 0, []),
    ("breathe", "warm", (255, 110, 40), 4000, []),
    ("slow_wave", "warm", (60, 120, 255), 5000, [20, 30]),
    ("aurora", "aurora", (0, 0, 0), 6000, []),
    ("candle", "warm", (255, 120, 30), 0, []),
    ("ripple", "ocean", (0, 0, 0), 1500, [8, 3]),
    ("palette_drift", "dusk", (0, 0, 0), 6000, [256]),
    ("starfield", "moon", (200, 210, 255), 0, [20, 20, 3]),
    ("tide", "ocean", (40, 140, 200), 5000, [6]),
    ("heartbeat", "ember", (170, 60, 230), 1000, []),  # saturated red would be red-flash limited
    ("alpha_bloom", "forest", (0, 0, 0), 0, []),
    ("circle", "moon", (0, 0, 0), 0, []),
]


class Link:
    def __init__(self, path):
        self.port = serial.Serial(str(path), timeout=0)
        self.dec = codec.FrameDecoder()
        self.seq = 0

    def send(self, name, fields):
        self.seq += 1
        self.port.write(codec.encode(name, self.seq, fields))
        self.dec.feed(self.port.read(65536))


async def main_async(out: Path, seconds: float) -> int:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        async with Emulator(1, Path(tmp) / "emu", led_count=30, record_frames=out) as emu:
            await emu.wait_links(15)
            link = Link(emu.pods[0].tty_path)
            link.send("connect", {"protocol_version": codec.PROTOCOL_VERSION, "fingerprint": codec.FINGERPRINT,
                                  "host_id": "showreel"})
            await asyncio.sleep(1.0)
            t0 = time.monotonic()
            for effect, palette, colour, period, params in REEL:
                print(f"{time.monotonic() - t0 + 1.0:6.1f} s  {effect}")
                link.send("scene", {"effect": effect, "brightness": 220, "color": list(colour), "transition_ms": 800,
                                    "period_ms": period, "palette": palette, "flags": 0, "params": params})
                end = time.monotonic() + seconds
                v = 0
                while time.monotonic() < end:
                    link.send("group_value", {"group_id": 1, "value": v})  # also keeps the link alive
                    v = min(65535, v + 2500)
                    await asyncio.sleep(0.25)
            print(f"{time.monotonic() - t0 + 1.0:6.1f} s  link silent: fade to safe")
            await asyncio.sleep(8)
    frames = out / "pod-01.frames"
    return subprocess.call([sys.executable, "-m", "hypnolum", "render", str(frames),
                            "--png", str(out / "showreel.png"), "--gif", str(out / "showreel.gif")])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--seconds-per-effect", type=float, default=4.0)
    a = p.parse_args()
    return asyncio.run(main_async(a.out, a.seconds_per_effect))


if __name__ == "__main__":
    sys.exit(main())
