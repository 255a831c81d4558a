"""The message definitions reduced to a small, checked description.

The generator, the schema fingerprint and the test vectors all read this
description instead of the construct objects, so the three can never disagree
about what a message holds. Only a deliberate, small vocabulary of construct
types is accepted; anything else is an error at import time, not a codec that
silently differs between the two ends.
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

import construct as cs

from . import messages

# kinds of field
INT = "int"  # one integer or float32 (struct format char in .fmt)
ENUM = "enum"  # one integer with named values (.enum names the enum)
ARRAY = "array"  # fixed count of integers (.count)
STR = "str"  # UTF-8 with an integer length prefix (.prefix)
LIST = "list"  # integers with an integer count prefix (.prefix)
BYTES = "bytes"  # the rest of the payload; only as the last field


@dataclass(frozen=True)
class Field:
    name: str
    kind: str
    fmt: str  # struct format char of the value (or of the items)
    prefix: str = ""  # struct format char of a length / count prefix
    count: int = 0  # ARRAY only
    enum: str = ""  # ENUM only
    max_items: int = 0  # LIST only: largest count accepted

    def signature(self) -> str:
        """Canonical text of this field for the fingerprint."""
        kind = INT if self.kind == ENUM else self.kind  # enum values may grow
        return f"{self.name}:{kind}:{self.fmt}:{self.prefix}:{self.count}"


@dataclass(frozen=True)
class Message:
    name: str
    type_id: int
    fields: tuple[Field, ...]
    construct: cs.Construct
    command: bool
    layout_hash: int = 0  # see layout_text(); set by load()
    record: tuple[str, int] | None = None  # (name, index of its first field) of the record it carries

    def record_fields(self) -> tuple[Field, ...]:
        """The fields of the record it carries (messages.RECORDS), in order; () for none."""
        if self.record is None:
            return ()
        name, start = self.record
        return self.fields[start:start + len(RECORDS[name].fields)]

    @property
    def const_name(self) -> str:
        return "T_" + self.name.upper()

    def layout_text(self) -> str:
        """Canonical text of this message's layout: its type id, name and fields' signatures,
        as in the fingerprint. A tail (messages.TAILS, TAIL_RUNS) is left out: it is optional
        by construction (a reader takes the fields before it, whatever follows), so adding
        one keeps a message's layout."""
        sigs = [f.signature() for f in self.fields if (self.name, f.name) not in TAIL_FIELDS]
        return f"{self.type_id:#04x} {self.name} " + " ".join(sigs)


_CANON = {"l": "i", "L": "I"}  # construct spells 32-bit fields l / L


def _int_fmt(con: cs.Construct, where: str) -> str:
    if not isinstance(con, cs.FormatField):
        raise TypeError(f"{where}: expected an integer field, got {con!r}")
    order, char = con.fmtstr[0], _CANON.get(con.fmtstr[1:], con.fmtstr[1:])
    if order != "<" or char not in "bBhHiIqQf":
        raise TypeError(f"{where}: only little-endian integers and float32 are allowed, got {con.fmtstr!r}")
    return char


def _enum_name(con: cs.Enum, where: str) -> str:
    for name, enum in messages.ENUMS:
        if enum is con:
            return name
    raise TypeError(f"{where}: enum is not listed in messages.ENUMS")


@dataclass(frozen=True)
class Record:
    """A run of fields several messages carry (messages.RECORDS), handled as one value."""

    name: str
    fields: tuple[Field, ...]

    @property
    def class_name(self) -> str:
        """Its value type's name in the generated code (scene: Scene)."""
        return "".join(part.title() for part in self.name.split("_"))


def _field(sub: cs.Renamed, msg: str, last: bool, owner: str = "") -> Field:
    """One field of message (or record) msg; owner: the record it belongs to, if any (its
    list limits hold)."""
    name, con = sub.name, sub.subcon
    where = f"{msg}.{name}"
    if isinstance(con, cs.FormatField):
        return Field(name, INT, _int_fmt(con, where))
    if isinstance(con, cs.Enum):
        return Field(name, ENUM, _int_fmt(con.subcon, where), enum=_enum_name(con, where))
    if isinstance(con, cs.Array) and isinstance(con.count, int):
        return Field(name, ARRAY, _int_fmt(con.subcon, where), count=con.count)
    if isinstance(con, cs.StringEncoded) and isinstance(con.subcon, cs.Prefixed):
        if con.encoding != "utf8" or con.subcon.subcon is not cs.GreedyBytes:
            raise TypeError(f"{where}: strings must be PascalString(..., 'utf8')")
        return Field(name, STR, "s", prefix=_int_fmt(con.subcon.lengthfield, where))
    if isinstance(con, cs.FocusedSeq) and [s.name for s in con.subcons] == ["count", "items"]:
        count, items = con.subcons
        return Field(
            name,
            LIST,
            _int_fmt(items.subcon.subcon, where),
            prefix=_int_fmt(count.subcon.subcon, where),
            max_items=messages.LIST_LIMITS[(owner or msg, name)],
        )
    if con is cs.GreedyBytes:
        if not last:
            raise TypeError(f"{where}: GreedyBytes must be the last field")
        return Field(name, BYTES, "s")
    raise TypeError(f"{where}: unsupported construct {type(con).__name__}")


