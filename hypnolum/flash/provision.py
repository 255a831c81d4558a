"""The pod's provisioning config (``pod.json`` on the board), validated before anything is written.

The firmware reads the same keys (firmware/pod/config.py ``_SCHEMA``) and
falls back to a default, with a warning over the link, for anything it
refuses; the bounds here are the firmware's, so a config that passes here is
taken by the pod as written (tests/test_flash_provision.py runs the
firmware's parser on what this module writes).
"""
from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..protocol.ids import POD_ID_PATTERN
from .errors import BadConfig

LedOrder = Literal["RGB", "RBG", "GRB", "GBR", "BRG", "BGR",
                   "RGBW", "GRBW", "WRGB", "WGRB"]  # 4 letters: RGBW strips


class Provision(BaseModel):
    """What a technician decides per pod. Units are in the names."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pod_id: str = Field(pattern=POD_ID_PATTERN, description="name on the wire, in MQTT topics and in file names")
    led_type: Literal["ws2812", "sk6812", "sk6812_rgbw", "apa102", "sk9822"] = "ws2812"
    led_count: int = Field(30, ge=1, le=300)
    led_order: LedOrder = "GRB"
    psu_ma: int | None = Field(None, ge=100, le=100000,
                               description="LED supply current in mA (default: the pod board's LED limit)")
    board_reserve_ma: int = Field(0, ge=0, le=10000, description="mA kept back for other loads on that supply")
    headset: Literal["cyton", "none"] = "cyton"
    eeg_channels: int = Field(8, ge=1, le=8)
    sample_rate_hz: int = Field(250, ge=1, le=16000)
    headset_baud: int = Field(115200, ge=1200, le=4000000)
    eeg_batch_ms: int = Field(40, ge=4, le=40, description="EEG sent every this many ms (12 for circle pods)")
    strobe_enabled: bool = Field(False, description="allow 8-13 Hz strobe effects on this pod at all "
                                                     "(a command must still opt in)")

    def pod_json(self) -> bytes:
        data: dict[str, Any] = self.model_dump(exclude_none=True)
        return (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()


def _errors(exc: ValidationError, where: str) -> str:
    parts = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(config)"
        parts.append(f"{where}: {key}: {err['msg']} (got {err.get('input')!r})")
    return "; ".join(parts)


def load_base(path: Path | None) -> dict[str, Any]:
    """Settings shared by a batch, from a TOML or JSON file (``--config``)."""
    if path is None:
        return {}
    try:
        text = path.read_text()
    except OSError as exc:
        raise BadConfig(f"{path}: cannot read: {exc.strerror}", step="config") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise BadConfig(f"{path}: not valid {path.suffix.lstrip('.') or 'JSON'}: {exc}", step="config") from None
    if not isinstance(data, dict):
        raise BadConfig(f"{path}: expected a table of settings", step="config")
    return data


def make(settings: dict[str, Any], where: str = "config") -> Provision:
    """Validate settings into a Provision, or raise BadConfig naming each bad key."""
    try:
        return Provision(**settings)
    except ValidationError as exc:
        raise BadConfig(_errors(exc, where), step="config") from None


def default_pod_id(mac: str) -> str:
    """The id the firmware itself would pick: ``pod-`` + the MAC's hex digits."""
    return "pod-" + mac.replace(":", "").lower()
