"""MQTT set commands: JSON in, validated scene fields out, JSON results.

A bad command never reaches a pod: it is answered on ``.../set/result`` with
an error naming the offending field (``scene.color.1``) and, where the field
has a range, the range it allows (``"allowed": [lo, hi]``). Payloads are
decoded by the bounded decoder (host/inbound.py): an oversized, too deeply
nested or non-finite one is refused the same way, before validation.

A ``scene`` names its ``effect`` (a new scene: what it leaves out takes its
default, the period the effect's own, ``EFFECT_PERIODS`` in protocol/messages.py),
or not: then it changes the scene the pod shows, keeping what it leaves out
(effect, palette, colour, period, params), so a brightness alone dims an aurora
and leaves it an aurora. ``stop`` (alone) is a participant's stop: the pod fades
to its safe glow and holds it until the next scene.
"""
from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from ..protocol import schema
from ..protocol.messages import EFFECT_PERIODS, MAX_SCENE_PARAMS, SAFE_MODE_CONFIRM, SCENE_FLAG_STROBE_OPT_IN
from ..protocol.values import Scene
from .inbound import Inbound, InboundError

_EFFECTS = tuple(schema.ENUMS["effect"])  # names from the protocol definition
_PALETTES = tuple(schema.ENUMS["palette"])
_NIGHT_MODES = tuple(schema.ENUMS["night_mode"])
_NO_PERIOD_MS = 0  # the period sent for an effect without one (the pod ignores it)

U8 = Annotated[StrictInt, Field(ge=0, le=255)]
U16 = Annotated[StrictInt, Field(ge=0, le=65535)]
I16 = Annotated[StrictInt, Field(ge=-32768, le=32767)]


def default_period_ms(effect: str) -> int:
    """The period a scene of ``effect`` gets when it names none."""
    spec = EFFECT_PERIODS.get(effect)
    return _NO_PERIOD_MS if spec is None else spec[2]


class SceneSpec(BaseModel):
    """A whole scene; left out: white at full brightness, no transition, the effect's own period."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    effect: Literal[_EFFECTS]  # type: ignore[valid-type]
    brightness: Annotated[StrictFloat, Field(ge=0, le=1)] = 1.0
    color: tuple[U8, U8, U8] = (255, 255, 255)
    transition_ms: U16 = 0
    period_ms: U16 = 0  # absent: the effect's default (filled in before validation)
    palette: Literal[_PALETTES] = "warm"  # type: ignore[valid-type]
    # a stroboscopic effect is refused unless asked for explicitly (and enabled in pod.json)
    strobe_opt_in: StrictBool = False
    params: Annotated[list[I16], Field(max_length=MAX_SCENE_PARAMS)] = []

    @model_validator(mode="before")
    @classmethod
    def _effect_period(cls, data: Any) -> Any:
        if isinstance(data, dict) and "period_ms" not in data and isinstance(data.get("effect"), str):
            return {**data, "period_ms": default_period_ms(data["effect"])}
        return data

    def scene(self) -> Scene:
        """The scene, in wire units (brightness 0..255, the strobe opt-in a flag)."""
        return Scene(self.effect, round(self.brightness * 255), self.color, self.transition_ms, self.period_ms,
                     self.palette, SCENE_FLAG_STROBE_OPT_IN if self.strobe_opt_in else 0, tuple(self.params))

    def fields(self) -> dict[str, Any]:
        """The wire fields of a SCENE message."""
        return self.scene().fields()


class ScenePatch(SceneSpec):
    """The ``scene`` of a set command: a whole scene (with ``effect``), or without ``effect`` a
    change to the scene the pod shows (``resolve``)."""

    effect: Literal[_EFFECTS] = None  # type: ignore[valid-type, assignment]  # absent: None (null refused)

    def resolve(self, shown: dict[str, Any] | None) -> dict[str, Any]:
        """The SCENE fields to send, given the scene the pod shows (``shown``: the pod state's
        ``scene``, wire units; None if unknown). Without ``effect`` the fields given replace
        those of the scene shown, and the others are kept; a pod dark or not yet known starts
        from white at full brightness (``solid``). The transition is always this command's."""
        given = self.model_fields_set
        if self.effect is not None:
            return SceneSpec.model_validate(self.model_dump(include=given)).fields()
        base = _lit(shown) or SceneSpec(effect="solid").scene()
        mine = self.scene()
        changes = {name: getattr(mine, name) for name in given - {"strobe_opt_in"}}
        changes["transition_ms"] = self.transition_ms  # always this command's
        if "strobe_opt_in" in given:
            changes["flags"] = (base.flags & ~SCENE_FLAG_STROBE_OPT_IN) | mine.flags
        return dataclasses.replace(base, **changes).fields()


def _lit(shown: dict[str, Any] | None) -> Scene | None:
    """The scene the pod shows, if it shows a lit one (else None); what ``shown`` lacks, the
    effect's defaults."""
    if not isinstance(shown, dict) or str(shown.get("effect")) not in _EFFECTS or str(shown["effect"]) == "off":
        return None
    defaults = SceneSpec(effect=str(shown["effect"])).fields()
    scene = Scene.from_fields({name: shown.get(name, value) for name, value in defaults.items()})
    return dataclasses.replace(scene, effect=str(scene.effect), palette=str(scene.palette))


