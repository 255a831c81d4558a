"""LED preview: the strip as the pod drives it, averaged to a few segments, 5 times a second.

Every LED_PREVIEW_MS the governor's output (what the LEDs show, after every
safety limit) is averaged down to min(led_count, LED_PREVIEW_MAX_SEGMENTS)
segments of consecutive LEDs (the mean sRGB byte of each channel), written
straight into the link's frame buffer and sent as LEDS telemetry. It has the
lowest priority on the link: it goes only while the TX ring has room to spare
(Link.spare(); counted in Link.spare_dropped otherwise), so a slow link drops it
before anything else. A pass reads
each LED's three bytes once (viper) and allocates nothing.
"""
import asyncio

import hal
import micropython
from micropython import const

from pod import wire

# wire layout (values generated from protocol/messages.py by `make codec`)
_HDR = const(4)  # HEADER_SIZE
_HEAD = const(3)  # leds.rgb: after led_count u16, segments u8 come the segments' R, G, B
# end of wire layout


@micropython.viper
def average(src, n: int, k: int, dst, off: int):
    """dst[off + 3j : off + 3j + 3] = the rounded mean R, G, B of LEDs j*n//k .. (j+1)*n//k - 1
    of src (n LEDs of 3 bytes), for each segment j < k (1 <= k <= n)."""
    s = ptr8(src)
    d = ptr8(dst)
    start = 0
    j = 0
    while j < k:
        end = ((j + 1) * n) // k  # a runtime call in viper: one per segment, 32 at most
        r = 0
        g = 0
        b = 0
        i = start * 3
        stop = end * 3
        while i < stop:
            r += int(s[i])
            g += int(s[i + 1])
            b += int(s[i + 2])
            i += 3
        c = end - start
        half = c >> 1
        o = off + j * 3
        d[o] = (r + half) // c
        d[o + 1] = (g + half) // c
        d[o + 2] = (b + half) // c
        start = end
        j += 1


class Preview:
    def __init__(self, link, shown, count):
        """link: pod/link.py's; shown: the governor's output buffer (count LEDs x R, G, B)."""
        self.link = link
        self.shown = shown
        self.count = count
        self.segments = count if count < wire.LED_PREVIEW_MAX_SEGMENTS else wire.LED_PREVIEW_MAX_SEGMENTS
        self.sent = 0

    def send(self):
        """Average and send one LEDS frame; False if the link had no room to spare (dropped)."""
        lk = self.link
        if not lk.spare():
            lk.spare_dropped += 1
            return False
        k = self.segments
        body = lk.body
        average(self.shown, self.count, k, body, _HDR + _HEAD)
        if lk.send(wire.T_LEDS, wire.pack_leds(body, _HDR, self.count, k, 3 * k)):
            self.sent += 1
            return True
        return False

    async def run(self):
        due = hal.ticks_add(hal.ticks_ms(), wire.LED_PREVIEW_MS)
        while True:
            wait = hal.ticks_diff(due, hal.ticks_ms())
            if wait > 0:
                await asyncio.sleep_ms(wait)
            if self.link.heard:  # a host has spoken: someone may watch
                self.send()
            due = hal.ticks_add(due, wire.LED_PREVIEW_MS)
            if hal.ticks_diff(due, hal.ticks_ms()) < 0:
                due = hal.ticks_ms()  # fell behind (long stall): do not burst
