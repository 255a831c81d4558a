"""The session console's configuration: ``[web]`` and ``[mqtt]`` of a TOML file.

The console reads the same file as hostd (``hypnolum console --config
hostd.toml``): the broker from ``[mqtt]`` (host, port, TLS, credentials:
host/config.py's model and checks), its own settings from ``[web]``. Every
other table is hostd's and is ignored here. Errors name their key
(``web.listen: ...``), as hostd's do.

Listening beyond loopback is refused unless the page is served over TLS
(``tls_cert``/``tls_key``) and everyone logs in (``users_file``).
"""
from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, FilePath, field_validator, model_validator

from ..host.config import MqttConfig, is_loopback, read_toml, validated

DEFAULT_LISTEN = "127.0.0.1:8480"


def split_listen(listen: str) -> tuple[str, int]:
    """``"HOST:PORT"`` (``"[::1]:PORT"`` for IPv6) -> (host, port); ValueError naming the problem."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{listen!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{listen!r}: the port must be 1..65535")
    return host, int(port)


class WebConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    listen: str = DEFAULT_LISTEN
    tls_cert: FilePath | None = None  # PEM certificate chain: the page is served over HTTPS
    tls_key: FilePath | None = None
    users_file: Path | None = None  # `hypnolum console --add-user` writes it; none: loopback only
    # the console's own broker user (an application user, e.g. "experimenter"); default: [mqtt]'s
    mqtt_username: str | None = Field(None, min_length=1)
    mqtt_password_file: FilePath | None = None
    session_hours: float = Field(12.0, gt=0, le=24 * 30)  # a login lasts this long

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        split_listen(value)
        return value

    @model_validator(mode="after")
    def _safe(self) -> "WebConfig":
        host, _port = split_listen(self.listen)
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if self.mqtt_password_file is not None and self.mqtt_username is None:
            raise ValueError("mqtt_password_file needs mqtt_username")
        if not is_loopback(host):
            missing = [what for what, absent in (("TLS (tls_cert and tls_key)", self.tls_cert is None),
                                                 ("login (users_file)", self.users_file is None)) if absent]
            if missing:
                raise ValueError(f"listen {self.listen!r} is beyond loopback: that needs {' and '.join(missing)}")
        return self

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    def broker(self, mqtt: MqttConfig) -> MqttConfig:
        """``mqtt`` with the console's own credentials, if ``[web]`` gives them."""
        if self.mqtt_username is None:
            return mqtt
        return mqtt.model_copy(update={"username": self.mqtt_username, "password": None,
                                       "password_file": self.mqtt_password_file})


class ConsoleConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")  # hostd's tables are not ours

    mqtt: MqttConfig = MqttConfig()
    web: WebConfig = WebConfig()


def parse(data: dict, source: str = "<config>") -> ConsoleConfig:
    return validated(ConsoleConfig, data, source)


def load(path: str | Path, listen: str | None = None) -> ConsoleConfig:
    """Read ``path`` (``listen``, if given, replaces ``[web] listen``); ConfigError on any problem."""
    path = Path(path)
    data = read_toml(path)
    web = data.get("web", {})
    if listen is not None and isinstance(web, dict):  # (a [web] that is no table stays, and is refused)
        data["web"] = {**web, "listen": listen}
    return parse(data, str(path))
