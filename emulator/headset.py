"""A virtual OpenBCI Cyton on a byte stream.

Two layers, so the protocol can grow without touching the I/O:

* :class:`Cyton` is sans-I/O: ``receive(data) -> reply bytes`` runs the
  command table, ``packets_until(now_s) -> bytes`` returns the stream packets
  due by a monotonic time. Commands are a table of one-byte keys to handlers,
  so the protocol-exact version adds rows (channel settings ``x...X``, SD,
  sample rate ``~``) rather than branches.
* :class:`VirtualHeadset` drives a ``Cyton`` on a connected non-blocking
  socket (the pod's ``headset.sock`` connection, or one end of a socketpair
  in tests), sending the packets due every ``burst_ms``. A connection may be
  swapped (the pod rebooted and reconnected); the headset keeps its state,
  as the real board keeps streaming while the ESP32 resets.

Stream packet (33 bytes): ``0xA0``, sample counter (u8), 8 channels of 24-bit
big-endian two's complement, 6 aux bytes (accelerometer X, Y, Z as int16
big-endian), footer ``0xC0``. 250 Hz, paced by the monotonic clock: the
number of packets sent is always ``floor(elapsed * 250) + 1``, so there is
no drift whatever the burst timing.

The signal is deterministic for a seed: a 10 Hz alpha rhythm (~20 µV, its
phase and amplitude varying per channel) plus Gaussian noise, generated a
256-sample block at a time with numpy (the counter then equals the index in
the block).
"""
from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE_HZ = 250
CHANNELS = 8
PACKET_SIZE = 33
HEADER = 0xA0
FOOTER_ACCEL = 0xC0
GAIN = 24
# µV per ADC count at the default gain (4.5 V reference, 24-bit ADC)
UV_PER_COUNT = 4.5 / (2**23 - 1) / GAIN * 1e6
G_PER_COUNT = 0.000125  # accelerometer

BANNER = (
    b"OpenBCI V3 8-16 channel\n"
    b"On Board ADS1299 Device ID: 0x3E\n"
    b"LIS3DH Device ID: 0x33\n"
    b"Firmware: v3.1.2\n"
    b"$$$"
)
DEFAULTS_REPLY = b"updating channel settings to default$$$"

_BLOCK = 256  # samples per generated block: one full turn of the u8 counter
_ALPHA_HZ = 10.0
_ALPHA_UV = 20.0
_NOISE_UV = 4.0
_ACCEL = (0, 0, int(round(1.0 / G_PER_COUNT)))  # at rest, 1 g on Z


@dataclass
class HeadsetStats:
    commands: int = 0
    unknown_commands: int = 0
    packets: int = 0  # packets generated while streaming
    packets_dropped: int = 0  # generated but not delivered (no reader, full buffer)
    bytes_dropped: int = 0
    connections: int = 0


class SignalSource:
    """Deterministic synthetic EEG: ready-made packets, one 256-sample block at a time."""

    def __init__(self, seed: int, channels: int = CHANNELS, sample_rate_hz: int = SAMPLE_RATE_HZ):
        self.channels = channels
        self.sample_rate_hz = sample_rate_hz
        self._rng = np.random.default_rng(seed)
        self._phase = self._rng.uniform(0, 2 * np.pi, channels)
        self._amp = _ALPHA_UV * self._rng.uniform(0.7, 1.3, channels)
        self._n = 0  # samples generated so far
        # packet template: header, counter, channels, accel, footer
        tpl = np.zeros((_BLOCK, PACKET_SIZE), dtype=np.uint8)
        tpl[:, 0] = HEADER
        tpl[:, 1] = np.arange(_BLOCK, dtype=np.uint8)
        accel = np.array(_ACCEL, dtype=">i2").view(np.uint8)
        tpl[:, 26:32] = accel
        tpl[:, 32] = FOOTER_ACCEL
        self._template = tpl

    def uv_block(self) -> np.ndarray:
        """The next block as (256, channels) float µV."""
        t = (self._n + np.arange(_BLOCK)) / self.sample_rate_hz
        alpha = self._amp * np.sin(2 * np.pi * _ALPHA_HZ * t[:, None] + self._phase)
        noise = self._rng.normal(0.0, _NOISE_UV, (_BLOCK, self.channels))
        self._n += _BLOCK
        return alpha + noise

    def packet_block(self) -> bytes:
        """256 packets, counters 0..255."""
        counts = np.rint(self.uv_block() / UV_PER_COUNT).astype(np.int64)
        counts = np.clip(counts, -(2**23), 2**23 - 1) & 0xFFFFFF
        pk = self._template.copy()
        be = counts.astype(">u4").view(np.uint8).reshape(_BLOCK, self.channels, 4)[:, :, 1:]
        pk[:, 2 : 2 + 3 * self.channels] = be.reshape(_BLOCK, 3 * self.channels)
        return pk.tobytes()


