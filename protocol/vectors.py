"""Test vectors derived from the definitions: bytes on the wire + their meaning.

Both ends check them: the host codec in CPython and the generated firmware
codec under the real micropython binary. Field values are deterministic
functions of the message and field position (as pymavlink derives its test
values), plus one vector per message at the limits of every field, plus
frames that must be rejected and why.

    python -m hypnolum.protocol.vectors            # rewrite protocol/vectors.json
    python -m hypnolum.protocol.vectors --check    # exit 1 if it is stale

JSON conventions: enum values by name; `bytes` fields as hex strings.
"""
from __future__ import annotations

import json
import struct
import sys
import zlib
from pathlib import Path

from cobs import cobs

from . import codec, messages, schema
from .schema import ARRAY, BYTES, ENUM, INT, LIST, STR

TARGET = Path(__file__).resolve().parent / "vectors.json"

_RANGES = {c: (-(1 << (8 * struct.calcsize(c) - 1)), (1 << (8 * struct.calcsize(c) - 1)) - 1) for c in "bhiq"}
_RANGES.update({c: (0, (1 << (8 * struct.calcsize(c))) - 1) for c in "BHIQ"})


_F32_MAX = 3.4028234663852886e38  # largest finite float32


def _int(fmt: str, n: int, edge: str) -> int | float:
    if fmt == "f":  # values a float32 holds exactly
        return {"max": _F32_MAX, "min": -_F32_MAX}.get(edge, (n % 4001) * 0.25 - 500.0)
    lo, hi = _RANGES[fmt]
    if edge == "max":
        return hi
    if edge == "min":
        return lo
    span = hi - lo + 1
    return lo + (n * 2654435761 + 17) % span  # spread over the range


def _fmt(sub) -> str:
    """The struct format char of one integer subcon of a tail Struct."""
    return {"l": "i", "L": "I"}.get(sub.subcon.fmtstr[1:], sub.subcon.fmtstr[1:])


def _values(msg: schema.Message, edge: str) -> dict:
    out: dict = {}
    for i, f in enumerate(msg.fields):
        n = msg.type_id * 31 + i
        if f.kind == INT:
            out[f.name] = _int(f.fmt, n, edge)
        elif f.kind == ENUM:
            names = list(schema.ENUMS[f.enum])
            out[f.name] = names[{"max": -1, "min": 0}.get(edge, n % len(names))]
        elif f.kind == ARRAY:
            out[f.name] = [_int(f.fmt, n + k, edge) for k in range(f.count)]
        elif f.kind == STR:
            out[f.name] = {"max": "ü" * 100, "min": ""}.get(edge, f"{f.name}-{n}-ß")
        elif f.kind == LIST:
            count = {"max": f.max_items, "min": 0}.get(edge, n % f.max_items + 1)
            out[f.name] = [_int(f.fmt, n + k, edge) for k in range(count)]
        elif (msg.name, f.name) in messages.TAILS:  # empty, or its own Struct
            tail = messages.TAILS[(msg.name, f.name)]
            out[f.name] = b"" if edge == "min" else tail.build(
                {s.name: _int(_fmt(s), n + k, edge) for k, s in enumerate(tail.subcons)})
        elif (msg.name, f.name) in messages.TAIL_RUNS:  # empty (an older pod), or entries
            run = messages.TAIL_RUNS[(msg.name, f.name)]
            if edge == "min":
                out[f.name] = b""
            elif msg.name == "hello":  # this schema's own table; at the limits, every hash at its max
                out[f.name] = b"".join(run.build({"type_id": m.type_id, "layout_hash": m.layout_hash if not edge
                                                  else _int("H", 0, edge)}) for m in schema.MESSAGES)
            else:
                raise TypeError(f"{msg.name}.{f.name}: no test values for this run")
        elif msg.name == "leds" and f.name == "rgb":  # segments x (R, G, B)
            k = {"max": messages.LED_PREVIEW_MAX_SEGMENTS, "min": 1}.get(edge, n % messages.LED_PREVIEW_MAX_SEGMENTS + 1)
            out["segments"] = k
            out[f.name] = bytes((n * 7 + i) & 0xFF for i in range(3 * k))
        elif f.kind == BYTES:
            width = 3 * out.get("channels", 1)
            count = {"max": 1, "min": 0}.get(edge, 2)
            if "channels" in out and out["channels"] == 0:
                out["channels"] = 1
                width = 3
            if edge == "max":
                count = (codec.MAX_PAYLOAD - 10) // width
            out[f.name] = bytes((n + k) & 0xFF for k in range(width * count))
    return out


def _jsonable(fields: dict) -> dict:
    return {k: (v.hex() if isinstance(v, bytes) else v) for k, v in fields.items()}


def _raw_frame(body: bytes) -> str:
    return (cobs.encode(body) + b"\x00").hex()


def _bad_vectors() -> list[dict]:
    good = codec.encode("ack", 3, {"ack_seq": 9})
    body = cobs.decode(good[:-1])
    flipped = bytearray(body)
    flipped[4] ^= 0x01
    def crc(b: bytes) -> bytes:
        return b + struct.pack("<I", zlib.crc32(b))
    return [
        {"why": "crc", "frame": _raw_frame(bytes(flipped))},
        {"why": "short", "frame": _raw_frame(body[:5])},
        {"why": "version", "frame": _raw_frame(crc(bytes([codec.PROTOCOL_VERSION + 1]) + body[1:-4]))},
        {"why": "unknown_type", "frame": _raw_frame(crc(bytes([codec.PROTOCOL_VERSION, 0xEE, 0, 0])))},
        {"why": "payload", "frame": _raw_frame(crc(body[:-4] + b"\x01"))},
        {"why": "cobs", "frame": "05010200"},
    ]


def build() -> dict:
    vectors = []
    seq = 0
    for msg in schema.MESSAGES:
        for edge in ("", "min", "max"):
            fields = _values(msg, edge)
            seq = (seq * 7919 + msg.type_id + 1) & 0xFFFF
            frame = codec.encode(msg.name, seq, fields)
            vectors.append(
                {
                    "name": msg.name,
                    "type_id": msg.type_id,
                    "seq": seq,
                    "case": edge or "typical",
                    "fields": _jsonable(fields),
                    "frame": frame.hex(),
                }
            )
    return {
        "protocol_version": codec.PROTOCOL_VERSION,
        "fingerprint": f"{schema.FINGERPRINT:#010x}",
        "conventions": "frame = COBS(header|payload|crc32) + 0x00, hex; enums by name; bytes fields as hex",
        "vectors": vectors,
        "bad": _bad_vectors(),
    }


def render() -> str:
    return json.dumps(build(), indent=1, ensure_ascii=False) + "\n"


def load() -> dict:
    return json.loads(TARGET.read_text())


def main(argv: list[str] | None = None) -> int:
    return schema.write_or_check(TARGET, render(), argv, "protocol/vectors.json")


if __name__ == "__main__":
    sys.exit(main())
