# Cyton stream parser under MicroPython: packets, batches, counter widening,
# gaps, garbage and resync, and no allocation per sample.
import gc

from pod import cyton, wire


def packet(counter, footer=0xC0):
    p = bytearray(33)
    p[0] = 0xA0
    p[1] = counter & 0xFF
    for ch in range(8):
        # channel ch of sample counter: recognisable 24-bit big-endian bytes
        p[2 + 3 * ch] = ch
        p[3 + 3 * ch] = counter & 0xFF
        p[4 + 3 * ch] = 0x80 | ch
    p[26:32] = b"\x01\x02\x03\x04\x05\x06"
    p[32] = footer
    return bytes(p)


class Rec:
    def __init__(self, channels=8, batch=10):
        self.batches = []
        self.p = cyton.Parser(channels, self.on_batch, batch)

    def on_batch(self, first_seq, ticks_ms, flags, samples, nbytes):
        self.batches.append((first_seq, ticks_ms, flags, bytes(samples[:nbytes])))

    def feed(self, data, now_ms=0):
        self.p.feed(data, len(data), now_ms)


def test_batches_of_ten_with_raw_bytes_and_first_ticks():
    r = Rec()
    stream = b"".join(packet(c) for c in range(5, 30))
    r.feed(stream[:100], 1000)
    r.feed(stream[100:], 1040)
    assert [b[0] for b in r.batches] == [5, 15]
    assert r.batches[0][1] == 1000 and r.batches[1][1] == 1040
    assert r.batches[0][2] == 0
    assert r.batches[0][3] == b"".join(packet(c)[2:26] for c in range(5, 15))
    assert r.p.samples == 25 and r.p.gaps == 0 and r.p.garbage == 0


def test_counter_widens_past_255():
    r = Rec(batch=1)
    r.feed(b"".join(packet(c) for c in range(250, 262)))
    assert [b[0] for b in r.batches] == list(range(250, 262))
    assert r.p.gaps == 0


