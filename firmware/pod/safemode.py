"""SAFE_MODE command: ACK, leave hal's one-shot flag, reset into safe mode.

After the reset hal.safe_mode() finds the flag (and consumes it): main.py
starts nothing, the REPL stays, the LEDs are sent a dark frame.
"""
import asyncio

import hal
from micropython import const

from pod import refusal, wire

_RESET_DELAY_MS = const(200)  # let the ACK leave before resetting


class SafeModeCommand:
    def __init__(self):
        self.task = None  # the pending reset, once asked

    def request(self, confirm):
        """Link sink: 0 (ACK) and a reset shortly, or NACK bad_param without the confirm value."""
        if confirm != wire.SAFE_MODE_CONFIRM:
            return refusal.field(wire.NACK_REASON_BAD_PARAM, wire.F_SAFE_MODE_CONFIRM, wire.SAFE_MODE_CONFIRM,
                                 wire.SAFE_MODE_CONFIRM)
        if self.task is None:
            hal.request_safe_mode()
            self.task = asyncio.create_task(self._reset())
        return 0

    async def _reset(self):
        await asyncio.sleep_ms(_RESET_DELAY_MS)
        hal.reset()
