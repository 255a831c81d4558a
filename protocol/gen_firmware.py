"""Generate the firmware's codec (firmware/pod/wire.py) from messages.py.

The board has no construct, so each message becomes struct-based functions:

    pack_<name>(buf, off, *fields) -> end      writes the payload at buf[off:]
    unpack_<name>(buf, off, end) -> tuple      reads it back, checking bounds

The pod's codec holds pack_ for what the pod sends (messages.POD_SENDS) and
unpack_ for what it receives: code in the pod's heap for the other direction
would only take room (~10 KB of the 256 KB budget). The other direction goes
to tests/firmware/peer_wire.py, for the MicroPython tests that play the host,
and so do the messages the pod reads in place (messages.POD_READS_RAW: no
unpack_ on the pod) and the enums it keeps as its own constants
(messages.POD_OWN_ENUMS).

A record (messages.RECORDS: the scene) is one value in the pod's codec: a
class of its own in wire.py (Scene), which unpack_ returns in place of the
record's fields and pack_ takes as one argument, so the pod passes a scene
whole. The test side (peer_wire.py) keeps the fields flat, as a host sends them.

Consecutive fixed-size fields are packed with one struct call. A bytes or
list field given as an int means that many bytes or items are already in
place after the fixed part (and a list's count): the pod copies EEG samples and
band powers straight into the frame instead of packing them one by one.

The board's small ints are 31-bit: a u32 at or above 2**30 is a heap object,
so the u32 fields the firmware computes per sample or per second never pass
through one. A SPLIT32 field is held by the firmware as its low 30 bits plus
the two bits above them (`<name>_hi`, how often the 30 bits wrapped) and
packed as two u16 halves; unpacked, it gives the low 30 bits (the pod compares
sequence numbers and ticks modulo 2**30). A TICKS30 field (a pod ticks_us
instant from the host) is unpacked masked to the 2**30 tick period the same way.
The bytes on the wire do not change. Usage:
    python -m hypnolum.protocol.gen_firmware            # rewrite the file
    python -m hypnolum.protocol.gen_firmware --check    # exit 1 if it is stale
"""
from __future__ import annotations

import struct
import sys
from pathlib import Path

from . import compat, messages, schema
from .schema import ARRAY, BYTES, ENUM, INT, LIST, STR

TARGET = Path(__file__).resolve().parent.parent / "firmware" / "pod" / "wire.py"
PEER_TARGET = Path(__file__).resolve().parent.parent / "tests" / "firmware" / "peer_wire.py"

SPLIT32 = {("eeg_batch", "first_seq"), ("eeg_bands", "last_seq"), ("eeg_replay", "from_seq"), ("status", "uptime_ms")}
TICKS30 = {("scene_at", "at_us"), ("frame_phase", "anchor_us")}


def _is_split(msg, f) -> bool:
    return f.kind == INT and f.fmt == "I" and (msg.name, f.name) in SPLIT32


def _is_low30(msg, f) -> bool:
    return f.kind == INT and f.fmt == "I" and ((msg.name, f.name) in SPLIT32 or (msg.name, f.name) in TICKS30)


def _groups(fields):
    """Split fields into runs of fixed-size ones and single variable ones."""
    run = []
    for f in fields:
        if f.kind in (INT, ENUM, ARRAY):
            run.append(f)
            continue
        if run:
            yield "fixed", run
            run = []
        yield "var", f
    if run:
        yield "fixed", run


def _fixed_fmt(run, msg=None, halves=None) -> str:
    """The struct format of a run; a u32 for which halves(msg, f) holds is two u16, 'HH'."""
    out = []
    for f in run:
        if halves is not None and halves(msg, f):
            out.append("HH")
        else:
            out.append(f.fmt * (f.count if f.kind == ARRAY else 1))
    return "<" + "".join(out)


def _in_record(msg: schema.Message, whole: bool):
    """f -> the name of the record f belongs to, if the codec passes msg's record whole ("" if not)."""
    mine = {f.name for f in msg.record_fields()} if whole else set()
    return lambda f: msg.record[0] if f.name in mine else ""


def _pack_args(msg: schema.Message, whole: bool) -> list[str]:
    out = []
    rec = _in_record(msg, whole)
    for f in msg.fields:
        if rec(f):
            if rec(f) not in out:
                out.append(rec(f))
            continue
        out.append(f.name)
        if _is_split(msg, f):
            out.append(f"{f.name}_hi")
    return out


