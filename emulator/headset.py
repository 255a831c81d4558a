"""A virtual OpenBCI Cyton on a byte stream: the pod's headset.sock, or a pty.

The protocol itself lives in :mod:`.cyton_protocol` (sans I/O) and the
microvolts in :mod:`.signals`; this module connects them to a descriptor.
:class:`VirtualHeadset` sends the packets due every ``burst_ms`` to a
non-blocking socket (the pod's ``headset.sock`` connection, or one end of a
socketpair in tests) or a pty master (:class:`HeadsetPty`, for third-party
Cyton readers such as BrainFlow). A connection may be swapped (the pod
rebooted and reconnected); the headset keeps its state, as the real board
keeps streaming while the ESP32 resets.

Packets are paced by the monotonic clock: the number sent is always
``floor(elapsed * rate) + 1``, so there is no drift whatever the burst timing.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .cyton_protocol import (  # noqa: F401  (re-exported: the headset's public names)
    BANNER,
    BANNER_DAISY,
    DEFAULT_GAIN,
    DEFAULTS_REPLY,
    G_PER_COUNT,
    HEADER,
    PACKET_SIZE,
    Cyton,
    HeadsetStats,
    uv_per_count,
)
from .ptys import linked_pty
from .signals import Participant  # noqa: F401

SAMPLE_RATE_HZ = 250
CHANNELS = 8
GAIN = DEFAULT_GAIN
UV_PER_COUNT = uv_per_count(GAIN)  # µV per ADC count at the default gain
FOOTER_ACCEL = 0xC0


class _FdConn:
    """A pty master (or any non-blocking fd) with the socket calls the headset uses."""

    def __init__(self, fd: int):
        self.fd = fd

    def fileno(self) -> int:
        return self.fd

    def recv(self, n: int) -> bytes:
        return os.read(self.fd, n)

    def send(self, data: bytes) -> int:
        return os.write(self.fd, data)

    def close(self) -> None:
        pass  # the owner (HeadsetPty) closes the pty

    def setblocking(self, flag: bool) -> None:
        os.set_blocking(self.fd, flag)


class VirtualHeadset:
    """A :class:`Cyton` serving a non-blocking socket from the running event loop.

    Writes never block and never queue: what the socket does not take is
    dropped and counted, as UART bytes are lost when nobody drains the FIFO.
    """

    def __init__(self, seed: int = 0, burst_ms: int = 20, clock: Callable[[], float] = time.monotonic, **cyton_kwargs):
        self.cyton = Cyton(seed, clock, **cyton_kwargs)
        self.burst_s = burst_ms / 1000
        self._sock: socket.socket | None = None
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.received = bytearray()  # every command byte, for tests (bounded)

    @property
    def stats(self) -> HeadsetStats:
        return self.cyton.stats

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._task is None:
            self._task = asyncio.create_task(self._stream(), name="headset-stream")

    def attach(self, sock: socket.socket | _FdConn) -> None:
        """Serve ``sock`` (replacing any previous connection)."""
        self.start()
        self.detach()
        sock.setblocking(False)
        self._sock = sock
        self.cyton.stats.connections += 1
        self._loop.add_reader(sock.fileno(), self._on_readable)

    def detach(self) -> None:
        if self._sock is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self.detach()

    def _on_readable(self) -> None:
        try:
            data = self._sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.detach()  # peer gone (pod rebooting)
            return
        if len(self.received) > 65536:
            del self.received[:32768]
        self.received += data
        reply = self.cyton.receive(data)
        if reply:
            self._send(reply)

    def _send(self, data: bytes) -> int:
        sock = self._sock
        if sock is None:
            self.cyton.stats.bytes_dropped += len(data)
            return 0
        try:
            n = sock.send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            self.detach()
            n = 0
        if n < len(data):
            self.cyton.stats.bytes_dropped += len(data) - n
        return n

    async def _stream(self) -> None:
        cyton = self.cyton
        clock = cyton.clock
        while True:
            await asyncio.sleep(self.burst_s)
            data = cyton.packets_until(clock())
            if data:
                n = self._send(data)
                if n < len(data):
                    cyton.stats.packets_dropped += (len(data) - n) // PACKET_SIZE


def parse_packets(data: bytes) -> np.ndarray:
    """Whole stream packets -> structured fields, for tests and tools.

    Returns an array of records with ``counter`` (u8), ``counts`` (int32 ×
    channels), ``accel`` (int16 × 3) and ``footer``. Raises ValueError if the
    bytes are not whole, well-framed packets.
    """
    if len(data) % PACKET_SIZE:
        raise ValueError(f"{len(data)} bytes is not a whole number of {PACKET_SIZE}-byte packets")
    pk = np.frombuffer(data, dtype=np.uint8).reshape(-1, PACKET_SIZE)
    if (pk[:, 0] != HEADER).any() or ((pk[:, 32] & 0xF0) != 0xC0).any():
        raise ValueError("bad packet header or footer")
    raw = pk[:, 2:26].reshape(-1, CHANNELS, 3).astype(np.int32)
    counts = (raw[..., 0] << 16) | (raw[..., 1] << 8) | raw[..., 2]
    counts = np.where(counts & 0x800000, counts - (1 << 24), counts)
    accel = pk[:, 26:32].copy().view(">i2").astype(np.int16)
    out = np.zeros(len(pk), dtype=[("counter", "u1"), ("counts", "i4", CHANNELS), ("accel", "i2", 3), ("footer", "u1")])
    out["counter"] = pk[:, 1]
    out["counts"] = counts
    out["accel"] = accel
    out["footer"] = pk[:, 32]
    return out


class HeadsetPty:
    """A virtual headset of its own on a pty, as a USB dongle appears: ``/dev/pts/N``.

    The stable path is the symlink ``link`` (re-pointed atomically). The pty
    slave is in raw mode and one slave fd stays open here, so the master
    never reads EIO while no reader has the port open.
    """

    def __init__(self, link: str | os.PathLike, seed: int = 0, **headset_kwargs):
        self.link = Path(link)
        self.headset = VirtualHeadset(seed=seed, **headset_kwargs)
        self._master = self._slave = -1
        self.pts_path: str | None = None

    @property
    def cyton(self) -> Cyton:
        return self.headset.cyton

    def open(self) -> str:
        self._master, self._slave, self.pts_path = linked_pty(self.link)
        self.headset.attach(_FdConn(self._master))
        return self.pts_path

    async def close(self) -> None:
        await self.headset.stop()
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()
        for fd in (self._master, self._slave):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = -1