def test_gap_flushes_and_flags_next_batch():
    r = Rec()
    r.feed(b"".join(packet(c) for c in (0, 1, 2, 6, 7)))  # 3, 4, 5 lost
    r.p.flush()
    assert [(b[0], b[2], len(b[3]) // 24) for b in r.batches] == [
        (0, 0, 3),
        (6, wire.EEG_FLAG_GAP_BEFORE, 2),
    ]
    assert r.p.gaps == 1 and r.p.lost == 3


def test_gap_across_counter_wrap():
    r = Rec(batch=1)
    r.feed(packet(254) + packet(1))  # 255, 0 lost
    assert [b[0] for b in r.batches] == [254, 257]
    assert r.batches[1][2] == wire.EEG_FLAG_GAP_BEFORE
    assert r.p.lost == 2


def test_garbage_and_false_start_bytes_resync():
    r = Rec(batch=1)
    junk = b"\x00\xa0\x11\x22" + b"\xa0" * 3 + b"OpenBCI$$$"
    r.feed(junk + packet(1) + b"\xc0\xa0" + packet(2) + packet(3))
    assert [b[0] for b in r.batches] == [1, 2, 3]
    assert r.p.gaps == 0 and r.p.garbage > 0


def test_bad_footer_is_not_a_sample():
    r = Rec(batch=1)
    r.feed(packet(1) + packet(2, footer=0x55) + packet(3))
    assert [b[0] for b in r.batches] == [1, 3]
    assert r.p.gaps == 1


def test_fewer_channels_copies_the_first_ones():
    r = Rec(channels=4, batch=2)
    r.feed(packet(7) + packet(8))
    assert r.batches[0][3] == packet(7)[2:14] + packet(8)[2:14]


def test_restart_marks_a_gap():
    r = Rec(batch=1)
    r.feed(packet(10))
    r.p.restart()
    r.feed(packet(200))
    assert r.batches[-1][2] == wire.EEG_FLAG_GAP_BEFORE
    assert r.batches[-1][0] == 11  # sequence continues; the counter is not trusted across a restart


def test_no_allocation_per_sample():
    batches = [0]

    def on_batch(first_seq, ticks_ms, flags, samples, nbytes):
        batches[0] += 1  # small-int arithmetic: no allocation

    p = cyton.Parser(8, on_batch, 10)
    stream = bytearray(b"".join(packet(c) for c in range(200)))
    p.feed(stream, 330, 0)  # warm up
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    p.feed(stream, len(stream), 0)
    used = gc.mem_alloc() - before
    gc.enable()
    assert used == 0, used


def daisy_packet(counter, base):
    # channel ch carries base + ch (24-bit big-endian) so board/Daisy halves are recognisable
    p = bytearray(33)
    p[0] = 0xA0
    p[1] = counter & 0xFF
    for ch in range(8):
        v = (base + ch) & 0xFFFFFF
        p[2 + 3 * ch] = v >> 16
        p[3 + 3 * ch] = (v >> 8) & 0xFF
        p[4 + 3 * ch] = v & 0xFF
    p[32] = 0xC0
    return bytes(p)


def test_daisy_pairs_even_and_odd_packets_into_16_channels():
    r = Rec(channels=16, batch=1)
    # as BrainFlow pairs them: even (channels 9-16) with the odd after it (channels 1-8)
    r.feed(daisy_packet(0, 900) + daisy_packet(1, 100) + daisy_packet(2, 200) + daisy_packet(3, 300) + daisy_packet(4, 400))
    assert [b[0] for b in r.batches] == [0, 1]
    s = r.batches[0][3]
    assert len(s) == 48
    assert s[:3] == b"\x00\x00\x64" and s[24:27] == b"\x00\x03\x84"  # ch1 = 100 (packet 1), ch9 = 900 (packet 0)
    assert r.batches[1][3][:3] == b"\x00\x01\x2c"  # ch1 = 300 (packet 3)
    assert r.p.gaps == 0


def test_daisy_lost_packet_loses_its_sample_and_marks_the_gap():
    r = Rec(channels=16, batch=1)
    r.feed(daisy_packet(0, 0) + daisy_packet(1, 1) + daisy_packet(2, 2) + daisy_packet(3, 3) + daisy_packet(5, 5)
           + daisy_packet(6, 6) + daisy_packet(7, 7))
    # packet 4 lost: sample 2 (4 + 5) is gone, 5 has no partner
    assert [(b[0], b[2]) for b in r.batches] == [(0, 0), (1, 0), (3, wire.EEG_FLAG_GAP_BEFORE)]
    assert r.p.gaps == 1 and r.p.lost == 1


def test_daisy_counter_wrap_keeps_pairing():
    r = Rec(channels=16, batch=1)
    r.feed(b"".join(daisy_packet(c, c) for c in range(252, 262)))  # 252..255, 0..5 on the wire
    assert [b[0] for b in r.batches] == [126, 127, 128, 129, 130]
    assert r.p.gaps == 0


def test_railed_and_near_railed_channels_are_flagged():
    r = Rec(channels=8, batch=2)
    full = 8388607
    p1 = bytearray(daisy_packet(1, 0))
    p2 = bytearray(daisy_packet(2, 0))

    def put(p, ch, v):
        v &= 0xFFFFFF
        p[2 + 3 * ch : 5 + 3 * ch] = bytes((v >> 16, (v >> 8) & 0xFF, v & 0xFF))

    put(p1, 0, full)  # 100 %: railed
    put(p2, 1, -int(full * 0.91))  # 91 %, negative: railed
    put(p1, 2, int(full * 0.8))  # 80 %: near railed only
    put(p1, 3, int(full * 0.7))  # 70 %: fine
    r.feed(bytes(p1) + bytes(p2))
    railed, near = r.p.take_masks()
    assert railed == 0b0011 and near == 0b0111, (bin(railed), bin(near))
    assert r.p.take_masks() == (0, 0)  # cleared once reported


def test_no_allocation_per_sample_with_the_daisy():
    batches = [0]

    def on_batch(first_seq, ticks_ms, flags, samples, nbytes):
        batches[0] += 1

    p = cyton.Parser(16, on_batch, 5)
    stream = bytearray(b"".join(daisy_packet(c, c * 1000) for c in range(200)))
    p.feed(stream, 330, 0)  # warm up
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    p.feed(stream, len(stream), 0)
    used = gc.mem_alloc() - before
    gc.enable()
    assert used == 0, used
    assert batches[0] >= 19


class Tap:
    def __init__(self, sb):
        self.sb = sb
        self.seen = []
        self.resets = 0

    def __call__(self, buf, off):
        self.seen.append(bytes(buf[off:off + self.sb]))

    def reset(self):
        self.resets += 1


def test_tap_sees_every_sample_once_as_it_enters_the_batch():
    for channels, stream in ((8, b"".join(packet(c) for c in range(5, 28))),
                             (16, b"".join(daisy_packet(c, c * 1000) for c in range(0, 14)))):
        r = Rec(channels=channels, batch=4)
        tap = r.p.tap = Tap(channels * 3)
        r.feed(stream[:70])  # two packets: two samples, or one with the Daisy
        assert len(tap.seen) == (2 if channels == 8 else 1) and not r.batches  # at once, before the batch is full
        r.feed(stream[70:])
        r.p.flush()
        assert b"".join(tap.seen) == b"".join(b[3] for b in r.batches)
        assert len(tap.seen) == r.p.samples
        r.p.restart()
        assert tap.resets == 1


M30 = (1 << 30) - 1


class _Writer:  # hal.open_link()'s port, TX side: always room
    def __init__(self):
        self.n = 0
        self.last = None

    def tx_free(self):
        return 4096

    def write(self, data, n):
        self.n += 1
        self.last = data
        return n


def _eeg_pod(channels=8, batch=10):
    from pod import link, ring

    w = _Writer()
    lk = link.Link(w, ("pod", "0", 1, 16, channels, 250), lambda *a: 0)
    hs = cyton.Headset(lk, channels, 115200, 250 if channels <= 8 else 125)
    hs.parser.batch_samples = batch
    hs.ring = ring.SampleRing(channels, 250 if channels <= 8 else 125)
    return w, lk, hs


def _sent_first_seq(w):
    # the last frame on the wire, un-COBSed by the firmware's own decoder
    from pod import framing

    got = []
    framing.Decoder(lambda t, s, f, e: got.append(bytes(f[:e]))).feed(w.last, len(w.last))
    import struct

    return struct.unpack_from("<I", got[0], 4)[0]


def test_sequence_crosses_2_30_and_2_32_without_heap_ints_parser_to_wire():
    from pod import ring

    # parser -> batch -> ring -> EEG_BATCH frame, 0 B per batch, as the 30-bit sequence
    # wraps (bits 30-31 carried apart, on the wire unchanged)
    for hi, daisy in ((0, False), (3, False), (0, True), (7, True)):
        ch = 16 if daisy else 8
        w, lk, hs = _eeg_pod(ch, 5)
        p = hs.parser
        pk = daisy_packet if daisy else (lambda c, b=0: packet(c))
        stream = bytearray(b"".join(pk(c, c) for c in range(1, 241)))  # 240 packets
        p.feed(stream, 33 * 120, 0)  # warm up (the encoder keeps views of the frame lengths it saw)
        start = M30 - 60 if not daisy else M30 - 61  # even: the next packet is odd (Daisy parity)
        p.flush()
        p._pseq = start  # white box: put the widened counter just before the 2**30 wrap
        p._pseq_hi = hi
        p._emitted = False  # (no gap against the warm-up samples)
        hs.ring = ring.SampleRing(ch, 250 if ch <= 8 else 125)  # nor a jump back for the ring
        rest = stream[33 * 120 :]
        gc.collect()
        gc.disable()
        before = gc.mem_alloc()
        p.feed(rest, len(rest), 0)  # 120 packets, through the wrap
        used = gc.mem_alloc() - before
        gc.enable()
        assert used == 0, (hi, daisy, used)
        assert p.gaps == 0, (hi, daisy, p.gaps, p.lost)
        p.flush()
        sent = _sent_first_seq(w)
        last_full = (p.seq_hi << 30) | p.seq
        assert sent <= last_full < sent + 5, (hex(sent), hex(last_full))
        if not daisy:
            assert last_full == (((hi << 30) | start) + 120) & 0xFFFFFFFF
        else:
            assert p.seq_hi == ((((hi << 30) | start) + 120) >> 1 >> 30) & 3
        p.flush()
        assert hs.ring.newest == p.seq and hs.ring.newest_hi == p.seq_hi
