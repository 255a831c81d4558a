"""MQTT bridge: one main connection in a reconnect loop, plus one small
connection per online pod whose last will turns that pod offline.

MQTT allows one will per connection; giving each online pod its own
connection means that if hostd dies (even SIGKILL) the broker itself
publishes every one of its pods as "offline".

Security and delivery (see docs/mqtt.md):

- TLS with a CA file and an optional client certificate, username and
  password (or a password file), on every connection hostd opens;
- MQTT 5 when the broker speaks it (``protocol = "auto"`` falls back to
  3.1.1 once a broker refuses 5): a ``set`` that carries a response topic
  gets its result there too, with the request's correlation data;
- a persistent session for the main connection (fixed client id, no clean
  start), so set commands published while hostd restarts are delivered once
  it is back; commands are QoS 1 and de-duplicated by id in the hub;
- reconnect with exponential backoff between ``backoff_min_s`` and
  ``backoff_max_s``.
"""
from __future__ import annotations

import asyncio
import json
import logging
import ssl
from dataclasses import dataclass
from typing import Any, AsyncIterator

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from . import topics
from .config import Config

log = logging.getLogger(__name__)

_QUEUE = 64
# CONNACK codes meaning "I do not speak this protocol version" (3.1.1: 1, 5: 0x84)
_UNSUPPORTED_PROTOCOL = {1, 0x84}