class Cyton:
    """The board's protocol state machine, without I/O.

    ``receive`` takes command bytes and returns the reply bytes;
    ``packets_until(now_s)`` returns the stream bytes due by ``now_s``.
    """

    def __init__(self, seed: int = 0, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.seed = seed
        self.stats = HeadsetStats()
        self.streaming = False
        self.gain = GAIN
        self._signal = SignalSource(seed)
        self._block = b""
        self._block_pos = 0  # packets of _block already handed out
        self._t0 = 0.0
        self._sent = 0  # packets since stream start
        # one-byte commands; the handler returns the reply
        self.commands: dict[int, Callable[[], bytes]] = {
            ord("v"): self._cmd_soft_reset,
            ord("d"): self._cmd_defaults,
            ord("b"): self._cmd_start,
            ord("s"): self._cmd_stop,
        }

    # -- commands -------------------------------------------------------
    def receive(self, data: bytes) -> bytes:
        out = bytearray()
        for byte in data:
            handler = self.commands.get(byte)
            if handler is None:
                if byte not in b"\r\n ":
                    self.stats.unknown_commands += 1
                continue
            self.stats.commands += 1
            out += handler()
        return bytes(out)

    def _cmd_soft_reset(self) -> bytes:
        self.streaming = False
        self.gain = GAIN
        return BANNER

    def _cmd_defaults(self) -> bytes:
        self.gain = GAIN
        return DEFAULTS_REPLY

    def _cmd_start(self) -> bytes:
        if not self.streaming:
            self.streaming = True
            self._t0 = self.clock()
            self._sent = 0
            self._block = b""  # counter restarts at 0
            self._block_pos = 0
        return b""

    def _cmd_stop(self) -> bytes:
        self.streaming = False
        return b""

    # -- stream ---------------------------------------------------------
    def packets_due(self, now_s: float) -> int:
        if not self.streaming:
            return 0
        due = int((now_s - self._t0) * SAMPLE_RATE_HZ) + 1
        return max(0, due - self._sent)

    def packets_until(self, now_s: float) -> bytes:
        n = self.packets_due(now_s)
        if n == 0:
            return b""
        parts = []
        while n:
            if self._block_pos == _BLOCK or not self._block:
                self._block = self._signal.packet_block()
                self._block_pos = 0
            take = min(n, _BLOCK - self._block_pos)
            a = self._block_pos * PACKET_SIZE
            parts.append(self._block[a : a + take * PACKET_SIZE])
            self._block_pos += take
            self._sent += take
            self.stats.packets += take
            n -= take
        return b"".join(parts)


class VirtualHeadset:
    """A :class:`Cyton` serving a non-blocking socket from the running event loop.

    Writes never block and never queue: what the socket does not take is
    dropped and counted, as UART bytes are lost when nobody drains the FIFO.
    """

    def __init__(self, seed: int = 0, burst_ms: int = 20, clock: Callable[[], float] = time.monotonic):
        self.cyton = Cyton(seed, clock)
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

    def attach(self, sock: socket.socket) -> None:
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
