"""Per-message compatibility between a host and a pod (docs/protocol.md, "Compatibility").

Every message has a u16 layout hash (schema.Message.layout_hash). A pod names
the layouts it speaks in its HELLO's table (type id, layout hash per message);
a pod built before the table existed sends none, and its HELLO fingerprint is
looked up in protocol/known_schemas.json, which holds the table of every
released schema.

    verdict = judge(hello_fields)
    verdict.refusal       # "" or why the pod cannot be used (a CORE message differs, ...)
    verdict.unsupported   # {message name: reason} of the host's messages the pod cannot take
    verdict.layouts       # {type id: layout hash} the pod speaks: what the codec decodes by

A message whose hash matches is used; one the pod lacks or lays out otherwise
is unsupported with that pod; only a CORE message that differs refuses it.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import messages, schema

KNOWN_PATH = Path(__file__).resolve().parent / "known_schemas.json"
ENTRY = messages.HelloTableEntry
ENTRY_SIZE = ENTRY.sizeof()

# {type id: layout hash} of this host's definitions
HOST_LAYOUTS: dict[int, int] = {m.type_id: m.layout_hash for m in schema.MESSAGES}
# what a peer whose table is not known yet is decoded by: the core messages only
_ID: dict[str, int] = {m.name: m.type_id for m in schema.MESSAGES}
CORE_LAYOUTS: dict[int, int] = {m.type_id: m.layout_hash for m in schema.MESSAGES if m.name in messages.CORE}


class BadTable(ValueError):
    """A HELLO table that is not a whole number of entries, or names a type id twice."""


def table_bytes(msgs: tuple[schema.Message, ...] = schema.MESSAGES) -> bytes:
    """The HELLO table of these definitions: (type_id u8, layout_hash u16 LE) per message."""
    return b"".join(ENTRY.build({"type_id": m.type_id, "layout_hash": m.layout_hash}) for m in msgs)


def parse_table(raw: bytes) -> dict[int, int]:
    """{type id: layout hash} of a HELLO table."""
    if len(raw) % ENTRY_SIZE:
        raise BadTable(f"hello.table: {len(raw)} bytes is not a whole number of {ENTRY_SIZE}-byte entries")
    out: dict[int, int] = {}
    for i in range(0, len(raw), ENTRY_SIZE):
        entry = ENTRY.parse(raw[i:i + ENTRY_SIZE])
        if entry.type_id in out:
            raise BadTable(f"hello.table: type {entry.type_id:#04x} is listed twice (entry {i // ENTRY_SIZE})")
        out[entry.type_id] = entry.layout_hash
    return out


@functools.cache
def known() -> dict[int, dict[int, tuple[str, int]]]:
    """fingerprint -> {type id: (name, layout hash)} of every released schema."""
    data = json.loads(KNOWN_PATH.read_text())
    return {
        int(fp, 16): {int(t, 16): (name, int(h, 16)) for t, (name, h) in table.items()}
        for fp, table in data["schemas"].items()
    }


def recorded_core() -> dict[str, int]:
    """The layout hash recorded for each core message: it may never change."""
    return {name: int(h, 16) for name, h in json.loads(KNOWN_PATH.read_text())["core"].items()}


def pod_layouts(hello: dict[str, Any]) -> dict[int, int] | None:
    """{type id: layout hash} the pod speaks: its HELLO table, or for a pod that sends none
    the released schema its fingerprint names; None if that is not known. Raises BadTable."""
    raw = bytes(hello.get("table") or b"")
    if raw:
        return parse_table(raw)
    table = known().get(hello["fingerprint"])
    return None if table is None else {t: h for t, (_, h) in table.items()}


def unsupported(layouts: dict[int, int]) -> dict[str, str]:
    """{name: reason} of the host's messages the pod lacks or lays out otherwise."""
    out: dict[str, str] = {}
    for m in schema.MESSAGES:
        pod = layouts.get(m.type_id)
        if pod is None:
            out[m.name] = "not known to the pod"
        elif pod != m.layout_hash:
            out[m.name] = f"layout differs: pod {pod:#06x}, host {m.layout_hash:#06x}"
    return out


@dataclass(frozen=True)
class Verdict:
    refusal: str = ""  # why the pod cannot be used; "" if it can
    unsupported: dict[str, str] = field(default_factory=dict)
    # {type id: layout hash} to decode the pod's frames by: the host's core ones if refused
    layouts: dict[int, int] = field(default_factory=lambda: dict(CORE_LAYOUTS))


def judge(hello: dict[str, Any]) -> Verdict:
    """What this host can use of the pod that sent ``hello``."""
    fp = hello["fingerprint"]
    try:
        layouts = pod_layouts(hello)
    except BadTable as exc:
        return Verdict(refusal=str(exc))
    if layouts is None:
        return Verdict(refusal=f"unknown schema fingerprint {fp:#010x} and no message table in HELLO")
    missing = unsupported(layouts)
    # a core message laid out otherwise refuses the pod; one it lacks does too, except the
    # update messages: a pod built before them is used, it just cannot be updated over the link
    core = sorted(name for name in missing if name in messages.CORE
                  and not (name in messages.UPDATE_MESSAGES and layouts.get(_ID[name]) is None))
    if core:
        return Verdict(refusal=f"core message {core[0]}: {missing[core[0]]}", unsupported=missing)
    return Verdict(unsupported=missing, layouts=layouts)


def decode_layouts(hello: dict[str, Any]) -> dict[int, int]:
    """The layouts to decode a pod's frames by after its ``hello``: the pod's own; for a
    refused pod the host's core ones only (so the HELLO of a reflashed pod is still read)."""
    return judge(hello).layouts
