"""Render + govern + drive time per frame at 300 LEDs under micropython, and allocation per frame.

    .venv/bin/python bench/light_frame.py

Runs firmware/ under the unix port (emulator HAL: the driver's wire encoding
runs, the datagram goes nowhere) for every effect, best of 5 runs of 1000
frames, and prints us/frame and bytes allocated per frame. Target: <= 150 us/frame here
(a proxy for <= 8 ms on an ESP32 at 240 MHz).
"""
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = r"""
import hal
from pod import config, effects, render, wire
from frametime import best_of, scene, settle  # bench/mpy/frametime.py, shared with bench/pod_cpu.py
N = 300
FRAMES = 1000
REPEATS = 5
cfg = config.Config()
cfg.set("led_count", N)
cfg.set("psu_ma", 20000)  # the power limit only where the frame is really bright
cfg.set("strobe_enabled", True)
leds = hal.Leds(N, "GRB", "ws2812")
leds.transfer_us = 0  # the interpreter's work per frame; the driver's board time is in bench/pod_cpu.py
r = render.Renderer(leds, 60, cfg)

def one(r, t, spec, eid):
    scene(r, spec, eid)
    t = settle(r.render, t)
    return best_of(r.render, t, FRAMES, REPEATS)


t = hal.ticks_ms()
total_us = 0
total_frames = 0
worst = 0
for eid, spec in sorted(effects.REGISTRY.items()):
    t, us, alloc = one(r, t, spec, eid)
    total_us += us
    total_frames += FRAMES
    worst = max(worst, us / FRAMES)
    print("%-14s %7.1f us/frame  %5.2f bytes/frame" % (spec.name, us / FRAMES, alloc / FRAMES))
print("all effects    %7.1f us/frame mean, %.1f worst (300 LEDs, render + governor + WS2812 encode)" % (total_us / total_frames, worst))
cfg2 = config.Config()
cfg2.set("led_count", N)
cfg2.set("psu_ma", 1200)  # a bright array on a small supply: power-limited every frame
r2 = render.Renderer(leds, 60, cfg2)
t, us, alloc = one(r2, t, effects.REGISTRY[wire.EFFECT_SLOW_WAVE], wire.EFFECT_SLOW_WAVE)
print("slow_wave, power-limited   %7.1f us/frame  %5.2f bytes/frame (%d frames limited)" % (us / FRAMES, alloc / FRAMES, r2.governor.power_limited))
r2.night(wire.NIGHT_MODE_SCHEDULE, 0, 1439, 10)
t, us, alloc = one(r2, t, effects.REGISTRY[wire.EFFECT_AURORA], wire.EFFECT_AURORA)
print("aurora, night schedule on  %7.1f us/frame  %5.2f bytes/frame" % (us / FRAMES, alloc / FRAMES))
"""


def main() -> int:
    exe = Path(sys.executable).parent / "micropython"
    env = dict(os.environ, MICROPYPATH=os.pathsep.join([str(ROOT / "emulator" / "mpy"), str(ROOT / "firmware"),
                                                        str(ROOT / "bench" / "mpy"), ".frozen"]))
    with tempfile.TemporaryDirectory() as tmp:
        env["HYPNOLUM_POD_DIR"] = tmp
        script = Path(tmp) / "bench.py"
        script.write_text(SCRIPT)
        return subprocess.call([str(exe), "-X", "heapsize=4M", str(script)], env=env, cwd=tmp)


if __name__ == "__main__":
    sys.exit(main())
