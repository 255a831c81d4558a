"""A fake pod speaking the real wire protocol on a real pty pair.

hostd opens the pty slave (through a symlink, as it does the emulator's), so
the whole serial path is exercised. The fake runs in the test's event loop.
"""
from __future__ import annotations

import asyncio
import collections
import os
import struct
import tty
import zlib
from pathlib import Path

from cobs import cobs

from hypnolum.protocol import codec, messages
from hypnolum.protocol.messages import EEG_FLAG_REPLAY


class FakePod:
    def __init__(self, link: Path, pod_id: str = "pod-a", *, fingerprint: int = codec.FINGERPRINT,
                 boot_id: int = 0x1234, channels: int = 8, status_period_s: float = 0.2,
                 eeg_period_s: float = 0.05, batch: int = 5, ring_samples: int = 1000,
                 bands_period_s: float = 0.25):
        self.link = Path(link)
        self.pod_id = pod_id
        self.fingerprint = fingerprint
        self.table: bytes | None = None  # HELLO's message table as sent, even a malformed one; None: none
        self.boot_id = boot_id
        self.channels = channels
        self.status_period_s = status_period_s
        self.eeg_period_s = eeg_period_s
        self.batch = batch
        self.received: list[codec.Frame] = []
        self.scenes: list[tuple[int, dict]] = []  # (seq, fields) as received, duplicates included
        self.drop_commands = 0  # ignore this many command frames (to force re-sends)
        self.nack_effects: dict[str, str] = {}  # effect -> nack reason
        self.silent = False  # stop answering and sending altogether
        self.eeg_skip = 0  # skip this many sample numbers before the next batch
        self.eeg_lose = 0  # acquire the next this many batches but do not send them (they stay in the ring)
        # store and forward: the newest samples, (seq, 3*channels bytes) each, as the firmware keeps them
        self.ring: collections.deque = collections.deque(maxlen=ring_samples)
        self.replays: list[tuple[int, int, str]] = []  # (from_seq, count, "ack" | "unavailable")
        self.bands_period_s = bands_period_s
        self.railed = 0  # railed / near_railed bitmasks sent in eeg_bands
        self.near_railed = 0
        self.bands_sent = 0
        self.keep_sampling = False  # unplug(keep_sampling=True): acquisition goes on, as on a real pod
        self._eeg_task: asyncio.Task | None = None
        self.connected = asyncio.Event()
        self._decoder = codec.FrameDecoder()
        self._seq = 0
        self._sample = 0
        self._master = self._slave = -1
        self._tasks: list[asyncio.Task] = []

    # -- plugging ---------------------------------------------------------
    def plug(self) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        tmp = self.link.with_name(self.link.name + ".new")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.ttyname(self._slave))
        tmp.replace(self.link)  # atomic, as udev would do it
        asyncio.get_running_loop().add_reader(self._master, self._on_readable)

    def unplug(self, keep_sampling: bool = False) -> None:
        """Pull the cable; with ``keep_sampling`` the pod goes on acquiring into its ring."""
        for t in self._tasks:
            t.cancel()
        self._tasks.clear()
        self.keep_sampling = keep_sampling
        if not keep_sampling and self._eeg_task is not None:
            self._eeg_task.cancel()
            self._eeg_task = None
        self.connected.clear()
        if self._master >= 0:
            asyncio.get_running_loop().remove_reader(self._master)
            os.close(self._master)
            os.close(self._slave)
            self._master = self._slave = -1
        self.link.unlink(missing_ok=True)

    # -- wire -----------------------------------------------------------------
    def send(self, name: str, fields: dict) -> None:
        if self._master < 0 or self.silent:
            return
        frame = codec.encode(name, self._seq, fields)
        self._seq = (self._seq + 1) & 0xFFFF
        try:
            os.write(self._master, frame)
        except BlockingIOError:
            pass  # nobody reads the port: the bytes are lost, as on a UART

    def send_raw(self, data: bytes) -> None:
        os.write(self._master, data)

    def hello(self) -> None:
        fields = {
            "pod_id": self.pod_id, "fw_version": "fake-1.0", "protocol_version": codec.PROTOCOL_VERSION,
            "fingerprint": self.fingerprint, "build_hash": 0, "boot_id": self.boot_id, "led_count": 16,
            "eeg_channels": self.channels, "sample_rate_hz": 250,
        }
        if self.table is None:
            self.send("hello", fields)
            return
        # built by the definition alone: a table the host codec would refuse to build goes out too
        body = struct.pack("<BBH", codec.PROTOCOL_VERSION, codec.BY_NAME["hello"].type_id, self._seq)
        body += messages.Hello.build({**fields, "table": self.table})
        self._seq = (self._seq + 1) & 0xFFFF
        self.send_raw(cobs.encode(body + struct.pack("<I", zlib.crc32(body))) + b"\x00")

    def _on_readable(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except OSError:
            return
        for frame in self._decoder.feed(data):
            self.received.append(frame)
            if not self.silent:
                self._handle(frame)

    def _handle(self, frame: codec.Frame) -> None:
        if frame.name == "connect":
            self.hello()
            if not self.connected.is_set() and self.fingerprint == codec.FINGERPRINT:
                self.connected.set()
                loop = asyncio.get_running_loop()
                self._tasks += [loop.create_task(self._status_loop()), loop.create_task(self._bands_loop())]
                if self._eeg_task is None:
                    self._eeg_task = loop.create_task(self._eeg_loop())
        elif frame.name == "ping":
            f = frame.fields
            self.send("pong", {"nonce": f["nonce"], "host_time_us": f["host_time_us"], "pod_rx_us": 1, "pod_tx_us": 2})
        elif frame.name == "scene":
            self.scenes.append((frame.seq, frame.fields))
            if self.drop_commands:
                self.drop_commands -= 1
                return
            reason = self.nack_effects.get(frame.fields["effect"])
            if reason:
                self.send("nack", {"ack_seq": frame.seq, "reason": reason})
            else:
                self.send("ack", {"ack_seq": frame.seq})
        elif frame.name == "eeg_replay":
            self._replay(frame.seq, frame.fields["from_seq"], frame.fields["count"])

    def _replay(self, ack_seq: int, from_seq: int, count: int) -> None:
        held = {seq: data for seq, data in self.ring}
        wanted = range(from_seq, from_seq + count)
        if count == 0 or any(seq not in held for seq in wanted):
            self.replays.append((from_seq, count, "unavailable"))
            self.send("nack", {"ack_seq": ack_seq, "reason": "unavailable"})
            return
        self.replays.append((from_seq, count, "ack"))
        self.send("ack", {"ack_seq": ack_seq})
        per_frame = 800 // (3 * self.channels)
        for start in range(from_seq, from_seq + count, per_frame):
            n = min(per_frame, from_seq + count - start)
            self.send("eeg_batch", {"first_seq": start, "ticks_ms": start * 4, "channels": self.channels,
                                    "flags": EEG_FLAG_REPLAY, "samples": b"".join(held[s] for s in range(start, start + n))})

    async def _bands_loop(self) -> None:
        while True:
            await asyncio.sleep(self.bands_period_s)
            self.send("eeg_bands", {
                "last_seq": max(self._sample - 1, 0), "ticks_ms": self._sample * 4, "channels": self.channels,
                "window_ms": 1000, "railed": self.railed, "near_railed": self.near_railed,
                "powers": [band_power(ch, b) for ch in range(self.channels) for b in range(5)],
            })
            self.bands_sent += 1

    async def _status_loop(self) -> None:
        uptime = 0
        while True:
            self.send("status", {
                "uptime_ms": uptime, "ticks_ms": uptime, "rx_frames": len(self.received), "rx_errors": 0,
                "tx_frames": self._seq, "eeg_samples": self._sample, "eeg_gaps": 0, "eeg_dropped": 0,
                "frames_rendered": 0, "render_overruns": 0, "mem_free": 50000, "effect": "solid", "brightness": 100,
            })
            await asyncio.sleep(self.status_period_s)
            uptime += int(self.status_period_s * 1000)

    async def _eeg_loop(self) -> None:
        while True:
            self._sample += self.eeg_skip
            self.eeg_skip = 0
            first = self._sample
            rows = [b"".join(struct.pack(">i", ((first + i) * 100 + ch - 400) & 0xFFFFFF)[1:]
                             for ch in range(self.channels)) for i in range(self.batch)]
            self.ring.extend((first + i, row) for i, row in enumerate(rows))
            self._sample += self.batch
            if self.eeg_lose:
                self.eeg_lose -= 1
            else:
                self.send("eeg_batch", {"first_seq": first, "ticks_ms": first * 4, "channels": self.channels,
                                        "flags": 0, "samples": b"".join(rows)})
            await asyncio.sleep(self.eeg_period_s)

    @property
    def samples_made(self) -> int:
        return self._sample

    def stop_eeg(self) -> None:
        """Stop acquiring (the link stays up): ``samples_made`` is then final."""
        if self._eeg_task is not None:
            self._eeg_task.cancel()
            self._eeg_task = None

    def close(self) -> None:
        """Unplug and stop acquiring."""
        self.unplug()


def band_power(ch: int, band: int) -> float:
    """The power the fake reports for channel ch, band b (exact in float32)."""
    return ch * 10.0 + band + 0.5


def expected_counts(first: int, i: int, ch: int) -> int:
    """The count the fake sends for sample first+i, channel ch (signed 24-bit)."""
    v = ((first + i) * 100 + ch - 400) & 0xFFFFFF
    return v - (1 << 24) if v & 0x800000 else v
