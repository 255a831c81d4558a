"""Home Assistant's template rendering, as its MQTT template light and sensors use it.

Home Assistant renders discovery templates with a sandboxed Jinja2 environment
(homeassistant/helpers/template.py) whose ``round``, ``int`` and ``float``
filters are its own, whose undefined values log a warning instead of failing,
and which has ``now()``. Value templates see ``value`` and, when the payload
is JSON, ``value_json``; the result is stripped. This module is that
environment for the filters our templates use, and the template light's reading
of a state message (homeassistant/components/mqtt/light/schema_template.py,
``state_received``), so tests can render the exact strings hostd publishes.
"""
from __future__ import annotations

import datetime
import json
import math
from typing import Any

import jinja2
import jinja2.filters
from jinja2.sandbox import ImmutableSandboxedEnvironment

_SENTINEL = object()


def _round(value, precision=0, method="common", default=_SENTINEL):
    try:
        multiplier = float(10**precision)
        if method == "ceil":
            value = math.ceil(float(value) * multiplier) / multiplier
        elif method == "floor":
            value = math.floor(float(value) * multiplier) / multiplier
        elif method == "half":
            value = round(float(value) * 2) / 2
        else:
            value = round(float(value), precision)
        return int(value) if precision == 0 else value
    except (ValueError, TypeError):
        if default is _SENTINEL:
            raise ValueError(f"round got invalid input '{value}'") from None
        return default


def _int(value, default=_SENTINEL, base=10):
    result = jinja2.filters.do_int(value, default=default, base=base)
    if result is _SENTINEL:
        raise ValueError(f"int got invalid input '{value}'")
    return result


def _float(value, default=_SENTINEL):
    try:
        return float(value)
    except (ValueError, TypeError):
        if default is _SENTINEL:
            raise ValueError(f"float got invalid input '{value}'") from None
        return default


class Env:
    """A Home Assistant-like template environment that records undefined-variable warnings."""

    def __init__(self) -> None:
        self.warnings: list[str] = []
        warnings = self.warnings

        class LoggingUndefined(jinja2.Undefined):
            def _log(self) -> None:
                warnings.append(self._undefined_message)

            def __str__(self) -> str:
                self._log()
                return super().__str__()

            def __iter__(self):
                self._log()
                return super().__iter__()

            def __bool__(self) -> bool:
                self._log()
                return super().__bool__()

        self.env = ImmutableSandboxedEnvironment(undefined=LoggingUndefined)
        self.env.filters.update(round=_round, int=_int, float=_float)
        self.env.globals["now"] = lambda: datetime.datetime.now(datetime.timezone.utc)

    def render(self, template: str, **variables: Any) -> str:
        """A command template, as the light's ``async_turn_on``/``async_turn_off`` render it."""
        return self.env.from_string(template).render(**variables)

    def render_value(self, template: str, payload: str | bytes) -> str:
        """A value template on one MQTT message (``async_render_with_possible_json_value``)."""
        if isinstance(payload, bytes):
            payload = payload.decode()
        variables: dict[str, Any] = {"value": payload}
        try:
            variables["value_json"] = json.loads(payload)
        except ValueError:
            pass
        return self.env.from_string(template).render(**variables).strip()


def light_state(env: Env, light: dict[str, Any], payload: str | bytes) -> dict[str, Any]:
    """What Home Assistant's template light takes from one state message: raises AssertionError
    where Home Assistant would log "Invalid ... value received" and ignore the value."""
    state = env.render_value(light["state_template"], payload)
    assert state in ("on", "off", "None"), f"invalid state value {state!r}"
    brightness = env.render_value(light["brightness_template"], payload)
    assert 0 <= int(brightness) <= 255, f"invalid brightness {brightness!r}"
    rgb = [env.render_value(light[f"{c}_template"], payload) for c in ("red", "green", "blue")]
    if rgb != ["None"] * 3:
        assert all(0 <= int(c) <= 255 for c in rgb), f"invalid colour {rgb}"
    effect = env.render_value(light["effect_template"], payload)
    assert effect in light["effect_list"], f"unsupported effect {effect!r}"
    return {"state": state, "brightness": int(brightness),
            "rgb": None if rgb == ["None"] * 3 else [int(c) for c in rgb], "effect": effect}
