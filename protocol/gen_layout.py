"""Generate the wire layout constants inside the firmware modules from messages.py.

A firmware module that writes or reads a payload in place needs the header's
size and the offsets of fields. MicroPython folds a `const()` only inside the
module that defines it (py/parse.c, v1.28.0: the parser's own `consts` table,
lines 241, 604-608 and 846-859): a constant imported from pod/wire.py is a
global lookup at every use and a name in wire.py's globals, on the pod's heap.
So each module keeps its own private constants, and this generator writes
their values, in blocks the module holds::

    # wire layout (values generated from protocol/messages.py by `make codec`)
    _HDR = const(4)  # HEADER_SIZE
    _FIXED = const(10)  # eeg_batch.fixed
    # end of wire layout

The comment after each constant names the fact; the generator replaces the
number. What a name may say:

    NAME              a scalar of messages.CONSTANTS (HEADER_SIZE, MAX_FRAME, ...)
    <msg>.fixed       bytes of the message's fixed fields before its first variable one
    <msg>.size        bytes of a message of fixed fields only
    <msg>.<field>     the field's offset in the payload (fixed fields before it)
    <enum>.<value>    a value of an enum of messages.ENUMS

Usage:
    python -m hypnolum.protocol.gen_layout            # rewrite the blocks
    python -m hypnolum.protocol.gen_layout --check    # exit 1 if one is stale
"""
from __future__ import annotations

import argparse
import re
import struct
import sys
from pathlib import Path

from . import messages, schema
from .schema import ARRAY, ENUM, INT

FIRMWARE = Path(__file__).resolve().parent.parent / "firmware" / "pod"
BEGIN = "# wire layout (values generated from protocol/messages.py by `make codec`)"
END = "# end of wire layout"
_LINE = re.compile(r"^(?P<name>_?[A-Z][A-Z0-9_]*) = const\((?P<value>[^)]*)\)  # (?P<fact>[A-Za-z0-9_.]+)(?P<rest>.*)$")
_CONSTANTS = dict(messages.CONSTANTS)


class LayoutError(ValueError):
    """A wire layout block that names no known fact, or is malformed; says where."""


def field_size(f: schema.Field) -> int | None:
    """Bytes of a fixed-size field; None for a variable one (str, list, bytes)."""
    if f.kind in (INT, ENUM):
        return struct.calcsize("<" + f.fmt)
    if f.kind == ARRAY:
        return struct.calcsize("<" + f.fmt * f.count)
    return None


def offsets(msg: schema.Message) -> tuple[dict[str, int], int]:
    """({field: payload offset} for the fields up to the first variable one, bytes of the fixed part)."""
    out: dict[str, int] = {}
    off = 0
    for f in msg.fields:
        out[f.name] = off
        size = field_size(f)
        if size is None:
            return out, off
        off += size
    return out, off


def fact_value(fact: str) -> int:
    """The number a fact names (module doc); LayoutError if it names none."""
    if fact in _CONSTANTS:
        return _CONSTANTS[fact]
    head, _, tail = fact.partition(".")
    if head in schema.ENUMS and tail in schema.ENUMS[head]:
        return schema.ENUMS[head][tail]
    msg = schema.BY_NAME.get(head)
    if msg is None or not tail:
        raise LayoutError(f"{fact!r} is neither a constant, an enum value nor a message fact")
    at, fixed = offsets(msg)
    if tail == "fixed":
        return fixed
    if tail == "size":
        if any(field_size(f) is None for f in msg.fields):
            raise LayoutError(f"{fact!r}: {head} has variable fields (its fixed part is {head}.fixed)")
        return fixed
    if tail not in at:
        known = [f.name for f in msg.fields]
        raise LayoutError(f"{fact!r}: {head} has no field {tail!r} at a fixed offset (fields: {known})")
    return at[tail]


def render_module(text: str, where: str) -> str:
    """text with the values of its wire layout blocks generated (unchanged without one)."""
    lines = text.split("\n")
    start = 0
    while BEGIN in lines[start:]:
        start = lines.index(BEGIN, start) + 1
        try:
            stop = lines.index(END, start)
        except ValueError:
            raise LayoutError(f"{where}:{start}: wire layout block without {END!r}") from None
        for i in range(start, stop):
            lines[i] = _render_line(lines[i], f"{where}:{i + 1}")
        start = stop
    return "\n".join(lines)


def _render_line(line: str, where: str) -> str:
    m = _LINE.match(line)
    if m is None:
        raise LayoutError(f"{where}: not `[_]NAME = const(n)  # fact`: {line!r}")
    try:
        value = fact_value(m["fact"])
    except LayoutError as exc:
        raise LayoutError(f"{where}: {exc}") from None
    return f"{m['name']} = const({value})  # {m['fact']}{m['rest']}"


def modules() -> list[Path]:
    """The firmware modules that hold a wire layout block."""
    return sorted(p for p in FIRMWARE.glob("*.py") if BEGIN in p.read_text())


def stale() -> list[str]:
    """The firmware modules whose block differs from what the generator writes."""
    return [p.name for p in modules() if render_module(p.read_text(), p.name) != p.read_text()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="write or check the wire layout blocks of firmware/pod/*.py")
    ap.add_argument("--check", action="store_true", help="exit 1 if a block is stale")
    args = ap.parse_args(argv)
    if args.check:
        bad = stale()
        for name in bad:
            print(f"firmware/pod/{name}: wire layout is stale: run `make codec`", file=sys.stderr)
        return 1 if bad else 0
    for p in modules():
        text = p.read_text()
        new = render_module(text, p.name)
        if new != text:
            p.write_text(new)
            print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
