"""hostd configuration: one TOML file, validated into frozen models.

Every error names its key (``mqtt.port: Input should be ...``) so an operator
can fix the file without reading code; unknown keys are errors, since a typo
in a key would otherwise silently fall back to a default.
"""
from __future__ import annotations

import ipaddress
import re
import socket
import tomllib
from pathlib import Path

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, FilePath, ValidationError, field_validator, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class HostConfig(_Section):
    id: str = Field(default_factory=socket.gethostname, min_length=1, pattern=r"^[A-Za-z0-9._-]+$")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 (also IPv4-mapped, ::ffff:127.x.y.z) and the name localhost.
    No name is resolved: a name that happens to resolve to loopback does not count."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


class MqttConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    keepalive: int = Field(30, ge=1, le=65535)
    timeout_s: float = Field(10.0, gt=0)  # CONNECT/SUBSCRIBE/PUBLISH acknowledgement timeout
    # "auto": MQTT 5 (response topic, correlation data), falling back to 3.1.1
    protocol: Literal["auto", "5", "3.1.1"] = "auto"
    client_id: str | None = Field(None, min_length=1, max_length=64)  # default hypnolum-<host id>
    username: str | None = Field(None, min_length=1)
    password: str | None = None
    password_file: FilePath | None = None  # first line is the password; keeps secrets out of the config
    tls: bool = False
    ca_file: FilePath | None = None  # default: the system's CAs
    cert_file: FilePath | None = None  # client certificate (PEM), with key_file
    key_file: FilePath | None = None
    persistent_session: bool = True  # the broker keeps our subscription and queued commands
    session_expiry_s: int = Field(3600, ge=0)
    backoff_min_s: float = Field(0.2, gt=0)
    backoff_max_s: float = Field(10.0, gt=0)
    command_cache: int = Field(1024, ge=1)  # command ids remembered for idempotent re-delivery
    discovery: bool = True  # Home Assistant MQTT discovery
    discovery_prefix: str = Field("homeassistant", min_length=1, pattern=r"^[^#+]+$")
    # inbound bounds, checked before and while parsing every message hostd reads (docs/mqtt.md)
    max_payload: int = Field(65536, ge=1024, le=16 * 1024 * 1024)  # bytes
    max_depth: int = Field(16, ge=2, le=64)  # JSON nesting
    # a broker that is neither on loopback nor both TLS and authenticated is refused unless this is true
    allow_insecure: bool = False

    @model_validator(mode="after")
    def _consistent(self):
        if self.password is not None and self.password_file is not None:
            raise ValueError("password and password_file are mutually exclusive")
        if (self.password is not None or self.password_file is not None) and self.username is None:
            raise ValueError("a password needs a username")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        if not self.tls and any(f is not None for f in (self.ca_file, self.cert_file)):
            raise ValueError("ca_file/cert_file are set but tls is false")
        if self.backoff_max_s < self.backoff_min_s:
            raise ValueError("backoff_max_s is smaller than backoff_min_s")
        self._secure_or_local()
        return self

    def _secure_or_local(self) -> None:
        """A broker off this machine is reached only over TLS and with credentials (a username,
        or a client certificate), unless allow_insecure says otherwise."""
        if self.allow_insecure or is_loopback(self.host):
            return
        flaws = [flaw for flaw, present in (("plaintext (mqtt.tls is false)", not self.tls),
                                            ("anonymous (no mqtt.username)", self.username is None and self.cert_file is None))
                 if present]
        if flaws:
            raise ValueError(
                f"mqtt.host {self.host!r} is not on loopback and the connection would be {' and '.join(flaws)}: "
                "set mqtt.tls = true and mqtt.username (with its password), or mqtt.allow_insecure = true "
                "to accept an unprotected broker")

    def secret(self) -> str | None:
        if self.password_file is not None:
            return self.password_file.read_text(encoding="utf-8").splitlines()[0] if self.password_file.stat().st_size else ""
        return self.password


class SerialConfig(_Section):
    ports: tuple[str, ...] = ()  # paths or glob patterns
    baudrate: int = Field(921600, gt=0)  # USB CDC (ESP32-S3 pods) ignores it; tools/flash.py verify opens at it too
    scan_interval_s: float = Field(0.5, gt=0)


