"""MQTT set commands: JSON in, validated scene fields out, JSON results.

A bad command never reaches a pod: it is answered on ``.../set/result`` with
an error naming the offending field (``scene.color.1``).
"""
from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationError

from ..protocol import schema

_EFFECTS = tuple(schema.ENUMS["effect"])  # names from the protocol definition
_MAX_PARAMS = schema.BY_NAME["scene"].fields[-1].max_items

U8 = Annotated[StrictInt, Field(ge=0, le=255)]
U16 = Annotated[StrictInt, Field(ge=0, le=65535)]
I16 = Annotated[StrictInt, Field(ge=-32768, le=32767)]


class SceneSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    effect: Literal[_EFFECTS]  # type: ignore[valid-type]
    brightness: Annotated[StrictFloat, Field(ge=0, le=1)] = 1.0
    color: tuple[U8, U8, U8] = (255, 255, 255)
    transition_ms: U16 = 0
    period_ms: U16 = 4000
    params: Annotated[list[I16], Field(max_length=_MAX_PARAMS)] = []

    def fields(self) -> dict[str, Any]:
        """The wire fields of a SCENE message."""
        return {
            "effect": self.effect,
            "brightness": round(self.brightness * 255),
            "color": list(self.color),
            "transition_ms": self.transition_ms,
            "period_ms": self.period_ms,
            "params": list(self.params),
        }


class SetCommand(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Annotated[str, Field(max_length=64)] | None = None
    scene: SceneSpec


class BadCommand(ValueError):
    def __init__(self, cmd_id: str | None, field: str | None, message: str):
        super().__init__(message)
        self.cmd_id, self.field = cmd_id, field

    def result(self) -> dict[str, Any]:
        return error_result(self.cmd_id, str(self), self.field)


def parse(payload: bytes) -> SetCommand:
    """Validate one set payload; raises BadCommand naming the field."""
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadCommand(None, None, f"invalid JSON: {exc}") from None
    cmd_id = data.get("id") if isinstance(data, dict) and isinstance(data.get("id"), str) else None
    try:
        return SetCommand.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or None
        raise BadCommand(cmd_id, field, f"{field or 'command'}: {err['msg']}") from None


def peek_id(payload: bytes) -> str | None:
    """The command's ``id`` if the payload is a JSON object with a string id (else None)."""
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadCommand(None, None, f"invalid JSON: {exc}") from None
    cmd_id = data.get("id") if isinstance(data, dict) else None
    return cmd_id if isinstance(cmd_id, str) and len(cmd_id) <= 64 else None


def ok_result(cmd_id: str | None) -> dict[str, Any]:
    return {"id": cmd_id, "ok": True, "ack": "ok"}


def nack_result(cmd_id: str | None, reason: str) -> dict[str, Any]:
    return {"id": cmd_id, "ok": False, "nack": reason}


def error_result(cmd_id: str | None, message: str, field: str | None = None) -> dict[str, Any]:
    return {"id": cmd_id, "ok": False, "error": message, "field": field}