def _json(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Incoming:
    """One ``set`` command as it arrived."""

    pod_id: str
    payload: bytes
    response_topic: str | None = None
    correlation: bytes | None = None


class MqttBridge:
    def __init__(self, config: Config):
        self.cfg = config.mqtt
        self.host_id = config.host.id
        self.client_id = self.cfg.client_id or f"hypnolum-{self.host_id}"
        self.connected = asyncio.Event()
        self.protocol = aiomqtt.ProtocolVersion.V311 if self.cfg.protocol == "3.1.1" else aiomqtt.ProtocolVersion.V5
        self.connects = 0  # successful main connections (1 + reconnects)
        self._client: aiomqtt.Client | None = None
        self._retained: dict[str, bytes] = {}  # republished after a reconnect
        self._commands: asyncio.Queue = asyncio.Queue(_QUEUE)
        self._inputs: asyncio.Queue = asyncio.Queue(_QUEUE)  # (pod_id, leaf, payload): markers, participant
        self._pods: dict[str, tuple[asyncio.Task, asyncio.Event]] = {}
        self._closing: dict[str, asyncio.Task] = {}
        self._stop = asyncio.Event()
        self._tls: ssl.SSLContext | None = self._tls_context() if self.cfg.tls else None

    def _tls_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.cfg.ca_file) if self.cfg.ca_file else None)
        if self.cfg.cert_file:
            ctx.load_cert_chain(str(self.cfg.cert_file), str(self.cfg.key_file))
        return ctx

    @property
    def v5(self) -> bool:
        return self.protocol == aiomqtt.ProtocolVersion.V5

    def client_for(self, will_topic: str | None, client_id: str | None = None,
                   persistent: bool = False) -> aiomqtt.Client:
        """A client with this bridge's broker, credentials, TLS and protocol; with a will
        (``offline``, retained) on ``will_topic`` unless it is None."""
        kw: dict[str, Any] = {}
        if persistent:
            if self.v5:
                props = Properties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = self.cfg.session_expiry_s
                kw.update(clean_start=False, properties=props)
            else:
                kw.update(clean_session=False)
        return aiomqtt.Client(
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

    async def _pause(self, stop: asyncio.Event, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                await stop.wait()
        except TimeoutError:
            pass

    def _maybe_fall_back(self, exc: aiomqtt.MqttError) -> bool:
        """With protocol "auto", drop to 3.1.1 if the broker refused MQTT 5, or never answered
        an MQTT 5 CONNECT (some 3.1.1 brokers choke on its properties). Until one version has
        connected, a timeout alternates between the two."""
        if self.cfg.protocol != "auto":
            return False
        rc = getattr(exc, "rc", None)
        code = getattr(rc, "value", rc)
        timed_out = "timed out" in str(exc).lower() and self.connects == 0
        if self.v5 and (code in _UNSUPPORTED_PROTOCOL or timed_out):
            log.warning("MQTT broker %s:%d does not speak MQTT 5 (%s); using 3.1.1", self.cfg.host, self.cfg.port,
                        exc or type(exc).__name__)
            self.protocol = aiomqtt.ProtocolVersion.V311
            return True
        if not self.v5 and timed_out:
            self.protocol = aiomqtt.ProtocolVersion.V5  # neither answered yet: try 5 again next time
        return False

    # -- main connection ------------------------------------------------------
    async def run(self) -> None:
        """Keep the main connection up until ``close()``."""
        host_topic = topics.host(self.host_id, "availability")
        backoff = self.cfg.backoff_min_s
        while not self._stop.is_set():
            try:
                async with self.client_for(host_topic, self.client_id, persistent=self.cfg.persistent_session) as client:
                    await client.subscribe(topics.SET_FILTER, qos=1)
                    for input_filter in topics.INPUT_FILTERS:
                        await client.subscribe(input_filter, qos=1)
                    await client.publish(host_topic, b"online", qos=1, retain=True)
                    sent = dict(self._retained)
                    for topic, payload in sent.items():
                        await client.publish(topic, payload, qos=1, retain=True)
                    self._client = client
                    # what changed while we republished was only stored: send the newest values
                    for topic, payload in list(self._retained.items()):
                        if sent.get(topic) is not payload:
                            await client.publish(topic, payload, qos=1, retain=True)
                    self.connects += 1
                    self.connected.set()
                    log.info("connected to MQTT broker %s:%d (MQTT %s%s)", self.cfg.host, self.cfg.port,
                             "5" if self.v5 else "3.1.1", ", TLS" if self._tls else "")
                    backoff = self.cfg.backoff_min_s
                    await self._serve(client)
                    await client.publish(host_topic, b"offline", qos=1, retain=True)
                    return
            except aiomqtt.MqttError as exc:
                if self._maybe_fall_back(exc):
                    continue
                log.warning("MQTT broker %s:%d: %s; retrying in %.1f s", self.cfg.host, self.cfg.port, exc, backoff)
            finally:
                self._client = None
                self.connected.clear()
            await self._pause(self._stop, backoff)
            backoff = min(backoff * 2, self.cfg.backoff_max_s)

    async def _serve(self, client: aiomqtt.Client) -> None:
        """Queue incoming set commands until close(); MqttError on link loss."""
        async def consume() -> None:
            async for message in client.messages:
                pod_id = topics.pod_of_set(message.topic.value)
                if pod_id is None:
                    pod_input = topics.pod_input(message.topic.value)
                    if pod_input is not None and not self._inputs.full():
                        self._inputs.put_nowait((*pod_input, bytes(message.payload or b"")))
                    continue
                if self._commands.full():
                    log.warning("command queue full; dropping a command for %s", pod_id)
                    continue
                props = message.properties
                response = getattr(props, "ResponseTopic", None) if props is not None else None
                correlation = getattr(props, "CorrelationData", None) if props is not None else None
                self._commands.put_nowait(Incoming(pod_id, bytes(message.payload or b""), response, correlation))

        consumer = asyncio.create_task(consume())
        stopper = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({consumer, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if consumer.done():
                consumer.result()  # re-raise MqttError
                raise aiomqtt.MqttError("message stream ended")
        finally:
            consumer.cancel()
            stopper.cancel()
            await asyncio.gather(consumer, stopper, return_exceptions=True)

    async def close(self) -> None:
        """Turn every pod offline, publish the host offline, disconnect."""
        for pod_id in list(self._pods):
            self.pod_available(pod_id, False)
        await asyncio.gather(*self._closing.values(), return_exceptions=True)
        self._stop.set()

    # -- publishing -----------------------------------------------------------
    async def publish(self, topic: str, payload: Any, *, qos: int = 0, retain: bool = False,
                      properties: Properties | None = None) -> bool:
        """Publish JSON (or bytes); False if the broker is not reachable now."""
        data = payload if isinstance(payload, bytes) else _json(payload)
        if retain:
            self._retained[topic] = data
        client = self._client
        if client is None:
            return False
        try:
            await client.publish(topic, data, qos=qos, retain=retain, properties=properties)
        except aiomqtt.MqttError as exc:
            log.debug("publish to %s failed: %s", topic, exc)
            return False
        return True

    def publish_nowait(self, topic: str, payload: Any, *, qos: int = 0, retain: bool = False) -> bool:
        """Publish without waiting; False if the broker is not reachable now.

        aiomqtt's ``publish`` awaits each message's hand-over to the socket (~250 us of
        CPU a message here); for hundreds of pods' EEG and band powers that is most of
        hostd's time. This hands the message to the underlying paho client's outgoing
        queue instead (the same call aiomqtt makes); paho writes queued messages
        together when the socket is writable. With QoS 1 paho keeps the message until
        the broker acknowledges it; a retained one is also kept here and republished
        after a reconnect, as with ``publish``.
        """
        data = payload if isinstance(payload, bytes) else _json(payload)
        if retain:
            self._retained[topic] = data
        client = self._client
        if client is None:
            return False
        return client._client.publish(topic, data, qos, retain).rc == 0  # paho (aiomqtt 2.x pins paho-mqtt 2)

    async def reply(self, topic: str, result: dict[str, Any], incoming: Incoming) -> None:
        """Publish a command result on ``topic`` and, for an MQTT 5 request with a
        response topic, there too, carrying the request's correlation data."""
        await self.publish(topic, result, qos=1)
        if incoming.response_topic and self.v5:
            props = Properties(PacketTypes.PUBLISH)
            if incoming.correlation is not None:
                props.CorrelationData = incoming.correlation
            await self.publish(incoming.response_topic, result, qos=1, properties=props)

    async def commands(self) -> AsyncIterator[Incoming]:
        """Set commands in arrival order."""
        while True:
            yield await self._commands.get()

    async def inputs(self) -> AsyncIterator[tuple[str, str, bytes]]:
        """Per-pod inputs other than set commands as (pod_id, leaf, payload), in arrival order."""
        while True:
            yield await self._inputs.get()

    # -- per-pod availability -------------------------------------------------
    def pod_available(self, pod_id: str, online: bool) -> None:
        """Make ``pods/<id>/availability`` follow the pod, with a will of "offline"."""
        if online and pod_id not in self._pods:
            previous = self._closing.get(pod_id)  # let its "offline" land first
            stop = asyncio.Event()
            task = asyncio.create_task(self._pod_link(pod_id, stop, previous), name=f"availability {pod_id}")
            self._pods[pod_id] = (task, stop)
        elif not online and pod_id in self._pods:
            task, stop = self._pods.pop(pod_id)
            stop.set()
            self._closing[pod_id] = task
            task.add_done_callback(lambda t: self._closing.pop(pod_id, None) if self._closing.get(pod_id) is t else None)

    @staticmethod
    async def _stopped_or_lost(client: aiomqtt.Client, stop: asyncio.Event) -> bool:
        """Wait until ``stop`` is set (True) or the connection drops (False). Reading the
        message stream is what notices a dead broker; a quiet publisher alone would not."""
        async def drain() -> None:
            async for _ in client.messages:
                pass

        lost = asyncio.create_task(drain())
        stopper = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({lost, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            stopper.cancel()
            await asyncio.gather(lost, stopper, return_exceptions=True)
        return stop.is_set()

    async def _pod_link(self, pod_id: str, stop: asyncio.Event, previous: asyncio.Task | None) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        topic = topics.pod(pod_id, "availability")
        backoff = self.cfg.backoff_min_s
        while not stop.is_set():
            try:
                async with self.client_for(topic, f"{self.client_id}-pod-{pod_id}"[:64]) as client:
                    await client.publish(topic, b"online", qos=1, retain=True)
                    if await self._stopped_or_lost(client, stop):
                        await client.publish(topic, b"offline", qos=1, retain=True)
                        return
                    raise aiomqtt.MqttError("connection lost")
            except aiomqtt.MqttError as exc:
                log.debug("availability link for %s: %s", pod_id, exc)
            await self._pause(stop, backoff)
            backoff = min(backoff * 2, self.cfg.backoff_max_s)
