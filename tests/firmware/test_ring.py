# The sample ring and the replayer under MicroPython: held ranges, overwrite,
# replay frames (flags, pacing by backlog), refusals, and no allocation per put.
import gc
import struct

import asyncio
from pod import framing, refusal, ring, wire
import peer_wire  # the host's side of the codec (generated)


class FakeLink:
    def __init__(self):
        self.body = bytearray(1024)
        self.frames = []
        self.backlog = False

    def backlogged(self):
        return self.backlog

    def send(self, type_, end):
        self.last = bytes(self.body[:end])
        first, ticks, channels, flags, samples = peer_wire.unpack_eeg_batch(self.body, 4, end)
        self.frames.append((type_, (first, ticks, channels, flags, bytes(samples))))  # body is reused


def sample(seq, channels=8):
    b = bytearray(channels * 3)
    for ch in range(channels):
        b[3 * ch] = ch
        b[3 * ch + 1] = (seq >> 8) & 0xFF
        b[3 * ch + 2] = seq & 0xFF
    return bytes(b)


def fill(r, first, n, per_batch=10, skip=()):
    seq = first
    while seq < first + n:
        k = min(per_batch, first + n - seq)
        data = b"".join(sample(s, r.channels) for s in range(seq, seq + k))
        r.put(seq, 1000 + seq * 4, data, len(data))
        seq += k


def test_capacity_from_the_byte_budget():
    assert ring.SampleRing(8, 250).capacity == 1024  # 4.1 s
    assert ring.SampleRing(16, 125).capacity == 512  # 4.1 s
    r = ring.SampleRing(8, 250)
    assert len(r.data) == 1024 * 24


def test_put_holds_the_newest_capacity_samples():
    r = ring.SampleRing(8, 250, budget_bytes=24 * 100)
    fill(r, 5, 250)
    assert r.newest == 254 and r.held == 100
    assert r.oldest() == 155
    assert r.has(155) and r.has(254) and not r.has(154) and not r.has(255)
    s = r.slot(200)
    assert bytes(r.data[s * 24 : s * 24 + 24]) == sample(200)


def test_replay_sends_the_range_flagged_replay():
    link = FakeLink()
    r = ring.SampleRing(8, 250)
    fill(r, 0, 600)
    rp = ring.Replayer(link, r)
    assert rp.request(100, 300) == 0
    asyncio.run(_drain(rp))
    seqs = []
    for type_, (first, ticks, channels, flags, samples) in link.frames:
        assert type_ == wire.T_EEG_BATCH and channels == 8
        assert flags == wire.EEG_FLAG_REPLAY
        n = len(samples) // 24
        assert n <= 40
        for i in range(n):
            assert bytes(samples[i * 24 : i * 24 + 24]) == sample(first + i)
        assert ticks == 1000 + (first - first % 10) * 4 + (first % 10) * 4  # per-sample pod time
        seqs.extend(range(first, first + n))
    assert seqs == list(range(100, 400))
    assert rp.replayed_samples == 300


async def _drain(rp):
    t = asyncio.create_task(rp.run())
    for _ in range(200):
        await asyncio.sleep_ms(5)
        if not rp._left:
            break
    t.cancel()


