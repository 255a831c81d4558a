"""Recorded LED frames: the file format ``hypnolum emulate --record-frames DIR`` writes.

One file per pod, ``DIR/<pod_id>.frames``::

    b"HLFRAMES"  u16 version (1)  u16 reserved            16-byte header (+4 pad)
    then one record per frame shown, in arrival order:
    <d  host wall-clock time (time.time(), seconds)
    the pod's LED datagram as sent: <4sIIH b"LED1", pod ticks_ms, frame number,
        LED count, then count x (R, G, B) sRGB bytes as driven (after the
        safety governor)

A record's size follows from its LED count, so the file needs no index; a
truncated last record (the emulator killed mid-write) is ignored on reading.
"""
from __future__ import annotations

import os
import struct
import time
from collections.abc import Iterator
from pathlib import Path

from .leds import HEADER, LedFrame, parse_datagram

MAGIC = b"HLFRAMES"
VERSION = 1
FILE_HEADER = struct.Struct("<8sHHI")
TIME = struct.Struct("<d")


class FrameFileError(ValueError):
    pass


class FrameRecorder:
    """Appends frames to one pod's file (buffered; flushed about once a second)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "wb")
        self._f.write(FILE_HEADER.pack(MAGIC, VERSION, 0, 0))
        self._flushed = time.monotonic()
        self.frames = 0

    def write(self, frame: LedFrame, wall_time: float | None = None) -> None:
        self._f.write(TIME.pack(time.time() if wall_time is None else wall_time))
        self._f.write(HEADER.pack(b"LED1", frame.ticks_ms & 0xFFFFFFFF, frame.frame_no & 0xFFFFFFFF, frame.count))
        self._f.write(frame.rgb)
        self.frames += 1
        now = time.monotonic()
        if now - self._flushed >= 1.0:
            self._f.flush()
            self._flushed = now

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


def read_frames(path: str | os.PathLike) -> Iterator[tuple[float, LedFrame]]:
    """(wall time, frame) for every complete record; FrameFileError if not a frames file."""
    data = Path(path).read_bytes()
    if len(data) < FILE_HEADER.size:
        raise FrameFileError(f"{path}: shorter than the {FILE_HEADER.size}-byte header")
    magic, version, _, _ = FILE_HEADER.unpack_from(data)
    if magic != MAGIC:
        raise FrameFileError(f"{path}: not a frames file (magic {magic!r})")
    if version != VERSION:
        raise FrameFileError(f"{path}: version {version}, this reader knows {VERSION}")
    off = FILE_HEADER.size
    while off + TIME.size + HEADER.size <= len(data):
        (wall,) = TIME.unpack_from(data, off)
        count = HEADER.unpack_from(data, off + TIME.size)[3]
        end = off + TIME.size + HEADER.size + 3 * count
        if end > len(data):
            break  # truncated last record
        yield wall, parse_datagram(data[off + TIME.size : end], wall)
        off = end
