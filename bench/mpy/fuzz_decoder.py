# Runs under micropython (driven by bench/fuzz_firmware.py): fuzz the firmware's
# framing.Decoder and the generated wire.UNPACK the way pod/link.py uses them.
# argv: seeds file (one hex frame per line), N, seed
import sys
import time

from pod import framing, wire

_HDR = wire.HEADER_SIZE


class Rng:
    # xorshift32: deterministic, no allocation beyond small ints
    def __init__(self, seed):
        self.s = (seed * 2654435761) & 0xFFFFFFFF or 1

    def next(self):
        s = self.s
        s ^= (s << 13) & 0xFFFFFFFF
        s ^= s >> 17
        s ^= (s << 5) & 0xFFFFFFFF
        self.s = s
        return s

    def below(self, n):
        return self.next() % n


def load(path):
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                out.append(bytes(int(line[i:i + 2], 16) for i in range(0, len(line), 2)))
    return out


seeds_path, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
corpus = load(seeds_path)
rng = Rng(seed)
stats = {"frames": 0, "crashes": 0, "unpacked": 0, "value_errors": 0, "lost_resync": 0}
last = [None]
first_failure = [None]


def on_frame(type_, seq, frame, end):
    # as pod/link.py: unknown types are answered, a payload that does not decode raises ValueError
    last[0] = (type_, seq, bytes(frame[_HDR:end]))
    fn = wire.UNPACK.get(type_)
    if fn is None:
        return
    try:
        fn(frame, _HDR, end)
        stats["unpacked"] += 1
    except ValueError:
        stats["value_errors"] += 1


dec = framing.Decoder(on_frame)
enc = framing.Encoder()
bodies = []
for f in corpus:
    d = framing.Decoder(lambda t, s, fr, e: bodies.append((t, s, bytes(fr[_HDR:e]))))
    d.feed(f, len(f))
assert len(bodies) == len(corpus), "seed frames do not decode"
buf = bytearray(3000)


def mutate_into(dst, src, ops):
    # returns the new length of dst after copying src and applying ops byte mutations
    n = len(src)
    dst[0:n] = src
    for _ in range(ops):
        op = rng.below(4)
        pos = rng.below(n + 1) if n else 0
        if op == 0 and n:
            dst[min(pos, n - 1)] ^= 1 << rng.below(8)
        elif op == 1 and n:
            dst[min(pos, n - 1)] = rng.below(256)
        elif op == 2 and n < 2000:
            k = 1 + rng.below(8)
            dst[pos + k:n + k] = dst[pos:n]
            for j in range(k):
                dst[pos + j] = rng.below(256)
            n += k
        elif n:
            k = min(1 + rng.below(8), n - pos)
            dst[pos:n - k] = dst[pos + k:n]
            n -= k
    return n


t0 = time.ticks_ms()
for i in range(n):
    kind = rng.below(3)
    try:
        if kind == 0:  # raw: mutate an encoded frame (without its delimiter, kept 80% of the time)
            src = corpus[rng.below(len(corpus))]
            k = mutate_into(buf, src[:-1], 1 + rng.below(4))
            if rng.below(5):
                buf[k] = 0
                k += 1
            dec.feed(buf, k)
        elif kind == 1:  # body: mutate the payload, then a valid CRC and COBS: reaches UNPACK
            t, s, payload = bodies[rng.below(len(bodies))]
            body = enc.body
            k = mutate_into(buf, payload, 1 + rng.below(3))
            if rng.below(5) == 0:
                t = rng.below(256)
            k = min(k, 1016)
            body[_HDR:_HDR + k] = buf[:k]
            out = enc.encode(t, s, _HDR + k)
            dec.feed(out, len(out))
        else:  # random bytes
            k = (rng.below(16), rng.below(256), 1000 + rng.below(1500))[rng.below(3)]
            nz = rng.below(2)
            for j in range(k):
                b = rng.below(256)
                buf[j] = (b or 1) if nz else b
            dec.feed(buf, k)
        # then a delimiter and a good frame: it must come out
        j = rng.below(len(corpus))
        good = corpus[j]
        last[0] = None
        dec.feed(b"\x00", 1)
        dec.feed(good, len(good))
        if last[0] != bodies[j]:
            stats["lost_resync"] += 1
            if first_failure[0] is None:
                first_failure[0] = ("resync", kind, bytes(buf[:k]))
    except Exception as exc:  # a crash: anything the link would not survive
        stats["crashes"] += 1
        if first_failure[0] is None:
            first_failure[0] = ("crash", kind, repr(exc))
        dec = framing.Decoder(on_frame)
    stats["frames"] += 1
ms = time.ticks_diff(time.ticks_ms(), t0)
print("frames", stats["frames"], "crashes", stats["crashes"], "lost_resync", stats["lost_resync"],
      "unpacked", stats["unpacked"], "value_errors", stats["value_errors"], "decoder_errors", dec.error_count,
      "ms", ms)
if first_failure[0] is not None:
    print("first_failure", first_failure[0])
