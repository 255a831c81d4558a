"""hostd configuration: one TOML file, validated into frozen models.

Every error names its key (``mqtt.port: Input should be ...``) so an operator
can fix the file without reading code; unknown keys are errors, since a typo
in a key would otherwise silently fall back to a default.
"""
from __future__ import annotations

import socket
import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError


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


class Config(_Section):
    host: HostConfig = Field(default_factory=HostConfig)
    mqtt: MqttConfig = MqttConfig()
    serial: SerialConfig = SerialConfig()
    pods: PodsConfig = PodsConfig()


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
