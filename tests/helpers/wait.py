"""Polling with a deadline: tests wait for a condition, never for a fixed time."""
from __future__ import annotations

import asyncio
import time


async def wait_until(predicate, timeout: float = 5.0, what: str = "condition", interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)
