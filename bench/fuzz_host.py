"""Fuzz hostd's frame decoder: mutated, re-checksummed and random frames.

    .venv/bin/python bench/fuzz_host.py [N] [SEED]     # N frames, default 1 000 000

Seeds are the encoded frames of protocol/vectors.json (every message type).
Each round feeds one bad input through ``codec.FrameDecoder`` exactly as a
pod session does (plus ``eeg_counts`` for EEG batches), then a delimiter and
a good frame, which must come out decoded: the decoder must be back in step.
Every 16th round checks the harder case of no delimiter after the garbage:
then the second good frame must come out. Mutation kinds:

- ``raw``: bytes of an encoded frame flipped, replaced, inserted, deleted;
- ``body``: the decoded body mutated (payload bytes, type, lengths) and then
  given a valid CRC and COBS encoding, so it reaches the payload parser;
- ``random``: random bytes of random length, with and without zeros;
- ``splice``: pieces of two frames glued together.

Prints the figures; exits non-zero on any crash (an exception out of the
decoder), hang (one feed over 1 s) or lost resync.
"""
from __future__ import annotations

import json
import random
import sys
import time
import zlib
from pathlib import Path

from cobs import cobs

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "protocol" / "vectors.json"


def seeds() -> list[bytes]:
    data = json.loads(VECTORS.read_text())
    return [bytes.fromhex(v["frame"]) for v in data["vectors"]]


def _mutate_bytes(rng: random.Random, buf: bytearray, max_ops: int = 4) -> None:
    for _ in range(rng.randint(1, max_ops)):
        op = rng.randrange(5)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[min(pos, len(buf) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:
            buf[min(pos, len(buf) - 1)] = rng.randrange(256)
        elif op == 2:
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 3 and buf:
            del buf[pos:pos + rng.randint(1, 8)]
        else:
            buf[pos:pos] = bytes([rng.choice((0x00, 0xFF, 0x7F, 0x80, 0x01))]) * rng.randint(1, 300)


def mutate(rng: random.Random, corpus: list[bytes]) -> tuple[str, bytes]:
    kind = rng.choice(("raw", "raw", "body", "body", "random", "splice"))
    base = rng.choice(corpus)
    if kind == "raw":
        buf = bytearray(base[:-1])
        _mutate_bytes(rng, buf)
        return kind, bytes(buf) + (b"\x00" if rng.random() < 0.8 else b"")
    if kind == "body":
        body = bytearray(cobs.decode(base[:-1])[:-4])
        if rng.random() < 0.2:
            body[1] = rng.randrange(256)  # message type
        if rng.random() < 0.05:
            body[0] = rng.randrange(256)  # protocol version
        payload = body[4:]
        _mutate_bytes(rng, payload, 3)
        if rng.random() < 0.1:
            payload += bytes(rng.randrange(256) for _ in range(rng.randint(900, 1100)))  # around the size limit
        body[4:] = payload
        body += zlib.crc32(body).to_bytes(4, "little")
        return kind, cobs.encode(bytes(body)) + b"\x00"
    if kind == "random":
        n = rng.choice((rng.randint(0, 16), rng.randint(0, 256), rng.randint(1000, 2500)))
        data = bytearray(rng.getrandbits(8) for _ in range(n))
        if rng.random() < 0.5:  # no zeros at all: a long run the decoder must bound
            data = bytearray(b or 1 for b in data)
        return kind, bytes(data)
    other = rng.choice(corpus)
    return kind, base[: rng.randrange(1, len(base))] + other[rng.randrange(len(other)):]


def run(n: int, seed: int = 1, max_feed_s: float = 1.0) -> dict:
    from hypnolum.protocol import codec

    corpus = seeds()
    good = [(f, codec.decode(f)) for f in corpus]
    rng = random.Random(seed)
    dec = codec.FrameDecoder()
    stats = {"frames": 0, "crashes": 0, "hangs": 0, "lost_resync": 0, "decoded_mutants": 0, "max_feed_ms": 0.0,
             "kinds": {}}
    first_failure = None
    t0 = time.perf_counter()

    def feed(data: bytes) -> list:
        t = time.perf_counter()
        out = dec.feed(data)
        for fr in out:
            if fr.name == "eeg_batch":
                codec.eeg_counts(fr.fields)  # what the session does with it
        dt = time.perf_counter() - t
        stats["max_feed_ms"] = max(stats["max_feed_ms"], dt * 1000)
        if dt > max_feed_s:
            stats["hangs"] += 1
        return out

    for i in range(n):
        kind, data = mutate(rng, corpus)
        stats["kinds"][kind] = stats["kinds"].get(kind, 0) + 1
        stats["frames"] += 1
        frame, expected = rng.choice(good)
        try:
            stats["decoded_mutants"] += len(feed(data))
            if i % 16:
                out = feed(b"\x00" + frame)  # a sender that opens each frame with a delimiter
                ok = bool(out) and out[-1] == expected
            else:
                feed(frame)  # may be swallowed by the garbage before it
                out = feed(frame)
                ok = bool(out) and out[-1] == expected
            if not ok:
                stats["lost_resync"] += 1
                first_failure = first_failure or ("resync", kind, data.hex())
        except Exception as exc:  # noqa: BLE001  (counting crashes is the point)
            stats["crashes"] += 1
            first_failure = first_failure or ("crash", kind, data.hex(), repr(exc))
            dec = codec.FrameDecoder()
    stats["seconds"] = round(time.perf_counter() - t0, 1)
    stats["errors_counted"] = dict(sorted(dec.errors.items()))
    stats["first_failure"] = first_failure
    return stats


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    s = run(n, seed)
    print(f"hostd decoder fuzz: {s['frames']} bad inputs (+ {s['frames']} good frames) in {s['seconds']} s, seed {seed}")
    print(f"  kinds: {s['kinds']}")
    print(f"  crashes {s['crashes']}, hangs {s['hangs']}, lost resyncs {s['lost_resync']}, "
          f"max feed {s['max_feed_ms']:.2f} ms, mutants that still decoded {s['decoded_mutants']}")
    print(f"  decoder error counters: {s['errors_counted']}")
    if s["first_failure"]:
        print(f"  first failure: {s['first_failure']}")
    return 1 if s["crashes"] or s["hangs"] or s["lost_resync"] else 0


if __name__ == "__main__":
    sys.exit(main())
