"""MQTT set commands: JSON in, validated scene fields out, JSON results.

A bad command never reaches a pod: it is answered on ``.../set/result`` with
an error naming the offending field (``scene.color.1``). Payloads are decoded
by the bounded decoder (host/inbound.py): an oversized, too deeply nested or
non-finite one is refused the same way, before validation.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, ValidationError, model_validator

from ..protocol import schema
from ..protocol.messages import SAFE_MODE_CONFIRM
from .inbound import Inbound, InboundError

_EFFECTS = tuple(schema.ENUMS["effect"])  # names from the protocol definition
_PALETTES = tuple(schema.ENUMS["palette"])
_NIGHT_MODES = tuple(schema.ENUMS["night_mode"])
_MAX_PARAMS = schema.BY_NAME["scene"].fields[-1].max_items
_STROBE_OPT_IN = 0x01  # protocol SCENE_FLAG_STROBE_OPT_IN

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
    palette: Literal[_PALETTES] = "warm"  # type: ignore[valid-type]
    # a stroboscopic effect is refused unless asked for explicitly (and enabled in pod.json)
    strobe_opt_in: StrictBool = False
    params: Annotated[list[I16], Field(max_length=_MAX_PARAMS)] = []

    def fields(self) -> dict[str, Any]:
        """The wire fields of a SCENE message."""
        return {
            "effect": self.effect,
            "brightness": round(self.brightness * 255),
            "color": list(self.color),
            "transition_ms": self.transition_ms,
            "period_ms": self.period_ms,
            "palette": self.palette,
            "flags": _STROBE_OPT_IN if self.strobe_opt_in else 0,
            "params": list(self.params),
        }


Minute = Annotated[StrictInt, Field(ge=0, le=1439)]


class NightSpec(BaseModel):
    """Night limits: "on", "off", or "schedule" between two minutes of the local day."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Literal[_NIGHT_MODES]  # type: ignore[valid-type]
    start_min: Minute = 22 * 60
    end_min: Minute = 7 * 60

    def fields(self, now_min: int) -> dict[str, Any]:
        """The wire fields of a NIGHT_MODE message; now_min: host's local minute of the day."""
        return {"mode": self.mode, "start_min": self.start_min, "end_min": self.end_min, "now_min": now_min}


class SetCommand(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Annotated[str, Field(max_length=64)] | None = None
    scene: SceneSpec | None = None
    night: NightSpec | None = None
    # reset the pod into safe mode (REPL only, LEDs dark, firmware not started); alone
    safe_mode: StrictBool = None  # type: ignore[assignment]  # true only (null and false refused)

    @model_validator(mode="after")
    def _something(self) -> SetCommand:
        if self.safe_mode is False:
            raise ValueError("safe_mode: only true")
        if self.safe_mode:
            if self.scene is not None or self.night is not None:
                raise ValueError("safe_mode goes alone: the pod resets, it shows no scene")
            return self
        if self.scene is None and self.night is None:
            raise ValueError("a set command needs scene and/or night (or safe_mode)")
        return self

    def messages(self, now_min: int | None = None) -> list[tuple[str, dict[str, Any]]]:
        """The pod commands to send, in order: night limits first, then the scene."""
        out: list[tuple[str, dict[str, Any]]] = []
        if self.safe_mode:
            return [("safe_mode", {"confirm": SAFE_MODE_CONFIRM})]
        if self.night is not None:
            if now_min is None:
                import time

                lt = time.localtime()
                now_min = lt.tm_hour * 60 + lt.tm_min
            out.append(("night_mode", self.night.fields(now_min)))
        if self.scene is not None:
            out.append(("scene", self.scene.fields()))
        return out


class BadCommand(ValueError):
    def __init__(self, cmd_id: str | None, field: str | None, message: str):
        super().__init__(message)
        self.cmd_id, self.field = cmd_id, field

    def result(self) -> dict[str, Any]:
        return error_result(self.cmd_id, str(self), self.field)


_INBOUND = Inbound()  # default limits, for callers without a config


def decode(payload: bytes, inbound: Inbound | None = None, topic: str = "set", count: bool = True) -> Any:
    """The JSON value of a set payload, by the bounded decoder; raises BadCommand."""
    try:
        return (inbound or _INBOUND).decode(topic, payload, count=count)
    except InboundError as exc:
        raise BadCommand(None, None, exc.reason) from None


def parse(payload: bytes, inbound: Inbound | None = None, topic: str = "set") -> SetCommand:
    """Validate one set payload; raises BadCommand naming the field."""
    data = decode(payload, inbound, topic)
    cmd_id = data.get("id") if isinstance(data, dict) and isinstance(data.get("id"), str) else None
    try:
        return SetCommand.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or None
        raise BadCommand(cmd_id, field, f"{field or 'command'}: {err['msg']}") from None


def peek_id(payload: bytes, inbound: Inbound | None = None) -> str | None:
    """The command's ``id`` if the payload is a JSON object with a string id (else None).

    A refused payload raises BadCommand without being counted: ``parse`` counts it."""
    data = decode(payload, inbound, count=False)
    cmd_id = data.get("id") if isinstance(data, dict) else None
    return cmd_id if isinstance(cmd_id, str) and len(cmd_id) <= 64 else None


def ok_result(cmd_id: str | None) -> dict[str, Any]:
    return {"id": cmd_id, "ok": True, "ack": "ok"}


def nack_result(cmd_id: str | None, reason: str) -> dict[str, Any]:
    return {"id": cmd_id, "ok": False, "nack": reason}


def error_result(cmd_id: str | None, message: str, field: str | None = None) -> dict[str, Any]:
    return {"id": cmd_id, "ok": False, "error": message, "field": field}