def _pack_fn(msg: schema.Message, whole: bool = False) -> list[str]:
    """pack_<name>; whole: the record msg carries is one argument (a record object)."""
    args = "".join(", " + a for a in _pack_args(msg, whole))
    rec = _in_record(msg, whole)

    def ref(f):
        return f"{rec(f)}.{f.name}" if rec(f) else f.name

    out = [f"def pack_{msg.name}(buf, off{args}):"]
    for kind, item in _groups(msg.fields):
        if kind == "fixed":
            fmt = _fixed_fmt(item, msg, _is_split)
            vals = []
            for f in item:
                if _is_split(msg, f):
                    vals += [f"{f.name} & 0xFFFF", f"(({f.name} >> 16) & 0x3FFF) | ({f.name}_hi << 14)"]
                elif f.kind == ARRAY:
                    vals += [f"{ref(f)}[{i}]" for i in range(f.count)]
                else:
                    vals.append(ref(f))
            out.append(f"    struct.pack_into({fmt!r}, buf, off, {', '.join(vals)})")
            out.append(f"    off += {struct.calcsize(fmt)}")
        elif item.kind == STR:
            out.append(f"    off = _pack_str(buf, off, {item.name}, {item.prefix!r})")
        elif item.kind == LIST:
            out.append(f"    off = _pack_list(buf, off, {ref(item)}, {item.prefix!r}, {item.fmt!r}, {item.max_items})")
        elif item.kind == BYTES:
            # already in place (an int: their length) is the pod's hot path: no call for it
            out.append(f"    if isinstance({item.name}, int):")
            out.append(f"        off += {item.name}")
            out.append("    else:")
            out.append(f"        off = _pack_bytes(buf, off, {item.name})")
    out.append("    return off")
    return out


def _plain_unpack_fn(msg: schema.Message) -> list[str] | None:
    """unpack_<name> for a message of fixed fields read as they are: struct's own tuple
    is the result (no locals, no second tuple); None for any other message."""
    groups = list(_groups(msg.fields))
    if not groups:  # a message without fields: its payload is empty
        return [
            f"def unpack_{msg.name}(buf, off, end):",
            "    if off != end:",
            f"        raise ValueError('{msg.name}: trailing bytes')",
            "    return ()",
        ]
    if len(groups) != 1 or groups[0][0] != "fixed":
        return None
    run = groups[0][1]
    if any(f.kind == ARRAY or _is_low30(msg, f) for f in run):
        return None
    fmt = _fixed_fmt(run)
    size = struct.calcsize(fmt)
    return [
        f"def unpack_{msg.name}(buf, off, end):",
        f"    if off + {size} > end:",
        f"        raise ValueError('{msg.name}: short payload')",
        f"    if off + {size} != end:",
        f"        raise ValueError('{msg.name}: trailing bytes')",
        f"    return struct.unpack_from({fmt!r}, buf, off)",
    ]


def _unpack_fn(msg: schema.Message, whole: bool = False) -> list[str]:
    """unpack_<name>; whole: the record msg carries comes as one value (a new record object)."""
    plain = _plain_unpack_fn(msg)
    if plain is not None:
        return plain
    out = [f"def unpack_{msg.name}(buf, off, end):"]
    names = []
    for kind, item in _groups(msg.fields):
        if kind == "fixed":
            fmt = _fixed_fmt(item, msg, _is_low30)
            size = struct.calcsize(fmt)
            targets = []
            for f in item:
                if f.kind == ARRAY:
                    targets += [f"_{f.name}{i}" for i in range(f.count)]
                elif _is_low30(msg, f):
                    targets += [f"_{f.name}_lo", f"_{f.name}_hi"]
                else:
                    targets.append(f.name)
            out.append(f"    if off + {size} > end:")
            out.append(f"        raise ValueError('{msg.name}: short payload')")
            lhs = ", ".join(targets) + ("," if len(targets) == 1 else "")
            out.append(f"    {lhs} = struct.unpack_from({fmt!r}, buf, off)")
            out.append(f"    off += {size}")
            for f in item:
                if f.kind == ARRAY:
                    out.append(f"    {f.name} = ({', '.join(f'_{f.name}{i}' for i in range(f.count))},)")
                elif _is_low30(msg, f):
                    out.append(f"    {f.name} = _{f.name}_lo | (_{f.name}_hi & 0x3FFF) << 16  # low 30 bits")
            names += [f.name for f in item]
        elif item.kind == STR:
            out.append(f"    {item.name}, off = _unpack_str(buf, off, end, {item.prefix!r})")
            names.append(item.name)
        elif item.kind == LIST:
            out.append(
                f"    {item.name}, off = _unpack_list(buf, off, end, {item.prefix!r}, {item.fmt!r}, {item.max_items})"
            )
            names.append(item.name)
        elif item.kind == BYTES:
            out.append(f"    {item.name} = memoryview(buf)[off:end]")
            out.append("    off = end")
            names.append(item.name)
    out.append("    if off != end:")
    out.append(f"        raise ValueError('{msg.name}: trailing bytes')")
    rec = _in_record(msg, whole)
    if any(rec(f) for f in msg.fields):
        inner = [f.name for f in msg.fields if rec(f)]
        made = f"{schema.RECORDS[msg.record[0]].class_name}({', '.join(inner)})"
        names = [n for n in names if n not in inner]
        names.insert(msg.record[1], made)
    out.append(f"    return ({', '.join(names)},)")
    return out


