"""How the command-line clients (``hypnolum set``, ``get``, ``monitor``) reach the broker.

They read the broker's address, TLS settings and credentials from a hostd
configuration (``--config``, the ``[mqtt]`` table, read by host/config.py's
loader and checked by its rules, the secure default included) and let flags
override them. The connection itself is built by hostd's own
:class:`~hypnolum.host.broker.Broker`, so TLS, client certificates and MQTT 5
behave exactly as they do for hostd.

A client never uses hostd's client id (it would knock hostd off the broker):
it connects as ``<username>-<tool>-<random>`` (an id the shipped broker's
plugin grants that user) or, without a username, ``hypnolum-<tool>-<random>``.
Given ``--username``, the configuration's password is not used (it belongs to
the configuration's user): pass ``--password`` or ``--password-file``.
``--demo`` reaches the broker of the ``hypnolum demo`` running on this machine
(the file it writes while it runs: hypnolum/console/demo_link.py).
"""
from __future__ import annotations

import argparse
import contextlib
import secrets
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiomqtt
from pydantic import ValidationError

from .host.broker import Broker
from .host.config import ConfigError, MqttConfig, load

EXIT_OK = 0
EXIT_REFUSED = 1  # hostd or the pod refused it
EXIT_USAGE = 2  # bad arguments or configuration
EXIT_NO_ANSWER = 3  # no broker, no answer, nothing known

_UNSUPPORTED_PROTOCOL = {1, 0x84}  # CONNACK: "I do not speak this protocol version" (3.1.1, 5)


class UsageError(Exception):
    """Arguments or configuration that cannot be used (exit 2)."""


class Unreachable(Exception):
    """The broker cannot be reached or refused the connection (exit 3)."""


def run_tool(main: Callable[[], int], prefix: str = "hypnolum", interrupted: int = 130) -> int:
    """``main()``'s exit status, with the tools' errors printed as one line and turned into
    their exit codes (usage 2, unreachable 3); Ctrl-C ends with ``interrupted``."""
    try:
        return main()
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    except Unreachable as exc:
        print(f"{prefix}: {exc}", file=sys.stderr)
        return EXIT_NO_ANSWER
    except KeyboardInterrupt:
        return interrupted


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The connection flags every client command takes."""
    g = parser.add_argument_group("broker (default: [mqtt] of --config, else 127.0.0.1:1883)")
    g.add_argument("--config", metavar="FILE", help="a hostd configuration: its [mqtt] table says how to connect")
    g.add_argument("--demo", action="store_true", help="the broker of the `hypnolum demo` running on this machine")
    g.add_argument("--host", help="broker host name or address")
    g.add_argument("--port", type=int, help="broker port")
    g.add_argument("--username", help="MQTT user (the configuration's password is then not used)")
    g.add_argument("--password", help="MQTT password")
    g.add_argument("--password-file", metavar="FILE", help="file whose first line is the MQTT password")
    g.add_argument("--tls", action="store_true", default=None, help="connect over TLS")
    g.add_argument("--ca-file", metavar="FILE", help="CA bundle for the broker's certificate")
    g.add_argument("--cert-file", metavar="FILE", help="client certificate (PEM), with --key-file")
    g.add_argument("--key-file", metavar="FILE", help="client key (PEM)")


def mqtt_config(args: argparse.Namespace) -> MqttConfig:
    """The [mqtt] settings from ``--config`` with the flags applied; UsageError naming the problem."""
    base: dict[str, Any] = {}
    if args.demo:
        if args.config or args.host or args.port:
            raise UsageError("--demo takes the demo's broker: not with --config, --host or --port")
        from .console.demo_link import NoDemo, read

        try:
            demo = read()
        except NoDemo as exc:
            raise UsageError(f"--demo: {exc}") from None
        base = {"host": demo.host, "port": demo.port}
    if args.config:
        try:
            base = load(args.config).mqtt.model_dump(exclude_unset=True)
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
    base.pop("client_id", None)  # hostd's own id: never ours
    if args.username is not None:
        base.update(username=args.username, password=None, password_file=None)
    flags = {"host": args.host, "port": args.port, "password": args.password, "password_file": args.password_file,
             "tls": args.tls, "ca_file": args.ca_file, "cert_file": args.cert_file, "key_file": args.key_file}
    base.update({key: value for key, value in flags.items() if value is not None})
    if base.get("password") is not None and base.get("password_file") is not None:
        base.pop("password_file" if args.password is not None else "password")
    source = args.config or "the command line"
    try:
        return MqttConfig.model_validate(base)
    except ValidationError as exc:
        lines = [f"{'.'.join(['mqtt', *map(str, e['loc'])])}: {e['msg']}" for e in exc.errors()]
        raise UsageError(f"{source}: " + "; ".join(lines)) from None


def client_id(cfg: MqttConfig, tool: str) -> str:
    """A fresh client id for one run of ``tool`` (see the module doc)."""
    return f"{cfg.username or 'hypnolum'}-{tool}-{secrets.token_hex(4)}"


@contextlib.asynccontextmanager
async def connect(cfg: MqttConfig, tool: str) -> AsyncIterator[tuple[aiomqtt.Client, bool]]:
    """A connected client and whether it speaks MQTT 5. With ``protocol = "auto"`` a broker
    that refuses MQTT 5 is asked again with 3.1.1. Raises Unreachable (broker down, refused,
    bad credentials) or UsageError (unreadable credentials or certificates)."""
    try:
        broker = Broker(cfg)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise UsageError(f"cannot use the TLS files: {exc}") from None
    for attempt in range(2):
        try:
            client = broker.client(client_id(cfg, tool))
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read the MQTT credentials: {exc}") from None
        try:
            await client.__aenter__()
        except aiomqtt.MqttError as exc:
            rc = exc.rc if isinstance(exc, aiomqtt.MqttCodeError) else None
            code = getattr(rc, "value", rc)
            if attempt == 0 and cfg.protocol == "auto" and code in _UNSUPPORTED_PROTOCOL:
                broker.protocol = aiomqtt.ProtocolVersion.V311
                continue
            raise Unreachable(f"cannot connect to the MQTT broker {broker.where}: {exc or type(exc).__name__}") from None
        try:
            yield client, broker.v5
        finally:
            with contextlib.suppress(aiomqtt.MqttError, OSError):
                await client.__aexit__(None, None, None)
        return


async def subscribe(client: aiomqtt.Client, topic: str, qos: int = 1) -> None:
    """Subscribe, or Unreachable if the broker refuses (its ACL)."""
    granted = await client.subscribe(topic, qos=qos)
    codes = granted if isinstance(granted, (list, tuple)) else [granted]
    for code in codes:
        value = getattr(code, "value", code)
        if isinstance(value, int) and value >= 0x80:
            name = code.getName() if hasattr(code, "getName") else str(value)
            raise Unreachable(f"the broker refused the subscription to {topic}: {name}")
