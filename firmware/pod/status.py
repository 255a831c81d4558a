"""Heartbeat: one STATUS frame a second with the pod's counters."""
import asyncio

import hal
from micropython import const

from pod import wire

_PERIOD_MS = const(1000)
# wire layout (values generated from protocol/messages.py by `make codec`)
_HDR = const(4)  # HEADER_SIZE
# end of wire layout
_MASK30 = const(0x3FFFFFFF)


class Heartbeat:
    def __init__(self, link, headset, renderer):
        self.link = link
        self.headset = headset
        self.renderer = renderer
        self._last_ms = hal.ticks_ms()
        # uptime is summed from ticks_diff steps: ticks_ms alone wraps after 12 days. It is
        # held as 30 bits + the 2 above (uptime_hi): a u32 past 2**30 is a heap int on the board
        self.uptime_ms = 0
        self.uptime_hi = 0

    def send(self):
        now = hal.ticks_ms()
        step = hal.ticks_diff(now, self._last_ms)
        up = self.uptime_ms
        if up <= _MASK30 - step:
            self.uptime_ms = up + step
        else:
            self.uptime_ms = up - (_MASK30 - step) - 1
            self.uptime_hi = (self.uptime_hi + 1) & 3
        self._last_ms = now
        link = self.link
        eeg = self.headset
        r = self.renderer
        end = wire.pack_status(
            link.body, _HDR,
            self.uptime_ms,
            self.uptime_hi,
            now,
            # counters as they are: a mask with 0xFFFFFFFF (a heap int here) would allocate
            link.rx_frames,
            link.rx_errors,
            link.tx_frames,
            eeg.samples,
            eeg.gaps,
            eeg.dropped,
            r.frames_rendered,
            r.render_overruns + r.late_frames + r.leds.late_starts,  # frames not shown at their instant
            hal.mem_free(),
            r.scene.effect,
            r.scene.brightness,
        )
        link.send_telemetry(wire.T_STATUS, end)

    async def run(self):
        due = hal.ticks_add(hal.ticks_ms(), _PERIOD_MS)
        while True:
            wait = hal.ticks_diff(due, hal.ticks_ms())
            if wait > 0:
                await asyncio.sleep_ms(wait)
            self.send()
            due = hal.ticks_add(due, _PERIOD_MS)
            if hal.ticks_diff(due, hal.ticks_ms()) < 0:
                due = hal.ticks_ms()  # fell behind (long stall): do not burst
