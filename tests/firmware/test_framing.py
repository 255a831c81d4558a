# Framing under MicroPython: COBS + CRC round trips, byte equality with the
# host codec (protocol/vectors.json), resync after garbage, error counting.
import json
import os

from pod import framing, wire


class Sink:
    def __init__(self):
        self.frames = []
        self.dec = framing.Decoder(self.on_frame)

    def on_frame(self, type_, seq, frame, end):
        self.frames.append((type_, seq, bytes(frame[wire.HEADER_SIZE:end])))

    def feed(self, data):
        self.dec.feed(data, len(data))


def encode(type_, seq, payload):
    e = framing.Encoder()
    e.body[wire.HEADER_SIZE:wire.HEADER_SIZE + len(payload)] = payload
    return bytes(e.encode(type_, seq, wire.HEADER_SIZE + len(payload)))


def _payloads():
    yield b""
    yield b"\x00"
    yield b"\x00\x00\x00"
    yield bytes(range(1, 200))
    for n in (245, 246, 247, 250, 253, 254, 255, 500, 508, 509, 600):
        yield bytes((i % 255) + 1 for i in range(n))  # no zeros: full COBS blocks
        yield bytes(i % 7 for i in range(n))
    yield bytes(1000)  # largest payload: 1024 - header - CRC - ... all zeros
    yield bytes(range(256)) * 3


def test_round_trip():
    s = Sink()
    want = []
    for i, p in enumerate(_payloads()):
        f = encode(0x40, i, p)
        assert f[-1] == 0 and 0 not in f[:-1], "delimiter only at the end"
        assert len(f) <= framing.MAX_ENCODED
        s.feed(f)
        want.append((0x40, i, p))
    assert s.frames == want
    assert s.dec.error_count == 0


def test_round_trip_byte_by_byte():
    s = Sink()
    payload = bytes(i & 0xFF for i in range(300))
    f = encode(0x20, 0xBEEF, payload)
    for b in f:
        s.feed(bytes((b,)))
    assert s.frames == [(0x20, 0xBEEF, payload)]


def _vectors():
    path = os.getenv("HYPNOLUM_VECTORS") or "../../protocol/vectors.json"
    with open(path) as f:
        return json.load(f)


def test_host_vectors_decode_and_reencode_identically():
    vec = _vectors()
    assert vec["fingerprint"] == "0x%08x" % wire.FINGERPRINT
    for v in vec["vectors"]:
        frame = bytes.fromhex(v["frame"])
        s = Sink()
        s.feed(frame)
        assert len(s.frames) == 1, v["name"] + " " + v["case"]
        type_, seq, payload = s.frames[0]
        assert (type_, seq) == (v["type_id"], v["seq"])
        assert encode(type_, seq, payload) == frame, v["name"] + " " + v["case"]


def test_host_bad_vectors_counted_by_kind():
    kinds = {"cobs": framing.ERR_COBS, "short": framing.ERR_SHORT, "crc": framing.ERR_CRC,
             "version": framing.ERR_VERSION, "oversize": framing.ERR_OVERSIZE}
    for bad in _vectors()["bad"]:
        s = Sink()
        s.feed(bytes.fromhex(bad["frame"]))
        if bad["why"] in kinds:
            assert s.frames == [], bad["why"]
            assert s.dec.errors[kinds[bad["why"]]] == 1, bad["why"]
        else:
            # unknown_type / payload are the link's business: framing passes them
            assert len(s.frames) == 1, bad["why"]


def test_resync_after_garbage():
    s = Sink()
    good = encode(0x04, 1, b"hello")
    s.feed(b"\x13\x37garbage\xff\xfe" + good)  # garbage glued to the front of a frame
    s.feed(b"\x00\x00\x00")  # idle delimiters are ignored
    s.feed(good[:5] + b"\x00" + encode(0x04, 2, b"again"))  # a frame cut short
    assert [f[1] for f in s.frames] == [2]  # the first was spoiled by glued garbage
    s.feed(encode(0x04, 3, b"x"))
    assert [f[1] for f in s.frames] == [2, 3]
    assert s.dec.error_count == 2


def test_corruption_is_a_crc_error_and_next_frame_is_fine():
    s = Sink()
    f = bytearray(encode(0x04, 9, b"payload"))
    f[5] ^= 0x01
    s.feed(bytes(f) + encode(0x04, 10, b"payload"))
    assert [x[1] for x in s.frames] == [10]
    assert s.dec.errors[framing.ERR_CRC] == 1


def test_oversize_is_skipped_until_delimiter():
    s = Sink()
    s.feed(b"\xff" + b"\x01" * 254 + (b"\xff" + b"\x01" * 254) * 5)
    s.feed(b"\x00" + encode(0x04, 4, b"ok"))
    assert [x[1] for x in s.frames] == [4]
    assert s.dec.errors[framing.ERR_OVERSIZE] == 1


def test_encode_refuses_too_long():
    e = framing.Encoder()
    try:
        e.encode(0x40, 0, wire.MAX_FRAME)
    except ValueError:
        return
    raise AssertionError("no error")


def test_encode_and_decode_allocate_nothing_per_frame():
    # the CRC is checked and written in place: binascii.crc32's u32 result was a heap int
    # 3 times in 4 on the board, and the memoryview slice it read another object per frame
    import gc

    got = bytearray(1)

    def on(t, s, f, e):
        got[0] += 1

    dec = framing.Decoder(on)
    enc = framing.Encoder()
    for i in range(250):
        enc.body[4 + i] = (i * 37 + 11) & 0xFF or 1

    def run():
        for k in range(40):
            enc.body[4] = 0x80 + k  # CRCs all over the u32 range
            f = enc.encode(0x10, 40000 + k, 4 + 250)
            dec.feed(f, len(f))

    run()
    got[0] = 0
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    run()
    used = gc.mem_alloc() - before
    gc.enable()
    assert got[0] == 40 and dec.error_count == 0
    assert used == 0, used
