"""Render loop: the current scene -> one LED frame at a fixed rate on the pod clock.

Frames are scheduled on hal.ticks_us with ticks_add/ticks_diff (the clock
wraps at 2**30), never by sleeping a fixed time, so the rate does not drift
with the time a frame takes. A frame that starts late is an overrun; the
schedule then restarts from now instead of rendering a burst to catch up.

The loop is also the pod's heartbeat for the watchdog: it feeds it, and only
it does, so a wedged event loop or a dead renderer resets the pod.
"""
import asyncio

import hal
import micropython
from micropython import const

from pod import effects, wire

_FEED_EVERY_MS = const(250)  # watchdog feeds: often enough, not a datagram per frame
_REBASE_MS = const(1 << 20)  # keep scene time far from the ticks_diff range limit (2**29)


@micropython.viper
def _fill(buf, n: int, r: int, g: int, b: int):
    # the whole array one colour, without allocating
    p = ptr8(buf)
    i = 0
    while i < n:
        p[i] = r
        p[i + 1] = g
        p[i + 2] = b
        i += 3


class Renderer:
    def __init__(self, leds, fps):
        self.leds = leds
        self.count = leds.count
        self.period_us = 1000000 // fps
        self.frame = bytearray(self.count * 3)  # R, G, B per LED; the HAL reorders
        self.scene = effects.Scene()
        self._colour = effects.colour_fn(wire.EFFECT_OFF)
        self._start_ms = hal.ticks_ms()
        self._from = bytearray(3)  # colour shown when the scene changed (transition start)
        self._shown = bytearray(3)  # colour of the last frame
        self._col = bytearray(3)  # scratch: the effect's colour for this frame
        self.frames_rendered = 0
        self.render_overruns = 0

    def apply(self, effect, brightness, color, transition_ms, period_ms, params):
        """Switch scene; returns 0, or the wire.NACK_REASON_* refusing it (scene unchanged)."""
        reason = effects.check(effect, brightness, color, transition_ms, period_ms, params)
        if reason:
            return reason
        s = self.scene
        s.effect = effect
        s.brightness = brightness
        s.color[0] = color[0]
        s.color[1] = color[1]
        s.color[2] = color[2]
        s.transition_ms = transition_ms
        s.period_ms = period_ms
        s.params = params
        self._colour = effects.colour_fn(effect)
        self._from[:] = self._shown
        self._start_ms = hal.ticks_ms()
        return 0

    def render(self, now_ms):
        """Compute and show one frame for pod time now_ms. No allocation."""
        s = self.scene
        t = hal.ticks_diff(now_ms, self._start_ms)
        if t < 0:
            t = 0
        elif t >= _REBASE_MS and s.period_ms:
            # move the start by whole periods: same phase, small numbers
            step = t - t % s.period_ms
            self._start_ms = hal.ticks_add(self._start_ms, step)
            t -= step
        col = self._col
        self._colour(s, t, col)
        bri = s.brightness
        f = self._from
        out = self._shown
        tr = s.transition_ms
        for i in range(3):
            v = col[i] * bri // 255
            if t < tr:
                # linear cross-fade from the colour shown when the scene changed
                v = f[i] + (v - f[i]) * t // tr
            out[i] = v
        _fill(self.frame, self.count * 3, out[0], out[1], out[2])
        self.leds.write(self.frame)
        self.frames_rendered += 1

    async def run(self, watchdog=None):
        ticks_us = hal.ticks_us
        ticks_ms = hal.ticks_ms
        diff = hal.ticks_diff
        add = hal.ticks_add
        period = self.period_us
        due = ticks_us()
        fed = ticks_ms()
        while True:
            now_ms = ticks_ms()
            self.render(now_ms)
            if watchdog is not None and diff(now_ms, fed) >= _FEED_EVERY_MS:
                watchdog.feed()
                fed = now_ms
            due = add(due, period)
            wait_us = diff(due, ticks_us())
            if wait_us < 0:
                self.render_overruns += 1
                due = ticks_us()
                await asyncio.sleep_ms(0)  # let the other tasks run before the next frame
            else:
                await asyncio.sleep_ms((wait_us + 500) // 1000)