def scene_problem(fields: dict[str, Any]) -> tuple[str, str, tuple[int, int]] | None:
    """(field, message, allowed range) if the host knows the pod would refuse these SCENE
    fields: a period outside the effect's range (the pod names the rest in its NACK)."""
    spec = EFFECT_PERIODS.get(fields["effect"])
    if spec is not None and not spec[0] <= fields["period_ms"] <= spec[1]:
        lo, hi = spec[0], spec[1]
        return ("period_ms", f"{fields['period_ms']} ms is outside {fields['effect']}'s range {lo}..{hi} ms",
                (lo, hi))
    return None


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
    scene: ScenePatch | None = None
    night: NightSpec | None = None
    # reset the pod into safe mode (REPL only, LEDs dark, firmware not started); alone
    safe_mode: StrictBool = None  # type: ignore[assignment]  # true only (null and false refused)
    # a participant's stop: fade to the safe glow within 2 s and hold it until the next scene; alone
    stop: StrictBool = None  # type: ignore[assignment]  # true only

    @field_validator("safe_mode", "stop")
    @classmethod
    def _only_true(cls, value: bool) -> bool:
        if value is not True:
            raise ValueError("only true")
        return value

    @model_validator(mode="after")
    def _something(self) -> SetCommand:
        for name, what in (("safe_mode", "the pod resets, it shows no scene"),
                           ("stop", "the pod fades to its safe glow and holds it")):
            if getattr(self, name):
                others = [k for k in ("scene", "night", "safe_mode", "stop") if k != name and getattr(self, k)]
                if others:
                    raise ValueError(f"{name} goes alone ({what}): without {' and '.join(others)}")
                return self
        if self.scene is None and self.night is None:
            raise ValueError("a set command needs scene and/or night (or safe_mode, or stop)")
        return self

    def messages(self, now_min: int | None = None, shown: dict[str, Any] | None = None) -> list[tuple[str, dict[str, Any]]]:
        """The pod commands to send, in order: night limits first, then the scene. ``shown``:
        the scene the pod shows (the pod state's ``scene``), which a scene without effect
        changes. Raises BadCommand for a scene the pod would refuse (``scene_problem``)."""
        out: list[tuple[str, dict[str, Any]]] = []
        if self.safe_mode:
            return [("safe_mode", {"confirm": SAFE_MODE_CONFIRM})]
        if self.stop:
            return [("fade_safe", {})]
        if self.night is not None:
            if now_min is None:
                import time

                lt = time.localtime()
                now_min = lt.tm_hour * 60 + lt.tm_min
            out.append(("night_mode", self.night.fields(now_min)))
        if self.scene is not None:
            if self.scene.effect is None and isinstance(shown, dict) and shown.get("stopped"):
                # a participant's stop holds until a whole scene: a slider's change (Home
                # Assistant sends brightness alone) must not lift it
                raise BadCommand(self.id, "scene.effect", "scene.effect: the pod is stopped (a participant's "
                                 "stop holds the safe glow); only a whole scene, with effect, resumes it")
            fields = self.scene.resolve(shown)
            if problem := scene_problem(fields):
                name, message, allowed = problem
                raise BadCommand(self.id, f"scene.{name}", f"scene.{name}: {message}", allowed)
            out.append(("scene", fields))
        return out


class BadCommand(ValueError):
    def __init__(self, cmd_id: str | None, field: str | None, message: str, allowed: tuple[int, int] | None = None):
        super().__init__(message)
        self.cmd_id, self.field, self.allowed = cmd_id, field, allowed

    def result(self) -> dict[str, Any]:
        return error_result(self.cmd_id, str(self), self.field, self.allowed)


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


# the set command's name for the wire fields of each message it sends
_PARTS = {"scene": "scene", "night_mode": "night"}


def refused_field(msg_name: str, wire_field: str, allowed: list[Any] | None,
                  fields: dict[str, Any]) -> tuple[str, list[Any] | None, str]:
    """A field a pod named in its NACK to ``msg_name`` (``wire_field``: ``period_ms``,
    ``params.0``), as the set command names it: (its path, the range it allows in the
    command's units, what was sent there in words)."""
    name, _, item = wire_field.partition(".")
    value: Any = fields.get(name)
    if item.isdigit() and isinstance(value, list | tuple):
        value = value[int(item)] if int(item) < len(value) else None
    if name == "brightness" and allowed is not None:  # the command's brightness is 0..1 of the wire's 0..255
        allowed = [round(v / 255, 3) for v in allowed]
        value = None if value is None else round(value / 255, 3)
    part = _PARTS.get(msg_name)
    path = f"{part}.{wire_field}" if part else wire_field
    return path, None if allowed is None else list(allowed), f"{path}: {value} was sent"


def nack_result(cmd_id: str | None, reason: str, field: str | None = None, allowed: list[Any] | None = None,
                error: str | None = None) -> dict[str, Any]:
    """The pod refused: its reason and, when the pod named them, the field (as the set command
    names it), the range that field allows, and the refusal in words."""
    out: dict[str, Any] = {"id": cmd_id, "ok": False, "nack": str(reason)}
    if field is not None:
        out["field"] = field
        if allowed is not None:
            out["allowed"] = list(allowed)
        if error is not None:
            out["error"] = error
    return out


def error_result(cmd_id: str | None, message: str, field: str | None = None,
                 allowed: tuple[int, int] | list[int] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": cmd_id, "ok": False, "error": message, "field": field}
    if allowed is not None:
        out["allowed"] = list(allowed)
    return out
