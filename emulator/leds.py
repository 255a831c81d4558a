"""A virtual LED array: the frames a pod shows, captured with timestamps.

The firmware's HAL shim sends one datagram per shown frame to ``D/leds.sock``::

    <4sIIHQQ  b"LED3", pod ticks_ms, frame number, LED count,
              host CLOCK_MONOTONIC us when the frame lit (its true render instant),
              host CLOCK_MONOTONIC us when the pod wrote the datagram
    count x 3 bytes R, G, B

A frame shown at a scheduled instant (``Leds.show_at``) lights at that
instant, as a board's LED output does, even when the emulated pod's process
wrote it a little later because this machine was busy; the second instant
says how much later. (``b"LED1"`` and ``b"LED2"`` datagrams, without the last
field or two, are still read.)

:class:`VirtualLeds` binds that socket, keeps the last frame and a bounded
history of :class:`LedFrame` records (host monotonic time, pod ticks, frame
number, RGB bytes), and lets tests wait for a frame that satisfies a predicate.
"""
from __future__ import annotations

import asyncio
import os
import socket
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"LED1"
HEADER = struct.Struct("<4sIIH")
MAGIC2 = b"LED2"
HEADER2 = struct.Struct("<4sIIHQ")
MAGIC3 = b"LED3"
HEADER3 = struct.Struct("<4sIIHQQ")
MAX_DATAGRAM = 65536


class LedDatagramError(ValueError):
    pass


@dataclass(frozen=True)
class LedFrame:
    host_time: float  # time.monotonic() when the datagram arrived
    ticks_ms: int  # pod clock when the frame was shown
    frame_no: int
    rgb: bytes  # count x (R, G, B)
    shown_us: int | None = None  # host CLOCK_MONOTONIC us when it lit (LED2, LED3)
    written_us: int | None = None  # host CLOCK_MONOTONIC us when the pod wrote it (LED3)

    @property
    def count(self) -> int:
        return len(self.rgb) // 3

    def pixel(self, i: int) -> tuple[int, int, int]:
        return tuple(self.rgb[3 * i : 3 * i + 3])

    def pixels(self) -> list[tuple[int, int, int]]:
        return [self.pixel(i) for i in range(self.count)]

    def all(self, rgb: tuple[int, int, int]) -> bool:
        """Every LED shows exactly ``rgb``."""
        return self.count > 0 and self.rgb == bytes(rgb) * self.count


def parse_datagram(data: bytes, host_time: float | None = None) -> LedFrame:
    """One ``leds.sock`` datagram -> LedFrame; LedDatagramError if malformed."""
    if len(data) < HEADER.size:
        raise LedDatagramError(f"datagram of {len(data)} bytes is shorter than the {HEADER.size}-byte header")
    magic = bytes(data[:4])
    shown_us = written_us = None
    if magic == MAGIC3 and len(data) >= HEADER3.size:
        _, ticks_ms, frame_no, count, shown_us, written_us = HEADER3.unpack_from(data)
        size = HEADER3.size
    elif magic == MAGIC2 and len(data) >= HEADER2.size:
        _, ticks_ms, frame_no, count, shown_us = HEADER2.unpack_from(data)
        size = HEADER2.size
    elif magic == MAGIC:
        _, ticks_ms, frame_no, count = HEADER.unpack_from(data)
        size = HEADER.size
    else:
        raise LedDatagramError(f"bad magic {magic!r}")
    if len(data) != size + 3 * count:
        raise LedDatagramError(f"{count} LEDs need {size + 3 * count} bytes, got {len(data)}")
    return LedFrame(time.monotonic() if host_time is None else host_time, ticks_ms, frame_no, bytes(data[size:]), shown_us,
                    written_us)


def build_datagram(ticks_ms: int, frame_no: int, rgb: bytes) -> bytes:
    """The datagram the shim sends (for tests and stand-ins)."""
    return HEADER.pack(MAGIC, ticks_ms & 0xFFFFFFFF, frame_no & 0xFFFFFFFF, len(rgb) // 3) + bytes(rgb)


class VirtualLeds:
    """Receives frames on a bound datagram socket inside the running event loop."""

    def __init__(self, path: str | os.PathLike | None = None, history: int = 4096):
        self.path = Path(path) if path is not None else None
        self.history: deque[LedFrame] = deque(maxlen=history)
        self.last: LedFrame | None = None
        self.frames = 0  # frames received, ever
        self.errors = 0  # malformed datagrams
        self.last_error = ""
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self.recorder = None  # a frames.FrameRecorder: every frame is also written to a file

    def record(self, path: str | os.PathLike) -> None:
        """Write every frame received from now on to ``path`` (format in emulator/frames.py)."""
        from .frames import FrameRecorder

        self.recorder = FrameRecorder(path)

    # -- lifecycle ------------------------------------------------------
    def open(self) -> None:
        """Bind ``path`` (replacing a stale socket file) and start receiving."""
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if self.path is not None:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            sock.bind(str(self.path))
            # room for a burst of frames while the loop is busy
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.setblocking(False)
        self._sock = sock
        self._loop.add_reader(sock.fileno(), self._on_readable)

    def close(self) -> None:
        if self._sock is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        if self.recorder is not None:
            self.recorder.close()
            self.recorder = None

    # -- receiving ------------------------------------------------------
    def feed(self, data: bytes, host_time: float | None = None) -> LedFrame | None:
        """Take one datagram (also usable without a socket)."""
        try:
            frame = parse_datagram(data, host_time)
        except LedDatagramError as exc:
            self.errors += 1
            self.last_error = str(exc)
            return None
        self.last = frame
        self.history.append(frame)
        self.frames += 1
        if self.recorder is not None:
            self.recorder.write(frame)
        if self._changed is not None:
            self._changed.set()
        return frame

    def _on_readable(self) -> None:
        while self._sock is not None:
            try:
                data = self._sock.recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            self.feed(data)

    # -- helpers for tests ----------------------------------------------
    def last_rgb(self) -> bytes | None:
        return None if self.last is None else self.last.rgb

    def since(self, host_time: float) -> list[LedFrame]:
        """Frames received at or after ``host_time`` (time.monotonic())."""
        return [f for f in self.history if f.host_time >= host_time]

    async def wait_for(self, predicate: Callable[[LedFrame], bool], timeout: float = 5.0) -> LedFrame:
        """The first frame satisfying ``predicate``, starting with the last
        frame already received and then each new one in order (none is
        skipped while it is still in the history); TimeoutError after
        ``timeout`` seconds."""
        if self._changed is None:
            self._changed = asyncio.Event()
        deadline = time.monotonic() + timeout
        checked = max(0, self.frames - 1)  # frames already looked at
        while True:
            new = self.frames - checked
            if new > 0:
                tail = list(self.history)[-min(new, len(self.history)) :]
                checked = self.frames
                for frame in tail:
                    if predicate(frame):
                        return frame
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                last = self.last
                seen = "none" if last is None else f"frame {last.frame_no}, first LED {last.pixel(0)}"
                raise TimeoutError(f"no LED frame matched within {timeout} s (last: {seen})")
            self._changed.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._changed.wait()
            except TimeoutError:
                pass

    async def wait_frames(self, n: int, timeout: float = 5.0) -> None:
        """Until ``n`` more frames have arrived."""
        target = self.frames + n
        await self.wait_for(lambda _f: self.frames >= target, timeout)
