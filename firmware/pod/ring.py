"""Store and forward: the last seconds of samples, and replaying them on request.

SampleRing keeps every sample the headset delivered in one preallocated
buffer, slot = seq % capacity, beside the slot's sequence number (its low 30
bits, so the array holds small ints on the ESP32) and pod time. A slot whose
stored sequence differs from the one asked for no longer holds it (or never
did: a sample lost before the pod saw it). The band-power task reads its
window from here too, so the samples are held once.

The budget is bytes, not samples: 24 KiB holds 1024 samples of 8 channels
(4.1 s at 250 Hz) or 512 of 16 (4.1 s at 125 Hz) — twice the 2 s a 1 s
unplug needs, so the host has time to notice and ask.

Replayer answers EEG_REPLAY(from_seq, count): ACK when the whole range is
still held or newer than the oldest held sample, then EEG_BATCH frames flagged
EEG_FLAG_REPLAY (and GAP_BEFORE after a sample the pod never had), paced so
the live stream and the link keep up; NACK unavailable when the range starts
before the oldest sample held, bad_param for an empty or oversized range,
busy while an earlier replay is still going.
"""
import array
import asyncio

import micropython
from micropython import const

from pod import wire
from pod.mem import copy as _copy  # no allocation per sample

BUDGET_BYTES = const(24576)
_MASK30 = const(0x3FFFFFFF)
_SEQ_MASK = const(0xFFFFFFFF)
_HDR = const(4)  # wire.HEADER_SIZE
_FIXED = const(10)  # eeg_batch fixed part
_REPLAY_PAYLOAD = const(960)  # sample bytes per replayed frame: 40 x 8 ch, 20 x 16 ch
_PACE_MS = const(5)  # between replayed frames: the live stream interleaves
_BACKLOG_WAIT_MS = const(20)



class SampleRing:
    def __init__(self, channels, sample_rate_hz, budget_bytes=BUDGET_BYTES):
        self.channels = channels
        self.sample_bytes = sb = channels * 3
        self.capacity = cap = budget_bytes // sb
        self.period_us = 1000000 // sample_rate_hz
        self.data = bytearray(cap * sb)
        self.seq30 = array.array("i", (-1 for _ in range(cap)))  # -1: never filled
        self.ticks = array.array("i", (0 for _ in range(cap)))
        self.newest = 0  # seq of the newest sample
        self.held = 0  # samples put, up to capacity
        self.puts = 0

    def put(self, first_seq, ticks_ms, samples, nbytes):
        """Store a batch; called by the parser for every batch (no allocation)."""
        sb = self.sample_bytes
        cap = self.capacity
        n = nbytes // sb
        seq30 = self.seq30
        ticks = self.ticks
        data = self.data
        per = self.period_us
        slot = first_seq % cap
        s30 = first_seq & _MASK30
        i = 0
        while i < n:
            _copy(data, slot * sb, samples, i * sb, sb)
            seq30[slot] = (s30 + i) & _MASK30
            ticks[slot] = (ticks_ms + (i * per) // 1000) & _MASK30  # pod ticks wrap at 2**30
            slot += 1
            if slot == cap:
                slot = 0
            i += 1
        last = (first_seq + n - 1) & _SEQ_MASK
        if self.held == 0 or ((last - self.newest) & _SEQ_MASK) < 0x80000000:
            self.newest = last
        self.held = min(self.held + n, cap)
        self.puts += 1

    def has(self, seq):
        return self.seq30[seq % self.capacity] == seq & _MASK30

    def oldest(self):
        """Oldest sequence number the ring can still hold (held or lost before the pod saw it)."""
        return (self.newest - self.held + 1) & _SEQ_MASK

    def slot(self, seq):
        return seq % self.capacity


class Replayer:
    """Queues one EEG_REPLAY at a time and sends it from its own task."""

    def __init__(self, link, ring):
        self.link = link
        self.ring = ring
        self._from = 0
        self._left = 0
        self._wake = asyncio.Event()
        self.replays = 0
        self.replayed_samples = 0
        self.refused = 0
        sb = ring.sample_bytes
        self.per_frame = _REPLAY_PAYLOAD // sb

    def request(self, from_seq, count):
        """0 (ACK: queued) or a wire.NACK_REASON_*; the link answers before any frame is sent."""
        ring = self.ring
        if count == 0 or count > ring.capacity:
            self.refused += 1
            return wire.NACK_REASON_BAD_PARAM
        if self._left:
            self.refused += 1
            return wire.NACK_REASON_BUSY
        if ring.held == 0 or ((from_seq - ring.oldest()) & _SEQ_MASK) >= 0x80000000:
            self.refused += 1
            return wire.NACK_REASON_UNAVAILABLE  # starts before what the ring holds
        ahead = (ring.newest - from_seq) & _SEQ_MASK
        if ahead >= 0x80000000:
            self.refused += 1
            return wire.NACK_REASON_UNAVAILABLE  # not recorded yet
        if count > ahead + 1:
            count = ahead + 1  # the rest has not happened yet: it comes live
        self._from = from_seq
        self._left = count
        self.replays += 1
        self._wake.set()
        return 0

    def _send_frame(self):
        """Pack and send the next run of held, consecutive samples; skips what is gone."""
        ring = self.ring
        link = self.link
        sb = ring.sample_bytes
        seq = self._from
        left = self._left
        flags = wire.EEG_FLAG_REPLAY
        while left and not ring.has(seq):
            seq = (seq + 1) & _SEQ_MASK  # never held (lost before the pod) or overwritten
            left -= 1
            flags = wire.EEG_FLAG_REPLAY | wire.EEG_FLAG_GAP_BEFORE
        if not left:
            self._left = 0
            return
        first = seq
        body = link.body
        off = _HDR + _FIXED
        n = 0
        per = self.per_frame
        data = ring.data
        while n < per and left and ring.has(seq):
            _copy(body, off, data, ring.slot(seq) * sb, sb)
            off += sb
            n += 1
            left -= 1
            seq = (seq + 1) & _SEQ_MASK
        ticks = ring.ticks[ring.slot(first)]
        end = wire.pack_eeg_batch(body, _HDR, first, ticks, ring.channels, flags, n * sb)
        link.send(wire.T_EEG_BATCH, end)
        self._from = seq
        self._left = left
        self.replayed_samples += n

    async def run(self):
        wake = self._wake
        link = self.link
        while True:
            await wake.wait()
            wake.clear()
            while self._left:
                if link.backlogged():
                    await asyncio.sleep_ms(_BACKLOG_WAIT_MS)
                    continue
                self._send_frame()
                await asyncio.sleep_ms(_PACE_MS)