def _record_class(rec: schema.Record) -> list[str]:
    """The pod's value of a record: made once, then updated in place (assign)."""
    args, init, assign = [], [], []
    for f in rec.fields:
        if f.kind == ARRAY:
            args.append(f"{f.name}={(0,) * f.count!r}")
            kind = "bytearray" if f.fmt == "B" else "list"
            init.append(f"        self.{f.name} = {kind}({f.name})")
            assign += [f"        a = self.{f.name}", f"        b = o.{f.name}"]
            assign += [f"        a[{i}] = b[{i}]" for i in range(f.count)]
        else:
            args.append(f"{f.name}={'()' if f.kind == LIST else '0'}")
            init.append(f"        self.{f.name} = {f.name}")
            assign.append(f"        self.{f.name} = o.{f.name}")
    users = ", ".join(m.name.upper() for m in schema.MESSAGES if m.record and m.record[0] == rec.name)
    return [
        "",
        f"class {rec.class_name}:",
        f'    """The fields {users} carry, as one value (messages.RECORDS). unpack_ gives a new one;',
        '    a holder keeps its own and takes another\'s fields in place with assign."""',
        "",
        f"    def __init__(self, {', '.join(args)}):",
        *init,
        "",
        "    def assign(self, o):",
        "        # o's fields, in place: no allocation",
        *assign,
        "",
    ]


_HELPERS = '''
def _pack_str(buf, off, s, pfmt):
    if isinstance(s, str):
        s = s.encode()
    n = len(s)
    size = struct.calcsize(pfmt)
    struct.pack_into('<' + pfmt, buf, off, n)
    off += size
    buf[off:off + n] = s
    return off + n


def _unpack_str(buf, off, end, pfmt):
    size = struct.calcsize(pfmt)
    if off + size > end:
        raise ValueError('short string prefix')
    n = struct.unpack_from('<' + pfmt, buf, off)[0]
    off += size
    if off + n > end:
        raise ValueError('short string')
    return str(bytes(buf[off:off + n]), 'utf-8'), off + n


def _pack_list(buf, off, items, pfmt, ifmt, max_items):
    # an int means: that many items were already written in place after the count
    n = items if isinstance(items, int) else len(items)
    if n > max_items:
        raise ValueError('too many items')
    struct.pack_into('<' + pfmt, buf, off, n)
    off += struct.calcsize(pfmt)
    isize = struct.calcsize(ifmt)
    if isinstance(items, int):
        return off + n * isize
    fmt = '<' + ifmt
    for v in items:
        struct.pack_into(fmt, buf, off, v)
        off += isize
    return off


def _unpack_list(buf, off, end, pfmt, ifmt, max_items):
    size = struct.calcsize(pfmt)
    if off + size > end:
        raise ValueError('short list prefix')
    n = struct.unpack_from('<' + pfmt, buf, off)[0]
    off += size
    isize = struct.calcsize(ifmt)
    if n > max_items or off + n * isize > end:
        raise ValueError('bad list length')
    items = tuple(struct.unpack_from('<' + ifmt, buf, off + i * isize)[0] for i in range(n))
    return items, off + n * isize


def _pack_bytes(buf, off, data):
    # an int means: that many bytes were already written in place
    if isinstance(data, int):
        return off + data
    n = len(data)
    buf[off:off + n] = data
    return off + n
'''


def render() -> str:
    lines = [
        "# GENERATED by protocol/gen_firmware.py from protocol/messages.py. DO NOT EDIT.",
        "# Regenerate with `make codec`; a test fails when this file is stale.",
        '"""Pod wire protocol v1: struct-based codec for the firmware."""',
        "import struct",
        "from micropython import const",
        "",
        f"FINGERPRINT = const({schema.FINGERPRINT:#010x})",
    ]
    lines += [f"{name} = const({value})" for name, value in messages.CONSTANTS]
    lines.append("")
    lines.append("# message types")
    lines += [f"{m.const_name} = const({m.type_id:#04x})" for m in schema.MESSAGES]
    for name, mapping in schema.ENUMS.items():
        if name not in messages.POD_OWN_ENUMS:
            lines += _enum_lines(name, mapping)
    lines.append("")
    lines.append("# effect id -> (lowest, highest, default) period_ms; an effect not here has no period")
    eff = schema.ENUMS["effect"]
    body = ", ".join(f"{eff[k]}: {tuple(v)!r}" for k, v in messages.EFFECT_PERIODS.items() if v is not None)
    lines.append(f"EFFECT_PERIODS = {{{body}}}")
    lines.append("")
    lines.append("# field indices of the commands (a NACK's detail names the refused field by its index)")
    for m in schema.MESSAGES:
        if m.command:
            lines += [f"F_{m.name.upper()}_{f.name.upper()} = const({i})" for i, f in enumerate(m.fields)]
    lines.append("")
    lines.append("# HELLO's table: (type id u8, layout hash u16 LE) of every message this pod knows")
    lines.append(f"MESSAGE_TABLE = {compat.table_bytes()!r}")
    lines.append("")
    lines.append(_HELPERS)
    for rec in schema.RECORDS.values():
        lines += _record_class(rec)
    lines += _functions(pod_side=True)
    return "\n".join(lines) + "\n"


