"""Heartbeat: one STATUS frame a second with the pod's counters."""
import asyncio

import hal
from micropython import const

from pod import wire

_PERIOD_MS = const(1000)
_HDR = const(4)  # wire.HEADER_SIZE
_U32 = const(0xFFFFFFFF)


class Heartbeat:
    def __init__(self, link, headset, renderer):
        self.link = link
        self.headset = headset
        self.renderer = renderer
        self._last_ms = hal.ticks_ms()
        # uptime is summed from ticks_diff steps: ticks_ms alone wraps after 12 days
        self.uptime_ms = 0

    def send(self):
        now = hal.ticks_ms()
        self.uptime_ms += hal.ticks_diff(now, self._last_ms)
        self._last_ms = now
        link = self.link
        eeg = self.headset
        r = self.renderer
        end = wire.pack_status(
            link.body, _HDR,
            self.uptime_ms & _U32,
            now,
            link.rx_frames & _U32,
            link.rx_errors & _U32,
            link.tx_frames & _U32,
            eeg.samples & _U32,
            eeg.gaps & _U32,
            eeg.dropped & _U32,
            r.frames_rendered & _U32,
            (r.render_overruns + r.late_frames) & _U32,  # frames not shown at their instant
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
