"""Store and forward: the last seconds of samples, and replaying them on request.

SampleRing keeps every sample the headset delivered in one preallocated
buffer of raw 24-bit samples, addressed relative to the newest one (so any
capacity works across the sequence wrap), with 2 bytes per slot beside it:
bit 15 "holds a sample", bits 0-14 the pod's ticks_ms (the full instant is
rebuilt from the newest sample's: the ring spans seconds, 15 bits 32 s). A
sample lost before the pod saw it leaves its slot empty. The band-power task
reads its window from here too, so the samples are held once.

Sequence numbers are the low 30 bits (small ints on the board) plus newest_hi,
the two bits above the newest's: every comparison is modulo 2**30.

The budget is bytes, not samples: 24 KiB holds 1024 samples of 8 channels
(4.1 s at 250 Hz) or 512 of 16 (4.1 s at 125 Hz) — twice the 2 s a 1 s
unplug needs, so the host has time to notice and ask. Per slot it costs 2
bytes more (it was 8: a sequence and a tick word): 26.6 KB in all, was 32.8.

Replayer answers EEG_REPLAY(from_seq, count): ACK when the whole range is
still held or newer than the oldest held sample, then EEG_BATCH frames flagged
EEG_FLAG_REPLAY (and GAP_BEFORE after a sample the pod never had), paced so
the live stream and the link keep up; NACK unavailable when the range starts
before the oldest sample held, bad_param for an empty or oversized range,
busy while an earlier replay is still going.
"""
import asyncio

import micropython
from micropython import const

from pod import refusal, wire
from pod.mem import copy as _copy  # no allocation per sample

BUDGET_BYTES = const(24576)
_MASK30 = const(0x3FFFFFFF)
_HALF30 = const(0x20000000)  # a sequence difference mod 2**30 below this is "after"
_HELD = const(0x8000)  # slot flag: holds a sample
_TICKS15 = const(0x7FFF)
# wire layout (values generated from protocol/messages.py by `make codec`)
_HDR = const(4)  # HEADER_SIZE
_FIXED = const(10)  # eeg_batch.samples
# end of wire layout
_REPLAY_PAYLOAD = const(960)  # sample bytes per replayed frame: 40 x 8 ch, 20 x 16 ch
_PACE_MS = const(5)  # between replayed frames: the live stream interleaves
_BACKLOG_WAIT_MS = const(20)


@micropython.viper
def _clear(meta, cap: int, slot: int, n: int):
    # mark n slots from slot (wrapping) empty
    m = ptr16(meta)
    i = 0
    while i < n:
        m[slot] = 0
        slot += 1
        if slot == cap:
            slot = 0
        i += 1


@micropython.viper
def _store(data, meta, cap: int, sb: int, slot: int, samples, n: int, ticks_ms: int, per: int) -> int:
    # n samples of sb bytes into slots slot.. (wrapping at cap), each marked held with
    # its ticks_ms (sample i at ticks_ms + i x per / 1000); returns the last one's ticks_ms
    d = ptr8(data)
    m = ptr8(meta)
    s = ptr8(samples)
    t = ticks_ms
    src = 0
    i = 0
    while i < n:
        dst = slot * sb
        k = 0
        while k < sb:
            d[dst + k] = s[src + k]
            k += 1
        src += sb
        dt = (i * per) // 1000
        # pod ticks wrap at 2**30: wrapped without ever forming a value >= 2**30 (a heap int)
        if ticks_ms <= _MASK30 - dt:
            t = ticks_ms + dt
        else:
            t = ticks_ms - (_MASK30 - dt) - 1
        v = _HELD | (t & _TICKS15)
        m[2 * slot] = v & 0xFF
        m[2 * slot + 1] = v >> 8
        slot += 1
        if slot == cap:
            slot = 0
        i += 1
    return t


