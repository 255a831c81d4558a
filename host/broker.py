"""The MQTT broker as every connection of hostd reaches it, and the one reconnect policy.

hostd opens several connections to its broker: the main one (commands in,
states and EEG out), one per online pod (its will turns the pod offline if
hostd dies) and one for circles. :class:`Broker` builds each client (address,
credentials, TLS, protocol version) and keeps each connection up with
:meth:`Broker.keep`: connect, hand the client to the connection's ``serve``,
and when the connection is lost or cannot be made, log it and try again after
a delay that doubles from ``mqtt.backoff_min_s`` to ``mqtt.backoff_max_s``
(and starts again from the bottom once a connection lasted 10 s).

With ``protocol = "auto"`` hostd speaks MQTT 5 until a broker refuses it (a
CONNACK saying "unsupported protocol version"), or, before any connection has
been made, does not answer an MQTT 5 CONNECT within ``mqtt.timeout_s``; then
every connection uses 3.1.1.

Client ids: the main connection uses ``mqtt.client_id`` (default
``hypnolum-<host id>``), circles ``<client id>-circles``, and a pod's link
``<client id>-pod-<pod id>``, or, where that would be longer than
``CLIENT_ID_MAX``, ``<client id>-p-<the first 12 hex digits of sha1(pod id)>``.
The two forms cannot be equal ("-pod-" and "-p-<hex>" differ in their second
character), so pod links never share an id. A client id longer than
``CLIENT_ID_MAX - 15`` characters is a configuration error.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
import time
from collections import Counter
from typing import Any, Awaitable, Callable

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from .config import Config, MqttConfig
from .supervisor import Backoff

log = logging.getLogger(__name__)

CLIENT_ID_MAX = 64  # the longest client id hostd uses for any of its connections
_HASHED = len("-p-") + 12
# CONNACK codes meaning "I do not speak this protocol version" (3.1.1: 1, 5: 0x84)
_UNSUPPORTED_PROTOCOL = {1, 0x84}
_STABLE_S = 10.0  # a connection that lasted this long starts the next retry series from the bottom

Serve = Callable[[aiomqtt.Client], Awaitable[None]]


def main_client_id(config: Config) -> str:
    return config.mqtt.client_id or f"hypnolum-{config.host.id}"


def pod_link_id(client_id: str, pod_id: str) -> str:
    """The client id of a pod's availability link (see the module doc)."""
    plain = f"{client_id}-pod-{pod_id}"
    if len(plain) <= CLIENT_ID_MAX:
        return plain
    return f"{client_id}-p-{hashlib.sha1(pod_id.encode()).hexdigest()[:12]}"


def client_id_problem(config: Config) -> tuple[str, str] | None:
    """(key, message) if hostd's client ids cannot all stay within CLIENT_ID_MAX characters."""
    client_id = main_client_id(config)
    longest = CLIENT_ID_MAX - _HASHED
    if len(client_id) <= longest:
        return None
    key = "mqtt.client_id" if config.mqtt.client_id else "host.id"
    return key, (f"the MQTT client id {client_id!r} has {len(client_id)} characters; at most {longest} leave room "
                 f"for the pod links' ids (<client id>{'-p-' + 12 * 'x'}) within {CLIENT_ID_MAX}")


def tls_context(cfg: MqttConfig) -> ssl.SSLContext:
    """The TLS context of every connection; raises ssl.SSLError / OSError for unusable files."""
    ctx = ssl.create_default_context(cafile=str(cfg.ca_file) if cfg.ca_file else None)
    if cfg.cert_file:
        ctx.load_cert_chain(str(cfg.cert_file), str(cfg.key_file))
    return ctx