class BleConfig(_Section):
    # Nordic-UART-style GATT service on the pod; devices by address
    devices: tuple[str, ...] = ()
    reconnect_min_s: float = Field(1.0, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)
    connect_timeout_s: float = Field(10.0, gt=0)


class UsbMatch(_Section):
    vid: int = Field(ge=0, le=0xFFFF)
    pid: int = Field(ge=0, le=0xFFFF)
    serial: str | None = None  # None: any serial number


class UsbConfig(_Section):
    # raw USB (bulk endpoints) for boards that expose a vendor interface
    devices: tuple[UsbMatch, ...] = ()
    scan_interval_s: float = Field(1.0, gt=0)
    reset_on_open: bool = True


class PodsConfig(_Section):
    heartbeat_timeout_s: float = Field(3.0, gt=0)
    ping_interval_s: float = Field(1.0, gt=0)
    connect_interval_s: float = Field(0.5, gt=0)  # CONNECT resend period while handshaking
    command_timeout_s: float = Field(0.5, gt=0)
    command_retries: int = Field(3, ge=0, le=20)  # re-sends after the first attempt
    command_wait_s: float = Field(2.0, ge=0)  # a command for a pod not online waits this long for it
    stop_fade_ms: int = Field(1500, ge=0, le=65535)  # on SIGTERM every pod fades to off over this time


class UpdatesConfig(_Section):
    # a pod whose firmware predates updates over the link is updated through its REPL
    # (docs/update.md): it gets an update key from here if it has none, as the flash tool gives one
    keys_dir: Path = Path("/var/lib/hypnolum/update-keys")  # <pod id>.key, the flash tool's --update-keys
    key_file: Path | None = None  # the fleet's key for every pod (the flash tool's --update-key)
    repl_timeout_s: float = Field(20.0, gt=0, le=300)  # after SAFE_MODE: the pod's REPL answers within this


# A participant code: pseudonymous by construction (no spaces, so no "first last").
PARTICIPANT_PATTERN = r"^[A-Za-z0-9_-]{1,32}$"


class EegConfig(_Section):
    # raw samples on MQTT: one message per interval; 0: each batch as soon as it is in sequence
    # (circle hosts: the group EEG waits for it), at the cost of one message per pod batch
    publish_interval_s: float = Field(0.5, ge=0, le=5)
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
            if not re.fullmatch(PARTICIPANT_PATTERN, code):
                raise ValueError(f"{pod_id}: participant code {code!r} must match {PARTICIPANT_PATTERN}")
        return value


class LslConfig(_Section):
    enabled: bool = False
    name_prefix: str = "hypnolum"  # stream name "<prefix> <pod_id>", source id "<prefix>-<pod_id>"


class Config(_Section):
    host: HostConfig = Field(default_factory=HostConfig)
    mqtt: MqttConfig = MqttConfig()
    serial: SerialConfig = SerialConfig()
    ble: BleConfig = BleConfig()
    usb: UsbConfig = UsbConfig()
    pods: PodsConfig = PodsConfig()
    eeg: EegConfig = EegConfig()
    recorder: RecorderConfig = RecorderConfig()
    lsl: LslConfig = LslConfig()
    updates: UpdatesConfig = UpdatesConfig()
    # the session console's own table (`hypnolum console`); hypnolum/console checks it
    web: dict[str, Any] = Field(default_factory=dict)


class ConfigError(ValueError):
    """Invalid configuration; ``errors`` holds one "key: problem" line each."""

    def __init__(self, source: str, errors: list[str]):
        super().__init__(f"{source}: " + "; ".join(errors))
        self.source = source
        self.errors = errors


_M = TypeVar("_M", bound=BaseModel)


def _key(loc: tuple) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def validated(model: type[_M], data: dict, source: str) -> _M:
    """``model`` validated from ``data`` (a TOML file's tables); ConfigError names every problem."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, [f"{_key(e['loc'])}: {e['msg']}" for e in exc.errors()]) from None


def parse(data: dict, source: str = "<config>") -> Config:
    return validated(Config, data, source)


def read_toml(path: Path) -> dict:
    """The tables of one TOML file; ConfigError if it cannot be read or parsed."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(str(path), [f"(file): {exc.strerror or exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [f"(syntax): {exc}"]) from None


def load(path: str | Path) -> Config:
    """Read and validate one TOML file; raises ConfigError on any problem."""
    path = Path(path)
    return parse(read_toml(path), str(path))