def test_samples_never_held_are_skipped_and_marked_gap():
    link = FakeLink()
    r = ring.SampleRing(8, 250)
    fill(r, 0, 50)
    fill(r, 60, 40)  # 50..59 never arrived
    rp = ring.Replayer(link, r)
    assert rp.request(40, 40) == 0
    asyncio.run(_drain(rp))
    got = [(f[1][0], len(f[1][4]) // 24, f[1][3]) for f in link.frames]
    assert got == [(40, 10, wire.EEG_FLAG_REPLAY), (60, 20, wire.EEG_FLAG_REPLAY | wire.EEG_FLAG_GAP_BEFORE)]


def test_refusals():
    link = FakeLink()
    r = ring.SampleRing(8, 250, budget_bytes=24 * 100)
    rp = ring.Replayer(link, r)
    assert rp.request(0, 10) == wire.NACK_REASON_UNAVAILABLE  # nothing held yet
    fill(r, 0, 300)
    assert rp.request(150, 10) == wire.NACK_REASON_UNAVAILABLE  # overwritten
    assert rp.request(400, 10) == wire.NACK_REASON_UNAVAILABLE  # not recorded yet
    assert rp.request(250, 0) == wire.NACK_REASON_BAD_PARAM
    assert rp.request(250, 101) == wire.NACK_REASON_BAD_PARAM
    assert refusal.DETAIL == [wire.F_EEG_REPLAY_COUNT, wire.NACK_NO_FIELD, 1, 100]  # count, and its range
    assert rp.request(290, 50) == 0  # the future part is clamped: it comes live
    assert rp._left == 10
    assert rp.request(290, 5) == wire.NACK_REASON_BUSY
    assert rp.refused == 6


def test_replay_waits_while_the_link_is_backlogged():
    link = FakeLink()
    r = ring.SampleRing(8, 250)
    fill(r, 0, 200)
    rp = ring.Replayer(link, r)
    link.backlog = True
    rp.request(0, 200)

    async def go():
        t = asyncio.create_task(rp.run())
        await asyncio.sleep_ms(60)
        assert link.frames == []
        link.backlog = False
        for _ in range(100):
            await asyncio.sleep_ms(5)
            if not rp._left:
                break
        t.cancel()

    asyncio.run(go())
    assert rp.replayed_samples == 200


M30 = (1 << 30) - 1


def test_sequence_wraps_at_30_and_32_bits_without_heap_ints():
    # the ring counts in 30 bits (+ the 2 above, for the wire): across 2**30 and 2**32
    for hi, wire_first in ((0, (1 << 30) - 16), (3, (1 << 32) - 16)):
        r = ring.SampleRing(8, 250)
        first = M30 - 15
        data = bytearray(b"".join(sample(i) for i in range(32)))
        r.put(first, M30 - 8, data, 16 * 24, hi)  # ticks cross their 2**30 wrap too
        rest = memoryview(data)[16 * 24 :]
        gc.collect()
        gc.disable()
        before = gc.mem_alloc()
        r.put(0, 56, rest, 16 * 24, (hi + 1) & 3)
        used = gc.mem_alloc() - before
        gc.enable()
        assert used == 0, used
        assert r.newest == 15 and r.newest_hi == (hi + 1) & 3
        assert r.has(M30) and r.has(0) and r.has(first) and not r.has(first - 1)
        assert r.ticks(M30) == (M30 - 8 + 60) & M30 and r.ticks(15) == 116
        link = FakeLink()
        rp = ring.Replayer(link, r)
        assert rp.request(first, 32) == 0
        asyncio.run(_drain(rp))
        assert [(f[1][0], len(f[1][4]) // 24) for f in link.frames] == [(first, 32)]  # one run across the wrap
        assert struct.unpack_from("<I", link.last, 4)[0] == wire_first  # bits 30-31 on the wire


def test_ring_memory_at_the_heaviest_configurations():
    # raw 24-bit samples + 2 bytes a slot (was 8: a seq and a ticks word): 33 KB -> 27 KB
    for ch, rate in ((8, 250), (16, 125)):
        gc.collect()
        before = gc.mem_alloc()
        r = ring.SampleRing(ch, rate)
        used = gc.mem_alloc() - before
        assert r.capacity * ch * 3 == ring.BUDGET_BYTES  # 4.1 s kept: replay reach unchanged
        assert used <= ring.BUDGET_BYTES + 2 * r.capacity + 256, used
        print("ring bytes", ch, rate, used)


def test_a_gap_leaves_its_slots_empty_after_they_were_used():
    r = ring.SampleRing(8, 250, budget_bytes=24 * 100)
    fill(r, 0, 150)  # slots all used once
    fill(r, 170, 30)  # 150..169 never arrived
    assert not any(r.has(s) for s in range(150, 170))
    assert r.has(149) and r.has(170) and r.has(199) and not r.has(99)


def test_no_allocation_per_put():
    r = ring.SampleRing(8, 250)
    data = bytearray(b"".join(sample(i) for i in range(10)))
    r.put(0, 0, data, 240)
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    for k in range(1, 50):
        r.put(k * 10, k, data, 240)
    used = gc.mem_alloc() - before
    gc.enable()
    assert used == 0, used


def test_band_powers_fixed_memory():
    from pod import bands, fixfft

    r = ring.SampleRing(8, 250)
    fill(r, 0, 400)
    bp = bands.BandPower(r, 250)
    assert bp.compute()  # warm up
    fft = bp.fft
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    s = bands._load(fft.re, fft.im, r.data, r.meta, r.capacity, 0, 256, 0, 24, bp.win, fixfft.SX)
    fft.run()
    fft.band_sum(8, 14, bp.sums, 2)
    core = gc.mem_alloc() - before
    before = gc.mem_alloc()
    bp.compute()
    whole = gc.mem_alloc() - before
    gc.enable()
    assert core == 0, core  # load, FFT and band sums: integers in preallocated arrays
    # the per-band float scaling only: channels x 5 values per update, never per sample
    assert whole < 8 * 5 * 200, whole
