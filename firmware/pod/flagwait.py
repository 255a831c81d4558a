"""Awaiting an asyncio.ThreadSafeFlag without a coroutine per wait (FlagWait:
the await protocol hal.FrameTimer shares on the board, firmware/hal.py, and
in the emulator's shim, emulator/mpy/emutime.py; the link's transports; Flag).

A subclass sets the flag with _init_wait(flag) and calls _rearm() whenever it
arms; `await obj.wait()` returns once the flag is set, and clears it. The
object is its own awaitable, parked once on the flag's poll entry as asyncio's
sleep_ms parks on the task queue, so no coroutine is made per wait.
"""
import asyncio
from asyncio import core


class FlagWait:
    def _init_wait(self, flag):
        self._flag = flag
        self._waiting = False
        self._stop = StopIteration()

    def _rearm(self):
        self._waiting = False

    def share_wait(self, flag):
        """Set flag, not this object's own, when there is something to wait for: one waiter
        (pod/ports.py) then waits for several objects at once."""
        self._flag = flag

    def wait(self):
        return self

    def __iter__(self):
        return self

    def __next__(self):
        f = self._flag
        if not self._waiting and not f.state:
            self._waiting = True
            core._io_queue.queue_read(f)
            return None
        self._waiting = False
        f.state = 0
        self._stop.__traceback__ = None
        raise self._stop


class Flag(FlagWait):
    """An asyncio.ThreadSafeFlag whose `await flag.wait()` makes no coroutine."""

    def __init__(self):
        self._init_wait(asyncio.ThreadSafeFlag())

    def set(self):
        self._flag.set()
