"""hostd configuration: one TOML file, validated into frozen models.

Every error names its key (``mqtt.port: Input should be ...``) so an operator
can fix the file without reading code; unknown keys are errors, since a typo
in a key would otherwise silently fall back to a default.
"""
from __future__ import annotations

import re
import socket
import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class HostConfig(_Section):
    id: str = Field(default_factory=socket.gethostname, min_length=1, pattern=r"^[A-Za-z0-9._-]+$")


class MqttConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    keepalive: int = Field(30, ge=1, le=65535)


class SerialConfig(_Section):
    ports: tuple[str, ...] = ()  # paths or glob patterns
    baudrate: int = Field(921600, gt=0)
    scan_interval_s: float = Field(0.5, gt=0)


class PodsConfig(_Section):
    heartbeat_timeout_s: float = Field(3.0, gt=0)
    ping_interval_s: float = Field(1.0, gt=0)
    connect_interval_s: float = Field(0.5, gt=0)  # CONNECT resend period while handshaking
    command_timeout_s: float = Field(0.5, gt=0)
    command_retries: int = Field(3, ge=0, le=20)  # re-sends after the first attempt


# A participant code: pseudonymous by construction (no spaces, so no "first last").
PARTICIPANT_PATTERN = r"^[A-Za-z0-9_-]{1,32}$"


class EegConfig(_Section):
    publish_interval_s: float = Field(0.5, gt=0, le=5)  # raw samples on MQTT: one message per interval
    replay_timeout_s: float = Field(2.0, gt=0)  # after the ACK, time for the replayed batches to arrive
    reorder_limit_s: float = Field(10.0, gt=0, le=60)  # live data held back while a replay is outstanding
    max_pad_s: float = Field(60.0, ge=0)  # unfilled gaps up to this long keep the recording's time axis (zeros)


class RecorderConfig(_Section):
    enabled: bool = False
    dir: Path = Path("/var/lib/hypnolum/recordings")
    participant: str = Field("X", pattern=PARTICIPANT_PATTERN)  # default pseudonymous id in the header
    participants: dict[str, str] = {}  # pod id -> participant code
    equipment: str = Field("hypnolum", pattern=r"^[A-Za-z0-9_.-]{1,32}$")

    @field_validator("participants")
    @classmethod
    def _codes(cls, value: dict[str, str]) -> dict[str, str]:
        for pod_id, code in value.items():
            if not re.match(PARTICIPANT_PATTERN, code):
                raise ValueError(f"{pod_id}: participant code {code!r} must match {PARTICIPANT_PATTERN}")
        return value


class LslConfig(_Section):
    enabled: bool = False
    name_prefix: str = "hypnolum"  # stream name "<prefix> <pod_id>", source id "<prefix>-<pod_id>"


class Config(_Section):
    host: HostConfig = Field(default_factory=HostConfig)
    mqtt: MqttConfig = MqttConfig()
    serial: SerialConfig = SerialConfig()
    pods: PodsConfig = PodsConfig()
    eeg: EegConfig = EegConfig()
    recorder: RecorderConfig = RecorderConfig()
    lsl: LslConfig = LslConfig()


class ConfigError(ValueError):
    """Invalid configuration; ``errors`` holds one "key: problem" line each."""

    def __init__(self, source: str, errors: list[str]):
        super().__init__(f"{source}: " + "; ".join(errors))
        self.source = source
        self.errors = errors


def _key(loc: tuple) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def parse(data: dict, source: str = "<config>") -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, [f"{_key(e['loc'])}: {e['msg']}" for e in exc.errors()]) from None


def load(path: str | Path) -> Config:
    """Read and validate one TOML file; raises ConfigError on any problem."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(str(path), [f"(file): {exc.strerror or exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [f"(syntax): {exc}"]) from None
    return parse(data, str(path))
