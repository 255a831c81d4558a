# The sample ring and the replayer under MicroPython: held ranges, overwrite,
# replay frames (flags, pacing by backlog), refusals, and no allocation per put.
import gc

import asyncio
from pod import framing, ring, wire


class FakeLink:
    def __init__(self):
        self.body = bytearray(1024)
        self.frames = []
        self.backlog = False

    def backlogged(self):
        return self.backlog

    def send(self, type_, end):
        first, ticks, channels, flags, samples = wire.unpack_eeg_batch(self.body, 4, end)
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


def test_sequence_wraps_at_32_bits():
    r = ring.SampleRing(8, 250)
    first = 0xFFFFFFFF - 15
    data = b"".join(sample(i) for i in range(32))
    r.put(first, 0, data[: 16 * 24], 16 * 24)
    r.put(0, 0, data[16 * 24 :], 16 * 24)
    assert r.newest == 15
    assert r.has(0xFFFFFFFF) and r.has(0)
    link = FakeLink()
    rp = ring.Replayer(link, r)
    assert rp.request(first, 32) == 0
    asyncio.run(_drain(rp))
    assert [(f[1][0], len(f[1][4]) // 24) for f in link.frames] == [(first, 32)]  # one run across the wrap


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
    s = bands._load(fft.re, fft.im, r.data, r.seq30, r.capacity, 0, 0, 256, 0, 24, bp.win, fixfft.SX)
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