TAIL_FIELDS = frozenset(messages.TAILS) | frozenset(messages.TAIL_RUNS)
RECORDS = {name: Record(name, tuple(_field(s, name, False, name) for s in run)) for name, run in messages.RECORDS}


def layout_hash(text: str) -> int:
    """u16 layout hash: the first two bytes of SHA-256 of a layout text, little-endian."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:2], "little")


def _record_at(subs: list) -> tuple[str, int] | None:
    """(record name, index) of the record whose fields stand in subs in a row, if one does."""
    for rec, run in messages.RECORDS:
        for i in range(len(subs) - len(run) + 1):
            if all(subs[i + k] is sub for k, sub in enumerate(run)):
                return rec, i
    return None


def _message(name: str, type_id: int, con: cs.Struct) -> Message:
    subs = con.subcons
    rec = _record_at(subs)
    start, stop = (rec[1], rec[1] + len(RECORDS[rec[0]].fields)) if rec else (0, 0)
    fields = tuple(_field(s, name, i == len(subs) - 1, rec[0] if rec and start <= i < stop else "")
                   for i, s in enumerate(subs))
    msg = Message(name, type_id, fields, con, name in messages.COMMANDS, record=rec)
    return dataclasses.replace(msg, layout_hash=layout_hash(msg.layout_text()))


def load() -> tuple[Message, ...]:
    seen: set[int] = set()
    out = []
    for name, type_id, con in messages.MESSAGES:
        if type_id in seen or not 0 < type_id < 256:
            raise ValueError(f"{name}: type id {type_id:#x} is reused or out of range")
        seen.add(type_id)
        out.append(_message(name, type_id, con))
    for (name, field), tail in (*messages.TAILS.items(), *messages.TAIL_RUNS.items()):
        msg = next((m for m in out if m.name == name), None)
        if msg is None or not msg.fields or msg.fields[-1].name != field or msg.fields[-1].kind != BYTES:
            raise TypeError(f"{name}.{field}: a tail must be the message's last field, of GreedyBytes")
        for sub in tail.subcons:
            _int_fmt(sub.subcon, f"{name}.{field}.{sub.name}")
    missing = messages.CORE - {m.name for m in out}
    if missing:
        raise ValueError(f"CORE names messages that do not exist: {sorted(missing)}")
    return tuple(out)


def _check_periods() -> None:
    """EFFECT_PERIODS names every effect once, each (lo, hi, default) with lo <= default <= hi in u16."""
    effects = {str(k) for k in messages.Effect.encmapping}
    if set(messages.EFFECT_PERIODS) != effects:
        raise ValueError(f"EFFECT_PERIODS must name every effect: {sorted(effects ^ set(messages.EFFECT_PERIODS))}")
    for name, period in messages.EFFECT_PERIODS.items():
        if period is not None and not (len(period) == 3 and 0 < period[0] <= period[2] <= period[1] <= 65535):
            raise ValueError(f"EFFECT_PERIODS[{name!r}] = {period!r}: want (lo, hi, default), 0 < lo <= default <= hi <= 65535")


_check_periods()


MESSAGES: tuple[Message, ...] = load()
BY_NAME = {m.name: m for m in MESSAGES}
BY_TYPE = {m.type_id: m for m in MESSAGES}
ENUMS = {name: {str(k): int(v) for k, v in enum.encmapping.items()} for name, enum in messages.ENUMS}


def schema_text() -> str:
    """Canonical description hashed into the fingerprint.

    Covers the header, limits, message ids, field names and field types. Enum
    values are left out on purpose: a host that knows a newer effect still
    talks to an older pod, which answers NACK unknown_effect.
    """
    lines = [
        f"version {messages.PROTOCOL_VERSION}",
        f"max_frame {messages.MAX_FRAME}",
        "header " + " ".join(f"{s.name}:{_int_fmt(s.subcon, 'header')}" for s in messages.Header.subcons),
        "crc crc32-ieee-le",
    ]
    for m in MESSAGES:
        lines.append(f"{m.type_id:#04x} {m.name} " + " ".join(f.signature() for f in m.fields))
    return "\n".join(lines) + "\n"


def fingerprint() -> int:
    """32-bit schema fingerprint (first four bytes of SHA-256, little-endian)."""
    digest = hashlib.sha256(schema_text().encode()).digest()
    return int.from_bytes(digest[:4], "little")


FINGERPRINT = fingerprint()


def write_or_check(target, text: str, argv: list[str] | None, what: str) -> int:
    """Command line of a generated file: rewrite it, or with --check exit 1 if stale."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(description=f"write or check {what}")
    ap.add_argument("--check", action="store_true", help="exit 1 if the checked-in file is stale")
    if ap.parse_args(argv).check:
        if not target.exists() or target.read_text() != text:
            print(f"{target} is stale: run `make codec`", file=sys.stderr)
            return 1
        return 0
    target.write_text(text)
    print(f"wrote {target}")
    return 0


def write_or_check_all(targets, argv: list[str] | None) -> int:
    """write_or_check for each (target, text, what); 1 if any is stale."""
    rc = 0
    for target, text, what in targets:
        rc = write_or_check(target, text, argv, what) or rc
    return rc
