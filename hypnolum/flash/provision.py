"""The pod's provisioning config (``pod.json`` on the board), validated before anything is written.

Every key of pod.json is defined once, in protocol/pod_config.py; the firmware
checks the same keys with the same bounds and words (firmware/pod/config.py,
from the generated firmware/pod/config_schema.py), so a config that passes
here is taken by the pod as written (tests/test_pod_config.py runs the
firmware's parser on every bound). docs/pod-config.md lists the keys.
"""
from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from ..protocol.pod_config import problem
from ..protocol.pod_json import PodJson
from .errors import BadConfig


class Provision(PodJson):
    """What a technician decides per pod: pod.json's typed values (protocol/pod_json.py)."""

    def pod_json(self) -> bytes:
        """The file's bytes: the keys that differ from the pod's defaults."""
        return self.to_json().encode()


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
    """Check settings as the pod would and make a Provision, or raise BadConfig naming
    each refused key, its value and what is allowed (after ``where``, the file or flag)."""
    found = [f"{where}: {why}" for key, value in settings.items() if (why := problem(key, value))]
    if found:
        raise BadConfig("; ".join(found), step="config")
    return Provision(**settings)


def default_pod_id(mac: str) -> str:
    """The id the firmware itself would pick: ``pod-`` + the MAC's hex digits."""
    return "pod-" + mac.replace(":", "").lower()
