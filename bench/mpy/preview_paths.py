"""Times what the pod's light reports cost, under the 32-bit unix port; run by bench/led_preview.py.

Prints "R key us_per_call bytes_allocated_per_call" lines: the LED preview
(300 LEDs averaged to 32 segments, packed, framed and written to the
firmware's own usbcdc.Port, as pod_cpu_paths.py wires it), the scene report,
and a frame during a stop's fast fade against the same frame without it.
"""
import time

import hal

hal.ticks_ms = time.ticks_ms  # the board's C builtins (see pod_cpu_paths.py)
hal.ticks_us = time.ticks_us
hal.ticks_diff = time.ticks_diff
hal.ticks_add = time.ticks_add


from pod import config, link, preview, render, usbcdc, wire
from pod.mem import copy as _copy
from frametime import timed  # shared with pod_cpu_paths.py
from benchusb import BenchPort, StandInUSBDevice  # shared with pod_cpu_paths.py

N = 300
REPS = 9


cfg = config.Config()
cfg.set("led_count", N)
leds = hal.Leds(N, "GRB", "ws2812")
leds.transfer_us = 0
r = render.Renderer(leds, 60, cfg)
usbd = StandInUSBDevice()
cdc = usbcdc.open(usbd)
usbd.open()
lk = link.Link(BenchPort(cdc), ("pod-bench", config.FW_VERSION, 1, N, 8, 250), r.apply)
r.watch(lk, cfg.fade_after_ms)
lk.heard = True
pv = preview.Preview(lk, r.governor.shown, N)
r.apply(wire.Scene(wire.EFFECT_AURORA, 220, (255, 150, 80), 0, 20000, wire.PALETTE_AURORA, 0, ()))
t = [hal.ticks_ms()]


def frame():
    t[0] = hal.ticks_add(t[0], 17)
    lk.last_rx_ms = t[0]
    r.render(t[0])


for i in range(200):
    frame()
us, al = timed(pv.send, 200, REPS)
print("R preview_send %.3f %d" % (us, al))
us, al = timed(r.report, 200, REPS)
print("R scene_report %.3f %d" % (us, al))
# the governor alone, every LED moving each frame (the target toggles), with and without a stop's pace
g = r.governor
white = bytearray(b"\xff" * 3 * N)
dark = bytearray(3 * N)
work = bytearray(3 * N)
flip = [0]


def govern(fast):
    def one():
        flip[0] ^= 1
        _copy(work, 0, white if flip[0] else dark, 0, 3 * N)
        g.govern(work, 0, 17, False, False, fast)
    return one


for fast, key in ((False, "govern_slew"), (True, "govern_stop_fade")):
    us, al = timed(govern(fast), 300, REPS)
    print("R %s %.3f %d" % (key, us, al))
print("I preview_sent %d spare_dropped %d tx_bytes %d" % (pv.sent, lk.spare_dropped, usbd.tx_bytes))
