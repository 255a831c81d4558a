"""MQTT bridge: the main connection, plus one small connection per online pod
whose last will turns that pod offline. Both are kept up by the one
:class:`~.broker.Broker` (reconnect with backoff, protocol fallback).

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
  it is back; commands are QoS 1 and de-duplicated by id in the hub.

Back-pressure (docs/hostd.md, "Back-pressure"): the main connection reads
every message the client library has received before the event loop turns
again, hands each to ``handler`` (the hub), which takes it or answers it
``busy`` at once, and only then acknowledges it: what waits is in the broker's
own bounded queue, not in hostd. Nothing is dropped without an answer.
"""
from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any, Protocol

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from . import topics
from .broker import Broker, ack, main_client_id, pod_link_id, read_until
from .config import Config
from .supervisor import first

log = logging.getLogger(__name__)

WINDOW = 100  # QoS 1 messages the broker may have out to hostd's main connection, not yet taken
MAX_INFLIGHT = 100  # QoS 1 messages hostd's main connection has out unacknowledged (paho's default: 20)


def _json(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def topic_name_problem(topic: str) -> str | None:
    """Why ``topic`` cannot be published to (None if it can)."""
    if not topic:
        return "is empty"
    if "+" in topic or "#" in topic:
        return "holds a wildcard (+ or #)"
    if "\0" in topic:
        return "holds NUL"
    if len(topic.encode("utf-8", "surrogatepass")) > 65535:
        return "is longer than 65535 bytes"
    return None


@dataclass(frozen=True)
class Incoming:
    """One ``set`` command as it arrived."""

    pod_id: str
    payload: bytes
    response_topic: str | None = None
    correlation: bytes | None = None


@dataclass(frozen=True)
class PodInput:
    """A marker or participant message as it arrived (``leaf``: "marker" or "participant")."""

    pod_id: str
    leaf: str
    payload: bytes


class Handler(Protocol):
    """Takes the messages the main connection reads; neither call may block or raise."""

    def command(self, incoming: Incoming) -> None: ...

    def pod_input(self, item: PodInput) -> None: ...

    def update(self, pod_id: str, payload: bytes) -> None: ...


class MqttBridge:
    def __init__(self, config: Config):
        self.cfg = config.mqtt
        self.host_id = config.host.id
        self.broker = Broker(config.mqtt)
        self.client_id = main_client_id(config)
        self.connected = asyncio.Event()
        self.handler: Handler | None = None  # takes set commands and pod inputs (the hub)
        self._client: aiomqtt.Client | None = None
        self._retained: dict[str, bytes] = {}  # republished after a reconnect
        self._online: set[str] = set()  # pods whose availability follows them
        self._pods: dict[str, tuple[asyncio.Task, asyncio.Event]] = {}
        self._closing: dict[str, asyncio.Task] = {}
        self._links: asyncio.TaskGroup | None = None
        self._stop = asyncio.Event()

    @property
    def v5(self) -> bool:
        return self.broker.v5

    @property
    def protocol(self) -> aiomqtt.ProtocolVersion:
        return self.broker.protocol

    @property
    def connects(self) -> int:
        """Main connections made (1 + reconnects)."""
        return self.broker.connects["main"]

    # -- main connection ------------------------------------------------------
    async def run(self) -> None:
        """Keep the main connection and the pods' availability links up until ``close()``."""
        try:
            async with asyncio.TaskGroup() as links:
                self._links = links
                for pod_id in sorted(self._online):  # after a restart of this subsystem
                    self._start_link(pod_id)
                await self.broker.keep("main", self.client_id, self._serve_main, self._stop,
                                       will_topic=topics.host(self.host_id, "availability"),
                                       persistent=self.cfg.persistent_session, window=WINDOW,
                                       max_inflight_messages=MAX_INFLIGHT)
                for pod_id in list(self._pods):
                    self._stop_link(pod_id)
        finally:
            self._links = None
            self._pods.clear()
            self._closing.clear()

    async def _serve_main(self, client: aiomqtt.Client) -> None:
        host_topic = topics.host(self.host_id, "availability")
        await client.subscribe(topics.SET_FILTER, qos=1)
        await client.subscribe(topics.UPDATE_FILTER, qos=1)
        for input_filter in topics.INPUT_FILTERS:
            await client.subscribe(input_filter, qos=1)
        await client.publish(host_topic, b"online", qos=1, retain=True)
        sent = dict(self._retained)
        for topic, payload in sent.items():
            await client.publish(topic, payload, qos=1, retain=True)
        self._client = client
        try:
            # what changed while we republished was only stored: send the newest values
            for topic, payload in list(self._retained.items()):
                if sent.get(topic) is not payload:
                    await client.publish(topic, payload, qos=1, retain=True)
            self.connected.set()
            log.info("connected to MQTT broker %s (MQTT %s%s)", self.broker.where, "5" if self.v5 else "3.1.1",
                     ", TLS" if self.cfg.tls else "")
            await read_until(client, self._stop, lambda message: self._take(client, message))
            await client.publish(host_topic, b"offline", qos=1, retain=True)
        finally:
            self._client = None
            self.connected.clear()

    def _take(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        """Hand one incoming message to the handler, then acknowledge it: until then the
        broker counts it against hostd's in-flight window (``WINDOW``)."""
        try:
            self._hand_over(message)
        finally:
            ack(client, message)

    def _hand_over(self, message: aiomqtt.Message) -> None:
        handler = self.handler
        if handler is None:
            log.warning("a message on %s arrived with nobody to take it", message.topic.value)
            return
        topic = message.topic.value
        payload = bytes(message.payload or b"")
        pod_id = topics.pod_of_set(topic)
        if pod_id is not None:
            props = message.properties
            response = getattr(props, "ResponseTopic", None) if props is not None else None
            correlation = getattr(props, "CorrelationData", None) if props is not None else None
            handler.command(Incoming(pod_id, payload, response, correlation))
            return
        update_pod = topics.pod_of_update(topic)
        if update_pod is not None:
            handler.update(update_pod, payload)
            return
        pod_input = topics.pod_input(topic)
        if pod_input is not None:
            handler.pod_input(PodInput(pod_input[0], pod_input[1], payload))

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

    def publish_nowait(self, topic: str, payload: Any, *, qos: int = 0, retain: bool = False,
                       properties: Properties | None = None) -> bool:
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
        # paho (aiomqtt 2.x pins paho-mqtt 2)
        return client._client.publish(topic, data, qos, retain, properties).rc == 0

    def _response(self, incoming: Incoming) -> Properties | None:
        """The PUBLISH properties of the reply on the request's response topic (None: no reply there)."""
        if not incoming.response_topic or not self.v5 or topic_name_problem(incoming.response_topic):
            return None
        props = Properties(PacketTypes.PUBLISH)
        if incoming.correlation is not None:
            props.CorrelationData = incoming.correlation
        return props

    async def reply(self, topic: str, result: dict[str, Any], incoming: Incoming) -> None:
        """Publish a command result on ``topic`` and, for an MQTT 5 request with a (valid)
        response topic, there too, carrying the request's correlation data."""
        await self.publish(topic, result, qos=1)
        if (props := self._response(incoming)) is not None:
            await self.publish(incoming.response_topic, result, qos=1, properties=props)

    def reply_nowait(self, topic: str, result: dict[str, Any], incoming: Incoming) -> None:
        """``reply`` without waiting for the broker (for answers given while reading)."""
        self.publish_nowait(topic, result, qos=1)
        if (props := self._response(incoming)) is not None:
            self.publish_nowait(incoming.response_topic, result, qos=1, properties=props)

    # -- per-pod availability -------------------------------------------------
    def pod_available(self, pod_id: str, online: bool) -> None:
        """Make ``pods/<id>/availability`` follow the pod, with a will of "offline"."""
        if online:
            self._online.add(pod_id)
            if pod_id not in self._pods and self._links is not None:
                self._start_link(pod_id)
        else:
            self._online.discard(pod_id)
            if pod_id in self._pods:
                self._stop_link(pod_id)

    def _start_link(self, pod_id: str) -> None:
        previous = self._closing.get(pod_id)  # let its "offline" land first
        stop = asyncio.Event()
        task = self._links.create_task(self._pod_link(pod_id, stop, previous), name=f"availability {pod_id}")
        self._pods[pod_id] = (task, stop)

    def _stop_link(self, pod_id: str) -> None:
        task, stop = self._pods.pop(pod_id)
        stop.set()
        self._closing[pod_id] = task
        task.add_done_callback(lambda t: self._closing.pop(pod_id, None) if self._closing.get(pod_id) is t else None)

    async def _pod_link(self, pod_id: str, stop: asyncio.Event, previous: asyncio.Task | None) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        # "online" says the pod takes commands: not before the main connection has subscribed to them
        await first(self.connected.wait(), stop.wait())
        topic = topics.pod(pod_id, "availability")

        async def serve(client: aiomqtt.Client) -> None:
            await client.publish(topic, b"online", qos=1, retain=True)
            await read_until(client, stop)
            await client.publish(topic, b"offline", qos=1, retain=True)

        await self.broker.keep(f"pod {pod_id} availability", pod_link_id(self.client_id, pod_id), serve, stop,
                               will_topic=topic, level=logging.INFO)

