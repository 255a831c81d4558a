"""A protocol-level EEG client for one pod: the host side of store and forward, minimal.

It opens the pod's port (the stable pty symlink), says CONNECT, and collects
EEG_BATCH frames. A batch whose first_seq jumps past the next expected
sample is a gap: the client asks EEG_REPLAY for the missing range, in pieces
the pod's ring can hold, and marks what arrives flagged REPLAY. When the
port vanishes (unplugged) it waits for it to come back and reopens it.

Used by the store-and-forward tests and bench/eeg_soak.py, so the count of
lost samples comes from the wire, not from the pod's own counters.
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import time
import tty
from dataclasses import dataclass, field
from pathlib import Path

from hypnolum.protocol import codec
from hypnolum.protocol.messages import EEG_FLAG_GAP_BEFORE, EEG_FLAG_REPLAY

_REPLAY_MAX = 512  # samples per EEG_REPLAY: inside the pod's ring with 8 or 16 channels
_RETRY_S = 0.05  # after NACK busy (the pod replays one range at a time)


@dataclass
class EegClientStats:
    batches: int = 0
    replay_batches: int = 0
    samples_live: int = 0
    samples_replayed: int = 0
    duplicates: int = 0
    mismatches: int = 0  # a sample seen twice with different bytes
    gaps_seen: int = 0  # jumps in first_seq
    gap_flags: int = 0  # batches flagged GAP_BEFORE by the pod
    replays_asked: int = 0
    acks: int = 0
    nacks: list[str] = field(default_factory=list)
    reopens: int = 0
    bytes_in: int = 0
    bands: int = 0


class EegClient:
    def __init__(self, port: str | os.PathLike, *, keep_samples: bool = False, ask_replay: bool = True):
        self.port = Path(port)
        self.keep_samples = keep_samples
        self.ask_replay = ask_replay
        self.stats = EegClientStats()
        self.received: set[int] = set()  # sample sequence numbers seen
        self._missing: set[int] = set()  # holes between the first and the newest live sample
        self.samples: dict[int, bytes] = {}  # seq -> raw sample bytes, when keep_samples
        self.channels = 0
        self.first: int | None = None
        self.next_expected: int | None = None
        self.hello: dict | None = None
        self.last_bands: dict | None = None
        self.logs: list[tuple[str, str]] = []
        self._fd = -1
        self._decoder = codec.FrameDecoder()
        self._seq = 0
        self._pending: dict[int, tuple[int, int]] = {}  # command seq -> (from, count)
        self._pending_t = 0.0
        self._queue: list[tuple[int, int]] = []  # ranges still to ask for
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed = asyncio.Event()

    # -- lifecycle -----------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._keep_open(), name=f"eeg-client-{self.port.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._close()

    async def wait_for(self, pred, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.port.name}: condition not met within {timeout} s; {self.stats}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, 0.2)):
                    await self._changed.wait()

    def lost(self, upto: int | None = None) -> int:
        """Samples missing between the first one seen and ``upto`` (default: the newest seen)."""
        if self.first is None:
            return 0
        newest = self.next_expected - 1
        last = newest if upto is None else upto
        lost = sum(1 for s in self._missing if s <= last)
        return lost + sum(1 for s in range(newest + 1, last + 1) if s not in self.received)

    # -- port ------------------------------------------------------------------
    async def _keep_open(self) -> None:
        while True:
            if self._fd < 0:
                try:
                    fd = os.open(self.port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
                except OSError:
                    await asyncio.sleep(0.02)  # unplugged: the symlink is gone
                    continue
                tty.setraw(fd)
                self._fd = fd
                self.stats.reopens += 1
                self._loop.add_reader(fd, self._on_readable)
                self._send("connect", {"protocol_version": codec.PROTOCOL_VERSION,
                                       "fingerprint": codec.FINGERPRINT, "host_id": "eeg-client"})
            if self._pending and time.monotonic() - self._pending_t > 1.0:
                self._queue[:0] = list(self._pending.values())  # no answer (lost with a pulled cable)
                self._pending.clear()
            self._next_request()
            await asyncio.sleep(_RETRY_S)

    def _close(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(self._fd)
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
            self._decoder = codec.FrameDecoder()

    def _send(self, name: str, fields: dict) -> int:
        self._seq = (self._seq + 1) & 0xFFFF
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.write(self._fd, codec.encode(name, self._seq, fields))
        return self._seq

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, 65536)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno in (errno.EIO, errno.EBADF):
                self._close()  # the cable was pulled
                return
            raise
        if not data:
            self._close()
            return
        self.stats.bytes_in += len(data)
        for frame in self._decoder.feed(data):
            self._on_frame(frame)
        self._changed.set()

    # -- protocol ------------------------------------------------------------
    def _on_frame(self, frame: codec.Frame) -> None:
        f = frame.fields
        if frame.name == "eeg_batch":
            self._on_batch(f)
        elif frame.name == "eeg_bands":
            self.stats.bands += 1
            self.last_bands = f
        elif frame.name == "hello":
            self.hello = f
        elif frame.name == "log":
            self.logs.append((str(f["level"]), f["text"]))
        elif frame.name == "ack" and f["ack_seq"] in self._pending:
            self._pending.pop(f["ack_seq"])
            self.stats.acks += 1
        elif frame.name == "nack" and f["ack_seq"] in self._pending:
            rng = self._pending.pop(f["ack_seq"])
            if str(f["reason"]) == "busy":
                self._queue.insert(0, rng)  # one range at a time: ask again shortly
            else:
                self.stats.nacks.append(str(f["reason"]))

    def _on_batch(self, f: dict) -> None:
        ch = f["channels"]
        self.channels = ch
        sb = 3 * ch
        samples = f["samples"]
        n = len(samples) // sb
        first = f["first_seq"]
        replay = bool(f["flags"] & EEG_FLAG_REPLAY)
        if f["flags"] & EEG_FLAG_GAP_BEFORE:
            self.stats.gap_flags += 1
        self.stats.batches += 1
        if replay:
            self.stats.replay_batches += 1
        for i in range(n):
            seq = first + i
            if seq in self.received:
                self.stats.duplicates += 1
                if self.keep_samples and self.samples[seq] != bytes(samples[i * sb : (i + 1) * sb]):
                    self.stats.mismatches += 1
                continue
            self.received.add(seq)
            self._missing.discard(seq)
            if self.keep_samples:
                self.samples[seq] = bytes(samples[i * sb : (i + 1) * sb])
            if replay:
                self.stats.samples_replayed += 1
            else:
                self.stats.samples_live += 1
        if replay:
            return
        if self.first is None:
            self.first = first
            self.next_expected = first
        if first > self.next_expected:
            self._missing.update(s for s in range(self.next_expected, first) if s not in self.received)
            self.stats.gaps_seen += 1
            if self.ask_replay:
                self._ask(self.next_expected, first - self.next_expected)
        self.next_expected = max(self.next_expected, first + n)

    def _ask(self, start: int, count: int) -> None:
        while count > 0:
            k = min(count, _REPLAY_MAX)
            self._queue.append((start, k))
            start += k
            count -= k
        self._next_request()

    def _next_request(self) -> None:
        if self._queue and not self._pending and self._fd >= 0:
            start, k = self._queue.pop(0)
            seq = self._send("eeg_replay", {"from_seq": start, "count": k})
            self._pending[seq] = (start, k)
            self._pending_t = time.monotonic()
            self.stats.replays_asked += 1
