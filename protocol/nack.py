"""A pod's NACK read for people: the refused field by name and the range it allows.

A NACK's ``detail`` (protocol/messages.py ``NackDetail``) names the failing
field by its index in the refused message, an item inside it (a list or
array), and an inclusive range. It may be empty: the pod named no field, or
it is a pod from before the detail existed, whose NACK ends after ``reason``.

    describe("scene", nack_fields) -> {"field": "period_ms", "allowed": [500, 3000]}

``field`` is the wire field's name, with ``.<item>`` for an item of a list or
array (``params.1``); ``allowed`` is ``[lo, hi]`` for a number (for a whole
list: how many items it may hold), and the list of names for a named value
(effect, palette, mode). A detail that does not fit the message raises
``BadDetail``.
"""
from __future__ import annotations

from typing import Any

from . import messages, schema

_DETAIL = messages.NackDetail
NO_FIELD = messages.NACK_NO_FIELD


class BadDetail(ValueError):
    """A NACK detail that names no field of the refused message, or is the wrong size."""


def detail(fields: dict[str, Any]) -> dict[str, int] | None:
    """The NACK's detail as {"field", "item", "lo", "hi"}, or None when it names no field."""
    raw = fields.get("detail") or b""
    if not raw:
        return None
    if len(raw) != _DETAIL.sizeof():
        raise BadDetail(f"nack detail of {len(raw)} bytes, expected {_DETAIL.sizeof()}")
    d = _DETAIL.parse(raw)
    if d.field == NO_FIELD:
        return None
    return {"field": d.field, "item": d.item, "lo": d.lo, "hi": d.hi}


def describe(msg_name: str, fields: dict[str, Any]) -> dict[str, Any] | None:
    """{"field": name, "allowed": range} of a NACK to a ``msg_name`` command, or None when
    the pod named no field. Raises BadDetail for a detail that does not fit ``msg_name``."""
    d = detail(fields)
    if d is None:
        return None
    msg = schema.BY_NAME.get(msg_name)
    if msg is None:
        raise BadDetail(f"nack to an unknown message {msg_name!r}")
    if d["field"] >= len(msg.fields):
        raise BadDetail(f"nack names field {d['field']} of {msg_name}, which has {len(msg.fields)}")
    f = msg.fields[d["field"]]
    name = f.name
    lo, hi = d["lo"], d["hi"]
    if d["item"] != NO_FIELD:
        if f.kind not in (schema.LIST, schema.ARRAY):
            raise BadDetail(f"nack names item {d['item']} of {msg_name}.{name}, which holds one value")
        name = f"{name}.{d['item']}"
    if f.kind == schema.ENUM:
        names = [k for k, v in schema.ENUMS[f.enum].items() if lo <= v <= hi]
        return {"field": name, "allowed": names}
    return {"field": name, "allowed": [lo, hi]}


class Refusal(str):
    """A NACK's reason name (equal to the plain string: ``reason == "busy"`` holds), with
    what the pod named: ``field`` and ``allowed`` (None when it named no field)."""

    field: str | None
    allowed: list[Any] | None

    def __new__(cls, reason: str, described: dict[str, Any] | None = None) -> Refusal:
        obj = super().__new__(cls, reason)
        obj.field = described["field"] if described else None
        obj.allowed = described["allowed"] if described else None
        return obj

    def detail(self) -> dict[str, Any]:
        """{"field": ..., "allowed": ...} for a result, or {} when the pod named no field."""
        return {} if self.field is None else {"field": self.field, "allowed": self.allowed}