class SampleRing:
    def __init__(self, channels, sample_rate_hz, budget_bytes=BUDGET_BYTES):
        self.channels = channels
        self.sample_bytes = sb = channels * 3
        self.capacity = cap = budget_bytes // sb
        self.period_us = 1000000 // sample_rate_hz
        self.data = bytearray(cap * sb)
        self.meta = bytearray(2 * cap)  # u16 per slot (ptr16): _HELD | ticks_ms & _TICKS15
        self.newest = 0  # low 30 bits of the newest sample's seq
        self.newest_hi = 0  # its bits 30-31
        self.newest_ms = 0  # its pod ticks_ms
        self._newest_slot = cap - 1
        self.held = 0  # samples put, up to capacity
        self.puts = 0

    def put(self, first_seq, ticks_ms, samples, nbytes, first_hi=0):
        """Store a batch (first_seq: low 30 bits, first_hi: bits 30-31); called by the
        parser for every batch (no allocation)."""
        sb = self.sample_bytes
        cap = self.capacity
        n = nbytes // sb
        if n <= 0:
            return
        meta = self.meta
        data = self.data
        per = self.period_us
        if self.held == 0:
            slot = 0
        else:
            ahead = (first_seq - self.newest) & _MASK30
            if ahead >= _HALF30:
                return  # older than what is held: the parser never goes back
            if ahead > 1:
                # samples lost before the pod saw them: their slots must not answer for them
                _clear(meta, cap, (self._newest_slot + 1) % cap, ahead - 1 if ahead - 1 < cap else cap)
            slot = (self._newest_slot + ahead) % cap
        t = _store(data, meta, cap, sb, slot, samples, n, ticks_ms, per)
        slot = (slot + n) % cap
        # the newest: first + n - 1, carried into bits 30-31 without a value of 2**30
        last = first_seq + (n - 1) if first_seq <= _MASK30 - (n - 1) else first_seq - (_MASK30 - (n - 1)) - 1
        self.newest_hi = (first_hi + (0 if last >= first_seq else 1)) & 3
        self.newest = last
        self.newest_ms = t
        self._newest_slot = slot - 1 if slot else cap - 1
        self.held = self.held + n if self.held + n < cap else cap
        self.puts += 1

    def _back(self, seq):
        # how far seq lies before the newest (mod 2**30); >= capacity: outside the ring
        return (self.newest - seq) & _MASK30

    def slot(self, seq):
        """Slot of seq (low 30 bits), which must lie within the ring."""
        return (self._newest_slot - self._back(seq)) % self.capacity

    def has(self, seq):
        back = self._back(seq)
        if back >= self.capacity:
            return False
        s = (self._newest_slot - back) % self.capacity
        return self.meta[2 * s + 1] & 0x80 != 0

    def ticks(self, seq):
        """Pod ticks_ms of seq (held), rebuilt from its 15 bits and the newest's."""
        s = 2 * self.slot(seq)
        t15 = self.meta[s] | (self.meta[s + 1] & 0x7F) << 8
        return (self.newest_ms - ((self.newest_ms - t15) & _TICKS15)) & _MASK30

    def hi(self, seq):
        """Bits 30-31 of the full sequence number of seq (low 30 bits) held in the ring."""
        return self.newest_hi if seq <= self.newest else (self.newest_hi - 1) & 3

    def oldest(self):
        """Oldest sequence number (low 30 bits) the ring can still hold (held or lost before the pod saw it)."""
        return (self.newest - self.held + 1) & _MASK30


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
        """0 (ACK: queued) or a wire.NACK_REASON_*; the link answers before any frame is sent.
        from_seq: the low 30 bits, as wire.unpack_eeg_replay gives them."""
        ring = self.ring
        if count == 0 or count > ring.capacity:
            self.refused += 1
            return refusal.field(wire.NACK_REASON_BAD_PARAM, wire.F_EEG_REPLAY_COUNT, 1, ring.capacity)
        if self._left:
            self.refused += 1
            return wire.NACK_REASON_BUSY
        if ring.held == 0 or ((from_seq - ring.oldest()) & _MASK30) >= _HALF30:
            self.refused += 1
            return wire.NACK_REASON_UNAVAILABLE  # starts before what the ring holds
        ahead = (ring.newest - from_seq) & _MASK30
        if ahead >= _HALF30:
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
            seq = seq + 1 if seq < _MASK30 else 0  # never held (lost before the pod) or overwritten
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
            seq = seq + 1 if seq < _MASK30 else 0  # mod 2**30 without forming 2**30
        end = wire.pack_eeg_batch(body, _HDR, first, ring.hi(first), ring.ticks(first), ring.channels, flags, n * sb)
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