async def pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less if ``stop`` is set meanwhile."""
    try:
        async with asyncio.timeout(seconds):
            await stop.wait()
    except TimeoutError:
        pass


class Broker:
    def __init__(self, cfg: MqttConfig) -> None:
        self.cfg = cfg
        self.protocol = aiomqtt.ProtocolVersion.V311 if cfg.protocol == "3.1.1" else aiomqtt.ProtocolVersion.V5
        self.backoff = Backoff(cfg.backoff_min_s, cfg.backoff_max_s, _STABLE_S)
        self.connects: Counter[str] = Counter()  # connection name -> connections made
        self.losses: Counter[str] = Counter()  # connection name -> connections lost or not made
        self._tls: ssl.SSLContext | None = tls_context(cfg) if cfg.tls else None

    @property
    def v5(self) -> bool:
        return self.protocol == aiomqtt.ProtocolVersion.V5

    @property
    def where(self) -> str:
        return f"{self.cfg.host}:{self.cfg.port}"

    def client(self, client_id: str | None, will_topic: str | None = None, persistent: bool = False,
               window: int | None = None, **extra: Any) -> aiomqtt.Client:
        """A client of this broker (credentials, TLS, protocol), with a will (``offline``,
        retained) on ``will_topic`` unless it is None.

        With a ``window``, a QoS 1 message is acknowledged only by ``ack(client, message)``,
        and the broker sends at most ``window`` messages not yet acknowledged (MQTT 5: the
        CONNECT's Receive Maximum; 3.1.1: the broker's ``max_inflight_messages``, 100 in the
        shipped configuration): what hostd has not taken yet waits in the broker's queue."""
        kw: dict[str, Any] = dict(extra)
        props = Properties(PacketTypes.CONNECT)
        if persistent:
            if self.v5:
                props.SessionExpiryInterval = self.cfg.session_expiry_s
                kw.update(clean_start=False)
            else:
                kw.update(clean_session=False)
        if window is not None and self.v5:
            props.ReceiveMaximum = window
        if self.v5 and not props.isEmpty():
            kw.update(properties=props)
        client = aiomqtt.Client(
            self.cfg.host,
            self.cfg.port,
            identifier=client_id,
            username=self.cfg.username,
            password=self.cfg.secret(),
            protocol=self.protocol,
            tls_context=self._tls,
            keepalive=self.cfg.keepalive,
            timeout=self.cfg.timeout_s,
            will=aiomqtt.Will(will_topic, b"offline", qos=1, retain=True) if will_topic else None,
            **kw,
        )
        if window is not None:
            client._client.manual_ack_set(True)  # paho's switch; aiomqtt 2.x does not pass it on
        return client

    async def keep(self, name: str, client_id: str | None, serve: Serve, stop: asyncio.Event, *,
                   will_topic: str | None = None, persistent: bool = False, window: int | None = None,
                   level: int = logging.WARNING, **extra: Any) -> None:
        """Keep connection ``name`` up until ``stop`` is set: connect, ``await serve(client)``,
        and after a lost or failed connection retry with backoff. ``serve`` returns when it
        is done (``stop`` is set), and raises ``aiomqtt.MqttError`` when the connection is
        lost. Failures are logged at ``level``; a missing credentials file is one too."""
        retry = self.backoff.retry()
        while not stop.is_set():
            started = time.monotonic()
            connected_at: float | None = None
            done = False
            protocol = self.protocol
            try:
                client = self.client(client_id, will_topic, persistent, window, **extra)
            except (OSError, ValueError) as exc:  # mqtt.password_file unreadable: the operator may mend it
                problem = f"cannot read the MQTT credentials: {exc}"
            else:
                try:
                    async with client:
                        connected_at = time.monotonic()
                        self.connects[name] += 1
                        await serve(client)
                        done = True
                    return
                except aiomqtt.MqttError as exc:
                    if done:  # the disconnect after a finished serve failed: nothing left to do
                        return
                    if connected_at is None and (self._fall_back(exc, time.monotonic() - started)
                                                 or self.protocol != protocol):  # another connection fell back
                        continue
                    problem = str(exc) or type(exc).__name__
            self.losses[name] += 1
            if connected_at is not None:
                retry.ran(time.monotonic() - connected_at)
            delay = retry.delay()
            log.log(level, "MQTT %s connection to %s: %s; retrying in %.1f s", name, self.where, problem, delay)
            await pause(stop, delay)

    def _fall_back(self, exc: aiomqtt.MqttError, elapsed_s: float) -> bool:
        """With protocol "auto", drop to 3.1.1 if the broker refused MQTT 5, or never answered
        an MQTT 5 CONNECT (some 3.1.1 brokers choke on its properties). Until one version has
        connected, a CONNECT without an answer alternates between the two."""
        if self.cfg.protocol != "auto":
            return False
        rc = exc.rc if isinstance(exc, aiomqtt.MqttCodeError) else None
        code = getattr(rc, "value", rc)
        # no CONNACK within mqtt.timeout_s: a refused or failed TCP connect ends sooner
        no_answer = rc is None and elapsed_s >= self.cfg.timeout_s and not self.connects
        if self.v5 and (code in _UNSUPPORTED_PROTOCOL or no_answer):
            log.warning("MQTT broker %s does not speak MQTT 5 (%s); using 3.1.1", self.where,
                        exc or type(exc).__name__)
            self.protocol = aiomqtt.ProtocolVersion.V311
            return True
        if not self.v5 and no_answer:
            self.protocol = aiomqtt.ProtocolVersion.V5  # neither answered yet: try 5 again next time
        return False


def ack(client: aiomqtt.Client, message: aiomqtt.Message) -> None:
    """Acknowledge a QoS 1 message of a client with a ``window`` (nothing for QoS 0)."""
    client._client.ack(message.mid, message.qos)


async def read_until(client: aiomqtt.Client, stop: asyncio.Event | None,
                     handle: Callable[[aiomqtt.Message], Awaitable[None] | None] | None = None) -> None:
    """Read ``client``'s messages, each handed to ``handle`` (awaited if it returns an
    awaitable), until ``stop`` is set; raises ``aiomqtt.MqttError`` when the connection is
    lost. Reading is also what notices a dead broker: a quiet connection alone would not."""
    queued = client._queue  # aiomqtt's queue of received messages (its iterator takes one per loop turn)

    async def read() -> None:
        async for message in client.messages:
            while True:
                if handle is not None and (pending := handle(message)) is not None:
                    await pending
                if queued.empty():  # everything paho has read is handled before the loop turns again
                    break
                message = queued.get_nowait()

    reader = asyncio.create_task(read())
    stopper: asyncio.Future = (asyncio.ensure_future(stop.wait()) if stop is not None
                               else asyncio.get_running_loop().create_future())
    try:
        await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if reader.done():
            reader.result()  # its MqttError, or a handler's bug
            raise aiomqtt.MqttError("message stream ended")
    finally:
        reader.cancel()
        stopper.cancel()
        await asyncio.gather(reader, stopper, return_exceptions=True)