def _enum_lines(name: str, mapping: dict[str, int]) -> list[str]:
    body = ", ".join(f"{k!r}: {v}" for k, v in mapping.items())
    return ["", f"# enum {name}", *(f"{name.upper()}_{key.upper()} = const({value})" for key, value in mapping.items()),
            f"{name.upper()} = {{{body}}}"]


def _functions(pod_side: bool) -> list[str]:
    # pack_ for what this side sends, unpack_ for what it receives (the pod: but what it reads
    # in place), and their tables
    sends = [m for m in schema.MESSAGES if (m.name in messages.POD_SENDS) == pod_side]
    gets = [m for m in schema.MESSAGES if (m.name in messages.POD_SENDS) != pod_side
            and not (pod_side and m.name in messages.POD_READS_RAW)]
    if not pod_side:  # the tests read those as the pod lays them out
        gets += [m for m in schema.MESSAGES if m.name in messages.POD_READS_RAW]
    lines: list[str] = []
    for m in sends:
        lines += ["", *_pack_fn(m, whole=pod_side), ""]
    for m in gets:
        lines += ["", *_unpack_fn(m, whole=pod_side), ""]
    lines.append("")
    lines.append("PACK = {" + ", ".join(f"{m.const_name}: pack_{m.name}" for m in sends) + "}")
    lines.append("UNPACK = {" + ", ".join(f"{m.const_name}: unpack_{m.name}" for m in gets) + "}")
    return lines


def render_peer() -> str:
    """The host's side of the pod's codec, under MicroPython, for the firmware tests."""
    lines = [
        "# GENERATED by protocol/gen_firmware.py from protocol/messages.py. DO NOT EDIT.",
        "# Regenerate with `make codec`; a test fails when this file is stale.",
        '"""The other direction of pod/wire.py: pack_ for what a host sends, unpack_ for',
        'what the pod sends. For the firmware tests that play the host; not on a pod."""',
        "import struct",
        "",
        "from pod.wire import *  # noqa: F401,F403  (the constants)",
        "from pod.wire import _pack_bytes, _pack_list, _pack_str, _unpack_list, _unpack_str  # noqa: F401",
        "from micropython import const",
    ]
    # names for the tests; the pod's code needs none of them
    lines.append("")
    lines.append("NAMES = {" + ", ".join(f"{m.const_name}: {m.name!r}" for m in schema.MESSAGES) + "}")
    lines.append("COMMANDS = (" + "".join(f"{m.const_name}, " for m in schema.MESSAGES if m.command) + ")")
    lines.append("FIELDS = {")
    for m in schema.MESSAGES:
        names = "".join(repr(f.name) + ", " for f in m.fields)
        lines.append(f"    {m.const_name}: ({names.rstrip()}),")
    lines.append("}")
    for name, mapping in schema.ENUMS.items():
        if name in messages.POD_OWN_ENUMS:  # not in pod/wire.py: the pod has them as its own constants
            lines += _enum_lines(name, mapping)
    lines += ["", "# the record each message carries, whole in pod/wire.py: type -> (its class, its fields, "
              "the index it stands at)"]
    lines.append("POD_WHOLE = {" + ", ".join(
        f"{m.const_name}: ({schema.RECORDS[m.record[0]].class_name}, "
        f"({''.join(repr(f.name) + ', ' for f in m.record_fields()).rstrip()}), {m.record[1]})"
        for m in schema.MESSAGES if m.record) + "}")
    lines += ["", "# what the pod reads in place: no unpack_ in pod/wire.py (its unpack_ is here)",
              "POD_READS_RAW = (" + "".join(f"{m.const_name}, " for m in schema.MESSAGES
                                            if m.name in messages.POD_READS_RAW) + ")"]
    lines += _functions(pod_side=False)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    return schema.write_or_check_all(((TARGET, render(), "firmware/pod/wire.py"),
                                      (PEER_TARGET, render_peer(), "tests/firmware/peer_wire.py")), argv)


if __name__ == "__main__":
    sys.exit(main())
