"""Bounded JSON decoding of every payload hostd reads from MQTT.

Set commands, markers, participant codes, circle definitions and timelines
(retained ones included) and the pods' EEG read by circles all go through
:meth:`Inbound.decode`. Before the JSON parser runs it refuses a payload
larger than ``mqtt.max_payload``, one that is not UTF-8, and one whose
brackets (outside strings) nest deeper than ``mqtt.max_depth``; while parsing
it refuses integers longer than ``max_int_digits`` digits, NaN and
+-Infinity, numbers that overflow to infinity (``1e999``) and strings that
hold a lone UTF-16 surrogate. Every refusal is one :class:`InboundError`
naming the topic and the reason, counted by kind in :class:`Refusals`.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from .config import PARTICIPANT_PATTERN, MqttConfig

# refusal kinds, in the order Refusals reports them
KINDS = ("size", "utf8", "depth", "number", "json", "value")

_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
# a JSON string, or an unterminated one (to the end, a lone final backslash included): every
# opening quote matches where it stands, so the scan stays linear
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class InboundError(ValueError):
    """A payload refused before or while decoding: ``"<topic>: <reason>"``."""

    def __init__(self, topic: str, kind: str, reason: str, field: str | None = None):
        super().__init__(f"{topic}: {reason}")
        self.topic, self.kind, self.reason, self.field = topic, kind, reason, field


class _Refused(Exception):
    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind, self.reason = kind, reason


@dataclass(frozen=True)
class Limits:
    max_payload: int = 65536  # bytes
    max_depth: int = 16  # JSON nesting levels
    max_int_digits: int = 32  # a nanosecond Unix time has 19

    @classmethod
    def of(cls, mqtt: MqttConfig) -> Limits:
        return cls(max_payload=mqtt.max_payload, max_depth=mqtt.max_depth)


class Refusals:
    """How many payloads were refused, by kind."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = dict.fromkeys(KINDS, 0)

    def add(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_json(self) -> dict[str, int]:
        return dict(self.counts)


def nesting(text: str) -> int:
    """The deepest bracket nesting of a JSON text, brackets inside strings not counted."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(0, max(accumulate(_STEP[c] for c in brackets), default=0))


class Inbound:
    """The bounded decoder, with its limits and its refusal counts."""

    def __init__(self, limits: Limits = Limits()) -> None:
        self.limits = limits
        self.refused = Refusals()
        self._decoder = json.JSONDecoder(parse_int=self._int, parse_float=self._float, parse_constant=self._constant)

    def decode(self, topic: str, payload: bytes | bytearray | str, *, count: bool = True) -> Any:
        """The JSON value of ``payload``; raises InboundError (counted unless ``count`` is false)."""
        try:
            return self._decode(payload)
        except _Refused as exc:
            if count:
                self.refused.add(exc.kind)
            raise InboundError(topic, exc.kind, exc.reason) from None

    def refuse(self, topic: str, kind: str, reason: str, field: str | None = None) -> InboundError:
        """A counted InboundError for a payload that decoded but cannot be used."""
        self.refused.add(kind)
        return InboundError(topic, kind, reason, field)

    def _decode(self, payload: bytes | bytearray | str) -> Any:
        lim = self.limits
        if len(payload) > lim.max_payload:
            raise _Refused("size", f"{len(payload)} bytes, more than the limit of {lim.max_payload}")
        if isinstance(payload, str):
            text = payload
        else:
            try:
                text = bytes(payload).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _Refused("utf8", f"not UTF-8: {exc.reason} at byte {exc.start}") from None
        if text.count("[") + text.count("{") > lim.max_depth and nesting(text) > lim.max_depth:
            raise _Refused("depth", f"JSON nested deeper than {lim.max_depth} levels")
        try:
            value = self._decoder.decode(text)
        except json.JSONDecodeError as exc:
            raise _Refused("json", f"invalid JSON: {exc}") from None
        except RecursionError:
            raise _Refused("depth", f"JSON nested deeper than {lim.max_depth} levels") from None
        except ValueError as exc:  # a conversion the hooks did not catch
            raise _Refused("number", f"a number cannot be read: {exc}") from None
        if _SURROGATE_ESCAPE.search(text) and not _encodable(value):
            raise _Refused("utf8", "a string holds a lone UTF-16 surrogate (\\ud800-\\udfff)")
        return value

    def _int(self, digits: str) -> int:
        if len(digits) > self.limits.max_int_digits:  # called for every integer: the cheap test first
            n = len(digits.lstrip("-"))
            if n > self.limits.max_int_digits:
                raise _Refused("number", f"an integer of {n} digits (at most {self.limits.max_int_digits})")
        return int(digits)

    @staticmethod
    def _float(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise _Refused("number", f"{text[:24]} is not a finite number")
        return value

    @staticmethod
    def _constant(name: str) -> float:
        raise _Refused("number", f"{name} is not a finite number")


def _encodable(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(_encodable(k) and _encodable(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_encodable(v) for v in value)
    return True


def pod_input_problem(leaf: str, data: Any) -> tuple[str, str] | None:
    """(field, message) if a decoded marker or participant payload holds a value hostd must
    not take: a participant code that does not match the whole pattern, a marker time that
    is not a finite number. None otherwise (the remaining checks are the EEG streams')."""
    if not isinstance(data, dict):
        return None
    if leaf == "participant":
        code = data.get("participant")
        if not isinstance(code, str) or re.fullmatch(PARTICIPANT_PATTERN, code) is None:
            return "participant", f"participant: a pseudonymous code matching {PARTICIPANT_PATTERN} is required"
    elif leaf == "marker":
        t = data.get("t")
        if t is not None and (isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t)):
            return "t", "t: a finite Unix time in seconds is required"
    return None
