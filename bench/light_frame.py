"""Render + govern + drive time per frame at 300 LEDs under micropython, and allocation per frame.

    .venv/bin/python bench/light_frame.py

Runs firmware/ under the unix port (emulator HAL: the driver's wire encoding
runs, the datagram goes nowhere) for every effect, 2000 frames each, and
prints us/frame and bytes allocated per frame. Target: <= 150 us/frame here
(a proxy for <= 8 ms on an ESP32 at 240 MHz).
"""
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = r"""
import gc, time
import hal
from pod import config, effects, render, wire
N = 300
FRAMES = 2000
cfg = config.Config()
cfg.set("led_count", N)
cfg.set("psu_ma", 20000)  # the power limit only where the frame is really bright
cfg.set("strobe_enabled", True)
leds = hal.Leds(N, "GRB", "ws2812")
r = render.Renderer(leds, 60, cfg)
t = hal.ticks_ms()
total_us = 0
total_frames = 0
worst = 0
for eid, spec in sorted(effects.REGISTRY.items()):
    per = min(spec.period[1], max(spec.period[0], 4000)) if spec.period else 0
    r.apply(eid, 220, (255, 150, 80), 0, per, wire.PALETTE_AURORA, wire.SCENE_FLAG_STROBE_OPT_IN)
    r.inputs.alpha = 150
    r.inputs.group = 40000
    for i in range(200):  # settle: slews done, buffers built
        t = hal.ticks_add(t, 17)
        r.render(t)
    gc.collect()
    gc.disable()
    a0 = gc.mem_alloc()
    t0 = time.ticks_us()
    for i in range(FRAMES):
        t = hal.ticks_add(t, 17)
        r.render(t)
    us = time.ticks_diff(time.ticks_us(), t0)
    alloc = gc.mem_alloc() - a0
    gc.enable()
    total_us += us
    total_frames += FRAMES
    worst = max(worst, us / FRAMES)
    print("%-14s %7.1f us/frame  %5.2f bytes/frame" % (spec.name, us / FRAMES, alloc / FRAMES))
print("all effects    %7.1f us/frame mean, %.1f worst (300 LEDs, render + governor + WS2812 encode)" % (total_us / total_frames, worst))
"""


def main() -> int:
    exe = Path(sys.executable).parent / "micropython"
    env = dict(os.environ, MICROPYPATH=os.pathsep.join([str(ROOT / "emulator" / "mpy"), str(ROOT / "firmware"), ".frozen"]))
    with tempfile.TemporaryDirectory() as tmp:
        env["HYPNOLUM_POD_DIR"] = tmp
        script = Path(tmp) / "bench.py"
        script.write_text(SCRIPT)
        return subprocess.call([str(exe), "-X", "heapsize=4M", str(script)], env=env, cwd=tmp)


if __name__ == "__main__":
    sys.exit(main())
